//! OpenAI chat and completions served by Hugging Face's native text-generation API: TGI's
//! `/generate` and `/generate_stream`, or the HF serverless task payload `{inputs,
//! parameters}` at `models/{model}`.
//!
//! - Chat messages become one prompt through the target's chat template
//!   ([`crate::targets::template`]); completions send their prompt as is.
//! - OpenAI parameters are mapped the way TGI validates them ([`generation_parameters`]):
//!   `temperature: 0` becomes greedy decoding, `top_p: 1` is left out, `max_tokens` becomes
//!   `max_new_tokens`, more `stop` sequences than the target allows is a 400, and
//!   `details: true` is always sent so token counts and the finish reason are exact.
//! - Answers come back in OpenAI's shapes; TGI's finish reasons are normalized
//!   (`eos_token`, `stop_sequence` → `stop`). Streams ([`TokenEvents`]) turn each token event
//!   into a chunk as it arrives, add the usage chunk when asked, and end with `[DONE]`; an
//!   in-band error, or a stream that ends before its final event, becomes an error chunk.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};
use warden_ingest::RequestId;
use warden_ingest::event::ResponseInfo;

use crate::answer::Answer;
use crate::config::{Target, TargetKind};
use crate::error::ProxyError;
use crate::openai::{chat_completion_id, completion_id, texts};
use crate::stream::{
    ClientWriter, StreamTally, StreamTranslator, TextField, in_band_error_message,
    openai_error_chunk,
};
use crate::targets::messages::normalize_finish_reason;
use crate::targets::serverless;
use crate::upstream::{Upstream, UpstreamReply, upstream_error};

/// Most prompts one `/v1/completions` call may carry (each is one upstream request).
const MAX_PROMPTS_PER_CALL: usize = 16;

/// The OpenAI API a generation answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpenAiApi {
    Chat,
    Completions,
}

impl OpenAiApi {
    fn object(self) -> &'static str {
        match self {
            Self::Chat => "chat.completion",
            Self::Completions => "text_completion",
        }
    }

    fn chunk_object(self) -> &'static str {
        match self {
            Self::Chat => "chat.completion.chunk",
            Self::Completions => "text_completion",
        }
    }

    /// Where its chunks carry the generated text.
    fn text_field(self) -> TextField {
        match self {
            Self::Chat => TextField::ChatDelta,
            Self::Completions => TextField::CompletionText,
        }
    }

    fn id(self, request_id: &RequestId) -> String {
        match self {
            Self::Chat => chat_completion_id(request_id),
            Self::Completions => completion_id(request_id),
        }
    }
}

/// One call's generation, translated and ready to send.
#[derive(Debug)]
pub(crate) struct Generation {
    api: OpenAiApi,
    prompts: Vec<String>,
    parameters: Map<String, Value>,
    /// Completions' `echo`: answers start with their prompt.
    echo: bool,
    requested_model: String,
    id: String,
    created: u64,
}

impl Generation {
    /// A chat request for a `tgi` target: its messages rendered with the target's template.
    pub(crate) fn chat(
        request: &Map<String, Value>,
        target: &Target,
        requested_model: &str,
        request_id: &RequestId,
    ) -> Result<Self, ProxyError> {
        let template = target.chat_template.as_ref().ok_or_else(|| {
            ProxyError::Internal(format!("target {} has no chat template", target.id))
        })?;
        if request.get("tools").is_some_and(|tools| !tools.is_null()) {
            return Err(ProxyError::Unsupported(
                "tools need a target that speaks the Messages API (kind \"tgi-messages\")"
                    .to_owned(),
            ));
        }
        let messages = request.get("messages").unwrap_or(&Value::Null);
        let prompt = template.render(messages)?;
        Self::new(
            OpenAiApi::Chat,
            vec![prompt],
            request,
            target,
            requested_model,
            request_id,
        )
    }

