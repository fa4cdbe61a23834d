//! What one `warden detect` worker does per event from a broker, minus Kafka, on one core:
//! the call trails `event-load` produces for the broker benchmark (`scripts/bench-detect.sh`),
//! as the JSON payloads of two partitions read in alternating runs as librdkafka hands them
//! over. The keyed stage takes each record and passes its event on in batches; the shared
//! stage takes the batches. Both stages run the default `[detect]` config. Events/s counts
//! each event once (it goes through both stages).
//!
//! `cargo bench -p warden-detectors --bench pipeline`

use std::hint::black_box;

use chrono::{TimeDelta, Utc};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use warden_detectors::engine::Subjects;
use warden_detectors::stage::{Clock, StageCore};
use warden_detectors::{DetectConfig, DetectStage};

/// Records of one partition librdkafka hands over before the next partition's.
const PARTITION_RUN: usize = 4_096;
/// Records taken at one reading of the clock (as the detect loop does).
const BURST: usize = 256;

fn pipeline_throughput(c: &mut Criterion) {
    let config = DetectConfig::default();
    let engine = config.engine().expect("default engine");
    let lateness = TimeDelta::seconds(config.allowed_lateness_s);
    let start = Utc::now() - TimeDelta::days(1);
    // Split by client as the proxy's key (the token) does.
    let mut partitions: [Vec<Vec<u8>>; 2] = [Vec::new(), Vec::new()];
    let calls = 100_000;
    for call in 0..calls {
        for event in warden_testkit::load::call_trail(call, start) {
            let token = event.client.token_id.as_ref().map_or("", |t| t.0.as_str());
            let partition = token.bytes().map(usize::from).sum::<usize>() % 2;
            partitions[partition].push(event.to_json());
        }
    }
    let events = partitions.iter().map(Vec::len).sum::<usize>();
    let mut group = c.benchmark_group("pipeline");
    group.sample_size(10);
    group.throughput(Throughput::Elements(events as u64));
    // As after an assignment: both stages wait for both source partitions.
    let fresh = || {
        let now = Clock::read().now;
        let mut stages = [
            (DetectStage::Keyed, Subjects::Keyed),
            (DetectStage::Shared, Subjects::Shared),
        ]
        .map(|(stage, subjects)| {
            let mut core = StageCore::new(stage, engine.clone().reporting_on(subjects), lateness);
            core.expect(0, now);
            core.expect(1, now);
            core
        });
        if let Some(relay) = stages[0].relay() {
            relay.announce_end_of(0);
            relay.announce_end_of(1);
        }
        let [keyed, shared] = stages;
        (keyed, shared)
    };
    group.bench_function("call-trails/both-stages", |b| {
        b.iter_batched(
            fresh,
            |(mut keyed, mut shared)| {
                let mut read = [0, 0];
                let mut clock = Clock::read();
                let mut since_clock = 0;
                while read[0] < partitions[0].len() || read[1] < partitions[1].len() {
                    for (partition, records) in partitions.iter().enumerate() {
                        let run =
                            read[partition]..(read[partition] + PARTITION_RUN).min(records.len());
                        let input = partition as i32;
                        for offset in run.clone() {
                            if since_clock == BURST {
                                clock = Clock::read();
                                since_clock = 0;
                            }
                            since_clock += 1;
                            let taken = keyed.take_event(
                                input,
                                offset as i64,
                                &records[offset],
                                false,
                                clock,
                            );
                            black_box(taken.alerts);
                            if let Some(full) = taken.full_batch {
                                let batch = keyed.relay().and_then(|r| r.cut(full, false));
                                if let Some(batch) = batch {
                                    black_box(shared.take_batch(&batch, false, clock));
                                }
                            }
                        }
                        read[partition] = run.end;
                        if run.end == records.len() && !run.is_empty() {
                            keyed.reached_end(input, clock);
                            black_box(keyed.advance(clock));
                            let batch = keyed.relay().and_then(|r| r.cut(input, true));
                            if let Some(batch) = batch {
                                black_box(shared.take_batch(&batch, false, clock));
                            }
                        }
                    }
                }
                assert_eq!(shared.report().num_events as usize, events);
                (keyed, shared)
            },
            BatchSize::LargeInput,
        );
    });
    group.finish();
}

criterion_group!(benches, pipeline_throughput);
criterion_main!(benches);
