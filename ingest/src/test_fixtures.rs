//! Test fixtures shared by the model's unit tests.

use crate::event::{
    AuditEvent, ClientInfo, DecisionInfo, EventKind, RequestId, RequestInfo, ResponseInfo,
    RouteInfo, TokenId,
};

/// A response event with every optional part and field filled in.
pub(crate) fn full_event() -> AuditEvent {
    let mut event = AuditEvent::new(EventKind::Response, RequestId::new(), "proxy-a");
    event.environment = Some("prod".into());
    event.client = ClientInfo {
        ip: Some("203.0.113.7".into()),
        country: Some("DE".into()),
        token_id: Some(TokenId("tok_0123456789ab".into())),
        name: Some("app-prod".into()),
        user_agent: Some("OpenAI/Python 3.51.0".into()),
    };
    event.route = Some(RouteInfo {
        endpoint: "/v1/chat/completions".into(),
        target_id: Some("llama-8b".into()),
        model: Some("meta-llama/Meta-Llama-3.1-8B-Instruct".into()),
        stream: true,
    });
    event.request = Some(RequestInfo {
        bytes: 1234,
        prompt_hash: Some("ab".repeat(32)),
        input_tokens: Some(17),
        content: Some("{\"messages\":[]}".into()),
    });
    event.response = Some(ResponseInfo {
        status: 200,
        latency_ms: Some(12.25),
        ttft_ms: Some(3.5),
        output_tokens: Some(42),
        finish_reason: Some("stop".into()),
        cost_usd: Some(0.000_125),
        error_type: None,
        content: Some("hello".into()),
        attempts: Vec::new(),
    });
    event.decision = Some(DecisionInfo {
        policy: "auth".into(),
        outcome: "allow".into(),
        reason: None,
    });
    event
}
