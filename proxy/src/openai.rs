//! Reading OpenAI request fields the endpoints share, and the ids of OpenAI answers.

use serde_json::{Map, Value};
use warden_ingest::RequestId;

use crate::error::ProxyError;

/// A chat completion's `id` (`chatcmpl-…`), derived from the call's request id: what a client
/// keys on names the call in the audit. TGI's own is an empty string.
pub(crate) fn chat_completion_id(request_id: &RequestId) -> String {
    format!("chatcmpl-{request_id}")
}

/// A text completion's `id` (`cmpl-…`), as [`chat_completion_id`].
pub(crate) fn completion_id(request_id: &RequestId) -> String {
    format!("cmpl-{request_id}")
}

/// Whether a request asked for the final usage chunk (`stream_options.include_usage`).
pub(crate) fn client_wants_usage(request: &Map<String, Value>) -> bool {
    request
        .get("stream_options")
        .and_then(|options| options.get("include_usage"))
        .and_then(Value::as_bool)
        == Some(true)
}

/// A field holding one text or a list of texts (`prompt`, `input`), at most `max` of them.
/// Token-id lists, which OpenAI also allows, mean nothing to a Hugging Face target.
pub(crate) fn texts(
    request: &Map<String, Value>,
    field: &str,
    max: usize,
) -> Result<Vec<String>, ProxyError> {
    let invalid = |message: &str| ProxyError::InvalidRequest(format!("{field}: {message}"));
    let texts = match request.get(field) {
        Some(Value::String(text)) => vec![text.clone()],
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(|item| item.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                invalid("must be a string or a list of strings (token ids are not supported)")
            })?,
        Some(_) => return Err(invalid("must be a string or a non-empty list of strings")),
        None => return Err(invalid("is required")),
    };
    if texts.len() > max {
        return Err(invalid(&format!("at most {max} per request")));
    }
    Ok(texts)
}
