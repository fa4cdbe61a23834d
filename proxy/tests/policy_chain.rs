//! The policy chain in-process, against the TGI emulator: rate limits on requests and
//! tokens (reserved at admission, settled on real usage, streams included), their headers
//! and refusals, client keys past their `not_after`, and the chain's validation.

use std::collections::HashMap;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tower::ServiceExt;
use warden_ingest::{AuditEvent, EventKind, EventReceiver, OnSpoolFull, event_channel};
use warden_proxy::{ProxyConfig, ProxyState, admin_router, router};
use warden_testkit::trail::{client_key, drain};
use warden_testkit::{EmulatorOptions, TgiEmulator};

struct Harness {
    app: axum::Router,
    admin: axum::Router,
    events: EventReceiver,
    emulator: TgiEmulator,
    key: String,
}

/// A proxy with one `tgi-messages` target, one client `app` and the given extra config.
async fn harness(extra: &str) -> Harness {
    let emulator = TgiEmulator::start(EmulatorOptions::default())
        .await
        .expect("emulator");
    let key = client_key();
    let config: ProxyConfig = toml::from_str(&format!(
        r#"
        listen = "127.0.0.1:0"
        proxy_id = "proxy-test"
        [[targets]]
        id = "llama"
        kind = "tgi-messages"
        base_url = "{}"
        model = "meta-llama/Llama"
        [passthrough]
        prefix = "/hf"
        [[clients]]
        name = "app"
        key_sha256 = "{}"
        {extra}
        "#,
        emulator.base_url(),
        hex::encode(Sha256::digest(key.as_bytes()))
    ))
    .expect("config");
    let settings = config.validate(&HashMap::new()).expect("valid");
    let (emitter, events) = event_channel(65_536, OnSpoolFull::Block);
    let state = ProxyState::new(settings, emitter).expect("state");
    Harness {
        app: router(state.clone()),
        admin: admin_router(state),
        events,
        emulator,
        key,
    }
}

fn chat(max_tokens: u64, stream: bool) -> Value {
    json!({
        "model": "meta-llama/Llama",
        "messages": [{"role": "user", "content": "Say hello please"}],
        "max_tokens": max_tokens,
        "stream": stream,
    })
}

impl Harness {
    async fn send(&self, path: &str, key: &str, body: &Value) -> Response {
        let request = Request::post(path)
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {key}"))
            .body(Body::from(body.to_string()))
            .expect("request");
        self.app.clone().oneshot(request).await.expect("response")
    }

    async fn chat(&self, body: &Value) -> (Response, Value) {
        let response = self.send("/v1/chat/completions", &self.key, body).await;
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 20).await.expect("body");
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (Response::from_parts(parts, Body::empty()), value)
    }

    fn events(&mut self) -> Vec<AuditEvent> {
        drain(&mut self.events)
    }

    async fn metrics(&self) -> String {
        let request = Request::get("/metrics")
            .body(Body::empty())
            .expect("request");
        let response = self.admin.clone().oneshot(request).await.expect("response");
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// The response event of the last call in `events`.
fn last_response(events: &[AuditEvent]) -> &AuditEvent {
    events
        .iter()
        .rev()
        .find(|event| event.kind == EventKind::Response)
        .expect("a response event")
}

/// The target that served the last call in `events`.
fn served_by(events: &[AuditEvent]) -> Option<&str> {
    last_response(events)
        .route
        .as_ref()
        .and_then(|route| route.target_id.as_deref())
}

fn decisions<'e>(events: &'e [AuditEvent], policy: &str) -> Vec<&'e str> {
    events
        .iter()
        .filter_map(|event| event.decision.as_ref())
        .filter(|decision| decision.policy == policy)
        .filter_map(|decision| decision.reason.as_deref())
        .collect()
}

/// A chat call for `model`, with `key`.
async fn chat_as(
    harness: &Harness,
    key: &str,
    model: &str,
    extra_header: Option<(&str, &str)>,
) -> StatusCode {
    let mut request = Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {key}"));
    if let Some((name, value)) = extra_header {
        request = request.header(name, value);
    }
    let body = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    let response = harness
        .app
        .clone()
        .oneshot(request.body(Body::from(body.to_string())).expect("request"))
        .await
        .expect("response");
    let status = response.status();
    axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    status
}

