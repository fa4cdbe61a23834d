//! The archiver loop: consume `warden.events`, batch by size and time, write one Parquet
//! object per (event hour, Kafka partition) of the batch, then commit the batch's offsets.

use std::collections::BTreeMap;
use std::time::Duration;

use object_store::path::Path;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use warden_ingest::AuditEvent;
use warden_ingest::kafka::{
    ConsumedRecord, DeadLetterPublisher, KafkaCluster, KafkaSetupError, PartitionOffsets,
    TopicConsumer,
};
use warden_ingest::layout::{ArchiveUrl, EVENTS_TABLE, hour_partition};

use super::{ArchiveConfig, ArchiveError, EncodedObject, ParquetArchive};

/// While draining, how long the topic must be quiet before the remaining lag is checked.
const DRAIN_QUIET: Duration = Duration::from_millis(200);
/// Draining stops after this long even if records remain (they stay in Kafka).
const DRAIN_MAX: Duration = Duration::from_secs(30);
/// Pause before retrying a failed write, commit or dead-letter send.
const RETRY_BACKOFF: Duration = Duration::from_millis(500);
/// Offset commits tried before a batch is left to be replayed.
const COMMIT_ATTEMPTS: u32 = 5;

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
    pub num_events_archived: u64,
    pub num_dead_letters: u64,
    pub num_objects_written: u64,
}

/// Events read but not yet written, grouped by destination object.
#[derive(Debug, Default)]
struct PendingBatch {
    /// (hour partition directory, kafka partition) → events, in offset order.
    objects: BTreeMap<(String, i32), Vec<AuditEvent>>,
    /// First and last offset of the batch in each kafka partition: names its objects.
    offset_ranges: BTreeMap<i32, (i64, i64)>,
    /// Everything read, archived or dead-lettered: committed after the flush.
    processed: PartitionOffsets,
    num_events: usize,
}

impl PendingBatch {
    fn note_offset(&mut self, record: &ConsumedRecord) {
        let range = self
            .offset_ranges
            .entry(record.partition)
            .or_insert((record.offset, record.offset));
        range.0 = range.0.min(record.offset);
        range.1 = range.1.max(record.offset);
        self.processed.record(record);
    }

    fn is_empty(&self) -> bool {
        self.processed.is_empty()
    }
}

