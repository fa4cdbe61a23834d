//! A borrowed view of one audit event: what the archive's hot path decodes instead of an
//! [`AuditEvent`].
//!
//! Decoding a wire payload into an [`AuditEvent`] allocates a dozen small strings per event,
//! only for the archiver to copy them into Arrow columns and free them. An [`EventRow`]
//! borrows its strings from the payload instead (a string with JSON escapes is the one copy),
//! which took a large share of the archiver's CPU time (see BENCHMARKS.md).
//!
//! The view has the same fields, names and decoding rules as [`AuditEvent`] (unknown fields
//! accepted, optional parts defaulted, every supported schema version). Anything that wants
//! the event itself decodes an [`AuditEvent`]; an [`AuditEvent`] gives its view with
//! [`EventRow::from`], so both reach Arrow through one builder. The tests hold the two
//! decodings to the same rows.
//!
//! Payloads in the exact form [`AuditEvent::to_json`] writes (every event a proxy publishes)
//! are read by a fast path that compares keys in place (`canonical.rs`); any other payload is
//! decoded by serde_json, under the same rules.

mod canonical;

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use std::fmt;
use std::ops::Deref;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use crate::event::{
    AuditEvent, ClientInfo, DecisionInfo, DecodeError, EventId, EventKind, RequestInfo,
    ResponseInfo, RouteInfo, SUPPORTED_SCHEMA_VERSIONS,
};

/// One audit event, its strings borrowed from the payload it was decoded from.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct EventRow<'a> {
    pub event_id: EventId,
    pub schema_version: u32,
    pub kind: EventKind,
    pub ts: DateTime<Utc>,
    #[serde(borrow)]
    pub request_id: Text<'a>,
    #[serde(borrow)]
    pub proxy_id: Text<'a>,
    #[serde(borrow, default)]
    pub environment: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub client: ClientRow<'a>,
    #[serde(borrow, default)]
    pub route: Option<RouteRow<'a>>,
    #[serde(borrow, default)]
    pub request: Option<RequestRow<'a>>,
    #[serde(borrow, default)]
    pub response: Option<ResponseRow<'a>>,
    #[serde(borrow, default)]
    pub decision: Option<DecisionRow<'a>>,
    /// See [`AuditEvent::occurrences`].
    #[serde(default)]
    pub occurrences: Option<u64>,
}

impl EventRow<'_> {
    /// How many occurrences this event stands for (see [`AuditEvent::occurrences`]).
    pub fn weight(&self) -> u64 {
        self.occurrences.unwrap_or(1)
    }
}

/// [`ClientInfo`], borrowed.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ClientRow<'a> {
    #[serde(borrow, default)]
    pub ip: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub country: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub token_id: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub name: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub user_agent: Option<Text<'a>>,
}

/// [`RouteInfo`], borrowed.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RouteRow<'a> {
    #[serde(borrow)]
    pub endpoint: Text<'a>,
    #[serde(borrow, default)]
    pub target_id: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub model: Option<Text<'a>>,
    #[serde(default)]
    pub stream: bool,
}

/// [`RequestInfo`], borrowed.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RequestRow<'a> {
    pub bytes: u64,
    #[serde(borrow, default)]
    pub prompt_hash: Option<Text<'a>>,
    #[serde(default)]
    pub input_tokens: Option<u64>,
    #[serde(borrow, default)]
    pub content: Option<Text<'a>>,
}

/// [`ResponseInfo`], borrowed.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ResponseRow<'a> {
    pub status: u16,
    #[serde(default)]
    pub latency_ms: Option<f64>,
    #[serde(default)]
    pub ttft_ms: Option<f64>,
    #[serde(default)]
    pub output_tokens: Option<u64>,
    #[serde(borrow, default)]
    pub finish_reason: Option<Text<'a>>,
    #[serde(default)]
    pub cost_usd: Option<f64>,
    #[serde(borrow, default)]
    pub error_type: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub content: Option<Text<'a>>,
    /// See [`ResponseInfo::attempts`].
    #[serde(borrow, default)]
    pub attempts: Vec<Text<'a>>,
}

/// [`DecisionInfo`], borrowed.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DecisionRow<'a> {
    #[serde(borrow)]
    pub policy: Text<'a>,
    #[serde(borrow)]
    pub outcome: Text<'a>,
    #[serde(borrow, default)]
    pub reason: Option<Text<'a>>,
}

/// A string of an [`EventRow`]: borrowed from the payload, or owned when JSON escapes had to
/// be undone. (serde borrows a plain `Cow` field but never one inside an `Option`, hence this
/// type.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text<'a>(pub Cow<'a, str>);

impl Deref for Text<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Text<'_> {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl<'a> From<&'a str> for Text<'a> {
    fn from(text: &'a str) -> Self {
        Self(Cow::Borrowed(text))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;

        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;

            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a string")
            }

            fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(text)))
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(text.to_owned())))
            }

            fn visit_string<E: de::Error>(self, text: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(text)))
            }
        }

        deserializer.deserialize_str(TextVisitor)
    }
}

impl<'a> EventRow<'a> {
    /// Decodes one wire payload under the same rules as [`AuditEvent::from_json`].
    pub fn from_json(payload: &'a [u8]) -> Result<Self, DecodeError> {
        // One UTF-8 check of the whole payload is cheaper than serde_json's check per string.
        let text = std::str::from_utf8(payload).map_err(DecodeError::Utf8)?;
        let row: Self = match canonical::decode(text) {
            Some(row) => row,
            None => serde_json::from_str(text)?,
        };
        if !SUPPORTED_SCHEMA_VERSIONS.contains(&row.schema_version) {
            return Err(DecodeError::UnsupportedVersion(row.schema_version));
        }
        Ok(row)
    }
}

