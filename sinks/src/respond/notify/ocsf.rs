//! OCSF Detection Findings (class 2004, category Findings): one finding per alert, its
//! activity Create when the receiver hears of the alert first, Update on a repeat or an
//! escalation it already knew of, Close when it resolves; `type_uid` = class × 100 +
//! activity, times in milliseconds, `metadata.version` the OCSF schema version followed.
//! Written as JSON lines to a file, POSTed as a JSON array to a URL, or carried in Splunk
//! HEC events (`format = "ocsf"`).

use std::collections::BTreeSet;
use std::path::PathBuf;

use futures::future::BoxFuture;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt as _;
use warden_ingest::alert::{Alert, AlertStatus, Severity};

use super::super::config::Secret;
use super::super::dispatch::{Notification, fingerprint};
use super::content;
use super::{Delivered, Notifier, NotifyError};

/// The OCSF schema version the findings follow.
pub const OCSF_VERSION: &str = "1.1.0";
const DETECTION_FINDING: u32 = 2004;

/// Activity of a finding.
fn activity(alert: &Alert, told_before: &BTreeSet<String>) -> (u32, &'static str) {
    match alert.status {
        AlertStatus::Resolved => (3, "Close"),
        AlertStatus::Firing if told_before.contains(&fingerprint(alert)) => (2, "Update"),
        AlertStatus::Firing => (1, "Create"),
    }
}

fn severity(severity: Severity) -> (u32, &'static str) {
    match severity {
        Severity::Info => (1, "Informational"),
        Severity::Warning => (3, "Medium"),
        Severity::Critical => (5, "Critical"),
    }
}

/// The finding of one alert.
pub fn finding(alert: &Alert, told_before: &BTreeSet<String>) -> Value {
    let (activity_id, activity_name) = activity(alert, told_before);
    let (severity_id, severity_name) = severity(alert.severity);
    let (status_id, status) = match alert.status {
        AlertStatus::Firing => (1, "New"),
        AlertStatus::Resolved => (4, "Resolved"),
    };
    json!({
        "activity_id": activity_id,
        "activity_name": activity_name,
        "category_uid": 2,
        "category_name": "Findings",
        "class_uid": DETECTION_FINDING,
        "class_name": "Detection Finding",
        "type_uid": DETECTION_FINDING * 100 + activity_id,
        "type_name": format!("Detection Finding: {activity_name}"),
        "severity_id": severity_id,
        "severity": severity_name,
        "status_id": status_id,
        "status": status,
        "time": alert.ts.timestamp_millis(),
        "start_time": alert.window_start.timestamp_millis(),
        "end_time": alert.window_end.timestamp_millis(),
        "message": alert.summary,
        "is_alert": true,
        "confidence_id": 3,
        "metadata": {
            "version": OCSF_VERSION,
            "uid": alert.alert_id.0.to_string(),
            "product": {
                "name": "Warden",
                "vendor_name": "Warden",
                "version": env!("CARGO_PKG_VERSION"),
            },
        },
        "finding_info": {
            "uid": alert.dedup_key,
            "title": alert.summary,
            "types": [alert.detector],
            "analytic": { "name": alert.detector, "type_id": 1, "type": "Rule" },
            "first_seen_time": alert.window_start.timestamp_millis(),
            "last_seen_time": alert.window_end.timestamp_millis(),
        },
        "resources": [{ "name": alert.subject.to_string(), "type": alert.subject.kind() }],
        "unmapped": {
            "observed": alert.observed,
            "threshold": alert.threshold,
            "unit": alert.unit,
            "environment": alert.environment,
            "runbook": alert.runbook,
            "top_sources": alert.evidence.top_sources,
            "sample_request_ids": alert.evidence.sample_request_ids,
            "investigate": content::investigate(alert),
        },
    })
}

/// Every alert of a notification as a finding.
pub fn findings(notification: &Notification) -> Vec<Value> {
    notification
        .alerts
        .iter()
        .map(|alert| finding(alert, &notification.told_before))
        .collect()
}

/// Where findings go.
#[derive(Debug)]
enum Destination {
    File(PathBuf),
    Http(reqwest::Client, Secret),
}

#[derive(Debug)]
pub struct Ocsf {
    destination: Destination,
    /// One writer at a time to the file.
    file_lock: tokio::sync::Mutex<()>,
}

impl Ocsf {
    pub fn new(url: &Secret, client: &reqwest::Client) -> Result<Self, String> {
        let parsed = url::Url::parse(url.expose()).map_err(|_| "ocsf: not a URL".to_owned())?;
        let destination = if parsed.scheme() == "file" {
            Destination::File(
                parsed
                    .to_file_path()
                    .map_err(|()| "ocsf: not a file path".to_owned())?,
            )
        } else {
            Destination::Http(client.clone(), url.clone())
        };
        Ok(Self {
            destination,
            file_lock: tokio::sync::Mutex::new(()),
        })
    }
}

impl Notifier for Ocsf {
    fn notify<'a>(
        &'a self,
        notification: &'a Notification,
    ) -> BoxFuture<'a, Result<Delivered, NotifyError>> {
        Box::pin(async move {
            let findings = findings(notification);
            match &self.destination {
                Destination::File(path) => {
                    let mut lines = Vec::new();
                    for finding in &findings {
                        serde_json::to_writer(&mut lines, finding).unwrap_or_default();
                        lines.push(b'\n');
                    }
                    let _one_writer = self.file_lock.lock().await;
                    let mut file = tokio::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(path)
                        .await
                        .map_err(|err| {
                            NotifyError::retryable(format!("opening the findings file: {err}"))
                        })?;
                    file.write_all(&lines).await.map_err(|err| {
                        NotifyError::retryable(format!("writing the findings file: {err}"))
                    })?;
                    file.sync_data().await.map_err(|err| {
                        NotifyError::retryable(format!("syncing the findings file: {err}"))
                    })?;
                    Ok(Delivered::default())
                }
                Destination::Http(client, url) => {
                    super::post_json(client.post(url.expose()), notification, &findings).await
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::labels::tests::alert;
    use super::*;

    #[test]
    fn a_finding_carries_the_required_fields_and_its_activity() {
        let burn = alert("cost_burn", Severity::Critical, "client:app");
        let created = finding(&burn, &BTreeSet::new());
        for field in [
            "activity_id",
            "category_uid",
            "class_uid",
            "metadata",
            "severity_id",
            "time",
            "type_uid",
            "finding_info",
        ] {
            assert!(created.get(field).is_some(), "{field}: {created}");
        }
        assert_eq!(created["type_uid"], 200401);
        assert_eq!(created["metadata"]["version"], OCSF_VERSION);
        let updated = finding(&burn, &BTreeSet::from([fingerprint(&burn)]));
        assert_eq!(updated["type_uid"], 200402);
        let mut resolved = burn.clone();
        resolved.status = AlertStatus::Resolved;
        let closed = finding(&resolved, &BTreeSet::new());
        assert_eq!(
            (closed["type_uid"].clone(), closed["status_id"].clone()),
            (json!(200403), json!(4))
        );
    }
}
