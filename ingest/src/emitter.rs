//! The hand-off from the request path to the event publisher, and the audit pipeline's
//! counters and back-pressure.
//!
//! The proxy calls [`EventEmitter::emit`] for every event; it never waits: the event goes into
//! a queue that the publisher ([`crate::kafka::KafkaEventPublisher`]) drains into Kafka, or
//! into the disk spool while Kafka is unreachable or slow. Only when the spool itself is full
//! does the pipeline push back, and then at the door: [`EventEmitter::admit`], awaited before
//! a call starts, follows `[audit].on_spool_full` (wait, let the call through and drop its
//! events, or refuse it). Calls already running always have their events queued.
//!
//! Two lanes: [`EventEmitter::emit`] for the events of admitted calls, never shed; and
//! [`EventEmitter::emit_sheddable`] for the events of refused callers (bad keys), which are
//! shed — counted in `warden_events_shed_total` — while the queue is more than half full or
//! the spool more than half full. A flood of refused calls can therefore take at most half of
//! the pipeline's room, never the room admitted calls need. What is shed is still counted
//! where it matters: per client IP and kind of event, the first shed event is kept as a
//! summary, with `occurrences` saying how many it stands for, and the publisher sends the
//! summaries once a second ([`EventReceiver::take_shed_summaries`]) — so the brute-force
//! detector sees a flood's true volume in a handful of events.
//!
//! Two durabilities (`[audit].durability`): `buffered` (the default) hands events over and
//! forgets them; `acked` gives each admitted call's event a [`Receipt`] that resolves once
//! the event is durable — acknowledged by Kafka, or fsynced in the spool — so the proxy can
//! hold the call's answer until its trail is safe ("no audit, no inference", also across a
//! crash).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::{Notify, mpsc, oneshot};
use tracing::warn;

use crate::event::AuditEvent;

/// Default number of queued events beyond which the pipeline counts as backed up.
pub const DEFAULT_EMIT_CAPACITY: usize = 65_536;
/// Most summaries of shed events kept between two sends; shed events of further client
/// IPs are summarised together, without an IP.
const MAX_SHED_SUMMARIES: usize = 4_096;

/// What the proxy does while the audit pipeline cannot take more events (the spool is full).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnSpoolFull {
    /// New calls wait until there is room again. Keeps every event (the default).
    #[default]
    Block,
    /// New calls go ahead; events that find no room are dropped and counted.
    Drop,
    /// New calls are refused with 503: no audit, no inference.
    FailClosed,
}

/// `[audit].durability`: when an admitted call's events count as kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// Handed to the publisher: in memory until Kafka acknowledges them or they are
    /// spooled. A killed proxy can lose what is unacknowledged (bounded by
    /// `max_in_flight`, `max_in_flight_mb` and `delivery_timeout_s`). The default.
    #[default]
    Buffered,
    /// Acknowledged by Kafka or fsynced in the spool before the call's answer is released.
    Acked,
}

/// How an [`event_channel_with`] behaves.
#[derive(Debug, Clone, Copy)]
pub struct ChannelOptions {
    /// Queued events beyond which the pipeline counts as backed up.
    pub capacity: usize,
    pub on_spool_full: OnSpoolFull,
    pub durability: Durability,
    /// How long an `acked` call waits for its events to be durable before it is refused.
    pub acked_timeout: Duration,
}

impl Default for ChannelOptions {
    fn default() -> Self {
        Self {
            capacity: DEFAULT_EMIT_CAPACITY,
            on_spool_full: OnSpoolFull::Block,
            durability: Durability::Buffered,
            acked_timeout: Duration::from_secs(30),
        }
    }
}

/// An event in the queue, with whom to tell once it is durable (`acked` calls only).
#[derive(Debug)]
pub struct QueuedEvent {
    pub event: AuditEvent,
    pub settle: Option<Settle>,
}

/// The publisher's end of a [`Receipt`]: told once its event is durable, or that it never
/// will be. Dropped untold, the receipt reads as a failure.
#[derive(Debug)]
pub struct Settle(oneshot::Sender<()>);

