//! Publishing to Kafka: the task that drains the emit queue into `warden.events` — straight
//! to Kafka while it keeps up, through the disk spool while it does not — and the dead-letter
//! publisher the consumers use for bad records.
//!
//! Two routes, one task:
//!
//! - **Direct**: each event is handed to librdkafka and acknowledged in the background.
//! - **Spooling**: entered when Kafka is unreachable (every broker down, a delivery failed or
//!   timed out) or slow (librdkafka's queue is full, or more than `max_in_flight` events wait
//!   for acknowledgement). New events are appended to the [`Spool`]; so are direct-route
//!   events that come back failed. Meanwhile the task probes the cluster and, once it answers,
//!   replays the spool in order, in windows, acknowledging a window in the spool only when
//!   Kafka has every record of it. When the spool is drained the route is direct again.
//!
//! The publisher starts on the spooling route and stays there until the cluster has
//! answered with Warden's topics (created if missing): events of the first calls go to the
//! spool, durably, instead of waiting in librdkafka's memory for a topic that may not exist
//! yet. What the direct route holds in memory is bounded — `[audit].max_in_flight` events and
//! `max_in_flight_mb` — and anything Kafka has not acknowledged within `delivery_timeout_s`
//! is spooled: a proxy killed outright loses at most those unacknowledged events.
//!
//! The request path never waits on any of this: it only ever touches the emit queue. Under
//! `[audit].durability = "acked"` an admitted call's events carry a [`Settle`], told here
//! once the event is durable: from its delivery report on the direct route, or after the
//! spool's fsync of the batch that holds it (forced at once for such batches, whatever
//! `[audit].fsync` says).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::Message;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, PurgeConfig};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

use super::producer::{DeliveringProducer, Delivery, Outgoing, PolledProducer};
use super::{ConsumedRecord, KafkaCluster, KafkaSetupError};
use crate::audit_config::AuditConfig;
use crate::emitter::{AuditStats, Durability, EventReceiver, OnSpoolFull, QueuedEvent, Settle};
use crate::spool::{Spool, SpoolError, SpoolPosition, SpooledRecord};

/// Events taken from the emit queue per batch.
const PUBLISH_BATCH: usize = 1024;
/// Spooled records sent to Kafka per replay window.
const REPLAY_WINDOW: usize = 5_000;
/// How often the task looks at the spool, its fsync deadline and the gauges.
const TICK: Duration = Duration::from_millis(100);
/// First and longest pause between replay attempts while Kafka does not answer.
const REPLAY_BACKOFF_MIN: Duration = Duration::from_millis(500);
const REPLAY_BACKOFF_MAX: Duration = Duration::from_secs(10);
/// How long a probe waits for the cluster's metadata.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long shutdown waits for in-flight messages before spooling them instead.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the summaries of shed events are sent.
const SHED_SUMMARY_PERIOD: Duration = Duration::from_secs(1);
/// How long the dead-letter and alert publishers wait for an acknowledgement.
const ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// An event on its way to the spool (a direct-route event Kafka did not take, or one held
/// back by a full spool): its key and payload, and whom to tell once it is durable.
#[derive(Debug)]
struct Unsent {
    key: Vec<u8>,
    payload: Vec<u8>,
    settle: Option<Settle>,
}

/// librdkafka calls this on its polling thread: once per message, and on client errors.
#[derive(Debug)]
struct DirectRouteContext {
    stats: Arc<AuditStats>,
    failed: mpsc::UnboundedSender<Unsent>,
    all_brokers_down: Arc<AtomicBool>,
}

impl ClientContext for DirectRouteContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            if !self.all_brokers_down.swap(true, Ordering::Relaxed) {
                warn!(%reason, "every kafka broker is down");
            }
        } else {
            debug!(%error, %reason, "kafka client error");
        }
    }
}

impl ProducerContext for DirectRouteContext {
    /// Whom to tell once the event is acknowledged (`acked` calls only).
    type DeliveryOpaque = Box<Option<Settle>>;

    fn delivery(&self, result: &DeliveryResult<'_>, settle: Self::DeliveryOpaque) {
        match result {
            Ok(_) => {
                self.stats.add_delivered(1);
                if let Some(settle) = *settle {
                    settle.durable();
                }
            }
            Err((err, message)) => {
                debug!(error = %err, "direct delivery failed; the event goes to the spool");
                let unsent = Unsent {
                    key: message.key().unwrap_or_default().to_vec(),
                    payload: message.payload().unwrap_or_default().to_vec(),
                    settle: *settle,
                };
                // The receiver lives as long as the producer: the send cannot fail.
                let _ = self.failed.send(unsent);
            }
        }
    }
}

