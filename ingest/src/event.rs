//! The audit event, schema version 1.
//!
//! One [`AuditEvent`] is one Kafka message (JSON) and one archive row (Arrow/Parquet). The same
//! field names are used in both, so `response.status` means the same thing in a consumer, in
//! `warden sql` and in DuckDB.
//!
//! Compatibility rules, which every change to this file must keep:
//! - decoders accept unknown fields (no `deny_unknown_fields`): old consumers survive new
//!   producers;
//! - a field added later is optional (`Option` + `#[serde(default)]`), so events written by
//!   older producers still decode;
//! - `schema_version` is bumped only for a change old decoders cannot read, and decoders keep
//!   accepting every version ever shipped.

use std::fmt;

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The schema version this build writes.
pub const SCHEMA_VERSION: u32 = 1;

/// Every schema version this build can decode.
pub const SUPPORTED_SCHEMA_VERSIONS: &[u32] = &[1];

/// Unique id of one event (UUIDv7: time-ordered, so ids sort by creation time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventId(pub Uuid);

impl EventId {
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }
}

impl Default for EventId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Id shared by all events of one client call (also returned to the client as `x-request-id`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RequestId(pub String);

impl RequestId {
    pub fn new() -> Self {
        Self(Uuid::now_v7().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for RequestId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A fingerprint of a client's API key: safe to log and to store, never reversible to the key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TokenId(pub String);

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What an event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A client call was received (after authentication, before the upstream is called).
    Request,
    /// A client call finished: upstream answer, proxy error, or client abort.
    Response,
    /// A policy (auth, rate limit, guardrail, routing) decided on a call.
    PolicyDecision,
    /// A runbook action was taken (revocation, emergency limit, scale-down).
    Action,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Request => "request",
            Self::Response => "response",
            Self::PolicyDecision => "policy_decision",
            Self::Action => "action",
        }
    }
}

/// One audit event. See the module docs for the compatibility rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub event_id: EventId,
    pub schema_version: u32,
    pub kind: EventKind,
    /// Event time, UTC, microsecond precision.
    pub ts: DateTime<Utc>,
    pub request_id: RequestId,
    pub proxy_id: String,
    #[serde(default)]
    pub environment: Option<String>,
    #[serde(default)]
    pub client: ClientInfo,
    #[serde(default)]
    pub route: Option<RouteInfo>,
    #[serde(default)]
    pub request: Option<RequestInfo>,
    #[serde(default)]
    pub response: Option<ResponseInfo>,
    #[serde(default)]
    pub decision: Option<DecisionInfo>,
    /// How many like occurrences this one event stands for; absent means one. Set on the
    /// summaries the proxy emits in place of refused callers' events it shed while the audit
    /// pipeline was backed up (one per client IP and kind of event, per second), so counts
    /// (the brute-force detector's, SQL's `sum(coalesce(occurrences, 1))`) stay true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occurrences: Option<u64>,
}

/// Who called.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClientInfo {
    #[serde(default)]
    pub ip: Option<String>,
    #[serde(default)]
    pub country: Option<String>,
    #[serde(default)]
    pub token_id: Option<TokenId>,
    /// The configured client name, when the key matched one.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub user_agent: Option<String>,
}

/// Where the call went.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RouteInfo {
    /// The proxy endpoint called, e.g. `/v1/chat/completions`.
    pub endpoint: String,
    #[serde(default)]
    pub target_id: Option<String>,
    /// The model the client asked for.
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub stream: bool,
}

/// What was asked.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestInfo {
    pub bytes: u64,
    /// SHA-256 (hex) of the normalized request: equal for identical retries.
    #[serde(default)]
    pub prompt_hash: Option<String>,
    #[serde(default)]
    pub input_tokens: Option<u64>,
    /// Captured content, per the target's capture policy.
    #[serde(default)]
    pub content: Option<String>,
}

