//! Calling Hugging Face targets: one pooled HTTP client (rustls) for every target, the
//! target's token attached, the client's own credentials never forwarded.

use std::time::{Duration, Instant};

use axum::http::{HeaderValue, StatusCode, header};
use bytes::Bytes;
use serde_json::Value;
use tracing::debug;

use crate::config::Target;
use crate::error::ProxyError;

/// Connecting to an upstream takes at most this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The shared upstream HTTP client.
#[derive(Debug, Clone)]
pub(crate) struct Upstream {
    http: reqwest::Client,
}

/// A complete upstream answer.
#[derive(Debug)]
pub(crate) struct UpstreamReply {
    pub(crate) status: StatusCode,
    pub(crate) body: Bytes,
    /// Time until the response headers arrived.
    pub(crate) time_to_headers: Duration,
    /// Time until the whole answer was read.
    pub(crate) elapsed: Duration,
}

impl Upstream {
    pub(crate) fn new() -> Result<Self, reqwest::Error> {
        // Several crates may race to install a provider; whichever wins is ring-compatible.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .build()?;
        Ok(Self { http })
    }

    /// POSTs a JSON body to `path` under the target's base URL and reads the whole answer.
    pub(crate) async fn post_json(
        &self,
        target: &Target,
        path: &str,
        body: Vec<u8>,
    ) -> Result<UpstreamReply, ProxyError> {
        let started = Instant::now();
        let (response, time_to_headers) = self.send_json(target, path, body).await?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|err| classify(&err, target))?;
        Ok(UpstreamReply {
            status,
            body,
            time_to_headers,
            elapsed: started.elapsed(),
        })
    }

    /// POSTs a JSON body and returns as soon as a successful answer's headers arrive, for
    /// the caller to stream its body. An error answer is read whole and returned as the
    /// client's error.
    pub(crate) async fn post_json_streaming(
        &self,
        target: &Target,
        path: &str,
        body: Vec<u8>,
    ) -> Result<reqwest::Response, ProxyError> {
        let started = Instant::now();
        let (response, time_to_headers) = self.send_json(target, path, body).await?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|err| classify(&err, target))?;
        Err(upstream_error(&UpstreamReply {
            status,
            body,
            time_to_headers,
            elapsed: started.elapsed(),
        }))
    }

    /// Sends the request; a 503 (cold model, scale-to-zero endpoint) is retried within the
    /// target's cold-start budget, waiting as long as HF's `estimated_time` says (clamped),
    /// and asking HF to hold the retry until the model is up. Attempts are capped too: seed
    /// 000's retry amplification is what this must never cause.
    async fn send_json(
        &self,
        target: &Target,
        path: &str,
        body: Vec<u8>,
    ) -> Result<(reqwest::Response, Duration), ProxyError> {
        let url = target
            .base_url
            .join(path)
            .map_err(|err| ProxyError::UpstreamUnreachable(err.to_string()))?;
        let body = Bytes::from(body);
        let started = Instant::now();
        let deadline = started + target.cold_start_timeout;
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let mut request = self
                .http
                .post(url.clone())
                .timeout(target.timeout)
                .header(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )
                .body(body.clone());
            if let Some(token) = &target.token {
                request = request.bearer_auth(token.expose());
            }
            if attempt > 1 {
                let remaining = deadline.saturating_duration_since(Instant::now());
                request = request
                    .header("x-wait-for-model", "true")
                    .header("x-scale-up-timeout", remaining.as_secs().max(1).to_string());
            }
            let response = request.send().await.map_err(|err| classify(&err, target))?;
            let remaining = deadline.saturating_duration_since(Instant::now());
            if response.status() != StatusCode::SERVICE_UNAVAILABLE
                || remaining.is_zero()
                || attempt >= MAX_COLD_START_ATTEMPTS
            {
                return Ok((response, started.elapsed()));
            }
            let time_to_headers = started.elapsed();
            let status = response.status();
            let answer = response
                .bytes()
                .await
                .map_err(|err| classify(&err, target))?;
            let wait = estimated_time(&answer)
                .unwrap_or(DEFAULT_COLD_START_WAIT)
                .clamp(MIN_COLD_START_WAIT, MAX_COLD_START_WAIT)
                .min(remaining);
            debug!(target_id = %target.id, attempt, ?wait, "upstream is starting; retrying");
            tokio::time::sleep(wait).await;
            if Instant::now() >= deadline {
                return Err(upstream_error(&UpstreamReply {
                    status,
                    body: answer,
                    time_to_headers,
                    elapsed: started.elapsed(),
                }));
            }
        }
    }
}

/// Most attempts one call makes against a starting upstream.
const MAX_COLD_START_ATTEMPTS: u32 = 6;
/// Wait when a 503 gives no `estimated_time`.
const DEFAULT_COLD_START_WAIT: Duration = Duration::from_secs(1);
const MIN_COLD_START_WAIT: Duration = Duration::from_millis(100);
const MAX_COLD_START_WAIT: Duration = Duration::from_secs(10);