/// A chat call for `model` with `key`: its status and JSON body.
async fn chat_answer(harness: &Harness, key: &str, model: &str) -> (StatusCode, Value) {
    let body = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    let response = harness.send("/v1/chat/completions", key, &body).await;
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// A second target on the emulator, and one nobody listens at (connection refused).
fn more_targets(emulator_url: &str, dead_extra: &str) -> String {
    format!(
        r#"
        [[targets]]
        id = "small"
        kind = "tgi-messages"
        base_url = "{emulator_url}"
        [[targets]]
        id = "dead"
        kind = "tgi-messages"
        base_url = "http://127.0.0.1:9"
        cold_start_timeout_s = 0
        {dead_extra}
        "#
    )
}

fn header<'r>(response: &'r Response, name: &str) -> Option<&'r str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn a_request_limit_refuses_with_openai_429_retry_after_and_headers() {
    let mut harness = harness(
        r#"
        [[rate_limits]]
        subject = "client"
        match = "app"
        requests_per_minute = 3
        "#,
    )
    .await;
    for remaining in ["2", "1", "0"] {
        let (response, body) = harness.chat(&chat(20, false)).await;
        assert_eq!(response.status(), StatusCode::OK, "{body}");
        assert_eq!(header(&response, "x-ratelimit-limit-requests"), Some("3"));
        assert_eq!(
            header(&response, "x-ratelimit-remaining-requests"),
            Some(remaining)
        );
        assert!(header(&response, "x-ratelimit-reset-requests").is_some());
        assert_eq!(header(&response, "x-ratelimit-limit-tokens"), None);
    }
    let (refused, body) = harness.chat(&chat(20, false)).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert_eq!(body["error"]["type"], "rate_limit_error");
    let retry_after: u64 = header(&refused, "retry-after")
        .expect("Retry-After")
        .parse()
        .expect("whole seconds");
    assert!((19..=20).contains(&retry_after), "{retry_after}");
    assert_eq!(
        header(&refused, "x-ratelimit-remaining-requests"),
        Some("0")
    );
    assert_eq!(
        harness.emulator.requests().len(),
        3,
        "the refused call never went upstream"
    );
    let events = harness.events();
    let throttle = events
        .iter()
        .filter_map(|event| event.decision.as_ref())
        .find(|decision| decision.policy == "rate_limit")
        .expect("a rate_limit decision");
    assert_eq!(throttle.outcome, "throttle");
    assert_eq!(
        throttle.reason.as_deref(),
        Some("client:app requests per minute")
    );
    let refused_response = events
        .iter()
        .filter(|event| event.kind == EventKind::Response)
        .filter_map(|event| event.response.as_ref())
        .find(|response| response.status == 429)
        .expect("the refusal's response event");
    assert_eq!(
        refused_response.error_type.as_deref(),
        Some("rate_limit_exceeded")
    );
}

/// What the calls of `events` used, by their response events: (input + output tokens).
fn tokens_used(events: &[AuditEvent]) -> u64 {
    events
        .iter()
        .filter(|event| event.kind == EventKind::Response)
        .filter(|event| event.response.as_ref().is_some_and(|r| r.status == 200))
        .map(|event| {
            let input = event.request.as_ref().and_then(|r| r.input_tokens);
            let output = event.response.as_ref().and_then(|r| r.output_tokens);
            input.unwrap_or(0) + output.unwrap_or(0)
        })
        .sum()
}

#[tokio::test]
async fn fifty_concurrent_calls_streams_included_cannot_overshoot_a_token_limit() {
    const LIMIT: u64 = 400;
    let mut harness = harness(&format!(
        r#"
        [[rate_limits]]
        subject = "client"
        tokens_per_minute = {LIMIT}
        "#
    ))
    .await;
    let calls = (0..50).map(|n| {
        let body = chat(40, n % 2 == 0);
        let harness = &harness;
        async move {
            let response = harness
                .send("/v1/chat/completions", &harness.key, &body)
                .await;
            let status = response.status();
            // A stream settles when it ends: read it to the end.
            axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .expect("body");
            status
        }
    });
    let statuses = futures::future::join_all(calls).await;
    let admitted = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!(admitted + refused, 50, "{statuses:?}");
    assert!(refused > 0 && admitted > 0, "{statuses:?}");
    let used = tokens_used(&harness.events());
    // One call reserves its prompt estimate (4 + 4 tokens) and max_tokens (40).
    let one_reservation = 48;
    // The limit also refills while the test runs (400 a minute): a few tokens a second.
    let refill = 20;
    assert!(
        used <= LIMIT + one_reservation + refill,
        "{admitted} calls used {used} tokens against a limit of {LIMIT}"
    );
}

