//! The Slack receiver: an incoming webhook, one Block Kit message per notification, inside
//! an attachment for the severity colour bar. Kept within Slack's limits: 50 blocks, 3,000
//! characters per section, 10 fields of 2,000, a header of 150, and about 12,000 characters
//! in all (beyond that Slack answers `msg_blocks_too_long`); alerts that do not fit are
//! counted in a last line. The webhook's URL is its credential and never leaves this file.
//!
//! Slack answers `200 ok`; `429` with `Retry-After` (honoured by the caller); `4xx` with a
//! reason (`invalid_payload`, `channel_not_found`, `channel_is_archived`...: permanent);
//! `5xx` (retried).

use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{Value, json};
use warden_ingest::alert::{Alert, AlertStatus, Severity};

use super::super::config::Secret;
use super::super::dispatch::Notification;
use super::content;
use super::{Delivered, Notifier, NotifyError};

const MAX_BLOCKS: usize = 50;
const MAX_SECTION_CHARS: usize = 3_000;
const MAX_FIELD_CHARS: usize = 2_000;
const MAX_HEADER_CHARS: usize = 150;
/// Below Slack's undocumented cumulative cap (≈12–13k characters).
const MAX_TOTAL_CHARS: usize = 11_000;

#[derive(Debug)]
pub struct Slack {
    client: reqwest::Client,
    url: Secret,
    min_interval: Duration,
}

impl Slack {
    pub fn new(client: reqwest::Client, url: Secret, min_interval: Duration) -> Self {
        Self {
            client,
            url,
            min_interval,
        }
    }
}

fn colour(notification: &Notification) -> &'static str {
    if notification.status() == AlertStatus::Resolved {
        return "#2eb886";
    }
    match content::severity(notification) {
        Severity::Critical => "#d00000",
        Severity::Warning => "#f2c744",
        Severity::Info => "#439fe0",
    }
}

fn mrkdwn(text: &str, max: usize) -> Value {
    json!({ "type": "mrkdwn", "text": content::truncate(text, max) })
}

/// The blocks of one alert, and how many characters they hold.
fn alert_blocks(alert: &Alert) -> (Vec<Value>, usize) {
    let headline = format!(
        "*{} {}* `{}` — {}",
        content::alert_status(alert),
        alert.severity.as_str(),
        alert.subject,
        alert.summary
    );
    let mut fields = vec![
        format!("*Detector*\n{}", alert.detector),
        format!("*Observed*\n{}", content::measurement(alert)),
        format!("*Window*\n{}", content::window(alert)),
    ];
    if let Some(environment) = &alert.environment {
        fields.push(format!("*Environment*\n{environment}"));
    }
    if let Some(sources) = content::top_sources(alert) {
        fields.push(format!("*Top sources*\n{sources}"));
    }
    if let Some(samples) = content::sample_requests(alert) {
        fields.push(format!("*Sample requests*\n{samples}"));
    }
    let mut blocks = vec![json!({
        "type": "section",
        "text": mrkdwn(&headline, MAX_SECTION_CHARS),
        "fields": fields.iter().map(|field| mrkdwn(field, MAX_FIELD_CHARS)).collect::<Vec<_>>(),
    })];
    let mut chars =
        headline.chars().count() + fields.iter().map(|f| f.chars().count()).sum::<usize>();
    if let Some(runbook) = &alert.runbook {
        let steps = content::runbook_steps(runbook);
        if !steps.is_empty() {
            let mut text = format!("*Runbook `{runbook}`*");
            for (index, step) in steps.iter().enumerate() {
                text.push_str(&format!("\n{}. {step}", index + 1));
            }
            chars += text.chars().count();
            blocks.push(json!({ "type": "section", "text": mrkdwn(&text, MAX_SECTION_CHARS) }));
        }
    }
    let investigate = format!("*Investigate*\n```{}```", content::investigate(alert));
    chars += investigate.chars().count();
    blocks.push(json!({ "type": "section", "text": mrkdwn(&investigate, MAX_SECTION_CHARS) }));
    blocks.push(json!({ "type": "divider" }));
    (blocks, chars)
}

