//! Every way a proxied call can fail, and the one place failures become HTTP responses in
//! OpenAI's error shape: `{"error": {"message", "type", "param", "code"}}`.

use std::time::Duration;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::policy::limits::Quotas;

/// A failed call, as the client will see it.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("You didn't provide an API key. Send it as 'Authorization: Bearer YOUR_KEY'.")]
    MissingApiKey,
    #[error("Incorrect API key provided.")]
    InvalidApiKey,
    #[error("This API key has expired: use the client's current key.")]
    ExpiredApiKey,
    #[error("This API key has been revoked.")]
    RevokedApiKey,
    #[error("The model '{0}' is disabled by an operator for now. Retry later.")]
    TargetDisabled(String),
    #[error("You exceeded your budget ({0}). Calls resume when the budget's window turns.")]
    InsufficientQuota(String),
    #[error("Rate limit reached ({reason}).{}", retry_hint(.retry_after))]
    RateLimited {
        reason: String,
        retry_after: Option<Duration>,
        /// For the `x-ratelimit-*` headers of the refusal.
        quotas: Quotas,
        /// An emergency limit (set through `warden.control`), not a configured one.
        emergency: bool,
    },
    #[error(
        "This pass-through forwards your own Hugging Face token: send it as 'Authorization: Bearer hf_...' (and your Warden key in 'X-Warden-Key')."
    )]
    MissingUpstreamToken,
    #[error("Invalid pass-through path: {0}.")]
    InvalidPath(String),
    #[error("Request body is larger than the {limit} byte limit.")]
    BodyTooLarge { limit: usize },
    #[error("Could not read the request body: {0}")]
    BodyRead(String),
    #[error("The request body did not arrive within {:.1} s.", .0.as_secs_f64())]
    BodyTimeout(Duration),
    #[error("Warden is serving as many calls as it is configured to. Retry shortly.")]
    Overloaded,
    #[error("We could not parse the JSON body of your request: {0}")]
    InvalidJson(String),
    #[error("Invalid request: {0}")]
    InvalidRequest(String),
    #[error("The request holds personal or secret data this proxy does not forward ({0}).")]
    PiiDetected(String),
    #[error("The request was refused: it reads as a prompt injection.")]
    PromptInjection,
    #[error("The content policy does not allow this ({0}).")]
    ContentPolicy(String),
    #[error(
        "A guardrail ({0}) failed, and this proxy is configured not to let a call through unchecked. Retry later."
    )]
    GuardrailFailed(&'static str),
    #[error("The model '{0}' does not exist or you do not have access to it.")]
    UnknownModel(String),
    #[error("This API key may not use the model '{0}'.")]
    TargetNotAllowed(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("Unknown endpoint: {0}")]
    UnknownEndpoint(String),
    #[error("The upstream could not be reached: {0}")]
    UpstreamUnreachable(String),
    #[error("The upstream did not answer within {:.1} s.", .0.as_secs_f64())]
    UpstreamTimeout(Duration),
    #[error("The upstream answered with a response Warden could not read: {0}")]
    UpstreamInvalid(String),
    #[error("The upstream's answer is larger than the {limit} byte limit.")]
    UpstreamTooLarge { limit: usize },
    #[error("The model is still starting up: {0}")]
    UpstreamLoading(String),
    #[error(
        "The model '{0}' is failing and is not being called for now (its circuit is open). Retry later."
    )]
    CircuitOpen(String),
    #[error("Upstream error ({status}): {message}")]
    Upstream { status: StatusCode, message: String },
    #[error("Internal error: {0}")]
    Internal(String),
    #[error(
        "The audit trail cannot record this call right now, so it is refused (no audit, no inference). Retry later."
    )]
    AuditUnavailable,
}

