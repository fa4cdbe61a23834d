//! `warden verify`: checks the archive against its manifest chains.
//!
//! Every chain must be whole (entries numbered from 1 without gaps, each carrying the SHA-256
//! of the one before); every object an entry names must exist with the recorded SHA-256; and
//! every Parquet object of a table must be named by some entry. Anything else is reported by
//! name: a missing, altered or unlisted object, or a break in a chain. Each chain's hourly
//! [digests](super::digest) must follow one another hour by hour, each carrying the hash of
//! the one before, and seal entries the chain still has, unchanged: a chain cut short, even
//! whole in itself, no longer holds the head a digest sealed.
//!
//! Against a writer who can also delete or rewrite digests: every hour of a chain that closed
//! more than `[archive].digest_grace_s` ago must have its digest (a missing one is a problem:
//! the newest digests were removed, or the archiver has not run); every chain a digest lists
//! must still exist; and with `[archive].verify_keys`, every digest must carry a valid
//! signature by one of them, so a chain rewritten with recomputed digests is caught. Only
//! the hours within the grace period are covered by the chain alone; the report notes them.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use sha2::{Digest, Sha256};
use warden_ingest::layout::ARCHIVE_TABLES;

use super::ArchiveError;
use super::digest::{ChainLink, HourlyDigest, read_digest_bytes};
use super::manifest::{ManifestEntry, STATE_DIR};
use super::retention::{first_kept_day, read_retention};
use super::signing::{DigestSignature, DigestVerifier, signature_key};

/// One thing wrong with the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The manifest lists the object, the store does not have it.
    Missing { object: String },
    /// The object's bytes are not the ones the manifest recorded.
    Altered {
        object: String,
        recorded: String,
        actual: String,
    },
    /// A table object no manifest entry names.
    Unlisted { object: String },
    /// A chain is not whole: an entry is missing, altered, reordered or unreadable.
    ChainBroken { entry: String, reason: String },
    /// A digest is missing, altered, or seals entries the chain no longer has as sealed.
    DigestBroken { digest: String, reason: String },
    /// A digest's signature is missing or does not verify with any configured key.
    SignatureInvalid { digest: String, reason: String },
    /// Closed hours of a chain, past the grace period, have no digest.
    Unsealed {
        chain: String,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    },
    /// A chain that digests list no longer exists.
    ChainMissing { chain: String, listed_by: String },
    /// The archive was pruned further back than the configured retention allows.
    RetentionExceeded {
        removed_before: NaiveDate,
        first_kept_day: NaiveDate,
        retention_days: u32,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing { object } => write!(
                f,
                "MISSING   {object}: listed in the manifest, not in the archive"
            ),
            Self::Altered {
                object,
                recorded,
                actual,
            } => write!(
                f,
                "ALTERED   {object}: sha256 {actual}, manifest recorded {recorded}"
            ),
            Self::Unlisted { object } => {
                write!(
                    f,
                    "UNLISTED  {object}: in the archive, in no manifest entry"
                )
            }
            Self::ChainBroken { entry, reason } => write!(f, "CHAIN     {entry}: {reason}"),
            Self::DigestBroken { digest, reason } => write!(f, "DIGEST    {digest}: {reason}"),
            Self::SignatureInvalid { digest, reason } => {
                write!(f, "SIGNATURE {digest}: {reason}")
            }
            Self::Unsealed { chain, from, to } => write!(
                f,
                "UNSEALED  {chain}: no digest for the closed hours {} to {} UTC (digests were \
                 removed, or no archiver sealed them)",
                from.format("%Y-%m-%dT%H"),
                to.format("%Y-%m-%dT%H")
            ),
            Self::ChainMissing { chain, listed_by } => write!(
                f,
                "NOCHAIN   {chain}: listed by {listed_by}, but the archive has no such chain \
                 (it was removed)"
            ),
            Self::RetentionExceeded {
                removed_before,
                first_kept_day,
                retention_days,
            } => write!(
                f,
                "RETENTION {STATE_DIR}/retention.json: days before {removed_before} were removed; \
                 retention_days = {retention_days} keeps every day from {first_kept_day} on"
            ),
        }
    }
}

