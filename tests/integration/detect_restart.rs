//! `warden detect` is restart-safe (on a real broker, tansu, with two partitions): a worker
//! that crashes in the middle of a traffic spike is replaced by one that rebuilds its state
//! from the recent past of the topic. The new worker escalates the spike that began before
//! the crash (which needs the hour of baseline and the first half of the spike, both read by
//! the dead worker) and publishes nothing the dead worker had already published.

use crate::support;

use chrono::{DateTime, TimeDelta, Utc};
use warden_ingest::AuditEvent;

use support::{WardenProcess, archive_setup, chat_request, produce_events, sql_until};

#[tokio::test(flavor = "multi_thread")]
async fn a_spike_spanning_a_crash_is_escalated_once_and_nothing_is_repeated() {
    let extra = format!("flush_interval_s = 1\n{}", support::SHORT_KAFKA_SESSIONS);
    let setup = archive_setup(2, &extra).await;
    let start = DateTime::from_timestamp(
        (Utc::now() - TimeDelta::hours(2)).timestamp() / 300 * 300,
        0,
    )
    .expect("start");
    let at = |seconds: i64| start + TimeDelta::seconds(seconds);
    // An hour of steady traffic from two clients (20 requests per 5 minutes each).
    let mut before_crash: Vec<AuditEvent> = Vec::new();
    for window in 0..12 {
        for i in 0..40 {
            let client = if i % 2 == 0 { "app-a" } else { "app-b" };
            before_crash.push(chat_request(
                at(window * 300 + i * 300 / 40),
                client,
                "10.0.0.1",
            ));
        }
    }
    // app-b at 50x: 1,000 requests over 5 minutes, 400 of them before the crash. That is
    // 20x its baseline (a warning); the critical line (30x = 600) is crossed only after it.
    let spike = |i: i64| chat_request(at(3_600 + i * 300 / 1_000), "app-b", "203.0.113.9");
    before_crash.extend((0..400).map(spike));
    let mut after_crash: Vec<AuditEvent> = (400..1_000).map(spike).collect();
    after_crash.extend((0..10).map(|i| chat_request(at(3_900 + i * 6), "app-a", "10.0.0.1")));

    produce_events(&setup.cluster, &before_crash).await;
    let mut archiver = WardenProcess::start("archive", &setup.config);
    let mut first = WardenProcess::start("detect", &setup.config);
    let warning = "SELECT severity FROM alerts \
                   WHERE subject = 'client:app-b' AND status = 'firing'";
    let found = sql_until(&setup.config, warning, 1).await;
    assert_eq!(
        found[0]["severity"],
        "warning",
        "{found:?}\n{}",
        first.log()
    );
    // Let it read the rest of what was produced, then crash it: no shutdown code runs.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    first.kill();
    // Start the replacement once the broker has dropped the dead member (session timeout of
    // 6 s): tansu 0.6 never completes a rebalance that a dead member is still part of (tansu
    // issue: a joining member gets no assignment), where Kafka evicts it and carries on.
    tokio::time::sleep(std::time::Duration::from_secs(12)).await;
    let first_log = first.log();

    produce_events(&setup.cluster, &after_crash).await;
    let mut second = WardenProcess::start("detect", &setup.config);
    let escalated = "SELECT severity FROM alerts \
                     WHERE subject = 'client:app-b' AND status = 'firing' \
                     AND severity = 'critical'";
    sql_until(&setup.config, escalated, 1).await;
    // The whole-service and per-target spikes (25x a baseline of 40) come with it.
    let every_firing = "SELECT subject, severity, count(*) AS publications, \
                        count(DISTINCT alert_id) AS ids FROM alerts WHERE status = 'firing' \
                        GROUP BY subject, severity ORDER BY subject, severity";
    let alerts = sql_until(&setup.config, every_firing, 4).await;
    // Give the second worker time to publish any repeat before looking for one.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let alerts_again = support::sql(&setup.config, every_firing);
    let second_status = second.interrupt().await;
    let archiver_status = archiver.interrupt().await;
    let second_log = second.log();
    assert!(second_status.success(), "{second_log}");
    assert!(archiver_status.success(), "{}", archiver.log());

    let logs = format!("first worker:\n{first_log}\nsecond worker:\n{second_log}");
    assert_eq!(alerts, alerts_again, "{logs}");
    let found: Vec<(String, String, i64)> = alerts
        .iter()
        .map(|row| {
            (
                row["subject"].as_str().unwrap_or_default().to_owned(),
                row["severity"].as_str().unwrap_or_default().to_owned(),
                row["publications"].as_i64().unwrap_or_default(),
            )
        })
        .collect();
    let once = |subject: &str, severity: &str| (subject.to_owned(), severity.to_owned(), 1);
    assert_eq!(
        found,
        [
            once("client:app-b", "critical"),
            once("client:app-b", "warning"),
            once("global", "warning"),
            once("target:llama-8b", "warning"),
        ],
        "each alert published once, the escalation by the second worker:\n{logs}"
    );
    assert!(
        second_log.contains("rebuilding detector state"),
        "{second_log}"
    );
    assert!(
        !first_log.contains("severity=\"critical\""),
        "the escalation needs what came after the crash:\n{first_log}"
    );
}
