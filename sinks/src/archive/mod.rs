//! The Parquet archive: `warden.events` → hour-partitioned Parquet files in object storage.
//!
//! Invariant: an offset is committed only after every event up to it is in a written object
//! (or, if undecodable, acknowledged by the dead-letter topic). A crash loses no event; it can
//! only make the archiver process a batch again.

mod archiver;
mod config;
mod store;

pub use archiver::{Archiver, ArchiverReport, ArchiverSetupError, ShutdownMode};
pub use config::ArchiveConfig;
pub use store::{ArchiveError, EncodedObject, ParquetArchive};
