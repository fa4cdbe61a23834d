//! `warden-sinks`: where events and alerts end up.
//!
//! - [`archive`]: the Parquet archive in object storage, fed by the `archive` consumer group.
//!
//! Alert channels (Slack, email, SIEM) and runbook actions will live here too, one module
//! folder each.

pub mod archive;
