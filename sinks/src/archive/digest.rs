//! Hourly digests: each closed hour of a manifest chain sealed by a digest file, the way
//! CloudTrail seals its log files.
//!
//! `_warden/digests/{topic}-{partition}/{YYYY-MM-DDTHH}.json` names the chain's entries
//! written in that hour (by the manifest's `written_at`), the objects they record with their
//! SHA-256, the chain's head after them (entry number and entry hash), and the SHA-256 of the
//! chain's previous digest. A digest is written for every hour from the chain's first entry
//! on, empty hours included, so the digests of a chain form an unbroken hourly sequence. A
//! partition that has no entry yet is a chain all the same: its digests start with the hour
//! an archiver first read it (`first_seq` 1, `head_seq` 0), so a partition nobody writes to
//! is sealed, listed and missed like any other.
//!
//! What this adds to the manifest chain: removing the newest entries of a chain together with
//! their objects leaves a shorter chain that is whole in itself. The digest of their hour still
//! names the removed head, so `warden verify` sees the cut. Removing the digests too leaves
//! a gap in the hourly sequence, or a chain whose digests stop hours before now. Only the
//! current, unsealed hour is covered by the chain alone.
//!
//! Each digest also lists every chain that exists when it is written, so removing a whole
//! chain is seen from the others' digests. With `[archive].signing_key` each digest is signed
//! ([`super::signing`]): a writer with bucket access can still cut or rewrite a chain and
//! recompute its hashes, but not sign the result.
//!
//! Digests are written with put-if-absent: after a rebalance two archivers may both try to
//! seal an hour; the second adopts the first one's digest (and signs those bytes, if the
//! first stopped before it could).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::ArchiveError;
use super::manifest::{ManifestEntry, STATE_DIR, entry_key};
use super::signing::{DigestSigner, signature_key};

/// Manifest entries read at once when the sealer catches up from the store.
const CATCH_UP_READS: usize = 16;

/// One object a digest seals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedObject {
    /// The manifest entry that records the object.
    pub seq: u64,
    pub object: String,
    pub sha256: String,
    pub rows: u64,
}

/// The digest of one chain's closed hour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HourlyDigest {
    /// `{topic}-{partition}`.
    pub chain: String,
    /// Start of the sealed hour (UTC).
    pub hour: DateTime<Utc>,
    /// The first entry written in the hour (`head_seq + 1` of the previous digest).
    pub first_seq: u64,
    /// The chain's last entry written up to the end of the hour; `first_seq - 1` if none was.
    pub head_seq: u64,
    /// Hex SHA-256 of entry `head_seq`'s bytes; empty when the chain has no entry yet.
    pub head_sha256: String,
    pub objects: Vec<SealedObject>,
    /// Hex SHA-256 of the chain's previous digest's bytes; empty for the first.
    pub prev_digest_sha256: String,
    /// Every chain of the archive when this digest was written (empty in digests written
    /// before chains were listed).
    #[serde(default)]
    pub chains: Vec<String>,
}

/// A manifest entry as the sealer needs it: what it records, and its own hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainLink {
    pub seq: u64,
    pub entry_sha256: String,
    pub object: String,
    pub sha256: String,
    pub rows: u64,
    pub written_at: DateTime<Utc>,
}

impl ChainLink {
    pub fn new(entry: &ManifestEntry, entry_bytes: &[u8]) -> Self {
        Self {
            seq: entry.seq,
            entry_sha256: hex::encode(Sha256::digest(entry_bytes)),
            object: entry.object.clone(),
            sha256: entry.sha256.clone(),
            rows: entry.rows,
            written_at: entry.written_at,
        }
    }
}

/// Where a chain's digests live.
pub fn digest_prefix(chain: &str) -> Path {
    Path::from(format!("{STATE_DIR}/digests/{chain}"))
}

fn digest_key(chain: &str, hour: DateTime<Utc>) -> Path {
    Path::from(format!(
        "{STATE_DIR}/digests/{chain}/{}.json",
        hour.format("%Y-%m-%dT%H")
    ))
}

