//! Detection precision on the corpus (`warden_detectors::corpus`): four days of varied
//! benign traffic with six incidents injected. Per detector: the alerts raised (warnings
//! and criticals, each counted once per fire/resolve cycle), those that correspond to an
//! incident, and precision = corresponding / raised. Also the benign corpus alone (every
//! alert there is a false one), and the engine's throughput over the incident corpus.
//!
//! `cargo bench -p warden-detectors --bench precision` (prints Markdown for BENCHMARKS.md)

use std::collections::BTreeMap;
use std::time::Instant;

use warden_detectors::corpus::{self, raised};
use warden_detectors::scenario::rehearse;
use warden_ingest::alert::Alert;

fn main() {
    let seeds = [11, 23, 37];
    let mut per_detector: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut missed = Vec::new();
    let mut benign_raised = 0;
    let mut events_total = 0usize;
    let mut seconds_total = 0.0;
    for seed in seeds {
        let (events, incidents) = corpus::with_incidents(seed);
        let mut engine = corpus::detect_config().engine().expect("engine");
        let started = Instant::now();
        let alerts = rehearse(&mut engine, &events);
        seconds_total += started.elapsed().as_secs_f64();
        events_total += events.len();
        for alert in raised(&alerts) {
            let counts = per_detector.entry(alert.detector.clone()).or_default();
            counts.0 += 1;
            if incidents.iter().any(|incident| incident.explains(alert)) {
                counts.1 += 1;
            }
        }
        for incident in &incidents {
            for (detector, subject) in &incident.required {
                let found = raised(&alerts).iter().any(|alert: &&Alert| {
                    alert.detector == *detector
                        && alert.subject.to_string() == *subject
                        && alert.ts >= incident.from
                        && alert.ts <= incident.from + incident.within
                });
                if !found {
                    missed.push(format!("seed {seed}: {} ({detector})", incident.name));
                }
            }
        }
        let benign = corpus::benign(seed);
        let mut engine = corpus::detect_config().engine().expect("engine");
        benign_raised += raised(&rehearse(&mut engine, &benign)).len();
    }
    println!(
        "Corpus with incidents, seeds {seeds:?} ({} events each, {} incidents each):",
        events_total / seeds.len(),
        6
    );
    println!();
    println!("| detector | raised | correspond to an incident | precision |");
    println!("|---|---:|---:|---:|");
    let (mut raised_all, mut explained_all) = (0, 0);
    for (detector, (raised, explained)) in &per_detector {
        raised_all += raised;
        explained_all += explained;
        println!(
            "| {detector} | {raised} | {explained} | {:.0} % |",
            100.0 * *explained as f64 / *raised as f64
        );
    }
    println!(
        "| all | {raised_all} | {explained_all} | {:.0} % |",
        100.0 * explained_all as f64 / raised_all.max(1) as f64
    );
    println!();
    println!(
        "Required alerts missed: {}",
        if missed.is_empty() {
            "none".to_owned()
        } else {
            missed.join("; ")
        }
    );
    println!("Warnings and criticals on the benign corpus alone (3 seeds): {benign_raised}");
    println!(
        "Engine over the incident corpus: {:.0} events/s (one thread, default detectors)",
        events_total as f64 / seconds_total
    );
}
