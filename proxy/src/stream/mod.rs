//! Streamed answers: an upstream SSE body translated event by event and forwarded as soon as
//! each event is complete, never buffered.
//!
//! [`TranslatedStream`] does what every stream needs: parse the upstream's SSE (whatever
//! its chunk boundaries), hand each event to a [`StreamTranslator`] (OpenAI chunks from an
//! OpenAI-compatible target, TGI token events, or pass-through's untouched bytes), enforce the
//! target's first-token timeout, and emit the call's `response` event exactly once: when the
//! upstream ends, when it breaks off, or, if the client goes away first (the body is
//! dropped), from `Drop`, marked `client_aborted`. Dropping the body also drops the upstream
//! response, which cancels the upstream request.
//!
//! What a stream holds is bounded, whatever the upstream sends: the SSE parser holds at most
//! the target's `max_stream_event_bytes` (an upstream past it gets the client an error event
//! and a response event with `error_type = "upstream_event_too_large"`), and captured content
//! is cut (or hashed) as it passes, never collected whole.
//!
//! Under `[audit].durability = "acked"` the stream's last bytes (`data: [DONE]`, or the
//! error that ends it) are held until the call's events are durable: a client that saw its
//! stream end has a trail that survives a crash. If they cannot be made durable the stream
//! ends with an `audit_unavailable` error instead.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::Stream;
use serde_json::{Value, json};
use tokio::time::Sleep;
use warden_ingest::event::ResponseInfo;

use crate::audit::{AuditTrail, CallAudit, ContentCapture};
use crate::config::Target;
use sse::SseParser;
pub(crate) use writer::{ClientWriter, OutputGuard, TextField};

pub(crate) mod sse;
mod writer;

type UpstreamBytes = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;
type TrailDurable =
    Pin<Box<dyn Future<Output = Result<(), warden_ingest::AuditUnavailable>> + Send>>;

/// What the audit learns from a stream as it passes.
#[derive(Debug)]
pub(crate) struct StreamTally {
    started: Instant,
    pub(crate) finish_reason: Option<String>,
    pub(crate) input_tokens: Option<u64>,
    pub(crate) output_tokens: Option<u64>,
    pub(crate) ttft_ms: Option<f64>,
    pub(crate) error_type: Option<&'static str>,
    /// The streamed text, as the target's capture policy keeps it.
    content: Option<ContentCapture>,
    /// A guardrail rewrites the text: what is captured is what the writer sent
    /// ([`StreamTally::capture`]), not what the translators saw.
    captures_sent_text: bool,
}

impl StreamTally {
    #[cfg(test)]
    pub(crate) fn for_tests() -> Self {
        Self {
            started: Instant::now(),
            finish_reason: None,
            input_tokens: None,
            output_tokens: None,
            ttft_ms: None,
            error_type: None,
            content: None,
            captures_sent_text: false,
        }
    }

    /// Records generated text: the first non-empty piece sets the time to first token.
    pub(crate) fn text(&mut self, text: &str) {
        if text.is_empty() {
            return;
        }
        if self.ttft_ms.is_none() {
            self.ttft_ms = Some(self.started.elapsed().as_secs_f64() * 1000.0);
        }
        if !self.captures_sent_text
            && let Some(content) = self.content.as_mut()
        {
            content.push(text);
        }
    }

    /// Captures text as the client got it (redacted by a guardrail).
    fn capture(&mut self, text: &str) {
        if let Some(content) = self.content.as_mut() {
            content.push(text);
        }
    }
}

/// Turns one kind of upstream event stream into what the client receives, handed to the
/// [`ClientWriter`] as typed pieces.
pub(crate) trait StreamTranslator: Send + Unpin + 'static {
    /// One complete upstream event's `data`: what the client gets for it (or nothing).
    fn event(&mut self, data: &str, tally: &mut StreamTally, out: &mut ClientWriter);

    /// The upstream ended: any closing events (`data: [DONE]`).
    fn end(&mut self, tally: &mut StreamTally, out: &mut ClientWriter);

    /// The stream failed after it began (upstream broke off, first-token timeout): tell the
    /// client in the stream's own error format.
    fn failed(&mut self, message: &str, out: &mut ClientWriter);

    /// Whether the upstream's bytes go to the client untouched (events are only read).
    fn forwards_raw(&self) -> bool {
        false
    }
}