pub fn chain_name(topic: &str, partition: i32) -> String {
    format!("{topic}-{partition}")
}

fn hour_start(at: DateTime<Utc>) -> DateTime<Utc> {
    at.duration_trunc(TimeDelta::hours(1)).unwrap_or(at)
}

/// What the sealer knows of one chain.
#[derive(Debug, Default)]
struct ChainSeal {
    /// Whether `last` has been read from the store.
    loaded: bool,
    /// The newest digest and the SHA-256 of its bytes.
    last: Option<(HourlyDigest, String)>,
    /// Entries recorded since, oldest first (may have gaps; those are read from the store).
    pending: VecDeque<ChainLink>,
    /// During one sealing pass: the first entry the store was found not to have.
    store_ends_at: Option<u64>,
    /// When the chain was first seen with neither an entry nor a digest: its digests start
    /// with that hour.
    first_seen: Option<DateTime<Utc>>,
}

/// Seals the closed hours of the chains this archiver appends to.
#[derive(Debug)]
pub struct Sealer {
    store: Arc<dyn ObjectStore>,
    chains: HashMap<String, ChainSeal>,
    /// Signs every digest written or adopted, when configured.
    signer: Option<DigestSigner>,
}

impl Sealer {
    pub fn new(store: Arc<dyn ObjectStore>, signer: Option<DigestSigner>) -> Self {
        Self {
            store,
            chains: HashMap::new(),
            signer,
        }
    }

    /// Remembers an entry just appended to `chain`, so sealing its hour needs no read.
    pub fn note(&mut self, chain: &str, link: ChainLink) {
        self.chains
            .entry(chain.to_owned())
            .or_default()
            .pending
            .push_back(link);
    }

    /// Drops what is known of `chain` (its partition went to another archiver, which seals it
    /// from now on); should it come back, the state is read from the store again.
    pub fn forget(&mut self, chain: &str) {
        self.chains.remove(chain);
    }

    /// Writes the digests of every hour of `chain` that closed before `now` and has none yet.
    /// Returns how many it wrote (or adopted from another archiver).
    pub async fn seal_closed_hours(
        &mut self,
        chain: &str,
        now: DateTime<Utc>,
    ) -> Result<usize, ArchiveError> {
        let store = self.store.clone();
        let state = self.chains.entry(chain.to_owned()).or_default();
        if !state.loaded {
            state.last = load_last_digest(store.as_ref(), chain).await?;
            state.loaded = true;
        }
        state.store_ends_at = None;
        let mut sealed = 0;
        // Listed once per call, when the first hour to seal is found.
        let mut all_chains: Option<Vec<String>> = None;
        loop {
            let first_seq = state.last.as_ref().map_or(1, |(d, _)| d.head_seq + 1);
            let hour = match &state.last {
                Some((digest, _)) => digest.hour + TimeDelta::hours(1),
                None => match next_link(store.as_ref(), chain, state, first_seq).await? {
                    Some(first) => hour_start(first.written_at),
                    // No entry yet: sealed from the hour it was first seen.
                    None => hour_start(*state.first_seen.get_or_insert(now)),
                },
            };
            let hour_end = hour + TimeDelta::hours(1);
            if hour_end > now {
                return Ok(sealed);
            }
            let mut objects = Vec::new();
            let (mut head_seq, mut head_sha256) = state
                .last
                .as_ref()
                .map(|(d, _)| (d.head_seq, d.head_sha256.clone()))
                .unwrap_or_default();
            while let Some(link) = next_link(store.as_ref(), chain, state, head_seq + 1).await?
                && link.written_at < hour_end
            {
                state.pending.pop_front();
                head_seq = link.seq;
                head_sha256 = link.entry_sha256;
                objects.push(SealedObject {
                    seq: link.seq,
                    object: link.object,
                    sha256: link.sha256,
                    rows: link.rows,
                });
            }
            if all_chains.is_none() {
                all_chains = Some(list_chains(store.as_ref(), chain).await?);
            }
            let digest = HourlyDigest {
                chain: chain.to_owned(),
                hour,
                first_seq,
                head_seq,
                head_sha256,
                objects,
                prev_digest_sha256: state
                    .last
                    .as_ref()
                    .map(|(_, sha)| sha.clone())
                    .unwrap_or_default(),
                chains: all_chains.clone().unwrap_or_default(),
            };
            state.last = Some(write_digest(store.as_ref(), digest, self.signer.as_ref()).await?);
            sealed += 1;
        }
    }
}

