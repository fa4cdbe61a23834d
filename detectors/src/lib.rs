//! `warden-detectors`: windowed anomaly detectors over `warden.events`.
//!
//! This build has the consumer-group loop every detector will run inside, and no detector
//! yet: it reads and decodes the stream, counts what it sees, and commits its offsets, so the
//! `detect` role can already be deployed and scaled. Detectors (burn rate, spikes, geo, auth
//! and capacity bursts, retry loops) plug into [`DetectLoop`] in later work.

pub mod buckets;
pub mod lifecycle;
pub mod spike;

use std::time::Duration;

use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use warden_ingest::AuditEvent;
use warden_ingest::kafka::{KafkaCluster, KafkaSetupError, PartitionOffsets, TopicConsumer};

/// How often progress is committed.
const COMMIT_INTERVAL: Duration = Duration::from_secs(5);

/// Raw `[detect]` section as written in TOML.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectConfig {
    /// Consumer group of the detect workers.
    pub consumer_group: String,
}

impl Default for DetectConfig {
    fn default() -> Self {
        Self {
            consumer_group: "warden-detect".to_owned(),
        }
    }
}

impl DetectConfig {
    /// Checks the section without IO; one message per problem, each naming its key.
    pub fn validate(&self) -> Vec<String> {
        if self.consumer_group.is_empty() {
            vec!["detect.consumer_group: must not be empty".to_owned()]
        } else {
            Vec::new()
        }
    }
}

/// What a detect loop saw before it stopped.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DetectReport {
    pub num_events: u64,
    pub num_undecodable: u64,
}

/// One member of the detect consumer group.
#[derive(Debug)]
pub struct DetectLoop {
    consumer: TopicConsumer,
}

impl DetectLoop {
    pub fn new(cluster: &KafkaCluster, config: &DetectConfig) -> Result<Self, KafkaSetupError> {
        let topic = cluster.topics().events.clone();
        Ok(Self {
            consumer: TopicConsumer::subscribe(cluster, &config.consumer_group, &[&topic])?,
        })
    }

    /// Runs until `shutdown` fires. Undecodable records are counted and skipped here: the
    /// archiver is the one that dead-letters them.
    pub async fn run(self, shutdown: CancellationToken) -> DetectReport {
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
                            Ok(_) => report.num_events += 1,
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
