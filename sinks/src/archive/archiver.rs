//! The archiver loop: consume `warden.events`, `warden.alerts` and `warden.control`, batch each
//! partition by size and time, write one Parquet object per (event hour, partition) of a batch
//! into the topic's table ([`Table`]), record it in the manifest, then commit the batch's
//! offsets.
//!
//! Exactly once, through crashes: before a partition's batch is written its boundaries go into
//! the partition's [plan](super::plans). Whoever reads the partition next — this process after
//! a restart, or another member after a rebalance — starts at the committed offset, finds the
//! uncommitted boundaries there, and cuts the replayed records at the same offsets. Same rows,
//! same order, same name: the object is rewritten identically, and the manifest, which already
//! lists it, is not extended twice.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::error::ArrowError;
use chrono::{DateTime, Utc};
use object_store::path::Path;
use sha2::{Digest, Sha256};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};
use warden_ingest::EventId;
use warden_ingest::kafka::{
    ConsumedRecord, DeadLetterPublisher, KafkaCluster, KafkaSetupError, PartitionOffsets,
    TopicConsumer,
};
use warden_ingest::layout::{ArchiveUrl, hour_partition};

use super::digest::{Sealer, chain_name};
use super::manifest::{Manifest, ManifestEntry};
use super::plans::{BatchBoundary, PartitionPlan, PlanStore};
use super::rows::{ArchiveRecord, ObjectRows, Table};
use super::{ArchiveConfig, ArchiveError, EncodedObject, ParquetArchive};

/// While draining, how long the topic must be quiet before the remaining lag is checked.
const DRAIN_QUIET: Duration = Duration::from_millis(200);
/// Draining stops after this long even if records remain (they stay in Kafka).
const DRAIN_MAX: Duration = Duration::from_secs(30);
/// Pause before retrying a failed write, commit or dead-letter send.
const RETRY_BACKOFF: Duration = Duration::from_millis(500);
/// Offset commits tried before a batch is left to be replayed.
const COMMIT_ATTEMPTS: u32 = 5;
/// A replay waiting for the records up to a planned boundary gives up after this long without
/// a record of that partition (the records are gone, e.g. past the topic's retention).
const PLANNED_BOUNDARY_PATIENCE: Duration = Duration::from_secs(60);
/// How often the archiver looks for closed hours to seal with a digest.
const SEAL_CHECK_INTERVAL: Duration = Duration::from_secs(30);

/// What an archiver does when told to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownMode {
    /// Write what is in memory, commit, stop. Right for a worker of a durable cluster: what
    /// it has not read stays in Kafka for the next member.
    FlushPending,
    /// First read the assigned partitions to their end (bounded by [`DRAIN_MAX`]), then
    /// write and stop. Right for `warden up`: it archives every event the process accepted,
    /// which the in-memory embedded broker would otherwise lose.
    DrainTopic,
}

/// What an archiver did before it stopped.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ArchiverReport {
    /// Rows written to each table (`events`, `alerts`, `actions`, `notifications`).
    pub rows_archived: BTreeMap<&'static str, u64>,
    pub num_dead_letters: u64,
    pub num_objects_written: u64,
    /// Records whose event (alert, action) was already in the same batch (a spool replay
    /// re-sent an event Kafka had in fact stored).
    pub num_duplicates_skipped: u64,
}

impl ArchiverReport {
    /// Rows written to `table`.
    pub fn rows(&self, table: Table) -> u64 {
        self.rows_archived.get(table.name()).copied().unwrap_or(0)
    }
}

/// One topic this archiver keeps, and the table its records go to.
#[derive(Debug)]
struct ArchivedTopic {
    name: String,
    table: Table,
    plans: PlanStore,
}

/// A partition of an archived topic: (index into `Archiver::topics`, partition).
type Slot = (usize, i32);

/// Records of one partition read but not yet written.
#[derive(Debug)]
struct PartitionBatch {
    /// Start of the event hour → that hour's rows, in offset order.
    objects: BTreeMap<DateTime<Utc>, HourRows>,
    first_offset: i64,
    last_offset: i64,
    /// Fingerprint of the record at `first_offset`.
    first_record: String,
    num_records: usize,
    /// Ids of the records in `objects`: a second record of the same event is skipped. Only
    /// within a batch, so that a replay cut at the same offsets skips the same records.
    record_ids: HashSet<EventId>,
}