/// The entry `seq` of `chain`, from what was noted or else from the store; `None` if the
/// chain has no such entry yet. Leaves it at the front of `state.pending`.
async fn next_link(
    store: &dyn ObjectStore,
    chain: &str,
    state: &mut ChainSeal,
    seq: u64,
) -> Result<Option<ChainLink>, ArchiveError> {
    while state.pending.front().is_some_and(|link| link.seq < seq) {
        state.pending.pop_front();
    }
    let noted = state.pending.front().is_some_and(|link| link.seq == seq);
    let beyond_the_store = state.store_ends_at.is_some_and(|end| seq >= end);
    if !noted && !beyond_the_store {
        // Not noted (written before a restart, or by another archiver): read a run of entries.
        let end = state.pending.front().map_or(seq + 1024, |link| link.seq);
        let mut read = read_links(store, chain, seq, end).await?;
        if (read.len() as u64) < end - seq {
            state.store_ends_at = Some(seq + read.len() as u64);
        }
        read.extend(state.pending.drain(..));
        state.pending = read;
    }
    Ok(state
        .pending
        .front()
        .filter(|link| link.seq == seq)
        .cloned())
}

/// Entries `from..end` of `chain` that exist, stopping at the first one that does not.
async fn read_links(
    store: &dyn ObjectStore,
    chain: &str,
    from: u64,
    end: u64,
) -> Result<VecDeque<ChainLink>, ArchiveError> {
    let Some((topic, partition)) = chain
        .rsplit_once('-')
        .and_then(|(topic, p)| Some((topic, p.parse::<i32>().ok()?)))
    else {
        return Ok(VecDeque::new());
    };
    let reads = futures::stream::iter(from..end)
        .map(|seq| async move {
            let key = entry_key(topic, partition, seq);
            match store.get(&key).await {
                Ok(found) => {
                    let bytes = found.bytes().await?;
                    let entry: ManifestEntry =
                        serde_json::from_slice(&bytes).map_err(|err| ArchiveError::Location {
                            location: key.to_string(),
                            message: format!("unreadable manifest entry: {err}"),
                        })?;
                    Ok(Some(ChainLink::new(&entry, &bytes)))
                }
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(err) => Err(ArchiveError::from(err)),
            }
        })
        .buffered(CATCH_UP_READS);
    let links: Vec<Option<ChainLink>> = reads
        .try_take_while(|link| std::future::ready(Ok(link.is_some())))
        .try_collect()
        .await?;
    Ok(links.into_iter().flatten().collect())
}

/// The chains of the archive (every directory under `_warden/manifest/`, and under
/// `_warden/digests/` for chains with no entry yet), `chain` among them.
async fn list_chains(store: &dyn ObjectStore, chain: &str) -> Result<Vec<String>, ArchiveError> {
    let mut chains = vec![chain.to_owned()];
    for dir in ["manifest", "digests"] {
        let listed = store
            .list_with_delimiter(Some(&Path::from(format!("{STATE_DIR}/{dir}"))))
            .await?;
        chains.extend(
            listed
                .common_prefixes
                .iter()
                .filter_map(|prefix| prefix.filename().map(str::to_owned)),
        );
    }
    chains.sort();
    chains.dedup();
    Ok(chains)
}

async fn load_last_digest(
    store: &dyn ObjectStore,
    chain: &str,
) -> Result<Option<(HourlyDigest, String)>, ArchiveError> {
    let keys: Vec<Path> = store
        .list(Some(&digest_prefix(chain)))
        .map_ok(|meta| meta.location)
        .try_collect()
        .await?;
    let Some(newest) = keys.into_iter().max() else {
        return Ok(None);
    };
    read_digest(store, &newest).await.map(Some)
}

