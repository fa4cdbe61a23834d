//! `warden-detectors`: windowed anomaly detectors over `warden.events`.
//!
//! The [`engine`] owns event time (watermark, closed and early evaluations) and an
//! [alert book](lifecycle) per detector (fire, suppress, escalate, remind, resolve); each
//! detector implements [`detector::Detector`]: it counts events into epoch-aligned
//! [`buckets`] and, when evaluated, names the subjects whose condition holds. The
//! detectors: [cost burn](cost_burn), [traffic spike](spike), [single source](single_source),
//! [geography](geo), [authentication failures](auth_failures), [upstream 503s](upstream_503),
//! [retry loops](retry_loop) and [cost per request](cost_per_request).
//!
//! [`DetectLoop`] is one member of the detect consumer group: it reads each record in place
//! and hands it to its [stage](stage::StageCore), which decodes it as a borrowed
//! [`EventRow`](warden_ingest::event_row::EventRow) and feeds the engine; the loop publishes
//! what comes out to `warden.alerts` (keyed by dedup key), logging one line per alert. The
//! engine's clock is the [frontier] of the stage's inputs, so partitions read at different
//! paces are judged in event-time order. [Scenarios](scenario) generate realistic streams to
//! rehearse the detectors (`warden simulate`).
//!
//! Restart and rebalance safety is by replay, not checkpoints: see [`DetectLoop`].
//!
//! Scale-out is in two stages ([`DetectStage`]): keyed subjects over each worker's partitions,
//! the rest on one worker that reads every event passed on, in [batches](relay), through
//! `warden.detect.shared`.
//!
//! `warden detect --replay` (in the `warden` binary) runs the same [`Engine`] over the
//! archive.
//!
//! Settings per environment, target and client: [`overrides`].
//!
//! Limit: the shared stage runs on one worker, so its throughput caps the whole group;
//! combining per-partition partial aggregates instead would spread it (not built).

pub mod auth_failures;
pub mod buckets;
pub mod corpus;
pub mod cost_burn;
pub mod cost_per_request;
pub mod detector;
pub mod engine;
pub mod frontier;
pub mod geo;
pub mod key_expiry;
pub mod latency;
pub mod lifecycle;
pub mod overrides;
pub mod relay;
pub mod response_drift;
pub mod retry_loop;
pub mod scenario;
pub mod single_source;
pub mod spike;
pub mod stage;
#[cfg(test)]
mod test_support;
pub mod upstream_503;

use hashbrown::HashMap;
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use warden_ingest::action::ControlAction;
use warden_ingest::alert::Alert;
use warden_ingest::kafka::{
    AlertPublisher, BorrowedRecord, KafkaCluster, KafkaError, KafkaSetupError, PartitionOffsets,
    Received, RecordForwarder, TopicConsumer, TopicReader,
};
use warden_ingest::table_record::TableRecord;

use crate::auth_failures::{AuthFailures, AuthFailuresConfig};
use crate::cost_burn::{CostBurn, CostBurnConfig};
use crate::cost_per_request::{CostPerRequest, CostPerRequestConfig};
use crate::detector::Detector;
use crate::engine::{DetectorSet, Engine, Subjects};
use crate::geo::{GeoAnomaly, GeoConfig};
use crate::key_expiry::{ExpiringKey, KeyExpiry, KeyExpiryConfig};
use crate::latency::{LatencyConfig, LatencySlo};
use crate::overrides::DetectOverride;
use crate::response_drift::{ResponseDrift, ResponseDriftConfig};
use crate::retry_loop::{RetryLoop, RetryLoopConfig};
use crate::single_source::{SingleSource, SingleSourceConfig};
use crate::spike::{SpikeConfig, TrafficSpike};
use crate::stage::{Clock, StageCore};
use crate::upstream_503::{Upstream503, Upstream503Config};