/// Where new events go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Direct,
    Spooling { since: Instant },
}

/// Spooled records on their way to Kafka: the ones not yet acknowledged, and where the
/// window ends in the spool.
#[derive(Debug)]
struct ReplayWindow {
    unsent: Vec<SpooledRecord>,
    end: SpoolPosition,
    len: usize,
}

/// What a replay attempt came back with.
#[derive(Debug)]
enum ReplayOutcome {
    /// The cluster did not answer the probe: nothing was sent.
    Unreachable(ReplayWindow),
    /// Sent; `window.unsent` holds the records Kafka did not acknowledge.
    Sent(ReplayWindow),
}

type ReplayFuture = Pin<Box<dyn Future<Output = ReplayOutcome> + Send>>;

/// Drains the emit queue into the events topic.
#[derive(Debug)]
pub struct KafkaEventPublisher;

impl KafkaEventPublisher {
    /// Opens the spool and spawns the publisher. It runs until every emitter is dropped, then
    /// delivers or spools what it still holds and returns.
    pub fn spawn(
        cluster: &KafkaCluster,
        events: EventReceiver,
        audit: &AuditConfig,
    ) -> Result<JoinHandle<()>, KafkaSetupError> {
        let spool = Spool::open(audit.spool_options())
            .map_err(|err| KafkaSetupError::Spool(err.to_string()))?;
        let stats = events.stats_handle();
        let (failed_tx, failed_rx) = mpsc::unbounded_channel();
        let all_brokers_down = Arc::new(AtomicBool::new(false));
        let delivery_timeout_ms = audit.delivery_timeout().as_millis().to_string();
        let mut producer_config = cluster.producer_config();
        producer_config
            .set("message.timeout.ms", &delivery_timeout_ms)
            // Past either bound librdkafka answers QueueFull, and events go to the spool.
            .set(
                "queue.buffering.max.messages",
                audit.max_in_flight.to_string(),
            )
            .set(
                "queue.buffering.max.kbytes",
                audit.max_in_flight_mb.saturating_mul(1024).to_string(),
            );
        if audit.durability == Durability::Acked && !cluster.sets_property("linger.ms") {
            // Every acked call waits for its events' acknowledgement: sending at once beats
            // waiting to fill a batch (librdkafka still batches what piles up meanwhile).
            producer_config.set("linger.ms", "0");
        }
        let direct = PolledProducer::create(
            &producer_config,
            DirectRouteContext {
                stats: stats.clone(),
                failed: failed_tx,
                all_brokers_down: all_brokers_down.clone(),
            },
        )?;
        let replay = DeliveringProducer::from_config(&producer_config)?;
        let topics_confirmed = cluster.is_embedded();
        let route = if spool.is_drained() && topics_confirmed {
            Route::Direct
        } else {
            if !topics_confirmed {
                info!(
                    "audit events now go to the disk spool until kafka answers with warden's topics"
                );
            }
            Route::Spooling {
                since: Instant::now(),
            }
        };
        let publisher = Publisher {
            direct,
            replay,
            topic: cluster.topics().events.clone(),
            cluster: cluster.clone(),
            spool,
            overflow: VecDeque::new(),
            awaiting_fsync: Vec::new(),
            route,
            events,
            failed: failed_rx,
            all_brokers_down,
            max_in_flight: audit.max_in_flight,
            replay_backoff: REPLAY_BACKOFF_MIN,
            next_replay: Instant::now(),
            retry_window: None,
            spooled_this_episode: 0,
            topics_confirmed,
            spool_max_bytes: audit.spool_options().max_bytes,
            shed_summaries_sent: Instant::now(),
        };
        Ok(tokio::spawn(publisher.run()))
    }
}