impl Settle {
    /// The event is acknowledged by Kafka or fsynced in the spool.
    pub fn durable(self) {
        // The call may have stopped waiting (its client left): nothing to tell then.
        let _ = self.0.send(());
    }
}

/// Resolves once an event handed over with [`EventEmitter::emit_acked`] is durable.
#[derive(Debug)]
pub struct Receipt(oneshot::Receiver<()>);

impl Receipt {
    /// Waits until the event is durable; an error if the pipeline lost it (dropped under a
    /// full spool, or the process is stopping) or took longer than `timeout`.
    pub async fn durable(self, timeout: Duration) -> Result<(), AuditUnavailable> {
        match tokio::time::timeout(timeout, self.0).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) | Err(_) => Err(AuditUnavailable),
        }
    }
}

/// Counters and gauges of the audit pipeline, shared by the emitter, the publisher and
/// `/metrics`.
#[derive(Debug, Default)]
pub struct AuditStats {
    num_emitted: AtomicU64,
    num_dropped: AtomicU64,
    num_delivered: AtomicU64,
    num_spooled: AtomicU64,
    num_replayed: AtomicU64,
    num_shed: AtomicU64,
    spool_bytes: AtomicU64,
    spooling: AtomicBool,
}

impl AuditStats {
    /// Events accepted from the request path.
    pub fn num_emitted(&self) -> u64 {
        self.num_emitted.load(Ordering::Relaxed)
    }

    /// Events lost: dropped under `on_spool_full = "drop"`, or that nothing could store.
    pub fn num_dropped(&self) -> u64 {
        self.num_dropped.load(Ordering::Relaxed)
    }

    /// Events Kafka acknowledged on the direct path.
    pub fn num_delivered(&self) -> u64 {
        self.num_delivered.load(Ordering::Relaxed)
    }

    /// Events written to the disk spool.
    pub fn num_spooled(&self) -> u64 {
        self.num_spooled.load(Ordering::Relaxed)
    }

    /// Events of refused callers not kept because the pipeline was backed up.
    pub fn num_shed(&self) -> u64 {
        self.num_shed.load(Ordering::Relaxed)
    }

    /// Spooled events Kafka has since acknowledged.
    pub fn num_replayed(&self) -> u64 {
        self.num_replayed.load(Ordering::Relaxed)
    }

    /// Bytes the spool holds on disk.
    pub fn spool_bytes(&self) -> u64 {
        self.spool_bytes.load(Ordering::Relaxed)
    }

    /// True while events go to the spool instead of straight to Kafka.
    pub fn is_spooling(&self) -> bool {
        self.spooling.load(Ordering::Relaxed)
    }

    pub(crate) fn add_dropped(&self, count: u64) {
        let before = self.num_dropped.fetch_add(count, Ordering::Relaxed);
        // Log when the total crosses a power of two: visible without flooding the log.
        let after = before + count;
        if count > 0 && (before == 0 || after.ilog2() > before.ilog2()) {
            warn!(dropped = after, "audit events dropped");
        }
    }

    pub(crate) fn add_delivered(&self, count: u64) {
        self.num_delivered.fetch_add(count, Ordering::Relaxed);
    }

    pub(crate) fn add_spooled(&self, count: u64) {
        self.num_spooled.fetch_add(count, Ordering::Relaxed);
    }

    pub(crate) fn add_replayed(&self, count: u64) {
        self.num_replayed.fetch_add(count, Ordering::Relaxed);
    }

    pub(crate) fn set_spool_bytes(&self, bytes: u64) {
        self.spool_bytes.store(bytes, Ordering::Relaxed);
    }

    pub(crate) fn set_spooling(&self, spooling: bool) {
        self.spooling.store(spooling, Ordering::Relaxed);
    }
}