/// HF's `estimated_time` (seconds) in a cold-start 503, plain or inside a one-element list.
fn estimated_time(body: &[u8]) -> Option<Duration> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let value = value
        .as_array()
        .and_then(|items| items.first())
        .unwrap_or(&value);
    let seconds = value.get("estimated_time")?.as_f64()?;
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds))
}

fn classify(err: &reqwest::Error, target: &Target) -> ProxyError {
    if err.is_timeout() {
        ProxyError::UpstreamTimeout(target.timeout.as_secs())
    } else {
        // Without the URL: it is the operator's business, not the client's.
        let reason = if err.is_connect() {
            "connection failed"
        } else if err.is_body() || err.is_decode() {
            "response body broken off"
        } else {
            "request failed"
        };
        ProxyError::UpstreamUnreachable(format!("target {}: {reason}", target.id))
    }
}

/// Turns an upstream error answer into the client's error, keeping the status where it means
/// something to the client (auth, rate limit, capacity) and folding the rest.
pub(crate) fn upstream_error(reply: &UpstreamReply) -> ProxyError {
    let message = error_message(&reply.body)
        .unwrap_or_else(|| format!("upstream answered HTTP {}", reply.status.as_u16()));
    if reply.status == StatusCode::SERVICE_UNAVAILABLE
        && (estimated_time(&reply.body).is_some() || message.contains("currently loading"))
    {
        return ProxyError::UpstreamLoading(message);
    }
    let status = match reply.status.as_u16() {
        401 | 403 | 429 | 503 => reply.status,
        400 | 404 | 413 | 422 => StatusCode::BAD_REQUEST,
        _ => StatusCode::BAD_GATEWAY,
    };
    ProxyError::Upstream { status, message }
}

/// Finds the message in the error shapes HF services use: `{"error": "…"}`,
/// `{"error": {"message": "…"}}`, `{"error": ["…"]}`, `{"detail": "…"}`, `{"message": "…"}`,
/// and any of those wrapped in a one-element list.
fn error_message(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let value = match value {
        Value::Array(mut items) if !items.is_empty() => items.swap_remove(0),
        other => other,
    };
    let text = |v: &Value| v.as_str().map(str::to_owned);
    match &value["error"] {
        Value::String(message) => Some(message.clone()),
        Value::Object(inner) => inner.get("message").and_then(text),
        Value::Array(items) => items.first().and_then(text),
        _ => text(&value["detail"]).or_else(|| text(&value["message"])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_are_found_in_every_hf_shape() {
        let cases: [(&str, &str); 6] = [
            (
                r#"{"error":"Model is overloaded","error_type":"overloaded"}"#,
                "Model is overloaded",
            ),
            (r#"{"error":{"message":"bad input"}}"#, "bad input"),
            (r#"{"error":["first"]}"#, "first"),
            (
                r#"[{"error":"Model x is currently loading","estimated_time":20.0}]"#,
                "Model x is currently loading",
            ),
            (r#"{"detail":"Not Found"}"#, "Not Found"),
            (r#"{"message":"nope"}"#, "nope"),
        ];
        for (body, expected) in cases {
            assert_eq!(
                error_message(body.as_bytes()).as_deref(),
                Some(expected),
                "{body}"
            );
        }
        assert_eq!(error_message(b"<html>bad gateway</html>"), None);
    }

    #[test]
    fn cold_start_503s_are_told_apart_from_capacity_503s() {
        let reply = |body: &'static str| UpstreamReply {
            status: StatusCode::SERVICE_UNAVAILABLE,
            body: Bytes::from_static(body.as_bytes()),
            time_to_headers: Duration::ZERO,
            elapsed: Duration::ZERO,
        };
        let loading = upstream_error(&reply(
            r#"[{"error":"Model m is currently loading","estimated_time":20.0}]"#,
        ));
        assert_eq!(loading.code(), "upstream_loading");
        assert_eq!(loading.status(), StatusCode::SERVICE_UNAVAILABLE);
        let busy = upstream_error(&reply(r#"{"error":"Service Unavailable"}"#));
        assert_eq!(busy.code(), "upstream_unavailable");
        assert_eq!(
            estimated_time(br#"{"error":"x","estimated_time":1.5}"#),
            Some(Duration::from_millis(1500))
        );
    }

    #[test]
    fn meaningful_statuses_are_kept_and_validation_becomes_400() {
        let reply = |status: u16| UpstreamReply {
            status: StatusCode::from_u16(status).expect("status"),
            body: Bytes::from_static(b"{}"),
            time_to_headers: Duration::ZERO,
            elapsed: Duration::ZERO,
        };
        for (upstream, client) in [
            (401, 401),
            (403, 403),
            (429, 429),
            (503, 503),
            (422, 400),
            (500, 502),
            (424, 502),
        ] {
            assert_eq!(
                upstream_error(&reply(upstream)).status().as_u16(),
                client,
                "{upstream}"
            );
        }
    }
}
