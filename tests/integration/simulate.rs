//! `warden simulate`: a scenario rehearsed in-process passes its checklist; and a scenario
//! published with `--produce` to a real broker (tansu) is found by the `warden detect`
//! worker, whose alerts the archiver puts in the `alerts` table.

use crate::support;

use support::{WardenProcess, archive_setup, run_warden, sql_until};

#[tokio::test(flavor = "multi_thread")]
async fn a_rehearsal_prints_the_alerts_and_passes_its_checklist() {
    let dir = tempfile::tempdir().expect("dir");
    let config = support::write_config(dir.path(), "");
    let (ok, output) = run_warden(&["simulate", "retry-loop", "--seed", "3"], &config, &[]);
    assert!(ok, "{output}");
    assert!(output.contains("FIRING"), "{output}");
    assert!(
        output.contains("expected: retry_loop client:app-mobile warning within 30s — ok"),
        "{output}"
    );
    let (ok, output) = run_warden(&["simulate", "no-such-thing"], &config, &[]);
    assert!(!ok);
    assert!(output.contains("expected one of benign-day"), "{output}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_produced_scenario_is_detected_by_the_workers() {
    let setup = archive_setup(2, "flush_interval_s = 1").await;
    // First, one event from a proxy whose clock is a day ahead: skipped, or it would move the
    // watermark a day on, make every other event late and every window empty.
    let mut skewed = warden_ingest::AuditEvent::new(
        warden_ingest::EventKind::Request,
        warden_ingest::RequestId::new(),
        "proxy-skewed",
    );
    skewed.ts = chrono::Utc::now() + chrono::TimeDelta::days(1);
    support::produce_events(&setup.cluster, [&skewed]).await;

    let (ok, output) = run_warden(
        &["simulate", "token-theft", "--produce"],
        &setup.config,
        &[],
    );
    assert!(ok, "{output}");
    assert!(output.contains("published"), "{output}");
    let mut archiver = WardenProcess::start("archive", &setup.config);
    let mut detector = WardenProcess::start("detect", &setup.config);
    let alerts = sql_until(
        &setup.config,
        "SELECT detector, severity, subject, runbook FROM alerts \
         WHERE status = 'firing' AND detector = 'geo_new_country'",
        1,
    )
    .await;
    let detector_status = detector.interrupt().await;
    let archiver_status = archiver.interrupt().await;
    assert!(detector_status.success(), "{}", detector.log());
    assert!(archiver_status.success(), "{}", archiver.log());
    assert_eq!(alerts.len(), 1, "{alerts:?}\n{}", detector.log());
    assert_eq!(alerts[0]["subject"], "token:tk_web_5f2a");
    assert_eq!(alerts[0]["severity"], "critical");
    assert_eq!(alerts[0]["runbook"], "token_compromise");
    assert!(detector.log().contains("future=1"), "{}", detector.log());
}

/// The alert lines of `warden simulate` or `warden detect --replay` output: each line's
/// columns after its time (a delay for the one, an instant for the other).
fn alert_lines(output: &str, firing_only: bool) -> Vec<String> {
    output
        .lines()
        .filter(|line| line.contains("FIRING") || (!firing_only && line.contains("resolved ")))
        .filter(|line| !line.starts_with("expected"))
        .map(|line| {
            let line = line.trim_start();
            line.split_once("  ")
                .map_or(line, |(_time, columns)| columns)
                .to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replay_of_the_archive_raises_what_the_rehearsal_raises() {
    use chrono::{DurationRound, TimeDelta, Utc};
    use warden_detectors::scenario::{COOL_DOWN, INCIDENT, WARM_UP};

    let setup = archive_setup(2, "flush_interval_s = 1").await;
    let length = WARM_UP + INCIDENT + COOL_DOWN;
    let start = (Utc::now() - length - TimeDelta::hours(1))
        .duration_trunc(TimeDelta::minutes(1))
        .expect("minute");
    let start_arg = start.to_rfc3339();
    let scenario = ["simulate", "capacity-exhaustion", "--start", &start_arg];
    let (ok, output) = run_warden(
        &[&scenario[..], &["--produce"]].concat(),
        &setup.config,
        &[],
    );
    assert!(ok, "{output}");
    let published: u64 = output
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("event count in {output:?}"));
    let mut archiver = WardenProcess::start("archive", &setup.config);
    let (archived, _) = support::archived_event_counts(&setup.config, published).await;
    assert!(archiver.interrupt().await.success(), "{}", archiver.log());
    assert_eq!(archived, published);

    let (ok, rehearsal) = run_warden(&scenario, &setup.config, &[]);
    assert!(ok, "{rehearsal}");
    // The rehearsal ends a minute after its last event; so does this replay.
    let to = (start + length + TimeDelta::minutes(1)).to_rfc3339();
    let replay_args = ["detect", "--replay", "--from", &start_arg, "--to", &to];
    let (ok, replay) = run_warden(&replay_args, &setup.config, &[]);
    assert!(ok, "{replay}");
    let expected = alert_lines(&rehearsal, true);
    assert!(
        expected.iter().any(|line| line.contains("capacity_503")),
        "{rehearsal}"
    );
    assert_eq!(alert_lines(&replay, true), expected, "{replay}");
    assert!(
        replay.contains(&format!("replayed {published} events")),
        "{replay}"
    );

    // The same as JSON, one alert per line; and a replay from inside the incident lists what
    // was already open then instead of raising it again.
    let (ok, json) = run_warden(
        &[&replay_args[..], &["--json"]].concat(),
        &setup.config,
        &[],
    );
    assert!(ok, "{json}");
    let alerts: Vec<serde_json::Value> = json
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str(line).expect("alert JSON"))
        .collect();
    assert_eq!(
        alerts.iter().filter(|a| a["status"] == "firing").count(),
        expected.len()
    );
    let from_mid_incident = (start + WARM_UP + INCIDENT / 2).to_rfc3339();
    let (ok, partial) = run_warden(
        &[
            "detect",
            "--replay",
            "--from",
            &from_mid_incident,
            "--to",
            &to,
        ],
        &setup.config,
        &[],
    );
    assert!(ok, "{partial}");
    assert!(
        partial.contains("already open: ") && partial.contains("capacity_503"),
        "{partial}"
    );

    let (ok, error) = run_warden(&["detect", "--replay"], &setup.config, &[]);
    assert!(!ok && error.contains("--from"), "{error}");
}
