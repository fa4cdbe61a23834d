//! `POST /v1/chat/completions` for targets that speak OpenAI's chat format (TGI's Messages
//! API and the HF router): the request is forwarded with the fixes each needs, the answer is
//! normalized back to what an OpenAI client expects, and usage is read for the audit event.

use serde_json::{Map, Value};
use warden_ingest::event::ResponseInfo;

use crate::config::{Target, TargetKind};
use crate::error::ProxyError;
use crate::upstream::{Upstream, UpstreamReply, upstream_error};

/// The upstream path of the chat API, relative to the target's base URL.
const CHAT_PATH: &str = "v1/chat/completions";

/// A successful chat answer, ready for the client, with what the audit needs.
#[derive(Debug)]
pub(crate) struct ChatReply {
    pub(crate) body: Vec<u8>,
    pub(crate) input_tokens: Option<u64>,
    pub(crate) upstream_seconds: f64,
    /// The first choice's message text, for content capture.
    pub(crate) content: Option<String>,
    pub(crate) response: ResponseInfo,
}

/// Forwards a parsed, non-streaming chat request to `target`.
pub(crate) async fn complete(
    upstream: &Upstream,
    target: &Target,
    requested_model: &str,
    request: Map<String, Value>,
) -> Result<ChatReply, ProxyError> {
    let body = upstream_body(target, request)?;
    let reply = upstream.post_json(target, CHAT_PATH, body).await?;
    if !reply.status.is_success() {
        return Err(upstream_error(&reply));
    }
    normalize_reply(&reply, requested_model)
}

/// An upstream stream, ready to be translated for the client.
#[derive(Debug)]
pub(crate) struct OpenedStream {
    pub(crate) response: reqwest::Response,
    /// Whether the client asked for the final usage chunk itself.
    pub(crate) client_wants_usage: bool,
}

/// Starts a streaming chat request to `target`; always asks for usage, for exact audit.
pub(crate) async fn open_stream(
    upstream: &Upstream,
    target: &Target,
    mut request: Map<String, Value>,
) -> Result<OpenedStream, ProxyError> {
    let client_wants_usage = request
        .get("stream_options")
        .and_then(|options| options.get("include_usage"))
        .and_then(Value::as_bool)
        == Some(true);
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
    Ok(OpenedStream {
        response,
        client_wants_usage,
    })
}

/// The request as the target expects it.
fn upstream_body(target: &Target, mut request: Map<String, Value>) -> Result<Vec<u8>, ProxyError> {
    let upstream_model = match target.kind {
        // TGI treats any other model name as a LoRA adapter id.
        TargetKind::TgiMessages => "tgi".to_owned(),
        TargetKind::HfServerless => target.model.clone().unwrap_or_else(|| target.id.clone()),
        TargetKind::Tgi => {
            return Err(ProxyError::Unsupported(
                "native TGI targets are not supported by this build".to_owned(),
            ));
        }
    };
    request.insert("model".to_owned(), Value::String(upstream_model));
    serde_json::to_vec(&request).map_err(|err| ProxyError::InvalidRequest(err.to_string()))
}

/// Rewrites the upstream answer for the client and extracts usage and finish reason.
fn normalize_reply(reply: &UpstreamReply, requested_model: &str) -> Result<ChatReply, ProxyError> {
    let mut answer: Map<String, Value> = serde_json::from_slice(&reply.body)
        .map_err(|err| ProxyError::UpstreamInvalid(format!("not a chat completion: {err}")))?;
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
    Ok(ChatReply {
        body,
        content,
        input_tokens,
        upstream_seconds: reply.elapsed.as_secs_f64(),
        response: ResponseInfo {
            status: 200,
            ttft_ms: Some(reply.time_to_headers.as_secs_f64() * 1000.0),
            output_tokens,
            finish_reason,
            ..ResponseInfo::default()
        },
    })
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
fn normalize_finish_reason(reason: &str) -> &str {
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
            body: Bytes::from_static(
                br#"{"object":"chat.completion","id":"","created":1,"model":"tgi",
                    "choices":[{"index":0,"message":{"role":"assistant","content":"hi"},
                                "finish_reason":"stop_sequence"}],
                    "usage":{"prompt_tokens":7,"completion_tokens":2,"total_tokens":9}}"#,
            ),
            time_to_headers: Duration::from_millis(5),
            elapsed: Duration::from_millis(6),
        };
        let chat = normalize_reply(&reply, "llama").expect("normalized");
        let body: Value = serde_json::from_slice(&chat.body).expect("json");
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
            body: Bytes::from_static(b"<html>"),
            time_to_headers: Duration::ZERO,
            elapsed: Duration::ZERO,
        };
        let err = normalize_reply(&reply, "m").expect_err("invalid");
        assert_eq!(err.status(), StatusCode::BAD_GATEWAY);
    }
}
