//! Streaming chat (`stream: true`) for targets that speak OpenAI's SSE format (TGI's Messages
//! API, the HF router): every upstream event is translated and forwarded as soon as it is
//! complete, never buffered.
//!
//! Per event: `model` becomes the model the client asked for, TGI's `finish_reason` values are
//! normalized, TGI's in-band errors (sent with HTTP 200) become OpenAI error chunks, and the
//! usage chunk is read for the audit. Usage is always requested upstream
//! (`stream_options.include_usage`) so token counts are exact; the usage chunk is passed on
//! only to clients that asked for it.
//!
//! The stream owns the call's [`CallAudit`]: it emits the response event when the upstream
//! ends, and, if the client goes away first (the body is dropped), emits it from `Drop`
//! marked `client_aborted`. Dropping the body also drops the upstream response, which
//! cancels the upstream request.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::Stream;
use serde_json::{Map, Value, json};
use warden_ingest::event::ResponseInfo;

use crate::audit::CallAudit;
use crate::chat::normalize_choice_finish_reason;
use crate::sse::SseParser;

/// HTTP status recorded for calls the client abandoned (nginx's convention).
const CLIENT_CLOSED_REQUEST: u16 = 499;

type UpstreamBytes = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// What the audit learns from the stream as it passes.
#[derive(Debug, Default)]
struct StreamTally {
    finish_reason: Option<String>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    ttft_ms: Option<f64>,
    error_type: Option<&'static str>,
    /// The streamed text, when the target captures content.
    content: Option<String>,
}

/// The client-facing body of a streamed chat call.
pub(crate) struct ChatStream {
    upstream: UpstreamBytes,
    parser: SseParser,
    requested_model: String,
    client_wants_usage: bool,
    tally: StreamTally,
    /// `Some` until the response event is emitted.
    call: Option<CallAudit>,
    done: bool,
}

impl ChatStream {
    pub(crate) fn new(
        upstream: reqwest::Response,
        call: CallAudit,
        requested_model: String,
        client_wants_usage: bool,
    ) -> Self {
        Self {
            upstream: Box::pin(upstream.bytes_stream()),
            parser: SseParser::default(),
            requested_model,
            client_wants_usage,
            tally: StreamTally {
                content: call.captures_content().then(String::new),
                ..StreamTally::default()
            },
            call: Some(call),
            done: false,
        }
    }

    /// Translates one upstream event into what the client receives (possibly nothing).
    fn translate(&mut self, data: &str, out: &mut Vec<u8>) {
        if data.trim() == "[DONE]" {
            out.extend_from_slice(b"data: [DONE]\n\n");
            return;
        }
        let Ok(mut chunk) = serde_json::from_str::<Map<String, Value>>(data) else {
            self.tally.error_type = Some("upstream_invalid_response");
            write_event(
                out,
                &error_chunk("the upstream sent an unreadable stream event"),
            );
            return;
        };
        if let Some(error) = chunk.get("error") {
            self.tally.error_type = Some("upstream_stream_error");
            let message = match error {
                Value::String(message) => message.clone(),
                other => other
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("upstream error")
                    .to_owned(),
            };
            write_event(out, &error_chunk(&message));
            return;
        }
        if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
            self.tally.input_tokens = usage.get("prompt_tokens").and_then(Value::as_u64);
            self.tally.output_tokens = usage.get("completion_tokens").and_then(Value::as_u64);
        }
        let choices = chunk.get_mut("choices").and_then(Value::as_array_mut);
        let is_usage_only = choices.as_ref().is_none_or(|c| c.is_empty());
        for choice in choices.into_iter().flatten() {
            let text = choice.pointer("/delta/content").and_then(Value::as_str);
            if let (Some(content), Some(text)) = (self.tally.content.as_mut(), text) {
                content.push_str(text);
            }
            let has_content = text.is_some_and(|text| !text.is_empty());
            if has_content && self.tally.ttft_ms.is_none() {
                self.tally.ttft_ms = self
                    .call
                    .as_ref()
                    .map(|call| call.started.elapsed().as_secs_f64() * 1000.0);
            }
            if let Some(normalized) = normalize_choice_finish_reason(choice) {
                self.tally.finish_reason = Some(normalized);
            }
        }
        if is_usage_only && !self.client_wants_usage {
            return;
        }
        chunk.insert(
            "model".to_owned(),
            Value::String(self.requested_model.clone()),
        );
        write_event(out, &Value::Object(chunk));
    }

    /// Emits the response event (once).
    fn finish(&mut self, status: u16, error_type: Option<&str>) {
        if let Some(mut call) = self.call.take() {
            call.request.input_tokens = self.tally.input_tokens;
            let content = self
                .tally
                .content
                .as_deref()
                .and_then(|text| call.captured(text));
            call.finish(ResponseInfo {
                content,
                status,
                ttft_ms: self.tally.ttft_ms,
                output_tokens: self.tally.output_tokens,
                finish_reason: self.tally.finish_reason.clone(),
                error_type: error_type.map(str::to_owned),
                ..ResponseInfo::default()
            });
        }
    }
}

fn write_event(out: &mut Vec<u8>, value: &Value) {
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(value.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
}

/// An OpenAI-style error event; the OpenAI SDKs raise it as an `APIError`.
fn error_chunk(message: &str) -> Value {
    json!({"error": {"message": message, "type": "upstream_error", "param": null, "code": "upstream_stream_error"}})
}

impl Stream for ChatStream {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        loop {
            match this.upstream.as_mut().poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(bytes))) => {
                    let mut out = Vec::new();
                    for data in this.parser.push(&bytes) {
                        this.translate(&data, &mut out);
                    }
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Bytes::from(out))));
                    }
                }
                Poll::Ready(Some(Err(err))) => {
                    this.done = true;
                    let reason = if err.is_timeout() {
                        "upstream_timeout"
                    } else {
                        "upstream_stream_broken"
                    };
                    this.tally.error_type = Some(reason);
                    let mut out = Vec::new();
                    write_event(&mut out, &error_chunk("the upstream stream broke off"));
                    out.extend_from_slice(b"data: [DONE]\n\n");
                    this.finish(200, Some(reason));
                    return Poll::Ready(Some(Ok(Bytes::from(out))));
                }
                Poll::Ready(None) => {
                    this.done = true;
                    let mut out = Vec::new();
                    if let Some(data) = this.parser.finish() {
                        this.translate(&data, &mut out);
                    }
                    let error_type = this.tally.error_type;
                    this.finish(200, error_type);
                    return Poll::Ready((!out.is_empty()).then(|| Ok(Bytes::from(out))));
                }
            }
        }
    }
}

impl Drop for ChatStream {
    fn drop(&mut self) {
        // Still holding the call: the client left before the upstream finished.
        self.finish(CLIENT_CLOSED_REQUEST, Some("client_aborted"));
    }
}
