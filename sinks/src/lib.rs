//! `warden-sinks`: where events and alerts end up.
//!
//! - [`archive`]: the Parquet archive in object storage, fed by the `archive` consumer group.
//! - [`respond`]: the responder: alerts routed, grouped and delivered to Slack, email, SIEMs
//!   and webhooks.
//! - [`runbooks`]: what the incident procedures act on (the HF Endpoints management API).

pub mod archive;
pub mod respond;
pub mod runbooks;