/// How it ended.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResponseInfo {
    /// HTTP status returned to the client.
    pub status: u16,
    #[serde(default)]
    pub latency_ms: Option<f64>,
    #[serde(default)]
    pub ttft_ms: Option<f64>,
    #[serde(default)]
    pub output_tokens: Option<u64>,
    #[serde(default)]
    pub finish_reason: Option<String>,
    #[serde(default)]
    pub cost_usd: Option<f64>,
    /// Machine-readable error class (`upstream_unreachable`, `invalid_api_key`, ...).
    #[serde(default)]
    pub error_type: Option<String>,
    #[serde(default)]
    pub content: Option<String>,
    /// When the call went to a fallback: each target tried and how it ended, in order
    /// (`hf-llama-70b: upstream_unreachable`, `hf-llama-8b: ok`). Absent otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<String>,
}

/// What a policy decided.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DecisionInfo {
    /// The policy that decided, e.g. `auth`.
    pub policy: String,
    /// `allow`, `deny`, `redact`, ...
    pub outcome: String,
    #[serde(default)]
    pub reason: Option<String>,
}

/// Why a Kafka payload is not an event we can take.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not a valid audit event: {0}")]
    Json(#[from] serde_json::Error),
    #[error("not a valid audit event: {0}")]
    Utf8(std::str::Utf8Error),
    #[error("unsupported schema_version {0}")]
    UnsupportedVersion(u32),
}

impl AuditEvent {
    /// A new event of `kind` for `request_id`, stamped now, with every optional part empty.
    pub fn new(kind: EventKind, request_id: RequestId, proxy_id: impl Into<String>) -> Self {
        Self {
            event_id: EventId::new(),
            schema_version: SCHEMA_VERSION,
            kind,
            ts: Utc::now().trunc_subsecs(6),
            request_id,
            proxy_id: proxy_id.into(),
            environment: None,
            client: ClientInfo::default(),
            route: None,
            request: None,
            response: None,
            decision: None,
            occurrences: None,
        }
    }

    /// How many occurrences this event stands for: [`AuditEvent::occurrences`], else one.
    pub fn weight(&self) -> u64 {
        self.occurrences.unwrap_or(1)
    }

    /// Decodes one wire payload, accepting unknown fields and every supported schema version.
    pub fn from_json(payload: &[u8]) -> Result<Self, DecodeError> {
        let event: Self = serde_json::from_slice(payload)?;
        if !SUPPORTED_SCHEMA_VERSIONS.contains(&event.schema_version) {
            return Err(DecodeError::UnsupportedVersion(event.schema_version));
        }
        Ok(event)
    }

    pub fn to_json(&self) -> Vec<u8> {
        // Serializing plain structs of strings and numbers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The Kafka partition key: the client token id, else the client ip, else the request id.
    pub fn partition_key(&self) -> &str {
        self.client
            .token_id
            .as_ref()
            .map(|t| t.0.as_str())
            .or(self.client.ip.as_deref())
            .unwrap_or(self.request_id.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_and_missing_optional_parts_still_decode() {
        let payload = br#"{
            "event_id": "019a0000-0000-7000-8000-000000000001",
            "schema_version": 1,
            "kind": "response",
            "ts": "2026-11-22T10:00:00.123456Z",
            "request_id": "r-1",
            "proxy_id": "p-1",
            "a_field_from_the_future": {"nested": [1, 2, 3]},
            "response": {"status": 200, "latency_ms": 12.5, "new_metric": 7}
        }"#;
        let event = AuditEvent::from_json(payload).expect("decodes");
        assert_eq!(event.kind, EventKind::Response);
        assert_eq!(event.request_id.as_str(), "r-1");
        assert_eq!(event.client, ClientInfo::default());
        let response = event.response.expect("response part");
        assert_eq!(response.status, 200);
        assert_eq!(response.latency_ms, Some(12.5));
    }

    #[test]
    fn unsupported_schema_version_is_a_clear_error() {
        let mut event = AuditEvent::new(EventKind::Request, RequestId::new(), "p");
        event.schema_version = 99;
        let err = AuditEvent::from_json(&event.to_json()).expect_err("rejected");
        assert!(err.to_string().contains("schema_version 99"), "{err}");
    }

    #[test]
    fn partition_key_prefers_token_then_ip() {
        let mut event = AuditEvent::new(EventKind::Request, RequestId("r".into()), "p");
        assert_eq!(event.partition_key(), "r");
        event.client.ip = Some("10.0.0.1".into());
        assert_eq!(event.partition_key(), "10.0.0.1");
        event.client.token_id = Some(TokenId("tok".into()));
        assert_eq!(event.partition_key(), "tok");
    }
}
