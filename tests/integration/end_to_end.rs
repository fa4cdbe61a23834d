//! End to end: the real `warden` binary, a real Kafka-protocol broker (tansu), the official
//! OpenAI Python SDK as the client, the TGI emulator upstream, and independent readers
//! (pyarrow, DuckDB) of the Parquet archive.

use crate::support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use warden_ingest::kafka::{KafkaCluster, KafkaConfig, TopicConsumer};
use warden_ingest::{AuditEvent, EventKind};
use warden_testkit::{EmulatorOptions, TansuBroker, TgiEmulator};

use support::{
    WardenProcess, free_listen_address, fresh_client_key, run_python, sql_until, write_config,
};

#[tokio::test(flavor = "multi_thread")]
async fn openai_sdk_chat_lands_in_kafka_and_in_the_parquet_archive() {
    let broker = TansuBroker::start().expect("tansu starts");
    let emulator = TgiEmulator::start(EmulatorOptions::default())
        .await
        .expect("emulator starts");
    let dir = tempfile::tempdir().expect("tempdir");
    let listen = free_listen_address();
    let archive = dir.path().join("archive");
    let (api_key, key_sha256) = fresh_client_key();
    let config = write_config(
        dir.path(),
        &format!(
            r#"
            [proxy]
            listen = "{listen}"
            admin_listen = "127.0.0.1:0"
            environment = "test"
            [[proxy.targets]]
            id = "llama-8b"
            kind = "tgi-messages"
            base_url = "{upstream}"
            model = "meta-llama/Meta-Llama-3.1-8B-Instruct"
            [[proxy.clients]]
            name = "e2e-app"
            key_sha256 = "{key_sha256}"
            [kafka]
            brokers = "{brokers}"
            partitions = 2
            replication_factor = 1
            [archive]
            url = "{archive}"
            flush_interval_s = 1
            "#,
            upstream = emulator.base_url(),
            brokers = broker.bootstrap_servers(),
            archive = archive.display(),
        ),
    );

    let mut warden = WardenProcess::start("up", &config);
    warden.wait_healthy(&listen).await;

    // 1. A real application call through the OpenAI SDK.
    let chat = run_python(
        "openai_chat.py",
        &[
            &format!("http://{listen}/v1"),
            &api_key,
            "meta-llama/Meta-Llama-3.1-8B-Instruct",
        ],
    );
    assert_eq!(
        chat["content"],
        "Hello from the TGI emulator. It answers every prompt the same way."
    );
    assert_eq!(chat["finish_reason"], "stop");
    assert_eq!(chat["model"], "meta-llama/Meta-Llama-3.1-8B-Instruct");
    assert_eq!(chat["prompt_tokens"], 6);
    assert_eq!(chat["completion_tokens"], 12);
    assert_eq!(
        chat["wrong_key"],
        json!({"status": 401, "code": "invalid_api_key"})
    );
    assert_eq!(
        chat["unknown_model"],
        json!({"status": 404, "code": "model_not_found"})
    );
    let request_id = chat["request_id"]
        .as_str()
        .expect("x-request-id")
        .to_owned();

    // The upstream got TGI's model name and none of the client's credentials.
    let upstream_calls = emulator.requests();
    assert_eq!(
        upstream_calls.len(),
        2,
        "only the authorized calls go upstream"
    );
    assert_eq!(upstream_calls[0].body["model"], "tgi");
    assert_eq!(upstream_calls[0].authorization, None);

    // 2. The call's events are in Kafka, keyed and complete.
    let events = read_events_of(&broker, &request_id).await;
    let kinds: Vec<EventKind> = events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        vec![
            EventKind::PolicyDecision,
            EventKind::Request,
            EventKind::Response
        ],
        "{events:#?}"
    );
    let response = events[2].response.as_ref().expect("response part");
    assert_eq!(response.status, 200);
    assert_eq!(response.output_tokens, Some(12));
    assert_eq!(response.finish_reason.as_deref(), Some("stop"));
    assert!(response.latency_ms.is_some_and(|ms| ms > 0.0));
    let request = events[2].request.as_ref().expect("request part");
    assert_eq!(request.input_tokens, Some(6));
    assert_eq!(request.prompt_hash.as_ref().map(String::len), Some(64));
    for event in &events {
        assert_eq!(event.client.name.as_deref(), Some("e2e-app"));
        assert_eq!(event.environment.as_deref(), Some("test"));
        let token_id = event.client.token_id.as_ref().expect("token id");
        assert!(
            !token_id.0.contains(&api_key),
            "the key never appears in events"
        );
    }

    // 3. The archive has them, as `warden sql` sees it...
    let query = format!(
        "SELECT kind, response.status AS status, route.target_id AS target, dt, hour \
         FROM events WHERE request_id = '{request_id}' ORDER BY kind"
    );
    let rows = sql_until(&config, &query, 3).await;
    assert_eq!(rows.len(), 3, "{rows:?}\n{}", warden.log());
    let by_kind: BTreeMap<&str, &Value> = rows
        .iter()
        .map(|row| (row["kind"].as_str().expect("kind"), row))
        .collect();
    assert_eq!(by_kind["response"]["status"], 200);
    assert_eq!(by_kind["request"]["target"], "llama-8b");
    let ts = events[2].ts;
    assert_eq!(by_kind["response"]["dt"], ts.format("%Y-%m-%d").to_string());
    assert_eq!(by_kind["response"]["hour"], ts.format("%H").to_string());

    // ...and as independent readers see it.
    let readers = run_python(
        "read_archive.py",
        &[archive.to_str().expect("utf-8 path"), &request_id],
    );
    for reader in ["pyarrow", "duckdb"] {
        let kinds: Vec<&str> = readers[reader]
            .as_array()
            .expect("rows")
            .iter()
            .map(|row| row["kind"].as_str().expect("kind"))
            .collect();
        assert_eq!(
            kinds,
            ["policy_decision", "request", "response"],
            "{reader}: {readers}"
        );
        assert_eq!(readers[reader][2]["status"], 200, "{reader}: {readers}");
    }

    // The rejected call is audited too: a 401 with a deny decision, fingerprinted.
    let denied = sql_until(
        &config,
        "SELECT request_id FROM events WHERE kind = 'response' AND response.status = 401",
        1,
    )
    .await;
    assert_eq!(denied.len(), 1, "{denied:?}");

    // 4. Ctrl-C stops it cleanly.
    let status = warden.interrupt().await;
    assert!(status.success(), "exit {status}:\n{}", warden.log());
}

