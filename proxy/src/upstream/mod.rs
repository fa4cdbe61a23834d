//! Calling Hugging Face targets: one pooled HTTP client (rustls) per target, so each gets
//! its own connect timeout; the target's token attached, the client's own credentials never
//! forwarded (pass-through with `forward_client_authorization` is the one, configured,
//! exception).
//!
//! Timeouts per target: `connect_timeout` for TCP + TLS, `first_token_timeout` for a
//! stream's response headers (and, in [`crate::stream`], its first event), `timeout` for the
//! whole call, body included.
//!
//! - [`path`]: where a call goes below a target's base URL (segments, never a joined string).

mod path;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use bytes::Bytes;
use serde_json::Value;
use tracing::debug;

use crate::config::Target;
use crate::error::ProxyError;

pub(crate) use path::{PathRejected, UpstreamPath};

/// The upstream HTTP clients, one per target id.
#[derive(Debug, Clone)]
pub(crate) struct Upstream {
    clients: HashMap<String, reqwest::Client>,
}

/// A complete upstream answer.
#[derive(Debug)]
pub(crate) struct UpstreamReply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    /// Time until the response headers arrived.
    pub(crate) time_to_headers: Duration,
    /// Time until the whole answer was read.
    pub(crate) elapsed: Duration,
}

impl UpstreamReply {
    /// A numeric response header, such as TGI's `x-prompt-tokens`.
    pub(crate) fn header_u64(&self, name: &str) -> Option<u64> {
        self.headers.get(name)?.to_str().ok()?.trim().parse().ok()
    }
}

/// One upstream request, before it is sent (and possibly re-sent during a cold start).
#[derive(Debug, Clone)]
pub(crate) struct UpstreamRequest {
    pub(crate) method: Method,
    /// Below the target's base URL.
    pub(crate) path: UpstreamPath,
    pub(crate) body: Bytes,
    /// Extra headers (pass-through forwards some of the client's).
    pub(crate) headers: HeaderMap,
    pub(crate) credentials: UpstreamCredentials,
    /// Bound the wait for response headers by the target's first-token timeout.
    pub(crate) streaming: bool,
}

/// Whose credentials go upstream.
#[derive(Debug, Clone)]
pub(crate) enum UpstreamCredentials {
    /// The target's configured token (none, if the target has none).
    Target,
    /// The caller's own `Authorization` (pass-through with `forward_client_authorization`).
    /// Never falls back to the target's token.
    Caller(HeaderValue),
}

impl UpstreamRequest {
    /// A JSON POST.
    pub(crate) fn post_json(path: &str, body: Vec<u8>, streaming: bool) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        Self {
            method: Method::POST,
            path: UpstreamPath::trusted(path),
            body: Bytes::from(body),
            headers,
            credentials: UpstreamCredentials::Target,
            streaming,
        }
    }
}

impl Upstream {
    pub(crate) fn new(targets: &[Target]) -> Result<Self, reqwest::Error> {
        // Several crates may race to install a provider; whichever wins is ring-compatible.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut clients = HashMap::new();
        for target in targets {
            let client = reqwest::Client::builder()
                .connect_timeout(target.connect_timeout)
                .pool_idle_timeout(Duration::from_secs(90))
                .tcp_nodelay(true)
                .build()?;
            clients.insert(target.id.clone(), client);
        }
        Ok(Self { clients })
    }

    /// POSTs a JSON body to `path` under the target's base URL and reads the whole answer.
    pub(crate) async fn post_json(
        &self,
        target: &Target,
        path: &str,
        body: Vec<u8>,
    ) -> Result<UpstreamReply, ProxyError> {
        let (response, time_to_headers) = self
            .send(target, &UpstreamRequest::post_json(path, body, false))
            .await?;
        read_reply(response, time_to_headers, target).await
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
        let (response, time_to_headers) = self
            .send(target, &UpstreamRequest::post_json(path, body, true))
            .await?;
        if response.status().is_success() {
            return Ok(response);
        }
        let reply = read_reply(response, time_to_headers, target).await?;
        Err(upstream_error(&reply))
    }

