//! What a notification says, shared by every receiver's format: a title people can filter
//! on, each alert's measurement, window, top sources and sample request ids, the runbook's
//! steps, and a `warden sql` line to start the investigation.

use std::fmt::Write as _;

use warden_ingest::alert::{Alert, AlertStatus, Severity, Subject};

use super::super::dispatch::Notification;

/// The steps of the incident procedures (seed 000), by runbook name.
pub fn runbook_steps(runbook: &str) -> &'static [&'static str] {
    match runbook {
        "runaway_cost" => &[
            "Check the current hourly burn rate",
            "Identify the top traffic sources",
            "Disable autoscaling on the endpoint",
            "Scale down to the minimum replicas",
            "Put an emergency rate limit on the top sources (`warden control limit`)",
            "Root cause analysis once the bleeding stops",
        ],
        "token_compromise" => &[
            "Revoke the compromised token now (`warden control revoke`)",
            "Analyse the access logs for unauthorised use",
            "Make new keys and update the applications (`warden control add-key`)",
            "Watch for retries with the old token (the revoked_token detector)",
        ],
        _ => &[],
    }
}

/// The highest severity among the notification's alerts.
pub fn severity(notification: &Notification) -> Severity {
    notification
        .alerts
        .iter()
        .map(|alert| alert.severity)
        .max()
        .unwrap_or(Severity::Info)
}

/// `[FIRING:2] cost_burn client:app (critical)`: Alertmanager's title, with the group's
/// label values.
pub fn title(notification: &Notification) -> String {
    let status = match notification.status() {
        AlertStatus::Firing => format!("FIRING:{}", notification.firing().count()),
        AlertStatus::Resolved => "RESOLVED".to_owned(),
    };
    let labels: Vec<&str> = notification
        .group_labels
        .iter()
        .map(|(_, value)| value.as_str())
        .filter(|value| !value.is_empty())
        .collect();
    let labels = if labels.is_empty() {
        "all alerts".to_owned()
    } else {
        labels.join(" ")
    };
    format!("[{status}] {labels} ({})", severity(notification).as_str())
}

/// `412.5 usd_per_hour against a threshold of 50`.
pub fn measurement(alert: &Alert) -> String {
    format!(
        "{} {} against a threshold of {}",
        number(alert.observed),
        alert.unit,
        number(alert.threshold)
    )
}

fn number(value: f64) -> String {
    if value.is_finite() && value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    }
}

/// `2026-12-01 10:00–11:00 UTC`.
pub fn window(alert: &Alert) -> String {
    let start = alert.window_start.format("%Y-%m-%d %H:%M");
    if alert.window_start.date_naive() == alert.window_end.date_naive() {
        format!("{start}–{} UTC", alert.window_end.format("%H:%M"))
    } else {
        format!(
            "{start} – {} UTC",
            alert.window_end.format("%Y-%m-%d %H:%M")
        )
    }
}

/// `client:a 300, ip:203.0.113.7 50` (at most five).
pub fn top_sources(alert: &Alert) -> Option<String> {
    let sources = &alert.evidence.top_sources;
    if sources.is_empty() {
        return None;
    }
    Some(
        sources
            .iter()
            .take(5)
            .map(|share| format!("{} {}", share.source, number(share.value)))
            .collect::<Vec<_>>()
            .join(", "),
    )
}

/// A few sample request ids, comma-separated.
pub fn sample_requests(alert: &Alert) -> Option<String> {
    let ids = &alert.evidence.sample_request_ids;
    (!ids.is_empty()).then(|| ids.iter().take(5).cloned().collect::<Vec<_>>().join(", "))
}

/// The `warden sql` line that shows the calls behind the alert.
pub fn investigate(alert: &Alert) -> String {
    let day = alert.window_start.format("%Y-%m-%d");
    let mut filter = format!(
        "dt >= '{day}' AND ts >= '{}' AND ts < '{}'",
        alert.window_start.format("%Y-%m-%dT%H:%M:%SZ"),
        alert.window_end.format("%Y-%m-%dT%H:%M:%SZ")
    );
    let quoted = |value: &str| value.replace('\'', "''");
    match &alert.subject {
        Subject::Client(name) => {
            let _ = write!(filter, " AND client.name = '{}'", quoted(name));
        }
        Subject::Token(token) => {
            let _ = write!(filter, " AND client.token_id = '{}'", quoted(token));
        }
        Subject::Ip(ip) => {
            let _ = write!(filter, " AND client.ip = '{}'", quoted(ip));
        }
        Subject::Country(country) => {
            let _ = write!(filter, " AND client.country = '{}'", quoted(country));
        }
        Subject::Target(target) => {
            let _ = write!(filter, " AND route.target_id = '{}'", quoted(target));
        }
        Subject::Global => {}
    }
    format!(
        "warden sql \"SELECT kind, ts, client.name, client.ip, route.target_id, \
         response.status, response.cost_usd FROM events WHERE {filter} ORDER BY ts LIMIT 100\""
    )
}

/// The whole notification as plain text (email, syslog message bodies).
pub fn plain_text(notification: &Notification) -> String {
    let mut text = title(notification);
    text.push_str("\n\n");
    for alert in &notification.alerts {
        let _ = writeln!(
            text,
            "{} {} {} — {}",
            alert_status(alert),
            alert.severity.as_str().to_uppercase(),
            alert.subject,
            alert.summary
        );
        let _ = writeln!(text, "  detector: {}", alert.detector);
        let _ = writeln!(text, "  measured: {}", measurement(alert));
        let _ = writeln!(text, "  window:   {}", window(alert));
        if let Some(environment) = &alert.environment {
            let _ = writeln!(text, "  environment: {environment}");
        }
        if let Some(sources) = top_sources(alert) {
            let _ = writeln!(text, "  top sources: {sources}");
        }
        if let Some(samples) = sample_requests(alert) {
            let _ = writeln!(text, "  sample requests: {samples}");
        }
        if let Some(runbook) = &alert.runbook {
            let _ = writeln!(text, "  runbook {runbook}:");
            for (index, step) in runbook_steps(runbook).iter().enumerate() {
                let _ = writeln!(text, "    {}. {step}", index + 1);
            }
        }
        let _ = writeln!(text, "  investigate: {}", investigate(alert));
        text.push('\n');
    }
    text
}

/// `FIRING` when anything in the notification fires, else `RESOLVED`.
pub fn alert_status_of(notification: &Notification) -> &'static str {
    match notification.status() {
        AlertStatus::Firing => "FIRING",
        AlertStatus::Resolved => "RESOLVED",
    }
}

pub fn alert_status(alert: &Alert) -> &'static str {
    match alert.status {
        AlertStatus::Firing => "FIRING",
        AlertStatus::Resolved => "RESOLVED",
    }
}

/// Cuts `text` to at most `max` characters (not bytes), marking the cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}