    /// A completions request: `prompt` is a string or a list of strings.
    pub(crate) fn completions(
        request: &Map<String, Value>,
        target: &Target,
        requested_model: &str,
        request_id: &RequestId,
    ) -> Result<Self, ProxyError> {
        let prompts = texts(request, "prompt", MAX_PROMPTS_PER_CALL)?;
        if request
            .get("suffix")
            .is_some_and(|suffix| !suffix.is_null())
        {
            return Err(ProxyError::Unsupported(
                "suffix is not supported by Hugging Face text generation".to_owned(),
            ));
        }
        if request.get("best_of").and_then(Value::as_u64).unwrap_or(1) > 1 {
            return Err(ProxyError::Unsupported(
                "best_of > 1 is not supported".to_owned(),
            ));
        }
        let mut generation = Self::new(
            OpenAiApi::Completions,
            prompts,
            request,
            target,
            requested_model,
            request_id,
        )?;
        generation.echo = request.get("echo").and_then(Value::as_bool) == Some(true);
        Ok(generation)
    }

    fn new(
        api: OpenAiApi,
        prompts: Vec<String>,
        request: &Map<String, Value>,
        target: &Target,
        requested_model: &str,
        request_id: &RequestId,
    ) -> Result<Self, ProxyError> {
        Ok(Self {
            api,
            prompts,
            parameters: generation_parameters(request, target)?,
            echo: false,
            requested_model: requested_model.to_owned(),
            id: api.id(request_id),
            created: unix_now(),
        })
    }

    /// Generates every prompt (concurrently) and answers in one OpenAI response.
    pub(crate) async fn complete(
        self,
        upstream: &Upstream,
        target: &Target,
    ) -> Result<Answer, ProxyError> {
        let path = generate_path(target, false);
        let calls = self.prompts.iter().map(|prompt| {
            let body = self.upstream_body(target, prompt, false);
            let path = path.clone();
            async move {
                let reply = upstream.post_json(target, &path, body?).await?;
                if !reply.status.is_success() {
                    return Err(upstream_error(&reply));
                }
                read_generated(&reply).map(|generated| (generated, reply))
            }
        });
        let results = futures::future::try_join_all(calls).await?;

        let mut choices = Vec::with_capacity(results.len());
        let (mut input_tokens, mut output_tokens) = (Some(0u64), Some(0u64));
        let mut upstream_seconds = 0.0;
        let mut finish_reason = None;
        for (index, (generated, reply)) in results.iter().enumerate() {
            let text = if self.echo {
                format!("{}{}", self.prompts[index], generated.text)
            } else {
                generated.text.clone()
            };
            choices.push(self.choice(index, text, generated.finish_reason.as_deref()));
            // Counts are the upstream's word: saturate rather than overflow.
            input_tokens = input_tokens
                .zip(generated.input_tokens)
                .map(|(a, b)| a.saturating_add(b));
            output_tokens = output_tokens
                .zip(generated.output_tokens)
                .map(|(a, b)| a.saturating_add(b));
            upstream_seconds += reply.elapsed.as_secs_f64();
            finish_reason = finish_reason.or_else(|| generated.finish_reason.clone());
        }
        let answer = json!({
            "id": self.id,
            "object": self.api.object(),
            "created": self.created,
            "model": self.requested_model,
            "choices": choices,
            "usage": usage(input_tokens, output_tokens),
        });
        let body =
            serde_json::to_vec(&answer).map_err(|err| ProxyError::Internal(err.to_string()))?;
        let ttft_ms = results
            .first()
            .map(|(_, reply)| reply.time_to_headers.as_secs_f64() * 1000.0);
        Ok(Answer {
            input_tokens,
            content: results.first().map(|(generated, _)| generated.text.clone()),
            ..Answer::json(
                body,
                upstream_seconds,
                ResponseInfo {
                    ttft_ms,
                    output_tokens,
                    finish_reason,
                    ..ResponseInfo::default()
                },
            )
        })
    }

