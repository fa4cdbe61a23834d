//! The manifest: an append-only, hash-chained record of every archive object, the way cloud
//! audit trails chain their digest files.
//!
//! One chain per Kafka partition (only the partition's current owner appends to it), one
//! object per entry: `_warden/manifest/{topic}-{partition}/{seq:020}.json`. An entry names an
//! archive object with its SHA-256, row count and offset range, and carries the SHA-256 of the
//! previous entry's bytes: altering, removing or inserting an entry breaks the chain, and an
//! object that is altered, removed or added outside the archiver no longer matches it.
//! Entries are created with put-if-absent, so two writers can never both extend a chain at
//! the same place (a member that lost its partition in a rebalance finds out here).

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::ArchiveError;
use super::digest::ChainLink;

/// Where the archive keeps its own state, beside the tables.
pub const STATE_DIR: &str = "_warden";
/// Entries remembered per chain to recognise an object written again after a crash.
const RECENT_ENTRIES: usize = 64;

/// One manifest entry: an archive object as it was committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// Position in the chain, from 1.
    pub seq: u64,
    /// Hex SHA-256 of the previous entry's bytes; empty for the first.
    pub prev_sha256: String,
    /// The object's key in the archive.
    pub object: String,
    /// Hex SHA-256 of the object's bytes.
    pub sha256: String,
    pub rows: u64,
    pub bytes: u64,
    pub topic: String,
    pub partition: i32,
    pub first_offset: i64,
    pub last_offset: i64,
    pub written_at: DateTime<Utc>,
}

impl ManifestEntry {
    /// The hour partition (`dt=.../hour=..`) of the object, if its key has one.
    pub fn hour(&self) -> Option<&str> {
        let start = self.object.find("dt=")?;
        let rest = &self.object[start..];
        let end = rest.find("/hour=")? + "/hour=".len() + 2;
        rest.get(..end)
    }
}

/// Where a chain lives.
pub fn chain_prefix(topic: &str, partition: i32) -> Path {
    Path::from(format!("{STATE_DIR}/manifest/{topic}-{partition}"))
}

pub(super) fn entry_key(topic: &str, partition: i32, seq: u64) -> Path {
    Path::from(format!(
        "{STATE_DIR}/manifest/{topic}-{partition}/{seq:020}.json"
    ))
}

/// The end of one chain, as this writer knows it.
#[derive(Debug, Default)]
struct ChainHead {
    seq: u64,
    sha256: String,
    /// Object key → SHA-256 of the latest entries.
    recent: HashMap<String, String>,
}

/// Appends to the manifest chains of the partitions this archiver owns.
#[derive(Debug)]
pub struct Manifest {
    store: Arc<dyn ObjectStore>,
    heads: HashMap<(String, i32), ChainHead>,
}

impl Manifest {
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        Self {
            store,
            heads: HashMap::new(),
        }
    }

    /// Records `entry` (its `seq` and `prev_sha256` are filled in here) unless the chain's
    /// recent entries already record this object with this content — the case when a batch
    /// is written again after a crash. Returns the new link of the chain, if one was added.
    pub async fn record(
        &mut self,
        mut entry: ManifestEntry,
    ) -> Result<Option<ChainLink>, ArchiveError> {
        let chain = (entry.topic.clone(), entry.partition);
        loop {
            if !self.heads.contains_key(&chain) {
                let head = load_head(self.store.as_ref(), &entry.topic, entry.partition).await?;
                self.heads.insert(chain.clone(), head);
            }
            let head = self.heads.get_mut(&chain).expect("loaded above");
            if head.recent.get(&entry.object) == Some(&entry.sha256) {
                return Ok(None);
            }
            entry.seq = head.seq + 1;
            entry.prev_sha256 = head.sha256.clone();
            let bytes =
                serde_json::to_vec_pretty(&entry).map_err(|err| ArchiveError::Location {
                    location: "manifest".to_owned(),
                    message: err.to_string(),
                })?;
            let key = entry_key(&entry.topic, entry.partition, entry.seq);
            let put = self
                .store
                .put_opts(
                    &key,
                    bytes.clone().into(),
                    PutOptions::from(PutMode::Create),
                )
                .await;
            match put {
                Ok(_) => {
                    head.seq = entry.seq;
                    head.sha256 = hex::encode(Sha256::digest(&bytes));
                    if head.recent.len() >= RECENT_ENTRIES {
                        head.recent.clear();
                    }
                    head.recent
                        .insert(entry.object.clone(), entry.sha256.clone());
                    return Ok(Some(ChainLink::new(&entry, &bytes)));
                }
                // Someone else extended the chain (a former owner of the partition): reload
                // the head and look again.
                Err(object_store::Error::AlreadyExists { .. }) => {
                    self.heads.remove(&chain);
                }
                Err(err) => return Err(err.into()),
            }
        }
    }
}