    /// Sends `request`; a 503 (cold model, scale-to-zero endpoint) is retried within the
    /// target's cold-start budget, waiting as long as HF's `estimated_time` says (clamped),
    /// and asking HF to hold the retry until the model is up. Attempts are capped too: seed
    /// 000's retry amplification is what this must never cause. Returns the response (headers
    /// read, body not) and the time its headers took.
    pub(crate) async fn send(
        &self,
        target: &Target,
        request: &UpstreamRequest,
    ) -> Result<(reqwest::Response, Duration), ProxyError> {
        let client = self.clients.get(&target.id).ok_or_else(|| {
            ProxyError::Internal(format!("no HTTP client for target {}", target.id))
        })?;
        let url = request
            .path
            .on(&target.base_url)
            .map_err(ProxyError::Internal)?;
        let started = Instant::now();
        let deadline = started + target.cold_start_timeout;
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let mut builder = client
                .request(request.method.clone(), url.clone())
                .timeout(target.timeout)
                .headers(request.headers.clone())
                .body(request.body.clone());
            builder = match (&request.credentials, &target.token) {
                (UpstreamCredentials::Caller(authorization), _) => {
                    builder.header(header::AUTHORIZATION, authorization)
                }
                (UpstreamCredentials::Target, Some(token)) => builder.bearer_auth(token.expose()),
                (UpstreamCredentials::Target, None) => builder,
            };
            if attempt > 1 {
                let remaining = deadline.saturating_duration_since(Instant::now());
                builder = builder
                    .header("x-wait-for-model", "true")
                    .header("x-scale-up-timeout", remaining.as_secs().max(1).to_string());
            }
            let response = if request.streaming {
                tokio::time::timeout(target.first_token_timeout, builder.send())
                    .await
                    .map_err(|_| ProxyError::UpstreamTimeout(target.first_token_timeout))?
            } else {
                builder.send().await
            }
            .map_err(|err| classify(&err, target))?;
            let remaining = deadline.saturating_duration_since(Instant::now());
            if response.status() != StatusCode::SERVICE_UNAVAILABLE
                || remaining.is_zero()
                || attempt >= MAX_COLD_START_ATTEMPTS
            {
                return Ok((response, started.elapsed()));
            }
            let time_to_headers = started.elapsed();
            let mut reply = read_reply(response, time_to_headers, target).await?;
            let wait = estimated_time(&reply.body)
                .unwrap_or(DEFAULT_COLD_START_WAIT)
                .clamp(MIN_COLD_START_WAIT, MAX_COLD_START_WAIT)
                .min(remaining);
            debug!(target_id = %target.id, attempt, ?wait, "upstream is starting; retrying");
            tokio::time::sleep(wait).await;
            if Instant::now() >= deadline {
                reply.elapsed = started.elapsed();
                return Err(upstream_error(&reply));
            }
        }
    }
}

/// Reads a whole answer whose headers have arrived, refusing more than the target's
/// `max_response_bytes` (announced or sent).
pub(crate) async fn read_reply(
    mut response: reqwest::Response,
    time_to_headers: Duration,
    target: &Target,
) -> Result<UpstreamReply, ProxyError> {
    let body_started = Instant::now();
    let status = response.status();
    let headers = response.headers().clone();
    let limit = target.max_response_bytes;
    let too_large = || ProxyError::UpstreamTooLarge { limit };
    let announced = response.content_length().unwrap_or(0);
    if announced > limit as u64 {
        return Err(too_large());
    }
    let mut body = bytes::BytesMut::with_capacity(announced as usize);
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|err| classify(&err, target))?
    {
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    let body = body.freeze();
    Ok(UpstreamReply {
        status,
        headers,
        body,
        time_to_headers,
        elapsed: time_to_headers + body_started.elapsed(),
    })
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
        ProxyError::UpstreamTimeout(target.timeout)
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
            headers: HeaderMap::new(),
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
            headers: HeaderMap::new(),
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
