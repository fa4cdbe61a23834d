//! Tamper evidence against a writer with bucket access, through the real `warden verify`:
//! an archive sealed and signed as the archivers do (two chains, hours that closed well
//! before now) passes; cutting a chain's tail together with its newest digests, deleting a
//! whole chain, and rewriting a chain with recomputed but unsigned digests each fail with
//! exit 1 and are named.

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use object_store::ObjectStore;
use object_store::ObjectStoreExt;
use object_store::local::LocalFileSystem;
use sha2::{Digest, Sha256};
use warden_sinks::archive::digest::Sealer;
use warden_sinks::archive::manifest::{Manifest, ManifestEntry};
use warden_sinks::archive::signing::{DigestSigner, new_key_pair};

use crate::support::{run_warden, write_config};

const TOPIC: &str = "warden.events";

/// A key pair made for this run: (signer, public key).
fn archiver_key() -> (DigestSigner, String) {
    let seed: [u8; 32] = Sha256::digest(uuid::Uuid::new_v4().as_bytes()).into();
    let (seed, public) = new_key_pair(seed);
    (DigestSigner::from_base64_seed(&seed).expect("seed"), public)
}

/// Records objects written at `times` in partition `partition`'s chain and seals every hour
/// closed by now, signing with `signer` (none: the way someone without the key would).
async fn record_and_seal(
    store: &Arc<dyn ObjectStore>,
    partition: i32,
    times: &[DateTime<Utc>],
    signer: Option<DigestSigner>,
) {
    let chain = format!("{TOPIC}-{partition}");
    let mut manifest = Manifest::new(store.clone());
    let mut sealer = Sealer::new(store.clone(), signer);
    for (index, written_at) in times.iter().enumerate() {
        let object = format!(
            "events/dt={}/hour={}/p{partition}-{index}-{}.parquet",
            written_at.format("%Y-%m-%d"),
            written_at.format("%H"),
            written_at.timestamp()
        );
        let bytes = format!("rows of {object}");
        store
            .put(
                &object_store::path::Path::from(object.as_str()),
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
                topic: TOPIC.to_owned(),
                partition,
                first_offset: index as i64,
                last_offset: index as i64,
                written_at: *written_at,
            })
            .await
            .expect("recorded")
            .expect("new");
        sealer.note(&chain, link);
    }
    sealer
        .seal_closed_hours(&chain, Utc::now())
        .await
        .expect("sealed");
}

/// Objects three and two hours ago, in both chains.
fn times() -> Vec<DateTime<Utc>> {
    let hour = Utc::now()
        .duration_trunc(TimeDelta::hours(1))
        .expect("hour");
    vec![
        hour - TimeDelta::minutes(175),
        hour - TimeDelta::minutes(170),
        hour - TimeDelta::minutes(110),
        hour - TimeDelta::minutes(100),
    ]
}

/// A signed archive in `dir/archive` and a config whose verify key is the archivers'.
async fn signed_archive(dir: &Path) -> (std::path::PathBuf, Arc<dyn ObjectStore>) {
    let archive = dir.join("archive");
    std::fs::create_dir_all(&archive).expect("archive dir");
    let store: Arc<dyn ObjectStore> =
        Arc::new(LocalFileSystem::new_with_prefix(&archive).expect("local store"));
    let (signer, public) = archiver_key();
    record_and_seal(&store, 1, &times(), Some(signer.clone())).await;
    record_and_seal(&store, 0, &times(), Some(signer)).await;
    let config = write_config(
        dir,
        &format!(
            r#"
            [archive]
            url = "{}"
            verify_keys = ["{public}"]
            "#,
            archive.display()
        ),
    );
    (config, store)
}

/// Removes a chain's manifest entries, digests and signatures.
fn remove_chain_state(archive: &Path, chain: &str) {
    for state in ["manifest", "digests", "digest-signatures"] {
        std::fs::remove_dir_all(archive.join(format!("_warden/{state}/{chain}"))).expect("removed");
    }
}

