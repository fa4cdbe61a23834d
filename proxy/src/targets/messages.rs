//! `POST /v1/chat/completions` for targets that speak OpenAI's chat format (TGI's Messages
//! API and the HF router): the request is forwarded with the fixes each needs, the answer is
//! normalized back to what an OpenAI client expects, and usage is read for the audit.
//!
//! Streams ([`OpenAiChunks`]): per event, `model` becomes the model the client asked for,
//! TGI's `finish_reason` values are normalized, TGI's in-band errors (sent with HTTP 200)
//! become OpenAI error chunks, and the usage chunk is read for the audit. Usage is always
//! requested upstream (`stream_options.include_usage`) so token counts are exact; the usage
//! chunk is passed on only to clients that asked for it.
//!
//! Answers and chunks carry an OpenAI `id` derived from the call's request id
//! ([`chat_completion_id`]), never TGI's empty one.

use serde_json::{Map, Value};
use warden_ingest::RequestId;
use warden_ingest::event::ResponseInfo;

use crate::answer::Answer;
use crate::config::{Target, TargetKind};
use crate::error::ProxyError;
use crate::openai::{chat_completion_id, client_wants_usage};
use crate::stream::{
    ClientWriter, StreamTally, StreamTranslator, TextField, in_band_error_message,
    openai_error_chunk,
};
use crate::upstream::{Upstream, UpstreamReply, upstream_error};

/// The upstream path of the chat API, relative to the target's base URL.
const CHAT_PATH: &str = "v1/chat/completions";

/// Forwards a parsed, non-streaming chat request to `target`.
pub(crate) async fn complete(
    upstream: &Upstream,
    target: &Target,
    requested_model: &str,
    request: Map<String, Value>,
    request_id: &RequestId,
) -> Result<Answer, ProxyError> {
    let body = upstream_body(target, request)?;
    let reply = upstream.post_json(target, CHAT_PATH, body).await?;
    if !reply.status.is_success() {
        return Err(upstream_error(&reply));
    }
    normalize_reply(&reply, requested_model, &chat_completion_id(request_id))
}

/// Starts a streaming chat request to `target`; always asks for usage, for exact audit.
/// Returns the upstream response and the translator for its events.
pub(crate) async fn open_stream(
    upstream: &Upstream,
    target: &Target,
    requested_model: &str,
    mut request: Map<String, Value>,
    request_id: &RequestId,
) -> Result<(reqwest::Response, OpenAiChunks), ProxyError> {
    let client_wants_usage = client_wants_usage(&request);
    let options = request
        .entry("stream_options")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(options) = options {
        options.insert("include_usage".to_owned(), Value::Bool(true));
    } else {
        return Err(ProxyError::InvalidRequest(
            "'stream_options' must be an object".to_owned(),
        ));
    }
    let body = upstream_body(target, request)?;
    let response = upstream
        .post_json_streaming(target, CHAT_PATH, body)
        .await?;
    let translator = OpenAiChunks {
        id: chat_completion_id(request_id),
        requested_model: requested_model.to_owned(),
        client_wants_usage,
        done: false,
    };
    Ok((response, translator))
}

/// The request as the target expects it.
fn upstream_body(target: &Target, mut request: Map<String, Value>) -> Result<Vec<u8>, ProxyError> {
    // TGI (behind the Messages API and HF's own provider) validates top_p in (0, 1)
    // exclusive; OpenAI clients send 1.0 to mean "no nucleus sampling", which is the default.
    if request.get("top_p").and_then(Value::as_f64) == Some(1.0) {
        request.remove("top_p");
    }
    let num_stops = match request.get("stop") {
        Some(Value::Array(stops)) => stops.len(),
        _ => 0,
    };
    if target.kind == TargetKind::TgiMessages && num_stops > target.max_stop_sequences {
        return Err(ProxyError::InvalidRequest(format!(
            "stop: at most {} stop sequences are supported by this model, got {num_stops}",
            target.max_stop_sequences
        )));
    }
    let upstream_model = match target.kind {
        // TGI treats any other model name as a LoRA adapter id.
        TargetKind::TgiMessages => target
            .adapter_id
            .clone()
            .unwrap_or_else(|| "tgi".to_owned()),
        TargetKind::HfServerless => target.public_name().to_owned(),
        TargetKind::Tgi => {
            return Err(ProxyError::Internal(
                "native TGI chat goes through the generation API".to_owned(),
            ));
        }
    };
    request.insert("model".to_owned(), Value::String(upstream_model));
    serde_json::to_vec(&request).map_err(|err| ProxyError::InvalidRequest(err.to_string()))
}