/// The client-facing body of a streamed call.
pub(crate) struct TranslatedStream<T> {
    upstream: UpstreamBytes,
    parser: SseParser,
    translator: T,
    tally: StreamTally,
    /// `Some` until the response event is emitted.
    call: Option<CallAudit>,
    /// Fires if no token arrived in time; dropped once one has.
    first_token_deadline: Option<(Pin<Box<Sleep>>, Duration)>,
    /// `acked`: the stream's last bytes, held until the trail is durable.
    closing: Option<(TrailDurable, Bytes)>,
    done: bool,
    /// What goes to the client (through the call's output guardrail, if it has one).
    out: ClientWriter,
}

/// What bounds a stream: taken from its target.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StreamLimits {
    pub(crate) first_token_timeout: Duration,
    pub(crate) max_event_bytes: usize,
}

impl StreamLimits {
    pub(crate) fn of(target: &Target) -> Self {
        Self {
            first_token_timeout: target.first_token_timeout,
            max_event_bytes: target.max_stream_event_bytes,
        }
    }
}

impl<T: StreamTranslator> TranslatedStream<T> {
    pub(crate) fn new(
        upstream: reqwest::Response,
        mut call: CallAudit,
        translator: T,
        limits: StreamLimits,
    ) -> Self {
        let out = ClientWriter::guarded(call.output_guard.take());
        let first_token_timeout = limits.first_token_timeout;
        let remaining = first_token_timeout.saturating_sub(call.started.elapsed());
        Self {
            upstream: Box::pin(upstream.bytes_stream()),
            parser: SseParser::new(limits.max_event_bytes),
            translator,
            tally: StreamTally {
                started: call.started,
                finish_reason: None,
                input_tokens: None,
                output_tokens: None,
                ttft_ms: None,
                error_type: None,
                content: call.content_capture(),
                captures_sent_text: out.is_guarded(),
            },
            call: Some(call),
            first_token_deadline: Some((
                Box::pin(tokio::time::sleep(remaining)),
                first_token_timeout,
            )),
            closing: None,
            done: false,
            out,
        }
    }

    /// The HTTP response carrying this stream, with headers that stop proxies buffering it.
    pub(crate) fn into_response(self) -> Response {
        (
            [
                (header::CONTENT_TYPE, "text/event-stream"),
                (header::CACHE_CONTROL, "no-cache"),
                (header::HeaderName::from_static("x-accel-buffering"), "no"),
            ],
            Body::from_stream(self),
        )
            .into_response()
    }

    /// Emits the response event (once); returns what the last bytes must wait for.
    fn finish(&mut self, status: u16, error_type: Option<&str>) -> Option<AuditTrail> {
        if let Some(sent) = self.out.take_sent_text() {
            self.tally.capture(&sent);
        }
        let decisions = self.out.decisions();
        self.call.take().map(|mut call| {
            for (policy, outcome, reason) in &decisions {
                call.decided(policy, outcome, Some(reason));
            }
            call.request.input_tokens = self.tally.input_tokens;
            let content = self.tally.content.take().map(ContentCapture::finish);
            call.finish(ResponseInfo {
                content,
                status,
                ttft_ms: self.tally.ttft_ms,
                output_tokens: self.tally.output_tokens,
                finish_reason: self.tally.finish_reason.clone(),
                error_type: error_type.map(str::to_owned),
                ..ResponseInfo::default()
            })
        })
    }

    /// Ends the stream with an error the client can see, and its response event.
    fn fail(
        &mut self,
        cx: &mut Context<'_>,
        error_type: &'static str,
        message: &str,
    ) -> Poll<Option<io::Result<Bytes>>> {
        self.tally.error_type = Some(error_type);
        // What a guard held is redacted text: it goes out before the error.
        self.out.flush_guard();
        self.translator.failed(message, &mut self.out);
        // The 200 and the stream's start already went out; the event says what happened.
        let trail = self.finish(200, Some(error_type));
        let last = self.out.take();
        self.close(cx, last, trail)
    }

    /// Ends the stream with `last`, once `trail` (if any) is durable.
    fn close(
        &mut self,
        cx: &mut Context<'_>,
        last: Bytes,
        trail: Option<AuditTrail>,
    ) -> Poll<Option<io::Result<Bytes>>> {
        self.done = true;
        match trail {
            Some(trail) if !trail.is_durable() => {
                self.closing = Some((Box::pin(trail.durable()), last));
                self.poll_closing(cx)
            }
            _ => Poll::Ready((!last.is_empty()).then_some(Ok(last))),
        }
    }

