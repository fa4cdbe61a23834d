//! The Endpoints API client against the emulator (`warden-testkit`): scaling pinned and
//! waited on until it settles, pause and resume (an endpoint already running is fine), and
//! errors that name the endpoint, never the token.

use std::time::Duration;

use warden_sinks::runbooks::hf_api::{HfApi, HfApiConfig, HfApiError};
use warden_testkit::{EmulatedEndpoint, HfEndpointsEmulator};

const TOKEN: &str = "hf_emulated_token_for_tests";

async fn api(emulator: &HfEndpointsEmulator, token: &str) -> HfApi {
    let config = HfApiConfig {
        base_url: emulator.base_url(),
        token: Some("env:HF_API_TOKEN".to_owned()),
        timeout_s: 5,
    };
    let token = token.to_owned();
    let settings = config
        .validate(&move |name| (name == "HF_API_TOKEN").then(|| token.clone()))
        .expect("valid")
        .expect("a token");
    HfApi::new(settings).expect("client")
}

#[tokio::test]
async fn scaling_is_pinned_and_waited_on_and_pause_resume_work() {
    let emulator = HfEndpointsEmulator::start(
        TOKEN,
        vec![EmulatedEndpoint::running("my-org", "llama-70b-prod", 1, 4)],
        Duration::from_millis(300),
    )
    .await
    .expect("emulator");
    let api = api(&emulator, TOKEN).await;
    let endpoint = "my-org/llama-70b-prod";

    let before = api.get(endpoint).await.expect("read");
    assert_eq!(
        (
            before.min_replica,
            before.max_replica,
            before.state.as_str()
        ),
        (1, 4, "running")
    );
    let pinned = api.set_scaling(endpoint, 4, 4).await.expect("pinned");
    assert_eq!(pinned.state, "updating");
    let settled = api
        .wait_settled(endpoint, Duration::from_millis(50), Duration::from_secs(5))
        .await
        .expect("settles");
    assert_eq!(
        (
            settled.min_replica,
            settled.max_replica,
            settled.state.as_str()
        ),
        (4, 4, "running")
    );

    assert_eq!(
        api.resume(endpoint)
            .await
            .expect("already running is fine")
            .state,
        "running"
    );
    assert_eq!(api.pause(endpoint).await.expect("paused").state, "paused");
    assert_eq!(
        api.resume(endpoint).await.expect("resumed").state,
        "initializing"
    );
}

#[tokio::test]
async fn errors_name_the_endpoint_and_never_the_token() {
    let emulator = HfEndpointsEmulator::start(
        TOKEN,
        vec![EmulatedEndpoint::running("my-org", "llama", 1, 2)],
        Duration::from_millis(10),
    )
    .await
    .expect("emulator");
    let wrong = api(&emulator, "hf_wrong_token_value").await;
    let err = wrong.get("my-org/llama").await.expect_err("refused");
    assert!(
        matches!(err, HfApiError::Status { status: 401, .. }),
        "{err}"
    );
    assert!(!err.to_string().contains("hf_wrong_token_value"), "{err}");
    let api = api(&emulator, TOKEN).await;
    let missing = api.get("my-org/other").await.expect_err("missing");
    assert!(missing.to_string().contains("my-org/other"), "{missing}");
    let refused = api
        .set_scaling("my-org/llama", 3, 2)
        .await
        .expect_err("refused");
    assert!(
        matches!(refused, HfApiError::Status { status: 400, .. }),
        "{refused}"
    );
    let malformed = api.get("../../etc").await.expect_err("not namespace/name");
    assert!(
        matches!(malformed, HfApiError::Unexpected(_)),
        "{malformed}"
    );
}