/// What `warden verify` found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub num_chains: usize,
    pub num_entries: usize,
    pub num_objects_checked: usize,
    pub num_rows: u64,
    pub num_digests: usize,
    /// Objects listed in the manifest whose days were pruned by retention.
    pub num_objects_expired: usize,
    pub problems: Vec<Problem>,
    /// Facts worth knowing that are not failures (e.g. hours not sealed yet).
    pub notes: Vec<String>,
}

impl VerifyReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// What `verify` checks beyond the chains themselves.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// Only objects of this hour and later (all when `None`).
    pub since: Option<DateTime<Utc>>,
    /// Also check that the archive was not pruned further back than this.
    pub retention_days: Option<u32>,
    /// Check every digest's signature with these keys.
    pub verifier: Option<DigestVerifier>,
    /// How long after its hour's end a digest may be missing.
    pub digest_grace: std::time::Duration,
    /// The time closed hours are counted up to.
    pub now: DateTime<Utc>,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        Self {
            since: None,
            retention_days: None,
            verifier: None,
            digest_grace: std::time::Duration::from_secs(900),
            now: Utc::now(),
        }
    }
}

/// Checks every chain and digest, and every object of an hour at or after `options.since`
/// that retention has not removed.
pub async fn verify(
    store: &Arc<dyn ObjectStore>,
    options: &VerifyOptions,
) -> Result<VerifyReport, ArchiveError> {
    let (since, retention_days) = (options.since, options.retention_days);
    let mut report = VerifyReport::default();
    let (latest, chains) = check_chains(store.as_ref(), &mut report).await?;
    check_digests(store.as_ref(), &chains, options, &mut report).await?;
    if options.verifier.is_none() {
        report.notes.push(
            "digest signatures not checked: set [archive].verify_keys to the archivers' public \
             key"
            .to_owned(),
        );
    }
    let retention = read_retention(store.as_ref()).await?;
    if let (Some(record), Some(retention_days)) = (&retention, retention_days) {
        let first_kept_day = first_kept_day(Utc::now().date_naive(), retention_days);
        if record.removed_before > first_kept_day {
            report.problems.push(Problem::RetentionExceeded {
                removed_before: record.removed_before,
                first_kept_day,
                retention_days,
            });
        }
    }
    let expired = |key: &str| match (&retention, hour_of(key)) {
        (Some(record), Some(hour)) => hour.date_naive() < record.removed_before,
        _ => false,
    };

    let in_range = |key: &str| match (since, hour_of(key)) {
        (Some(since), Some(hour)) => hour + chrono::Duration::hours(1) > since,
        _ => true,
    };
    for (object, entry) in &latest {
        if !in_range(object) {
            continue;
        }
        if expired(object) {
            report.num_objects_expired += 1;
            continue;
        }
        report.num_objects_checked += 1;
        match store.get(&Path::from(object.as_str())).await {
            Ok(found) => {
                let bytes = found.bytes().await?;
                let actual = hex::encode(Sha256::digest(&bytes));
                if actual == entry.sha256 {
                    report.num_rows += entry.rows;
                } else {
                    report.problems.push(Problem::Altered {
                        object: object.clone(),
                        recorded: entry.sha256.clone(),
                        actual,
                    });
                }
            }
            Err(object_store::Error::NotFound { .. }) => {
                report.problems.push(Problem::Missing {
                    object: object.clone(),
                });
            }
            Err(err) => return Err(err.into()),
        }
    }
    if let Some(record) = &retention {
        report.notes.push(format!(
            "days before {} removed by retention ({} days, recorded {}): {} objects of the \
             manifest not checked",
            record.removed_before,
            record.retention_days,
            record.recorded_at.format("%Y-%m-%d %H:%M UTC"),
            report.num_objects_expired
        ));
    }
    for table in ARCHIVE_TABLES {
        let objects: Vec<Path> = store
            .list(Some(&Path::from(*table)))
            .map_ok(|meta| meta.location)
            .try_collect()
            .await?;
        for object in objects {
            let key = object.to_string();
            if key.ends_with(".parquet") && in_range(&key) && !latest.contains_key(&key) {
                report.problems.push(Problem::Unlisted { object: key });
            }
        }
    }
    Ok(report)
}

/// Every chain's entries in order, by chain name (`{topic}-{partition}`).
type Chains = BTreeMap<String, Vec<ChainLink>>;

