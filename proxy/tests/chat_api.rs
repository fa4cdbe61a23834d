//! The chat endpoint in-process (`router().oneshot()`), against the TGI emulator: what the
//! client gets back, what goes upstream, and the audit events each outcome leaves.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tower::ServiceExt;
use warden_ingest::{AuditEvent, EventKind, EventReceiver, OnSpoolFull, event_channel};
use warden_proxy::{ProxyConfig, ProxyState, REQUEST_ID_HEADER, admin_router, router};
use warden_testkit::{EmulatorOptions, TgiEmulator};

use warden_testkit::trail::{ONE_CALL_TRAIL, client_key, drain, kinds, response_of, sse_data};

struct Harness {
    app: axum::Router,
    /// The admin listener's routes (`/metrics`).
    admin: axum::Router,
    events: EventReceiver,
    emulator: Option<TgiEmulator>,
    key: String,
}

async fn harness_with_upstream(upstream: Option<String>) -> Harness {
    harness_with(upstream, EmulatorOptions::default()).await
}

async fn harness_with(upstream: Option<String>, options: EmulatorOptions) -> Harness {
    let emulator = match upstream {
        Some(_) => None,
        None => Some(TgiEmulator::start(options).await.expect("emulator")),
    };
    let base_url = upstream.unwrap_or_else(|| {
        emulator
            .as_ref()
            .map(TgiEmulator::base_url)
            .unwrap_or_default()
    });
    let key = client_key();
    let config: ProxyConfig = toml::from_str(&format!(
        r#"
        listen = "127.0.0.1:0"
        proxy_id = "proxy-test"
        max_body_bytes = 2048
        [[targets]]
        id = "llama"
        kind = "tgi-messages"
        base_url = "{base_url}"
        model = "meta-llama/Llama"
        timeout_s = 5
        pricing = {{ input_per_1k_tokens = 1.0, output_per_1k_tokens = 2.0 }}
        [[targets]]
        id = "full-capture"
        kind = "tgi-messages"
        base_url = "{base_url}"
        capture = "full"
        capture_max_bytes = 20
        [[targets]]
        id = "short-cold-start"
        kind = "tgi-messages"
        base_url = "{base_url}"
        cold_start_timeout_s = 0.5
        [[targets]]
        id = "hash-capture"
        kind = "tgi-messages"
        base_url = "{base_url}"
        capture = "hash"
        [[clients]]
        name = "app"
        key_sha256 = "{}"
        "#,
        hex::encode(Sha256::digest(key.as_bytes()))
    ))
    .expect("config");
    let settings = config.validate(&HashMap::new()).expect("valid");
    let (emitter, events) = event_channel(1024, OnSpoolFull::Block);
    let state = ProxyState::new(settings, emitter).expect("state");
    Harness {
        app: router(state.clone()),
        admin: admin_router(state),
        events,
        emulator,
        key,
    }
}

async fn harness() -> Harness {
    harness_with_upstream(None).await
}

impl Harness {
    async fn post(
        &self,
        key: Option<&str>,
        body: impl Into<Body>,
    ) -> (StatusCode, Option<String>, Value) {
        let mut request =
            Request::post("/v1/chat/completions").header("content-type", "application/json");
        if let Some(key) = key {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        let response = self
            .app
            .clone()
            .oneshot(request.body(body.into()).expect("request"))
            .await
            .expect("response");
        let status = response.status();
        let request_id = response
            .headers()
            .get(REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, request_id, value)
    }

    /// `GET path`, with the client key when `authorized`.
    async fn get(&self, path: &str, authorized: bool) -> axum::response::Response {
        let mut request = Request::get(path);
        if authorized {
            request = request.header("authorization", format!("Bearer {}", self.key));
        }
        self.app
            .clone()
            .oneshot(request.body(Body::empty()).expect("request"))
            .await
            .expect("response")
    }

    /// Sends a chat request and returns the response with its body unread.
    async fn open(&self, body: Value) -> axum::response::Response {
        let request = Request::post("/v1/chat/completions")
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {}", self.key))
            .body(Body::from(body.to_string()))
            .expect("request");
        self.app.clone().oneshot(request).await.expect("response")
    }

    async fn chat(&self, body: Value) -> (StatusCode, Option<String>, Value) {
        let key = self.key.clone();
        self.post(Some(&key), body.to_string()).await
    }

    /// The events emitted so far.
    fn drain_events(&mut self) -> Vec<AuditEvent> {
        drain(&mut self.events)
    }

    fn upstream_calls(&self) -> usize {
        self.emulator.as_ref().map_or(0, |e| e.requests().len())
    }
}

fn hello() -> Value {
    json!({"model": "llama", "messages": [{"role": "user", "content": "Say hello please"}]})
}

#[tokio::test]
async fn successful_chat_is_answered_and_fully_audited() {
    let mut harness = harness().await;
    let (status, request_id, body) = harness.chat(hello()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["model"], "llama");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["usage"]["prompt_tokens"], 3);