#[tokio::test]
async fn a_settled_reservation_gives_back_what_the_call_did_not_use() {
    let mut harness = harness(
        r#"
        [[rate_limits]]
        subject = "client"
        tokens_per_minute = 1000
        "#,
    )
    .await;
    let (first, _) = harness.chat(&chat(500, false)).await;
    let reserved_remaining: u64 = header(&first, "x-ratelimit-remaining-tokens")
        .expect("tokens header")
        .parse()
        .expect("number");
    // 1000 - (8 prompt estimate + 500).
    assert_eq!(reserved_remaining, 492);
    // A stream too: read to its end, then settled.
    let streamed = harness
        .send("/v1/chat/completions", &harness.key, &chat(100, true))
        .await;
    axum::body::to_bytes(streamed.into_body(), 1 << 20)
        .await
        .expect("body");
    let (next, _) = harness.chat(&chat(10, false)).await;
    let remaining: u64 = header(&next, "x-ratelimit-remaining-tokens")
        .expect("tokens header")
        .parse()
        .expect("number");
    let used = tokens_used(&harness.events());
    // The emulator answers 3 prompt tokens and 12 generated (10 when capped at 10).
    assert_eq!(used, 15 + 15 + 13);
    // Both earlier calls settled on their real usage (15 each) before the third reserved 18.
    assert!(
        (1000 - 30 - 18 - 2..=1000 - 30 - 18).contains(&remaining),
        "remaining {remaining}"
    );
}

