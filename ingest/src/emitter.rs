//! The non-blocking hand-off from the request path to the event publisher.
//!
//! The proxy calls [`EventEmitter::emit`] on every request; it never waits: the event goes into
//! a bounded channel that a background publisher drains in batches. When the channel is full
//! the event is counted as dropped (the durable disk spool that removes this loss is a later
//! layer). The counters feed `/metrics` and the shutdown report.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;
use tracing::warn;

use crate::event::AuditEvent;

/// Default capacity of the emit channel, in events.
pub const DEFAULT_EMIT_CAPACITY: usize = 65_536;

/// Counters of the emit side.
#[derive(Debug, Default)]
pub struct EmitterStats {
    num_emitted: AtomicU64,
    num_dropped: AtomicU64,
}

impl EmitterStats {
    pub fn num_emitted(&self) -> u64 {
        self.num_emitted.load(Ordering::Relaxed)
    }

    pub fn num_dropped(&self) -> u64 {
        self.num_dropped.load(Ordering::Relaxed)
    }
}

/// Cloneable, non-blocking sender of audit events.
#[derive(Debug, Clone)]
pub struct EventEmitter {
    sender: mpsc::Sender<AuditEvent>,
    stats: Arc<EmitterStats>,
}

/// The receiving end, drained by a publisher (or by a test).
pub type EventReceiver = mpsc::Receiver<AuditEvent>;

/// Creates an emitter and the receiver its events arrive at.
pub fn event_channel(capacity: usize) -> (EventEmitter, EventReceiver) {
    let (sender, receiver) = mpsc::channel(capacity);
    let emitter = EventEmitter {
        sender,
        stats: Arc::new(EmitterStats::default()),
    };
    (emitter, receiver)
}

impl EventEmitter {
    /// Hands `event` to the publisher without waiting. Never fails the caller.
    pub fn emit(&self, event: AuditEvent) {
        match self.sender.try_send(event) {
            Ok(()) => {
                self.stats.num_emitted.fetch_add(1, Ordering::Relaxed);
            }
            Err(err) => {
                let dropped = self.stats.num_dropped.fetch_add(1, Ordering::Relaxed) + 1;
                // Log the 1st, 2nd, 4th, 8th... drop: visible without flooding the log.
                if dropped.is_power_of_two() {
                    let reason = match err {
                        mpsc::error::TrySendError::Full(_) => "event queue full",
                        mpsc::error::TrySendError::Closed(_) => "event publisher stopped",
                    };
                    warn!(dropped, "{reason}: audit event dropped");
                }
            }
        }
    }

    pub fn stats(&self) -> &EmitterStats {
        &self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventKind, RequestId};

    fn event() -> AuditEvent {
        AuditEvent::new(EventKind::Request, RequestId::new(), "p")
    }

    #[tokio::test]
    async fn emit_never_blocks_and_counts_what_it_could_not_queue() {
        let (emitter, mut receiver) = event_channel(2);
        for _ in 0..5 {
            emitter.emit(event());
        }
        assert_eq!(emitter.stats().num_emitted(), 2);
        assert_eq!(emitter.stats().num_dropped(), 3);
        assert!(receiver.recv().await.is_some());
        assert!(receiver.recv().await.is_some());
    }
}