    let events = harness.drain_events();
    assert_eq!(kinds(&events), ONE_CALL_TRAIL);
    let request_id = request_id.expect("x-request-id");
    assert_eq!(
        body["id"],
        format!("chatcmpl-{request_id}"),
        "a real OpenAI id, naming the call, not TGI's empty one"
    );
    assert!(events.iter().all(|e| e.request_id.as_str() == request_id));
    assert!(events.iter().all(|e| e.proxy_id == "proxy-test"));
    let decision = events[0].decision.as_ref().expect("decision");
    assert_eq!(
        (decision.policy.as_str(), decision.outcome.as_str()),
        ("auth", "allow")
    );
    let route = events[1].route.as_ref().expect("route");
    assert_eq!(route.target_id.as_deref(), Some("llama"));
    assert_eq!(route.endpoint, "/v1/chat/completions");
    let response = response_of(&events);
    assert_eq!(response.status, 200);
    assert_eq!(response.output_tokens, Some(12));
    assert_eq!(
        events[2].request.as_ref().and_then(|r| r.input_tokens),
        Some(3)
    );
    assert_eq!(events[2].client.name.as_deref(), Some("app"));
}

#[tokio::test]
async fn missing_and_wrong_keys_are_401_audited_and_never_reach_upstream() {
    let mut harness = harness().await;
    let (status, _, body) = harness.post(None, hello().to_string()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "missing_api_key");
    let (status, _, body) = harness
        .post(Some("sk-not-a-client"), hello().to_string())
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "invalid_api_key");
    assert_eq!(harness.upstream_calls(), 0);

    let events = harness.drain_events();
    assert_eq!(events.len(), 6, "{events:#?}");
    let denials: Vec<_> = events
        .iter()
        .filter_map(|e| e.decision.as_ref())
        .map(|d| (d.outcome.as_str(), d.reason.as_deref()))
        .collect();
    assert_eq!(
        denials,
        [
            ("deny", Some("missing_api_key")),
            ("deny", Some("invalid_api_key"))
        ]
    );
    let wrong_key_response = &events[5];
    assert_eq!(
        wrong_key_response.response.as_ref().map(|r| r.status),
        Some(401)
    );
    let token_id = wrong_key_response
        .client
        .token_id
        .as_ref()
        .expect("fingerprinted");
    assert!(!token_id.0.contains("sk-not-a-client"));
}

#[tokio::test]
async fn bad_requests_get_openai_errors_and_events() {
    let mut harness = harness().await;
    let cases: Vec<(Body, StatusCode, &str)> = vec![
        (
            Body::from("{not json"),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            Body::from(r#"{"messages": []}"#),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            Body::from(r#"{"model": "gpt-4", "messages": []}"#),
            StatusCode::NOT_FOUND,
            "model_not_found",
        ),
        (
            Body::from("x".repeat(4096)),
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
        ),
        (
            Body::from(
                r#"{"model": "llama", "stream": true, "stream_options": 5, "messages": []}"#,
            ),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
    ];
    let key = harness.key.clone();
    for (body, expected_status, expected_code) in cases {
        let (status, request_id, answer) = harness.post(Some(&key), body).await;
        assert_eq!(status, expected_status, "{answer}");
        assert_eq!(answer["error"]["code"], expected_code);
        assert!(answer["error"]["message"].is_string());
        assert!(request_id.is_some());
        let events = harness.drain_events();
        assert_eq!(kinds(&events), ONE_CALL_TRAIL);
        let response = response_of(&events);
        assert_eq!(response.status, expected_status.as_u16());
        assert_eq!(response.error_type.as_deref(), Some(expected_code));
    }
    assert_eq!(harness.upstream_calls(), 0);
}

#[tokio::test]
async fn upstream_validation_errors_keep_their_message() {
    let mut harness = harness().await;
    let mut request = hello();
    request["top_p"] = json!(1.5);
    let (status, _, body) = harness.chat(request).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("top_p")),
        "{body}"
    );
    assert_eq!(
        response_of(&harness.drain_events()).error_type.as_deref(),
        Some("upstream_error")
    );
}

