//! Live control of every replica, against a real broker (tansu): two `warden proxy`
//! processes apply `warden control` actions within 2 s of the command returning, and a
//! revocation holds across a restart while the broker is down; a key given through the control
//! topic is admitted everywhere, then refused once taken back. Under `warden up`, a key
//! near its `not_after` raises one `key_expiry` warning, which the in-process responder
//! delivers.

use crate::support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::Digest;
use warden_testkit::{EmulatorOptions, TansuBroker, TgiEmulator};

use support::{
    WardenProcess, free_listen_address, fresh_client_key, proxy_and_kafka_sections_with,
    run_warden, write_config,
};

/// How soon every replica must apply an action, counted from the command's return.
const WITHIN: Duration = Duration::from_secs(2);

struct Replica {
    listen: String,
    config: PathBuf,
    process: WardenProcess,
}

/// A proxy config of its own (listener, spool, control state file) on the shared broker.
fn replica_config(dir: &Path, listen: &str, upstream: &str, brokers: &str, key: &str) -> PathBuf {
    std::fs::create_dir_all(dir).expect("replica dir");
    write_config(
        dir,
        &format!(
            r#"
            {sections}
            [audit]
            spool_dir = "{spool}"
            "#,
            sections = proxy_and_kafka_sections_with(
                listen,
                &free_listen_address(),
                upstream,
                key,
                brokers,
                &format!(
                    "control_state_file = \"{}\"",
                    dir.join("control-state.json").display()
                ),
            ),
            spool = dir.join("spool").display(),
        ),
    )
}

/// A chat call's status and error code.
async fn call(listen: &str, api_key: &str) -> (u16, Option<String>) {
    support::chat_call(listen, api_key, "llama").await
}

