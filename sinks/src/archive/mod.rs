//! The Parquet archive: `warden.events`, `warden.alerts` and `warden.control` → the
//! hour-partitioned Parquet tables `events`, `alerts` and `actions` in object storage.
//!
//! Invariants:
//! - an offset is committed only after every event up to it is in a written object (or, if
//!   undecodable, acknowledged by the dead-letter topic): a crash loses no event;
//! - a batch replayed after a crash is cut at the same offsets ([`plans`]) and so rewrites the
//!   same objects: no event is archived twice;
//! - every object is recorded, as it is written, in a hash-chained [`manifest`] that
//!   [`verify`] checks the archive against, and every closed hour of a chain is sealed by an
//!   hourly [`digest`].

mod archiver;
mod config;
pub mod digest;
pub mod manifest;
mod plans;
pub mod retention;
mod rows;
pub mod signing;
mod store;
mod verify;

pub use archiver::{Archiver, ArchiverReport, ArchiverSetupError, ShutdownMode};
pub use config::ArchiveConfig;
pub use rows::Table;
pub use store::{ArchiveError, EncodedObject, ParquetArchive};
pub use verify::{Problem, VerifyOptions, VerifyReport, verify};
