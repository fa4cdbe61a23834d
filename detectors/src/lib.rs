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
//! [`DetectLoop`] is one member of the detect consumer group: it decodes each record as a
//! borrowed [`EventRow`], feeds the engine and publishes what comes out to `warden.alerts`
//! (keyed by dedup key), logging one line per alert. [Scenarios](scenario) generate realistic
//! streams to rehearse the detectors (`warden simulate`).
//!
//! Not done yet (issue 5): rebuilding state after a restart (a restarted worker starts with
//! empty windows); combining global, per-target, per-IP and per-country counts across
//! workers (with N workers each sees its own partitions' share; per-client and per-token
//! scopes follow the Kafka key and are exact); per-environment, per-target and per-client
//! overrides; `warden detect --replay`.

pub mod auth_failures;
pub mod buckets;
pub mod cost_burn;
pub mod cost_per_request;
pub mod detector;
pub mod engine;
pub mod geo;
pub mod lifecycle;
pub mod retry_loop;
pub mod scenario;
pub mod single_source;
pub mod spike;
#[cfg(test)]
mod test_support;
pub mod upstream_503;

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use warden_ingest::alert::Alert;
use warden_ingest::event_row::EventRow;
use warden_ingest::kafka::{
    AlertPublisher, KafkaCluster, KafkaSetupError, PartitionOffsets, TopicConsumer,
};

use crate::auth_failures::{AuthFailures, AuthFailuresConfig};
use crate::cost_burn::{CostBurn, CostBurnConfig};
use crate::cost_per_request::{CostPerRequest, CostPerRequestConfig};
use crate::detector::Detector;
use crate::engine::Engine;
use crate::geo::{GeoAnomaly, GeoConfig};
use crate::retry_loop::{RetryLoop, RetryLoopConfig};
use crate::single_source::{SingleSource, SingleSourceConfig};
use crate::spike::{SpikeConfig, TrafficSpike};
use crate::upstream_503::{Upstream503, Upstream503Config};

/// How often progress is committed.
const COMMIT_INTERVAL: Duration = Duration::from_secs(5);
/// An event stamped further than this ahead of this worker's clock is not fed to the
/// detectors: one proxy with a wrong clock would otherwise move the watermark into the
/// future, make every other event late and empty every window.
const MAX_CLOCK_SKEW: TimeDelta = TimeDelta::minutes(5);

/// Raw `[detect]` section as written in TOML.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectConfig {
    /// Consumer group of the detect workers.
    pub consumer_group: String,
    /// How far behind the newest event time an event may arrive and still be in time for its
    /// window's first evaluation.
    pub allowed_lateness_s: i64,
    pub cost_burn: CostBurnConfig,
    pub traffic_spike: SpikeConfig,
    pub single_source: SingleSourceConfig,
    pub auth_failures: AuthFailuresConfig,
    pub upstream_503: Upstream503Config,
    pub retry_loop: RetryLoopConfig,
    pub cost_per_request: CostPerRequestConfig,
    pub geo: GeoConfig,
}

impl Default for DetectConfig {
    fn default() -> Self {
        Self {
            consumer_group: "warden-detect".to_owned(),
            allowed_lateness_s: 5,
            cost_burn: CostBurnConfig::default(),
            traffic_spike: SpikeConfig::default(),
            single_source: SingleSourceConfig::default(),
            auth_failures: AuthFailuresConfig::default(),
            upstream_503: Upstream503Config::default(),
            retry_loop: RetryLoopConfig::default(),
            cost_per_request: CostPerRequestConfig::default(),
            geo: GeoConfig::default(),
        }
    }
}

impl DetectConfig {
    /// An engine with the enabled detectors; fails only on a config that did not pass
    /// [`validate`](Self::validate).
    pub fn engine(&self) -> Result<Engine, String> {
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
        Ok(Engine::new(
            detectors,
            TimeDelta::seconds(self.allowed_lateness_s),
        ))
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
        errors.extend(self.cost_burn.validate());
        errors.extend(self.traffic_spike.validate());
        errors.extend(self.single_source.validate());
        errors.extend(self.auth_failures.validate());
        errors.extend(self.upstream_503.validate());
        errors.extend(self.retry_loop.validate());
        errors.extend(self.cost_per_request.validate());
        errors.extend(self.geo.validate());
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
    /// Events stamped more than [`MAX_CLOCK_SKEW`] in the future: skipped.
    pub num_future: u64,
    pub num_alerts: u64,
}

/// One member of the detect consumer group.
#[derive(Debug)]
pub struct DetectLoop {
    consumer: TopicConsumer,
    alerts: AlertPublisher,
    engine: Engine,
}

impl DetectLoop {
    /// A member of `consumer_group` feeding `engine`.
    pub fn new(
        cluster: &KafkaCluster,
        consumer_group: &str,
        engine: Engine,
    ) -> Result<Self, KafkaSetupError> {
        let topic = cluster.topics().events.clone();
        Ok(Self {
            consumer: TopicConsumer::subscribe(cluster, consumer_group, &[&topic])?,
            alerts: AlertPublisher::new(cluster)?,
            engine,
        })
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
                        let alerts = match EventRow::from_json(&record.payload) {
                            Ok(event) if event.ts > Utc::now() + MAX_CLOCK_SKEW => {
                                report.num_future += 1;
                                Vec::new()
                            }
                            Ok(event) => self.engine.take(&event),
                            Err(_) => {
                                report.num_undecodable += 1;
                                Vec::new()
                            }
                        };
                        for alert in &alerts {
                            self.publish(alert).await;
                        }
                        report.num_alerts += alerts.len() as u64;
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
        let stats = self.engine.stats();
        report.num_events = stats.events;
        report.num_late = stats.late;
        info!(
            events = report.num_events,
            undecodable = report.num_undecodable,
            late = report.num_late,
            future = report.num_future,
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