/// Waits (at most `limit`) until a call to `listen` is refused with `code`; returns how long
/// that took.
async fn until_refused(listen: &str, api_key: &str, code: &str, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let (status, got) = call(listen, api_key).await;
        if got.as_deref() == Some(code) {
            assert!(status == 401 || status == 429 || status == 503, "{status}");
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "{listen} still answers {status} {got:?} after {:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn until_served(listen: &str, api_key: &str, limit: Duration) {
    let started = Instant::now();
    while call(listen, api_key).await.0 != 200 {
        assert!(started.elapsed() < limit, "{listen} does not serve again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn control(config: &Path, args: &[&str]) -> String {
    let mut full = vec!["control"];
    full.extend_from_slice(args);
    let (succeeded, output) = run_warden(&full, config, &[]);
    assert!(succeeded, "warden control {args:?}: {output}");
    output
}

#[tokio::test(flavor = "multi_thread")]
async fn operator_actions_reach_every_replica_within_two_seconds_and_survive_a_restart() {
    let mut broker = TansuBroker::start().expect("tansu starts");
    let emulator = TgiEmulator::start(EmulatorOptions::default())
        .await
        .expect("emulator");
    let dir = tempfile::tempdir().expect("tempdir");
    let (api_key, key_sha256) = fresh_client_key();
    let mut replicas = Vec::new();
    for name in ["a", "b"] {
        let listen = free_listen_address();
        let config = replica_config(
            &dir.path().join(name),
            &listen,
            &emulator.base_url(),
            &broker.bootstrap_servers(),
            &key_sha256,
        );
        let mut process = WardenProcess::start("proxy", &config);
        process.wait_healthy(&listen).await;
        replicas.push(Replica {
            listen,
            config,
            process,
        });
    }
    for replica in &replicas {
        until_served(&replica.listen, &api_key, Duration::from_secs(20)).await;
    }
    let config = replicas[0].config.clone();

    // Revocation of the client's keys: refused everywhere within 2 s.
    control(
        &config,
        &[
            "revoke",
            "--client",
            "archive-test-app",
            "--reason",
            "key leaked",
            "--by",
            "alice",
        ],
    );
    for replica in &replicas {
        let took = until_refused(&replica.listen, &api_key, "revoked_api_key", WITHIN * 5).await;
        eprintln!(
            "{}: revocation applied {took:?} after the command",
            replica.listen
        );
        assert!(
            took <= WITHIN,
            "{} applied the revocation after {took:?}",
            replica.listen
        );
    }
    control(
        &config,
        &[
            "restore",
            "--client",
            "archive-test-app",
            "--reason",
            "rotated",
            "--by",
            "alice",
        ],
    );
    for replica in &replicas {
        until_served(&replica.listen, &api_key, WITHIN * 5).await;
    }

    // An emergency limit: 2 requests a minute on each replica.
    control(
        &config,
        &[
            "limit",
            "--subject",
            "client:archive-test-app",
            "--requests-per-minute",
            "2",
            "--for",
            "10m",
            "--reason",
            "runaway",
            "--by",
            "bob",
        ],
    );
    for replica in &replicas {
        let took = until_refused(
            &replica.listen,
            &api_key,
            "emergency_rate_limit",
            WITHIN * 5,
        )
        .await;
        eprintln!(
            "{}: emergency limit applied {took:?} after the command",
            replica.listen
        );
        assert!(
            took <= WITHIN,
            "{} applied the limit after {took:?}",
            replica.listen
        );
    }
    let listed = control(&config, &["list"]);
    assert!(
        listed.contains(
            "emergency_rate_limit client:archive-test-app (2 requests/min) by operator:bob"
        ),
        "{listed}"
    );
    control(
        &config,
        &[
            "lift",
            "--subject",
            "client:archive-test-app",
            "--reason",
            "fixed",
            "--by",
            "bob",
        ],
    );
    for replica in &replicas {
        until_served(&replica.listen, &api_key, WITHIN * 5).await;
    }

    // A key given through the control topic: admitted everywhere within 2 s, refused again
    // once taken back.
    let added = control(
        &config,
        &[
            "add-key",
            "--client",
            "archive-test-app",
            "--not-after",
            "2099-01-01",
            "--reason",
            "rotation",
            "--by",
            "carol",
        ],
    );
    let new_key = added
        .split_whitespace()
        .find(|word| word.starts_with("wk_"))
        .unwrap_or_else(|| panic!("no key printed: {added}"))
        .to_owned();
    for replica in &replicas {
        let started = Instant::now();
        until_served(&replica.listen, &new_key, WITHIN * 5).await;
        let took = started.elapsed();
        eprintln!(
            "{}: added key admitted {took:?} after the command",
            replica.listen
        );
        assert!(
            took <= WITHIN,
            "{} took the key after {took:?}",
            replica.listen
        );
    }
    let new_key_sha256 = hex::encode(sha2::Sha256::digest(new_key.as_bytes()));
    let listed = control(&config, &["list"]);
    assert!(
        listed.contains(&format!(
            "add_key client:archive-test-app key {new_key_sha256}"
        )),
        "{listed}"
    );
    control(
        &config,
        &[
            "remove-key",
            "--client",
            "archive-test-app",
            "--key-sha256",
            &new_key_sha256,
            "--reason",
            "rotation done",
            "--by",
            "carol",
        ],
    );
    for replica in &replicas {
        until_refused(&replica.listen, &new_key, "invalid_api_key", WITHIN * 5).await;
    }
    until_served(&replicas[0].listen, &api_key, WITHIN).await;

    // A revocation holds across a restart while the broker is down.
    control(
        &config,
        &[
            "revoke",
            "--client",
            "archive-test-app",
            "--reason",
            "again",
            "--by",
            "alice",
        ],
    );
    until_refused(&replicas[0].listen, &api_key, "revoked_api_key", WITHIN * 5).await;
    broker.stop();
    let replica = &mut replicas[0];
    replica.process.kill();
    let mut restarted = WardenProcess::start("proxy", &replica.config);
    restarted.wait_healthy(&replica.listen).await;
    let (status, code) = call(&replica.listen, &api_key).await;
    assert_eq!(
        (status, code.as_deref()),
        (401, Some("revoked_api_key")),
        "{}",
        restarted.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_key_is_taken_on_sighup_without_a_restart() {
    let emulator = TgiEmulator::start(EmulatorOptions::default())
        .await
        .expect("emulator");
    let dir = tempfile::tempdir().expect("tempdir");
    let (old_key, old_sha256) = fresh_client_key();
    let (new_key, new_sha256) = fresh_client_key();
    let listen = free_listen_address();
    let config_text = |keys: &str| {
        format!(
            r#"
            [proxy]
            listen = "{listen}"
            admin_listen = "{admin}"
            control_state_file = "{state}"
            [[proxy.targets]]
            id = "llama"
            kind = "tgi-messages"
            base_url = "{upstream}"
            [[proxy.clients]]
            name = "rotating-app"
            keys = [{keys}]
            [audit]
            spool_dir = "{spool}"
            "#,
            admin = free_listen_address(),
            state = dir.path().join("control-state.json").display(),
            upstream = emulator.base_url(),
            spool = dir.path().join("spool").display(),
        )
    };
    let config = write_config(
        dir.path(),
        &config_text(&format!(r#"{{ key_sha256 = "{old_sha256}" }}"#)),
    );
    let mut proxy = WardenProcess::start("proxy", &config);
    proxy.wait_healthy(&listen).await;
    assert_eq!(call(&listen, &old_key).await.0, 200);
    assert_eq!(call(&listen, &new_key).await.0, 401);

    // Rotation with overlap: the new key added, the old one still valid until tomorrow.
    let tomorrow = (chrono::Utc::now() + chrono::TimeDelta::days(1)).format("%Y-%m-%d");
    write_config(
        dir.path(),
        &config_text(&format!(
            r#"{{ key_sha256 = "{old_sha256}", not_after = "{tomorrow}" }}, {{ key_sha256 = "{new_sha256}" }}"#
        )),
    );
    let pid = proxy.pid().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .expect("kill runs");
    assert!(sent.success());
    let started = Instant::now();
    while call(&listen, &new_key).await.0 != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the new key is not taken:\n{}",
            proxy.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        call(&listen, &old_key).await.0,
        200,
        "overlap: the old key still works"
    );

    // A config that does not validate changes nothing.
    write_config(dir.path(), "[proxy]\nlisten = 12\n");
    std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .expect("kill runs");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(call(&listen, &new_key).await.0, 200);
    assert!(
        proxy.log().contains("reloading the clients failed"),
        "{}",
        proxy.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_openai_sdk_meets_limits_headers_and_fallback_through_a_real_broker() {
    let broker = TansuBroker::start().expect("tansu starts");
    let emulator = TgiEmulator::start(EmulatorOptions::default())
        .await
        .expect("emulator");
    let dir = tempfile::tempdir().expect("tempdir");
    let listen = free_listen_address();
    let (api_key, key_sha256) = fresh_client_key();
    let config = write_config(
        dir.path(),
        &format!(
            r#"
            [proxy]
            listen = "{listen}"
            admin_listen = "{admin}"
            control_state_file = "{state}"
            [[proxy.targets]]
            id = "llama"
            kind = "tgi-messages"
            base_url = "{upstream}"
            [[proxy.targets]]
            id = "dead"
            kind = "tgi-messages"
            base_url = "http://127.0.0.1:9"
            cold_start_timeout_s = 0
            fallback = ["llama"]
            [[proxy.clients]]
            name = "sdk-app"
            key_sha256 = "{key_sha256}"
            [[proxy.rate_limits]]
            subject = "client"
            match = "sdk-app"
            requests_per_minute = 4
            tokens_per_minute = 100000
            [kafka]
            brokers = "{brokers}"
            partitions = 2
            replication_factor = 1
            [audit]
            spool_dir = "{spool}"
            "#,
            admin = free_listen_address(),
            state = dir.path().join("control-state.json").display(),
            upstream = emulator.base_url(),
            brokers = broker.bootstrap_servers(),
            spool = dir.path().join("spool").display(),
        ),
    );
    let mut proxy = WardenProcess::start("proxy", &config);
    proxy.wait_healthy(&listen).await;
    let base_url = format!("http://{listen}/v1");
    let outcome = support::run_python("openai_limits.py", &[&base_url, &api_key, "llama", "dead"]);
    assert_eq!(
        outcome["fallback"]["content"], "Hello from the TGI emulator. It answers every",
        "{outcome}"
    );
    assert!(
        outcome["fallback"]["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("chatcmpl-")),
        "{outcome}"
    );
    // The fallback call took one of the four; the plain and the streamed call two more.
    assert_eq!(outcome["admitted"][0]["x-ratelimit-limit-requests"], "4");
    assert_eq!(
        outcome["admitted"][0]["x-ratelimit-remaining-requests"],
        "2"
    );
    assert_eq!(
        outcome["admitted"][1]["x-ratelimit-remaining-requests"],
        "1"
    );
    assert_eq!(outcome["admitted"][0]["x-ratelimit-limit-tokens"], "100000");
    let refused = &outcome["refused"];
    assert_eq!(refused["status"], 429, "{outcome}");
    assert_eq!(refused["code"], "rate_limit_exceeded");
    assert_eq!(refused["type"], "rate_limit_error");
    assert_eq!(refused["remaining"], "0");
    let retry_after: u64 = refused["retry_after"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("Retry-After in whole seconds");
    assert!((1..=15).contains(&retry_after), "{retry_after}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_near_its_not_after_raises_one_key_expiry_warning() {
    let emulator = TgiEmulator::start(EmulatorOptions::default())
        .await
        .expect("emulator");
    let dir = tempfile::tempdir().expect("tempdir");
    let listen = free_listen_address();
    let (api_key, key_sha256) = fresh_client_key();
    let soon = (chrono::Utc::now() + chrono::TimeDelta::days(10)).format("%Y-%m-%d");
    let config = write_config(
        dir.path(),
        &format!(
            r#"
            [proxy]
            listen = "{listen}"
            admin_listen = "{admin}"
            control_state_file = "{state}"
            [[proxy.targets]]
            id = "llama"
            kind = "tgi-messages"
            base_url = "{upstream}"
            [[proxy.clients]]
            name = "expiring-app"
            keys = [{{ key_sha256 = "{key_sha256}", not_after = "{soon}" }}]
            [audit]
            spool_dir = "{spool}"
            [archive]
            url = "{archive}"
            flush_interval_s = 1
            [respond]
            group_wait_s = 1
            default_receivers = ["findings"]
            [[respond.receivers]]
            name = "findings"
            kind = "ocsf"
            url = "file://{findings}"
            "#,
            findings = dir.path().join("findings.jsonl").display(),
            admin = free_listen_address(),
            state = dir.path().join("control-state.json").display(),
            upstream = emulator.base_url(),
            spool = dir.path().join("spool").display(),
            archive = dir.path().join("archive").display(),
        ),
    );
    let mut warden = WardenProcess::start("up", &config);
    warden.wait_healthy(&listen).await;
    assert_eq!(call(&listen, &api_key).await.0, 200);
    let started = Instant::now();
    while !warden.log().contains("detector=\"key_expiry\"") {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no key_expiry alert:\n{}",
            warden.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Once per key: further evaluations do not repeat it.
    for _ in 0..3 {
        call(&listen, &api_key).await;
    }
    tokio::time::sleep(Duration::from_secs(12)).await;
    let log = warden.log();
    assert_eq!(log.matches("detector=\"key_expiry\"").count(), 1, "{log}");
    assert!(log.contains("client:expiring-app"), "{log}");
    // The responder inside `warden up` told the configured receiver, once.
    let findings = std::fs::read_to_string(dir.path().join("findings.jsonl")).unwrap_or_default();
    let findings: Vec<Value> = findings
        .lines()
        .map(|line| serde_json::from_str(line).expect("a finding"))
        .collect();
    assert_eq!(findings.len(), 1, "{findings:?}\n{log}");
    assert_eq!(
        findings[0]["finding_info"]["analytic"]["name"],
        "key_expiry"
    );
}