/// The publisher task's state. One owner: no locks.
struct Publisher {
    direct: PolledProducer<DirectRouteContext>,
    replay: DeliveringProducer,
    topic: String,
    cluster: KafkaCluster,
    spool: Spool,
    /// Records waiting for room in a full spool (`block` / `fail_closed`), oldest first.
    overflow: VecDeque<Unsent>,
    /// `acked` events appended to the spool and not yet fsynced.
    awaiting_fsync: Vec<Settle>,
    route: Route,
    events: EventReceiver,
    failed: mpsc::UnboundedReceiver<Unsent>,
    all_brokers_down: Arc<AtomicBool>,
    max_in_flight: usize,
    replay_backoff: Duration,
    next_replay: Instant,
    /// A window Kafka took only part of: its remaining records are sent before any new ones.
    retry_window: Option<ReplayWindow>,
    spooled_this_episode: u64,
    /// Whether the cluster has answered with the events topic since the start; until it
    /// has, the route stays spooling even with an empty spool.
    topics_confirmed: bool,
    /// `[audit].spool_max_mb`, in bytes: past half of it, refused callers' events are shed.
    spool_max_bytes: u64,
    /// When the summaries of shed events were last sent.
    shed_summaries_sent: Instant,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("route", &self.route)
            .finish_non_exhaustive()
    }
}

impl Publisher {
    async fn run(mut self) {
        if let Route::Spooling { .. } = self.route {
            self.events.stats().set_spooling(true);
        }
        self.publish_gauges();
        let mut batch = Vec::with_capacity(PUBLISH_BATCH);
        let mut failed = Vec::new();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut in_flight_replay: Option<ReplayFuture> = None;
        loop {
            tokio::select! {
                biased;
                received = self.failed.recv_many(&mut failed, PUBLISH_BATCH) => {
                    if received > 0 {
                        self.take_failed(&mut failed);
                    }
                }
                received = self.events.recv_many(&mut batch, PUBLISH_BATCH) => {
                    if received == 0 {
                        break;
                    }
                    for QueuedEvent { event, settle } in batch.drain(..) {
                        let payload = event.to_json();
                        self.publish(event.partition_key().as_bytes(), payload, settle);
                    }
                    self.sync_spool();
                }
                outcome = async { in_flight_replay.as_mut().expect("guarded").await },
                    if in_flight_replay.is_some() =>
                {
                    in_flight_replay = None;
                    self.replayed(outcome);
                }
                _ = tick.tick() => {
                    self.send_shed_summaries(false);
                    self.sync_spool();
                    if in_flight_replay.is_none() {
                        in_flight_replay = self.next_replay();
                    }
                    self.publish_gauges();
                }
            }
        }
        if let Some(replay) = in_flight_replay {
            let outcome = replay.await;
            self.replayed(outcome);
        }
        self.shut_down().await;
    }