/// How often progress is committed.
const COMMIT_INTERVAL: Duration = Duration::from_secs(5);
/// Records taken at most in one go when they are already waiting (see `DetectLoop::run`).
const BURST: usize = 256;
/// How often a quiet input moves the watermark on with the clock.
const IDLE_TICK: Duration = Duration::from_secs(1);
/// Raw `[detect]` section as written in TOML.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectConfig {
    /// Consumer group of the detect workers.
    pub consumer_group: String,
    /// How far behind the newest event time an event may arrive and still be in time for its
    /// window's first evaluation.
    pub allowed_lateness_s: i64,
    /// How much of the recent past a worker re-reads to rebuild its detectors' state after a
    /// restart or rebalance: at least the longest window or baseline of any detector.
    pub rebuild_history_s: i64,
    pub cost_burn: CostBurnConfig,
    pub traffic_spike: SpikeConfig,
    pub single_source: SingleSourceConfig,
    pub auth_failures: AuthFailuresConfig,
    pub upstream_503: Upstream503Config,
    pub retry_loop: RetryLoopConfig,
    pub cost_per_request: CostPerRequestConfig,
    pub geo: GeoConfig,
    pub latency: LatencyConfig,
    pub response_drift: ResponseDriftConfig,
    pub key_expiry: KeyExpiryConfig,
    /// The client keys with an expiry, from `[proxy.clients]` (set by the binary, which
    /// reads both sections): what `key_expiry` watches.
    #[serde(skip)]
    pub expiring_keys: Vec<ExpiringKey>,
    /// Settings per environment, target and client ([`overrides`]).
    #[serde(skip_serializing)]
    pub overrides: Vec<DetectOverride>,
}

impl Default for DetectConfig {
    fn default() -> Self {
        Self {
            consumer_group: "warden-detect".to_owned(),
            allowed_lateness_s: 5,
            rebuild_history_s: 7_200,
            cost_burn: CostBurnConfig::default(),
            traffic_spike: SpikeConfig::default(),
            single_source: SingleSourceConfig::default(),
            auth_failures: AuthFailuresConfig::default(),
            upstream_503: Upstream503Config::default(),
            retry_loop: RetryLoopConfig::default(),
            cost_per_request: CostPerRequestConfig::default(),
            geo: GeoConfig::default(),
            latency: LatencyConfig::default(),
            response_drift: ResponseDriftConfig::default(),
            key_expiry: KeyExpiryConfig::default(),
            expiring_keys: Vec::new(),
            overrides: Vec::new(),
        }
    }
}

impl DetectConfig {
    /// An engine with the enabled detectors, a set of them per environment with settings of
    /// its own ([`overrides`]); fails only on a config that did not pass
    /// [`validate`](Self::validate).
    pub fn engine(&self) -> Result<Engine, String> {
        let mut sets = Vec::new();
        for set in overrides::plan(self).map_err(|errors| errors.join("; "))? {
            let mut scoped = Vec::new();
            for (scope, settings) in &set.scoped {
                scoped.push((scope.clone(), settings.detectors()?));
            }
            let mut main = set.main.detectors()?;
            // Keys are no environment's: watched once, by the default set (also with none
            // configured: the control topic may give some).
            if sets.is_empty() && self.key_expiry.enabled {
                main.push(Box::new(KeyExpiry::new(
                    self.key_expiry.clone(),
                    self.expiring_keys.clone(),
                )));
            }
            sets.push(DetectorSet::new(set.environment, main, scoped));
        }
        let mut sets = sets.into_iter();
        let default = sets.next().ok_or("no default set of detectors")?;
        Ok(Engine::with_sets(
            default,
            sets.collect(),
            TimeDelta::seconds(self.allowed_lateness_s),
        ))
    }

