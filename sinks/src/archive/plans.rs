//! Batch plans: the boundaries of batches written but not yet committed in Kafka, kept in the
//! archive so that whoever archives the partition next cuts the replayed records at exactly
//! the same offsets — and so rewrites the same objects, byte for byte, under the same names,
//! instead of adding rows a second time.
//!
//! One small object per partition: `_warden/plans/{topic}-{partition}.json`, rewritten before
//! each batch of that partition is written. Boundaries below the committed offset are dropped
//! as they are passed.

use std::sync::Arc;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use serde::{Deserialize, Serialize};

use super::ArchiveError;
use super::manifest::STATE_DIR;

/// One batch of one partition: its offsets, and a fingerprint of the record at its first
/// offset (which tells a replay of the same log from a new log that reuses offsets, as the
/// embedded broker does on every start).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchBoundary {
    pub first_offset: i64,
    pub last_offset: i64,
    pub first_record: String,
}

/// The uncommitted batches of one partition, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionPlan {
    pub batches: Vec<BatchBoundary>,
}

impl PartitionPlan {
    /// Drops the batches that end before `next_offset` (committed).
    pub fn drop_committed(&mut self, next_offset: i64) {
        self.batches.retain(|b| b.last_offset >= next_offset);
    }
}

/// Reads and writes plans in the archive's object store.
#[derive(Debug, Clone)]
pub struct PlanStore {
    store: Arc<dyn ObjectStore>,
    topic: String,
}

impl PlanStore {
    pub fn new(store: Arc<dyn ObjectStore>, topic: &str) -> Self {
        Self {
            store,
            topic: topic.to_owned(),
        }
    }

    fn key(&self, partition: i32) -> Path {
        Path::from(format!("{STATE_DIR}/plans/{}-{partition}.json", self.topic))
    }

    /// The partition's plan; empty if there is none.
    pub async fn load(&self, partition: i32) -> Result<PartitionPlan, ArchiveError> {
        match self.store.get(&self.key(partition)).await {
            Ok(found) => {
                let bytes = found.bytes().await?;
                serde_json::from_slice(&bytes).map_err(|err| ArchiveError::Location {
                    location: self.key(partition).to_string(),
                    message: format!("unreadable batch plan: {err}"),
                })
            }
            Err(object_store::Error::NotFound { .. }) => Ok(PartitionPlan::default()),
            Err(err) => Err(err.into()),
        }
    }

    pub async fn save(&self, partition: i32, plan: &PartitionPlan) -> Result<(), ArchiveError> {
        let bytes = serde_json::to_vec(plan).map_err(|err| ArchiveError::Location {
            location: self.key(partition).to_string(),
            message: err.to_string(),
        })?;
        self.store.put(&self.key(partition), bytes.into()).await?;
        Ok(())
    }
}