impl ProxyError {
    /// Whether the failure is the target's (it counts against its circuit breaker, and
    /// the call may go to a fallback): unreachable, too slow, a 5xx, unreadable, or a cold
    /// start past its budget.
    pub fn is_target_failure(&self) -> bool {
        match self {
            Self::UpstreamUnreachable(_)
            | Self::UpstreamTimeout(_)
            | Self::UpstreamInvalid(_)
            | Self::UpstreamLoading(_)
            | Self::CircuitOpen(_)
            | Self::TargetDisabled(_) => true,
            Self::Upstream { status, .. } => status.is_server_error(),
            _ => false,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::RateLimited { .. } | Self::InsufficientQuota(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::MissingApiKey
            | Self::InvalidApiKey
            | Self::ExpiredApiKey
            | Self::RevokedApiKey
            | Self::MissingUpstreamToken => StatusCode::UNAUTHORIZED,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyRead(_)
            | Self::InvalidJson(_)
            | Self::InvalidRequest(_)
            | Self::PiiDetected(_)
            | Self::PromptInjection
            | Self::ContentPolicy(_)
            | Self::InvalidPath(_) => StatusCode::BAD_REQUEST,
            Self::UnknownModel(_) | Self::UnknownEndpoint(_) => StatusCode::NOT_FOUND,
            Self::TargetNotAllowed(_) => StatusCode::FORBIDDEN,
            Self::Internal(_) | Self::GuardrailFailed(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Unsupported(_) => StatusCode::BAD_REQUEST,
            Self::UpstreamUnreachable(_)
            | Self::UpstreamInvalid(_)
            | Self::UpstreamTooLarge { .. } => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::UpstreamLoading(_)
            | Self::CircuitOpen(_)
            | Self::TargetDisabled(_)
            | Self::AuditUnavailable
            | Self::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            Self::Upstream { status, .. } => *status,
        }
    }

    /// OpenAI's error `type`.
    fn openai_type(&self) -> &'static str {
        match self {
            Self::MissingApiKey
            | Self::InvalidApiKey
            | Self::ExpiredApiKey
            | Self::RevokedApiKey => "invalid_request_error",
            Self::RateLimited { .. } => "rate_limit_error",
            Self::InsufficientQuota(_) => "insufficient_quota",
            Self::TargetNotAllowed(_) => "permission_error",
            Self::Internal(_)
            | Self::GuardrailFailed(_)
            | Self::AuditUnavailable
            | Self::Overloaded => "server_error",
            Self::Upstream { status, .. } if *status == StatusCode::TOO_MANY_REQUESTS => {
                "rate_limit_error"
            }
            Self::UpstreamUnreachable(_)
            | Self::UpstreamTimeout(_)
            | Self::UpstreamInvalid(_)
            | Self::UpstreamTooLarge { .. }
            | Self::UpstreamLoading(_)
            | Self::Upstream { .. } => "upstream_error",
            _ => "invalid_request_error",
        }
    }

    /// Machine-readable code: OpenAI's `code` and the audit event's `error_type`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingApiKey => "missing_api_key",
            Self::InvalidApiKey => "invalid_api_key",
            Self::ExpiredApiKey => "expired_api_key",
            Self::RevokedApiKey => "revoked_api_key",
            Self::TargetDisabled(_) => "target_disabled",
            Self::RateLimited {
                emergency: true, ..
            } => "emergency_rate_limit",
            Self::RateLimited { .. } => "rate_limit_exceeded",
            Self::InsufficientQuota(_) => "insufficient_quota",
            Self::MissingUpstreamToken => "missing_hf_token",
            Self::InvalidPath(_) => "invalid_path",
            Self::BodyTooLarge { .. } => "request_too_large",
            Self::BodyRead(_) => "body_read_error",
            Self::BodyTimeout(_) => "body_read_timeout",
            Self::Overloaded => "overloaded",
            Self::InvalidJson(_) => "invalid_json",
            Self::InvalidRequest(_) => "invalid_request",
            Self::PiiDetected(_) => "pii_detected",
            Self::PromptInjection => "prompt_injection",
            Self::ContentPolicy(_) => "content_policy_violation",
            Self::GuardrailFailed(_) => "guardrail_error",
            Self::UnknownModel(_) => "model_not_found",
            Self::TargetNotAllowed(_) => "target_not_allowed",
            Self::Internal(_) => "internal_error",
            Self::AuditUnavailable => "audit_unavailable",
            Self::Unsupported(_) => "unsupported",
            Self::UnknownEndpoint(_) => "unknown_endpoint",
            Self::UpstreamUnreachable(_) => "upstream_unreachable",
            Self::UpstreamTimeout(_) => "upstream_timeout",
            Self::UpstreamInvalid(_) => "upstream_invalid_response",
            Self::UpstreamTooLarge { .. } => "upstream_response_too_large",
            Self::UpstreamLoading(_) => "upstream_loading",
            Self::CircuitOpen(_) => "circuit_open",
            Self::Upstream { status, .. } => match status.as_u16() {
                401 => "upstream_unauthorized",
                403 => "upstream_forbidden",
                429 => "upstream_rate_limited",
                503 => "upstream_unavailable",
                _ => "upstream_error",
            },
        }
    }
}

/// The end of a rate-limit message: when to retry, or that the call can never pass.
fn retry_hint(retry_after: &Option<Duration>) -> String {
    match retry_after {
        Some(wait) => format!(" Retry after {:.1} s.", wait.as_secs_f64()),
        None => " This call's token reservation is larger than the limit: lower max_tokens or the prompt.".to_owned(),
    }
}

/// `Retry-After` (seconds) on a 503 for a full proxy.
pub(crate) const OVERLOADED_RETRY_AFTER_S: u32 = 1;

impl ProxyError {
    /// The error in OpenAI's JSON shape.
    pub(crate) fn openai_body(&self) -> serde_json::Value {
        json!({
            "error": {
                "message": self.to_string(),
                "type": self.openai_type(),
                "param": null,
                "code": self.code(),
            }
        })
    }
}

impl IntoResponse for ProxyError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), Json(self.openai_body())).into_response();
        let retry_after = match &self {
            Self::Overloaded => Some(u64::from(OVERLOADED_RETRY_AFTER_S)),
            // Whole seconds, rounded up: a client retrying then passes.
            Self::RateLimited { retry_after, .. } => {
                retry_after.map(|wait| wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
            }
            _ => None,
        };
        if let Self::RateLimited { quotas, .. } = &self {
            quotas.write_headers(response.headers_mut());
        }
        if let Some(seconds) = retry_after {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(seconds),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn errors_use_openai_shape_and_keep_meaningful_upstream_status() {
        let response = ProxyError::Upstream {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: "Model is overloaded".into(),
        }
        .into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .expect("body");
        let value: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(value["error"]["type"], "rate_limit_error");
        assert_eq!(value["error"]["code"], "upstream_rate_limited");
        assert!(
            value["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("overloaded"))
        );
        assert!(value["error"]["param"].is_null());
    }
}