/// Walks every chain; returns the latest entry of each object they name, and the chains.
async fn check_chains(
    store: &dyn ObjectStore,
    report: &mut VerifyReport,
) -> Result<(BTreeMap<String, ManifestEntry>, Chains), ArchiveError> {
    let keys: Vec<Path> = store
        .list(Some(&Path::from(format!("{STATE_DIR}/manifest"))))
        .map_ok(|meta| meta.location)
        .try_collect()
        .await?;
    let mut chains: HashMap<String, Vec<Path>> = HashMap::new();
    for key in keys {
        let chain = key
            .as_ref()
            .rsplit_once('/')
            .map(|(dir, _)| dir.to_owned())
            .unwrap_or_default();
        chains.entry(chain).or_default().push(key);
    }
    report.num_chains = chains.len();
    let mut latest = BTreeMap::new();
    let mut links = Chains::new();
    for (chain, mut keys) in chains {
        let chain_links = links
            .entry(chain.rsplit('/').next().unwrap_or_default().to_owned())
            .or_default();
        keys.sort();
        let mut previous_sha256 = String::new();
        for (index, key) in keys.iter().enumerate() {
            report.num_entries += 1;
            let name = key.to_string();
            let bytes = store.get(key).await?.bytes().await?;
            let entry: ManifestEntry = match serde_json::from_slice(&bytes) {
                Ok(entry) => entry,
                Err(err) => {
                    report.problems.push(Problem::ChainBroken {
                        entry: name,
                        reason: format!("unreadable entry ({err})"),
                    });
                    previous_sha256 = hex::encode(Sha256::digest(&bytes));
                    continue;
                }
            };
            let expected_seq = index as u64 + 1;
            if entry.seq != expected_seq {
                report.problems.push(Problem::ChainBroken {
                    entry: name.clone(),
                    reason: format!(
                        "is entry {} where entry {expected_seq} should be (an entry is missing)",
                        entry.seq
                    ),
                });
            } else if entry.prev_sha256 != previous_sha256 {
                report.problems.push(Problem::ChainBroken {
                    entry: name.clone(),
                    reason: "does not carry the hash of the entry before it (an entry was \
                             altered, removed or inserted)"
                        .to_owned(),
                });
            }
            previous_sha256 = hex::encode(Sha256::digest(&bytes));
            chain_links.push(ChainLink::new(&entry, &bytes));
            latest.insert(entry.object.clone(), entry);
        }
    }
    Ok((latest, links))
}

