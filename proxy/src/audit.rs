//! The audit trail of one call: every call emits exactly one `request` and one `response`
//! event (whatever the outcome, 401s included), plus a `policy_decision` per policy that
//! decided. All share the call's `request_id`. Emitting never blocks (see
//! [`warden_ingest::EventEmitter`]).
//!
//! Under `[audit].durability = "acked"` an admitted call keeps a receipt per event, and the
//! proxy waits on them at two points: before the upstream is called ([`CallAudit::durable`]:
//! the request is on record before any inference happens) and before the answer is
//! released ([`AuditTrail::durable`], from [`CallAudit::finish`]: a client that has its
//! answer, or the end of its stream, has a trail that survives a crash).

use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use axum::http::header::USER_AGENT;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use warden_ingest::event::{ClientInfo, DecisionInfo, RequestInfo, ResponseInfo, RouteInfo};
use warden_ingest::{
    AuditEvent, AuditUnavailable, Durability, EventEmitter, EventKind, Receipt, RequestId,
};

use crate::client_address::ClientAddress;
use crate::config::{CapturePolicy, Pricing, Target};
use crate::fingerprint::Fingerprinter;
use crate::metrics::SharedMetrics;
use crate::policy::auth::AuthOutcome;
use crate::policy::budgets::BudgetHold;
use crate::policy::limits::TokenHold;

/// Longest user agent kept in events.
const MAX_USER_AGENT_CHARS: usize = 256;

/// Collects what is known about a call as it proceeds, and emits its events.
#[derive(Debug)]
pub(crate) struct CallAudit {
    emitter: EventEmitter,
    metrics: SharedMetrics,
    proxy_id: String,
    environment: Option<String>,
    pub(crate) request_id: RequestId,
    pub(crate) started: Instant,
    pub(crate) client: ClientInfo,
    pub(crate) route: RouteInfo,
    pub(crate) request: RequestInfo,
    /// The target's prices, once the call is routed.
    pub(crate) pricing: Option<Pricing>,
    /// Time the upstream took, for a non-streamed call that reached it.
    pub(crate) upstream_seconds: Option<f64>,
    /// The target's capture policy and size cap, once the call is routed.
    capture: (CapturePolicy, usize),
    request_emitted: bool,
    /// The caller was refused authentication: its events go to the sheddable lane.
    refused: bool,
    /// Set once the `response` event is out; a call dropped before that (the client hung up
    /// while Warden waited on the upstream) emits it from `Drop`.
    response_emitted: bool,
    /// `acked` only: receipts of the events emitted and not yet waited on.
    receipts: Vec<Receipt>,
    /// The call's token reservation under rate limits: settled on its recorded usage when
    /// its response event goes out (answered, failed or aborted alike).
    pub(crate) token_hold: Option<TokenHold>,
    /// The call's reservation under spend budgets: replaced by its `cost_usd` when its
    /// response event goes out.
    pub(crate) budget_hold: Option<BudgetHold>,
    /// Each target tried, when the call went to a fallback: `target_id: outcome`.
    attempts: Vec<String>,
    /// A router rule's decision, for the `request` event.
    routing: Option<DecisionInfo>,
    /// The `pii` guardrail on the answer (with the request's placeholders), when the chain
    /// applies it to responses.
    /// Boxed: most calls have none, and the call record moves through every handler.
    pub(crate) output_guard: Option<Box<crate::stream::OutputGuard>>,
}

/// What is left to wait for before a finished call's answer may be released: nothing under
/// `buffered`, its events' receipts under `acked`.
#[derive(Debug)]
#[must_use = "the answer may be released only once its trail is durable"]
pub(crate) struct AuditTrail {
    receipts: Vec<Receipt>,
    timeout: Duration,
    metrics: SharedMetrics,
}

impl AuditTrail {
    /// True when there is nothing to wait for.
    pub(crate) fn is_durable(&self) -> bool {
        self.receipts.is_empty()
    }

    /// Nothing to wait for: the answer goes out as it is.
    pub(crate) fn unwaited(mut self) -> Self {
        self.receipts.clear();
        self
    }

