//! `warden detect` on a real broker (tansu): an hour of steady traffic, then one client at
//! 50x its usual rate. Traffic-spike alerts (a warning within a minute, then the escalation)
//! are published to `warden.alerts`, and the archiver puts them in the `alerts` table, where
//! `warden sql` finds them.

use crate::support;

use chrono::{DateTime, TimeDelta, Utc};

use support::{WardenProcess, archive_setup, chat_request as request, produce_events, sql_until};

#[tokio::test(flavor = "multi_thread")]
async fn a_client_spike_becomes_an_alert_in_the_alerts_table() {
    let setup = archive_setup(1, "flush_interval_s = 1").await;
    // Event times from two hours ago: the detector works in event time, not wall time.
    let start = DateTime::from_timestamp(
        (Utc::now() - TimeDelta::hours(2)).timestamp() / 300 * 300,
        0,
    )
    .expect("start");
    let mut events = Vec::new();
    for window in 0..12 {
        for i in 0..40 {
            let client = if i % 2 == 0 { "app-a" } else { "app-b" };
            let ts = start + TimeDelta::seconds(window * 300 + i * 300 / 40);
            events.push(request(ts, client, "10.0.0.1"));
        }
    }
    for i in 0..1_000 {
        let ts = start + TimeDelta::seconds(3_600 + i * 300 / 1_000);
        events.push(request(ts, "app-b", "203.0.113.9"));
    }
    // Traffic goes on after the spike, so the watermark passes the spike's window.
    for i in 0..10 {
        events.push(request(
            start + TimeDelta::seconds(3_900 + i * 6),
            "app-a",
            "10.0.0.1",
        ));
    }

    produce_events(&setup.cluster, &events).await;

    let mut archiver = WardenProcess::start("archive", &setup.config);
    let mut detector = WardenProcess::start("detect", &setup.config);
    // The window slides every 10 s, so an alert comes as soon as the window holds enough:
    // app-b (10x of 20 = 200 requests) within a minute of event time after the spike starts,
    // the whole service (10x of 40 = 400) within three, before the 5-minute window is over.
    let spike_start = start + TimeDelta::seconds(3_600);
    let query = format!(
        "SELECT detector, severity, subject, observed, \
         evidence.top_sources[1]['source'] AS top, \
         window_end <= TIMESTAMP '{}' AS within_a_minute, \
         window_end <= TIMESTAMP '{}' AS within_three_minutes \
         FROM alerts WHERE status = 'firing' ORDER BY subject, ts",
        (spike_start + TimeDelta::seconds(60)).format("%Y-%m-%dT%H:%M:%S"),
        (spike_start + TimeDelta::seconds(180)).format("%Y-%m-%dT%H:%M:%S"),
    );
    let alerts = sql_until(&setup.config, &query, 4).await;
    let detector_status = detector.interrupt().await;
    let archiver_status = archiver.interrupt().await;
    assert!(detector_status.success(), "{}", detector.log());
    assert!(archiver_status.success(), "{}", archiver.log());

    let detector_log = detector.log();
    assert_eq!(alerts.len(), 4, "{alerts:?}\n{detector_log}");
    let subjects: Vec<_> = alerts.iter().map(|row| &row["subject"]).collect();
    assert_eq!(
        subjects,
        ["client:app-b", "client:app-b", "global", "target:llama-8b"],
        "app-a is not named: {alerts:?}"
    );
    // app-b: first a warning (10x its baseline of 20), then the escalation to critical (30x).
    let (first, escalation) = (&alerts[0], &alerts[1]);
    assert_eq!(first["detector"], "traffic_spike");
    assert_eq!(first["severity"], "warning");
    assert_eq!(first["top"], "ip:203.0.113.9");
    assert_eq!(first["within_a_minute"], true, "{first:?}");
    assert_eq!(escalation["severity"], "critical");
    assert!(
        escalation["observed"].as_f64() >= Some(600.0),
        "{escalation:?}"
    );
    for scope in &alerts[2..] {
        assert_eq!(
            scope["severity"], "warning",
            "25x a baseline of 40: {scope:?}"
        );
        assert_eq!(scope["top"], "client:app-b");
        assert_eq!(scope["within_three_minutes"], true, "{scope:?}");
    }
    assert!(
        detector_log.contains("ALERT") && detector_log.contains("client:app-b"),
        "one log line per alert:\n{detector_log}"
    );
}
