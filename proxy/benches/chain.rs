//! What the policy chain costs a call, in-process, on one core: `auth` alone (the chain
//! before this issue: a key check against the configured clients), then every member
//! configured and none refusing — rate limits on the client (requests and tokens), its IP
//! and globally, a team budget, and router rules — as `scripts/bench-proxy.sh` with
//! `POLICIES=1` configures them — and the same without router rules (a matching rule
//! records a `route` decision: one more audit event per call). Each iteration is a fresh call (its setup and the events
//! the chain emits included), so `call + chain` minus `call` is the chain.
//!
//! `cargo bench -p warden-proxy --bench chain`

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use sha2::{Digest, Sha256};
use warden_proxy::ProxyConfig;
use warden_proxy::bench_support::ChainBench;

const KEY: &str = "sk-bench-chain-0123456789abcdef";

fn bench(policies: &str) -> ChainBench {
    let config: ProxyConfig = toml::from_str(&format!(
        r#"
        listen = "127.0.0.1:0"
        [[targets]]
        id = "llama"
        kind = "tgi-messages"
        base_url = "http://127.0.0.1:9"
        pricing = {{ input_per_1k_tokens = 0.0002, output_per_1k_tokens = 0.0006 }}
        [[clients]]
        name = "other"
        key_sha256 = "{other}"
        [[clients]]
        name = "bench"
        key_sha256 = "{key}"
        role = "production"
        team = "benchmarks"
        {policies}
        "#,
        other = hex::encode(Sha256::digest(b"sk-someone-else")),
        key = hex::encode(Sha256::digest(KEY.as_bytes())),
    ))
    .expect("config");
    let settings = config.validate(&HashMap::new()).expect("valid");
    ChainBench::new(settings, KEY, "llama")
}

/// Limits and a budget, no router rule: the call is routed by its model, with no `route`
/// decision event.
const LIMITS_AND_BUDGET: &str = r#"
    [[rate_limits]]
    subject = "client"
    requests_per_second = 1000000000
    tokens_per_minute = 1000000000000000
    [[rate_limits]]
    subject = "ip"
    requests_per_minute = 1000000000000
    [[rate_limits]]
    subject = "global"
    requests_per_second = 1000000000
    [[budgets]]
    team = "benchmarks"
    usd_per_day = 1000000000.0
"#;

/// Router rules, one of which routes every call (its decision rides on the request event).
const ROUTER_RULES: &str = r#"
    [router]
    rules = [
      { when_header = { name = "x-tier", value = "batch" }, target = "llama" },
      { when_role = "production", target = "llama" },
      { default = true, target = "llama" },
    ]
"#;

fn chain_cost(c: &mut Criterion) {
    let mut group = c.benchmark_group("chain");
    let every_member = format!("{LIMITS_AND_BUDGET}{ROUTER_RULES}");
    let configs = [
        ("auth-only", ""),
        ("limits-and-budget", LIMITS_AND_BUDGET),
        ("every-member", every_member.as_str()),
    ];
    for (name, policies) in configs {
        let chain = bench(policies);
        let fresh_call = || {
            chain.drain();
            chain.call()
        };
        group.bench_function(format!("{name}/call"), |b| {
            b.iter_batched(fresh_call, black_box, BatchSize::SmallInput);
        });
        group.bench_function(format!("{name}/call+chain"), |b| {
            b.iter_batched(
                fresh_call,
                |mut call| {
                    assert!(chain.admit(&mut call));
                    black_box(call)
                },
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, chain_cost);
criterion_main!(benches);