/// The rows of one hour of a batch: one object.
#[derive(Debug)]
struct HourRows {
    /// The first record's id: part of the object's name.
    first_record_id: EventId,
    rows: ObjectRows,
}

impl PartitionBatch {
    /// The batch's objects as record batches: (hour, first record id, rows), oldest hour first.
    fn finish_objects(&mut self) -> Result<Vec<(DateTime<Utc>, EventId, RecordBatch)>, ArrowError> {
        std::mem::take(&mut self.objects)
            .into_iter()
            .map(|(hour, mut object)| Ok((hour, object.first_record_id, object.rows.finish()?)))
            .collect()
    }
}

/// What this archiver knows of one partition it reads.
#[derive(Debug)]
struct PartitionState {
    plan: PartitionPlan,
    /// Boundaries a replay must cut at, oldest first.
    planned: VecDeque<BatchBoundary>,
    batch: Option<PartitionBatch>,
    /// The next offset the group has committed, as far as this archiver knows.
    committed: Option<i64>,
    /// When a record last came, kept while `planned` is not empty (all it is used for).
    last_record_at: Instant,
}

/// One member of the archive consumer group.
#[derive(Debug)]
pub struct Archiver {
    consumer: TopicConsumer,
    dead_letters: DeadLetterPublisher,
    archive: ParquetArchive,
    manifest: Manifest,
    sealer: Sealer,
    topics: Vec<ArchivedTopic>,
    flush_interval: Duration,
    max_batch_events: usize,
    partitions: HashMap<Slot, PartitionState>,
    report: ArchiverReport,
}

/// Why an archiver could not start.
#[derive(Debug, thiserror::Error)]
pub enum ArchiverSetupError {
    #[error(transparent)]
    Kafka(#[from] KafkaSetupError),
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error("archive.url: {0}")]
    Url(String),
}

impl Archiver {
    /// Joins the archive consumer group and opens the archive.
    pub fn new(cluster: &KafkaCluster, config: &ArchiveConfig) -> Result<Self, ArchiverSetupError> {
        let url = ArchiveUrl::parse(&config.url).map_err(ArchiverSetupError::Url)?;
        let archive = ParquetArchive::open(&url, &config.s3)?;
        let names = cluster.topics();
        let topics: Vec<ArchivedTopic> = [
            (&names.events, Table::Events),
            (&names.alerts, Table::Alerts),
            (&names.control, Table::Actions),
            (&names.notifications, Table::Notifications),
            (&names.incidents, Table::Incidents),
        ]
        .into_iter()
        .map(|(name, table)| ArchivedTopic {
            name: name.clone(),
            table,
            plans: PlanStore::new(archive.store().clone(), name),
        })
        .collect();
        let subscription: Vec<&str> = topics.iter().map(|t| t.name.as_str()).collect();
        Ok(Self {
            consumer: TopicConsumer::subscribe(cluster, &config.consumer_group, &subscription)?,
            dead_letters: DeadLetterPublisher::new(cluster)?,
            manifest: Manifest::new(archive.store().clone()),
            sealer: Sealer::new(archive.store().clone(), config.signer.clone()),
            topics,
            archive,
            flush_interval: config.flush_interval(),
            max_batch_events: config.max_batch_events,
            partitions: HashMap::new(),
            report: ArchiverReport::default(),
        })
    }

