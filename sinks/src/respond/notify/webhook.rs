//! The webhook receiver: Alertmanager's webhook payload, version 4, so PagerDuty/Opsgenie
//! bridges and in-house tools built for Alertmanager work unchanged. Each POST carries an
//! `Idempotency-Key` (equal for a redelivery of the same notification).

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use warden_ingest::alert::{Alert, AlertStatus};

use super::super::config::Secret;
use super::super::dispatch::Notification;
use super::super::labels::LabelName;
use super::content;
use super::{Delivered, Notifier, NotifyError};

#[derive(Debug)]
pub struct Webhook {
    client: reqwest::Client,
    receiver: String,
    url: Secret,
    bearer_token: Option<Secret>,
    /// 0: every alert.
    max_alerts: usize,
}

impl Webhook {
    pub fn new(
        client: reqwest::Client,
        receiver: &str,
        url: Secret,
        bearer_token: Option<Secret>,
        max_alerts: usize,
    ) -> Self {
        Self {
            client,
            receiver: receiver.to_owned(),
            url,
            bearer_token,
            max_alerts,
        }
    }
}

/// An alert's labels, Alertmanager style (`alertname` is the detector).
pub fn labels(alert: &Alert) -> BTreeMap<&'static str, String> {
    let mut labels = BTreeMap::new();
    labels.insert("alertname", alert.detector.clone());
    for label in LabelName::ALL {
        let value = label.value(alert).to_text();
        if !value.is_empty() {
            labels.insert(label.as_str(), value);
        }
    }
    labels
}

/// An alert's annotations: the measurement and the evidence, as text.
pub fn annotations(alert: &Alert) -> BTreeMap<&'static str, String> {
    let mut annotations = BTreeMap::new();
    annotations.insert("summary", alert.summary.clone());
    annotations.insert("observed", alert.observed.to_string());
    annotations.insert("threshold", alert.threshold.to_string());
    annotations.insert("unit", alert.unit.clone());
    annotations.insert("window", content::window(alert));
    if let Some(sources) = content::top_sources(alert) {
        annotations.insert("top_sources", sources);
    }
    if let Some(samples) = content::sample_requests(alert) {
        annotations.insert("sample_request_ids", samples);
    }
    annotations.insert("investigate", content::investigate(alert));
    annotations
}

fn fingerprint(alert: &Alert) -> String {
    hex::encode(&Sha256::digest(alert.dedup_key.as_bytes())[..8])
}

/// The label pairs every one of `maps` has with the same value.
fn common<'a>(maps: &[BTreeMap<&'a str, String>]) -> BTreeMap<&'a str, String> {
    let Some((first, rest)) = maps.split_first() else {
        return BTreeMap::new();
    };
    first
        .iter()
        .filter(|(key, value)| rest.iter().all(|map| map.get(*key) == Some(value)))
        .map(|(key, value)| (*key, value.clone()))
        .collect()
}

/// The payload for `receiver`.
pub fn payload(notification: &Notification, receiver: &str, max_alerts: usize) -> Value {
    let limit = if max_alerts == 0 {
        usize::MAX
    } else {
        max_alerts
    };
    let sent: Vec<&Alert> = notification
        .alerts
        .iter()
        .map(AsRef::as_ref)
        .take(limit)
        .collect();
    let all_labels: Vec<_> = sent.iter().map(|alert| labels(alert)).collect();
    let all_annotations: Vec<_> = sent.iter().map(|alert| annotations(alert)).collect();
    let alerts: Vec<Value> = sent
        .iter()
        .zip(all_labels.iter().zip(&all_annotations))
        .map(|(alert, (labels, annotations))| {
            let ends_at = match alert.status {
                AlertStatus::Resolved => alert.ts.to_rfc3339(),
                AlertStatus::Firing => "0001-01-01T00:00:00Z".to_owned(),
            };
            json!({
                "status": status_text(alert.status),
                "labels": labels,
                "annotations": annotations,
                "startsAt": alert.window_start.to_rfc3339(),
                "endsAt": ends_at,
                "generatorURL": "",
                "fingerprint": fingerprint(alert),
            })
        })
        .collect();
    let group_labels: BTreeMap<&str, &str> = notification
        .group_labels
        .iter()
        .map(|(label, value)| (label.as_str(), value.as_str()))
        .collect();
    json!({
        "version": "4",
        "groupKey": notification.group_key,
        "truncatedAlerts": notification.alerts.len() - sent.len(),
        "status": status_text(notification.status()),
        "receiver": receiver,
        "groupLabels": group_labels,
        "commonLabels": common(&all_labels),
        "commonAnnotations": common(&all_annotations),
        "externalURL": "",
        "notification_reason": notification.reason.as_str(),
        "alerts": alerts,
    })
}

fn status_text(status: AlertStatus) -> &'static str {
    match status {
        AlertStatus::Firing => "firing",
        AlertStatus::Resolved => "resolved",
    }
}

impl Notifier for Webhook {
    fn notify<'a>(
        &'a self,
        notification: &'a Notification,
    ) -> BoxFuture<'a, Result<Delivered, NotifyError>> {
        Box::pin(async move {
            let body = payload(notification, &self.receiver, self.max_alerts);
            let mut request = self.client.post(self.url.expose());
            if let Some(token) = &self.bearer_token {
                request = request.bearer_auth(token.expose());
            }
            super::post_json(request, notification, &body).await
        })
    }
}
