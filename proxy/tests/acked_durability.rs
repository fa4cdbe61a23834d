//! `[audit].durability = "acked"`, in-process against the TGI emulator, with the test in the
//! publisher's place: a call reaches the upstream only once its request is on record, its
//! answer (or its stream's end) is released only once its response event is, and a call
//! whose events are lost gets a 503 `audit_unavailable`, never its answer.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use futures::StreamExt;
use serde_json::{Value, json};
use tower::ServiceExt;
use warden_ingest::emitter::QueuedEvent;
use warden_ingest::{
    ChannelOptions, Durability, EventKind, EventReceiver, OnSpoolFull, event_channel_with,
};
use warden_proxy::{ProxyConfig, ProxyState, router};
use warden_testkit::trail::{ONE_CALL_TRAIL, client_key, key_sha256, kinds, sse_data};
use warden_testkit::{EmulatorOptions, TgiEmulator};

/// Long enough for a call that does not wait to have finished many times over.
const NOT_RELEASED_WITHIN: Duration = Duration::from_millis(300);

struct Harness {
    app: axum::Router,
    events: EventReceiver,
    emulator: TgiEmulator,
    key: String,
}

async fn harness() -> Harness {
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
        [[clients]]
        name = "app"
        key_sha256 = "{}"
        "#,
        emulator.base_url(),
        key_sha256(&key),
    ))
    .expect("config");
    let settings = config.validate(&HashMap::new()).expect("valid");
    let (emitter, events) = event_channel_with(ChannelOptions {
        capacity: 1024,
        on_spool_full: OnSpoolFull::Block,
        durability: Durability::Acked,
        acked_timeout: Duration::from_secs(5),
    });
    Harness {
        app: router(ProxyState::new(settings, emitter).expect("state")),
        events,
        emulator,
        key,
    }
}

impl Harness {
    /// Starts a chat call; the task ends with the status and body once they are released.
    fn call(&self, key: &str, stream: bool) -> tokio::task::JoinHandle<(StatusCode, Vec<u8>)> {
        let body = json!({
            "model": "llama",
            "messages": [{"role": "user", "content": "hi"}],
            "stream": stream,
        });
        let request = Request::post("/v1/chat/completions")
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {key}"))
            .body(Body::from(body.to_string()))
            .expect("request");
        let app = self.app.clone();
        tokio::spawn(async move {
            let response = app.oneshot(request).await.expect("response");
            let status = response.status();
            let body = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .expect("body");
            (status, body.to_vec())
        })
    }

    /// The next queued event, not yet durable.
    async fn next_event(&mut self) -> QueuedEvent {
        let mut batch = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), self.events.recv_many(&mut batch, 1))
            .await
            .expect("an event within 5 s");
        batch.pop().expect("one event")
    }

    /// Takes the next event and makes it durable; returns its kind.
    async fn settle_next(&mut self) -> EventKind {
        let QueuedEvent { event, settle } = self.next_event().await;
        settle
            .expect("an admitted call's event has a receipt")
            .durable();
        event.kind
    }
}

#[tokio::test]
async fn an_acked_call_reaches_the_upstream_and_is_answered_only_once_its_events_are_durable() {
    let mut harness = harness().await;
    let key = harness.key.clone();
    let call = harness.call(&key, false);

    // The auth decision and the request are queued, not durable: the upstream waits.
    assert_eq!(harness.settle_next().await, EventKind::PolicyDecision);
    let request = harness.next_event().await;
    assert_eq!(request.event.kind, EventKind::Request);
    tokio::time::sleep(NOT_RELEASED_WITHIN).await;
    assert!(
        harness.emulator.requests().is_empty(),
        "no inference before the request is on record"
    );
    request.settle.expect("receipt").durable();

    // The upstream answered; the answer waits for the response event.
    let response = harness.next_event().await;
    assert_eq!(response.event.kind, EventKind::Response);
    assert_eq!(harness.emulator.requests().len(), 1);
    tokio::time::sleep(NOT_RELEASED_WITHIN).await;
    assert!(!call.is_finished(), "the answer waits for its trail");
    response.settle.expect("receipt").durable();
    let (status, body) = call.await.expect("call");
    assert_eq!(status, StatusCode::OK);
    let answer: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(answer["object"], "chat.completion");
}

