//! `warden-ingest`: the audit event model and how events travel.
//!
//! - [`event`]: the schema_version 1 [`AuditEvent`] (JSON on the wire).
//! - [`columnar`]: its Arrow schema and row ⇄ batch conversions for the archive.
//! - [`emitter`]: the non-blocking hand-off from the request path.
//! - [`kafka`]: cluster setup, the publisher, the consumer helper, the embedded broker.
//! - [`layout`]: where the archive keeps each table (shared by writer and readers).
//!
//! Every other Warden crate depends on this one and on nothing of each other's: what crosses a
//! crate boundary is an [`AuditEvent`], a channel or a Kafka topic.

pub mod columnar;
pub mod emitter;
pub mod event;
pub mod kafka;
pub mod layout;

pub use emitter::{EventEmitter, EventReceiver, event_channel};
pub use event::{AuditEvent, EventId, EventKind, RequestId, TokenId};
