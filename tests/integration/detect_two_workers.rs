//! Two `warden detect` workers in one consumer group (a real broker, tansu, four partitions)
//! publish exactly the alerts one engine publishes over the same events: a service-wide
//! spike that no single partition shows, per-client spikes, and a token used from two
//! countries at once (a keyed subject, found by whichever worker reads that token's
//! partition), each once.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::support;

use chrono::{DateTime, TimeDelta, Utc};
use warden_detectors::DetectConfig;
use warden_detectors::scenario::rehearse;
use warden_ingest::alert::AlertStatus;
use warden_ingest::{AuditEvent, TokenId};

use support::{WardenProcess, archive_setup, chat_request, produce_events, sql, sql_until};

const CLIENTS: i64 = 8;

fn call(ts: DateTime<Utc>, client: i64, country: &str) -> AuditEvent {
    let mut event = chat_request(ts, &format!("app-{client}"), &format!("10.0.0.{client}"));
    event.client.token_id = Some(TokenId(format!("tk_{client:02}")));
    event.client.country = Some(country.to_owned());
    event
}

/// An hour of steady traffic from eight clients (10 calls each per 5 minutes), then 5 minutes
/// at 12.5x (every client at 125), one of them also from a new country, then a quiet tail.
fn traffic(start: DateTime<Utc>) -> Vec<AuditEvent> {
    let at = |seconds: i64| start + TimeDelta::seconds(seconds);
    let mut events = Vec::new();
    for i in 0..12 * 80 {
        events.push(call(at(i * 300 / 80), i % CLIENTS, "US"));
    }
    for i in 0..1_000 {
        let client = i % CLIENTS;
        let country = if client == 3 && i % 16 == 3 {
            "BR"
        } else {
            "US"
        };
        events.push(call(at(3_600 + i * 300 / 1_000), client, country));
    }
    for i in 0..20 {
        events.push(call(at(3_900 + i * 3), i % CLIENTS, "US"));
    }
    events
}

/// The events a worker's keyed stage fed its engine, from its closing log line.
fn keyed_events(log: &str) -> u64 {
    const MARK: &str = "detect loop stopped stage=Keyed events=";
    log.lines()
        .find_map(|line| line.split_once(MARK))
        .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn two_workers_publish_what_one_engine_would() {
    let extra = format!("flush_interval_s = 1\n{}", support::SHORT_KAFKA_SESSIONS);
    let setup = archive_setup(4, &extra).await;
    let start = DateTime::from_timestamp(
        (Utc::now() - TimeDelta::hours(2)).timestamp() / 300 * 300,
        0,
    )
    .expect("start");
    let events = traffic(start);

    // One engine over every event, in the order they are sent.
    let mut engine = DetectConfig::default().engine().expect("engine");
    let expected: BTreeSet<(String, String, String)> = rehearse(&mut engine, &events)
        .into_iter()
        .filter(|alert| alert.status == AlertStatus::Firing)
        .map(|alert| {
            let severity = alert.severity.as_str().to_owned();
            (alert.detector, alert.subject.to_string(), severity)
        })
        .collect();
    assert!(
        expected.contains(&("traffic_spike".into(), "global".into(), "warning".into()))
            && expected.contains(&(
                "geo_multi_country".into(),
                "token:tk_03".into(),
                "critical".into()
            )),
        "the scenario raises a shared and a keyed alert: {expected:?}"
    );

    let mut archiver = WardenProcess::start("archive", &setup.config);
    let mut one = WardenProcess::start("detect", &setup.config);
    let mut two = WardenProcess::start("detect", &setup.config);
    // Both members in the group (and its partitions shared) before the traffic comes, as it
    // does live: in event-time order.
    tokio::time::sleep(Duration::from_secs(10)).await;
    produce_events(&setup.cluster, &events).await;

    let query = "SELECT detector, subject, severity FROM alerts WHERE status = 'firing'";
    sql_until(&setup.config, query, expected.len()).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let published = sql(&setup.config, query);
    for worker in [&mut one, &mut two, &mut archiver] {
        let status = worker.interrupt().await;
        assert!(status.success(), "{}", worker.log());
    }
    let logs = format!("one:\n{}\ntwo:\n{}", one.log(), two.log());
    let found: Vec<(String, String, String)> = published
        .iter()
        .map(|row| {
            let text = |name: &str| row[name].as_str().unwrap_or_default().to_owned();
            (text("detector"), text("subject"), text("severity"))
        })
        .collect();
    let distinct: BTreeSet<_> = found.iter().cloned().collect();
    assert_eq!(
        found.len(),
        distinct.len(),
        "published once each: {found:?}\n{logs}"
    );
    assert_eq!(distinct, expected, "{logs}");
    // Both workers took part: each fed its keyed stage some of the events.
    for log in [one.log(), two.log()] {
        assert!(keyed_events(&log) > 0, "{logs}");
    }
}