/// Checks every chain's digests against each other and against the chain.
async fn check_digests(
    store: &dyn ObjectStore,
    chains: &Chains,
    options: &VerifyOptions,
    report: &mut VerifyReport,
) -> Result<(), ArchiveError> {
    let grace = chrono::Duration::from_std(options.digest_grace).unwrap_or_default();
    // The newest hour that must be sealed by now: it ended more than the grace period ago.
    let last_due = hour_start(options.now - grace) - chrono::Duration::hours(1);
    // Chains the digests list, and the first digest that listed each.
    let mut listed: BTreeMap<String, String> = BTreeMap::new();
    let keys: Vec<Path> = store
        .list(Some(&Path::from(format!("{STATE_DIR}/digests"))))
        .map_ok(|meta| meta.location)
        .try_collect()
        .await?;
    let mut by_chain: BTreeMap<String, Vec<Path>> = BTreeMap::new();
    for key in keys {
        let mut parts = key.as_ref().rsplit('/');
        let chain = parts.nth(1).unwrap_or_default().to_owned();
        by_chain.entry(chain).or_default().push(key);
    }
    for (chain, links) in chains {
        if by_chain.contains_key(chain) {
            continue;
        }
        let Some(first) = links.first() else {
            continue;
        };
        let first_hour = hour_start(first.written_at);
        if first_hour <= last_due {
            report.problems.push(Problem::Unsealed {
                chain: chain.clone(),
                from: first_hour,
                to: last_due,
            });
        } else {
            report.notes.push(format!(
                "{chain}: no hour sealed yet (entries 1..={} are covered by the chain alone)",
                links.len()
            ));
        }
    }
    let no_links = Vec::new();
    let sealed_chains: std::collections::BTreeSet<String> = by_chain.keys().cloned().collect();
    for (chain, mut keys) in by_chain {
        keys.sort();
        let links = chains.get(&chain).unwrap_or(&no_links);
        let link = |seq: u64| {
            seq.checked_sub(1)
                .and_then(|index| links.get(usize::try_from(index).ok()?))
                .filter(|link| link.seq == seq)
        };
        let mut previous: Option<(HourlyDigest, String)> = None;
        for key in keys {
            report.num_digests += 1;
            let name = key.to_string();
            let broken = |reason: String| Problem::DigestBroken {
                digest: name.clone(),
                reason,
            };
            let (digest, sha256, bytes) = match read_digest_bytes(store, &key).await {
                Ok(read) => read,
                Err(ArchiveError::Location { message, .. }) => {
                    report.problems.push(broken(message));
                    previous = None;
                    continue;
                }
                Err(err) => return Err(err),
            };
            let (expected_prev, expected_first) = match &previous {
                Some((before, sha)) => (sha.as_str(), before.head_seq + 1),
                None => ("", 1),
            };
            if let Some((before, _)) = &previous
                && digest.hour != before.hour + chrono::Duration::hours(1)
            {
                report.problems.push(broken(format!(
                    "follows the digest of {} (the digests of the hours between are missing)",
                    before.hour.format("%Y-%m-%dT%H")
                )));
            } else if digest.prev_digest_sha256 != expected_prev {
                report.problems.push(broken(
                    "does not carry the hash of the digest before it (a digest was altered, \
                     removed or inserted)"
                        .to_owned(),
                ));
            }
            if let Some(verifier) = &options.verifier
                && let Err(reason) = check_signature(store, verifier, &key, &bytes).await?
            {
                report.problems.push(Problem::SignatureInvalid {
                    digest: name.clone(),
                    reason,
                });
            }
            for other in &digest.chains {
                listed.entry(other.clone()).or_insert_with(|| name.clone());
            }
            if digest.chain != chain {
                report
                    .problems
                    .push(broken(format!("names chain {:?}", digest.chain)));
            }
            if digest.first_seq != expected_first {
                report.problems.push(broken(format!(
                    "seals from entry {}, the digest before it up to entry {}",
                    digest.first_seq,
                    expected_first - 1
                )));
            }
            if digest.head_seq > 0 {
                match link(digest.head_seq) {
                    None => report.problems.push(broken(format!(
                        "sealed entry {} as the head of the chain; the chain now ends at entry {} \
                         (entries were removed)",
                        digest.head_seq,
                        links.len()
                    ))),
                    Some(head) if head.entry_sha256 != digest.head_sha256 => {
                        report.problems.push(broken(format!(
                            "sealed entry {} with another hash (the entry was altered)",
                            digest.head_seq
                        )));
                    }
                    Some(_) => {}
                }
            }
            for sealed in &digest.objects {
                match link(sealed.seq) {
                    Some(entry)
                        if entry.object == sealed.object && entry.sha256 == sealed.sha256 => {}
                    _ => report.problems.push(broken(format!(
                        "sealed {} (sha256 {}) as entry {}; the chain no longer records it so",
                        sealed.object, sealed.sha256, sealed.seq
                    ))),
                }
            }
            previous = Some((digest, sha256));
        }
        if let Some((last, _)) = &previous
            && last.hour < last_due
        {
            report.problems.push(Problem::Unsealed {
                chain: chain.clone(),
                from: last.hour + chrono::Duration::hours(1),
                to: last_due,
            });
        }
        if let Some((last, _)) = previous {
            let unsealed = links.len() as u64 - last.head_seq.min(links.len() as u64);
            report.notes.push(format!(
                "{chain}: sealed through {} UTC{}",
                last.hour.format("%Y-%m-%d %H:00-%H:59"),
                if unsealed > 0 {
                    format!("; the {unsealed} newest entries are covered by the chain alone")
                } else {
                    String::new()
                }
            ));
        }
    }
    for (chain, listed_by) in listed {
        // A chain with no entry yet exists through its digests alone.
        if !chains.contains_key(&chain) && !sealed_chains.contains(&chain) {
            report
                .problems
                .push(Problem::ChainMissing { chain, listed_by });
        }
    }
    Ok(())
}