    /// Routes one event.
    fn publish(&mut self, key: &[u8], payload: Vec<u8>, settle: Option<Settle>) {
        let mut settle = settle;
        if self.route == Route::Direct {
            if let Some(reason) = self.kafka_trouble() {
                self.start_spooling(reason);
            } else {
                let record = BaseRecord::with_opaque_to(&self.topic, Box::new(settle))
                    .key(key)
                    .payload(&payload);
                match self.direct.send(record) {
                    Ok(()) => return,
                    Err((err, refused)) => {
                        settle = *refused.delivery_opaque;
                        if let KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull) = err {
                            self.start_spooling("the producer queue is full (kafka is slow)");
                        } else {
                            self.start_spooling(&format!("the producer refused an event: {err}"));
                        }
                    }
                }
            }
        }
        self.spool_record(Unsent {
            key: key.to_vec(),
            payload,
            settle,
        });
    }

    /// Sends the summaries of the refused callers' events shed since the last time, once a
    /// [`SHED_SUMMARY_PERIOD`] (or `now`). While a full spool holds records back they wait
    /// and keep counting: their number is bounded, their counts saturate.
    fn send_shed_summaries(&mut self, now: bool) {
        if !now && self.shed_summaries_sent.elapsed() < SHED_SUMMARY_PERIOD {
            return;
        }
        if !self.overflow.is_empty() {
            return;
        }
        self.shed_summaries_sent = Instant::now();
        for summary in self.events.take_shed_summaries() {
            let payload = summary.to_json();
            self.publish(summary.partition_key().as_bytes(), payload, None);
        }
    }

    /// Why the direct route should not be used right now, if it should not.
    fn kafka_trouble(&self) -> Option<&'static str> {
        if self.all_brokers_down.load(Ordering::Relaxed) {
            Some("every broker is down")
        } else if usize::try_from(self.direct.in_flight_count()).unwrap_or(0) > self.max_in_flight {
            Some("too many events wait for acknowledgement (kafka is slow)")
        } else {
            None
        }
    }

    fn start_spooling(&mut self, reason: &str) {
        if self.route != Route::Direct {
            return;
        }
        warn!(
            %reason,
            spool = %self.spool_dir(),
            "kafka unavailable: audit events now go to the disk spool"
        );
        self.route = Route::Spooling {
            since: Instant::now(),
        };
        self.spooled_this_episode = 0;
        self.events.stats().set_spooling(true);
        self.next_replay = Instant::now() + REPLAY_BACKOFF_MIN;
        self.replay_backoff = REPLAY_BACKOFF_MIN;
        if self.all_brokers_down.load(Ordering::Relaxed) {
            // Events librdkafka still queues would wait out the delivery timeout in memory;
            // purged, they come back as failed deliveries and are spooled now.
            self.direct.purge(PurgeConfig::default().queue());
        }
    }

    /// Failed direct-route deliveries: to the spool (they are older than what comes next).
    fn take_failed(&mut self, failed: &mut Vec<Unsent>) {
        if self.route == Route::Direct {
            self.start_spooling("kafka did not acknowledge an event in time");
        }
        for unsent in failed.drain(..) {
            self.spool_record(unsent);
        }
        self.sync_spool();
    }

    /// Appends one record to the spool, or applies `on_spool_full` when it has no room.
    fn spool_record(&mut self, unsent: Unsent) {
        if !self.overflow.is_empty() {
            self.overflow.push_back(unsent);
            return;
        }
        match self.spool.append(&unsent.key, &unsent.payload) {
            Ok(()) => {
                self.awaiting_fsync.extend(unsent.settle);
                self.events.stats().add_spooled(1);
                self.spooled_this_episode += 1;
                if self.spool.bytes().saturating_mul(2) > self.spool_max_bytes {
                    self.events.set_spool_half_full(true);
                }
            }
            Err(err) => self.no_room(unsent, &err),
        }
    }

    fn no_room(&mut self, record: Unsent, err: &SpoolError) {
        match self.events.on_spool_full() {
            // Dropped with it, its settle tells an `acked` call the event is lost.
            OnSpoolFull::Drop => self.events.stats().add_dropped(1),
            OnSpoolFull::Block | OnSpoolFull::FailClosed => {
                if self.overflow.is_empty() {
                    warn!(
                        error = %err,
                        policy = ?self.events.on_spool_full(),
                        "the spool cannot take more events; new calls are held back"
                    );
                }
                self.overflow.push_back(record);
                self.events.set_spool_full(true);
            }
        }
    }

    /// Moves held-back records into the spool while it has room.
    fn drain_overflow(&mut self) {
        while let Some(unsent) = self.overflow.front() {
            if self.spool.append(&unsent.key, &unsent.payload).is_err() {
                return;
            }
            if let Some(unsent) = self.overflow.pop_front() {
                self.awaiting_fsync.extend(unsent.settle);
            }
            self.events.stats().add_spooled(1);
            self.spooled_this_episode += 1;
        }
        if self.overflow.is_empty() {
            self.events.set_spool_full(false);
        }
        if !self.awaiting_fsync.is_empty() {
            self.sync_spool();
        }
    }

    /// fsyncs the spool when its policy says so, or at once when `acked` events wait for it
    /// (they are told then; if the fsync fails they are told they are lost).
    fn sync_spool(&mut self) {
        if self.awaiting_fsync.is_empty() {
            if let Err(err) = self.spool.sync_if_due() {
                error!(error = %err, "spool fsync failed");
            }
            return;
        }
        match self.spool.sync() {
            Ok(()) => self.awaiting_fsync.drain(..).for_each(Settle::durable),
            Err(err) => {
                error!(error = %err, "spool fsync failed; the calls waiting on it are refused");
                self.awaiting_fsync.clear();
            }
        }
    }

    /// Starts the next replay attempt, if one is due.
    fn next_replay(&mut self) -> Option<ReplayFuture> {
        let Route::Spooling { since } = self.route else {
            return None;
        };
        if Instant::now() < self.next_replay {
            return None;
        }
        let window = match self.retry_window.take() {
            Some(window) => window,
            None => {
                self.drain_overflow();
                let records = match self.spool.read(REPLAY_WINDOW) {
                    Ok(records) => records,
                    Err(err) => {
                        error!(error = %err, "reading the spool failed");
                        self.spool.rewind();
                        self.next_replay = Instant::now() + REPLAY_BACKOFF_MAX;
                        return None;
                    }
                };
                let Some(last) = records.last() else {
                    if !self.topics_confirmed {
                        // Nothing to replay, but the topics are not confirmed yet: probe.
                        self.spool.rewind();
                        return Some(Box::pin(send_window(
                            self.cluster.clone(),
                            self.replay.clone(),
                            ReplayWindow {
                                unsent: Vec::new(),
                                end: SpoolPosition::default(),
                                len: 0,
                            },
                        )));
                    }
                    if self.spool.is_drained() && self.overflow.is_empty() {
                        self.finish_spooling(since);
                    } else {
                        self.spool.rewind();
                    }
                    return None;
                };
                ReplayWindow {
                    end: last.end,
                    len: records.len(),
                    unsent: records,
                }
            }
        };
        Some(Box::pin(send_window(
            self.cluster.clone(),
            self.replay.clone(),
            window,
        )))
    }

    fn replayed(&mut self, outcome: ReplayOutcome) {
        let window = match outcome {
            ReplayOutcome::Unreachable(window) => {
                debug!("kafka still unreachable; the spool waits");
                self.back_off();
                self.retry_window = Some(window);
                return;
            }
            ReplayOutcome::Sent(window) => window,
        };
        // Sent means the probe found the events topic.
        if !self.topics_confirmed {
            self.topics_confirmed = true;
            info!(topic = %self.topic, "kafka answers with warden's topics");
        }
        if !window.unsent.is_empty() {
            warn!(
                unsent = window.unsent.len(),
                "kafka took only part of a replay window; retrying the rest"
            );
            self.back_off();
            self.retry_window = Some(window);
            return;
        }
        self.replay_backoff = REPLAY_BACKOFF_MIN;
        self.next_replay = Instant::now();
        self.all_brokers_down.store(false, Ordering::Relaxed);
        match self.spool.acknowledge(window.end) {
            Ok(()) => self.events.stats().add_replayed(window.len as u64),
            Err(err) => error!(error = %err, "recording replay progress in the spool failed"),
        }
        self.drain_overflow();
        self.publish_gauges();
    }

    fn back_off(&mut self) {
        self.next_replay = Instant::now() + self.replay_backoff;
        self.replay_backoff = (self.replay_backoff * 2).min(REPLAY_BACKOFF_MAX);
    }

    fn finish_spooling(&mut self, since: Instant) {
        info!(
            replayed = self.spooled_this_episode,
            after = ?since.elapsed(),
            "spool drained: audit events go straight to kafka again"
        );
        self.route = Route::Direct;
        self.events.stats().set_spooling(false);
        self.events.set_spool_full(false);
    }

    fn publish_gauges(&self) {
        let stats = self.events.stats();
        stats.set_spool_bytes(self.spool.bytes());
        self.events
            .set_spool_half_full(self.spool.bytes().saturating_mul(2) > self.spool_max_bytes);
    }

    /// The queue is closed: deliver what librdkafka holds, spool what it cannot deliver.
    async fn shut_down(mut self) {
        self.send_shed_summaries(true);
        let direct = self.direct.clone();
        let flushed = tokio::task::spawn_blocking(move || {
            let flushed = direct.flush(FLUSH_TIMEOUT);
            if flushed.is_err() {
                direct.purge(PurgeConfig::default().queue().inflight());
                // Serve the purged messages' delivery callbacks.
                let _ = direct.flush(Duration::from_secs(1));
            }
            flushed
        })
        .await;
        if !matches!(flushed, Ok(Ok(()))) {
            warn!("kafka did not acknowledge every event before shutdown; spooling the rest");
        }
        let mut failed = Vec::new();
        while let Ok(record) = self.failed.try_recv() {
            failed.push(record);
        }
        if !failed.is_empty() {
            self.take_failed(&mut failed);
        }
        self.drain_overflow();
        if !self.overflow.is_empty() {
            error!(
                lost = self.overflow.len(),
                "the spool is full at shutdown: these audit events are lost"
            );
            self.events.stats().add_dropped(self.overflow.len() as u64);
        }
        self.sync_spool();
        if let Err(err) = self.spool.sync() {
            error!(error = %err, "spool fsync failed at shutdown");
        }
        self.publish_gauges();
        let stats = self.events.stats();
        info!(
            delivered = stats.num_delivered(),
            spooled = stats.num_spooled(),
            replayed = stats.num_replayed(),
            dropped = stats.num_dropped(),
            spool_bytes = self.spool.bytes(),
            "event publisher stopped"
        );
    }

    fn spool_dir(&self) -> String {
        self.spool.dir().display().to_string()
    }
}