    /// Starts the streamed generation of the (single) prompt.
    pub(crate) async fn open_stream(
        self,
        upstream: &Upstream,
        target: &Target,
        client_wants_usage: bool,
    ) -> Result<(reqwest::Response, TokenEvents), ProxyError> {
        let [prompt] = self.prompts.as_slice() else {
            return Err(ProxyError::Unsupported(
                "streaming supports one prompt per request".to_owned(),
            ));
        };
        let body = self.upstream_body(target, prompt, true)?;
        let response = upstream
            .post_json_streaming(target, &generate_path(target, true), body)
            .await?;
        let echo = self.echo.then(|| prompt.clone());
        Ok((
            response,
            TokenEvents {
                api: self.api,
                id: self.id,
                created: self.created,
                model: self.requested_model,
                client_wants_usage,
                echo,
                role_sent: false,
                tokens_seen: 0,
                ended: false,
            },
        ))
    }

    fn upstream_body(
        &self,
        target: &Target,
        prompt: &str,
        stream: bool,
    ) -> Result<Vec<u8>, ProxyError> {
        let mut body = json!({"inputs": prompt, "parameters": self.parameters});
        // The serverless task API takes `stream` in the body; TGI has a separate route.
        if stream && target.kind == TargetKind::HfServerless {
            body["stream"] = Value::Bool(true);
        }
        serde_json::to_vec(&body).map_err(|err| ProxyError::Internal(err.to_string()))
    }

    fn choice(&self, index: usize, text: String, finish_reason: Option<&str>) -> Value {
        match self.api {
            OpenAiApi::Chat => json!({
                "index": index,
                "message": {"role": "assistant", "content": text},
                "logprobs": null,
                "finish_reason": finish_reason,
            }),
            OpenAiApi::Completions => json!({
                "index": index,
                "text": text,
                "logprobs": null,
                "finish_reason": finish_reason,
            }),
        }
    }
}

/// Where a target's text-generation API lives, relative to its base URL.
fn generate_path(target: &Target, stream: bool) -> String {
    match target.kind {
        TargetKind::Tgi | TargetKind::TgiMessages if stream => "generate_stream".to_owned(),
        TargetKind::Tgi | TargetKind::TgiMessages => "generate".to_owned(),
        TargetKind::HfServerless => serverless::model_path(target),
    }
}