/// Reads a chain's last entries to find its head.
async fn load_head(
    store: &dyn ObjectStore,
    topic: &str,
    partition: i32,
) -> Result<ChainHead, ArchiveError> {
    let mut keys: Vec<Path> = store
        .list(Some(&chain_prefix(topic, partition)))
        .map_ok(|meta| meta.location)
        .try_collect()
        .await?;
    keys.sort();
    let mut head = ChainHead::default();
    let recent_start = keys.len().saturating_sub(RECENT_ENTRIES);
    for (index, key) in keys.iter().enumerate().skip(recent_start) {
        let bytes = store.get(key).await?.bytes().await?;
        let entry: ManifestEntry =
            serde_json::from_slice(&bytes).map_err(|err| ArchiveError::Location {
                location: key.to_string(),
                message: format!("unreadable manifest entry: {err}"),
            })?;
        head.recent
            .insert(entry.object.clone(), entry.sha256.clone());
        if index + 1 == keys.len() {
            head.seq = entry.seq;
            head.sha256 = hex::encode(Sha256::digest(&bytes));
        }
    }
    Ok(head)
}

#[cfg(test)]
mod tests {
    use object_store::memory::InMemory;

    use super::*;

    /// Entry `seq` of chain `t-0`: its bytes and its contents.
    async fn read_entry(store: &Arc<dyn ObjectStore>, seq: u64) -> (bytes::Bytes, ManifestEntry) {
        let bytes = store
            .get(&entry_key("t", 0, seq))
            .await
            .expect("entry exists")
            .bytes()
            .await
            .expect("bytes");
        let entry = serde_json::from_slice(&bytes).expect("json");
        (bytes, entry)
    }

    fn entry(object: &str, sha: &str) -> ManifestEntry {
        ManifestEntry {
            seq: 0,
            prev_sha256: String::new(),
            object: object.to_owned(),
            sha256: sha.to_owned(),
            rows: 1,
            bytes: 1,
            topic: "t".to_owned(),
            partition: 0,
            first_offset: 0,
            last_offset: 0,
            written_at: Utc::now(),
        }
    }

    #[tokio::test]
    async fn entries_chain_and_a_rewrite_of_the_same_object_is_recorded_once() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let mut manifest = Manifest::new(store.clone());
        manifest
            .record(entry("events/dt=2026-11-23/hour=01/a.parquet", "aa"))
            .await
            .expect("a");
        manifest
            .record(entry("events/dt=2026-11-23/hour=01/b.parquet", "bb"))
            .await
            .expect("b");
        // A new writer (after a crash) writes b again with the same content.
        let mut restarted = Manifest::new(store.clone());
        restarted
            .record(entry("events/dt=2026-11-23/hour=01/b.parquet", "bb"))
            .await
            .expect("b again");
        restarted
            .record(entry("events/dt=2026-11-23/hour=02/c.parquet", "cc"))
            .await
            .expect("c");

        let (first, _) = read_entry(&store, 1).await;
        let (_, second) = read_entry(&store, 2).await;
        assert_eq!(second.prev_sha256, hex::encode(Sha256::digest(&first)));
        let (_, third) = read_entry(&store, 3).await;
        assert_eq!(
            (third.seq, third.object.as_str()),
            (3, "events/dt=2026-11-23/hour=02/c.parquet")
        );
        assert_eq!(third.hour(), Some("dt=2026-11-23/hour=02"));
        assert!(
            store.head(&entry_key("t", 0, 4)).await.is_err(),
            "b was not recorded twice"
        );
    }

    #[tokio::test]
    async fn a_stale_writer_appends_after_the_entries_it_did_not_know_about() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let mut stale = Manifest::new(store.clone());
        stale.record(entry("x/a.parquet", "aa")).await.expect("a");
        let mut current = Manifest::new(store.clone());
        current.record(entry("x/b.parquet", "bb")).await.expect("b");
        stale.record(entry("x/c.parquet", "cc")).await.expect("c");
        let (_, third) = read_entry(&store, 3).await;
        assert_eq!(third.object, "x/c.parquet");
    }
}