    /// The enabled detectors of these settings (overrides aside).
    fn detectors(&self) -> Result<Vec<Box<dyn Detector>>, String> {
        let mut detectors: Vec<Box<dyn Detector>> = Vec::new();
        if self.cost_burn.enabled {
            detectors.push(Box::new(CostBurn::new(&self.cost_burn)?));
        }
        if self.traffic_spike.enabled {
            detectors.push(Box::new(TrafficSpike::new(self.traffic_spike.clone())));
        }
        if self.single_source.enabled {
            detectors.push(Box::new(SingleSource::new(self.single_source.clone())));
        }
        if self.auth_failures.enabled {
            detectors.push(Box::new(AuthFailures::new(self.auth_failures.clone())));
        }
        if self.upstream_503.enabled {
            detectors.push(Box::new(Upstream503::new(self.upstream_503.clone())));
        }
        if self.retry_loop.enabled {
            detectors.push(Box::new(RetryLoop::new(self.retry_loop.clone())));
        }
        if self.cost_per_request.enabled {
            let config = self.cost_per_request.clone();
            detectors.push(Box::new(CostPerRequest::new(config)));
        }
        if self.geo.enabled {
            detectors.push(Box::new(GeoAnomaly::new(self.geo.clone())?));
        }
        if self.latency.enabled {
            detectors.push(Box::new(LatencySlo::new(self.latency.clone())));
        }
        if self.response_drift.enabled {
            let config = self.response_drift.clone();
            detectors.push(Box::new(ResponseDrift::new(config)));
        }
        Ok(detectors)
    }

    /// Checks the section without IO; one message per problem, each naming its key.
    pub fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if self.consumer_group.is_empty() {
            errors.push("detect.consumer_group: must not be empty".to_owned());
        }
        if !(0..=3_600).contains(&self.allowed_lateness_s) {
            errors.push("detect.allowed_lateness_s: must be between 0 and 3600".to_owned());
        }
        if !(0..=7 * 86_400).contains(&self.rebuild_history_s) {
            errors.push("detect.rebuild_history_s: must be between 0 and 604800".to_owned());
        }
        errors.extend(self.cost_burn.validate());
        errors.extend(self.traffic_spike.validate());
        errors.extend(self.single_source.validate());
        errors.extend(self.auth_failures.validate());
        errors.extend(self.upstream_503.validate());
        errors.extend(self.retry_loop.validate());
        errors.extend(self.cost_per_request.validate());
        errors.extend(self.geo.validate());
        errors.extend(self.latency.validate());
        errors.extend(self.response_drift.validate());
        errors.extend(self.key_expiry.validate());
        if errors.is_empty()
            && !self.overrides.is_empty()
            && let Err(problems) = overrides::plan(self)
        {
            errors.extend(problems);
        }
        errors
    }
}

/// Why a detect worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum DetectSetupError {
    #[error("detect.{0}")]
    Config(String),
    #[error(transparent)]
    Kafka(#[from] KafkaSetupError),
}

/// What a detect loop saw before it stopped.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DetectReport {
    /// Events fed to the detectors, replayed ones included.
    pub num_events: u64,
    pub num_undecodable: u64,
    /// Events behind the watermark when they came (counted into the baselines all the same).
    pub num_late: u64,
    /// Events read ahead of the stage's other inputs, held until its clock reached them.
    pub num_held: u64,
    /// Events stamped more than [`MAX_CLOCK_SKEW`](stage::MAX_CLOCK_SKEW) in the future:
    /// skipped.
    pub num_future: u64,
    /// Events re-read to rebuild state after an assignment (their alerts not published).
    pub num_replayed: u64,
    /// Alerts published.
    pub num_alerts: u64,
    /// Shared stage: records passed on twice (by a worker that died before committing),
    /// counted once.
    pub num_duplicates: u64,
    /// Alerts found again while rebuilding state: published before, so not again.
    pub num_suppressed: u64,
    /// Times the detectors' state was rebuilt (the first assignment, then each rebalance).
    pub num_rebuilds: u64,
}

