//! `warden-detectors`: windowed anomaly detectors over `warden.events`.
//!
//! [`DetectLoop`] is one member of the detect consumer group. It decodes each event, feeds it
//! to the detectors, keeps an event-time watermark (the newest event time seen minus
//! `allowed_lateness_s`), and each time the watermark enters a new [bucket](buckets) it
//! evaluates the detectors; their findings go through the [alert lifecycle](lifecycle) and
//! what comes out is published to `warden.alerts` and logged, one line per alert. Events
//! behind the watermark are still counted (into the baselines) and reported as late.
//!
//! This build has one detector, the [traffic spike](spike). Not done yet (issue 5): the other
//! detectors; rebuilding state after a restart (a restarted worker starts with an empty
//! history, so it first needs `min_baseline_windows` windows before it can fire); combining
//! global and per-target counts across workers (with N workers each sees its own partitions'
//! share; per-client scopes follow the Kafka key and are exact); `warden simulate` and
//! `warden detect --replay`.

pub mod buckets;
pub mod lifecycle;
pub mod spike;

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use warden_ingest::AuditEvent;
use warden_ingest::alert::Alert;
use warden_ingest::kafka::{
    AlertPublisher, KafkaCluster, KafkaSetupError, PartitionOffsets, TopicConsumer,
};

use crate::lifecycle::AlertBook;
use crate::spike::{SpikeConfig, TrafficSpike};

/// How often progress is committed.
const COMMIT_INTERVAL: Duration = Duration::from_secs(5);

/// Raw `[detect]` section as written in TOML.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectConfig {
    /// Consumer group of the detect workers.
    pub consumer_group: String,
    /// How far behind the newest event time an event may arrive and still be in time for its
    /// window's first evaluation.
    pub allowed_lateness_s: i64,
    pub traffic_spike: SpikeConfig,
}

impl Default for DetectConfig {
    fn default() -> Self {
        Self {
            consumer_group: "warden-detect".to_owned(),
            allowed_lateness_s: 5,
            traffic_spike: SpikeConfig::default(),
        }
    }
}

impl DetectConfig {
    /// Checks the section without IO; one message per problem, each naming its key.
    pub fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if self.consumer_group.is_empty() {
            errors.push("detect.consumer_group: must not be empty".to_owned());
        }
        if !(0..=3_600).contains(&self.allowed_lateness_s) {
            errors.push("detect.allowed_lateness_s: must be between 0 and 3600".to_owned());
        }
        errors.extend(self.traffic_spike.validate());
        errors
    }
}

/// What a detect loop saw before it stopped.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DetectReport {
    pub num_events: u64,
    pub num_undecodable: u64,
    /// Events behind the watermark when they came (counted into the baselines all the same).
    pub num_late: u64,
    pub num_alerts: u64,
}

/// One member of the detect consumer group.
#[derive(Debug)]
pub struct DetectLoop {
    consumer: TopicConsumer,
    alerts: AlertPublisher,
    lateness: TimeDelta,
    spike: Option<TrafficSpike>,
    spike_cooldown: TimeDelta,
    book: AlertBook,
    /// The newest event time seen.
    newest: Option<DateTime<Utc>>,
    /// The bucket the watermark was in at the last evaluation.
    evaluated_bucket: Option<i64>,
}

impl DetectLoop {
    pub fn new(cluster: &KafkaCluster, config: &DetectConfig) -> Result<Self, KafkaSetupError> {
        let topic = cluster.topics().events.clone();
        Ok(Self {
            consumer: TopicConsumer::subscribe(cluster, &config.consumer_group, &[&topic])?,
            alerts: AlertPublisher::new(cluster)?,
            lateness: TimeDelta::seconds(config.allowed_lateness_s),
            spike: config
                .traffic_spike
                .enabled
                .then(|| TrafficSpike::new(config.traffic_spike.clone())),
            spike_cooldown: config.traffic_spike.cooldown(),
            book: AlertBook::default(),
            newest: None,
            evaluated_bucket: None,
        })
    }

    /// Feeds one event to the detectors; evaluates them when the watermark enters a new
    /// bucket, and publishes what comes out.
    async fn take(&mut self, event: &AuditEvent, report: &mut DetectReport) {
        report.num_events += 1;
        let watermark = self.newest.map(|newest| newest - self.lateness);
        if watermark.is_some_and(|w| event.ts < w) {
            report.num_late += 1;
        }
        if let Some(spike) = &mut self.spike {
            spike.observe(event);
        }
        self.newest = Some(self.newest.map_or(event.ts, |n| n.max(event.ts)));
        let Some(watermark) = self.newest.map(|newest| newest - self.lateness) else {
            return;
        };
        let bucket = buckets::bucket_of(watermark);
        if self.evaluated_bucket.is_some_and(|b| b >= bucket) {
            return;
        }
        self.evaluated_bucket = Some(bucket);
        let findings = match &mut self.spike {
            Some(spike) => spike.evaluate(buckets::bucket_start(bucket)),
            None => Vec::new(),
        };
        let now = buckets::bucket_start(bucket);
        for (dedup_key, finding) in findings {
            if let Some(alert) = self
                .book
                .update(&dedup_key, finding, now, self.spike_cooldown)
            {
                self.publish(&alert).await;
                report.num_alerts += 1;
            }
        }
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
        let mut report = DetectReport::default();
        let mut processed = PartitionOffsets::default();
        let mut commit_timer = tokio::time::interval(COMMIT_INTERVAL);
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                _ = commit_timer.tick() => self.commit(&mut processed).await,
                received = self.consumer.recv() => match received {
                    Ok(record) => {
                        match AuditEvent::from_json(&record.payload) {
                            Ok(event) => self.take(&event, &mut report).await,
                            Err(_) => report.num_undecodable += 1,
                        }
                        processed.record(&record);
                    }
                    Err(err) => {
                        warn!(error = %err, "kafka receive failed; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                },
            }
        }
        self.commit(&mut processed).await;
        info!(
            events = report.num_events,
            undecodable = report.num_undecodable,
            late = report.num_late,
            alerts = report.num_alerts,
            "detect loop stopped"
        );
        report
    }

    async fn commit(&self, processed: &mut PartitionOffsets) {
        match self.consumer.commit(processed).await {
            Ok(()) => processed.clear(),
            Err(err) => warn!(error = %err, "offset commit failed; will retry"),
        }
    }
}
