//! Retention with the real binary: `warden archive prune` lists, then removes, the day
//! partitions past `[archive].retention_days`; `warden verify` still passes afterwards, and
//! reports an archive pruned further back than the configured retention.

use crate::support;

use std::path::{Path, PathBuf};

use chrono::{DateTime, TimeDelta, Utc};
use warden_ingest::archive_store::S3Options;
use warden_ingest::columnar::events_to_batch;
use warden_ingest::layout::{ArchiveUrl, EVENTS_TABLE, hour_partition};
use warden_ingest::{AuditEvent, EventKind, RequestId};
use warden_sinks::archive::manifest::{Manifest, ManifestEntry};
use warden_sinks::archive::{EncodedObject, ParquetArchive};

use support::{run_warden, sql, write_config};

/// Writes one object of `rows` events at `ts` and records it, as the archiver does.
async fn archive_events(
    archive: &ParquetArchive,
    manifest: &mut Manifest,
    ts: DateTime<Utc>,
    rows: usize,
) {
    let events: Vec<AuditEvent> = (0..rows)
        .map(|_| {
            let mut event = AuditEvent::new(EventKind::Request, RequestId::new(), "retention");
            event.ts = ts;
            event
        })
        .collect();
    let key = format!(
        "{}/warden.events-0-{}.parquet",
        hour_partition(EVENTS_TABLE, ts),
        events[0].event_id
    );
    let object = EncodedObject::encode(events_to_batch(&events).expect("rows"))
        .await
        .expect("encoded");
    archive
        .put(&key.as_str().into(), &object)
        .await
        .expect("put");
    manifest
        .record(ManifestEntry {
            seq: 0,
            prev_sha256: String::new(),
            object: key,
            sha256: hex::encode(object.sha256),
            rows: rows as u64,
            bytes: object.bytes.len() as u64,
            topic: "warden.events".to_owned(),
            partition: 0,
            first_offset: 0,
            last_offset: rows as i64 - 1,
            written_at: Utc::now(),
        })
        .await
        .expect("recorded");
}

fn config(dir: &Path, retention_days: u32) -> PathBuf {
    write_config(
        dir,
        &format!(
            r#"
            [archive]
            url = "{}"
            retention_days = {retention_days}
            "#,
            dir.join("archive").display()
        ),
    )
}

fn warden(args: &[&str], config: &Path) -> (bool, String) {
    run_warden(args, config, &[])
}

fn day_dir(root: &Path, ts: DateTime<Utc>) -> PathBuf {
    root.join(EVENTS_TABLE)
        .join(format!("dt={}", ts.format("%Y-%m-%d")))
}

#[tokio::test(flavor = "multi_thread")]
async fn prune_removes_days_past_retention_and_verify_accounts_for_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("archive");
    let now = Utc::now();
    let ancient = now - TimeDelta::days(500);
    let recent = now - TimeDelta::days(10);
    {
        let archive = ParquetArchive::open(&ArchiveUrl::Local(root.clone()), &S3Options::default())
            .expect("archive");
        let mut manifest = Manifest::new(archive.store().clone());
        archive_events(&archive, &mut manifest, ancient, 5).await;
        archive_events(&archive, &mut manifest, recent, 7).await;
        archive_events(&archive, &mut manifest, now, 3).await;
    }
    let config = config(dir.path(), 400);

    // Dry run: names the old day, removes nothing.
    let (ok, output) = warden(&["archive", "prune"], &config);
    assert!(ok, "{output}");
    let ancient_day = format!("events/dt={}/", ancient.format("%Y-%m-%d"));
    assert!(
        output.contains(&format!("would remove {ancient_day} (1 objects")),
        "{output}"
    );
    assert!(output.contains("dry run, nothing removed"), "{output}");
    assert!(day_dir(&root, ancient).exists());

    // Applied: the day is gone, the rest stays, verify knows why the day's object is missing.
    let (ok, output) = warden(&["archive", "prune", "--apply"], &config);
    assert!(ok, "{output}");
    assert!(output.contains("1 objects removed"), "{output}");
    assert!(!day_dir(&root, ancient).exists());
    assert!(day_dir(&root, recent).exists());
    let rows = sql(&config, "SELECT count(*) AS n FROM events");
    assert_eq!(rows[0]["n"], 10);
    let (ok, output) = warden(&["verify"], &config);
    assert!(ok, "{output}");
    assert!(
        output.contains("removed by retention (400 days"),
        "{output}"
    );

    // Pruned at 5 days, verified against a policy of 400: reported.
    let (ok, output) = warden(
        &["archive", "prune", "--apply"],
        &self::config(dir.path(), 5),
    );
    assert!(ok, "{output}");
    assert!(!day_dir(&root, recent).exists());
    let (ok, output) = warden(&["verify"], &self::config(dir.path(), 400));
    assert!(!ok, "{output}");
    assert!(
        output.contains("RETENTION _warden/retention.json: days before"),
        "{output}"
    );
}