/// One detect worker: both stages, until `shutdown` fires. Returns the keyed and the shared
/// stage's reports.
pub async fn run_detect_worker(
    cluster: &KafkaCluster,
    config: &DetectConfig,
    shutdown: CancellationToken,
) -> Result<(DetectReport, DetectReport), DetectSetupError> {
    let keyed = DetectLoop::new(cluster, config, DetectStage::Keyed)?;
    let shared = DetectLoop::new(cluster, config, DetectStage::Shared)?;
    Ok(tokio::join!(
        keyed.run(shutdown.clone()),
        shared.run(shutdown)
    ))
}

/// One member of the detect consumer group.
///
/// **Restart and rebalance safety.** The detectors' state is the recent past of the
/// partitions this member reads, so it is rebuilt from them: on every assignment (the first,
/// after a restart, and each rebalance) the engine starts again from its configured copy,
/// every assigned partition is read again from `rebuild_history_s` ago, and the records
/// before the group's committed offset are replayed with their alerts held back (they were
/// published already, by this member or the one that had the partition before; the alert
/// books still learn that those alerts are open, so their repeats stay suppressed and their
/// resolves are published). The committed offset moves only past processed records (and, in
/// the keyed stage, only once what they passed on is at the broker), and at once after a
/// record that published alerts, so an alert is published again only if a worker dies
/// between publishing and committing; it then carries the same derived `alert_id` and
/// readers can drop the copy.
///
/// **Event time.** The engine's clock is the [frontier] of the stage's inputs: the keyed
/// stage's inputs are its partitions (librdkafka reports when one is read to its end), the
/// shared stage's the source partitions of the batches passed on to it (each batch says
/// whether its partition was caught up). So a backlog read one partition after another is
/// counted ahead of the clock, not late.
#[derive(Debug)]
pub struct DetectLoop {
    consumer: TopicConsumer,
    /// For the control topic's reader.
    cluster: KafkaCluster,
    /// The topic this loop reads.
    topic: String,
    /// Shared stage: the topic whose partitions the keyed stages pass on (`warden.events`).
    source_topic: Option<String>,
    alerts: AlertPublisher,
    /// The engine as configured, before any event: each rebuild starts from a copy.
    configured: Engine,
    /// Decoding, counting, the clock and (keyed stage) the batches being filled.
    core: StageCore,
    rebuild_history: TimeDelta,
    /// The assignment count the engine was last rebuilt for.
    assignment: u64,
    /// Each replaying partition's committed offset: records before it are replayed. (One
    /// topic per loop, so the partition names it.)
    replay_until: HashMap<i32, i64>,
    /// Keyed stage: sends the core's batches to the shared stage.
    forwarder: Option<RecordForwarder>,
}

/// The two stages of detection. Events are partitioned by client token: every detect worker
/// runs the keyed stage over its share of `warden.events` (reporting on tokens) and passes
/// each event on, in [batches](relay), to `warden.detect.shared`, whose one partition the
/// shared stage's group gives to one worker (reporting on everything else: global, targets,
/// clients, IPs, countries). N workers therefore publish what one would; if the shared
/// stage's worker dies, the group moves it to another, which rebuilds it like any other
/// restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DetectStage {
    Keyed,
    Shared,
}

/// A batch for the shared stage is sent once full ([`stage::RELAY_BATCH_EVENTS`]), or at the
/// latest this long after it started filling: what passing on adds to the latency of the
/// shared stage's alerts.
const RELAY_INTERVAL: Duration = Duration::from_millis(50);

/// What receiving one thing from the consumer left to do (after the record is given back).
enum Step {
    /// Alerts to publish (none when replaying); a source partition whose batch is full.
    Processed {
        alerts: Vec<Alert>,
        full_batch: Option<i32>,
    },
    /// The group assigned partitions anew: rebuild, then read this record again.
    Reassigned {
        partition: i32,
        offset: i64,
    },
    /// A partition was read to its end.
    End(i32),
    Failed(KafkaError),
}