#[tokio::test]
async fn unreachable_upstream_is_a_502() {
    let port = warden_testkit::free_port().expect("port");
    let mut harness = harness_with_upstream(Some(format!("http://127.0.0.1:{port}"))).await;
    let started = std::time::Instant::now();
    let (status, _, body) = harness.chat(hello()).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(body["error"]["code"], "upstream_unreachable");
    assert!(
        !body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("127.0.0.1")
    );
    assert_eq!(response_of(&harness.drain_events()).status, 502);
}

#[tokio::test]
async fn unknown_endpoints_are_openai_404s_and_health_is_ok() {
    let harness = harness().await;
    let response = harness.get("/v1/nope", true).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let body = axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .expect("body");
    let error: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(error["error"]["code"], "unknown_endpoint");
    assert_eq!(
        harness.get("/healthz", false).await.status(),
        StatusCode::OK
    );
}

fn streamed_text(data: &[String]) -> String {
    data.iter()
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|chunk| {
            chunk["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

fn streaming_hello() -> Value {
    let mut request = hello();
    request["stream"] = json!(true);
    request
}

#[tokio::test]
async fn streamed_chat_is_translated_and_audited_with_exact_usage() {
    let mut harness = harness().await;
    let response = harness.open(streaming_hello()).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .expect("request id")
        .to_owned();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    let data = sse_data(&body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    assert_eq!(
        streamed_text(&data),
        "Hello from the TGI emulator. It answers every prompt the same way."
    );
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).expect("chunk"))
        .collect();
    assert!(
        chunks
            .iter()
            .all(|c| c["model"] == "llama" && c["object"] == "chat.completion.chunk")
    );
    assert!(
        chunks
            .iter()
            .all(|c| c["id"] == format!("chatcmpl-{request_id}")),
        "every chunk carries the call's OpenAI id: {chunks:?}"
    );
    assert_eq!(
        chunks.last().expect("last")["choices"][0]["finish_reason"],
        "stop"
    );
    assert!(
        chunks
            .iter()
            .all(|c| !c["choices"].as_array().is_some_and(|a| a.is_empty())),
        "the usage chunk is not sent to a client that did not ask for it"
    );

    // Usage was requested upstream anyway, for the audit.
    let upstream = &harness.emulator.as_ref().expect("emulator").requests()[0];
    assert_eq!(upstream.body["stream_options"]["include_usage"], true);
    let events = harness.drain_events();
    let response = response_of(&events);
    assert_eq!(response.status, 200);
    assert_eq!(response.output_tokens, Some(12));
    assert_eq!(response.finish_reason.as_deref(), Some("stop"));
    assert!(response.ttft_ms.is_some());
    assert_eq!(response.error_type, None);
    assert!(
        response
            .cost_usd
            .is_some_and(|cost| (cost - 0.027).abs() < 1e-9)
    );
    assert_eq!(
        events[2].request.as_ref().and_then(|r| r.input_tokens),
        Some(3)
    );
    assert!(events[1].route.as_ref().is_some_and(|r| r.stream));
}

#[tokio::test]
async fn usage_chunk_is_passed_on_when_the_client_asks() {
    let harness = harness().await;
    let mut request = streaming_hello();
    request["stream_options"] = json!({"include_usage": true});
    let response = harness.open(request).await;
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    let data = sse_data(&body);
    let usage: Value = serde_json::from_str(&data[data.len() - 2]).expect("usage chunk");
    assert_eq!(usage["usage"]["completion_tokens"], 12);
    assert_eq!(usage["choices"], json!([]));
}

#[tokio::test]
async fn first_token_reaches_the_client_long_before_the_last_is_produced() {
    let options = EmulatorOptions {
        token_delay: Duration::from_millis(100),
        ..EmulatorOptions::default()
    };
    let harness = harness_with(None, options).await;
    let started = std::time::Instant::now();
    let response = harness.open(streaming_hello()).await;
    let mut body = response.into_body();
    use http_body_util::BodyExt;
    let first = body.frame().await.expect("a frame").expect("ok");
    let first_at = started.elapsed();
    assert!(
        first
            .data_ref()
            .is_some_and(|d| String::from_utf8_lossy(d).contains("Hello"))
    );
    while body.frame().await.is_some() {}
    let last_at = started.elapsed();
    // 12 tokens, 100 ms apart: a buffering proxy would deliver everything at ~1.2 s.
    assert!(last_at >= Duration::from_millis(1100), "{last_at:?}");
    assert!(
        first_at < Duration::from_millis(500),
        "first chunk after {first_at:?}"
    );
}

#[tokio::test]
async fn a_client_leaving_mid_stream_is_audited_as_aborted() {
    let options = EmulatorOptions {
        token_delay: Duration::from_millis(50),
        ..EmulatorOptions::default()
    };
    let mut harness = harness_with(None, options).await;
    let response = harness.open(streaming_hello()).await;
    let mut body = response.into_body();
    use http_body_util::BodyExt;
    body.frame().await.expect("a frame").expect("ok");
    drop(body);
    let events = harness.drain_events();
    let response = response_of(&events);
    assert_eq!(response.status, 499);
    assert_eq!(response.error_type.as_deref(), Some("client_aborted"));
    assert!(response.ttft_ms.is_some());
}

#[tokio::test]
async fn in_band_upstream_errors_become_openai_error_chunks() {
    let mut harness = harness().await;
    let mut request = streaming_hello();
    request["messages"][0]["content"] = json!(warden_testkit::tgi::STREAM_ERROR_TRIGGER);
    let response = harness.open(request).await;
    assert_eq!(response.status(), StatusCode::OK, "TGI reports it in-band");
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    let data = sse_data(&body);
    let error: Value = data
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .find(|chunk| chunk.get("error").is_some())
        .expect("an error chunk");
    assert_eq!(error["error"]["code"], "upstream_stream_error");
    assert!(
        error["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("overloaded"))
    );
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let events = harness.drain_events();
    assert_eq!(
        response_of(&events).error_type.as_deref(),
        Some("upstream_stream_error")
    );
}

#[tokio::test]
async fn models_lists_targets_by_client_name_for_authenticated_callers() {
    let mut harness = harness().await;
    let response = harness.get("/v1/models", true).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .expect("body");
    let models: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], "meta-llama/Llama");
    assert_eq!(models["data"][0]["owned_by"], "tgi-messages");
    let response = harness.get("/v1/models", false).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let events = harness.drain_events();
    assert_eq!(events.len(), 6, "every call is audited");
    assert!(
        events
            .iter()
            .all(|e| e.route.as_ref().is_some_and(|r| r.endpoint == "/v1/models"))
    );
}

#[tokio::test]
async fn metrics_count_calls_by_target_and_status_and_events() {
    let harness = harness().await;
    harness.chat(hello()).await;
    harness
        .chat(json!({"model": "gpt-4", "messages": []}))
        .await;
    let on_the_callers_listener = harness.get("/metrics", false).await;
    assert_eq!(on_the_callers_listener.status(), StatusCode::NOT_FOUND);
    let response = harness
        .admin
        .clone()
        .oneshot(
            Request::get("/metrics")
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    let text = String::from_utf8_lossy(&body);
    for expected in [
        r#"warden_proxy_requests_total{endpoint="/v1/chat/completions",target="llama",status="200"} 1"#,
        r#"warden_proxy_requests_total{endpoint="/v1/chat/completions",target="none",status="404"} 1"#,
        r#"warden_proxy_upstream_latency_seconds_count{target="llama"} 1"#,
        "warden_proxy_added_latency_seconds_count 1",
        "warden_events_emitted_total 6",
        "warden_events_dropped_total 0",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}

#[tokio::test]
async fn content_is_captured_per_target_policy_and_capped() {
    let mut harness = harness().await;
    // Default policy: nothing kept.
    harness.chat(hello()).await;
    let events = harness.drain_events();
    assert!(
        events
            .iter()
            .all(|e| e.request.as_ref().is_none_or(|r| r.content.is_none()))
    );
    assert!(
        events
            .iter()
            .all(|e| e.response.as_ref().is_none_or(|r| r.content.is_none()))
    );

    // Full: capped at 20 bytes, for plain and streamed answers alike.
    for stream in [false, true] {
        let request = json!({"model": "full-capture", "stream": stream,
                             "messages": [{"role": "user", "content": "Say hello please"}]});
        let (status, _, _) = harness.chat(request.clone()).await;
        assert_eq!(status, StatusCode::OK);
        let events = harness.drain_events();
        let response_event = events
            .iter()
            .find(|e| e.kind == EventKind::Response)
            .expect("response");
        let sent = request.to_string();
        assert_eq!(
            response_event
                .request
                .as_ref()
                .and_then(|r| r.content.as_deref()),
            Some(&sent[..20])
        );
        assert_eq!(
            response_event
                .response
                .as_ref()
                .and_then(|r| r.content.as_deref()),
            Some("Hello from the TGI e"),
            "stream={stream}"
        );
    }

    // Hash: the SHA-256 of the answer, never the text.
    harness
        .chat(json!({"model": "hash-capture", "messages": [{"role": "user", "content": "x"}]}))
        .await;
    let events = harness.drain_events();
    let response = response_of(&events);
    let expected = hex::encode(Sha256::digest(
        "Hello from the TGI emulator. It answers every prompt the same way.".as_bytes(),
    ));
    assert_eq!(response.content.as_deref(), Some(expected.as_str()));
}

fn cold_emulator(num_503s: usize) -> EmulatorOptions {
    EmulatorOptions {
        cold_start_503s: num_503s,
        cold_start_estimated_time: Duration::from_millis(150),
        ..EmulatorOptions::default()
    }
}

#[tokio::test]
async fn a_cold_model_is_waited_for_within_the_budget() {
    let mut harness = harness_with(None, cold_emulator(2)).await;
    let (status, _, body) = harness.chat(hello()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let calls = harness.emulator.as_ref().expect("emulator").requests();
    assert_eq!(calls.len(), 3, "two 503s, then the answer");
    let wait_header = |call: &warden_testkit::RecordedRequest| {
        call.headers
            .iter()
            .any(|(name, value)| name == "x-wait-for-model" && value == "true")
    };
    assert!(!wait_header(&calls[0]), "the first try is a plain request");
    assert!(
        calls[1..].iter().all(wait_header),
        "retries ask HF to hold them"
    );
    assert_eq!(response_of(&harness.drain_events()).status, 200);
}

#[tokio::test]
async fn a_model_still_loading_after_the_budget_is_a_503_upstream_loading() {
    let mut harness = harness_with(None, cold_emulator(usize::MAX)).await;
    let started = std::time::Instant::now();
    let (status, _, body) = harness
        .chat(json!({"model": "short-cold-start", "messages": []}))
        .await;
    let elapsed = started.elapsed();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "upstream_loading");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("currently loading"))
    );
    assert!(
        elapsed < Duration::from_secs(3),
        "bounded by the 0.5 s budget: {elapsed:?}"
    );
    let attempts = harness
        .emulator
        .as_ref()
        .expect("emulator")
        .requests()
        .len();
    assert!((2..=6).contains(&attempts), "{attempts} attempts");
    assert_eq!(
        response_of(&harness.drain_events()).error_type.as_deref(),
        Some("upstream_loading")
    );
}

#[tokio::test]
async fn a_client_hanging_up_before_a_whole_answer_is_audited_as_aborted() {
    // A cold model keeps Warden waiting; the client gives up first.
    let mut harness = harness_with(None, cold_emulator(100)).await;
    let request = Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {}", harness.key))
        .body(Body::from(hello().to_string()))
        .expect("request");
    let gave_up = tokio::time::timeout(
        Duration::from_millis(50),
        harness.app.clone().oneshot(request),
    )
    .await;
    assert!(
        gave_up.is_err(),
        "the call was still waiting on the upstream"
    );
    let events = harness.drain_events();
    assert_eq!(kinds(&events), ONE_CALL_TRAIL);
    let response = response_of(&events);
    assert_eq!(response.status, 499);
    assert_eq!(response.error_type.as_deref(), Some("client_aborted"));
}
