//! Every OpenAI endpoint against every target kind, HF-native pass-through, per-client
//! access rules and timeouts, in-process against the TGI emulator: what the client gets,
//! exactly what goes upstream, and the audit trail.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode};
use base64::Engine;
use serde_json::{Value, json};
use tower::ServiceExt;
use warden_ingest::{AuditEvent, EventReceiver, OnSpoolFull, event_channel};
use warden_proxy::{ProxyConfig, ProxyState, WARDEN_KEY_HEADER, router};
use warden_testkit::trail::{
    ONE_CALL_TRAIL, client_key, drain, key_sha256, kinds, response_of, responses, sse_chunks,
    sse_data,
};
use warden_testkit::{EmulatorOptions, RecordedRequest, TgiEmulator};

/// The emulator's reply, token by token.
const REPLY_WORDS: [&str; 12] = [
    "Hello",
    " from",
    " the",
    " TGI",
    " emulator.",
    " It",
    " answers",
    " every",
    " prompt",
    " the",
    " same",
    " way.",
];

#[derive(Debug, Clone)]
struct Options {
    emulator: EmulatorOptions,
    forward_client_authorization: bool,
    first_token_timeout_s: f64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            emulator: EmulatorOptions::default(),
            forward_client_authorization: false,
            first_token_timeout_s: 30.0,
        }
    }
}

struct Proxy {
    app: axum::Router,
    events: EventReceiver,
    emulator: TgiEmulator,
    /// A client that may use every target (environment: the proxy's, `prod`).
    key: String,
    /// A client restricted to the `serverless` target, in environment `dev`.
    intern_key: String,
    /// What the `native` target sends upstream as its token.
    native_token: String,
}

