//! Records that have an archive table of their own besides the events: alerts and actions.
//!
//! They are few (an alert per finding, an action per runbook step), so they take the simple
//! road to Arrow: serde structs through `arrow-json`'s serde support, with the serde derive as
//! the one source of field names. Audit events, millions an hour, have their own fast path in
//! [`crate::columnar`].

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::json::{ReaderBuilder, WriterBuilder, writer::LineDelimited};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::event::{DecodeError, EventId};

/// A record type kept in its own archive table.
pub trait TableRecord: Serialize + DeserializeOwned {
    /// The archive table (its top-level directory and its name in `warden sql`).
    const TABLE: &'static str;
    /// Every schema version this build can decode.
    const SUPPORTED_SCHEMA_VERSIONS: &'static [u32];

    /// The table's Arrow schema; its fields follow the serde names.
    fn schema() -> SchemaRef;
    /// Unique per record: a record read twice is archived once.
    fn record_id(&self) -> EventId;
    /// Event time: which hour partition the record goes to.
    fn ts(&self) -> DateTime<Utc>;
    fn schema_version(&self) -> u32;

    /// Decodes one wire payload, accepting unknown fields and every supported schema version.
    fn decode(payload: &[u8]) -> Result<Self, DecodeError> {
        let record: Self = serde_json::from_slice(payload)?;
        let version = record.schema_version();
        if !Self::SUPPORTED_SCHEMA_VERSIONS.contains(&version) {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        Ok(record)
    }
}

/// Encodes records as one record batch of their table's schema.
pub fn records_to_batch<T: TableRecord>(records: &[T]) -> Result<RecordBatch, ArrowError> {
    let schema = T::schema();
    let mut decoder = ReaderBuilder::new(schema.clone())
        .with_batch_size(records.len().max(1))
        .build_decoder()?;
    decoder.serialize(records)?;
    Ok(decoder
        .flush()?
        .unwrap_or_else(|| RecordBatch::new_empty(schema)))
}

/// Decodes a record batch of a table back into records (any type whose serde names are the
/// batch's columns, audit events included).
pub fn batch_to_records<T: DeserializeOwned>(batch: &RecordBatch) -> Result<Vec<T>, ArrowError> {
    let mut lines = Vec::new();
    {
        let mut writer = WriterBuilder::new().build::<_, LineDelimited>(&mut lines);
        writer.write(batch)?;
        writer.finish()?;
    }
    lines
        .split(|byte| *byte == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| {
            serde_json::from_slice(line).map_err(|err| ArrowError::JsonError(err.to_string()))
        })
        .collect()
}
