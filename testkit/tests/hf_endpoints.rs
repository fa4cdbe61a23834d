//! The Inference Endpoints API emulator answers as huggingface_hub expects: auth, partial
//! updates that pass through `updating`, pause / resume / scale-to-zero, and errors.

use std::time::Duration;

use serde_json::{Value, json};
use warden_testkit::{EmulatedEndpoint, HfEndpointsEmulator};

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// The JSON answer of an authorised request.
async fn answer(request: reqwest::RequestBuilder) -> Value {
    request
        .bearer_auth("hf_test_token")
        .send()
        .await
        .expect("answer")
        .json()
        .await
        .expect("json")
}

#[tokio::test]
async fn scaling_updates_pass_through_updating_and_pause_resume_behave() {
    let emulator = HfEndpointsEmulator::start(
        "hf_test_token",
        vec![EmulatedEndpoint::running("my-org", "llama-70b-prod", 1, 4)],
        Duration::from_millis(200),
    )
    .await
    .expect("emulator");
    let url = format!("{}/v2/endpoint/my-org/llama-70b-prod", emulator.base_url());
    let client = client();

    let unauthorised = client.get(&url).send().await.expect("answer");
    assert_eq!(unauthorised.status(), 401);
    let missing = client
        .get(format!("{}/v2/endpoint/my-org/nope", emulator.base_url()))
        .bearer_auth("hf_test_token")
        .send()
        .await
        .expect("answer");
    assert_eq!(missing.status(), 404);

    let running: Value = answer(client.get(&url)).await;
    assert_eq!(running["status"]["state"], "running");
    assert_eq!(running["compute"]["scaling"]["maxReplica"], 4);
    assert_eq!(running["status"]["readyReplica"], 4);

    let pin = json!({"compute": {"scaling": {"minReplica": 1, "maxReplica": 1}}});
    let updated: Value = answer(client.put(&url).json(&pin)).await;
    assert_eq!(updated["status"]["state"], "updating");
    assert_eq!(updated["compute"]["scaling"]["minReplica"], 1);
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(
        emulator.endpoint("my-org", "llama-70b-prod"),
        Some((1, 1, "running".to_owned()))
    );

    let bad = client
        .put(&url)
        .bearer_auth("hf_test_token")
        .json(&json!({"compute": {"scaling": {"minReplica": 3, "maxReplica": 2}}}))
        .send()
        .await
        .expect("answer");
    assert_eq!(bad.status(), 400);

    let resume_running = client
        .post(format!("{url}/resume"))
        .bearer_auth("hf_test_token")
        .send()
        .await
        .expect("answer");
    assert_eq!(resume_running.status(), 400);
    assert!(
        resume_running
            .text()
            .await
            .expect("body")
            .contains("already running")
    );
    let paused: Value = answer(client.post(format!("{url}/pause"))).await;
    assert_eq!(paused["status"]["state"], "paused");
    assert_eq!(paused["status"]["readyReplica"], 0);
    let resumed: Value = answer(client.post(format!("{url}/resume"))).await;
    assert_eq!(resumed["status"]["state"], "initializing");
    let requests = emulator.requests();
    assert!(
        requests
            .iter()
            .any(|request| request.method == "PUT" && request.body.as_ref() == Some(&pin)),
        "the partial update is recorded as sent: {requests:?}"
    );
}
