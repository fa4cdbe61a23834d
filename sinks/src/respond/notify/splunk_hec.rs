//! The Splunk HTTP Event Collector receiver: one HEC event per alert (the alert as JSON, or
//! its OCSF finding), a notification's events concatenated in one POST to
//! `/services/collector/event` with `Authorization: Splunk <token>`.
//!
//! HEC answers `{"text", "code"}`: codes 8 (internal error), 9 (busy) and 18–20
//! (unhealthy) are retried, the others (bad token, bad index, bad data) are not. With
//! `ack = true` (indexer acknowledgement, Splunk Enterprise), each POST carries this
//! receiver's channel and is delivered only once `/services/collector/ack` says its
//! `ackId` was indexed (polled every 2 s, up to 30 times; a 200 alone only means "looks
//! valid").

use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{Value, json};

use super::super::config::{Secret, SplunkHecConfig};
use super::super::dispatch::Notification;
use super::ocsf;
use super::{Delivered, FailureClass, Notifier, NotifyError};

const ACK_POLL: Duration = Duration::from_secs(2);
const ACK_POLLS: u32 = 30;

#[derive(Debug)]
pub struct SplunkHec {
    client: reqwest::Client,
    base: String,
    token: Secret,
    index: Option<String>,
    sourcetype: String,
    ocsf: bool,
    /// With indexer acknowledgement: this receiver's channel.
    channel: Option<String>,
    host: String,
}

impl SplunkHec {
    pub fn new(config: &SplunkHecConfig, token: Secret, client: &reqwest::Client) -> Self {
        Self {
            client: client.clone(),
            base: config.url.trim_end_matches('/').to_owned(),
            token,
            index: config.index.clone(),
            sourcetype: config.sourcetype.clone(),
            ocsf: config.format == "ocsf",
            channel: config.ack.then(|| uuid::Uuid::new_v4().to_string()),
            host: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|name| name.trim().to_owned())
                .unwrap_or_else(|_| "warden".to_owned()),
        }
    }

    /// The POST body: one event object per alert, concatenated (no array, no commas).
    pub fn body(&self, notification: &Notification) -> Vec<u8> {
        let findings = self.ocsf.then(|| ocsf::findings(notification));
        let mut body = Vec::new();
        for (index, alert) in notification.alerts.iter().enumerate() {
            let event = match &findings {
                Some(findings) => findings[index].clone(),
                None => serde_json::to_value(alert.as_ref()).unwrap_or(Value::Null),
            };
            let mut envelope = json!({
                "time": alert.ts.timestamp_micros() as f64 / 1e6,
                "host": self.host,
                "source": "warden",
                "sourcetype": self.sourcetype,
                "event": event,
                "fields": {
                    "detector": alert.detector,
                    "severity": alert.severity.as_str(),
                    "subject": alert.subject.to_string(),
                    "status": match alert.status {
                        warden_ingest::alert::AlertStatus::Firing => "firing",
                        warden_ingest::alert::AlertStatus::Resolved => "resolved",
                    },
                },
            });
            if let Some(index) = &self.index {
                envelope["index"] = json!(index);
            }
            serde_json::to_writer(&mut body, &envelope).unwrap_or_default();
        }
        body
    }

    fn request(&self, path: &str) -> reqwest::RequestBuilder {
        let mut request = self
            .client
            .post(format!("{}{path}", self.base))
            .header("authorization", format!("Splunk {}", self.token.expose()));
        if let Some(channel) = &self.channel {
            request = request.header("x-splunk-request-channel", channel);
        }
        request
    }

    /// Waits until the indexers acknowledge `ack_id`.
    async fn wait_for_ack(&self, ack_id: u64) -> Result<(), NotifyError> {
        for _ in 0..ACK_POLLS {
            tokio::time::sleep(ACK_POLL).await;
            let response = self
                .request("/services/collector/ack")
                .json(&json!({ "acks": [ack_id] }))
                .send()
                .await
                .map_err(|err| NotifyError::from_transport(&err))?;
            let status = response.status().as_u16();
            let body = super::read_body_capped(response, 4_096).await;
            if status != 200 {
                return Err(hec_error(status, &body));
            }
            let answer: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            if answer["acks"][ack_id.to_string()] == json!(true) {
                return Ok(());
            }
        }
        Err(NotifyError::retryable(
            "the indexers did not acknowledge the events in time",
        ))
    }
}

/// HEC's answer as an error: its `code` decides whether a retry can help.
fn hec_error(status: u16, body: &str) -> NotifyError {
    let answer: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let code = answer["code"].as_i64();
    let text = answer["text"].as_str().unwrap_or(body.trim());
    let class = match code {
        Some(8 | 9 | 18..=20) => FailureClass::Retryable,
        Some(_) => FailureClass::Permanent,
        None if status == 429 || status >= 500 => FailureClass::Retryable,
        None => FailureClass::Permanent,
    };
    NotifyError {
        class,
        message: format!(
            "HEC answered {status} (code {}): {}",
            code.map_or("none".to_owned(), |code| code.to_string()),
            super::content::truncate(text, 200)
        ),
        status: Some(status),
        retry_after: None,
    }
}

impl Notifier for SplunkHec {
    fn notify<'a>(
        &'a self,
        notification: &'a Notification,
    ) -> BoxFuture<'a, Result<Delivered, NotifyError>> {
        Box::pin(async move {
            let response = self
                .request("/services/collector/event")
                .header("content-type", "application/json")
                .body(self.body(notification))
                .send()
                .await
                .map_err(|err| NotifyError::from_transport(&err))?;
            let status = response.status().as_u16();
            let body = super::read_body_capped(response, 4_096).await;
            let answer: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            if status != 200 || answer["code"].as_i64().is_some_and(|code| code != 0) {
                return Err(hec_error(status, &body));
            }
            if self.channel.is_some() {
                let ack_id = answer["ackId"].as_u64().ok_or_else(|| {
                    NotifyError::permanent(
                        "HEC gave no ackId: is indexer acknowledgement enabled on the token?",
                    )
                })?;
                self.wait_for_ack(ack_id).await?;
            }
            Ok(Delivered {
                status: Some(status),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hec_codes_decide_the_retry() {
        let busy = hec_error(503, r#"{"text":"Server is busy","code":9}"#);
        assert_eq!(busy.class, FailureClass::Retryable);
        let unhealthy = hec_error(503, r#"{"text":"queues full","code":18}"#);
        assert_eq!(unhealthy.class, FailureClass::Retryable);
        let bad_token = hec_error(403, r#"{"text":"Invalid token","code":4}"#);
        assert_eq!(bad_token.class, FailureClass::Permanent);
        assert!(bad_token.message.contains("Invalid token"));
        let bad_index = hec_error(400, r#"{"text":"Incorrect index","code":7}"#);
        assert_eq!(bad_index.class, FailureClass::Permanent);
    }
}
