//! Alerts (`warden.alerts`), runbook actions (`warden.control`) and the responder's
//! notifications (`warden.notifications`) are archived the way events are, as tables of their
//! own: `warden archive` on a real broker (tansu) writes them, and
//! `warden sql`, DuckDB and `warden verify` read them back. A malformed alert is dead-lettered,
//! and an alert read twice is archived once.

use crate::support;

use chrono::{SubsecRound, TimeDelta, Utc};
use warden_ingest::action::{ActionKind, ControlAction};
use warden_ingest::alert::{Alert, Severity, SourceShare, Subject};
use warden_ingest::notification::{NotificationOutcome, NotificationRecord};

use support::{WardenProcess, archive_setup, produce, run_python, run_warden, sql_until};

fn alert(detector: &str, severity: Severity, subject: Subject) -> Alert {
    let end = Utc::now();
    let mut alert = Alert::firing(
        detector,
        severity,
        subject,
        (end - TimeDelta::minutes(5), end),
    );
    alert.observed = 120.0;
    alert.threshold = 100.0;
    alert.unit = "usd_per_hour".into();
    alert.summary = format!("{detector} over its threshold");
    alert.evidence.top_sources = vec![SourceShare {
        source: "client:app-prod".into(),
        value: 90.0,
    }];
    alert.evidence.sample_request_ids = vec!["r-1".into()];
    alert
}

#[tokio::test(flavor = "multi_thread")]
async fn alerts_and_actions_are_archived_as_their_own_tables() {
    let setup = archive_setup(1, "flush_interval_s = 1").await;
    let burn = alert(
        "cost_burn",
        Severity::Critical,
        Subject::Target("llama-8b".into()),
    );
    let brute_force = alert(
        "auth_failures",
        Severity::Warning,
        Subject::Ip("198.51.100.9".into()),
    );
    let mut limit = ControlAction::new(
        ActionKind::EmergencyRateLimit,
        Subject::Client("app-prod".into()),
        "runaway cost",
        "responder",
    );
    limit.limit_per_minute = Some(60);
    limit.alert_dedup_key = Some(burn.dedup_key.clone());
    let revoke = ControlAction::new(
        ActionKind::RevokeToken,
        Subject::Token("tok_0123456789ab".into()),
        "used from a new country",
        "operator:alice",
    );

    let notification = NotificationRecord {
        notification_id: warden_ingest::EventId::new(),
        schema_version: 1,
        ts: Utc::now().trunc_subsecs(6),
        receiver: "sec-slack".into(),
        receiver_kind: "slack".into(),
        group_key: "respond{detector=\"cost_burn\"}".into(),
        reason: Some("firing".into()),
        status: "firing".into(),
        outcome: NotificationOutcome::Delivered,
        attempts: 2,
        http_status: Some(200),
        error: None,
        alert_ids: vec![burn.alert_id.0.to_string()],
        dedup_keys: vec![burn.dedup_key.clone()],
        content_sha256: None,
        held_by: None,
    };
    let records: Vec<(&str, Vec<u8>)> = vec![
        ("warden.alerts", json(&burn)),
        (
            "warden.alerts",
            b"{\"detector\": \"half an alert\"}".to_vec(),
        ),
        // A second copy of one alert (a publisher retry): archived once.
        ("warden.alerts", json(&brute_force)),
        ("warden.alerts", json(&brute_force)),
        ("warden.control", json(&limit)),
        ("warden.control", json(&revoke)),
        ("warden.notifications", json(&notification)),
    ];
    produce(&setup.cluster, &records).await;

    let (archive, config) = (&setup.archive, &setup.config);
    let mut archiver = WardenProcess::start("archive", config);

    let alerts = sql_until(
        config,
        "SELECT detector, severity, subject FROM alerts ORDER BY detector",
        2,
    )
    .await;
    let actions = sql_until(
        config,
        "SELECT action, subject, actor, limit_per_minute FROM actions ORDER BY action",
        2,
    )
    .await;
    let notifications = sql_until(
        config,
        "SELECT receiver, outcome, attempts, dedup_keys[1] AS first_alert FROM notifications",
        1,
    )
    .await;
    let status = archiver.interrupt().await;
    assert!(status.success(), "exit {status}:\n{}", archiver.log());
    let log = archiver.log();
    assert_eq!(
        notifications[0]["receiver"], "sec-slack",
        "{notifications:?}"
    );
    assert_eq!(notifications[0]["outcome"], "delivered");
    assert_eq!(notifications[0]["attempts"], 2);
    assert_eq!(notifications[0]["first_alert"], burn.dedup_key.as_str());

    assert_eq!(alerts.len(), 2, "{alerts:?}\n{log}");
    assert_eq!(alerts[0]["detector"], "auth_failures");
    assert_eq!(alerts[0]["severity"], "warning");
    assert_eq!(alerts[0]["subject"], "ip:198.51.100.9");
    assert_eq!(alerts[1]["detector"], "cost_burn");
    assert_eq!(alerts[1]["severity"], "critical");
    assert_eq!(alerts[1]["subject"], "target:llama-8b");

    assert_eq!(actions.len(), 2, "{actions:?}\n{log}");
    assert_eq!(actions[0]["action"], "emergency_rate_limit");
    assert_eq!(actions[0]["subject"], "client:app-prod");
    assert_eq!(actions[0]["limit_per_minute"], 60);
    assert_eq!(actions[1]["action"], "revoke_token");
    assert_eq!(actions[1]["actor"], "operator:alice");

    assert!(log.contains("alerts=2"), "{log}");
    assert!(log.contains("actions=2"), "{log}");
    assert!(log.contains("dead_letters=1"), "{log}");
    assert!(log.contains("duplicates_skipped=1"), "{log}");

    // An independent reader sees the same tables, nested evidence included.
    let read = run_python(
        "read_alerts_actions.py",
        &[archive.to_str().expect("utf-8 path")],
    );
    assert_eq!(
        read["alerts"],
        serde_json::json!([
            [
                "auth_failures",
                "warning",
                "ip:198.51.100.9",
                "client:app-prod"
            ],
            [
                "cost_burn",
                "critical",
                "target:llama-8b",
                "client:app-prod"
            ],
        ])
    );
    assert_eq!(
        read["actions"],
        serde_json::json!([
            [
                "emergency_rate_limit",
                "client:app-prod",
                "cost_burn/target:llama-8b"
            ],
            ["revoke_token", "token:tok_0123456789ab", null],
        ])
    );

    // Their objects are in the manifest chains like the events'.
    let (verified, report) = run_warden(&["verify"], config, &[]);
    assert!(verified, "{report}");
    assert!(report.contains("3 chains"), "{report}");
    assert!(report.contains("(5 rows): OK"), "{report}");
}

fn json(record: &impl serde::Serialize) -> Vec<u8> {
    serde_json::to_vec(record).expect("serialisable")
}