/// OpenAI's request parameters as TGI's `parameters` (validated the way TGI would, so the
/// client gets a clear 400 instead of the upstream's 422).
pub(crate) fn generation_parameters(
    request: &Map<String, Value>,
    target: &Target,
) -> Result<Map<String, Value>, ProxyError> {
    let invalid = |message: String| ProxyError::InvalidRequest(message);
    let number = |name: &str| -> Result<Option<f64>, ProxyError> {
        match request.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => value
                .as_f64()
                .map(Some)
                .ok_or_else(|| invalid(format!("{name} must be a number"))),
        }
    };
    let mut parameters = Map::new();
    // Exact token counts and the finish reason only come with details.
    parameters.insert("details".to_owned(), Value::Bool(true));
    parameters.insert("return_full_text".to_owned(), Value::Bool(false));

    let max_tokens = request
        .get("max_completion_tokens")
        .filter(|value| !value.is_null())
        .or_else(|| request.get("max_tokens").filter(|value| !value.is_null()));
    if let Some(max_tokens) = max_tokens {
        match max_tokens.as_u64() {
            Some(max) if max > 0 => {
                parameters.insert("max_new_tokens".to_owned(), max.into());
            }
            _ => return Err(invalid("max_tokens must be a positive integer".to_owned())),
        }
    }
    match number("temperature")? {
        // TGI rejects 0; OpenAI means greedy decoding by it.
        Some(0.0) => {
            parameters.insert("do_sample".to_owned(), Value::Bool(false));
        }
        Some(temperature) if temperature > 0.0 && temperature <= 2.0 => {
            parameters.insert("temperature".to_owned(), temperature.into());
            parameters.insert("do_sample".to_owned(), Value::Bool(true));
        }
        Some(_) => return Err(invalid("temperature must be between 0 and 2".to_owned())),
        None => {}
    }
    match number("top_p")? {
        // TGI requires top_p < 1; 1 means "no nucleus sampling", which is TGI's default.
        Some(1.0) => {}
        Some(top_p) if top_p > 0.0 && top_p < 1.0 => {
            parameters.insert("top_p".to_owned(), top_p.into());
        }
        Some(_) => return Err(invalid("top_p must be > 0 and <= 1".to_owned())),
        None => {}
    }
    match number("frequency_penalty")? {
        Some(0.0) => {}
        Some(penalty) if (-2.0..=2.0).contains(&penalty) => {
            parameters.insert("frequency_penalty".to_owned(), penalty.into());
        }
        Some(_) => {
            return Err(invalid(
                "frequency_penalty must be between -2 and 2".to_owned(),
            ));
        }
        None => {}
    }
    if number("presence_penalty")?.is_some_and(|penalty| penalty != 0.0) {
        return Err(ProxyError::Unsupported(
            "presence_penalty has no equivalent in TGI's /generate".to_owned(),
        ));
    }
    if let Some(seed) = request.get("seed").filter(|seed| !seed.is_null()) {
        let seed = seed
            .as_u64()
            .ok_or_else(|| invalid("seed must be a non-negative integer".to_owned()))?;
        parameters.insert("seed".to_owned(), seed.into());
    }
    if request.get("n").and_then(Value::as_u64).unwrap_or(1) != 1 {
        return Err(ProxyError::Unsupported(
            "n > 1 is not supported by native text generation".to_owned(),
        ));
    }
    if request.get("logprobs").is_some_and(|logprobs| {
        logprobs.as_bool() == Some(true) || logprobs.as_u64().is_some_and(|n| n > 0)
    }) {
        return Err(ProxyError::Unsupported(
            "logprobs are not supported by native text generation".to_owned(),
        ));
    }
    let stop = match request.get("stop") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(stop)) => vec![Value::String(stop.clone())],
        Some(Value::Array(stops)) if stops.iter().all(Value::is_string) => stops.clone(),
        Some(_) => {
            return Err(invalid(
                "stop must be a string or a list of strings".to_owned(),
            ));
        }
    };
    if stop.len() > target.max_stop_sequences {
        return Err(invalid(format!(
            "stop: at most {} stop sequences are supported by this model, got {}",
            target.max_stop_sequences,
            stop.len()
        )));
    }
    if !stop.is_empty() {
        parameters.insert("stop".to_owned(), Value::Array(stop));
    }
    if let Some(grammar) = grammar(request.get("response_format"))? {
        parameters.insert("grammar".to_owned(), grammar);
    }
    if let Some(adapter_id) = &target.adapter_id {
        parameters.insert("adapter_id".to_owned(), Value::String(adapter_id.clone()));
    }
    Ok(parameters)
}

/// OpenAI's `response_format` as TGI's `grammar`.
fn grammar(response_format: Option<&Value>) -> Result<Option<Value>, ProxyError> {
    let Some(format) = response_format.filter(|format| !format.is_null()) else {
        return Ok(None);
    };
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(json!({"type": "json", "value": {"type": "object"}}))),
        Some("json_schema") => {
            let schema = format
                .pointer("/json_schema/schema")
                .cloned()
                .ok_or_else(|| {
                    ProxyError::InvalidRequest(
                        "response_format.json_schema.schema is required".to_owned(),
                    )
                })?;
            Ok(Some(json!({"type": "json", "value": schema})))
        }
        _ => Err(ProxyError::InvalidRequest(
            "response_format.type must be text, json_object or json_schema".to_owned(),
        )),
    }
}