    /// Waits (at most `[audit].acked_timeout_s` in all) until every event is durable.
    pub(crate) async fn durable(self) -> Result<(), AuditUnavailable> {
        if self.receipts.is_empty() {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + self.timeout;
        for receipt in self.receipts {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if receipt.durable(left).await.is_err() {
                self.metrics.refused_unaudited();
                return Err(AuditUnavailable);
            }
        }
        Ok(())
    }
}

/// HTTP status recorded for calls the client abandoned (nginx's convention).
pub(crate) const CLIENT_CLOSED_REQUEST: u16 = 499;

impl CallAudit {
    pub(crate) fn start(
        emitter: EventEmitter,
        metrics: SharedMetrics,
        proxy_id: &str,
        environment: Option<&str>,
        endpoint: &str,
        client_address: ClientAddress,
        headers: &HeaderMap,
    ) -> Self {
        let user_agent = headers
            .get(USER_AGENT)
            .and_then(|value| value.to_str().ok())
            .map(|agent| agent.chars().take(MAX_USER_AGENT_CHARS).collect());
        Self {
            emitter,
            metrics,
            proxy_id: proxy_id.to_owned(),
            environment: environment.map(str::to_owned),
            request_id: RequestId::new(),
            started: Instant::now(),
            client: ClientInfo {
                ip: client_address.ip.map(|ip| ip.to_string()),
                country: client_address.country,
                user_agent,
                ..ClientInfo::default()
            },
            route: RouteInfo {
                endpoint: endpoint.to_owned(),
                ..RouteInfo::default()
            },
            request: RequestInfo::default(),
            pricing: None,
            upstream_seconds: None,
            capture: (CapturePolicy::None, 0),
            request_emitted: false,
            refused: false,
            response_emitted: false,
            receipts: Vec::new(),
            token_hold: None,
            budget_hold: None,
            attempts: Vec::new(),
            routing: None,
            output_guard: None,
        }
    }

    fn event(&self, kind: EventKind) -> AuditEvent {
        let mut event = AuditEvent::new(kind, self.request_id.clone(), self.proxy_id.as_str());
        event.environment = self.environment.clone();
        event.client = self.client.clone();
        event.route = Some(self.route.clone());
        event
    }

    /// Records the authentication outcome on the call (the client's environment replaces
    /// the proxy's) and emits its policy decision. A refused caller's events (this decision,
    /// its request and response) are sheddable: dropped, and counted, while the audit
    /// pipeline is more than half full, so a flood of bad keys cannot crowd out the events
    /// of authenticated calls.
    pub(crate) fn authenticated(&mut self, outcome: &AuthOutcome) {
        self.refused = matches!(outcome, AuthOutcome::Rejected { .. });
        self.client.token_id = outcome.token_id().cloned();
        self.client.name = outcome.client_name().map(str::to_owned);
        if let Some(environment) = outcome.client().and_then(|c| c.environment.as_ref()) {
            self.environment = Some(environment.clone());
        }
        let (decision, reason) = match outcome {
            AuthOutcome::Open { .. } => ("allow", Some("open mode: no clients configured")),
            AuthOutcome::Authenticated { .. } => ("allow", None),
            AuthOutcome::Rejected { reason, .. } => ("deny", Some(reason.as_str())),
        };
        self.decided("auth", decision, reason);
    }

    /// Records an attempt at `target_id` and how it ended (`ok`, or an error code).
    pub(crate) fn attempted(&mut self, target_id: &str, outcome: &str) {
        // Bounded by the configured fallbacks; capped anyway.
        if self.attempts.len() < 16 {
            self.attempts.push(format!("{target_id}: {outcome}"));
        }
    }

    /// The environment the call's events are stamped with.
    pub(crate) fn environment(&self) -> Option<&str> {
        self.environment.as_deref()
    }

    /// Emits a `policy_decision` event.
    pub(crate) fn decided(&mut self, policy: &str, outcome: &str, reason: Option<&str>) {
        let mut event = self.event(EventKind::PolicyDecision);
        event.decision = Some(DecisionInfo {
            policy: policy.to_owned(),
            outcome: outcome.to_owned(),
            reason: reason.map(str::to_owned),
        });
        self.emit(event);
    }

    fn emit(&mut self, event: AuditEvent) {
        if self.refused {
            self.emitter.emit_sheddable(event);
        } else if self.emitter.durability() == Durability::Acked {
            self.receipts.push(self.emitter.emit_acked(event));
        } else {
            self.emitter.emit(event);
        }
    }

    /// The events emitted so far, to wait on (see [`AuditTrail::durable`]).
    fn trail(&mut self) -> AuditTrail {
        AuditTrail {
            receipts: std::mem::take(&mut self.receipts),
            timeout: self.emitter.acked_timeout(),
            metrics: self.metrics.clone(),
        }
    }