/// Probes the cluster, then sends the window's unsent records and waits for every
/// acknowledgement. Returns the window with the records Kafka did not take.
async fn send_window(
    cluster: KafkaCluster,
    producer: DeliveringProducer,
    mut window: ReplayWindow,
) -> ReplayOutcome {
    let topic = cluster.topics().events.clone();
    if !probe(&cluster, &producer, &topic).await {
        return ReplayOutcome::Unreachable(window);
    }
    let mut deliveries = Vec::with_capacity(window.unsent.len());
    for (index, record) in window.unsent.iter().enumerate() {
        match producer.queue(Outgoing::new(&topic, &record.key, &record.payload)) {
            Ok(delivery) => deliveries.push((index, delivery)),
            // Queue full or refused: this one and the rest wait for the next attempt.
            Err(_) => break,
        }
    }
    let mut delivered = vec![false; window.unsent.len()];
    for (index, delivery) in deliveries {
        if delivery.await.is_ok() {
            delivered[index] = true;
        }
    }
    let mut index = 0;
    window.unsent.retain(|_| {
        let keep = !delivered[index];
        index += 1;
        keep
    });
    ReplayOutcome::Sent(window)
}

/// True when the cluster answers and has the events topic (created here if missing).
async fn probe(cluster: &KafkaCluster, producer: &DeliveringProducer, topic: &str) -> bool {
    let client = producer.clone();
    let topic_name = topic.to_owned();
    let metadata = tokio::task::spawn_blocking(move || {
        client
            .client()
            .fetch_metadata(Some(&topic_name), PROBE_TIMEOUT)
            .map(|metadata| {
                metadata
                    .topics()
                    .iter()
                    .any(|t| t.error().is_none() && !t.partitions().is_empty())
            })
    })
    .await;
    match metadata {
        Ok(Ok(true)) => true,
        // Missing: create it (a refusal is logged there, with the broker's reason).
        Ok(Ok(false)) => cluster.ensure_topics().await.is_ok(),
        Ok(Err(_)) | Err(_) => false,
    }
}

