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