    /// The held last bytes, once the trail is durable; an error event in their place if it
    /// cannot be made so.
    fn poll_closing(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        let Some((durable, _)) = self.closing.as_mut() else {
            return Poll::Ready(None);
        };
        let outcome = std::task::ready!(durable.as_mut().poll(cx));
        let Some((_, last)) = self.closing.take() else {
            return Poll::Ready(None);
        };
        match outcome {
            Ok(()) => Poll::Ready((!last.is_empty()).then_some(Ok(last))),
            Err(_) => {
                self.translator.failed(
                    "the audit trail is unavailable: the answer is withheld",
                    &mut self.out,
                );
                Poll::Ready(Some(Ok(self.out.take())))
            }
        }
    }
}

impl<T: StreamTranslator> Stream for TranslatedStream<T> {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return this.poll_closing(cx);
        }
        if this.tally.ttft_ms.is_some() {
            this.first_token_deadline = None;
        }
        if let Some((deadline, timeout)) = this.first_token_deadline.as_mut()
            && deadline.as_mut().poll(cx).is_ready()
        {
            let message = format!(
                "the upstream sent no token within {:.1} s",
                timeout.as_secs_f64()
            );
            return this.fail(cx, "upstream_timeout", &message);
        }
        loop {
            match this.upstream.as_mut().poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(bytes))) => {
                    let events = match this.parser.push(&bytes) {
                        Ok(events) => events,
                        Err(too_large) => {
                            return this.fail(
                                cx,
                                "upstream_event_too_large",
                                &too_large.to_string(),
                            );
                        }
                    };
                    if this.translator.forwards_raw() {
                        this.out.raw(&bytes);
                    }
                    for data in events {
                        this.translator.event(&data, &mut this.tally, &mut this.out);
                    }
                    if let Some(sent) = this.out.take_sent_text() {
                        this.tally.capture(&sent);
                    }
                    if let Some(blocked) = this.out.blocked() {
                        // The guard wrote the error chunk: the answer ends here.
                        let code = blocked.error().code();
                        this.tally.error_type = Some(code);
                        let trail = this.finish(200, Some(code));
                        let last = this.out.take();
                        return this.close(cx, last, trail);
                    }
                    if !this.out.is_empty() {
                        return Poll::Ready(Some(Ok(this.out.take())));
                    }
                }
                Poll::Ready(Some(Err(err))) => {
                    let reason = if err.is_timeout() {
                        "upstream_timeout"
                    } else {
                        "upstream_stream_broken"
                    };
                    return this.fail(cx, reason, "the upstream stream broke off");
                }
                Poll::Ready(None) => {
                    let last = match this.parser.finish() {
                        Ok(last) => last,
                        Err(too_large) => {
                            return this.fail(
                                cx,
                                "upstream_event_too_large",
                                &too_large.to_string(),
                            );
                        }
                    };
                    if let Some(data) = last {
                        this.translator.event(&data, &mut this.tally, &mut this.out);
                    }
                    this.translator.end(&mut this.tally, &mut this.out);
                    let error_type = this.tally.error_type;
                    let trail = this.finish(200, error_type);
                    let last = this.out.take();
                    return this.close(cx, last, trail);
                }
            }
        }
    }
}

impl<T> Drop for TranslatedStream<T> {
    fn drop(&mut self) {
        // Still holding the call: the client left before the upstream finished.
        if let Some(mut call) = self.call.take() {
            call.request.input_tokens = self.tally.input_tokens;
            call.abort(ResponseInfo {
                ttft_ms: self.tally.ttft_ms,
                output_tokens: self.tally.output_tokens,
                ..ResponseInfo::default()
            });
        }
    }
}

/// An OpenAI-style error event; the OpenAI SDKs raise it as an `APIError`.
pub(crate) fn openai_error_chunk(message: &str) -> Value {
    json!({"error": {"message": message, "type": "upstream_error", "param": null, "code": "upstream_stream_error"}})
}

/// The message of an in-band upstream error: `{"error": "…"}` (TGI) or
/// `{"error": {"message": "…"}}` (the Messages API, the router).
pub(crate) fn in_band_error_message(error: &Value) -> String {
    match error {
        Value::String(message) => message.clone(),
        other => other
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("upstream error")
            .to_owned(),
    }
}
