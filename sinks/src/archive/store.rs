//! Writing Parquet objects into the archive's object store.

use std::sync::Arc;

use arrow::array::RecordBatch;
use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use sha2::{Digest, Sha256};
use warden_ingest::archive_store::{ArchiveStore, S3Options};
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
    /// Opens the archive at `url` (a local directory is created if needed; S3 is not contacted
    /// until the first write).
    pub fn open(url: &ArchiveUrl, s3: &S3Options) -> Result<Self, ArchiveError> {
        let opened = ArchiveStore::open(url, s3).map_err(|message| ArchiveError::Location {
            location: url.to_string(),
            message,
        })?;
        Ok(Self { store: opened.root })
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
    /// Encodes `rows` as zstd Parquet on a blocking thread: CPU-heavy work stays off the
    /// async workers that serve the proxy in `warden up`. (A retry passes a clone of the same
    /// batch, which shares its buffers.)
    pub async fn encode(rows: RecordBatch) -> Result<Self, ArchiveError> {
        tokio::task::spawn_blocking(move || {
            let bytes = encode_parquet(&rows)?;
            Ok(Self {
                sha256: Sha256::digest(&bytes).into(),
                num_rows: rows.num_rows(),
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