impl DetectLoop {
    /// A member of `stage`'s consumer group (`consumer_group`, or `{consumer_group}-shared`),
    /// with the engine and history `config` asks for.
    pub fn new(
        cluster: &KafkaCluster,
        config: &DetectConfig,
        stage: DetectStage,
    ) -> Result<Self, DetectSetupError> {
        let topics = cluster.topics();
        let (topic, consumer, subjects, forwarder) = match stage {
            DetectStage::Keyed => (
                &topics.events,
                TopicConsumer::subscribe_reporting_ends(
                    cluster,
                    &config.consumer_group,
                    &[&topics.events],
                )?,
                Subjects::Keyed,
                Some(RecordForwarder::new(cluster, &topics.detect_shared)?),
            ),
            DetectStage::Shared => (
                &topics.detect_shared,
                TopicConsumer::subscribe(
                    cluster,
                    &format!("{}-shared", config.consumer_group),
                    &[&topics.detect_shared],
                )?,
                Subjects::Shared,
                None,
            ),
        };
        let engine = config
            .engine()
            .map_err(DetectSetupError::Config)?
            .reporting_on(subjects);
        Ok(Self {
            consumer,
            cluster: cluster.clone(),
            topic: topic.clone(),
            source_topic: (stage == DetectStage::Shared).then(|| topics.events.clone()),
            alerts: AlertPublisher::new(cluster)?,
            configured: engine.clone(),
            core: StageCore::new(stage, engine, TimeDelta::seconds(config.allowed_lateness_s)),
            rebuild_history: TimeDelta::seconds(config.rebuild_history_s),
            assignment: 0,
            replay_until: HashMap::new(),
            forwarder,
        })
    }