/// Sends records a consumer could not process to the dead-letter topic, with the reason and
/// the source coordinates as headers, and waits for the broker's acknowledgement.
#[derive(Clone)]
pub struct DeadLetterPublisher {
    producer: DeliveringProducer,
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
            producer: DeliveringProducer::from_config(&cluster.producer_config())?,
            topic: cluster.topics().dlq.clone(),
        })
    }

    /// Publishes `record` unchanged with `reason`; returns once the broker has it.
    pub async fn publish(&self, record: &ConsumedRecord, reason: &str) -> Result<(), KafkaError> {
        let headers = source_headers(record).insert(Header {
            key: "warden-dlq-reason",
            value: Some(reason),
        });
        let dead_letter = Outgoing {
            topic: &self.topic,
            key: record.key.as_deref(),
            payload: &record.payload,
            headers: Some(&headers),
        };
        self.producer.deliver(dead_letter, ACK_TIMEOUT).await
    }
}

/// Publishes alerts to `warden.alerts`, keyed by their dedup key (so every publication about
/// one condition lands in one partition, in order), and waits for the broker's acknowledgement.
#[derive(Clone)]
pub struct AlertPublisher {
    producer: DeliveringProducer,
    topic: String,
}

impl std::fmt::Debug for AlertPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertPublisher")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl AlertPublisher {
    pub fn new(cluster: &KafkaCluster) -> Result<Self, KafkaSetupError> {
        Ok(Self {
            producer: DeliveringProducer::from_config(&cluster.producer_config())?,
            topic: cluster.topics().alerts.clone(),
        })
    }

    /// Publishes one alert; returns once the broker has it.
    pub async fn publish(&self, alert: &crate::alert::Alert) -> Result<(), KafkaError> {
        // Plain structs of strings and numbers always serialize.
        let payload = serde_json::to_vec(alert).unwrap_or_default();
        let record = Outgoing::new(&self.topic, alert.dedup_key.as_bytes(), &payload);
        self.producer.deliver(record, ACK_TIMEOUT).await
    }
}