/// Rewrites the upstream answer for the client and extracts usage and finish reason.
fn normalize_reply(
    reply: &UpstreamReply,
    requested_model: &str,
    id: &str,
) -> Result<Answer, ProxyError> {
    let mut answer: Map<String, Value> = serde_json::from_slice(&reply.body)
        .map_err(|err| ProxyError::UpstreamInvalid(format!("not a chat completion: {err}")))?;
    answer.insert("id".to_owned(), Value::String(id.to_owned()));
    // Clients see the model they asked for, not TGI's "tgi".
    answer.insert(
        "model".to_owned(),
        Value::String(requested_model.to_owned()),
    );
    let mut finish_reason = None;
    if let Some(Value::Array(choices)) = answer.get_mut("choices") {
        for choice in choices {
            let normalized = normalize_choice_finish_reason(choice);
            finish_reason = finish_reason.or(normalized);
        }
    }
    let usage = answer.get("usage");
    let count = |field: &str| usage.and_then(|u| u.get(field)).and_then(Value::as_u64);
    let input_tokens = count("prompt_tokens");
    let output_tokens = count("completion_tokens");
    let content = answer
        .get("choices")
        .and_then(|choices| choices.pointer("/0/message/content"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let body =
        serde_json::to_vec(&answer).map_err(|err| ProxyError::UpstreamInvalid(err.to_string()))?;
    Ok(Answer {
        content,
        input_tokens,
        ..Answer::json(
            body,
            reply.elapsed.as_secs_f64(),
            ResponseInfo {
                ttft_ms: Some(reply.time_to_headers.as_secs_f64() * 1000.0),
                output_tokens,
                finish_reason,
                ..ResponseInfo::default()
            },
        )
    })
}

/// Translates an OpenAI-compatible target's `chat.completion.chunk` stream.
#[derive(Debug)]
pub(crate) struct OpenAiChunks {
    /// The `id` every chunk carries.
    id: String,
    requested_model: String,
    client_wants_usage: bool,
    /// The upstream's `[DONE]` arrived: passed on at the end (held there under `acked`).
    done: bool,
}

impl OpenAiChunks {
    #[cfg(test)]
    pub(crate) fn for_tests() -> Self {
        Self {
            id: "chatcmpl-test".to_owned(),
            requested_model: "m".to_owned(),
            client_wants_usage: true,
            done: false,
        }
    }
}

impl StreamTranslator for OpenAiChunks {
    fn event(&mut self, data: &str, tally: &mut StreamTally, out: &mut ClientWriter) {
        // Nothing is passed on after the upstream's `[DONE]`.
        if self.done || data.trim() == "[DONE]" {
            self.done = true;
            return;
        }
        let Ok(mut chunk) = serde_json::from_str::<Map<String, Value>>(data) else {
            tally.error_type = Some("upstream_invalid_response");
            out.event(&openai_error_chunk(
                "the upstream sent an unreadable stream event",
            ));
            return;
        };
        if let Some(error) = chunk.get("error") {
            tally.error_type = Some("upstream_stream_error");
            out.event(&openai_error_chunk(&in_band_error_message(error)));
            return;
        }
        if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
            tally.input_tokens = usage.get("prompt_tokens").and_then(Value::as_u64);
            tally.output_tokens = usage.get("completion_tokens").and_then(Value::as_u64);
        }
        let choices = chunk.get_mut("choices").and_then(Value::as_array_mut);
        let is_usage_only = choices.as_ref().is_none_or(|c| c.is_empty());
        for choice in choices.into_iter().flatten() {
            if let Some(text) = choice.pointer("/delta/content").and_then(Value::as_str) {
                tally.text(text);
            }
            if let Some(normalized) = normalize_choice_finish_reason(choice) {
                tally.finish_reason = Some(normalized);
            }
        }
        if is_usage_only && !self.client_wants_usage {
            return;
        }
        chunk.insert("id".to_owned(), Value::String(self.id.clone()));
        chunk.insert(
            "model".to_owned(),
            Value::String(self.requested_model.clone()),
        );
        out.generated(&Value::Object(chunk), TextField::ChatDelta);
    }

    fn end(&mut self, _tally: &mut StreamTally, out: &mut ClientWriter) {
        if self.done {
            out.done();
        }
    }

    fn failed(&mut self, message: &str, out: &mut ClientWriter) {
        out.event(&openai_error_chunk(message));
        out.done();
    }
}

/// Rewrites a choice's `finish_reason` (message or stream delta) to OpenAI's vocabulary in
/// place, and returns it.
pub(crate) fn normalize_choice_finish_reason(choice: &mut Value) -> Option<String> {
    let reason = choice.get_mut("finish_reason")?;
    let normalized = normalize_finish_reason(reason.as_str()?).to_owned();
    *reason = Value::String(normalized.clone());
    Some(normalized)
}

/// Maps TGI's finish reasons to OpenAI's (`eos_token`, `stop_sequence` → `stop`).
pub(crate) fn normalize_finish_reason(reason: &str) -> &str {
    match reason {
        "eos_token" | "stop_sequence" => "stop",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::http::StatusCode;
    use bytes::Bytes;

    use super::*;

    #[test]
    fn tgi_answer_is_normalized_for_openai_clients() {
        let reply = UpstreamReply {
            status: StatusCode::OK,
            headers: axum::http::HeaderMap::new(),
            body: Bytes::from_static(
                br#"{"object":"chat.completion","id":"","created":1,"model":"tgi",
                    "choices":[{"index":0,"message":{"role":"assistant","content":"hi"},
                                "finish_reason":"stop_sequence"}],
                    "usage":{"prompt_tokens":7,"completion_tokens":2,"total_tokens":9}}"#,
            ),
            time_to_headers: Duration::from_millis(5),
            elapsed: Duration::from_millis(6),
        };
        let chat = normalize_reply(&reply, "llama", "chatcmpl-r1").expect("normalized");
        let body: Value = serde_json::from_slice(&chat.body).expect("json");
        assert_eq!(body["id"], "chatcmpl-r1", "TGI's empty id is replaced");
        assert_eq!(body["model"], "llama");
        assert_eq!(body["choices"][0]["finish_reason"], "stop");
        assert_eq!(body["choices"][0]["message"]["content"], "hi");
        assert_eq!(chat.input_tokens, Some(7));
        assert_eq!(chat.response.output_tokens, Some(2));
        assert_eq!(chat.response.finish_reason.as_deref(), Some("stop"));
    }

    #[test]
    fn non_json_answer_is_an_upstream_error() {
        let reply = UpstreamReply {
            status: StatusCode::OK,
            headers: axum::http::HeaderMap::new(),
            body: Bytes::from_static(b"<html>"),
            time_to_headers: Duration::ZERO,
            elapsed: Duration::ZERO,
        };
        let err = normalize_reply(&reply, "m", "chatcmpl-r1").expect_err("invalid");
        assert_eq!(err.status(), StatusCode::BAD_GATEWAY);
    }
}
