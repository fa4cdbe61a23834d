//! A complete (non-streamed) answer: the bytes the client gets, and what the audit records
//! about them. Every endpoint produces one; [`Answer::deliver`] ends the call with it.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use warden_ingest::event::ResponseInfo;

use crate::audit::{AuditTrail, CallAudit};

/// A complete answer, ready for the client, with what the audit needs.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) body: Vec<u8>,
    /// Response headers besides the content type (pass-through keeps the upstream's).
    pub(crate) headers: HeaderMap,
    pub(crate) content_type: HeaderValue,
    pub(crate) input_tokens: Option<u64>,
    pub(crate) upstream_seconds: f64,
    /// The generated text, for content capture.
    pub(crate) content: Option<String>,
    /// `status`, `ttft_ms`, `output_tokens`, `finish_reason`, `error_type` as known.
    pub(crate) response: ResponseInfo,
}

impl Answer {
    /// A 200 JSON answer.
    pub(crate) fn json(body: Vec<u8>, upstream_seconds: f64, response: ResponseInfo) -> Self {
        Self {
            status: StatusCode::OK,
            body,
            headers: HeaderMap::new(),
            content_type: HeaderValue::from_static("application/json"),
            input_tokens: None,
            upstream_seconds,
            content: None,
            response,
        }
    }

    /// Emits the call's response event and returns the client's response, with what it must
    /// wait for (see [`crate::call::released`]).
    pub(crate) fn deliver(mut self, mut call: CallAudit) -> (Response, AuditTrail) {
        if let Some(mut guard) = call.output_guard.take()
            && self.status.is_success()
            && let Some((body, texts)) = guard.guard_answer(&self.body)
        {
            for (policy, outcome, reason) in guard.decisions() {
                call.decided(policy, outcome, Some(&reason));
            }
            if let Some(blocked) = guard.blocked() {
                call.upstream_seconds = Some(self.upstream_seconds);
                return crate::call::fail(call, blocked.error());
            }
            self.body = body;
            self.content = self.content.map(|_| texts);
        }
        call.request.input_tokens = self.input_tokens;
        call.upstream_seconds = Some(self.upstream_seconds);
        let mut response = self.response;
        response.status = self.status.as_u16();
        response.content = self.content.as_deref().and_then(|text| call.captured(text));
        let trail = call.finish(response);
        let mut http = (self.status, self.body).into_response();
        let headers = http.headers_mut();
        headers.extend(self.headers);
        headers.insert(header::CONTENT_TYPE, self.content_type);
        (http, trail)
    }
}