/// A digest and the SHA-256 of its bytes.
pub async fn read_digest(
    store: &dyn ObjectStore,
    key: &Path,
) -> Result<(HourlyDigest, String), ArchiveError> {
    let (digest, sha256, _) = read_digest_bytes(store, key).await?;
    Ok((digest, sha256))
}

/// A digest, the SHA-256 of its bytes, and the bytes (what its signature covers).
pub async fn read_digest_bytes(
    store: &dyn ObjectStore,
    key: &Path,
) -> Result<(HourlyDigest, String, bytes::Bytes), ArchiveError> {
    let bytes = store.get(key).await?.bytes().await?;
    let digest = serde_json::from_slice(&bytes).map_err(|err| ArchiveError::Location {
        location: key.to_string(),
        message: format!("unreadable digest: {err}"),
    })?;
    Ok((digest, hex::encode(Sha256::digest(&bytes)), bytes))
}

/// Writes the signature of the digest at `digest_key` (put-if-absent: an existing one is
/// the same, Ed25519 being deterministic, or an attacker's, which verify reports).
async fn sign_digest(
    store: &dyn ObjectStore,
    signer: &DigestSigner,
    digest_key: &Path,
    digest_bytes: &[u8],
) -> Result<(), ArchiveError> {
    let key = signature_key(digest_key);
    let signature =
        serde_json::to_vec(&signer.sign(digest_bytes)).map_err(|err| ArchiveError::Location {
            location: key.to_string(),
            message: err.to_string(),
        })?;
    match store
        .put_opts(&key, signature.into(), PutOptions::from(PutMode::Create))
        .await
    {
        Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => Ok(()),
        Err(err) => Err(err.into()),
    }
}

/// Writes `digest` unless its hour is sealed already, in which case that digest is the one
/// that counts.
async fn write_digest(
    store: &dyn ObjectStore,
    digest: HourlyDigest,
    signer: Option<&DigestSigner>,
) -> Result<(HourlyDigest, String), ArchiveError> {
    let key = digest_key(&digest.chain, digest.hour);
    let bytes = serde_json::to_vec_pretty(&digest).map_err(|err| ArchiveError::Location {
        location: key.to_string(),
        message: err.to_string(),
    })?;
    match store
        .put_opts(
            &key,
            bytes.clone().into(),
            PutOptions::from(PutMode::Create),
        )
        .await
    {
        Ok(_) => {
            tracing::debug!(%key, objects = digest.objects.len(), "hour sealed");
            if let Some(signer) = signer {
                sign_digest(store, signer, &key, &bytes).await?;
            }
            Ok((digest, hex::encode(Sha256::digest(&bytes))))
        }
        Err(object_store::Error::AlreadyExists { .. }) => {
            let (adopted, sha256, bytes) = read_digest_bytes(store, &key).await?;
            if let Some(signer) = signer {
                sign_digest(store, signer, &key, &bytes).await?;
            }
            Ok((adopted, sha256))
        }
        Err(err) => Err(err.into()),
    }
}

#[cfg(test)]
mod tests {
    use object_store::memory::InMemory;

