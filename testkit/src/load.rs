//! Realistic production load: the call trails `event-load` produces for the archiver and
//! detector benchmarks, also fed in-process to the detect pipeline benchmark.
//!
//! Each call leaves the three events the proxy emits (auth decision, request, response) with
//! the fields a production call has: a client among 200 (token id, name, IP, country, user
//! agent), a target and model, a prompt hash, token counts, latency, cost and, for a few, an
//! upstream error. Event times advance 1 ms per call from `start`.

use chrono::{DateTime, Utc};
use warden_ingest::event::{ClientInfo, DecisionInfo, RequestInfo, ResponseInfo, RouteInfo};
use warden_ingest::{AuditEvent, EventKind, RequestId, TokenId};

const COUNTRIES: [&str; 6] = ["US", "DE", "FR", "GB", "JP", "BR"];
const TARGETS: [(&str, &str); 3] = [
    ("llama-8b", "meta-llama/Meta-Llama-3.1-8B-Instruct"),
    ("mistral-7b", "mistralai/Mistral-7B-Instruct-v0.3"),
    ("qwen-72b", "Qwen/Qwen2.5-72B-Instruct"),
];

/// The three events of call number `call`.
pub fn call_trail(call: u64, start: DateTime<Utc>) -> [AuditEvent; 3] {
    let client_number = call.wrapping_mul(2_654_435_761) % 200;
    let (target, model) = TARGETS[(call % 3) as usize];
    let ts = start + chrono::Duration::milliseconds(call as i64);
    let client = ClientInfo {
        ip: Some(format!(
            "203.0.{}.{}",
            client_number / 100,
            client_number % 100 + 1
        )),
        country: Some(COUNTRIES[(client_number % 6) as usize].to_owned()),
        token_id: Some(TokenId(format!("tok_{client_number:016x}"))),
        name: Some(format!("app-{client_number}")),
        user_agent: Some("OpenAI/Python 1.54.0".to_owned()),
    };
    let route = RouteInfo {
        endpoint: "/v1/chat/completions".to_owned(),
        target_id: Some(target.to_owned()),
        model: Some(model.to_owned()),
        stream: call.is_multiple_of(4),
    };
    let request_id = RequestId::new();
    let event = |kind: EventKind, offset_ms: i64| {
        let mut event = AuditEvent::new(kind, request_id.clone(), "proxy-bench-1");
        event.ts = ts + chrono::Duration::milliseconds(offset_ms);
        event.environment = Some("prod".to_owned());
        event.client = client.clone();
        event.route = Some(route.clone());
        event
    };
    let mut decision = event(EventKind::PolicyDecision, 0);
    decision.decision = Some(DecisionInfo {
        policy: "auth".to_owned(),
        outcome: "allow".to_owned(),
        reason: None,
    });
    let mut request = event(EventKind::Request, 0);
    let input_tokens = 40 + call % 900;
    request.request = Some(RequestInfo {
        bytes: 180 + input_tokens * 4,
        prompt_hash: Some(format!(
            "{:064x}",
            call.wrapping_mul(0x9E37_79B9_7F4A_7C15) % 50_000
        )),
        input_tokens: Some(input_tokens),
        content: None,
    });
    let failed = call.is_multiple_of(97);
    let output_tokens = 20 + call % 400;
    let latency_ms = 150.0 + (call % 2_000) as f64;
    let mut response = event(EventKind::Response, latency_ms as i64);
    response.response = Some(ResponseInfo {
        status: if failed { 503 } else { 200 },
        latency_ms: Some(latency_ms),
        ttft_ms: Some(40.0 + (call % 300) as f64),
        output_tokens: (!failed).then_some(output_tokens),
        finish_reason: (!failed).then(|| "stop".to_owned()),
        cost_usd: Some((input_tokens + output_tokens) as f64 * 0.000_000_2),
        error_type: failed.then(|| "upstream_unavailable".to_owned()),
        content: None,
        attempts: Vec::new(),
    });
    [decision, request, response]
}
