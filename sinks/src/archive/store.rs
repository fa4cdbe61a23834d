//! Writing Parquet objects into the archive's object store.

use std::sync::Arc;

use arrow::array::RecordBatch;
use bytes::Bytes;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use sha2::{Digest, Sha256};
use warden_ingest::AuditEvent;
use warden_ingest::columnar::events_to_batch;
use warden_ingest::layout::ArchiveUrl;

/// Rows per Parquet row group: large enough for good compression and fast scans.
const ROW_GROUP_ROWS: usize = 128 * 1024;

/// Errors of the archive store.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("archive location {location}: {message}")]
    Location { location: String, message: String },
    #[error("encoding parquet: {0}")]
    Encode(#[from] parquet::errors::ParquetError),
    #[error("converting events to arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
}

/// The archive's object store and how objects are encoded.
#[derive(Debug, Clone)]
pub struct ParquetArchive {
    store: Arc<dyn ObjectStore>,
}

impl ParquetArchive {
    /// Opens the archive at `url`, creating a local directory if needed.
    pub fn open(url: &ArchiveUrl) -> Result<Self, ArchiveError> {
        let store: Arc<dyn ObjectStore> = match url {
            ArchiveUrl::Local(dir) => {
                let location_error = |message: String| ArchiveError::Location {
                    location: dir.display().to_string(),
                    message,
                };
                std::fs::create_dir_all(dir).map_err(|err| location_error(err.to_string()))?;
                Arc::new(
                    LocalFileSystem::new_with_prefix(dir)
                        .map_err(|err| location_error(err.to_string()))?,
                )
            }
            ArchiveUrl::Remote(url) => {
                return Err(ArchiveError::Location {
                    location: url.to_string(),
                    message: "object-store archives are not supported by this build yet; \
                              use a local path"
                        .to_owned(),
                });
            }
        };
        Ok(Self { store })
    }

    /// Writes `object` at `key`. The write is atomic: readers see all or nothing.
    pub async fn put(&self, key: &Path, object: &EncodedObject) -> Result<(), ArchiveError> {
        self.store.put(key, object.bytes.clone().into()).await?;
        Ok(())
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }
}

/// One archive object, encoded and fingerprinted, ready to be written (and rewritten on retry).
#[derive(Debug, Clone)]
pub struct EncodedObject {
    pub bytes: Bytes,
    pub num_rows: usize,
    /// SHA-256 of `bytes`: what the manifest records and `warden verify` checks.
    pub sha256: [u8; 32],
}

impl EncodedObject {
    /// Encodes `events` as zstd Parquet on a blocking thread: CPU-heavy work stays off the
    /// async workers that serve the proxy in `warden up`.
    pub async fn encode(events: Vec<AuditEvent>) -> Result<Self, ArchiveError> {
        tokio::task::spawn_blocking(move || {
            let batch = events_to_batch(&events)?;
            let bytes = encode_parquet(&batch)?;
            Ok(Self {
                sha256: Sha256::digest(&bytes).into(),
                num_rows: events.len(),
                bytes,
            })
        })
        .await
        .map_err(|err| ArchiveError::Location {
            location: "encoder".to_owned(),
            message: err.to_string(),
        })?
    }
}

fn encode_parquet(batch: &RecordBatch) -> Result<Bytes, ArchiveError> {
    let properties = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .build();
    let mut writer = ArrowWriter::try_new(Vec::new(), batch.schema(), Some(properties))?;
    writer.write(batch)?;
    Ok(Bytes::from(writer.into_inner()?))
}
