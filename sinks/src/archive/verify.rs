//! `warden verify`: checks the archive against its manifest chains.
//!
//! Every chain must be whole (entries numbered from 1 without gaps, each carrying the SHA-256
//! of the one before); every object an entry names must exist with the recorded SHA-256; and
//! every Parquet object of a table must be named by some entry. Anything else is reported by
//! name: a missing, altered or unlisted object, or a break in a chain.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use sha2::{Digest, Sha256};
use warden_ingest::layout::EVENTS_TABLE;

use super::ArchiveError;
use super::manifest::{ManifestEntry, STATE_DIR};

/// Tables whose objects the manifest covers.
const TABLES: &[&str] = &[EVENTS_TABLE];

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
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks every chain, and every object of an hour at or after `since` (all when `None`).
pub async fn verify(
    store: &Arc<dyn ObjectStore>,
    since: Option<DateTime<Utc>>,
) -> Result<VerifyReport, ArchiveError> {
    let mut report = VerifyReport::default();
    let latest = check_chains(store.as_ref(), &mut report).await?;

    let in_range = |key: &str| match (since, hour_of(key)) {
        (Some(since), Some(hour)) => hour + chrono::Duration::hours(1) > since,
        _ => true,
    };
    for (object, entry) in &latest {
        if !in_range(object) {
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
    for table in TABLES {
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

/// Walks every chain; returns the latest entry of each object they name.
async fn check_chains(
    store: &dyn ObjectStore,
    report: &mut VerifyReport,
) -> Result<BTreeMap<String, ManifestEntry>, ArchiveError> {
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
    for (_, mut keys) in chains {
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
            latest.insert(entry.object.clone(), entry);
        }
    }
    Ok(latest)
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
    use super::*;

    #[test]
    fn hours_come_from_the_partition_directories() {
        let hour = hour_of("events/dt=2026-11-23/hour=07/x.parquet").expect("hour");
        assert_eq!(hour.to_rfc3339(), "2026-11-23T07:00:00+00:00");
        assert_eq!(hour_of("events/other.parquet"), None);
    }
}
