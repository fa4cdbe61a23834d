//! Decoding one audit event from its wire form, the first step of every consumer (detect
//! workers, archiver): [`EventRow::from_json`] beside serde_json decoding the same view
//! (`serde_row`) and the owned [`AuditEvent`] (`serde_event`). The payload is a response
//! event like the proxy emits for a chat completion, without captured content.
//!
//! `cargo bench -p warden-ingest --bench decode`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use warden_ingest::AuditEvent;
use warden_ingest::event::{
    ClientInfo, EventKind, RequestId, RequestInfo, ResponseInfo, RouteInfo, TokenId,
};
use warden_ingest::event_row::EventRow;

fn response_event() -> AuditEvent {
    let mut event = AuditEvent::new(EventKind::Response, RequestId::new(), "proxy-eu-1");
    event.environment = Some("prod".to_owned());
    event.client = ClientInfo {
        ip: Some("203.0.1.17".to_owned()),
        country: Some("DE".to_owned()),
        token_id: Some(TokenId("tok_00000000000000a1".to_owned())),
        name: Some("app-161".to_owned()),
        user_agent: Some("OpenAI/Python 1.54.0".to_owned()),
    };
    event.route = Some(RouteInfo {
        endpoint: "/v1/chat/completions".to_owned(),
        target_id: Some("llama-8b".to_owned()),
        model: Some("meta-llama/Meta-Llama-3.1-8B-Instruct".to_owned()),
        stream: true,
    });
    event.request = Some(RequestInfo {
        bytes: 1_844,
        prompt_hash: Some(format!("{:064x}", 0x9E37_79B9_7F4A_7C15_u64)),
        input_tokens: Some(416),
        content: None,
    });
    event.response = Some(ResponseInfo {
        status: 200,
        latency_ms: Some(1_283.5),
        ttft_ms: Some(212.25),
        output_tokens: Some(311),
        finish_reason: Some("stop".to_owned()),
        cost_usd: Some(0.000_145_4),
        error_type: None,
        content: None,
        attempts: Vec::new(),
    });
    event
}

fn decode(c: &mut Criterion) {
    let payload = response_event().to_json();
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(1));
    group.bench_function("event_row", |b| {
        b.iter(|| EventRow::from_json(black_box(&payload)).expect("decodes"));
    });
    group.bench_function("serde_row", |b| {
        b.iter(|| {
            let text = std::str::from_utf8(black_box(&payload)).expect("utf-8");
            serde_json::from_str::<EventRow<'_>>(text).expect("decodes")
        });
    });
    group.bench_function("serde_event", |b| {
        b.iter(|| AuditEvent::from_json(black_box(&payload)).expect("decodes"));
    });
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