impl Proxy {
    async fn start(options: Options) -> Self {
        let emulator = TgiEmulator::start(options.emulator)
            .await
            .expect("emulator");
        let base_url = emulator.base_url();
        let (key, intern_key) = (client_key(), client_key());
        let native_token = format!("hf_{}", uuid::Uuid::new_v4().simple());
        let config: ProxyConfig = toml::from_str(&format!(
            r#"
            listen = "127.0.0.1:0"
            proxy_id = "proxy-test"
            environment = "prod"
            [passthrough]
            prefix = "/hf"
            forward_client_authorization = {forward}
            [[targets]]
            id = "native"
            kind = "tgi"
            base_url = "{base_url}"
            chat_template = "chatml"
            token = "env:NATIVE_TOKEN"
            first_token_timeout_s = {first_token}
            [[targets]]
            id = "messages"
            kind = "tgi-messages"
            base_url = "{base_url}"
            allow_bill_to = ["acme-org"]
            [[targets]]
            id = "serverless"
            kind = "hf-serverless"
            base_url = "{base_url}"
            model = "org/small-model"
            [[clients]]
            name = "app"
            key_sha256 = "{app}"
            [[clients]]
            name = "intern"
            key_sha256 = "{intern}"
            environment = "dev"
            allowed_targets = ["serverless"]
            "#,
            forward = options.forward_client_authorization,
            first_token = options.first_token_timeout_s,
            app = key_sha256(&key),
            intern = key_sha256(&intern_key),
        ))
        .expect("config");
        let env = HashMap::from([("NATIVE_TOKEN".to_owned(), native_token.clone())]);
        let settings = config.validate(&env).expect("valid");
        let (emitter, events) = event_channel(1024, OnSpoolFull::Block);
        Self {
            app: router(ProxyState::new(settings, emitter).expect("state")),
            events,
            emulator,
            key,
            intern_key,
            native_token,
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> (StatusCode, HeaderMap, Bytes) {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let body = body.map_or_else(Body::empty, |body| Body::from(body.to_string()));
        let response = self
            .app
            .clone()
            .oneshot(request.body(body).expect("request"))
            .await
            .expect("response");
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 22).await.expect("body");
        (parts.status, parts.headers, bytes)
    }

    /// POSTs `body` with `key` as the bearer key; the answer as JSON (Null if it is not).
    async fn post(&self, path: &str, key: &str, body: Value) -> (StatusCode, Value) {
        let authorization = format!("Bearer {key}");
        let (status, _, bytes) = self
            .send(
                Method::POST,
                path,
                &[("authorization", &authorization)],
                Some(&body),
            )
            .await;
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// POSTs a streaming request; the raw SSE body.
    async fn post_stream(&self, path: &str, body: Value) -> (StatusCode, Bytes) {
        let authorization = format!("Bearer {}", self.key);
        let (status, _, bytes) = self
            .send(
                Method::POST,
                path,
                &[("authorization", &authorization)],
                Some(&body),
            )
            .await;
        (status, bytes)
    }

    fn events(&mut self) -> Vec<AuditEvent> {
        drain(&mut self.events)
    }

    fn last_upstream_request(&self) -> RecordedRequest {
        self.emulator.requests().pop().expect("an upstream request")
    }
}

fn words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

fn streamed_text(chunks: &[Value], pointer: &str) -> String {
    chunks
        .iter()
        .filter_map(|chunk| chunk.pointer(pointer).and_then(Value::as_str))
        .collect()
}

#[tokio::test]
async fn native_tgi_chat_renders_the_template_and_maps_parameters() {
    let mut proxy = Proxy::start(Options::default()).await;
    let (status, body) = proxy
        .post(
            "/v1/chat/completions",
            &proxy.key,
            json!({
                "model": "native",
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Say hello"},
                ],
                "temperature": 0, "top_p": 1, "max_tokens": 5, "stop": ["\n\n"], "user": "u-1",
            }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "native");
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        REPLY_WORDS[..5].concat()
    );
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    assert_eq!(body["usage"]["completion_tokens"], 5);

    let upstream = proxy.last_upstream_request();
    assert_eq!(upstream.path, "/generate");
    let prompt = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nSay hello<|im_end|>\n\
                  <|im_start|>assistant\n";
    assert_eq!(upstream.body["inputs"], prompt);
    assert_eq!(
        upstream.body["parameters"],
        json!({"details": true, "return_full_text": false, "max_new_tokens": 5,
               "do_sample": false, "stop": ["\n\n"]})
    );
    assert_eq!(
        upstream.authorization,
        Some(format!("Bearer {}", proxy.native_token))
    );
    assert_eq!(body["usage"]["prompt_tokens"], words(prompt));

    let events = proxy.events();
    assert_eq!(kinds(&events), ONE_CALL_TRAIL);
    let response = response_of(&events);
    assert_eq!(response.status, 200);
    assert_eq!(response.output_tokens, Some(5));
    assert_eq!(response.finish_reason.as_deref(), Some("length"));
    let request = events[2].request.as_ref().expect("request info");
    assert_eq!(request.input_tokens, Some(words(prompt)));
}

#[tokio::test]
async fn native_tgi_chat_streams_token_events_as_openai_chunks() {
    let mut proxy = Proxy::start(Options::default()).await;
    let (status, body) = proxy
        .post_stream(
            "/v1/chat/completions",
            json!({
                "model": "native", "stream": true, "stream_options": {"include_usage": true},
                "messages": [{"role": "user", "content": "Say hello"}],
            }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let data = sse_data(&body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks = sse_chunks(&body);
    assert_eq!(chunks.len(), REPLY_WORDS.len() + 1, "{chunks:#?}");
    assert_eq!(chunks[0]["object"], "chat.completion.chunk");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(
        streamed_text(&chunks, "/choices/0/delta/content"),
        REPLY_WORDS.concat()
    );
    assert_eq!(
        chunks[REPLY_WORDS.len() - 1]["choices"][0]["finish_reason"],
        "stop"
    );
    let usage = &chunks[REPLY_WORDS.len()]["usage"];
    assert_eq!(usage["completion_tokens"], REPLY_WORDS.len());
    assert_eq!(proxy.last_upstream_request().path, "/generate_stream");

    let events = proxy.events();
    let response = response_of(&events);
    assert_eq!(response.output_tokens, Some(REPLY_WORDS.len() as u64));
    assert_eq!(response.finish_reason.as_deref(), Some("stop"));
    assert!(response.ttft_ms.is_some() && response.error_type.is_none());
    assert_eq!(
        events[2].request.as_ref().and_then(|r| r.input_tokens),
        usage["prompt_tokens"].as_u64()
    );
}

#[tokio::test]
async fn completions_work_on_every_target_kind() {
    let mut proxy = Proxy::start(Options::default()).await;
    for (model, upstream_path) in [
        ("native", "/generate"),
        ("messages", "/generate"),
        ("org/small-model", "/models/org/small-model"),
    ] {
        let (status, body) = proxy
            .post(
                "/v1/completions",
                &proxy.key,
                json!({"model": model, "prompt": "Once upon a time", "max_tokens": 3, "top_p": 0.9}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{model}: {body}");
        assert_eq!(body["object"], "text_completion");
        assert_eq!(body["model"], model);
        assert_eq!(body["choices"][0]["text"], REPLY_WORDS[..3].concat());
        assert_eq!(body["choices"][0]["finish_reason"], "length");
        assert_eq!(body["usage"]["prompt_tokens"], 4, "{model}");
        assert_eq!(body["usage"]["completion_tokens"], 3);
        let upstream = proxy.last_upstream_request();
        assert_eq!(upstream.path, upstream_path);
        assert_eq!(upstream.body["inputs"], "Once upon a time");
        assert_eq!(upstream.body["parameters"]["top_p"], 0.9);
        let events = proxy.events();
        assert_eq!(kinds(&events), ONE_CALL_TRAIL, "{model}");
        assert_eq!(response_of(&events).output_tokens, Some(3));
    }

    // Several prompts: one choice each, usage summed.
    let (status, body) = proxy
        .post(
            "/v1/completions",
            &proxy.key,
            json!({"model": "native", "prompt": ["one two", "three"], "max_tokens": 2, "echo": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["choices"][0]["text"],
        format!("one two{}", REPLY_WORDS[..2].concat())
    );
    assert_eq!(body["choices"][1]["index"], 1);
    assert_eq!(body["usage"]["prompt_tokens"], 3);
    assert_eq!(body["usage"]["completion_tokens"], 4);
}

#[tokio::test]
async fn serverless_completions_stream_with_the_task_payload() {
    let mut proxy = Proxy::start(Options::default()).await;
    let (status, body) = proxy
        .post_stream(
            "/v1/completions",
            json!({"model": "org/small-model", "prompt": "Hi", "stream": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let chunks = sse_chunks(&body);
    assert_eq!(chunks[0]["object"], "text_completion");
    assert_eq!(
        streamed_text(&chunks, "/choices/0/text"),
        REPLY_WORDS.concat()
    );
    assert!(sse_data(&body).last().is_some_and(|d| d == "[DONE]"));
    let upstream = proxy.last_upstream_request();
    assert_eq!(upstream.path, "/models/org/small-model");
    assert_eq!(upstream.body["stream"], true);
    assert_eq!(upstream.body["parameters"]["details"], true);
    let events = proxy.events();
    assert_eq!(
        response_of(&events).output_tokens,
        Some(REPLY_WORDS.len() as u64)
    );
}

#[tokio::test]
async fn in_band_generation_errors_become_error_chunks_and_failed_events() {
    let mut proxy = Proxy::start(Options::default()).await;
    let (status, body) = proxy
        .post_stream(
            "/v1/completions",
            json!({"model": "native", "prompt": warden_testkit::tgi::STREAM_ERROR_TRIGGER, "stream": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let chunks = sse_chunks(&body);
    assert_eq!(
        streamed_text(&chunks, "/choices/0/text"),
        REPLY_WORDS[..2].concat()
    );
    let error = chunks.last().expect("chunks");
    assert_eq!(error["error"]["message"], "Model is overloaded");
    let events = proxy.events();
    assert_eq!(
        response_of(&events).error_type.as_deref(),
        Some("upstream_stream_error")
    );
}

#[tokio::test]
async fn requests_tgi_would_reject_never_reach_it() {
    let mut proxy = Proxy::start(Options::default()).await;
    for request in [
        json!({"model": "native", "prompt": "x", "stop": ["a", "b", "c", "d", "e"]}),
        json!({"model": "native", "prompt": "x", "suffix": "y"}),
        json!({"model": "native", "prompt": [1, 2, 3]}),
        json!({"model": "native"}),
    ] {
        let (status, body) = proxy
            .post("/v1/completions", &proxy.key, request.clone())
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{request}: {body}");
        assert!(body["error"]["message"].is_string());
    }
    let (status, body) = proxy
        .post(
            "/v1/chat/completions",
            &proxy.key,
            json!({"model": "native", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(proxy.emulator.requests().is_empty());
    assert_eq!(responses(&proxy.events()), 5);
}

#[tokio::test]
async fn embeddings_use_feature_extraction_as_floats_or_base64() {
    let mut proxy = Proxy::start(Options::default()).await;
    let (status, body) = proxy
        .post(
            "/v1/embeddings",
            &proxy.key,
            json!({"model": "org/small-model", "input": ["first text", "second"], "encoding_format": "float"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["object"], "list");
    assert_eq!(body["data"].as_array().map(Vec::len), Some(2));
    assert_eq!(body["data"][1]["index"], 1);
    let floats: Vec<f64> = body["data"][0]["embedding"]
        .as_array()
        .expect("vector")
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    assert_eq!(floats.len(), 8);
    let upstream = proxy.last_upstream_request();
    assert_eq!(
        upstream.path,
        "/models/org/small-model/pipeline/feature-extraction"
    );
    assert_eq!(upstream.body, json!({"inputs": ["first text", "second"]}));

    let (status, body) = proxy
        .post(
            "/v1/embeddings",
            &proxy.key,
            json!({"model": "serverless", "input": "first text", "encoding_format": "base64"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let encoded = body["data"][0]["embedding"].as_str().expect("base64");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .expect("decodes");
    let first = f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    assert_eq!(bytes.len(), 32);
    assert!((f64::from(first) - floats[0]).abs() < 1e-6);

    let (status, body) = proxy
        .post(
            "/v1/embeddings",
            &proxy.key,
            json!({"model": "native", "input": "x"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "unsupported");
    assert_eq!(responses(&proxy.events()), 3);
}

#[tokio::test]
async fn clients_are_held_to_their_targets_and_environment() {
    let mut proxy = Proxy::start(Options::default()).await;
    let (status, body) = proxy
        .post(
            "/v1/completions",
            &proxy.intern_key,
            json!({"model": "native", "prompt": "x"}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "target_not_allowed");
    assert!(proxy.emulator.requests().is_empty());
    let events = proxy.events();
    let decisions: Vec<(String, String)> = events
        .iter()
        .filter_map(|e| e.decision.as_ref())
        .map(|d| (d.policy.clone(), d.outcome.clone()))
        .collect();
    assert_eq!(
        decisions,
        [
            ("auth".to_owned(), "allow".to_owned()),
            ("target_access".to_owned(), "deny".to_owned())
        ]
    );
    assert!(
        events
            .iter()
            .all(|e| e.environment.as_deref() == Some("dev"))
    );
    assert_eq!(response_of(&events).status, 403);

    let (status, _) = proxy
        .post(
            "/v1/completions",
            &proxy.intern_key,
            json!({"model": "serverless", "prompt": "x"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let authorization = format!("Bearer {}", proxy.intern_key);
    let (_, _, models) = proxy
        .send(
            Method::GET,
            "/v1/models",
            &[("authorization", &authorization)],
            None,
        )
        .await;
    let models: Value = serde_json::from_slice(&models).expect("json");
    assert_eq!(models["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(models["data"][0]["id"], "org/small-model");

    let _ = proxy.events();
    proxy
        .post(
            "/v1/completions",
            &proxy.key,
            json!({"model": "native", "prompt": "x"}),
        )
        .await;
    assert!(
        proxy
            .events()
            .iter()
            .all(|e| e.environment.as_deref() == Some("prod"))
    );
}

#[tokio::test]
async fn pass_through_forwards_hf_requests_unchanged_and_audits_them() {
    let mut proxy = Proxy::start(Options::default()).await;
    let authorization = format!("Bearer {}", proxy.key);
    let request =
        json!({"inputs": "Hi there", "parameters": {"max_new_tokens": 2, "details": true}});

    let direct = reqwest::Client::new()
        .post(format!("{}/generate", proxy.emulator.base_url()))
        .json(&request)
        .send()
        .await
        .expect("direct call");
    let direct_body = direct.bytes().await.expect("direct body");
    let (status, headers, body) = proxy
        .send(
            Method::POST,
            "/hf/native/generate",
            &[("authorization", &authorization)],
            Some(&request),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, direct_body, "the answer is passed on unchanged");
    assert_eq!(
        headers.get("x-generated-tokens").map(|v| v.as_bytes()),
        Some(&b"2"[..])
    );
    let upstream = proxy.last_upstream_request();
    assert_eq!(upstream.body, request, "the request is passed on unchanged");
    assert_eq!(
        upstream.authorization,
        Some(format!("Bearer {}", proxy.native_token)),
        "the target's token goes upstream, never the client's key"
    );
    let events = proxy.events();
    assert_eq!(kinds(&events), ONE_CALL_TRAIL);
    assert_eq!(
        events[2].route.as_ref().map(|r| r.endpoint.as_str()),
        Some("/hf/generate")
    );
    let response = response_of(&events);
    assert_eq!((response.status, response.output_tokens), (200, Some(2)));
    assert_eq!(
        events[2].request.as_ref().and_then(|r| r.input_tokens),
        Some(2)
    );

    // Streams go through byte for byte, and are audited as they pass.
    let direct_stream = reqwest::Client::new()
        .post(format!("{}/generate_stream", proxy.emulator.base_url()))
        .json(&request)
        .send()
        .await
        .expect("direct stream")
        .bytes()
        .await
        .expect("direct stream body");
    let (status, _, streamed) = proxy
        .send(
            Method::POST,
            "/hf/native/generate_stream",
            &[("authorization", &authorization)],
            Some(&request),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(streamed, direct_stream);
    let events = proxy.events();
    let response = response_of(&events);
    assert_eq!(response.output_tokens, Some(2));
    assert_eq!(response.finish_reason.as_deref(), Some("length"));
    assert!(response.ttft_ms.is_some());

    // hf-serverless targets: the path is taken below models/{model}.
    let (status, _, vectors) = proxy
        .send(
            Method::POST,
            "/hf/serverless/pipeline/feature-extraction",
            &[("authorization", &authorization)],
            Some(&json!({"inputs": ["a", "b"]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let vectors: Value = serde_json::from_slice(&vectors).expect("json");
    assert_eq!(vectors.as_array().map(Vec::len), Some(2));
    assert_eq!(
        proxy.last_upstream_request().path,
        "/models/org/small-model/pipeline/feature-extraction"
    );

    // Upstream errors keep their status and HF body; Warden's own errors are OpenAI-shaped.
    let (status, _, body) = proxy
        .send(
            Method::POST,
            "/hf/native/generate",
            &[("authorization", &authorization)],
            Some(&json!({"inputs": "x", "parameters": {"temperature": 0}})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(String::from_utf8_lossy(&body).contains("temperature"));
    let (status, _, _) = proxy
        .send(
            Method::POST,
            "/hf/nope/generate",
            &[("authorization", &authorization)],
            Some(&request),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = proxy
        .send(Method::POST, "/hf/native/generate", &[], Some(&request))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let events = proxy.events();
    let statuses: Vec<u16> = events
        .iter()
        .filter_map(|e| e.response.as_ref())
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, [200, 422, 404, 401]);
}

#[tokio::test]
async fn transparent_pass_through_forwards_the_callers_hf_token() {
    let proxy = Proxy::start(Options {
        forward_client_authorization: true,
        ..Options::default()
    })
    .await;
    // Made up per run, like every key here.
    let caller_token = format!("Bearer hf_{}", uuid::Uuid::new_v4().simple());
    let request = json!({"inputs": "Hi", "parameters": {"max_new_tokens": 1}});
    let (status, _, _) = proxy
        .send(
            Method::POST,
            "/hf/native/generate",
            &[
                ("authorization", &caller_token),
                (WARDEN_KEY_HEADER, &proxy.key),
            ],
            Some(&request),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        proxy.last_upstream_request().authorization,
        Some(caller_token.clone())
    );
    let (status, _, _) = proxy
        .send(
            Method::POST,
            "/hf/native/generate",
            &[("authorization", &caller_token)],
            Some(&request),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the Warden key is still required"
    );
}

#[tokio::test]
async fn a_stream_without_a_first_token_in_time_fails_with_upstream_timeout() {
    let mut proxy = Proxy::start(Options {
        emulator: EmulatorOptions {
            token_delay: Duration::from_millis(500),
            ..EmulatorOptions::default()
        },
        first_token_timeout_s: 0.1,
        ..Options::default()
    })
    .await;
    let (status, body) = proxy
        .post_stream(
            "/v1/chat/completions",
            json!({"model": "native", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let chunks = sse_chunks(&body);
    assert_eq!(chunks.len(), 1, "{chunks:?}");
    assert!(
        chunks[0]["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("no token within 0.1 s"))
    );
    let events = proxy.events();
    assert_eq!(
        response_of(&events).error_type.as_deref(),
        Some("upstream_timeout")
    );
}

/// Counts the connections made to a port nothing should ever reach.
struct Bystander {
    address: std::net::SocketAddr,
    connections: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Bystander {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = connections.clone();
        tokio::spawn(async move {
            while let Ok((_socket, _)) = listener.accept().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
        Self {
            address,
            connections,
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[tokio::test]
async fn pass_through_paths_never_leave_the_target() {
    let mut proxy = Proxy::start(Options::default()).await;
    let other = Bystander::start().await;
    let authorization = format!("Bearer {}", proxy.key);
    let host = other.address.to_string();
    let hostile = [
        format!("/hf/native/http:%2F%2F{host}/generate"),
        format!("/hf/native/http://{host}/generate"),
        format!("/hf/native/http:%2F%2F{host}"),
        format!("/hf/native/%2F%2F{host}/generate"),
        format!("/hf/native/%5C%5C{host}/generate"),
        format!("/hf/native/%5c{host}"),
        "/hf/native/../../v1/chat/completions".to_owned(),
        "/hf/native/%2e%2e/%2E%2E/generate".to_owned(),
        "/hf/native/.%2e/generate".to_owned(),
        "/hf/native/..%2Fgenerate".to_owned(),
        "/hf/serverless/../../other-org/other-model".to_owned(),
        "/hf/serverless/%2e%2e/%2e%2e/models/other-org/m".to_owned(),
        "/hf/native/generate%00".to_owned(),
        "/hf/native/a//generate".to_owned(),
        "/hf/native/%252e%252e/generate".to_owned(),
    ];
    let upstream_before = proxy.emulator.requests().len();
    for path in &hostile {
        let (status, _, body) = proxy
            .send(
                Method::POST,
                path,
                &[("authorization", &authorization)],
                Some(&json!({"inputs": "x"})),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
        let body: Value = serde_json::from_slice(&body).expect("OpenAI error JSON");
        assert_eq!(body["error"]["type"], "invalid_request_error", "{path}");
        assert_eq!(body["error"]["code"], "invalid_path", "{path}");
        let events = proxy.events();
        assert!(
            events.iter().any(|event| event
                .decision
                .as_ref()
                .is_some_and(|d| d.policy == "passthrough_path" && d.outcome == "deny")),
            "{path}: a passthrough_path decision"
        );
        assert_eq!(
            response_of(&events).error_type.as_deref(),
            Some("invalid_path")
        );
    }
    assert_eq!(other.connections(), 0, "another host was reached");
    assert_eq!(
        proxy.emulator.requests().len(),
        upstream_before,
        "the target itself was called with a refused path"
    );
}

#[tokio::test]
async fn transparent_pass_through_without_a_caller_token_is_refused() {
    let mut proxy = Proxy::start(Options {
        forward_client_authorization: true,
        ..Options::default()
    })
    .await;
    let (status, _, body) = proxy
        .send(
            Method::POST,
            "/hf/native/generate",
            &[(WARDEN_KEY_HEADER, &proxy.key)],
            Some(&json!({"inputs": "Hi"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let body: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(body["error"]["code"], "missing_hf_token");
    assert!(
        proxy.emulator.requests().is_empty(),
        "nothing went upstream, least of all with the target's token"
    );
    assert_eq!(
        response_of(&proxy.events()).error_type.as_deref(),
        Some("missing_hf_token")
    );
}

#[tokio::test]
async fn bill_to_is_forwarded_only_where_the_target_allows_it() {
    let mut proxy = Proxy::start(Options::default()).await;
    let authorization = format!("Bearer {}", proxy.key);
    let request = json!({"inputs": "Hi", "parameters": {"max_new_tokens": 1}});
    for (path, allowed) in [
        ("/hf/native/generate", false),
        ("/hf/messages/generate", true),
    ] {
        let (status, _, _) = proxy
            .send(
                Method::POST,
                path,
                &[
                    ("authorization", &authorization),
                    ("x-hf-bill-to", "acme-org"),
                ],
                Some(&request),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{path}");
        let upstream = proxy.last_upstream_request();
        let forwarded = upstream
            .headers
            .iter()
            .any(|(name, value)| name == "x-hf-bill-to" && value == "acme-org");
        assert_eq!(forwarded, allowed, "{path}");
        let events = proxy.events();
        let decision = events
            .iter()
            .find_map(|event| event.decision.as_ref().filter(|d| d.policy == "bill_to"))
            .expect("a bill_to decision");
        assert_eq!(decision.outcome, if allowed { "allow" } else { "drop" });
        assert!(
            decision
                .reason
                .as_deref()
                .is_some_and(|r| r.contains("acme-org"))
        );
    }
}
