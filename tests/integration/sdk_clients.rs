//! Real client SDKs against the real `warden up`: the official OpenAI Python SDK on every
//! endpoint for each target kind (`tgi`, `tgi-messages`, `hf-serverless`), and
//! `huggingface_hub`'s `InferenceClient` through HF-native pass-through; then the archive
//! shows every call audited.

use crate::support;

use serde_json::{Value, json};
use warden_testkit::{EmulatorOptions, TgiEmulator};

use support::{
    WardenProcess, free_listen_address, fresh_client_key, run_python, sql_until, write_config,
};

const REPLY: &str = "Hello from the TGI emulator. It answers every prompt the same way.";

#[tokio::test(flavor = "multi_thread")]
async fn openai_and_huggingface_hub_clients_work_through_every_target_kind() {
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
            [proxy]
            listen = "{listen}"
            admin_listen = "127.0.0.1:0"
            [proxy.passthrough]
            prefix = "/hf"
            [[proxy.targets]]
            id = "native"
            kind = "tgi"
            base_url = "{upstream}"
            chat_template = "llama3"
            [[proxy.targets]]
            id = "messages"
            kind = "tgi-messages"
            base_url = "{upstream}"
            [[proxy.targets]]
            id = "serverless"
            kind = "hf-serverless"
            base_url = "{upstream}"
            model = "org/small-model"
            [[proxy.clients]]
            name = "sdk-app"
            key_sha256 = "{key_sha256}"
            [kafka]
            brokers = "embedded"
            [archive]
            url = "{archive}"
            flush_interval_s = 1
            "#,
            upstream = emulator.base_url(),
            archive = dir.path().join("archive").display(),
        ),
    );
    let mut warden = WardenProcess::start("up", &config);
    warden.wait_healthy(&listen).await;

    let models = ["native", "messages", "org/small-model"];
    let base_url = format!("http://{listen}/v1");
    let mut args = vec![base_url.as_str(), api_key.as_str()];
    args.extend(models);
    args.extend(["--embed", "org/small-model"]);
    let openai = run_python("openai_all_kinds.py", &args);
    for model in models {
        let outcome = &openai[model];
        assert_eq!(
            outcome["chat"],
            json!({"content": "Hello from the TGI emulator.", "finish_reason": "length",
                   "completion_tokens": 5, "model": model}),
            "{model}"
        );
        assert_eq!(
            outcome["chat_stream"],
            json!({"text": REPLY, "finish_reason": "stop", "completion_tokens": 12}),
            "{model}"
        );
        assert_eq!(
            outcome["completion"],
            json!({"text": "Hello from the", "finish_reason": "length",
                   "prompt_tokens": 4, "completion_tokens": 3}),
            "{model}"
        );
        assert_eq!(outcome["completion_stream"]["text"], REPLY, "{model}");
        // Checked by Warden for every kind: no upstream ever sees the request.
        assert_eq!(
            outcome["too_many_stops"],
            json!({"status": 400, "code": "invalid_request"}),
            "{model}"
        );
    }
    assert_eq!(
        openai["embeddings"],
        json!({"count": 2, "dimensions": 8, "model": "org/small-model"})
    );
    assert_eq!(
        openai["embeddings_on_tgi"],
        json!({"status": 400, "code": "unsupported"})
    );

    let hf = run_python(
        "hf_passthrough.py",
        &[
            &format!("http://{listen}/hf/native"),
            &format!("http://{listen}/hf/serverless/pipeline/feature-extraction"),
            &api_key,
        ],
    );
    assert_eq!(hf["text"], "Hello from the");
    assert_eq!(
        hf["details"],
        json!({"text": "Hello from", "finish_reason": "length", "generated_tokens": 2})
    );
    assert_eq!(hf["stream"], REPLY);
    assert_eq!(hf["features_shape"], json!([2, 8]));
    assert_eq!(hf["wrong_key"], 401);

    // Every call is in the archive: 5 OpenAI calls per model, 2 embeddings calls, 5
    // pass-through calls.
    let query = "SELECT route.endpoint AS endpoint, count(*) AS calls FROM events \
                 WHERE kind = 'response' GROUP BY route.endpoint ORDER BY endpoint";
    let expected = vec![
        json!({"endpoint": "/hf/", "calls": 4}),
        json!({"endpoint": "/hf/pipeline/feature-extraction", "calls": 1}),
        json!({"endpoint": "/v1/chat/completions", "calls": 6}),
        json!({"endpoint": "/v1/completions", "calls": 9}),
        json!({"endpoint": "/v1/embeddings", "calls": 2}),
    ];
    let total: u64 = expected
        .iter()
        .filter_map(|row| row["calls"].as_u64())
        .sum();
    let mut rows: Vec<Value> = Vec::new();
    for _ in 0..120 {
        rows = sql_until(&config, query, expected.len()).await;
        let archived: u64 = rows.iter().filter_map(|row| row["calls"].as_u64()).sum();
        if archived >= total {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert_eq!(rows, expected, "{}", warden.log());
}
