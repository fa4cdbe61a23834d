//! Kafka in and out: cluster connection and topic setup, the event publisher, the consumer
//! helper, and the embedded broker used by `warden up`.
//!
//! Everything talks to Kafka through librdkafka (`rdkafka`), also in embedded mode, where the
//! "broker" is librdkafka's in-process mock cluster listening on loopback: the same client
//! code path as production, minus durability.

mod config;
mod consumer;
mod embedded;
mod producer;
mod publisher;

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
pub use rdkafka::error::KafkaError;
use rdkafka::error::RDKafkaErrorCode;
use tracing::{error, info, warn};

pub use config::{EMBEDDED_BROKERS, KafkaConfig, TopicNames};
pub use consumer::{
    AssignmentWatch, BorrowedRecord, ConsumedRecord, PartitionOffsets, Received, Records,
    RewoundPartition, TopicConsumer, TopicReader,
};
pub use embedded::EmbeddedBroker;
pub use producer::{DeliveringProducer, Delivery, DeliveryReports, Outgoing, PolledProducer};
pub use publisher::{
    AlertPublisher, DeadLetterPublisher, KafkaEventPublisher, RecordForwarder,
    SOURCE_OFFSET_HEADER, SOURCE_PARTITION_HEADER, SOURCE_TOPIC_HEADER, produce_events,
};

/// How long topic creation waits for the cluster.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Errors setting up or talking to Kafka.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSetupError {
    #[error("starting the embedded broker: {0}")]
    Embedded(String),
    #[error("kafka client: {0}")]
    Client(#[from] KafkaError),
    #[error("opening the audit spool: {0}")]
    Spool(String),
    #[error("creating topic {topic}: {code}")]
    CreateTopic {
        topic: String,
        code: RDKafkaErrorCode,
    },
}

/// A reachable Kafka cluster and the settings every Warden client uses with it.
///
/// Cheap to clone and `Send + Sync`; the embedded broker, when there is one, is owned
/// separately ([`EmbeddedBroker`]) by whoever started it, and must outlive the clients.
#[derive(Debug, Clone)]
pub struct KafkaCluster {
    bootstrap_servers: String,
    config: KafkaConfig,
}

impl KafkaCluster {
    /// The configured brokers, or the already started embedded broker (which created its
    /// topics itself). No IO: the cluster may well be down at this point.
    pub fn new(config: &KafkaConfig, embedded: Option<&EmbeddedBroker>) -> Self {
        Self {
            bootstrap_servers: embedded
                .map(|broker| broker.bootstrap_servers().to_owned())
                .unwrap_or_else(|| config.brokers.clone()),
            config: config.clone(),
        }
    }

    /// Waits until the cluster answers and has Warden's topics (creating missing ones),
    /// retrying with a log line while it does not. Workers start with this; the proxy does
    /// not wait (its publisher spools meanwhile).
    pub async fn wait_until_ready(&self) {
        let mut backoff = Duration::from_millis(250);
        let mut attempts = 0u32;
        loop {
            match self.ensure_topics().await {
                Ok(()) => {
                    if attempts > 0 {
                        info!(brokers = %self.bootstrap_servers, "kafka is reachable");
                    }
                    return;
                }
                Err(err) => {
                    attempts += 1;
                    if attempts.is_power_of_two() {
                        warn!(
                            brokers = %self.bootstrap_servers,
                            error = %err,
                            "waiting for kafka"
                        );
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap_servers
    }

    /// Whether this is the in-process mock cluster (its topics exist from the start).
    pub fn is_embedded(&self) -> bool {
        self.config.is_embedded()
    }

    pub fn topics(&self) -> &TopicNames {
        &self.config.topics
    }

    /// Settings shared by every client: the brokers and the user's overrides.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap_servers);
        for (key, value) in self.config.all_properties() {
            config.set(key, value);
        }
        config
    }

    /// Whether `[kafka.properties]` (or its secret part) sets librdkafka property `key`.
    pub fn sets_property(&self, key: &str) -> bool {
        self.config.all_properties().any(|(name, _)| name == key)
    }

    /// Producer settings: idempotent, every in-sync replica acknowledges, compressed.
    pub fn producer_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.bootstrap_servers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", &self.config.compression)
            .set("linger.ms", "5")
            .set("queue.buffering.max.messages", "1000000");
        for (key, value) in self.config.all_properties() {
            config.set(key, value);
        }
        config
    }

    /// Consumer settings for `group_id`: offsets are committed by hand after processing.
    pub fn consumer_config(&self, group_id: &str) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.bootstrap_servers)
            .set("group.id", group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            // librdkafka's default is 500 ms. A broker that answers a fetch only when its
            // wait is over (tansu does) would add that to every hop of an alert's path
            // (events → keyed stage → shared stage → alerts): measured p99 2.2 s at 500,
            // 1.3 s at 100 (BENCHMARKS.md).
            .set("fetch.wait.max.ms", "100");
        // Static membership, when configured: a worker restarted with the same identity takes
        // its partitions back at once, with no rebalance and no wait for its old session.
        if let Some(instance_id) = self.config.instance_id.as_deref()
            && !self.config.is_embedded()
        {
            config.set("group.instance.id", instance_id);
        }
        for (key, value) in self.config.all_properties() {
            config.set(key, value);
        }
        config
    }

    /// Creates Warden's topics where missing. Fails if the cluster does not answer in time.
    pub async fn ensure_topics(&self) -> Result<(), KafkaSetupError> {
        if self.config.is_embedded() {
            return Ok(());
        }
        let admin: AdminClient<DefaultClientContext> = self.client_config().create()?;
        let new_topics: Vec<NewTopic<'_>> = self
            .config
            .topics
            .with_partitions(self.config.partitions)
            .into_iter()
            .map(|(name, partitions)| {
                let replication = TopicReplication::Fixed(self.config.replication_factor);
                let topic = NewTopic::new(name, partitions, replication);
                if self.config.topics.is_compacted(name) {
                    topic.set("cleanup.policy", "compact")
                } else {
                    topic
                }
            })
            .collect();
        let options = AdminOptions::new().request_timeout(Some(ADMIN_TIMEOUT));
        let results = admin.create_topics(&new_topics, &options).await?;
        for result in results {
            match result {
                Ok(topic) => info!(%topic, "created topic"),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => {
                    error!(%topic, %code, "the broker refused to create a topic warden needs");
                    return Err(KafkaSetupError::CreateTopic { topic, code });
                }
            }
        }
        Ok(())
    }
}