/// State shared by the two ends of the queue.
#[derive(Debug)]
struct Shared {
    stats: Arc<AuditStats>,
    on_spool_full: OnSpoolFull,
    capacity: usize,
    durability: Durability,
    acked_timeout: Duration,
    /// Events in the queue, not yet taken by the publisher.
    queued: AtomicUsize,
    /// Set by the publisher while its spool has no room.
    spool_full: AtomicBool,
    /// Set by the publisher while its spool is more than half full.
    spool_half_full: AtomicBool,
    /// Woken when the pipeline has room again.
    room: Notify,
    /// Summaries of the events shed since the publisher last took them.
    shed: Mutex<ShedSummaries>,
}

/// Shed events, summarised: one kept event per kind of event, client IP and outcome, with
/// how many it stands for.
#[derive(Debug, Default)]
struct ShedSummaries {
    by_key: HashMap<String, AuditEvent>,
}

impl ShedSummaries {
    fn add(&mut self, mut event: AuditEvent) {
        let mut key = summary_key(&event);
        if self.by_key.len() >= MAX_SHED_SUMMARIES && !self.by_key.contains_key(&key) {
            // Past the bound: counted without its IP (and fingerprint), not lost.
            event.client.ip = None;
            event.client.token_id = None;
            key = summary_key(&event);
        }
        let summary = self.by_key.entry(key).or_insert_with(|| {
            event.occurrences = Some(0);
            event
        });
        summary.occurrences = Some(summary.weight().saturating_add(1));
    }
}

/// What a summary stands for: the event's kind, client IP, environment, and outcome (the
/// decision, or the status and error of a response).
fn summary_key(event: &AuditEvent) -> String {
    let decision = event.decision.as_ref();
    let response = event.response.as_ref();
    format!(
        "{}|{}|{}|{}|{}|{}|{}|{}",
        event.kind.as_str(),
        event.client.ip.as_deref().unwrap_or_default(),
        event.environment.as_deref().unwrap_or_default(),
        decision.map_or("", |d| d.policy.as_str()),
        decision.map_or("", |d| d.outcome.as_str()),
        decision
            .and_then(|d| d.reason.as_deref())
            .unwrap_or_default(),
        response.map_or(0, |r| r.status),
        response
            .and_then(|r| r.error_type.as_deref())
            .unwrap_or_default(),
    )
}

impl Shared {
    fn is_full(&self) -> bool {
        self.spool_full.load(Ordering::Relaxed)
            || self.queued.load(Ordering::Relaxed) > self.capacity
    }
}

/// The audit pipeline could not take the call's events (`on_spool_full = "fail_closed"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the audit trail is unavailable")]
pub struct AuditUnavailable;

/// Cloneable, non-blocking sender of audit events.
#[derive(Debug, Clone)]
pub struct EventEmitter {
    sender: mpsc::UnboundedSender<QueuedEvent>,
    shared: Arc<Shared>,
}

/// The receiving end, drained by a publisher (or by a test).
#[derive(Debug)]
pub struct EventReceiver {
    receiver: mpsc::UnboundedReceiver<QueuedEvent>,
    shared: Arc<Shared>,
}

/// Creates an emitter and the receiver its events arrive at, `buffered`. `capacity` is how
/// many queued events count as a backed-up pipeline.
pub fn event_channel(capacity: usize, on_spool_full: OnSpoolFull) -> (EventEmitter, EventReceiver) {
    event_channel_with(ChannelOptions {
        capacity,
        on_spool_full,
        ..ChannelOptions::default()
    })
}

/// Creates an emitter and the receiver its events arrive at.
pub fn event_channel_with(options: ChannelOptions) -> (EventEmitter, EventReceiver) {
    let (sender, receiver) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        stats: Arc::new(AuditStats::default()),
        on_spool_full: options.on_spool_full,
        capacity: options.capacity,
        durability: options.durability,
        acked_timeout: options.acked_timeout,
        shed: Mutex::new(ShedSummaries::default()),
        queued: AtomicUsize::new(0),
        spool_full: AtomicBool::new(false),
        spool_half_full: AtomicBool::new(false),
        room: Notify::new(),
    });
    let emitter = EventEmitter {
        sender,
        shared: shared.clone(),
    };
    (emitter, EventReceiver { receiver, shared })
}

