//! Test helpers for reading what Warden produced: made-up client keys, the audit trail of a
//! call, SSE bodies.

use serde_json::Value;
use sha2::{Digest, Sha256};
use warden_ingest::event::ResponseInfo;
use warden_ingest::{AuditEvent, EventKind, EventReceiver};

/// Made up per test run: never a fixture secret.
pub fn client_key() -> String {
    format!("sk-{}", uuid::Uuid::new_v4().simple())
}

/// What the config holds for `key`.
pub fn key_sha256(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// The events every call leaves, in order.
pub const ONE_CALL_TRAIL: [EventKind; 3] = [
    EventKind::PolicyDecision,
    EventKind::Request,
    EventKind::Response,
];

pub fn kinds(events: &[AuditEvent]) -> Vec<EventKind> {
    events.iter().map(|e| e.kind).collect()
}

pub fn response_of(events: &[AuditEvent]) -> &ResponseInfo {
    events
        .iter()
        .find(|e| e.kind == EventKind::Response)
        .and_then(|e| e.response.as_ref())
        .expect("a response event")
}

/// How many calls the events finish (one `response` event each).
pub fn responses(events: &[AuditEvent]) -> usize {
    events
        .iter()
        .filter(|e| e.kind == EventKind::Response)
        .count()
}

/// The events emitted so far.
pub fn drain(receiver: &mut EventReceiver) -> Vec<AuditEvent> {
    let mut events = Vec::new();
    while let Some(event) = receiver.try_recv() {
        events.push(event);
    }
    events
}

/// The `data` payloads of an SSE body.
pub fn sse_data(body: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(body)
        .split("\n\n")
        .filter_map(|event| event.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

/// The JSON chunks of an SSE body (`[DONE]` left out).
pub fn sse_chunks(body: &[u8]) -> Vec<Value> {
    sse_data(body)
        .iter()
        .filter(|data| *data != "[DONE]")
        .filter_map(|data| serde_json::from_str(data).ok())
        .collect()
}
