//! Responder dispatch throughput, in-process, on one core: alerts through routing (a tree of
//! three routes, regex and equality matchers, `continue`), grouping by detector and subject,
//! an inhibition rule, and the flushes that turn groups into notifications for two
//! receivers — everything the responder does per alert but the network.
//!
//! `cargo bench -p warden-sinks --bench dispatch`

use std::hint::black_box;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use warden_ingest::alert::{Alert, Severity, Subject};
use warden_sinks::respond::{Dispatcher, RespondConfig, RespondSettings};

fn settings() -> Arc<RespondSettings> {
    let text = r#"
        [respond]
        group_wait_s = 30
        group_interval_s = 300
        default_receivers = ["hook"]
        [[respond.receivers]]
        name = "hook"
        kind = "webhook"
        url = "http://127.0.0.1:9/hook"
        [[respond.receivers]]
        name = "slack"
        kind = "webhook"
        url = "http://127.0.0.1:9/slack"
        [[respond.routes]]
        match = { severity = "critical" }
        receivers = ["slack", "hook"]
        continue = true
        [[respond.routes]]
        match_re = { detector = "cost_.*|traffic_.*" }
        receivers = ["hook"]
        group_by = ["detector", "subject"]
        [[respond.routes]]
        match = { subject_kind = "ip" }
        receivers = ["hook"]
        [[respond.inhibit_rules]]
        source_match = { severity = "critical" }
        target_match = { severity = "warning" }
        equal = ["detector", "subject"]
    "#;
    let config = RespondConfig::from_toml(text).expect("parses");
    Arc::new(config.validate(&|_| None).expect("valid"))
}

/// `count` publications over 1,000 subjects and four detectors, a tenth of them critical.
fn alerts(count: usize, start: DateTime<Utc>) -> Vec<Alert> {
    let detectors = ["cost_burn", "traffic_spike", "auth_failures", "retry_loop"];
    (0..count)
        .map(|index| {
            let subject = if index % 3 == 0 {
                Subject::Ip(format!("203.0.113.{}", index % 250))
            } else {
                Subject::Client(format!("app-{}", index % 1_000))
            };
            let severity = if index % 10 == 0 {
                Severity::Critical
            } else {
                Severity::Warning
            };
            let ts = start + TimeDelta::milliseconds(index as i64);
            let mut alert = Alert::firing(detectors[index % 4], severity, subject, (ts, ts));
            alert.dedup_key = format!("{}/{index}", alert.dedup_key);
            alert.with_derived_id()
        })
        .collect()
}

fn dispatch_throughput(c: &mut Criterion) {
    const ALERTS: usize = 10_000;
    let settings = settings();
    let start = DateTime::from_timestamp(1_790_208_000, 0).expect("start");
    let batch = alerts(ALERTS, start);
    let mut group = c.benchmark_group("dispatch");
    group.sample_size(10);
    group.throughput(Throughput::Elements(ALERTS as u64));
    group.bench_function("route_group_and_flush_10k_alerts", |b| {
        b.iter_batched(
            || (Dispatcher::new(Arc::clone(&settings)), batch.clone()),
            |(mut dispatcher, alerts)| {
                for alert in alerts {
                    dispatcher.ingest(alert, start);
                }
                let flushed = dispatcher.flush(start + TimeDelta::seconds(30));
                black_box(flushed.notifications.len())
            },
            BatchSize::LargeInput,
        );
    });
    group.finish();
}

criterion_group!(benches, dispatch_throughput);
criterion_main!(benches);