#[tokio::test]
async fn an_acked_stream_ends_only_once_its_response_event_is_durable() {
    let mut harness = harness().await;
    let key = harness.key.clone();
    let call = harness.call(&key, true);
    for expected in &ONE_CALL_TRAIL[..2] {
        assert_eq!(harness.settle_next().await, *expected);
    }
    let response = harness.next_event().await;
    assert_eq!(response.event.kind, EventKind::Response);
    tokio::time::sleep(NOT_RELEASED_WITHIN).await;
    assert!(!call.is_finished(), "[DONE] waits for the trail");
    response.settle.expect("receipt").durable();
    let (status, body) = call.await.expect("call");
    assert_eq!(status, StatusCode::OK);
    let data = sse_data(&body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{data:?}");
}

#[tokio::test]
async fn a_call_whose_events_are_lost_gets_a_503_and_no_answer() {
    let mut harness = harness().await;
    let key = harness.key.clone();
    let call = harness.call(&key, false);
    let mut taken = Vec::new();
    for _ in 0..2 {
        taken.push(harness.next_event().await.event);
    }
    // Lost: the receipts were dropped untold (as a full spool under `drop` does).
    let (status, body) = call.await.expect("call");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let error: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(error["error"]["code"], "audit_unavailable", "{error}");
    assert!(
        harness.emulator.requests().is_empty(),
        "no inference off the record"
    );
    assert_eq!(kinds(&taken), ONE_CALL_TRAIL[..2]);
}

#[tokio::test]
async fn a_refused_caller_never_waits_on_the_audit_pipeline() {
    let harness = harness().await;
    let call = harness.call(&client_key(), false);
    let (status, _) = tokio::time::timeout(Duration::from_secs(2), call)
        .await
        .expect("answered without any event being durable")
        .expect("call");
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_stream_whose_response_event_is_lost_ends_with_an_error_not_done() {
    let mut harness = harness().await;
    let key = harness.key.clone();
    let call = harness.call(&key, true);
    for expected in &ONE_CALL_TRAIL[..2] {
        assert_eq!(harness.settle_next().await, *expected);
    }
    drop(harness.next_event().await);
    let (_, body) = call.await.expect("call");
    // The error takes the place of the normal end: content, the error, then `[DONE]` once.
    let data = sse_data(&body);
    let error = &data[data.len() - 2];
    assert!(error.contains("audit trail is unavailable"), "{data:?}");
    assert_eq!(
        data.iter().filter(|d| *d == "[DONE]").count(),
        1,
        "{data:?}"
    );
}

#[tokio::test]
async fn an_acked_stream_flows_as_usual_and_only_its_end_is_held() {
    let mut harness = harness().await;
    let key = harness.key.clone();
    let request = Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {key}"))
        .body(Body::from(
            json!({"model": "llama", "messages": [{"role": "user", "content": "hi"}], "stream": true})
                .to_string(),
        ))
        .expect("request");
    let app = harness.app.clone();
    let (chunks_tx, mut chunks) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let response = app.oneshot(request).await.expect("response");
        let mut body = response.into_body().into_data_stream();
        while let Some(chunk) = body.next().await {
            let _ = chunks_tx.send(chunk.expect("bytes"));
        }
    });
    for expected in &ONE_CALL_TRAIL[..2] {
        assert_eq!(harness.settle_next().await, *expected);
    }
    let held = harness.next_event().await;
    assert_eq!(held.event.kind, EventKind::Response);
    // Every content chunk is out; the end is not.
    let mut seen = Vec::new();
    while let Ok(Some(chunk)) = tokio::time::timeout(NOT_RELEASED_WITHIN, chunks.recv()).await {
        seen.extend_from_slice(&chunk);
    }
    let data = sse_data(&seen);
    assert!(data.len() > 1, "{data:?}");
    assert!(
        data.iter().all(|d| d.contains("chat.completion.chunk")),
        "{data:?}"
    );
    held.settle.expect("receipt").durable();
    let mut rest = Vec::new();
    while let Some(chunk) = chunks.recv().await {
        rest.extend_from_slice(&chunk);
    }
    assert_eq!(sse_data(&rest), ["[DONE]"]);
}