/// What one `/generate` answer gave.
#[derive(Debug)]
struct Generated {
    text: String,
    finish_reason: Option<String>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
}

/// Reads a `GenerateResponse` (or the serverless API's one-element list of it), with TGI's
/// `x-prompt-tokens` / `x-generated-tokens` headers for usage.
fn read_generated(reply: &UpstreamReply) -> Result<Generated, ProxyError> {
    let value: Value = serde_json::from_slice(&reply.body)
        .map_err(|err| ProxyError::UpstreamInvalid(format!("not a generation answer: {err}")))?;
    let value = match value {
        Value::Array(mut items) if !items.is_empty() => items.swap_remove(0),
        other => other,
    };
    let text = value
        .get("generated_text")
        .and_then(Value::as_str)
        .ok_or_else(|| ProxyError::UpstreamInvalid("no generated_text in the answer".to_owned()))?
        .to_owned();
    let details = value.get("details");
    let finish_reason = details
        .and_then(|details| details.get("finish_reason"))
        .and_then(Value::as_str)
        .map(|reason| normalize_finish_reason(reason).to_owned());
    let output_tokens = details
        .and_then(|details| details.get("generated_tokens"))
        .and_then(Value::as_u64)
        .or_else(|| reply.header_u64("x-generated-tokens"));
    Ok(Generated {
        text,
        finish_reason,
        input_tokens: reply.header_u64("x-prompt-tokens"),
        output_tokens,
    })
}

fn usage(input_tokens: Option<u64>, output_tokens: Option<u64>) -> Value {
    let (input, output) = (input_tokens.unwrap_or(0), output_tokens.unwrap_or(0));
    json!({"prompt_tokens": input, "completion_tokens": output, "total_tokens": input.saturating_add(output)})
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or_default()
}

/// Translates TGI's per-token stream events into OpenAI chunks.
#[derive(Debug)]
pub(crate) struct TokenEvents {
    api: OpenAiApi,
    id: String,
    created: u64,
    model: String,
    client_wants_usage: bool,
    /// Completions' `echo`: the prompt, sent as the first chunk.
    echo: Option<String>,
    /// Chat streams announce the assistant role in their first delta.
    role_sent: bool,
    tokens_seen: u64,
    /// The final event (or an error) has been seen.
    ended: bool,
}

impl TokenEvents {
    fn chunk(&mut self, text: &str, finish_reason: Option<&str>) -> Value {
        let choice = match self.api {
            OpenAiApi::Chat => {
                let delta = if self.role_sent {
                    json!({"content": text})
                } else {
                    self.role_sent = true;
                    json!({"role": "assistant", "content": text})
                };
                json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason})
            }
            OpenAiApi::Completions => {
                json!({"index": 0, "text": text, "logprobs": null, "finish_reason": finish_reason})
            }
        };
        json!({
            "id": self.id,
            "object": self.api.chunk_object(),
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        })
    }
}

