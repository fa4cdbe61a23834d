//! The archive in an S3-compatible bucket: a real S3 server (moto's, from PyPI), a real broker
//! (tansu), the real `warden` binary. Events land in the bucket, `warden sql`, pyarrow and
//! DuckDB read them there, and `warden verify` checks the bucket against its manifest.

use crate::support;

use warden_testkit::{EmulatorOptions, TansuBroker, TgiEmulator};

use support::{
    S3_TEST_ENV, S3Server, WardenProcess, archived_event_counts_with_env, assert_readers_count,
    chat_calls, free_listen_address, fresh_client_key, proxy_and_kafka_sections, run_warden,
    write_config,
};

const BUCKET: &str = "warden-audit";
const PREFIX: &str = "prod/eu";

/// Runs `warden verify` against the bucket: (succeeded, output).
fn verify(config: &std::path::Path) -> (bool, String) {
    run_warden(&["verify"], config, &S3_TEST_ENV)
}

#[tokio::test(flavor = "multi_thread")]
async fn events_are_archived_queried_and_verified_in_an_s3_bucket() {
    const CALLS: u64 = 20;
    const EVENTS: u64 = CALLS * 3;
    let s3 = S3Server::start(BUCKET).await;
    let broker = TansuBroker::start().expect("tansu starts");
    let emulator = TgiEmulator::start(EmulatorOptions::default())
        .await
        .expect("emulator starts");
    let dir = tempfile::tempdir().expect("tempdir");
    let listen = free_listen_address();
    let (api_key, key_sha256) = fresh_client_key();
    let config = write_config(
        dir.path(),
        &format!(
            r#"
            {proxy_and_kafka}
            [archive]
            url = "s3://{BUCKET}/{PREFIX}"
            flush_interval_s = 1
            [archive.s3]
            endpoint = "{endpoint}"
            allow_http = true
            "#,
            proxy_and_kafka = proxy_and_kafka_sections(
                &listen,
                &emulator.base_url(),
                &key_sha256,
                &broker.bootstrap_servers(),
            ),
            endpoint = s3.endpoint(),
        ),
    );

    let mut warden = WardenProcess::start_with_env("up", &config, &S3_TEST_ENV);
    warden.wait_healthy(&listen).await;
    chat_calls(&listen, &api_key, CALLS).await;

    let counts = archived_event_counts_with_env(&config, EVENTS, &S3_TEST_ENV).await;
    assert_eq!(counts, (EVENTS, EVENTS), "{}", warden.log());
    warden.interrupt().await;

    // Nothing went to the local disk: the objects are in the bucket, under the prefix.
    assert!(!dir.path().join("warden-data/archive").exists());
    let objects = s3.list(BUCKET, &format!("{PREFIX}/events/")).await;
    assert!(!objects.is_empty());
    assert!(
        objects.iter().all(|key| key.ends_with(".parquet")),
        "{objects:?}"
    );

    let archive = format!("s3://{BUCKET}/{PREFIX}");
    assert_readers_count(&[&archive, s3.endpoint()], &S3_TEST_ENV, EVENTS);

    let (clean, report) = verify(&config);
    assert!(clean, "{report}");
    assert!(report.contains(": OK"), "{report}");

    // Tamper with the bucket: verify names the deleted object and fails.
    let victim = objects[0].clone();
    s3.delete(BUCKET, &victim).await;
    let (clean, report) = verify(&config);
    assert!(!clean, "{report}");
    let relative = victim
        .strip_prefix(&format!("{PREFIX}/"))
        .expect("under prefix");
    assert!(
        report.contains("MISSING") && report.contains(relative),
        "{report}"
    );
}