/// Reads `warden.events` from the start with a fresh consumer group until the three events
/// of `request_id` are there.
async fn read_events_of(broker: &TansuBroker, request_id: &str) -> Vec<AuditEvent> {
    let config = KafkaConfig {
        brokers: broker.bootstrap_servers(),
        replication_factor: 1,
        ..KafkaConfig::default()
    };
    let cluster = KafkaCluster::new(&config, None);
    cluster.ensure_topics().await.expect("topics");
    let group = format!("e2e-reader-{}", uuid::Uuid::new_v4());
    let consumer =
        TopicConsumer::subscribe(&cluster, &group, &["warden.events"]).expect("subscribe");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut found = Vec::new();
    while found.len() < 3 && Instant::now() < deadline {
        let Ok(Ok(record)) = tokio::time::timeout(Duration::from_secs(5), consumer.recv()).await
        else {
            continue;
        };
        let event = AuditEvent::from_json(&record.payload).expect("valid event");
        if event.request_id.as_str() == request_id {
            let key = record.key.as_deref().map(String::from_utf8_lossy);
            let token_id = event.client.token_id.as_ref().map(|t| t.0.as_str());
            assert_eq!(key.as_deref(), token_id, "events are keyed by token id");
            found.push(event);
        }
    }
    found.sort_by_key(|event| match event.kind {
        EventKind::PolicyDecision => 0,
        EventKind::Request => 1,
        _ => 2,
    });
    found
}
