//! Detector engine throughput, in-process, on one core: every enabled detector (the default
//! `[detect]` config) fed a realistic stream — a generated day of traffic with full call
//! trails, and the traffic-spike scenario (warm-up, a 10x spike, cool-down) — either as
//! decoded events or from the JSON payloads a worker reads from Kafka (decoding included).
//! Those streams are sparse (a few events per event-time second), so the per-second and
//! per-bucket evaluations weigh on every event; `dense` is the traffic-spike scenario with its
//! event time compressed 100x (hundreds of events per second, as at high rates), where they
//! are spread over many events.
//!
//!
//! `cargo bench -p warden-detectors --bench engine`

use std::hint::black_box;

use chrono::DateTime;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use warden_detectors::DetectConfig;
use warden_detectors::engine::Engine;
use warden_detectors::scenario::Scenario;
use warden_ingest::AuditEvent;
use warden_ingest::event_row::EventRow;

fn engine_throughput(c: &mut Criterion) {
    let start = DateTime::from_timestamp(1_790_208_000, 0).expect("start");
    let configured = DetectConfig::default().engine().expect("default engine");
    let mut group = c.benchmark_group("engine");
    group.sample_size(10);
    let dense: Vec<AuditEvent> = Scenario::TrafficSpike
        .events(start, 7)
        .into_iter()
        .map(|mut event| {
            event.ts = start + (event.ts - start) / 100;
            event
        })
        .collect();
    let streams = [
        (
            Scenario::BenignDay.to_string(),
            Scenario::BenignDay.events(start, 7),
        ),
        (
            Scenario::TrafficSpike.to_string(),
            Scenario::TrafficSpike.events(start, 7),
        ),
        ("dense".to_owned(), dense),
    ];
    for (name, events) in streams {
        let payloads: Vec<Vec<u8>> = events.iter().map(AuditEvent::to_json).collect();
        group.throughput(Throughput::Elements(events.len() as u64));
        let fresh = || configured.clone();
        group.bench_function(format!("{name}/decoded"), |b| {
            b.iter_batched(
                fresh,
                |mut engine: Engine| {
                    for event in &events {
                        black_box(engine.take(&EventRow::from(event)));
                    }
                    engine
                },
                BatchSize::LargeInput,
            );
        });
        group.bench_function(format!("{name}/json"), |b| {
            b.iter_batched(
                fresh,
                |mut engine: Engine| {
                    for payload in &payloads {
                        let event = EventRow::from_json(payload).expect("valid event");
                        black_box(engine.take(&event));
                    }
                    engine
                },
                BatchSize::LargeInput,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, engine_throughput);
criterion_main!(benches);
