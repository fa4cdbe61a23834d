//! The archive's integrity against a real broker (tansu): an archiver killed with SIGKILL again
//! and again while it works through a backlog still archives every event exactly once, and
//! `warden verify` passes; then tampering with the archive is caught and named.

use crate::support;

use std::path::Path;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use rdkafka::producer::{FutureProducer, FutureRecord};
use warden_ingest::kafka::KafkaCluster;
use warden_ingest::{AuditEvent, EventKind, RequestId};

use support::{
    ArchiveSetup, WardenProcess, archive_setup, archived_event_counts, produce_events, run_python,
    run_warden,
};

/// Events in the backlog, spread over three event hours and two partitions.
const BACKLOG: u64 = 30_000;

async fn produce_backlog(cluster: &KafkaCluster, count: u64) {
    // One record per produce batch: tansu's in-memory storage serves no fetch that starts
    // inside a batch (a consumer resuming there gets the next batch and skips the rest of
    // this one), while real Kafka does. Warden resumes wherever it committed.
    let producer: FutureProducer = cluster
        .producer_config()
        .set("batch.num.messages", "1")
        .create()
        .expect("producer");
    let start = Utc
        .with_ymd_and_hms(2026, 11, 20, 10, 30, 0)
        .single()
        .expect("time");
    let mut deliveries = Vec::new();
    for i in 0..count {
        let mut event = AuditEvent::new(EventKind::Request, RequestId::new(), "proxy-crash");
        // 30,000 events over 3 hours: each batch splits across hour partitions.
        event.ts = start + chrono::Duration::milliseconds(i as i64 * 360);
        event.client.ip = Some(format!("198.51.100.{}", i % 200));
        let payload = event.to_json();
        let key = event.partition_key().to_owned();
        deliveries.push(
            producer
                .send_result(
                    FutureRecord::to("warden.events")
                        .key(&key)
                        .payload(&payload),
                )
                .expect("queued"),
        );
    }
    for delivery in deliveries {
        delivery.await.expect("delivered").expect("acknowledged");
    }
}

fn verify(config: &Path) -> (bool, String) {
    run_warden(&["verify"], config, &[])
}