impl EventEmitter {
    /// Waits until the pipeline can take a new call's events, per `on_spool_full`. Returns
    /// at once (two atomic loads) while it has room.
    pub async fn admit(&self) -> Result<(), AuditUnavailable> {
        // The hot path: no waiter registration (it takes a lock) while there is room.
        if !self.shared.is_full() {
            return Ok(());
        }
        loop {
            let room = self.shared.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            if !self.shared.is_full() {
                return Ok(());
            }
            match self.shared.on_spool_full {
                OnSpoolFull::Drop => return Ok(()),
                OnSpoolFull::FailClosed => return Err(AuditUnavailable),
                OnSpoolFull::Block => room.await,
            }
        }
    }

    /// Hands `event` to the publisher without waiting. Never fails the caller.
    pub fn emit(&self, event: AuditEvent) {
        self.queue(QueuedEvent {
            event,
            settle: None,
        });
    }

    /// Hands `event` to the publisher without waiting, with a [`Receipt`] that resolves once
    /// it is durable (an event that cannot be queued resolves as lost at once).
    pub fn emit_acked(&self, event: AuditEvent) -> Receipt {
        let (sender, receiver) = oneshot::channel();
        self.queue(QueuedEvent {
            event,
            settle: Some(Settle(sender)),
        });
        Receipt(receiver)
    }

    fn queue(&self, queued_event: QueuedEvent) {
        let queued = self.shared.queued.fetch_add(1, Ordering::Relaxed);
        if queued >= self.shared.capacity && self.shared.on_spool_full == OnSpoolFull::Drop {
            self.shared.queued.fetch_sub(1, Ordering::Relaxed);
            self.shared.stats.add_dropped(1);
            return;
        }
        match self.sender.send(queued_event) {
            Ok(()) => {
                self.shared
                    .stats
                    .num_emitted
                    .fetch_add(1, Ordering::Relaxed);
            }
            Err(_closed) => {
                self.shared.queued.fetch_sub(1, Ordering::Relaxed);
                self.shared.stats.add_dropped(1);
            }
        }
    }

    /// Hands over an event of a refused caller: queued like any other while the pipeline has
    /// room to spare, shed (and counted) while the queue or the spool is more than half full.
    pub fn emit_sheddable(&self, event: AuditEvent) {
        let backed_up = self.shared.queued.load(Ordering::Relaxed) > self.shared.capacity / 2
            || self.shared.spool_half_full.load(Ordering::Relaxed)
            || self.shared.spool_full.load(Ordering::Relaxed);
        if backed_up {
            self.shared.stats.num_shed.fetch_add(1, Ordering::Relaxed);
            self.shared
                .shed
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .add(event);
            return;
        }
        self.emit(event);
    }

    pub fn stats(&self) -> &AuditStats {
        &self.shared.stats
    }

    /// `[audit].durability`: whether admitted calls wait for their events to be durable.
    pub fn durability(&self) -> Durability {
        self.shared.durability
    }

    /// How long an `acked` call waits for its events.
    pub fn acked_timeout(&self) -> Duration {
        self.shared.acked_timeout
    }
}

impl EventReceiver {
    /// Receives up to `limit` events into `buffer`; 0 once every emitter is gone and the
    /// queue is empty.
    pub async fn recv_many(&mut self, buffer: &mut Vec<QueuedEvent>, limit: usize) -> usize {
        let received = self.receiver.recv_many(buffer, limit).await;
        let before = self.shared.queued.fetch_sub(received, Ordering::Relaxed);
        if before > self.shared.capacity && before - received <= self.shared.capacity {
            self.shared.room.notify_waiters();
        }
        received
    }

    /// Receives one event; `None` once every emitter is gone and the queue is empty. Like
    /// [`EventReceiver::try_recv`], it counts an `acked` event as durable.
    pub async fn recv(&mut self) -> Option<AuditEvent> {
        let mut buffer = Vec::with_capacity(1);
        self.recv_many(&mut buffer, 1).await;
        let queued = buffer.pop()?;
        if let Some(settle) = queued.settle {
            settle.durable();
        }
        Some(queued.event)
    }