/// The hour directory of `time` in the events table.
fn hour_dir(archive: &Path, time: DateTime<Utc>) -> std::path::PathBuf {
    archive.join(format!(
        "events/dt={}/hour={}",
        time.format("%Y-%m-%d"),
        time.format("%H")
    ))
}

/// Removes the objects of partition `partition` from the hour directories of `times`.
fn remove_objects(archive: &Path, times: &[DateTime<Utc>], partition: i32) {
    let marker = format!("/p{partition}-");
    for time in times {
        for entry in std::fs::read_dir(hour_dir(archive, *time)).expect("hour dir") {
            let path = entry.expect("entry").path();
            if path.to_string_lossy().contains(&marker) {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// Runs `warden verify`; asserts it failed with exit 1 and printed a line starting `expected`.
fn assert_named(config: &Path, expected: &str) {
    let (clean, output) = run_warden(&["verify"], config, &[]);
    assert!(!clean, "verify passed a tampered archive:\n{output}");
    assert!(
        output.lines().any(|line| line.starts_with(expected)),
        "no line starting {expected:?}:\n{output}"
    );
}

#[tokio::test]
async fn a_signed_archive_passes_and_each_kind_of_tampering_is_named() {
    let untouched = tempfile::tempdir().expect("dir");
    let (config, _) = signed_archive(untouched.path()).await;
    let (clean, output) = run_warden(&["verify"], &config, &[]);
    assert!(clean, "verify fails on an untouched archive:\n{output}");

    // Tail truncation: the newest entries, their objects and the newest digests removed.
    let truncated = tempfile::tempdir().expect("dir");
    let (config, _) = signed_archive(truncated.path()).await;
    let archive = truncated.path().join("archive");
    let chain = format!("{TOPIC}-0");
    let newest_hour = times()[2]
        .duration_trunc(TimeDelta::hours(1))
        .expect("hour");
    let hour_name = newest_hour.format("%Y-%m-%dT%H").to_string();
    for seq in [3u64, 4] {
        std::fs::remove_file(archive.join(format!("_warden/manifest/{chain}/{seq:020}.json")))
            .expect("entry removed");
    }
    remove_objects(&archive, &[newest_hour], 0);
    for newer in std::fs::read_dir(archive.join(format!("_warden/digests/{chain}"))).expect("ls") {
        let path = newer.expect("entry").path();
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        if name.as_str() >= hour_name.as_str() {
            std::fs::remove_file(&path).expect("digest removed");
            let signature = archive.join(format!(
                "_warden/digest-signatures/{chain}/{}.sig",
                name.trim_end_matches(".json")
            ));
            std::fs::remove_file(signature).expect("signature removed");
        }
    }
    assert_named(
        &config,
        &format!("UNSEALED  {chain}: no digest for the closed hours"),
    );

    // A whole chain removed: its entries, digests, signatures and objects.
    let deleted = tempfile::tempdir().expect("dir");
    let (config, _) = signed_archive(deleted.path()).await;
    let archive = deleted.path().join("archive");
    let chain = format!("{TOPIC}-1");
    remove_chain_state(&archive, &chain);
    remove_objects(&archive, &times(), 1);
    assert_named(&config, &format!("NOCHAIN   {chain}: listed by"));

    // A chain rewritten from scratch with recomputed hashes and digests, but no signing key.
    let rewritten = tempfile::tempdir().expect("dir");
    let (config, store) = signed_archive(rewritten.path()).await;
    let archive = rewritten.path().join("archive");
    let chain = format!("{TOPIC}-0");
    remove_chain_state(&archive, &chain);
    // The originals' objects would be unlisted now: the forger removes them too.
    remove_objects(&archive, &times(), 0);
    let forged: Vec<DateTime<Utc>> = times()
        .into_iter()
        .map(|time| time + TimeDelta::minutes(1))
        .collect();
    record_and_seal(&store, 0, &forged, None).await;
    assert_named(&config, &format!("SIGNATURE _warden/digests/{chain}/"));
}