fn parquet_objects(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("readable").flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// Alters one object, deletes another and slips in a third that was never archived; checks
/// that `warden verify` fails and names each.
fn assert_tampering_is_named(config: &Path, archive: &Path) {
    // Tamper: alter one object, delete another, slip in a third that was never archived.
    let objects = parquet_objects(&archive.join("events"));
    assert!(objects.len() >= 3, "{objects:?}");
    let altered = &objects[0];
    let mut bytes = std::fs::read(altered).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(altered, bytes).expect("alter");
    let deleted = &objects[1];
    std::fs::remove_file(deleted).expect("delete");
    let smuggled = objects[2].with_file_name("smuggled.parquet");
    std::fs::copy(&objects[2], &smuggled).expect("copy");

    let (clean, output) = verify(config);
    assert!(!clean, "verify fails on a tampered archive:\n{output}");
    let name = |path: &Path| {
        path.file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned()
    };
    for (problem, path) in [
        ("ALTERED", altered),
        ("MISSING", deleted),
        ("UNLISTED", &smuggled),
    ] {
        assert!(
            output
                .lines()
                .any(|line| line.starts_with(problem) && line.contains(&name(path))),
            "{problem} {}:\n{output}",
            name(path)
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkilled_archivers_still_archive_every_event_once_and_tampering_is_named() {
    let ArchiveSetup {
        broker: _broker,
        cluster,
        dir,
        archive,
        config,
    } = archive_setup(
        2,
        &format!(
            "flush_interval_s = 0.3\nmax_batch_events = 1500\n{}",
            support::SHORT_KAFKA_SESSIONS
        ),
    )
    .await;
    produce_backlog(&cluster, BACKLOG).await;

    // Crash the archiver mid-work, again and again: between writing objects, recording them
    // and committing, wherever the kill lands.
    for delay_ms in [900, 1300, 700, 1600, 1100, 800, 1400] {
        let mut archiver = WardenProcess::start("archive", &config);
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        archiver.kill();
    }
    let mut archiver = WardenProcess::start("archive", &config);
    let (rows, distinct) = archived_event_counts(&config, BACKLOG).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(archiver.interrupt().await.success(), "{}", archiver.log());
    let (rows_after, _) = archived_event_counts(&config, BACKLOG).await;
    if (rows, distinct, rows_after) != (BACKLOG, BACKLOG, BACKLOG) {
        let kept = dir.keep();
        panic!(
            "every event exactly once: {rows} rows, {distinct} distinct, {rows_after} after \
             stopping; archive kept at {}:\n{}",
            kept.display(),
            archiver.log()
        );
    }
    let readers = run_python("count_archive.py", &[archive.to_str().expect("utf-8")]);
    for reader in ["pyarrow", "duckdb"] {
        assert_eq!(readers[reader]["rows"], BACKLOG, "{readers}");
        assert_eq!(readers[reader]["distinct_event_ids"], BACKLOG, "{readers}");
    }
    let (clean, output) = verify(&config);
    assert!(clean, "verify passes on an untouched archive:\n{output}");
    assert!(output.contains("OK"), "{output}");

    assert_tampering_is_named(&config, &archive);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_manifest_chain_is_named() {
    // Bound, not `..`: the broker and the directory must live to the end of the test.
    let ArchiveSetup {
        broker: _broker,
        cluster,
        dir: _dir,
        archive,
        config,
    } = archive_setup(1, "flush_interval_s = 0.2").await;
    let producer: FutureProducer = cluster.producer_config().create().expect("producer");
    let mut archiver = WardenProcess::start("archive", &config);
    // Three batches, so the chain has three entries.
    for batch in 1..=3u64 {
        let event = AuditEvent::new(EventKind::Request, RequestId::new(), "proxy-chain");
        let payload = event.to_json();
        producer
            .send(
                FutureRecord::<[u8], [u8]>::to("warden.events").payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .expect("produced");
        archived_event_counts(&config, batch).await;
    }
    assert!(archiver.interrupt().await.success());
    let (clean, output) = verify(&config);
    assert!(clean, "{output}");

    // Remove the middle entry of the chain (and its object, to hide the tracks).
    let chain_dir = std::fs::read_dir(archive.join("_warden/manifest"))
        .expect("manifest")
        .flatten()
        .next()
        .expect("one chain")
        .path();
    let second = chain_dir.join(format!("{:020}.json", 2));
    let entry: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&second).expect("entry 2")).expect("json");
    std::fs::remove_file(archive.join(entry["object"].as_str().expect("object"))).expect("rm");
    std::fs::remove_file(&second).expect("rm entry");
    let (clean, output) = verify(&config);
    assert!(!clean, "{output}");
    assert!(
        output
            .lines()
            .any(|line| line.starts_with("CHAIN") && line.contains("00000000000000000003.json")),
        "{output}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_passes_on_an_archive_and_names_every_tampered_object() {
    const EVENTS: u64 = 3_000;
    // Bound, not `..`: the broker and the directory must live to the end of the test.
    let ArchiveSetup {
        broker: _broker,
        cluster,
        dir: _dir,
        archive,
        config,
    } = archive_setup(2, "flush_interval_s = 0.3\nmax_batch_events = 500").await;
    produce_backlog(&cluster, EVENTS).await;
    let mut archiver = WardenProcess::start("archive", &config);
    let (rows, distinct) = archived_event_counts(&config, EVENTS).await;
    assert!(archiver.interrupt().await.success());
    assert_eq!((rows, distinct), (EVENTS, EVENTS), "{}", archiver.log());
    let (clean, output) = verify(&config);
    assert!(clean, "verify passes on an untouched archive:\n{output}");
    assert_tampering_is_named(&config, &archive);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_sent_twice_is_archived_once() {
    // What a spool replay does when Kafka stored an event whose acknowledgement timed out:
    // the same event, a second record, a little later in the same partition.
    let setup = archive_setup(1, "flush_interval_s = 5").await;
    let events: Vec<AuditEvent> = (0..20)
        .map(|_| AuditEvent::new(EventKind::Request, RequestId::new(), "replayed"))
        .collect();
    let resent = events.iter().step_by(4);
    produce_events(&setup.cluster, events.iter().chain(resent)).await;
    let mut archiver = WardenProcess::start("archive", &setup.config);
    let counts = archived_event_counts(&setup.config, 20).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let counts_later = archived_event_counts(&setup.config, 20).await;
    archiver.interrupt().await;
    assert_eq!(counts, (20, 20), "{}", archiver.log());
    assert_eq!(counts_later, (20, 20), "{}", archiver.log());
    assert!(
        archiver.log().contains("duplicates_skipped=5"),
        "{}",
        archiver.log()
    );
}