#[tokio::test]
async fn pass_through_calls_pass_the_same_limits() {
    let harness = harness(
        r#"
        [[rate_limits]]
        subject = "global"
        requests_per_minute = 1
        "#,
    )
    .await;
    let generate = json!({"inputs": "hi", "parameters": {"max_new_tokens": 5}});
    let first = harness
        .send("/hf/llama/generate", &harness.key, &generate)
        .await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(header(&first, "x-ratelimit-remaining-requests"), Some("0"));
    let refused = harness
        .send("/hf/llama/generate", &harness.key, &generate)
        .await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    // The OpenAI endpoint shares the global limit.
    let (chat_refused, body) = harness.chat(&chat(5, false)).await;
    assert_eq!(chat_refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
}

#[tokio::test]
async fn an_expired_key_is_refused_as_expired_while_its_successor_works() {
    let old_key = client_key();
    let harness = harness(&format!(
        r#"
        [[clients]]
        name = "rotating"
        keys = [
            {{ key_sha256 = "{}", not_after = "2020-01-31" }},
            {{ key_sha256 = "{}", not_after = "2999-12-31" }},
        ]
        "#,
        hex::encode(Sha256::digest(old_key.as_bytes())),
        hex::encode(Sha256::digest(b"sk-rotating-new")),
    ))
    .await;
    let response = harness
        .send("/v1/chat/completions", &old_key, &chat(5, false))
        .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    let body: Value = serde_json::from_slice(&bytes).expect("json");
    assert_eq!(body["error"]["code"], "expired_api_key");
    let fresh = harness
        .send("/v1/chat/completions", "sk-rotating-new", &chat(5, false))
        .await;
    assert_eq!(fresh.status(), StatusCode::OK);
}

/// Asserts that one of `errors` says `what`.
fn assert_reported(errors: &[String], what: &str) {
    assert!(
        errors.iter().any(|e| e.contains(what)),
        "{what:?} not in {errors:?}"
    );
}

fn validation_errors(extra: &str) -> Vec<String> {
    let config: ProxyConfig = toml::from_str(&format!(
        r#"
        listen = "127.0.0.1:0"
        [[targets]]
        id = "llama"
        kind = "tgi-messages"
        base_url = "http://127.0.0.1:9"
        {extra}
        "#
    ))
    .expect("config");
    config
        .validate(&HashMap::new())
        .expect_err("invalid config")
}

#[test]
fn the_chain_and_limits_are_validated_with_the_bad_key_named() {
    let errors = validation_errors(
        r#"
        [policies]
        chain = ["rate_limit", "router", "guess"]
        "#,
    );
    assert_reported(&errors, "proxy.policies.chain: must start with \"auth\"");
    assert_reported(&errors, "proxy.policies.chain[2]: unknown member \"guess\"");
    let errors = validation_errors(
        r#"
        [[rate_limits]]
        subject = "target"
        requests_per_minute = 10
        "#,
    );
    assert_reported(&errors, "needs \"router\" before \"rate_limit\"");
    let errors = validation_errors(
        r#"
        [[rate_limits]]
        subject = "planet"
        requests_per_minute = 0
        [[rate_limits]]
        subject = "client"
        "#,
    );
    assert_reported(
        &errors,
        "proxy.rate_limits[0].subject: \"planet\" is not one of",
    );
    assert_reported(&errors, "proxy.rate_limits[1]: set at least one of");
    let errors = validation_errors(
        r#"
        [[clients]]
        name = "a"
        keys = [{ key_sha256 = "00", not_after = "soon" }]
        "#,
    );
    assert_reported(
        &errors,
        "proxy.clients[0].keys[0].key_sha256: must be 64 hex",
    );
}

#[test]
fn a_target_limit_is_accepted_with_the_router_first() {
    let config: ProxyConfig = toml::from_str(
        r#"
        listen = "127.0.0.1:0"
        [[targets]]
        id = "llama"
        kind = "tgi-messages"
        base_url = "http://127.0.0.1:9"
        [policies]
        chain = ["auth", "router", "rate_limit"]
        [[rate_limits]]
        subject = "target"
        match = "llama"
        tokens_per_day = 1000000
        "#,
    )
    .expect("config");
    config.validate(&HashMap::new()).expect("valid");
}

#[tokio::test]
async fn router_rules_send_calls_by_role_header_and_default_whatever_model_they_name() {
    let emulator = TgiEmulator::start(EmulatorOptions::default())
        .await
        .expect("emulator");
    let production_key = client_key();
    let mut harness = harness(&format!(
        r#"
        [[clients]]
        name = "prod-app"
        role = "production"
        key_sha256 = "{}"
        [router]
        rules = [
            {{ when_role = "production", target = "llama" }},
            {{ when_header = {{ name = "X-Tier", value = "batch" }}, target = "small" }},
            {{ default = true, target = "small" }},
        ]
        {}
        "#,
        hex::encode(Sha256::digest(production_key.as_bytes())),
        more_targets(&emulator.base_url(), ""),
    ))
    .await;
    assert_eq!(
        chat_as(&harness, &production_key, "small", None).await,
        StatusCode::OK
    );
    let events = harness.events();
    let route = last_response(&events).route.as_ref().expect("route");
    assert_eq!(route.target_id.as_deref(), Some("llama"));
    assert_eq!(
        route.model.as_deref(),
        Some("small"),
        "the model the client named"
    );
    assert_eq!(
        decisions(&events, "router"),
        ["rule 0 (when_role = \"production\"): target llama"]
    );
    let carrier = events
        .iter()
        .find(|event| {
            event
                .decision
                .as_ref()
                .is_some_and(|d| d.policy == "router")
        })
        .expect("the route decision");
    assert_eq!(
        carrier.kind,
        EventKind::Request,
        "a rule's decision rides on the request event: no extra event per call"
    );
    assert_eq!(
        events.len(),
        3,
        "auth decision, request, response: routing adds no event"
    );
    let key = harness.key.clone();
    assert_eq!(
        chat_as(
            &harness,
            &key,
            "meta-llama/Llama",
            Some(("x-tier", "batch"))
        )
        .await,
        StatusCode::OK
    );
    let events = harness.events();
    assert_eq!(served_by(&events), Some("small"));
    assert_eq!(
        decisions(&events, "router"),
        ["rule 1 (when_header x-tier: \"batch\"): target small"]
    );
    // No rule but the default matches: the default's target, whatever the model.
    assert_eq!(
        chat_as(&harness, &key, "meta-llama/Llama", None).await,
        StatusCode::OK
    );
    let events = harness.events();
    assert_eq!(served_by(&events), Some("small"));
    assert_eq!(
        decisions(&events, "router"),
        ["rule 2 (default): target small"]
    );
}

#[tokio::test]
async fn a_dead_target_falls_back_and_the_response_event_records_every_attempt() {
    // Kept alive for the test: `small` is served by it.
    let emulator = TgiEmulator::start(EmulatorOptions::default())
        .await
        .expect("emulator");
    let emulator_url = emulator.base_url();
    let mut harness = harness(&more_targets(&emulator_url, r#"fallback = ["small"]"#)).await;
    let key = harness.key.clone();
    assert_eq!(chat_as(&harness, &key, "dead", None).await, StatusCode::OK);
    let events = harness.events();
    let response = last_response(&events);
    assert_eq!(
        response.route.as_ref().and_then(|r| r.target_id.as_deref()),
        Some("small")
    );
    assert_eq!(
        response.response.as_ref().expect("response").attempts,
        ["dead: upstream_unreachable", "small: ok"]
    );
    assert_eq!(
        decisions(&events, "fallback"),
        ["upstream_unreachable; trying small"]
    );
    // A stream falls back too (before its first byte).
    let streamed = harness
        .send(
            "/v1/chat/completions",
            &key,
            &json!({"model": "dead", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(streamed.status(), StatusCode::OK);
    let body = axum::body::to_bytes(streamed.into_body(), 1 << 20)
        .await
        .expect("body");
    assert!(String::from_utf8_lossy(&body).ends_with("data: [DONE]\n\n"));
    let events = harness.events();
    assert_eq!(
        last_response(&events)
            .response
            .as_ref()
            .expect("response")
            .attempts,
        ["dead: upstream_unreachable", "small: ok"]
    );
}

#[tokio::test]
async fn the_breaker_opens_after_its_failures_and_shows_in_metrics() {
    // Kept alive for the test: `small` is served by it.
    let emulator = TgiEmulator::start(EmulatorOptions::default())
        .await
        .expect("emulator");
    let emulator_url = emulator.base_url();
    let harness = harness(&more_targets(
        &emulator_url,
        "breaker = { failures = 2, window_s = 60, open_s = 60 }",
    ))
    .await;
    let key = harness.key.clone();
    assert!(
        harness
            .metrics()
            .await
            .contains(r#"warden_proxy_circuit_state{target="dead"} 0"#)
    );
    for _ in 0..2 {
        assert_eq!(
            chat_as(&harness, &key, "dead", None).await,
            StatusCode::BAD_GATEWAY
        );
    }
    let (status, body) = chat_answer(&harness, &key, "dead").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"]["code"], "circuit_open");
    let metrics = harness.metrics().await;
    assert!(
        metrics.contains(r#"warden_proxy_circuit_state{target="dead"} 1"#),
        "{metrics}"
    );
    // Other targets are unaffected.
    assert_eq!(chat_as(&harness, &key, "small", None).await, StatusCode::OK);
}

#[tokio::test]
async fn a_team_over_its_budget_gets_insufficient_quota_and_alert_only_lets_through() {
    let emulator = TgiEmulator::start(EmulatorOptions::default())
        .await
        .expect("emulator");
    let team_key = client_key();
    let mut harness = harness(&format!(
        r#"
        [[clients]]
        name = "payments-api"
        team = "payments"
        key_sha256 = "{}"
        [[budgets]]
        team = "payments"
        usd_per_day = 0.05
        action = "deny"
        [[budgets]]
        client = "app"
        usd_per_hour = 0.01
        action = "alert_only"
        [[targets]]
        id = "priced"
        kind = "tgi-messages"
        base_url = "{}"
        pricing = {{ input_per_1k_tokens = 1.0, output_per_1k_tokens = 2.0 }}
        "#,
        hex::encode(Sha256::digest(team_key.as_bytes())),
        emulator.base_url(),
    ))
    .await;
    // Each call costs 3 input and 12 output tokens: 0.027 USD.
    for _ in 0..2 {
        assert_eq!(
            chat_as(&harness, &team_key, "priced", None).await,
            StatusCode::OK
        );
    }
    let (status, body) = chat_answer(&harness, &team_key, "priced").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["error"]["code"], "insufficient_quota");
    assert_eq!(body["error"]["type"], "insufficient_quota");
    let events = harness.events();
    assert_eq!(
        decisions(&events, "budget"),
        ["team payments: 0.05 USD per day reached"]
    );
    // `app` is over its alert-only budget after one call: the next goes through, recorded.
    let key = harness.key.clone();
    for _ in 0..2 {
        assert_eq!(
            chat_as(&harness, &key, "priced", None).await,
            StatusCode::OK
        );
    }
    let events = harness.events();
    let alerts: Vec<&str> = events
        .iter()
        .filter_map(|event| event.decision.as_ref())
        .filter(|decision| decision.policy == "budget" && decision.outcome == "alert")
        .filter_map(|decision| decision.reason.as_deref())
        .collect();
    assert_eq!(alerts, ["client app: 0.01 USD per hour reached"]);
}