    pub fn stats(&self) -> &AuditStats {
        &self.shared.stats
    }

    /// A handle on the counters that outlives the receiver (for a shutdown report).
    pub fn stats_handle(&self) -> Arc<AuditStats> {
        self.shared.stats.clone()
    }

    /// Takes one queued event without waiting (tests drain the queue with it). An `acked`
    /// event taken this way counts as durable: whoever takes it keeps it.
    pub fn try_recv(&mut self) -> Option<AuditEvent> {
        let queued = self.receiver.try_recv().ok()?;
        self.shared.queued.fetch_sub(1, Ordering::Relaxed);
        if let Some(settle) = queued.settle {
            settle.durable();
        }
        Some(queued.event)
    }

    pub fn on_spool_full(&self) -> OnSpoolFull {
        self.shared.on_spool_full
    }

    /// The summaries of the events shed since the last call (see the module docs), each
    /// with `occurrences` set; for the publisher to send like any event.
    pub fn take_shed_summaries(&self) -> Vec<AuditEvent> {
        let mut shed = self
            .shared
            .shed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        shed.by_key.drain().map(|(_, summary)| summary).collect()
    }

    /// Tells the sheddable lane whether the spool is more than half full.
    pub fn set_spool_half_full(&self, half_full: bool) {
        self.shared
            .spool_half_full
            .store(half_full, Ordering::Relaxed);
    }

