//! Publishing to Kafka: the background task that drains the emit channel into
//! `warden.events`, and the dead-letter publisher the consumers use for bad records.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{
    BaseRecord, DeliveryResult, FutureProducer, FutureRecord, Producer, ProducerContext,
    ThreadedProducer,
};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::{ConsumedRecord, KafkaCluster, KafkaSetupError};
use crate::emitter::EventReceiver;

/// Events taken from the emit channel per batch.
const PUBLISH_BATCH: usize = 1024;
/// How long to wait before retrying when librdkafka's local queue is full.
const QUEUE_FULL_BACKOFF: Duration = Duration::from_millis(5);
/// How long shutdown waits for in-flight messages to be acknowledged.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);

/// Delivery counters of the event publisher.
#[derive(Debug, Default)]
pub struct PublisherStats {
    num_delivered: AtomicU64,
    num_failed: AtomicU64,
}

impl PublisherStats {
    pub fn num_delivered(&self) -> u64 {
        self.num_delivered.load(Ordering::Relaxed)
    }

    pub fn num_failed(&self) -> u64 {
        self.num_failed.load(Ordering::Relaxed)
    }
}

/// librdkafka calls this on its polling thread once per message: acknowledged or failed.
#[derive(Debug)]
struct DeliveryCounter {
    stats: Arc<PublisherStats>,
}

impl ClientContext for DeliveryCounter {}

impl ProducerContext for DeliveryCounter {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: Self::DeliveryOpaque) {
        match result {
            Ok(_) => {
                self.stats.num_delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((err, _)) => {
                let failed = self.stats.num_failed.fetch_add(1, Ordering::Relaxed) + 1;
                if failed.is_power_of_two() {
                    warn!(failed, error = %err, "audit event delivery failed");
                }
            }
        }
    }
}

/// Drains the emit channel into the events topic.
#[derive(Debug)]
pub struct KafkaEventPublisher;

impl KafkaEventPublisher {
    /// Spawns the publisher. It runs until every [`crate::EventEmitter`] is dropped, then
    /// flushes what librdkafka still holds and returns its counters.
    pub fn spawn(
        cluster: &KafkaCluster,
        mut events: EventReceiver,
    ) -> Result<JoinHandle<Arc<PublisherStats>>, KafkaSetupError> {
        let stats = Arc::new(PublisherStats::default());
        let producer: Arc<ThreadedProducer<DeliveryCounter>> = Arc::new(
            cluster
                .producer_config()
                .create_with_context(DeliveryCounter {
                    stats: stats.clone(),
                })?,
        );
        let topic = cluster.topics().events.clone();
        Ok(tokio::spawn(async move {
            let mut batch = Vec::with_capacity(PUBLISH_BATCH);
            while events.recv_many(&mut batch, PUBLISH_BATCH).await > 0 {
                for event in batch.drain(..) {
                    let payload = event.to_json();
                    let key = event.partition_key();
                    loop {
                        let record = BaseRecord::to(&topic).key(key).payload(&payload);
                        match producer.send(record) {
                            Ok(()) => break,
                            Err((
                                KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
                                _,
                            )) => {
                                tokio::time::sleep(QUEUE_FULL_BACKOFF).await;
                            }
                            Err((err, _)) => {
                                stats.num_failed.fetch_add(1, Ordering::Relaxed);
                                warn!(error = %err, "audit event could not be queued for kafka");
                                break;
                            }
                        }
                    }
                }
            }
            debug!("emit channel closed, flushing producer");
            let flushing = producer.clone();
            let flushed = tokio::task::spawn_blocking(move || flushing.flush(FLUSH_TIMEOUT)).await;
            match flushed {
                Ok(Ok(())) => {}
                Ok(Err(err)) => warn!(error = %err, "producer flush incomplete"),
                Err(err) => warn!(error = %err, "producer flush task failed"),
            }
            info!(
                delivered = stats.num_delivered(),
                failed = stats.num_failed(),
                "event publisher stopped"
            );
            stats
        }))
    }
}

/// Sends records a consumer could not process to the dead-letter topic, with the reason and
/// the source coordinates as headers, and waits for the broker's acknowledgement.
#[derive(Clone)]
pub struct DeadLetterPublisher {
    producer: FutureProducer,
    topic: String,
}

impl std::fmt::Debug for DeadLetterPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetterPublisher")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl DeadLetterPublisher {
    pub fn new(cluster: &KafkaCluster) -> Result<Self, KafkaSetupError> {
        Ok(Self {
            producer: cluster.producer_config().create()?,
            topic: cluster.topics().dlq.clone(),
        })
    }

    /// Publishes `record` unchanged with `reason`; returns once the broker has it.
    pub async fn publish(&self, record: &ConsumedRecord, reason: &str) -> Result<(), KafkaError> {
        let partition = record.partition.to_string();
        let offset = record.offset.to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "warden-dlq-reason",
                value: Some(reason),
            })
            .insert(Header {
                key: "warden-source-topic",
                value: Some(record.topic.as_str()),
            })
            .insert(Header {
                key: "warden-source-partition",
                value: Some(partition.as_str()),
            })
            .insert(Header {
                key: "warden-source-offset",
                value: Some(offset.as_str()),
            });
        let mut dead_letter = FutureRecord::to(&self.topic)
            .payload(record.payload.as_slice())
            .headers(headers);
        if let Some(key) = &record.key {
            dead_letter = dead_letter.key(key.as_slice());
        }
        self.producer
            .send(dead_letter, FLUSH_TIMEOUT)
            .await
            .map(|_| ())
            .map_err(|(err, _)| err)
    }
}