/// The webhook payload.
pub fn payload(notification: &Notification) -> Value {
    let title = content::title(notification);
    let mut blocks = vec![json!({
        "type": "header",
        "text": { "type": "plain_text", "text": content::truncate(&title, MAX_HEADER_CHARS) },
    })];
    let mut chars = title.chars().count();
    let mut shown = 0;
    for alert in &notification.alerts {
        let (more, more_chars) = alert_blocks(alert);
        // Room for a last "more alerts" line.
        if blocks.len() + more.len() + 1 > MAX_BLOCKS || chars + more_chars > MAX_TOTAL_CHARS {
            break;
        }
        blocks.extend(more);
        chars += more_chars;
        shown += 1;
    }
    let left = notification.alerts.len() - shown;
    if left > 0 {
        blocks.push(json!({
            "type": "context",
            "elements": [mrkdwn(&format!("…and {left} more alerts in this group"), 300)],
        }));
    }
    json!({
        "text": title,
        "attachments": [{ "color": colour(notification), "fallback": title, "blocks": blocks }],
    })
}

impl Notifier for Slack {
    fn notify<'a>(
        &'a self,
        notification: &'a Notification,
    ) -> BoxFuture<'a, Result<Delivered, NotifyError>> {
        Box::pin(async move {
            let response = self
                .client
                .post(self.url.expose())
                .json(&payload(notification))
                .send()
                .await
                .map_err(|err| NotifyError::from_transport(&err))?;
            let status = response.status().as_u16();
            let retry_after = super::retry_after(response.headers());
            let body = super::read_body_capped(response, 1_024).await;
            match status {
                200 if body.trim() == "ok" || body.trim().is_empty() => Ok(Delivered {
                    status: Some(status),
                }),
                200 => Err(NotifyError::permanent(format!(
                    "answered 200 without ok: {}",
                    content::truncate(body.trim(), 200)
                ))),
                _ => Err(NotifyError::from_status(status, &body, retry_after)),
            }
        })
    }

    fn min_interval(&self) -> Duration {
        self.min_interval
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use warden_ingest::alert::{Evidence, SourceShare};

    use super::super::super::dispatch::{LogEntry, NotifyReason};
    use super::super::super::labels::LabelName;
    use super::super::super::labels::tests::alert;
    use super::*;

    fn notification(count: usize) -> Notification {
        let alerts = (0..count)
            .map(|index| {
                let mut alert = alert(
                    "cost_burn",
                    Severity::Critical,
                    &format!("client:app-{index}"),
                );
                alert.summary = "x".repeat(200);
                alert.runbook = Some("runaway_cost".into());
                alert.evidence = Evidence {
                    top_sources: vec![SourceShare {
                        source: "ip:203.0.113.7".into(),
                        value: 12.5,
                    }],
                    sample_request_ids: vec!["req-1".into()],
                };
                Arc::new(alert)
            })
            .collect();
        Notification {
            receiver: "slack".into(),
            group_key: "respond{detector=\"cost_burn\"}".into(),
            group_labels: vec![(LabelName::Detector, "cost_burn".into())],
            reason: NotifyReason::Firing,
            alerts,
            entry: LogEntry {
                receiver: "slack".into(),
                group_key: "g".into(),
                firing: Default::default(),
                resolved: Default::default(),
                sent_at: chrono::Utc::now(),
            },
            told_before: Default::default(),
            previous_sent_at: None,
            content_sha256: String::new(),
        }
    }

    #[test]
    fn a_large_group_stays_within_slacks_limits_and_says_how_many_were_left_out() {
        let payload = payload(&notification(200));
        let blocks = payload["attachments"][0]["blocks"]
            .as_array()
            .expect("blocks");
        assert!(blocks.len() <= MAX_BLOCKS, "{}", blocks.len());
        let total: usize = serde_json::to_string(blocks).expect("json").chars().count();
        assert!(total < 30_000, "{total}");
        let last = blocks.last().expect("a last block");
        assert!(
            last["elements"][0]["text"]
                .as_str()
                .expect("text")
                .contains("more alerts")
        );
        assert_eq!(payload["attachments"][0]["color"], "#d00000");
        assert!(
            payload["text"]
                .as_str()
                .expect("text")
                .starts_with("[FIRING:200] cost_burn")
        );
        let one = payload_text(&notification(1));
        assert!(one.contains("warden sql"), "{one}");
        assert!(one.contains("Put an emergency rate limit"), "{one}");
        assert!(one.contains("ip:203.0.113.7 12.50"), "{one}");
    }

    fn payload_text(notification: &Notification) -> String {
        serde_json::to_string(&payload(notification)).expect("json")
    }
}
