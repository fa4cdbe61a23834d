//! `warden simulate <scenario>`: rehearse the detectors on a realistic incident.
//!
//! By default the scenario's events go through the detectors configured in `[detect]`, in this
//! process, and the alerts they raise are printed with their delay after the incident began,
//! followed by the scenario's checklist; the exit status says whether every expected alert
//! came in time (and, for the benign day, that none came). With `--produce` the events are
//! published to `warden.events` on the configured brokers instead, for the running detect
//! workers (and the archiver) to take: a fire drill of the whole pipeline.

use anyhow::Context;
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use warden_detectors::scenario::{self, COOL_DOWN, INCIDENT, Scenario, WARM_UP};
use warden_ingest::alert::{Alert, AlertStatus};
use warden_ingest::kafka::{KafkaCluster, produce_events};

use crate::config::ValidatedConfig;
use crate::report::alert_line;

/// What `warden simulate` was asked.
#[derive(Debug)]
pub struct SimulateRequest {
    pub scenario: Scenario,
    pub seed: u64,
    pub start: Option<DateTime<Utc>>,
    pub produce: bool,
}

/// Runs the rehearsal; `Ok(false)` if an expected alert did not come (or the benign day raised
/// one).
pub async fn simulate(config: &ValidatedConfig, request: &SimulateRequest) -> anyhow::Result<bool> {
    let scenario = request.scenario;
    let start = request.start.unwrap_or_else(|| default_start(scenario));
    let events = scenario.events(start, request.seed);
    let incident = start + WARM_UP;
    if request.produce {
        anyhow::ensure!(
            !config.kafka.is_embedded(),
            "--produce needs a real broker: set [kafka].brokers (the embedded broker lives \
             inside `warden up`)"
        );
        let cluster = KafkaCluster::new(&config.kafka, None);
        cluster.wait_until_ready().await;
        produce_events(&cluster, &events)
            .await
            .context("publishing the scenario")?;
        println!(
            "published {} events of {scenario} to {} (incident at {incident})",
            events.len(),
            cluster.topics().events
        );
        return Ok(true);
    }

    let mut engine = config
        .detect
        .engine()
        .map_err(|err| anyhow::anyhow!("detect.{err}"))?;
    let alerts = scenario::rehearse(&mut engine, &events);
    println!(
        "{scenario}: {} events from {start}; incident at {incident}",
        events.len()
    );
    for alert in &alerts {
        println!("{}", describe(alert, incident));
    }
    let expected = scenario.expected();
    let mut all_met = true;
    if expected.is_empty() {
        let firing = alerts
            .iter()
            .filter(|a| a.status == AlertStatus::Firing)
            .count();
        println!("expected: no alert — {firing} raised");
        all_met = firing == 0;
    }
    for expectation in expected {
        let met = alerts
            .iter()
            .find(|alert| expectation.is_met_by(alert, incident));
        match met {
            Some(alert) => println!(
                "expected: {expectation} — ok, after {}s",
                (alert.ts - incident).num_seconds()
            ),
            None => {
                all_met = false;
                println!("expected: {expectation} — MISSING");
            }
        }
    }
    Ok(all_met)
}

/// One alert as a line: its delay after the incident, then [`alert_line`].
fn describe(alert: &Alert, incident: DateTime<Utc>) -> String {
    format!(
        "{:>+6}s  {}",
        (alert.ts - incident).num_seconds(),
        alert_line(alert)
    )
}

/// A start that puts the scenario's end a minute ago, on a whole minute.
fn default_start(scenario: Scenario) -> DateTime<Utc> {
    let length = match scenario {
        Scenario::BenignDay => TimeDelta::hours(24),
        _ => WARM_UP + INCIDENT + COOL_DOWN,
    };
    let start = Utc::now() - length - TimeDelta::minutes(1);
    start.duration_trunc(TimeDelta::minutes(1)).unwrap_or(start)
}