/// Whether the digest at `key` (whose bytes are `bytes`) carries a valid signature: the
/// reason it does not, or an error reading the store.
async fn check_signature(
    store: &dyn ObjectStore,
    verifier: &DigestVerifier,
    key: &Path,
    bytes: &[u8],
) -> Result<Result<(), String>, ArchiveError> {
    let signature_key = signature_key(key);
    let signature = match store.get(&signature_key).await {
        Ok(found) => found.bytes().await?,
        Err(object_store::Error::NotFound { .. }) => {
            return Ok(Err(format!("unsigned (no {signature_key})")));
        }
        Err(err) => return Err(err.into()),
    };
    Ok(
        match serde_json::from_slice::<DigestSignature>(&signature) {
            Ok(signature) => verifier.check(bytes, &signature),
            Err(err) => Err(format!("unreadable signature {signature_key} ({err})")),
        },
    )
}

fn hour_start(at: DateTime<Utc>) -> DateTime<Utc> {
    use chrono::DurationRound;
    at.duration_trunc(chrono::Duration::hours(1)).unwrap_or(at)
}

/// The start of the hour of an object key's `dt=YYYY-MM-DD/hour=HH` partition.
fn hour_of(key: &str) -> Option<DateTime<Utc>> {
    let date = key.split("dt=").nth(1)?.get(..10)?;
    let hour: u32 = key.split("hour=").nth(1)?.get(..2)?.parse().ok()?;
    let date = NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
    Some(Utc.from_utc_datetime(&date.and_hms_opt(hour, 0, 0)?))
}

#[cfg(test)]
mod tests {
    use object_store::memory::InMemory;

