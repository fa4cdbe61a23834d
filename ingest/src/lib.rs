//! `warden-ingest`: the audit event model and how events travel.
//!
//! - [`event`]: the schema_version 1 [`AuditEvent`] (JSON on the wire).
//! - [`event_row`]: a view of an event borrowing its payload's strings (the archive's decoder).
//! - [`columnar`]: its Arrow schema and row ⇄ batch conversions for the archive.
//! - [`alert`] and [`action`]: what detectors publish to `warden.alerts` and runbooks to
//!   `warden.control`; each is archived as a table of its own ([`table_record`]).
//! - [`emitter`]: the non-blocking hand-off from the request path, and back-pressure.
//! - [`kafka`]: cluster setup, the publisher, the consumer helper, the embedded broker.
//! - [`spool`]: the disk spool events wait in while Kafka is unreachable or slow.
//! - [`audit_config`]: the `[audit]` section that governs the two above.
//! - [`layout`]: where the archive keeps each table (shared by writer and readers).
//! - [`archive_store`]: opening the archive's object store (local directory or S3).
//!
//! Every other Warden crate depends on this one and on nothing of each other's: what crosses a
//! crate boundary is an [`AuditEvent`], a channel or a Kafka topic.

pub mod action;
pub mod alert;
pub mod archive_store;
pub mod audit_config;
pub mod columnar;
pub mod control;
pub mod emitter;
pub mod event;
pub mod event_row;
pub mod geo;
pub mod incident;
pub mod kafka;
pub mod layout;
pub mod notification;
pub mod spool;
pub mod table_record;
#[cfg(test)]
mod test_fixtures;

pub use audit_config::AuditConfig;
pub use emitter::{
    AuditStats, AuditUnavailable, ChannelOptions, Durability, EventEmitter, EventReceiver,
    OnSpoolFull, Receipt, event_channel, event_channel_with,
};
pub use event::{AuditEvent, EventId, EventKind, RequestId, TokenId};