fn borrowed(text: &Option<String>) -> Option<Text<'_>> {
    text.as_deref().map(Text::from)
}

impl<'a> From<&'a AuditEvent> for EventRow<'a> {
    fn from(event: &'a AuditEvent) -> Self {
        Self {
            event_id: event.event_id,
            schema_version: event.schema_version,
            kind: event.kind,
            ts: event.ts,
            request_id: Text::from(event.request_id.as_str()),
            proxy_id: Text::from(event.proxy_id.as_str()),
            environment: borrowed(&event.environment),
            client: ClientRow::from(&event.client),
            route: event.route.as_ref().map(RouteRow::from),
            request: event.request.as_ref().map(RequestRow::from),
            response: event.response.as_ref().map(ResponseRow::from),
            decision: event.decision.as_ref().map(DecisionRow::from),
            occurrences: event.occurrences,
        }
    }
}

impl<'a> From<&'a ClientInfo> for ClientRow<'a> {
    fn from(client: &'a ClientInfo) -> Self {
        Self {
            ip: borrowed(&client.ip),
            country: borrowed(&client.country),
            token_id: client.token_id.as_ref().map(|t| Text::from(t.0.as_str())),
            name: borrowed(&client.name),
            user_agent: borrowed(&client.user_agent),
        }
    }
}

impl<'a> From<&'a RouteInfo> for RouteRow<'a> {
    fn from(route: &'a RouteInfo) -> Self {
        Self {
            endpoint: Text::from(route.endpoint.as_str()),
            target_id: borrowed(&route.target_id),
            model: borrowed(&route.model),
            stream: route.stream,
        }
    }
}

impl<'a> From<&'a RequestInfo> for RequestRow<'a> {
    fn from(request: &'a RequestInfo) -> Self {
        Self {
            bytes: request.bytes,
            prompt_hash: borrowed(&request.prompt_hash),
            input_tokens: request.input_tokens,
            content: borrowed(&request.content),
        }
    }
}

impl<'a> From<&'a ResponseInfo> for ResponseRow<'a> {
    fn from(response: &'a ResponseInfo) -> Self {
        Self {
            status: response.status,
            latency_ms: response.latency_ms,
            ttft_ms: response.ttft_ms,
            output_tokens: response.output_tokens,
            finish_reason: borrowed(&response.finish_reason),
            cost_usd: response.cost_usd,
            error_type: borrowed(&response.error_type),
            content: borrowed(&response.content),
            attempts: response
                .attempts
                .iter()
                .map(|attempt| Text::from(attempt.as_str()))
                .collect(),
        }
    }
}

impl<'a> From<&'a DecisionInfo> for DecisionRow<'a> {
    fn from(decision: &'a DecisionInfo) -> Self {
        Self {
            policy: Text::from(decision.policy.as_str()),
            outcome: Text::from(decision.outcome.as_str()),
            reason: borrowed(&decision.reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::RequestId;

    /// Every field filled, some strings with JSON escapes.
    fn full_event() -> AuditEvent {
        let mut event = crate::test_fixtures::full_event();
        event.client.name = Some("app \"prod\"\n".into());
        event.request.as_mut().expect("request").content = Some("{\"messages\":[\"é\"]}".into());
        event.route.as_mut().expect("route").model = None;
        event
    }

    #[test]
    fn a_payload_decodes_to_the_view_of_its_event() {
        let mut summary = full_event();
        summary.occurrences = Some(12_345);
        for event in [
            full_event(),
            AuditEvent::new(EventKind::Request, RequestId::new(), "p"),
            summary,
        ] {
            let payload = event.to_json();
            assert_eq!(
                EventRow::from_json(&payload).expect("row"),
                EventRow::from(&event)
            );
        }
    }

    #[test]
    fn strings_without_escapes_are_borrowed() {
        let payload = full_event().to_json();
        let row = EventRow::from_json(&payload).expect("row");
        assert!(matches!(row.proxy_id.0, Cow::Borrowed(_)));
        assert!(matches!(row.client.ip, Some(Text(Cow::Borrowed(_)))));
        assert!(
            matches!(row.client.name, Some(Text(Cow::Owned(_)))),
            "escaped"
        );
    }

    #[test]
    fn decoding_rules_match_the_event() {
        let unknown_fields = br#"{"event_id":"019a0000-0000-7000-8000-000000000001",
            "schema_version":1,"kind":"response","ts":"2026-11-22T10:00:00.123456Z",
            "request_id":"r-1","proxy_id":"p-1","future":{"x":[1]},
            "response":{"status":200,"new_metric":7}}"#;
        assert!(EventRow::from_json(unknown_fields).is_ok());
        let mut event = AuditEvent::new(EventKind::Request, RequestId::new(), "p");
        event.schema_version = 99;
        let err = EventRow::from_json(&event.to_json()).expect_err("rejected");
        assert!(err.to_string().contains("schema_version 99"), "{err}");
        for bad in [
            &b"{}"[..],
            b"not json",
            br#"{"event_id":"x"}"#,
            b"{\"a\":\"\xff\"}",
        ] {
            assert!(EventRow::from_json(bad).is_err());
            assert!(AuditEvent::from_json(bad).is_err());
        }
    }
}
