//! Producers polled by a quiet background thread.
//!
//! librdkafka hands delivery reports to whoever polls the producer. rdkafka's
//! `ThreadedProducer` (and `FutureProducer`, built on it) polls in 100 ms calls, and the
//! last millisecond of each is a busy loop: rdkafka rounds the time left down to whole
//! milliseconds, and a 0 ms poll returns at once. That is about 1 % of a core per producer,
//! idle or not (an idle detect worker with three of them used 3 % of a core; under load
//! their polling threads were 7–12 % of the worker's samples).
//!
//! [`PolledProducer`] polls in one-second calls instead. A delivery report ends a call at
//! once, so reports are not delayed; only stopping the thread waits for the call to end.
//! [`DeliveringProducer`] adds what the workers await: a [`Delivery`] per record.

use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::ClientContext;
use rdkafka::config::FromClientConfigAndContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, ProducerContext};
use tokio::sync::oneshot;

/// How long one poll of the background thread may wait for a delivery report.
const POLL_PERIOD: Duration = Duration::from_secs(1);
/// How long [`DeliveringProducer::send`] waits between tries while the queue is full.
const QUEUE_FULL_PAUSE: Duration = Duration::from_millis(10);

/// A [`BaseProducer`] whose delivery reports and client events are served by a background
/// thread. Clones share the producer; the thread stops within a second of the last clone's
/// drop, and the producer is destroyed there (its queue purged, as rdkafka does on drop).
pub struct PolledProducer<C: ProducerContext + 'static> {
    shared: Arc<Polled<C>>,
}

struct Polled<C: ProducerContext + 'static> {
    producer: Arc<BaseProducer<C>>,
    stop: Arc<AtomicBool>,
}

impl<C: ProducerContext + 'static> Drop for Polled<C> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl<C: ProducerContext + 'static> Clone for PolledProducer<C> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<C: ProducerContext + 'static> std::fmt::Debug for PolledProducer<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolledProducer").finish_non_exhaustive()
    }
}

impl<C: ProducerContext + 'static> Deref for PolledProducer<C> {
    type Target = BaseProducer<C>;

    fn deref(&self) -> &BaseProducer<C> {
        &self.shared.producer
    }
}

impl<C: ProducerContext + 'static> PolledProducer<C> {
    /// Creates the producer and starts its polling thread.
    pub fn create(config: &ClientConfig, context: C) -> Result<Self, KafkaError> {
        let producer = Arc::new(BaseProducer::from_config_and_context(config, context)?);
        let stop = Arc::new(AtomicBool::new(false));
        let polled = (producer.clone(), stop.clone());
        std::thread::Builder::new()
            .name("kafka-producer-poll".to_owned())
            .spawn(move || {
                let (producer, stop) = polled;
                while !stop.load(Ordering::Relaxed) {
                    producer.poll(POLL_PERIOD);
                }
            })
            .map_err(|err| KafkaError::ClientCreation(format!("producer poll thread: {err}")))?;
        Ok(Self {
            shared: Arc::new(Polled { producer, stop }),
        })
    }
}

/// What a [`DeliveringProducer`]'s record leads to: the broker's acknowledgement or refusal.
type DeliverySender = oneshot::Sender<Result<(), KafkaError>>;

/// Resolves each record's [`Delivery`] from its delivery report.
#[derive(Debug, Default)]
pub struct DeliveryReports;

impl ClientContext for DeliveryReports {}

impl ProducerContext for DeliveryReports {
    type DeliveryOpaque = Box<DeliverySender>;

    fn delivery(&self, result: &DeliveryResult<'_>, sender: Box<DeliverySender>) {
        let outcome = result.as_ref().map(|_| ()).map_err(|(err, _)| err.clone());
        // The record's sender may have stopped waiting: nothing to tell then.
        let _ = sender.send(outcome);
    }
}

/// A producer whose records each come with a [`Delivery`] to await.
pub type DeliveringProducer = PolledProducer<DeliveryReports>;

/// One record for [`DeliveringProducer::queue`] (borrowed: a refused record can be tried
/// again as it is).
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    pub topic: &'a str,
    pub key: Option<&'a [u8]>,
    pub payload: &'a [u8],
    pub headers: Option<&'a OwnedHeaders>,
}

impl<'a> Outgoing<'a> {
    pub fn new(topic: &'a str, key: &'a [u8], payload: &'a [u8]) -> Self {
        Self {
            topic,
            key: Some(key),
            payload,
            headers: None,
        }
    }
}

/// The outcome of one queued record: resolves once the broker has it or it failed for good
/// (after librdkafka's own retries, within `message.timeout.ms`).
#[derive(Debug)]
pub struct Delivery(oneshot::Receiver<Result<(), KafkaError>>);

impl Future for Delivery {
    type Output = Result<(), KafkaError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|outcome| outcome.unwrap_or(Err(KafkaError::Canceled)))
    }
}

impl DeliveringProducer {
    /// A producer made from `config`.
    pub fn from_config(config: &ClientConfig) -> Result<Self, KafkaError> {
        Self::create(config, DeliveryReports)
    }

    /// Queues `record` without waiting; a full queue is `QueueFull` (try again later).
    pub fn queue(&self, record: Outgoing<'_>) -> Result<Delivery, KafkaError> {
        let (sender, receiver) = oneshot::channel();
        let mut base =
            BaseRecord::with_opaque_to(record.topic, Box::new(sender)).payload(record.payload);
        if let Some(key) = record.key {
            base = base.key(key);
        }
        if let Some(headers) = record.headers {
            base = base.headers(headers.clone());
        }
        self.send(base)
            .map(|()| Delivery(receiver))
            .map_err(|(err, _)| err)
    }

    /// Queues `record`, waiting up to `queue_timeout` while the queue is full, then waits
    /// for its delivery.
    pub async fn deliver(
        &self,
        record: Outgoing<'_>,
        queue_timeout: Duration,
    ) -> Result<(), KafkaError> {
        let started = Instant::now();
        loop {
            match self.queue(record) {
                Ok(delivery) => return delivery.await,
                Err(KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull))
                    if started.elapsed() < queue_timeout =>
                {
                    tokio::time::sleep(QUEUE_FULL_PAUSE).await;
                }
                Err(err) => return Err(err),
            }
        }
    }
}