    /// Archives until `shutdown` fires, then stops as `mode` says and returns what it did.
    pub async fn run(mut self, shutdown: CancellationToken, mode: ShutdownMode) -> ArchiverReport {
        let mut flush_timer = tokio::time::interval(self.flush_interval);
        flush_timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut seal_timer = tokio::time::interval(SEAL_CHECK_INTERVAL);
        seal_timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                _ = flush_timer.tick() => self.flush_all(false).await,
                _ = seal_timer.tick() => self.seal_closed_hours().await,
                received = self.consumer.recv() => match received {
                    Ok(record) => {
                        self.take(record).await;
                        if self.num_pending_events() >= self.max_batch_events {
                            self.flush_all(false).await;
                        }
                    }
                    Err(err) => {
                        warn!(error = %err, "kafka receive failed; retrying");
                        tokio::time::sleep(RETRY_BACKOFF).await;
                    }
                },
            }
        }
        if mode == ShutdownMode::DrainTopic {
            self.drain().await;
        }
        self.flush_all(true).await;
        info!(
            events = self.report.rows(Table::Events),
            alerts = self.report.rows(Table::Alerts),
            actions = self.report.rows(Table::Actions),
            notifications = self.report.rows(Table::Notifications),
            incidents = self.report.rows(Table::Incidents),
            objects = self.report.num_objects_written,
            dead_letters = self.report.num_dead_letters,
            duplicates_skipped = self.report.num_duplicates_skipped,
            "archiver stopped"
        );
        self.report
    }

    fn num_pending_events(&self) -> usize {
        self.partitions
            .values()
            .filter_map(|p| p.batch.as_ref())
            .map(|b| b.num_records)
            .sum()
    }

    /// Reads until every assigned partition is consumed to its end, or [`DRAIN_MAX`] passes.
    async fn drain(&mut self) {
        let deadline = Instant::now() + DRAIN_MAX;
        loop {
            match tokio::time::timeout(DRAIN_QUIET, self.consumer.recv()).await {
                Ok(Ok(record)) => {
                    self.take(record).await;
                    continue;
                }
                Ok(Err(err)) => warn!(error = %err, "kafka receive failed while draining"),
                Err(_quiet) => match self.consumer.remaining().await {
                    Ok(Some(0)) => return,
                    Ok(Some(remaining)) => debug!(remaining, "draining"),
                    Ok(None) => debug!("draining: waiting for a partition assignment"),
                    Err(err) => warn!(error = %err, "could not measure the remaining records"),
                },
            }
            if Instant::now() >= deadline {
                warn!("drain stopped after {DRAIN_MAX:?}; unread events stay in kafka");
                return;
            }
        }
    }

    /// Adds one record to its partition's batch, or sends it to the dead-letter topic if it
    /// is not a record of its topic's table. Cuts the batch where a plan says a replay must.
    async fn take(&mut self, record: ConsumedRecord) {
        let Some(topic) = self.topics.iter().position(|t| t.name == record.topic) else {
            // Not subscribed to: cannot happen, and nothing to archive if it did.
            warn!(
                topic = record.topic,
                "record of a topic the archiver does not keep"
            );
            return;
        };
        let slot = (topic, record.partition);
        self.prepare_partition(slot, &record).await;
        let state = self.partitions.get_mut(&slot).expect("prepared");
        if !state.planned.is_empty() {
            // Only a replay waiting for planned boundaries looks at this (and reading the
            // clock for every record is measurable).
            state.last_record_at = Instant::now();
        }
        let past_boundary = state
            .planned
            .front()
            .is_some_and(|b| record.offset > b.last_offset);
        if past_boundary && state.batch.is_some() {
            self.flush_partition(slot).await;
            // The flush may have given the partition up; set it up again if so.
            self.prepare_partition(slot, &record).await;
        }

        let table = self.topics[topic].table;
        let decoded = match ArchiveRecord::decode(table, &record.payload) {
            Ok(decoded) => Some(decoded),
            Err(err) => {
                self.dead_letter(&record, &err.to_string()).await;
                None
            }
        };
        let state = self.partitions.get_mut(&slot).expect("prepared");
        let batch = state.batch.get_or_insert_with(|| PartitionBatch {
            objects: BTreeMap::new(),
            first_offset: record.offset,
            last_offset: record.offset,
            first_record: fingerprint(&record.payload),
            num_records: 0,
            record_ids: HashSet::new(),
        });
        batch.last_offset = record.offset;
        match decoded {
            Some(decoded) if !batch.record_ids.insert(decoded.id()) => {
                debug!(topic = record.topic, partition = record.partition, offset = record.offset, id = %decoded.id(), "duplicate record skipped");
                self.report.num_duplicates_skipped += 1;
            }
            Some(decoded) => {
                let id = decoded.id();
                batch
                    .objects
                    .entry(hour_start(decoded.ts()))
                    .or_insert_with(|| HourRows {
                        first_record_id: id,
                        rows: ObjectRows::new(table),
                    })
                    .rows
                    .push(decoded);
                batch.num_records += 1;
            }
            None => {}
        }
        let at_boundary = state
            .planned
            .front()
            .is_some_and(|b| record.offset >= b.last_offset);
        if at_boundary {
            self.flush_partition(slot).await;
        }
    }

    /// Sets up a partition on its first record since this archiver (re)started reading it:
    /// loads its plan and decides which planned boundaries this replay must honour.
    async fn prepare_partition(&mut self, slot: Slot, record: &ConsumedRecord) {
        let (topic, partition) = (&record.topic, record.partition);
        if let Some(state) = self.partitions.get_mut(&slot) {
            let rewound = state
                .batch
                .as_ref()
                .is_some_and(|b| record.offset <= b.last_offset);
            if !rewound {
                return;
            }
            // The group handed the partition back from an earlier offset (a rebalance): what
            // this archiver held is read again, so start over with the plan.
            warn!(
                topic,
                partition,
                offset = record.offset,
                "partition re-read from an earlier offset"
            );
            self.partitions.remove(&slot);
        }
        let plan = loop {
            match self.topics[slot.0].plans.load(partition).await {
                Ok(plan) => break plan,
                Err(err) => {
                    warn!(topic, partition, error = %err, "reading the batch plan failed; retrying");
                    tokio::time::sleep(RETRY_BACKOFF).await;
                }
            }
        };
        let mut planned: VecDeque<BatchBoundary> = plan
            .batches
            .iter()
            .filter(|b| b.last_offset >= record.offset)
            .cloned()
            .collect();
        let matches_this_log = planned.front().is_some_and(|b| {
            b.first_offset == record.offset && b.first_record == fingerprint(&record.payload)
        });
        if !planned.is_empty() && !matches_this_log {
            info!(
                topic,
                partition,
                offset = record.offset,
                "batch plan does not match the records (a new log); ignoring it"
            );
            planned.clear();
        } else if !planned.is_empty() {
            info!(
                topic,
                partition,
                batches = planned.len(),
                "replaying uncommitted batches at their planned boundaries"
            );
        }
        self.partitions.insert(
            slot,
            PartitionState {
                plan,
                planned,
                batch: None,
                committed: Some(record.offset),
                last_record_at: Instant::now(),
            },
        );
    }

    async fn dead_letter(&mut self, record: &ConsumedRecord, reason: &str) {
        while let Err(send_err) = self.dead_letters.publish(record, reason).await {
            warn!(error = %send_err, "dead-letter publish failed; retrying");
            tokio::time::sleep(RETRY_BACKOFF).await;
        }
        self.report.num_dead_letters += 1;
        warn!(
            topic = record.topic,
            partition = record.partition,
            offset = record.offset,
            %reason,
            "malformed record sent to the dead-letter topic"
        );
    }

    /// Flushes every partition's batch, except those a replay must still cut later (unless
    /// `force`, or their records stopped coming).
    async fn flush_all(&mut self, force: bool) {
        let mut ready = Vec::new();
        for (slot, state) in &mut self.partitions {
            if state.batch.is_none() {
                continue;
            }
            if !state.planned.is_empty() && !force {
                if state.last_record_at.elapsed() < PLANNED_BOUNDARY_PATIENCE {
                    continue;
                }
                warn!(
                    topic = self.topics[slot.0].name,
                    partition = slot.1,
                    "the records up to a planned boundary did not come; ignoring the plan"
                );
                state.planned.clear();
            }
            ready.push(*slot);
        }
        for slot in ready {
            self.flush_partition(slot).await;
        }
    }

    /// The manifest chain of a partition.
    fn chain(&self, (topic, partition): Slot) -> String {
        chain_name(&self.topics[topic].name, partition)
    }

    /// Writes the digests of the closed hours of the chains of the partitions this archiver
    /// reads — assigned ones that never had a record included, so every partition is a
    /// sealed chain. A failure is logged and retried at the next check: nothing is lost
    /// meanwhile, the hour is only sealed later.
    async fn seal_closed_hours(&mut self) {
        let now = Utc::now();
        let mut slots: Vec<Slot> = self.partitions.keys().copied().collect();
        for (topic, partition) in self.consumer.assigned_partitions().await {
            if let Some(index) = self.topics.iter().position(|t| t.name == topic) {
                slots.push((index, partition));
            }
        }
        slots.sort_unstable();
        slots.dedup();
        for slot in slots {
            let chain = self.chain(slot);
            match self.sealer.seal_closed_hours(&chain, now).await {
                Ok(0) => {}
                Ok(hours) => info!(chain, hours, "closed hours sealed with digests"),
                Err(err) => warn!(chain, error = %err, "sealing closed hours failed; will retry"),
            }
        }
    }

    /// Plans, writes and records one partition's batch, then commits its offsets. Retries
    /// until the objects are written: records are never skipped, at worst written again
    /// under the same names.
    async fn flush_partition(&mut self, slot: Slot) {
        let Some(mut batch) = self
            .partitions
            .get_mut(&slot)
            .and_then(|state| state.batch.take())
        else {
            return;
        };
        let (topic, partition) = (&self.topics[slot.0].name, slot.1);
        let objects = match batch.finish_objects() {
            Ok(objects) => objects,
            Err(err) => {
                // Cannot happen while the columns follow the schema (unit tests hold them to
                // it). Should it, nothing is committed: the records are read again.
                error!(topic, partition, error = %err, "building the archive rows failed; the batch will be read again");
                self.read_again(slot, batch.first_offset).await;
                return;
            }
        };
        if !self.consumer.is_assigned(topic, partition).await {
            // Revoked meanwhile: the new owner reads these records from the committed offset.
            warn!(
                topic,
                partition, "partition no longer assigned; leaving its batch to the new owner"
            );
            self.read_again(slot, batch.first_offset).await;
            return;
        }
        let Some(state) = self.partitions.get_mut(&slot) else {
            return;
        };
        let boundary = BatchBoundary {
            first_offset: batch.first_offset,
            last_offset: batch.last_offset,
            first_record: batch.first_record.clone(),
        };
        if state.planned.front() == Some(&boundary) {
            state.planned.pop_front();
        }
        if let Some(committed) = state.committed {
            state.plan.drop_committed(committed);
        }
        if !state.plan.batches.contains(&boundary) {
            state.plan.batches.push(boundary);
        }
        let plan = state.plan.clone();
        while let Err(err) = self.topics[slot.0].plans.save(partition, &plan).await {
            warn!(topic, partition, error = %err, "saving the batch plan failed; retrying");
            tokio::time::sleep(RETRY_BACKOFF).await;
        }

        for (hour, first_record_id, rows) in objects {
            let key = self.object_key(hour, slot, &batch, first_record_id);
            self.write_object(key, rows, slot, &batch).await;
        }

        let topic = &self.topics[slot.0].name;
        let mut offsets = PartitionOffsets::default();
        offsets.mark(topic, partition, batch.last_offset);
        for attempt in 1..=COMMIT_ATTEMPTS {
            match self.consumer.commit(&offsets).await {
                Ok(()) => {
                    if let Some(state) = self.partitions.get_mut(&slot) {
                        state.committed = Some(batch.last_offset + 1);
                    }
                    break;
                }
                Err(err) if attempt == COMMIT_ATTEMPTS => {
                    // The objects and the plan are durable: a replay rewrites them identically.
                    warn!(topic, partition, error = %err, "offset commit failed; the batch will be replayed");
                }
                Err(err) => {
                    debug!(topic, partition, error = %err, attempt, "offset commit failed; retrying");
                    tokio::time::sleep(RETRY_BACKOFF).await;
                }
            }
        }
    }

    /// Forgets what this archiver holds of a partition and rewinds it to `first_offset`, so
    /// that its uncommitted records are read again, here or by the partition's new owner.
    async fn read_again(&mut self, slot: Slot, first_offset: i64) {
        self.partitions.remove(&slot);
        self.sealer.forget(&self.chain(slot));
        let (topic, partition) = (&self.topics[slot.0].name, slot.1);
        if let Err(err) = self.consumer.rewind(topic, partition, first_offset).await {
            debug!(topic, partition, error = %err, "no rewind (the partition is elsewhere)");
        }
    }

    /// Encodes, writes and records one object, retrying each step until it succeeds.
    async fn write_object(
        &mut self,
        key: Path,
        rows: RecordBatch,
        slot: Slot,
        batch: &PartitionBatch,
    ) {
        let object = loop {
            match EncodedObject::encode(rows.clone()).await {
                Ok(object) => break object,
                Err(err) => {
                    warn!(%key, error = %err, "archive encoding failed; retrying");
                    tokio::time::sleep(RETRY_BACKOFF).await;
                }
            }
        };
        while let Err(err) = self.archive.put(&key, &object).await {
            warn!(%key, error = %err, "archive write failed; retrying");
            tokio::time::sleep(RETRY_BACKOFF).await;
        }
        let topic = &self.topics[slot.0];
        let entry = ManifestEntry {
            seq: 0,
            prev_sha256: String::new(),
            object: key.to_string(),
            sha256: hex::encode(object.sha256),
            rows: object.num_rows as u64,
            bytes: object.bytes.len() as u64,
            topic: topic.name.clone(),
            partition: slot.1,
            first_offset: batch.first_offset,
            last_offset: batch.last_offset,
            written_at: Utc::now(),
        };
        let table = topic.table.name();
        let link = loop {
            match self.manifest.record(entry.clone()).await {
                Ok(link) => break link,
                Err(err) => {
                    warn!(%key, error = %err, "recording the object in the manifest failed; retrying");
                    tokio::time::sleep(RETRY_BACKOFF).await;
                }
            }
        };
        if let Some(link) = link {
            self.sealer.note(&self.chain(slot), link);
        }
        debug!(%key, rows = object.num_rows, size = object.bytes.len(), "archive object written");
        self.report.num_objects_written += 1;
        *self.report.rows_archived.entry(table).or_default() += object.num_rows as u64;
    }

    /// `{table}/dt=…/hour=…/{topic}-{partition}-{first offset}-{last offset}-{first id}.parquet`:
    /// the batch's offsets say where the rows came from; the first record's id (UUIDv7) keeps
    /// names unique when offsets restart (the embedded broker begins at 0 on every
    /// `warden up`). A replay of the same batch yields the same name, so it overwrites
    /// instead of duplicating.
    fn object_key(
        &self,
        hour: DateTime<Utc>,
        (topic, partition): Slot,
        batch: &PartitionBatch,
        first_record: EventId,
    ) -> Path {
        let topic = &self.topics[topic];
        Path::from(format!(
            "{directory}/{name}-{partition}-{first:020}-{last:020}-{first_record}.parquet",
            directory = hour_partition(topic.table.name(), hour),
            name = topic.name,
            first = batch.first_offset,
            last = batch.last_offset,
        ))
    }
}

/// The start of the UTC hour holding `ts`: which hour partition an event goes to.
fn hour_start(ts: DateTime<Utc>) -> DateTime<Utc> {
    let seconds = ts.timestamp();
    // Only a time within an hour of chrono's range limits has no representable hour start;
    // such an event still lands in its own hour's partition.
    DateTime::from_timestamp(seconds - seconds.rem_euclid(3600), 0).unwrap_or(ts)
}

/// A short fingerprint of a record's payload: tells the same log from a new one at the same
/// offset.
fn fingerprint(payload: &[u8]) -> String {
    hex::encode(&Sha256::digest(payload)[..12])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_go_to_the_utc_hour_that_holds_them() {
        let at = |text: &str| {
            DateTime::parse_from_rfc3339(text)
                .expect("time")
                .with_timezone(&Utc)
        };
        assert_eq!(
            hour_start(at("2026-11-22T07:59:59.999999Z")),
            at("2026-11-22T07:00:00Z")
        );
        assert_eq!(
            hour_start(at("2026-11-22T08:00:00Z")),
            at("2026-11-22T08:00:00Z")
        );
        assert_eq!(
            hour_start(at("1969-12-31T23:30:00+00:00")),
            at("1969-12-31T23:00:00Z")
        );
    }
}