    /// Waits until the events emitted so far are durable (`acked`; at once otherwise):
    /// called before the upstream, so no inference happens off the record.
    pub(crate) async fn durable(&mut self) -> Result<(), crate::error::ProxyError> {
        // `buffered` (and refused callers): nothing to wait for, nothing to build.
        if self.receipts.is_empty() {
            return Ok(());
        }
        self.trail()
            .durable()
            .await
            .map_err(|AuditUnavailable| crate::error::ProxyError::AuditUnavailable)
    }

    /// Records the target the call was routed to: its id, prices and capture policy.
    pub(crate) fn routed(&mut self, target: &Target) {
        self.route.target_id = Some(target.id.clone());
        self.pricing = target.pricing;
        self.capture = (target.capture, target.capture_max_bytes);
    }

    /// `text` as the target's capture policy keeps it.
    pub(crate) fn captured(&self, text: &str) -> Option<String> {
        let mut capture = self.content_capture()?;
        capture.push(text);
        Some(capture.finish())
    }

    /// A capture to feed piece by piece (a stream's text), holding no more than the policy
    /// keeps: a running hash, or the first `capture_max_bytes`.
    pub(crate) fn content_capture(&self) -> Option<ContentCapture> {
        let (policy, max_bytes) = self.capture;
        match policy {
            CapturePolicy::None => None,
            CapturePolicy::Hash => Some(ContentCapture::Hash(Sha256::new())),
            CapturePolicy::Full => Some(ContentCapture::Full {
                text: String::new(),
                max_bytes,
            }),
        }
    }

    /// Whether response content is kept at all (streams only accumulate it then).
    pub(crate) fn captures_content(&self) -> bool {
        self.capture.0 != CapturePolicy::None
    }

    /// Emits the `request` event (once) with what is known so far.
    pub(crate) fn request_received(&mut self) {
        if self.request_emitted {
            return;
        }
        self.request_emitted = true;
        let mut event = self.event(EventKind::Request);
        event.request = Some(self.request.clone());
        event.decision = self.routing.take();
        self.emit(event);
    }

    /// Records the router's decision for a call a rule routed: it rides on the call's
    /// `request` event (`decision.policy = "router"`) rather than an event of its own, so
    /// routing by rule adds no event to every call.
    pub(crate) fn routed_by_rule(&mut self, reason: &str) {
        self.routing = Some(DecisionInfo {
            policy: "router".to_owned(),
            outcome: "route".to_owned(),
            reason: Some(reason.to_owned()),
        });
    }

    /// Emits the `response` event (and the `request` event first, if the call failed before
    /// it was sent). `response.latency_ms`, and `response.cost_usd` for a priced target, are
    /// computed here. Returns what the answer must wait for.
    pub(crate) fn finish(mut self, response: ResponseInfo) -> AuditTrail {
        self.emit_response(response);
        self.trail()
    }

    /// Ends a call whose client went away before its answer was complete.
    pub(crate) fn abort(mut self, mut response: ResponseInfo) {
        response.status = CLIENT_CLOSED_REQUEST;
        response.error_type = Some("client_aborted".to_owned());
        self.emit_response(response);
    }

    fn emit_response(&mut self, mut response: ResponseInfo) {
        if self.response_emitted {
            return;
        }
        self.response_emitted = true;
        self.request_received();
        if let Some(hold) = self.token_hold.take() {
            hold.settle_usage(self.request.input_tokens, response.output_tokens);
        }
        response.attempts = std::mem::take(&mut self.attempts);
        let elapsed = self.started.elapsed().as_secs_f64();
        response.latency_ms = Some(elapsed * 1000.0);
        if let Some(pricing) = &self.pricing {
            let input_tokens = self.request.input_tokens.unwrap_or(0);
            let output_tokens = response.output_tokens.unwrap_or(0);
            response.cost_usd = Some(pricing.cost_usd(input_tokens, output_tokens, elapsed));
        }
        if let Some(hold) = self.budget_hold.take() {
            hold.settle(response.cost_usd, chrono::Utc::now());
        }
        self.metrics.record_call(
            &self.route.endpoint,
            self.route.target_id.as_deref(),
            response.status,
            elapsed,
            self.upstream_seconds,
        );
        let mut event = self.event(EventKind::Response);
        event.request = Some(self.request.clone());
        event.response = Some(response);
        self.emit(event);
    }
}

impl Drop for CallAudit {
    fn drop(&mut self) {
        // Dropped unfinished: the handler's future was cancelled because the client hung up.
        if !self.response_emitted {
            self.emit_response(ResponseInfo {
                status: CLIENT_CLOSED_REQUEST,
                error_type: Some("client_aborted".to_owned()),
                ..ResponseInfo::default()
            });
        }
    }
}

/// Content being captured for an event, bounded while it is fed.
#[derive(Debug)]
pub(crate) enum ContentCapture {
    /// SHA-256 of everything fed.
    Hash(Sha256),
    /// The first `max_bytes` fed, cut at a character boundary.
    Full { text: String, max_bytes: usize },
}

impl ContentCapture {
    pub(crate) fn push(&mut self, piece: &str) {
        match self {
            Self::Hash(hasher) => hasher.update(piece.as_bytes()),
            Self::Full { text, max_bytes } => {
                let room = max_bytes.saturating_sub(text.len());
                if room == 0 {
                    return;
                }
                if piece.len() <= room {
                    text.push_str(piece);
                    return;
                }
                let mut end = room;
                while !piece.is_char_boundary(end) {
                    end -= 1;
                }
                text.push_str(&piece[..end]);
                // Full now: a later, shorter piece must not be glued on after the cut.
                *max_bytes = text.len();
            }
        }
    }