    use super::super::digest::Sealer;
    use super::super::manifest::{Manifest, entry_key};
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("rfc3339")
            .with_timezone(&Utc)
    }

    use super::super::signing::{DigestSigner, new_key_pair};

    /// The archivers' key pair in these tests: (signer, its public key).
    fn archiver_key() -> (DigestSigner, String) {
        let (seed, public) = new_key_pair([42; 32]);
        (DigestSigner::from_base64_seed(&seed).expect("seed"), public)
    }

    /// Verified at 12:30 with a 15-minute grace: hours 10 and 11 must be sealed.
    fn options(verify_key: Option<&str>) -> VerifyOptions {
        VerifyOptions {
            verifier: verify_key.map(|key| {
                DigestVerifier::from_base64_keys(&[key.to_owned()]).expect("verify key")
            }),
            digest_grace: std::time::Duration::from_secs(900),
            now: at("2026-11-23T12:30:00Z"),
            ..VerifyOptions::default()
        }
    }

    /// Records `objects` (written at the given times) in `chain` of topic `t` and seals the
    /// hours closed by 12:30 as the archiver does.
    async fn record_and_seal(
        store: &Arc<dyn ObjectStore>,
        partition: i32,
        written: &[&str],
        signer: Option<DigestSigner>,
    ) {
        let chain = format!("t-{partition}");
        let mut manifest = Manifest::new(store.clone());
        let mut sealer = Sealer::new(store.clone(), signer);
        for (index, written_at) in written.iter().enumerate() {
            let object = format!("events/dt=2026-11-23/hour=10/p{partition}-o{index}.parquet");
            let bytes = format!("object {partition} {index} {written_at}");
            store
                .put(
                    &Path::from(object.as_str()),
                    bytes.clone().into_bytes().into(),
                )
                .await
                .expect("put");
            let link = manifest
                .record(ManifestEntry {
                    seq: 0,
                    prev_sha256: String::new(),
                    object,
                    sha256: hex::encode(Sha256::digest(bytes.as_bytes())),
                    rows: 1,
                    bytes: bytes.len() as u64,
                    topic: "t".to_owned(),
                    partition,
                    first_offset: index as i64,
                    last_offset: index as i64,
                    written_at: at(written_at),
                })
                .await
                .expect("recorded")
                .expect("new");
            sealer.note(&chain, link);
        }
        sealer
            .seal_closed_hours(&chain, at("2026-11-23T12:30:00Z"))
            .await
            .expect("sealed");
    }

    const HOURS_10_AND_11: [&str; 5] = [
        "2026-11-23T10:01:00Z",
        "2026-11-23T10:02:00Z",
        "2026-11-23T10:03:00Z",
        "2026-11-23T11:01:00Z",
        "2026-11-23T11:02:00Z",
    ];

    /// Two chains (`t-0`, `t-1`), each with objects in hours 10 and 11, sealed and signed.
    async fn sealed_archive() -> (Arc<dyn ObjectStore>, String) {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let (signer, public) = archiver_key();
        // Chain t-1 first, so both chains exist when t-0's digests are written.
        record_and_seal(&store, 1, &HOURS_10_AND_11[..2], Some(signer.clone())).await;
        record_and_seal(&store, 0, &HOURS_10_AND_11, Some(signer)).await;
        (store, public)
    }

    fn lines(report: &VerifyReport) -> Vec<String> {
        report.problems.iter().map(ToString::to_string).collect()
    }

    async fn delete_prefix(store: &Arc<dyn ObjectStore>, prefix: &str) {
        let keys: Vec<Path> = store
            .list(Some(&Path::from(prefix)))
            .map_ok(|meta| meta.location)
            .try_collect()
            .await
            .expect("list");
        for key in keys {
            store.delete(&key).await.expect("delete");
        }
    }

    #[tokio::test]
    async fn a_chain_cut_short_with_its_objects_is_caught_by_the_digest() {
        let (store, public) = sealed_archive().await;
        let report = verify(&store, &options(Some(&public)))
            .await
            .expect("verify");
        assert!(report.is_clean(), "{:?}", report.problems);
        assert_eq!((report.num_entries, report.num_digests), (7, 4));

        // Cut the newest entry and its object: the chain is whole in itself.
        store.delete(&entry_key("t", 0, 5)).await.expect("delete");
        store
            .delete(&Path::from("events/dt=2026-11-23/hour=10/p0-o4.parquet"))
            .await
            .expect("delete");
        let report = verify(&store, &options(Some(&public)))
            .await
            .expect("verify");
        assert!(
            !report
                .problems
                .iter()
                .any(|p| matches!(p, Problem::ChainBroken { .. } | Problem::Missing { .. })),
            "{:?}",
            report.problems
        );
        let text = lines(&report);
        assert!(
            text.iter().any(|line| line.starts_with(
                "DIGEST    _warden/digests/t-0/2026-11-23T11.json: sealed entry 5 as the head"
            )),
            "{text:?}"
        );
    }

    #[tokio::test]
    async fn tail_truncation_with_the_newest_digests_is_an_unsealed_hour() {
        let (store, public) = sealed_archive().await;
        // The newest entries, their objects, and the digest (and signature) that sealed them.
        for seq in [4, 5] {
            store.delete(&entry_key("t", 0, seq)).await.expect("delete");
        }
        for object in ["p0-o3", "p0-o4"] {
            let key = format!("events/dt=2026-11-23/hour=10/{object}.parquet");
            store.delete(&Path::from(key)).await.expect("delete");
        }
        store
            .delete(&Path::from("_warden/digests/t-0/2026-11-23T11.json"))
            .await
            .expect("delete");
        store
            .delete(&Path::from(
                "_warden/digest-signatures/t-0/2026-11-23T11.sig",
            ))
            .await
            .expect("delete");
        let report = verify(&store, &options(Some(&public)))
            .await
            .expect("verify");
        assert_eq!(
            lines(&report),
            [
                "UNSEALED  t-0: no digest for the closed hours 2026-11-23T11 to 2026-11-23T11 UTC \
              (digests were removed, or no archiver sealed them)"
            ]
        );
        // Within the grace period the same cut is only a note (the hour may not be sealed yet).
        let early = VerifyOptions {
            now: at("2026-11-23T12:10:00Z"),
            ..options(Some(&public))
        };
        assert!(verify(&store, &early).await.expect("verify").is_clean());
    }

    #[tokio::test]
    async fn a_deleted_chain_is_named_from_the_others_digests() {
        let (store, public) = sealed_archive().await;
        delete_prefix(&store, "_warden/manifest/t-1").await;
        delete_prefix(&store, "_warden/digests/t-1").await;
        delete_prefix(&store, "_warden/digest-signatures/t-1").await;
        for object in ["p1-o0", "p1-o1"] {
            let key = format!("events/dt=2026-11-23/hour=10/{object}.parquet");
            store.delete(&Path::from(key)).await.expect("delete");
        }
        let report = verify(&store, &options(Some(&public)))
            .await
            .expect("verify");
        assert_eq!(
            lines(&report),
            [
                "NOCHAIN   t-1: listed by _warden/digests/t-0/2026-11-23T10.json, but the archive \
              has no such chain (it was removed)"
            ]
        );
    }

    #[tokio::test]
    async fn a_partition_with_no_entry_is_a_sealed_chain_and_its_removal_is_named() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let (signer, public) = archiver_key();
        // Partition 2 never had a record; its archiver first read it at 10:05.
        let mut empty = Sealer::new(store.clone(), Some(signer.clone()));
        for now in ["2026-11-23T10:05:00Z", "2026-11-23T12:30:00Z"] {
            empty
                .seal_closed_hours("t-2", at(now))
                .await
                .expect("sealed");
        }
        record_and_seal(&store, 0, &HOURS_10_AND_11, Some(signer)).await;
        let report = verify(&store, &options(Some(&public)))
            .await
            .expect("verify");
        assert!(report.is_clean(), "{:?}", report.problems);
        assert_eq!(report.num_digests, 4, "hours 10 and 11 of both chains");

        delete_prefix(&store, "_warden/digests/t-2").await;
        delete_prefix(&store, "_warden/digest-signatures/t-2").await;
        let report = verify(&store, &options(Some(&public)))
            .await
            .expect("verify");
        assert_eq!(
            lines(&report),
            [
                "NOCHAIN   t-2: listed by _warden/digests/t-0/2026-11-23T10.json, but the archive \
              has no such chain (it was removed)"
            ]
        );
    }

    #[tokio::test]
    async fn a_chain_rewritten_with_recomputed_digests_fails_their_signatures() {
        let (store, public) = sealed_archive().await;
        // Someone with bucket access rewrites chain t-0 from scratch: new objects, entries
        // and digests, all hashes recomputed; without the signing key, or with their own.
        delete_prefix(&store, "_warden/manifest/t-0").await;
        delete_prefix(&store, "_warden/digests/t-0").await;
        delete_prefix(&store, "events/dt=2026-11-23/hour=10/p0").await;
        for object in 0..5 {
            let key = format!("events/dt=2026-11-23/hour=10/p0-o{object}.parquet");
            let _ = store.delete(&Path::from(key)).await;
        }
        let rewritten = [
            "2026-11-23T10:11:00Z",
            "2026-11-23T10:12:00Z",
            "2026-11-23T11:11:00Z",
        ];
        record_and_seal(&store, 0, &rewritten, None).await;
        let report = verify(&store, &options(Some(&public)))
            .await
            .expect("verify");
        let text = lines(&report);
        assert_eq!(text.len(), 2, "{text:?}");
        assert!(
            text.iter()
                .all(|line| line.starts_with("SIGNATURE _warden/digests/t-0/")),
            "{text:?}"
        );

        let (attacker, _) = new_key_pair([13; 32]);
        delete_prefix(&store, "_warden/digest-signatures/t-0").await;
        delete_prefix(&store, "_warden/digests/t-0").await;
        let mut resealer = Sealer::new(
            store.clone(),
            Some(DigestSigner::from_base64_seed(&attacker).expect("seed")),
        );
        resealer
            .seal_closed_hours("t-0", at("2026-11-23T12:30:00Z"))
            .await
            .expect("sealed");
        let report = verify(&store, &options(Some(&public)))
            .await
            .expect("verify");
        let text = lines(&report);
        assert!(
            !text.is_empty()
                && text
                    .iter()
                    .all(|line| line.contains("not in [archive].verify_keys")),
            "{text:?}"
        );
        // Without verify keys nothing can tell, and verify says so.
        let unchecked = verify(&store, &options(None)).await.expect("verify");
        assert!(unchecked.is_clean(), "{:?}", unchecked.problems);
        assert!(
            unchecked
                .notes
                .iter()
                .any(|note| note.contains("verify_keys"))
        );
    }

    #[test]
    fn hours_come_from_the_partition_directories() {
        let hour = hour_of("events/dt=2026-11-23/hour=07/x.parquet").expect("hour");
        assert_eq!(hour.to_rfc3339(), "2026-11-23T07:00:00+00:00");
        assert_eq!(hour_of("events/other.parquet"), None);
    }
}