impl StreamTranslator for TokenEvents {
    fn event(&mut self, data: &str, tally: &mut StreamTally, out: &mut ClientWriter) {
        if data.trim() == "[DONE]" {
            return;
        }
        if let Some(prompt) = self.echo.take() {
            let chunk = self.chunk(&prompt, None);
            out.generated(&chunk, self.api.text_field());
        }
        let Ok(event) = serde_json::from_str::<Map<String, Value>>(data) else {
            tally.error_type = Some("upstream_invalid_response");
            out.event(&openai_error_chunk(
                "the upstream sent an unreadable stream event",
            ));
            return;
        };
        if let Some(error) = event.get("error") {
            // TGI reports validation, overload and generation errors in-band, with HTTP 200.
            self.ended = true;
            tally.error_type = Some("upstream_stream_error");
            out.event(&openai_error_chunk(&in_band_error_message(error)));
            return;
        }
        let token = event.get("token");
        let special = token
            .and_then(|token| token.get("special"))
            .and_then(Value::as_bool)
            == Some(true);
        let text = match token
            .and_then(|token| token.get("text"))
            .and_then(Value::as_str)
        {
            Some(text) if !special => text,
            _ => "",
        };
        if token.is_some() {
            self.tokens_seen = self.tokens_seen.saturating_add(1);
            tally.output_tokens = Some(self.tokens_seen);
        }
        tally.text(text);
        let details = event.get("details").filter(|details| details.is_object());
        let is_last = details.is_some()
            || event
                .get("generated_text")
                .is_some_and(|text| !text.is_null());
        let mut finish_reason = None;
        if is_last {
            self.ended = true;
            let reason = details
                .and_then(|details| details.get("finish_reason"))
                .and_then(Value::as_str)
                .map_or("stop", normalize_finish_reason)
                .to_owned();
            if let Some(details) = details {
                tally.input_tokens = details.get("input_length").and_then(Value::as_u64);
                if let Some(generated) = details.get("generated_tokens").and_then(Value::as_u64) {
                    tally.output_tokens = Some(generated);
                }
            }
            tally.finish_reason = Some(reason.clone());
            finish_reason = Some(reason);
        }
        if !text.is_empty() || finish_reason.is_some() {
            let chunk = self.chunk(text, finish_reason.as_deref());
            out.generated(&chunk, self.api.text_field());
        }
    }

    fn end(&mut self, tally: &mut StreamTally, out: &mut ClientWriter) {
        if !self.ended {
            // TGI's own `incomplete_generation_stream`: the stream stopped mid-generation.
            tally.error_type = Some("incomplete_generation_stream");
            out.event(&openai_error_chunk(
                "the upstream stream ended before the generation finished",
            ));
        } else if self.client_wants_usage && tally.error_type.is_none() {
            let usage_chunk = json!({
                "id": self.id,
                "object": self.api.chunk_object(),
                "created": self.created,
                "model": self.model,
                "choices": [],
                "usage": usage(tally.input_tokens, tally.output_tokens),
            });
            out.event(&usage_chunk);
        }
        out.done();
    }