    pub(crate) fn finish(self) -> String {
        match self {
            Self::Hash(hasher) => hex::encode(hasher.finalize()),
            Self::Full { text, .. } => text,
        }
    }
}

/// Request fields that change how an answer is delivered or attributed, not what is asked.
const FIELDS_NOT_HASHED: &[&str] = &["stream", "stream_options", "user"];

/// The keyed hash (hex) of the request with object keys sorted at every level, ignoring
/// [`FIELDS_NOT_HASHED`]: identical questions hash equal however their JSON was laid out,
/// which is what retry-loop detection needs; keyed, so a guessed prompt cannot be confirmed
/// from the archive.
pub(crate) fn prompt_hash(fingerprinter: &Fingerprinter, request: &Map<String, Value>) -> String {
    let mut canonical = Vec::new();
    let question = request
        .iter()
        .filter(|(key, _)| !FIELDS_NOT_HASHED.contains(&key.as_str()));
    write_canonical_object(question, &mut canonical);
    fingerprinter.prompt_hash(&canonical)
}

/// Writes JSON with every object's keys sorted (the canonical form that gets hashed).
fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => write_canonical_object(map.iter(), out),
        Value::Array(items) => {
            out.push(b'[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        // Writing a scalar into a Vec cannot fail.
        scalar => {
            let _ = serde_json::to_writer(&mut *out, scalar);
        }
    }
}

fn write_canonical_object<'a>(
    entries: impl Iterator<Item = (&'a String, &'a Value)>,
    out: &mut Vec<u8>,
) {
    let mut entries: Vec<(&String, &Value)> = entries.collect();
    entries.sort_unstable_by_key(|(key, _)| *key);
    out.push(b'{');
    for (index, (key, value)) in entries.into_iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        let _ = serde_json::to_writer(&mut *out, key);
        out.push(b':');
        write_canonical(value, out);
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(json: &str) -> Map<String, Value> {
        serde_json::from_str(json).expect("object")
    }

    #[test]
    fn content_capture_fed_in_pieces_equals_capturing_the_whole() {
        let pieces = ["Hé", "llo ", "wörld", "!", " and more text"];
        let whole: String = pieces.concat();
        for max_bytes in 0..whole.len() + 2 {
            let mut capture = ContentCapture::Full {
                text: String::new(),
                max_bytes,
            };
            for piece in pieces {
                capture.push(piece);
            }
            let mut expected = max_bytes.min(whole.len());
            while !whole.is_char_boundary(expected) {
                expected -= 1;
            }
            assert_eq!(capture.finish(), whole[..expected], "max {max_bytes}");
        }
        let mut hash = ContentCapture::Hash(Sha256::new());
        for piece in pieces {
            hash.push(piece);
        }
        assert_eq!(hash.finish(), hex::encode(Sha256::digest(whole.as_bytes())));
    }

    #[test]
    fn prompt_hash_ignores_layout_and_delivery_fields() {
        let a =
            object(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}"#);
        let b = object(
            r#"{ "messages" : [ {"content":"hi", "role":"user"} ], "model":"m", "user":"u1" }"#,
        );
        let fingerprinter = Fingerprinter::ephemeral();
        assert_eq!(
            prompt_hash(&fingerprinter, &a),
            prompt_hash(&fingerprinter, &b)
        );
        let c = object(r#"{"model":"m","messages":[{"role":"user","content":"hi!"}]}"#);
        assert_ne!(
            prompt_hash(&fingerprinter, &a),
            prompt_hash(&fingerprinter, &c)
        );
        assert_eq!(prompt_hash(&fingerprinter, &a).len(), 64);
    }
}
