//! Retention: `warden archive prune` removes the day partitions older than
//! `[archive].retention_days`.
//!
//! Pruning is an operator's act, dry-run unless applied. Before the first object goes, the
//! cut-off is written to `_warden/retention.json` (it only ever moves forward), so `warden
//! verify` knows that objects of the days before it were removed on purpose, not lost, even if
//! a prune is interrupted half-way. The manifest chains and digests are kept whole: they are
//! small, and they still prove what the archive held. Verify also checks the recorded cut-off
//! against the configured retention: an archive pruned further than the policy allows is
//! reported.

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use serde::{Deserialize, Serialize};

use super::ArchiveError;
use super::manifest::STATE_DIR;

/// What `_warden/retention.json` records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionRecord {
    /// Day partitions before this day have been (or are being) removed.
    pub removed_before: NaiveDate,
    /// The retention in force when they were.
    pub retention_days: u32,
    pub recorded_at: DateTime<Utc>,
}

fn record_key() -> Path {
    Path::from(format!("{STATE_DIR}/retention.json"))
}

/// The retention record, if the archive was ever pruned.
pub async fn read_retention(
    store: &dyn ObjectStore,
) -> Result<Option<RetentionRecord>, ArchiveError> {
    match store.get(&record_key()).await {
        Ok(found) => {
            let bytes = found.bytes().await?;
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|err| ArchiveError::Location {
                    location: record_key().to_string(),
                    message: format!("unreadable retention record: {err}"),
                })
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(err) => Err(err.into()),
    }
}

/// The first day `retention_days` keeps on `today`.
pub fn first_kept_day(today: NaiveDate, retention_days: u32) -> NaiveDate {
    today - TimeDelta::days(i64::from(retention_days))
}

/// One day partition of one table past retention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiredPartition {
    /// `events/dt=YYYY-MM-DD`.
    pub prefix: String,
    pub num_objects: usize,
    pub bytes: u64,
}

/// What a prune removes (or, dry, would remove).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrunePlan {
    pub retention_days: u32,
    /// Day partitions before this day are past retention.
    pub removed_before: NaiveDate,
    pub expired: Vec<ExpiredPartition>,
}

/// Finds the day partitions of `tables` older than `retention_days` on `today`.
pub async fn plan_prune(
    store: &Arc<dyn ObjectStore>,
    tables: &[&str],
    retention_days: u32,
    today: NaiveDate,
) -> Result<PrunePlan, ArchiveError> {
    let removed_before = first_kept_day(today, retention_days);
    let mut expired = Vec::new();
    for table in tables {
        let days = store
            .list_with_delimiter(Some(&Path::from(*table)))
            .await?
            .common_prefixes;
        for day in days {
            let Some(date) = day
                .filename()
                .and_then(|name| name.strip_prefix("dt="))
                .and_then(|date| NaiveDate::parse_from_str(date, "%Y-%m-%d").ok())
            else {
                continue;
            };
            if date >= removed_before {
                continue;
            }
            let (num_objects, bytes) = store
                .list(Some(&day))
                .try_fold((0, 0), |(count, bytes), meta| async move {
                    Ok((count + 1, bytes + meta.size))
                })
                .await?;
            expired.push(ExpiredPartition {
                prefix: day.to_string(),
                num_objects,
                bytes,
            });
        }
    }
    expired.sort_by(|a, b| a.prefix.cmp(&b.prefix));
    Ok(PrunePlan {
        retention_days,
        removed_before,
        expired,
    })
}

/// Records the cut-off, then deletes every object of the plan's partitions. Returns how many
/// objects it deleted.
pub async fn apply_prune(
    store: &Arc<dyn ObjectStore>,
    plan: &PrunePlan,
) -> Result<usize, ArchiveError> {
    if plan.expired.is_empty() {
        return Ok(0);
    }
    let previous = read_retention(store.as_ref()).await?;
    if previous
        .as_ref()
        .is_none_or(|record| record.removed_before < plan.removed_before)
    {
        let record = RetentionRecord {
            removed_before: plan.removed_before,
            retention_days: plan.retention_days,
            recorded_at: Utc::now(),
        };
        let bytes = serde_json::to_vec_pretty(&record).map_err(|err| ArchiveError::Location {
            location: record_key().to_string(),
            message: err.to_string(),
        })?;
        store.put(&record_key(), bytes.into()).await?;
    }
    let mut deleted = 0;
    for partition in &plan.expired {
        let locations = store
            .list(Some(&Path::from(partition.prefix.as_str())))
            .map_ok(|meta| meta.location)
            .boxed();
        deleted += store
            .delete_stream(locations)
            .try_fold(0, |count, _| async move { Ok(count + 1) })
            .await?;
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use object_store::memory::InMemory;

    use super::*;

    fn day(text: &str) -> NaiveDate {
        NaiveDate::parse_from_str(text, "%Y-%m-%d").expect("date")
    }

    #[tokio::test]
    async fn days_past_retention_are_planned_recorded_and_removed() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        for key in [
            "events/dt=2025-10-17/hour=23/a.parquet",
            "events/dt=2025-10-18/hour=00/b.parquet",
            "events/dt=2025-10-18/hour=01/c.parquet",
            "events/dt=2025-10-19/hour=00/d.parquet",
            "events/dt=2026-11-23/hour=10/e.parquet",
            "_warden/manifest/t-0/00000000000000000001.json",
        ] {
            store.put(&Path::from(key), "x".into()).await.expect("put");
        }
        let plan = plan_prune(&store, &["events"], 400, day("2026-11-23"))
            .await
            .expect("plan");
        assert_eq!(plan.removed_before, day("2025-10-19"));
        assert_eq!(
            plan.expired,
            [
                ExpiredPartition {
                    prefix: "events/dt=2025-10-17".to_owned(),
                    num_objects: 1,
                    bytes: 1
                },
                ExpiredPartition {
                    prefix: "events/dt=2025-10-18".to_owned(),
                    num_objects: 2,
                    bytes: 2
                },
            ]
        );
        assert_eq!(apply_prune(&store, &plan).await.expect("prune"), 3);
        let left: Vec<String> = store
            .list(None)
            .map_ok(|meta| meta.location.to_string())
            .try_collect()
            .await
            .expect("list");
        assert!(
            !left
                .iter()
                .any(|key| key.contains("dt=2025-10-17") || key.contains("dt=2025-10-18")),
            "{left:?}"
        );
        assert_eq!(
            left.len(),
            4,
            "d, e, the manifest entry, the retention record: {left:?}"
        );
        let record = read_retention(store.as_ref())
            .await
            .expect("read")
            .expect("recorded");
        assert_eq!(record.removed_before, day("2025-10-19"));

        // A later prune with a longer retention never moves the cut-off back.
        let plan = plan_prune(&store, &["events"], 800, day("2026-11-23"))
            .await
            .expect("plan");
        assert!(plan.expired.is_empty());
        apply_prune(&store, &plan).await.expect("nothing to do");
        let record = read_retention(store.as_ref())
            .await
            .expect("read")
            .expect("kept");
        assert_eq!(record.removed_before, day("2025-10-19"));
    }
}