    fn failed(&mut self, message: &str, out: &mut ClientWriter) {
        out.event(&openai_error_chunk(message));
        out.done();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;
    use crate::config::ProxyConfig;

    fn target(extra: &str) -> Target {
        let config: ProxyConfig = toml::from_str(&format!(
            r#"
            [[targets]]
            id = "native"
            kind = "tgi"
            base_url = "http://127.0.0.1:1"
            chat_template = "chatml"
            {extra}
            "#
        ))
        .expect("config");
        let mut settings = config.validate(&HashMap::new()).expect("valid");
        settings.targets.remove(0)
    }

    fn object(json: Value) -> Map<String, Value> {
        match json {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    #[test]
    fn openai_parameters_are_mapped_as_tgi_validates_them() {
        let target = target("adapter_id = \"my-lora\"");
        let parameters = generation_parameters(
            &object(json!({
                "max_tokens": 20, "temperature": 0, "top_p": 1.0, "stop": "END",
                "seed": 7, "frequency_penalty": 0.5, "presence_penalty": 0,
                "response_format": {"type": "json_object"}, "user": "u1",
            })),
            &target,
        )
        .expect("valid");
        assert_eq!(
            Value::Object(parameters),
            json!({
                "details": true, "return_full_text": false, "max_new_tokens": 20,
                "do_sample": false, "stop": ["END"], "seed": 7, "frequency_penalty": 0.5,
                "grammar": {"type": "json", "value": {"type": "object"}},
                "adapter_id": "my-lora",
            })
        );
        let sampled = generation_parameters(
            &object(json!({"temperature": 0.7, "top_p": 0.9, "max_completion_tokens": 5})),
            &target,
        )
        .expect("valid");
        assert_eq!(sampled["temperature"], 0.7);
        assert_eq!(sampled["do_sample"], true);
        assert_eq!(sampled["top_p"], 0.9);
        assert_eq!(sampled["max_new_tokens"], 5);
    }

    #[test]
    fn requests_tgi_would_reject_are_a_clear_400() {
        let target = target("max_stop_sequences = 4");
        for request in [
            json!({"stop": ["a", "b", "c", "d", "e"]}),
            json!({"temperature": -1}),
            json!({"top_p": 0}),
            json!({"max_tokens": 0}),
            json!({"n": 2}),
            json!({"presence_penalty": 1.0}),
            json!({"temperature": "hot"}),
            json!({"response_format": {"type": "xml"}}),
        ] {
            let err =
                generation_parameters(&object(request.clone()), &target).expect_err("rejected");
            assert_eq!(err.status().as_u16(), 400, "{request}");
        }
    }

    fn token_event(index: u64, text: &str, last: Option<(&str, u64, u64)>) -> String {
        json!({
            "index": index,
            "token": {"id": index, "text": text, "logprob": -0.1, "special": false},
            "generated_text": last.map(|_| "..."),
            "details": last.map(|(reason, generated, input)| json!({
                "finish_reason": reason, "generated_tokens": generated, "input_length": input,
            })),
        })
        .to_string()
    }

    fn translator(api: OpenAiApi, client_wants_usage: bool) -> TokenEvents {
        TokenEvents {
            api,
            id: "chatcmpl-1".to_owned(),
            created: 1,
            model: "m".to_owned(),
            client_wants_usage,
            echo: None,
            role_sent: false,
            tokens_seen: 0,
            ended: false,
        }
    }

    fn new_tally() -> StreamTally {
        StreamTally::for_tests()
    }

    fn parse_chunks(out: &[u8]) -> Vec<Value> {
        String::from_utf8_lossy(out)
            .split("\n\n")
            .filter_map(|event| event.strip_prefix("data: "))
            .filter(|data| *data != "[DONE]")
            .map(|data| serde_json::from_str(data).expect("json chunk"))
            .collect()
    }

    #[test]
    fn token_events_become_chat_chunks_with_usage_and_done() {
        let mut events = translator(OpenAiApi::Chat, true);
        let mut tally = new_tally();
        let mut out = ClientWriter::default();
        events.event(&token_event(1, "Hello", None), &mut tally, &mut out);
        events.event(
            &token_event(2, " world", Some(("eos_token", 2, 7))),
            &mut tally,
            &mut out,
        );
        events.end(&mut tally, &mut out);
        let chunks = parse_chunks(out.bytes());
        assert_eq!(chunks.len(), 3);
        assert_eq!(chunks[0]["object"], "chat.completion.chunk");
        assert_eq!(
            chunks[0]["choices"][0]["delta"],
            json!({"role": "assistant", "content": "Hello"})
        );
        assert_eq!(
            chunks[1]["choices"][0]["delta"],
            json!({"content": " world"})
        );
        assert_eq!(chunks[1]["choices"][0]["finish_reason"], "stop");
        assert_eq!(chunks[2]["usage"]["prompt_tokens"], 7);
        assert_eq!(chunks[2]["usage"]["completion_tokens"], 2);
        assert!(out.bytes().ends_with(b"data: [DONE]\n\n"));
        assert_eq!(
            (tally.input_tokens, tally.output_tokens),
            (Some(7), Some(2))
        );
        assert_eq!(tally.finish_reason.as_deref(), Some("stop"));
        assert!(tally.error_type.is_none());
    }

    #[test]
    fn in_band_errors_and_cut_streams_become_error_chunks() {
        let mut events = translator(OpenAiApi::Completions, false);
        let mut tally = new_tally();
        let mut out = ClientWriter::default();
        events.event(
            r#"{"error":"Input validation error: `stop` supports up to 4","error_type":"validation"}"#,
            &mut tally,
            &mut out,
        );
        events.end(&mut tally, &mut out);
        let chunks = parse_chunks(out.bytes());
        assert_eq!(chunks.len(), 1);
        assert!(
            chunks[0]["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("stop"))
        );
        assert_eq!(tally.error_type, Some("upstream_stream_error"));

        let mut events = translator(OpenAiApi::Completions, true);
        let mut tally = new_tally();
        let mut out = ClientWriter::default();
        events.event(&token_event(1, "Hel", None), &mut tally, &mut out);
        events.end(&mut tally, &mut out);
        let chunks = parse_chunks(out.bytes());
        assert_eq!(chunks[0]["choices"][0]["text"], "Hel");
        assert!(chunks[1]["error"].is_object(), "{chunks:?}");
        assert_eq!(tally.error_type, Some("incomplete_generation_stream"));
    }

    proptest! {
        /// However the upstream's bytes are cut, every token's text reaches the client once,
        /// in order, and the stream is never cut short.
        #[test]
        fn no_text_is_lost_across_chunk_boundaries(
            words in proptest::collection::vec("[a-zé😀 ]{1,6}", 1..12),
            cuts in proptest::collection::vec(1usize..40, 0..20),
        ) {
            let last = words.len() as u64;
            let mut wire = String::new();
            for (index, word) in words.iter().enumerate() {
                let index = index as u64 + 1;
                let end = (index == last).then_some(("length", last, 3));
                wire.push_str(&format!("data: {}\n\n", token_event(index, word, end)));
            }
            let bytes = wire.as_bytes();
            let mut parser = crate::stream::sse::SseParser::default();
            let mut events = translator(OpenAiApi::Chat, false);
            let mut tally = new_tally();
            let mut out = ClientWriter::default();
            let mut start: usize = 0;
            for cut in cuts.iter().chain(std::iter::once(&usize::MAX)) {
                let end = start.saturating_add(*cut).min(bytes.len());
                for data in parser.push(&bytes[start..end]).expect("within bounds") {
                    events.event(&data, &mut tally, &mut out);
                }
                start = end;
            }
            events.end(&mut tally, &mut out);
            let text: String = parse_chunks(out.bytes())
                .iter()
                .filter_map(|chunk| chunk.pointer("/choices/0/delta/content").and_then(Value::as_str).map(str::to_owned))
                .collect();
            prop_assert_eq!(text, words.concat());
            prop_assert_eq!(tally.output_tokens, Some(last));
            prop_assert!(tally.error_type.is_none());
        }

        /// Whatever an upstream sends, translating it never panics, and every event the
        /// client gets is well-formed JSON or `[DONE]`.
        #[test]
        fn any_upstream_event_translates_without_panicking(
            events in proptest::collection::vec(any::<String>(), 0..8),
            json_events in proptest::collection::vec(
                prop_oneof![
                    Just(json!({"token": null, "details": {}})),
                    Just(json!({"token": {"text": 5, "special": "x"}, "details": {"generated_tokens": -1}})),
                    Just(json!({"error": {"nested": true}})),
                    Just(json!({"generated_text": "", "details": null})),
                    Just(json!([1, 2, 3])),
                ],
                0..6,
            ),
        ) {
            for api in [OpenAiApi::Chat, OpenAiApi::Completions] {
                let mut events_translator = translator(api, true);
                let mut chat_translator = crate::targets::messages::OpenAiChunks::for_tests();
                let mut tally = new_tally();
                let mut out = ClientWriter::default();
                let all = events.iter().cloned().chain(json_events.iter().map(Value::to_string));
                for data in all {
                    events_translator.event(&data, &mut tally, &mut out);
                    chat_translator.event(&data, &mut tally, &mut out);
                }
                events_translator.end(&mut tally, &mut out);
                for data in crate::stream::sse::SseParser::default().push(out.bytes()).expect("within bounds") {
                    prop_assert!(data == "[DONE]" || serde_json::from_str::<Value>(&data).is_ok(), "{}", data);
                }
            }
        }
    }
}
