//! Receivers: one folder per service a notification goes to, behind one small trait. A
//! receiver turns a [`Notification`] into that service's format and sends it once; what to
//! do about a failure (retry after a pause, give up) is the caller's, from the error's class.

pub mod content;
pub mod email;
pub mod ocsf;
pub mod slack;
pub mod splunk_hec;
pub mod syslog;
pub mod webhook;

use std::fmt;
use std::time::Duration;

use futures::future::BoxFuture;

use super::config::{ReceiverKind, ReceiverSettings};
use super::dispatch::Notification;

/// How a delivery went: what the service answered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivered {
    /// The HTTP status, for HTTP services.
    pub status: Option<u16>,
}

/// Whether trying again can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// The service is down, busy or rate-limiting: try again (after `retry_after` if given).
    Retryable,
    /// The service refused the notification (bad payload, gone channel, bad credentials):
    /// the same notification will never go through.
    Permanent,
}

/// A failed delivery. Its message never holds a credential (webhook URLs are not quoted).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct NotifyError {
    pub class: FailureClass,
    pub message: String,
    pub status: Option<u16>,
    /// The service asked for this pause (`Retry-After`).
    pub retry_after: Option<Duration>,
}

impl NotifyError {
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            class: FailureClass::Retryable,
            message: message.into(),
            status: None,
            retry_after: None,
        }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            class: FailureClass::Permanent,
            message: message.into(),
            status: None,
            retry_after: None,
        }
    }

    /// A transport error (connect, timeout) without the URL reqwest would quote.
    pub fn from_transport(err: &reqwest::Error) -> Self {
        let what = if err.is_timeout() {
            "timed out"
        } else if err.is_connect() {
            "could not connect"
        } else {
            "the request failed"
        };
        Self::retryable(what.to_owned())
    }

    /// An HTTP answer that is not a success: 429 and 5xx retryable (429 with its
    /// `Retry-After`), the rest permanent.
    pub fn from_status(status: u16, body: &str, retry_after: Option<Duration>) -> Self {
        let body = content::truncate(body.trim(), 200);
        let message = format!("answered {status}: {body}");
        let class = if status == 429 || status >= 500 {
            FailureClass::Retryable
        } else {
            FailureClass::Permanent
        };
        Self {
            class,
            message,
            status: Some(status),
            retry_after,
        }
    }
}

/// One receiver's way of telling.
pub trait Notifier: Send + Sync + fmt::Debug {
    /// Sends one notification once.
    fn notify<'a>(
        &'a self,
        notification: &'a Notification,
    ) -> BoxFuture<'a, Result<Delivered, NotifyError>>;

    /// The least time between two sends (a service's rate limit), if any.
    fn min_interval(&self) -> Duration {
        Duration::ZERO
    }
}

/// How long one HTTP delivery may take.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// The HTTP client receivers share.
pub fn http_client() -> Result<reqwest::Client, String> {
    // Several crates may race to install a provider; whichever wins is ring-compatible.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(HTTP_TIMEOUT)
        .connect_timeout(Duration::from_secs(5))
        // A redirect could carry a credential-bearing URL elsewhere.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|err| format!("building the HTTP client: {err}"))
}

/// `Retry-After` in seconds, bounded to an hour.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let seconds: u64 = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds.min(3_600)))
}

/// Reads at most `limit` bytes of an answer's body, as text.
pub async fn read_body_capped(response: reqwest::Response, limit: usize) -> String {
    use futures::StreamExt as _;
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        let room = limit.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= limit {
            break;
        }
    }
    String::from_utf8_lossy(&body).into_owned()
}

/// POSTs `body` as JSON with the notification's `Idempotency-Key`: a 2xx answer delivers
/// it, any other is the error its status says.
pub async fn post_json(
    request: reqwest::RequestBuilder,
    notification: &Notification,
    body: &impl serde::Serialize,
) -> Result<Delivered, NotifyError> {
    let response = request
        .header("idempotency-key", notification.idempotency_key())
        .json(body)
        .send()
        .await
        .map_err(|err| NotifyError::from_transport(&err))?;
    let status = response.status().as_u16();
    if response.status().is_success() {
        return Ok(Delivered {
            status: Some(status),
        });
    }
    let retry_after = retry_after(response.headers());
    let body = read_body_capped(response, 4_096).await;
    Err(NotifyError::from_status(status, &body, retry_after))
}

/// The notifier of a configured receiver.
pub fn build(
    receiver: &ReceiverSettings,
    client: &reqwest::Client,
) -> Result<Box<dyn Notifier>, String> {
    match &receiver.kind {
        ReceiverKind::Slack { url, min_interval } => Ok(Box::new(slack::Slack::new(
            client.clone(),
            url.clone(),
            *min_interval,
        ))),
        ReceiverKind::Webhook {
            url,
            bearer_token,
            max_alerts,
        } => Ok(Box::new(webhook::Webhook::new(
            client.clone(),
            &receiver.name,
            url.clone(),
            bearer_token.clone(),
            *max_alerts,
        ))),
        ReceiverKind::Email(config, password) => {
            Ok(Box::new(email::Email::new(config, password.as_ref())?))
        }
        ReceiverKind::Syslog(config) => Ok(Box::new(syslog::Syslog::new(config)?)),
        ReceiverKind::SplunkHec(config, token) => Ok(Box::new(splunk_hec::SplunkHec::new(
            config,
            token.clone(),
            client,
        ))),
        ReceiverKind::Ocsf { url } => Ok(Box::new(ocsf::Ocsf::new(url, client)?)),
    }
}