/// Passes what a worker derived from consumed records on to another topic (the detect
/// stages' relay). Sends are queued; [`RecordForwarder::flush`] waits until the broker has
/// every one (call it before committing the source offsets: a reader of the other topic
/// must be able to drop what is passed on twice after a crash, e.g. by source offsets
/// carried in the payload).
pub struct RecordForwarder {
    producer: DeliveringProducer,
    topic: String,
    pending: Vec<Delivery>,
    /// A delivery since the last flush was refused.
    refused: bool,
}

impl std::fmt::Debug for RecordForwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordForwarder")
            .field("topic", &self.topic)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

/// The header naming the topic a dead-lettered or passed-on record was read from.
pub const SOURCE_TOPIC_HEADER: &str = "warden-source-topic";
/// The header naming the partition a dead-lettered or passed-on record was read from.
pub const SOURCE_PARTITION_HEADER: &str = "warden-source-partition";
/// The header naming the offset a dead-lettered or passed-on record was read from.
pub const SOURCE_OFFSET_HEADER: &str = "warden-source-offset";

/// Headers naming where `record` was read from: topic, partition and offset.
fn source_headers(record: &ConsumedRecord) -> OwnedHeaders {
    OwnedHeaders::new()
        .insert(Header {
            key: SOURCE_TOPIC_HEADER,
            value: Some(record.topic.as_str()),
        })
        .insert(Header {
            key: SOURCE_PARTITION_HEADER,
            value: Some(&record.partition.to_string()),
        })
        .insert(Header {
            key: SOURCE_OFFSET_HEADER,
            value: Some(&record.offset.to_string()),
        })
}

impl RecordForwarder {
    pub fn new(cluster: &KafkaCluster, topic: &str) -> Result<Self, KafkaSetupError> {
        Ok(Self {
            producer: DeliveringProducer::from_config(&cluster.producer_config())?,
            topic: topic.to_owned(),
            pending: Vec::new(),
            refused: false,
        })
    }

    /// Queues a record for the topic (waiting only while the producer's queue is full).
    pub async fn send(&mut self, key: &[u8], payload: &[u8]) {
        let record = Outgoing::new(&self.topic, key, payload);
        loop {
            match self.producer.queue(record) {
                Ok(delivery) => {
                    self.pending.push(delivery);
                    return;
                }
                Err(KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)) => {
                    self.refused |= !Self::await_older_half(&mut self.pending).await;
                }
                Err(err) => {
                    warn!(error = %err, "passing a record on failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    /// Makes room in a full producer queue: waits for the older half of the deliveries.
    /// Returns whether all of them were delivered.
    async fn await_older_half(pending: &mut Vec<Delivery>) -> bool {
        let older = (pending.len() / 2).max(1).min(pending.len());
        let mut delivered = true;
        for delivery in pending.drain(..older) {
            delivered &= delivery.await.is_ok();
        }
        delivered
    }

    /// Waits until the broker has every queued record. Returns false if one was refused
    /// (then the source offsets must not be committed: those records are passed on again).
    pub async fn flush(&mut self) -> bool {
        let mut delivered = !std::mem::take(&mut self.refused);
        for delivery in self.pending.drain(..) {
            delivered &= delivery.await.is_ok();
        }
        delivered
    }
}

/// Publishes events in bulk to `warden.events`, keyed like the proxy keys them, and waits for
/// every acknowledgement: what `warden simulate --produce` uses to replay a scenario.
pub async fn produce_events(
    cluster: &KafkaCluster,
    events: &[crate::AuditEvent],
) -> Result<(), KafkaError> {
    /// Deliveries awaited at most at once.
    const IN_FLIGHT: usize = 10_000;
    let producer = DeliveringProducer::from_config(&cluster.producer_config())?;
    let topic = &cluster.topics().events;
    let mut pending = VecDeque::new();
    for event in events {
        let payload = event.to_json();
        let record = Outgoing::new(topic, event.partition_key().as_bytes(), &payload);
        loop {
            match producer.queue(record) {
                Ok(delivery) => {
                    pending.push_back(delivery);
                    break;
                }
                Err(KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)) => {
                    match pending.pop_front() {
                        Some(oldest) => oldest.await?,
                        None => tokio::time::sleep(Duration::from_millis(10)).await,
                    }
                }
                Err(err) => return Err(err),
            }
        }
        if pending.len() >= IN_FLIGHT
            && let Some(oldest) = pending.pop_front()
        {
            oldest.await?;
        }
    }
    for delivery in pending {
        delivery.await?;
    }
    Ok(())
}