    use super::super::manifest::Manifest;
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("rfc3339")
            .with_timezone(&Utc)
    }

    fn entry(object: &str, written_at: &str) -> ManifestEntry {
        ManifestEntry {
            seq: 0,
            prev_sha256: String::new(),
            object: object.to_owned(),
            sha256: format!("sha-of-{object}"),
            rows: 10,
            bytes: 100,
            topic: "t".to_owned(),
            partition: 0,
            first_offset: 0,
            last_offset: 0,
            written_at: at(written_at),
        }
    }

    async fn digests(store: &Arc<dyn ObjectStore>) -> Vec<HourlyDigest> {
        let mut keys: Vec<Path> = store
            .list(Some(&digest_prefix("t-0")))
            .map_ok(|meta| meta.location)
            .try_collect()
            .await
            .expect("list");
        keys.sort();
        let mut out = Vec::new();
        for key in keys {
            out.push(read_digest(store.as_ref(), &key).await.expect("digest").0);
        }
        out
    }

    #[tokio::test]
    async fn closed_hours_are_sealed_in_an_unbroken_chain_of_digests() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let mut manifest = Manifest::new(store.clone());
        let mut sealer = Sealer::new(store.clone(), None);
        for (object, written_at) in [
            ("a", "2026-11-23T10:05:00Z"),
            ("b", "2026-11-23T10:59:59Z"),
            ("c", "2026-11-23T12:30:00Z"),
        ] {
            let link = manifest
                .record(entry(object, written_at))
                .await
                .expect("recorded")
                .expect("new");
            sealer.note("t-0", link);
        }
        // 12:xx is the current hour: 10 and 11 (empty) are sealed, 12 is not.
        let sealed = sealer
            .seal_closed_hours("t-0", at("2026-11-23T12:40:00Z"))
            .await
            .expect("sealed");
        assert_eq!(sealed, 2);
        let written = digests(&store).await;
        assert_eq!(written.len(), 2);
        assert_eq!((written[0].first_seq, written[0].head_seq), (1, 2));
        assert_eq!(
            written[0]
                .objects
                .iter()
                .map(|o| o.object.as_str())
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!((written[1].first_seq, written[1].head_seq), (3, 2));
        assert_eq!(written[1].head_sha256, written[0].head_sha256);
        assert!(written[1].objects.is_empty());
        assert!(!written[1].prev_digest_sha256.is_empty());

        // A restarted archiver (nothing noted) catches up from the store alone, and a second
        // sealer of the same chain adopts the digests that exist.
        let mut restarted = Sealer::new(store.clone(), None);
        let sealed = restarted
            .seal_closed_hours("t-0", at("2026-11-23T14:00:00Z"))
            .await
            .expect("sealed");
        assert_eq!(sealed, 2, "hours 12 and 13");
        let written = digests(&store).await;
        assert_eq!(written.len(), 4);
        assert_eq!((written[2].first_seq, written[2].head_seq), (3, 3));
        assert_eq!(written[2].objects[0].object, "c");
        let mut late = Sealer::new(store.clone(), None);
        let adopted = late
            .seal_closed_hours("t-0", at("2026-11-23T14:00:00Z"))
            .await
            .expect("nothing to do");
        assert_eq!(adopted, 0);
    }

    #[tokio::test]
    async fn a_chain_with_no_entry_is_sealed_from_the_hour_it_was_first_seen() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let mut sealer = Sealer::new(store.clone(), None);
        let first_seen = sealer
            .seal_closed_hours("t-0", at("2026-11-23T10:20:00Z"))
            .await
            .expect("ok");
        assert_eq!(first_seen, 0, "its first hour has not closed yet");
        let sealed = sealer
            .seal_closed_hours("t-0", at("2026-11-23T12:05:00Z"))
            .await
            .expect("sealed");
        assert_eq!(sealed, 2, "hours 10 and 11, both empty");
        let written = digests(&store).await;
        assert_eq!(written[0].hour, at("2026-11-23T10:00:00Z"));
        for digest in &written {
            assert_eq!((digest.first_seq, digest.head_seq), (1, 0));
            assert!(digest.objects.is_empty() && digest.head_sha256.is_empty());
            assert_eq!(digest.chains, ["t-0"]);
        }

        // Its first entry arrives: the chain's digests go on from there.
        let mut manifest = Manifest::new(store.clone());
        let link = manifest
            .record(entry("a", "2026-11-23T12:30:00Z"))
            .await
            .expect("recorded")
            .expect("new");
        sealer.note("t-0", link);
        let mut restarted = Sealer::new(store.clone(), None);
        let sealed = restarted
            .seal_closed_hours("t-0", at("2026-11-23T13:01:00Z"))
            .await
            .expect("sealed");
        assert_eq!(sealed, 1);
        let written = digests(&store).await;
        assert_eq!((written[2].first_seq, written[2].head_seq), (1, 1));
        assert_eq!(written[2].prev_digest_sha256.len(), 64);
        assert_eq!(
            hour_start(at("2026-11-23T10:59:59.9Z")),
            at("2026-11-23T10:00:00Z")
        );
    }
}
