//! Helpers every handler uses to end a call: its error, its request id header, its body read
//! within bounds, and its release once the trail is durable.

use axum::body::Body;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use warden_ingest::event::ResponseInfo;
use warden_ingest::{AuditUnavailable, RequestId};

use crate::audit::{AuditTrail, CallAudit};
use crate::config::ProxySettings;
use crate::error::ProxyError;

/// Header carrying the call's request id back to the client.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The client's response, once its call's trail is durable (at once under `buffered`); a
/// trail that cannot be made durable gets the client a 503 `audit_unavailable` instead.
pub(crate) async fn released((response, trail): (Response, AuditTrail)) -> Response {
    match trail.durable().await {
        Ok(()) => response,
        Err(AuditUnavailable) => ProxyError::AuditUnavailable.into_response(),
    }
}

/// Ends a failed call: its response event, then the client's error (to release per
/// [`released`]).
pub(crate) fn fail(call: CallAudit, err: ProxyError) -> (Response, AuditTrail) {
    let trail = call.finish(ResponseInfo {
        status: err.status().as_u16(),
        error_type: Some(err.code().to_owned()),
        ..ResponseInfo::default()
    });
    // Refused because the trail is unavailable: answered at once, not after waiting on the
    // same pipeline again.
    let trail = match err {
        ProxyError::AuditUnavailable => trail.unwaited(),
        _ => trail,
    };
    (err.into_response(), trail)
}

pub(crate) fn with_request_id(mut response: Response, request_id: &RequestId) -> Response {
    if let Ok(value) = HeaderValue::from_str(request_id.as_str()) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

/// Reads the whole request body, refusing more than the configured size, or a body that
/// takes longer than the configured deadline.
pub(crate) async fn read_body(
    body: Body,
    settings: &ProxySettings,
) -> Result<bytes::Bytes, ProxyError> {
    let (limit, deadline) = (settings.max_body_bytes, settings.server.body_read_timeout);
    let read = axum::body::to_bytes(body, limit);
    let read = tokio::time::timeout(deadline, read)
        .await
        .map_err(|_| ProxyError::BodyTimeout(deadline))?;
    read.map_err(|err| {
        let source = err.into_inner();
        if source
            .downcast_ref::<http_body_util::LengthLimitError>()
            .is_some()
        {
            ProxyError::BodyTooLarge { limit }
        } else {
            ProxyError::BodyRead(source.to_string())
        }
    })
}