    /// Tells new calls whether the spool has room (see [`EventEmitter::admit`]).
    pub fn set_spool_full(&self, full: bool) {
        let was_full = self.shared.spool_full.swap(full, Ordering::Relaxed);
        if was_full && !full {
            self.shared.room.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::event::{EventKind, RequestId};

    fn event() -> AuditEvent {
        AuditEvent::new(EventKind::Request, RequestId::new(), "p")
    }

    #[tokio::test]
    async fn refused_callers_events_are_shed_first_and_admitted_ones_never() {
        let (emitter, mut receiver) = event_channel(4, OnSpoolFull::FailClosed);
        for _ in 0..5 {
            emitter.emit_sheddable(event());
        }
        // Half the queue (2 of 4) is all a flood of refused calls gets.
        assert_eq!(emitter.stats().num_shed(), 2);
        for _ in 0..3 {
            emitter.emit(event());
        }
        assert_eq!(emitter.stats().num_emitted(), 6);
        assert!(emitter.admit().await.is_err(), "admitted calls filled it");
        let mut drained = Vec::new();
        receiver.recv_many(&mut drained, 10).await;
        assert_eq!(drained.len(), 6);
        receiver.set_spool_half_full(true);
        emitter.emit_sheddable(event());
        emitter.emit(event());
        assert_eq!(emitter.stats().num_shed(), 3);
        assert_eq!(emitter.stats().num_emitted(), 7);
    }

    fn refused_from(ip: &str) -> AuditEvent {
        let mut event = event();
        event.kind = EventKind::PolicyDecision;
        event.client.ip = Some(ip.to_owned());
        event.decision = Some(crate::event::DecisionInfo {
            policy: "auth".to_owned(),
            outcome: "deny".to_owned(),
            reason: Some("unknown_api_key".to_owned()),
        });
        event
    }

    #[tokio::test]
    async fn shed_events_are_summarised_per_ip_with_how_many_they_stand_for() {
        let (emitter, receiver) = event_channel(4, OnSpoolFull::Block);
        receiver.set_spool_half_full(true);
        for _ in 0..1_000 {
            emitter.emit_sheddable(refused_from("10.0.0.1"));
        }
        for _ in 0..7 {
            emitter.emit_sheddable(refused_from("10.0.0.2"));
        }
        assert_eq!(emitter.stats().num_shed(), 1_007);
        let mut summaries = receiver.take_shed_summaries();
        summaries.sort_by_key(|s| s.client.ip.clone());
        let counts: Vec<(Option<&str>, Option<u64>)> = summaries
            .iter()
            .map(|s| (s.client.ip.as_deref(), s.occurrences))
            .collect();
        assert_eq!(
            counts,
            [(Some("10.0.0.1"), Some(1_000)), (Some("10.0.0.2"), Some(7))]
        );
        assert!(receiver.take_shed_summaries().is_empty(), "taken once");

        // Past the bound, further IPs are counted together, not dropped.
        for ip in 0..MAX_SHED_SUMMARIES + 10 {
            emitter.emit_sheddable(refused_from(&format!("10.1.{}.{}", ip / 256, ip % 256)));
        }
        let summaries = receiver.take_shed_summaries();
        assert_eq!(summaries.len(), MAX_SHED_SUMMARIES + 1);
        let total: u64 = summaries.iter().map(AuditEvent::weight).sum();
        assert_eq!(total, (MAX_SHED_SUMMARIES + 10) as u64);
        let without_ip = summaries.iter().find(|s| s.client.ip.is_none());
        assert_eq!(without_ip.and_then(|s| s.occurrences), Some(10));
    }

    #[tokio::test]
    async fn a_receipt_resolves_when_its_event_is_settled_and_fails_when_it_is_lost() {
        let (emitter, mut receiver) = event_channel_with(ChannelOptions {
            capacity: 1,
            on_spool_full: OnSpoolFull::Drop,
            durability: Durability::Acked,
            ..ChannelOptions::default()
        });
        let kept = emitter.emit_acked(event());
        let dropped = emitter.emit_acked(event());
        let timeout = Duration::from_secs(1);
        assert_eq!(dropped.durable(timeout).await, Err(AuditUnavailable));
        let mut batch = Vec::new();
        receiver.recv_many(&mut batch, 10).await;
        let QueuedEvent { settle, .. } = batch.pop().expect("one queued");
        settle.expect("acked events carry a settle").durable();
        assert_eq!(kept.durable(timeout).await, Ok(()));

        let untold = emitter.emit_acked(event());
        receiver.recv_many(&mut batch, 10).await;
        batch.clear();
        assert_eq!(untold.durable(timeout).await, Err(AuditUnavailable));
        let waited_out = emitter.emit_acked(event());
        assert_eq!(
            waited_out.durable(Duration::from_millis(10)).await,
            Err(AuditUnavailable)
        );
    }

    #[tokio::test]
    async fn emit_never_blocks_and_drop_mode_counts_what_it_could_not_queue() {
        let (emitter, mut receiver) = event_channel(2, OnSpoolFull::Drop);
        for _ in 0..5 {
            emitter.emit(event());
        }
        assert_eq!(emitter.stats().num_emitted(), 2);
        assert_eq!(emitter.stats().num_dropped(), 3);
        assert!(receiver.recv().await.is_some());
        assert!(receiver.recv().await.is_some());
    }

    #[tokio::test]
    async fn block_mode_queues_everything_and_holds_new_calls_until_there_is_room() {
        let (emitter, mut receiver) = event_channel(2, OnSpoolFull::Block);
        for _ in 0..5 {
            emitter.emit(event());
        }
        assert_eq!(
            emitter.stats().num_emitted(),
            5,
            "running calls never lose events"
        );
        let waiting = tokio::spawn({
            let emitter = emitter.clone();
            async move { emitter.admit().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !waiting.is_finished(),
            "a new call waits while the queue is backed up"
        );
        let mut drained = Vec::new();
        receiver.recv_many(&mut drained, 10).await;
        assert_eq!(drained.len(), 5);
        assert_eq!(waiting.await.expect("task"), Ok(()));
    }

    #[tokio::test]
    async fn fail_closed_refuses_new_calls_while_the_spool_is_full() {
        let (emitter, receiver) = event_channel(10, OnSpoolFull::FailClosed);
        assert_eq!(emitter.admit().await, Ok(()));
        receiver.set_spool_full(true);
        assert_eq!(emitter.admit().await, Err(AuditUnavailable));
        receiver.set_spool_full(false);
        assert_eq!(emitter.admit().await, Ok(()));
    }
}