/// One member of the archive consumer group.
#[derive(Debug)]
pub struct Archiver {
    consumer: TopicConsumer,
    dead_letters: DeadLetterPublisher,
    archive: ParquetArchive,
    topic: String,
    flush_interval: Duration,
    max_batch_events: usize,
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
        let topic = cluster.topics().events.clone();
        Ok(Self {
            consumer: TopicConsumer::subscribe(cluster, &config.consumer_group, &[&topic])?,
            dead_letters: DeadLetterPublisher::new(cluster)?,
            archive: ParquetArchive::open(&url)?,
            topic,
            flush_interval: config.flush_interval(),
            max_batch_events: config.max_batch_events,
            report: ArchiverReport::default(),
        })
    }

    /// Archives until `shutdown` fires, then stops as `mode` says and returns what it did.
    pub async fn run(mut self, shutdown: CancellationToken, mode: ShutdownMode) -> ArchiverReport {
        let mut pending = PendingBatch::default();
        let mut flush_timer = tokio::time::interval(self.flush_interval);
        flush_timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                _ = flush_timer.tick() => {
                    if !pending.is_empty() {
                        self.flush(&mut pending).await;
                    }
                }
                received = self.consumer.recv() => match received {
                    Ok(record) => {
                        self.take(record, &mut pending).await;
                        if pending.num_events >= self.max_batch_events {
                            self.flush(&mut pending).await;
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
            self.drain(&mut pending).await;
        }
        if !pending.is_empty() {
            self.flush(&mut pending).await;
        }
        info!(
            events = self.report.num_events_archived,
            objects = self.report.num_objects_written,
            dead_letters = self.report.num_dead_letters,
            "archiver stopped"
        );
        self.report
    }

    /// Reads until every assigned partition is consumed to its end, or [`DRAIN_MAX`] passes.
    async fn drain(&mut self, pending: &mut PendingBatch) {
        let deadline = Instant::now() + DRAIN_MAX;
        loop {
            match tokio::time::timeout(DRAIN_QUIET, self.consumer.recv()).await {
                Ok(Ok(record)) => {
                    self.take(record, pending).await;
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

    /// Adds one record to the batch, or sends it to the dead-letter topic if it is not an
    /// event we can archive.
    async fn take(&mut self, record: ConsumedRecord, pending: &mut PendingBatch) {
        match AuditEvent::from_json(&record.payload) {
            Ok(event) => {
                let directory = hour_partition(EVENTS_TABLE, event.ts);
                pending
                    .objects
                    .entry((directory, record.partition))
                    .or_default()
                    .push(event);
                pending.num_events += 1;
            }
            Err(err) => {
                let reason = err.to_string();
                while let Err(send_err) = self.dead_letters.publish(&record, &reason).await {
                    warn!(error = %send_err, "dead-letter publish failed; retrying");
                    tokio::time::sleep(RETRY_BACKOFF).await;
                }
                self.report.num_dead_letters += 1;
                warn!(
                    partition = record.partition,
                    offset = record.offset,
                    %reason,
                    "malformed event sent to the dead-letter topic"
                );
            }
        }
        pending.note_offset(&record);
    }

    /// Writes every object of the batch, then commits its offsets. Retries until both are
    /// done: events are never skipped, at worst written again under the same names.
    async fn flush(&mut self, pending: &mut PendingBatch) {
        let objects = std::mem::take(&mut pending.objects);
        for ((directory, partition), events) in objects {
            let key = self.object_key(&directory, partition, pending, &events);
            let object = loop {
                match EncodedObject::encode(events.clone()).await {
                    Ok(object) => break object,
                    Err(err) => {
                        warn!(%key, error = %err, "archive encoding failed; retrying");
                        tokio::time::sleep(RETRY_BACKOFF).await;
                    }
                }
            };
            loop {
                match self.archive.put(&key, &object).await {
                    Ok(()) => {
                        debug!(%key, rows = object.num_rows, size = object.bytes.len(), "archive object written");
                        self.report.num_objects_written += 1;
                        self.report.num_events_archived += object.num_rows as u64;
                        break;
                    }
                    Err(err) => {
                        warn!(%key, error = %err, "archive write failed; retrying");
                        tokio::time::sleep(RETRY_BACKOFF).await;
                    }
                }
            }
        }
        // The objects are durable now, so a commit that keeps failing (e.g. the partitions
        // were revoked meanwhile) loses nothing: the records are archived again on replay.
        for attempt in 1..=COMMIT_ATTEMPTS {
            match self.consumer.commit(&pending.processed).await {
                Ok(()) => break,
                Err(err) if attempt == COMMIT_ATTEMPTS => {
                    warn!(error = %err, "offset commit failed; the batch will be replayed");
                }
                Err(err) => {
                    debug!(error = %err, attempt, "offset commit failed; retrying");
                    tokio::time::sleep(RETRY_BACKOFF).await;
                }
            }
        }
        *pending = PendingBatch::default();
    }

    /// `{hour dir}/{topic}-{partition}-{first offset}-{last offset}-{first event id}.parquet`:
    /// the offsets say where the rows came from; the event id (UUIDv7) keeps names unique when
    /// offsets restart (the embedded broker begins at 0 on every `warden up`). A replay of the
    /// same batch yields the same name, so it overwrites instead of duplicating.
    fn object_key(
        &self,
        directory: &str,
        partition: i32,
        pending: &PendingBatch,
        events: &[AuditEvent],
    ) -> Path {
        let (first, last) = pending.offset_ranges[&partition];
        let first_event = events
            .first()
            .map(|e| e.event_id.to_string())
            .unwrap_or_default();
        Path::from(format!(
            "{directory}/{topic}-{partition}-{first:020}-{last:020}-{first_event}.parquet",
            topic = self.topic
        ))
    }
}