    /// The actions on `warden.control`, from its beginning and then as they are published
    /// (revocations teach `revoked_token` which keys to watch). Read by a task of its own,
    /// reconnecting while the cluster does not answer.
    fn follow_control(&self) -> tokio::sync::mpsc::UnboundedReceiver<ControlAction> {
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        let cluster = self.cluster.clone();
        tokio::spawn(async move {
            let topic = cluster.topics().control.clone();
            while !sender.is_closed() {
                if let Ok(reader) = TopicReader::from_beginning(&cluster, &topic).await {
                    while let Ok(record) = reader.recv().await {
                        match ControlAction::decode(&record.payload) {
                            Ok(action) => {
                                if sender.send(action).is_err() {
                                    return;
                                }
                            }
                            Err(err) => {
                                warn!(error = %err, "skipping an unreadable control action")
                            }
                        }
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        receiver
    }

    /// Publishes an alert (retrying until the broker has it) and logs it.
    async fn publish(&self, alert: &Alert) {
        warn!(
            detector = alert.detector,
            status = ?alert.status,
            severity = alert.severity.as_str(),
            subject = %alert.subject,
            observed = alert.observed,
            threshold = alert.threshold,
            dedup_key = alert.dedup_key,
            "ALERT {}",
            alert.summary
        );
        while let Err(err) = self.alerts.publish(alert).await {
            warn!(error = %err, "publishing an alert failed; retrying");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Runs until `shutdown` fires. Undecodable records are counted and skipped here: the
    /// archiver is the one that dead-letters them.
    pub async fn run(mut self, shutdown: CancellationToken) -> DetectReport {
        // A clone to receive from, so a received record can be read while `self` changes.
        let consumer = self.consumer.clone();
        let mut processed = PartitionOffsets::default();
        let mut commit_timer = tokio::time::interval(COMMIT_INTERVAL);
        let mut idle_timer = tokio::time::interval(IDLE_TICK);
        let mut relay_timer = tokio::time::interval(RELAY_INTERVAL);
        relay_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut received_since_tick = false;
        let mut records = consumer.records();
        let mut control = self.follow_control();
        loop {
            let received = tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                Some(action) = control.recv() => {
                    // Kept in the configured engine too: a rebuild starts from it.
                    self.configured.control(&action);
                    self.core.control(&action);
                    continue;
                }
                _ = commit_timer.tick() => {
                    self.commit(&mut processed).await;
                    continue;
                }
                _ = relay_timer.tick(), if self.forwarder.is_some() => {
                    self.send_all().await;
                    continue;
                }
                _ = idle_timer.tick() => {
                    if !std::mem::take(&mut received_since_tick) {
                        self.on_idle(&mut processed).await;
                    }
                    continue;
                }
                received = records.next() => received,
            };
            received_since_tick = true;
            // What is already waiting is taken in one go, at one reading of the clock: going
            // round the select and reading the clock for every record cost more than a tenth
            // of the worker's time.
            let clock = Clock::read();
            let mut next = Some(received);
            let mut taken = 0;
            while let Some(received) = next.take() {
                let step = match received {
                    Ok(Received::Record(record)) => self.handle(&record, &mut processed, clock),
                    Ok(Received::End { partition }) => Step::End(partition),
                    Err(err) => Step::Failed(err),
                };
                if !self.finish(step, &mut processed, clock).await {
                    break;
                }
                taken += 1;
                if taken < BURST {
                    next = records.ready();
                }
            }
        }
        self.commit(&mut processed).await;
        let report = self.core.report();
        info!(
            stage = ?self.core.stage(),
            events = report.num_events,
            replayed = report.num_replayed,
            undecodable = report.num_undecodable,
            late = report.num_late,
            held = report.num_held,
            future = report.num_future,
            alerts = report.num_alerts,
            suppressed = report.num_suppressed,
            duplicates = report.num_duplicates,
            rebuilds = report.num_rebuilds,
            "detect loop stopped"
        );
        report
    }

    /// Does what receiving one thing left to do. Returns false if time passed meanwhile
    /// (the clock read before is stale).
    async fn finish(&mut self, step: Step, processed: &mut PartitionOffsets, clock: Clock) -> bool {
        match step {
            Step::Processed { alerts, full_batch } => {
                if let Some(partition) = full_batch {
                    self.send(partition, false).await;
                }
                self.publish_all(&alerts, processed).await;
                alerts.is_empty()
            }
            Step::Reassigned { partition, offset } => {
                self.rebuild(partition, offset, processed).await;
                false
            }
            Step::End(partition) => {
                self.core.reached_end(partition, clock);
                self.send(partition, true).await;
                let alerts = self.core.advance(clock);
                self.publish_all(&alerts, processed).await;
                alerts.is_empty()
            }
            Step::Failed(err) => {
                warn!(error = %err, "kafka receive failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                false
            }
        }
    }

    /// Feeds one record to the engine, without copying it: an event (keyed stage) or a
    /// batch of them (shared stage). Its alerts are to be published unless it is replayed.
    fn handle(
        &mut self,
        record: &BorrowedRecord<'_>,
        processed: &mut PartitionOffsets,
        clock: Clock,
    ) -> Step {
        let (partition, offset) = (record.partition(), record.offset());
        if self.consumer.assignments() != self.assignment {
            return Step::Reassigned { partition, offset };
        }
        let replaying = self
            .replay_until
            .get(&partition)
            .is_some_and(|&committed| offset < committed);
        let payload = record.payload();
        let (alerts, full_batch) = match self.core.stage() {
            DetectStage::Keyed => {
                let taken = self
                    .core
                    .take_event(partition, offset, payload, replaying, clock);
                (taken.alerts, taken.full_batch)
            }
            DetectStage::Shared => (self.core.take_batch(payload, replaying, clock), None),
        };
        if replaying {
            self.core.report_mut().num_suppressed += alerts.len() as u64;
            return Step::Processed {
                alerts: Vec::new(),
                full_batch,
            };
        }
        processed.mark(&self.topic, partition, offset);
        Step::Processed { alerts, full_batch }
    }

    /// Publishes `alerts`, then commits what was processed: a member that takes over must
    /// not publish them again.
    async fn publish_all(&mut self, alerts: &[Alert], processed: &mut PartitionOffsets) {
        if alerts.is_empty() {
            return;
        }
        for alert in alerts {
            self.publish(alert).await;
        }
        self.core.report_mut().num_alerts += alerts.len() as u64;
        self.commit(processed).await;
    }

    /// Keyed stage: sends `partition`'s batch to the shared stage, saying whether the
    /// partition was read to its end (an empty batch only to tell the shared stage that a
    /// partition it waits for has caught up).
    async fn send(&mut self, partition: i32, caught_up: bool) {
        let (Some(forwarder), Some(relay)) = (self.forwarder.as_mut(), self.core.relay()) else {
            return;
        };
        if let Some(payload) = relay.cut(partition, caught_up) {
            let key = partition.to_string();
            forwarder.send(key.as_bytes(), &payload).await;
        }
    }

    /// Keyed stage: sends every batch with events in it.
    async fn send_all(&mut self) {
        let filled = self.core.relay().map(|relay| relay.filled());
        for partition in filled.unwrap_or_default() {
            self.send(partition, false).await;
        }
    }

    /// Starts the engine again for a new assignment: rewinds every assigned partition by
    /// `rebuild_history` and notes which records to replay. The record that revealed the
    /// assignment (at `offset` of `partition`) is read again, rewound or not.
    async fn rebuild(&mut self, partition: i32, offset: i64, processed: &mut PartitionOffsets) {
        self.assignment = self.consumer.assignments();
        // What this member processed of partitions it keeps is not to be replayed as new.
        self.commit(processed).await;
        processed.clear();
        self.core.restart(self.configured.clone());
        self.replay_until.clear();
        let since = Utc::now() - self.rebuild_history;
        let rewound = match self.consumer.rewind_assignment(since).await {
            Ok(rewound) => rewound,
            Err(err) => {
                warn!(error = %err, "could not re-read the recent past; detectors start empty");
                Vec::new()
            }
        };
        let now = Instant::now();
        let mut record_rewound = false;
        for rewound in rewound {
            info!(
                stage = ?self.core.stage(),
                topic = rewound.topic,
                partition = rewound.partition,
                from = rewound.from,
                committed = rewound.committed,
                "rebuilding detector state"
            );
            record_rewound |= rewound.partition == partition;
            self.replay_until
                .insert(rewound.partition, rewound.committed);
            if let Some(relay) = self.core.relay() {
                // Its clock waits for the partition, and so will the shared stage's until
                // this member says the partition is caught up.
                relay.announce_end_of(rewound.partition);
                self.core.expect(rewound.partition, now);
            }
        }
        // The shared stage waits for every source partition until it has heard of it (a
        // keyed stage may pass on one partition's backlog long before another's).
        if let Some(source_topic) = &self.source_topic {
            match self.consumer.partitions_of(source_topic).await {
                Ok(partitions) => {
                    for source in partitions {
                        self.core.expect(source, now);
                    }
                }
                Err(err) => warn!(error = %err, "could not list the source partitions"),
            }
        }
        if !record_rewound
            && let Err(err) = self.consumer.rewind(&self.topic, partition, offset).await
        {
            warn!(partition, offset, error = %err, "a record could not be read again; not counted");
        }
    }

    /// The input is quiet: moves the clock on without a record ([`StageCore::idle`]).
    async fn on_idle(&mut self, processed: &mut PartitionOffsets) {
        let alerts = self.core.idle(Clock::read());
        self.publish_all(&alerts, processed).await;
    }

    async fn commit(&mut self, processed: &mut PartitionOffsets) {
        // What was passed on must be at the shared stage before its source is committed.
        self.send_all().await;
        if let Some(forwarder) = self.forwarder.as_mut()
            && !forwarder.flush().await
        {
            warn!("passing events on to the shared stage failed; not committing yet");
            return;
        }
        match self.consumer.commit(processed).await {
            Ok(()) => processed.clear(),
            Err(err) => warn!(error = %err, "offset commit failed; will retry"),
        }
    }
}
