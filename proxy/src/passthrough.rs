//! HF-native pass-through: applications that already speak Hugging Face's own API (TGI's
//! `/generate`, `/generate_stream`, the compat `POST /` with `{inputs, parameters, stream}`,
//! feature-extraction, `huggingface_hub`'s `InferenceClient`) point at
//! `{prefix}/{target id}` and are forwarded unchanged: same path below the target, same body,
//! same answer (status, body, TGI's `x-*` headers), streams byte for byte.
//!
//! Each call is audited like any other: auth decision, `request` and `response` events with
//! token counts read from TGI's `x-prompt-tokens` / `x-generated-tokens` headers, `details`,
//! or the stream's events as they pass. For `hf-serverless` targets, the path is taken below
//! `models/{model}` (so `{prefix}/{target}/pipeline/feature-extraction` reaches
//! `models/{model}/pipeline/feature-extraction`).
//!
//! The path below the target comes from the caller, so it is taken from the raw URI, split
//! into segments and validated ([`UpstreamPath`]): nothing a caller sends reaches another host,
//! or another model or path prefix on the target's host. A refused path is a 400 and a
//! `passthrough_path` decision.
//!
//! Credentials: the target's token is sent upstream, never the client's. With
//! `forward_client_authorization` (the transparent deployment, where each application holds
//! its own HF token) the client's `Authorization` goes upstream instead — a caller that sent
//! none gets a 401, never the target's token — and the Warden key, if clients are
//! configured, travels in `X-Warden-Key`.
//!
//! `X-HF-Bill-To` names the organisation the operator's token bills: it is forwarded only to
//! a target whose `allow_bill_to` lists that organisation, and every such header leaves a
//! `bill_to` decision (`allow` or `drop`) in the call's trail.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use warden_ingest::event::ResponseInfo;

use crate::answer::Answer;
use crate::audit::{CallAudit, prompt_hash};
use crate::call::{fail, read_body, released, with_request_id};
use crate::config::{Target, TargetKind};
use crate::error::ProxyError;
use crate::policy::limits::{Quotas, TokenEstimate};
use crate::policy::{KeyHeader, Requested};
use crate::state::ProxyState;
use crate::stream::{
    ClientWriter, StreamLimits, StreamTally, StreamTranslator, TranslatedStream,
    in_band_error_message,
};
use crate::targets::messages::normalize_finish_reason;
use crate::targets::serverless;
use crate::upstream::{
    UpstreamCredentials, UpstreamPath, UpstreamReply, UpstreamRequest, read_reply, upstream_error,
};

/// HF API paths named in metrics and events; any other path is reported as `other`, so a
/// caller cannot grow the metric label set.
const KNOWN_PATHS: &[&str] = &[
    "",
    "generate",
    "generate_stream",
    "pipeline/feature-extraction",
    "pipeline/sentence-similarity",
    "v1/chat/completions",
    "v1/completions",
    "info",
    "health",
    "tokenize",
];

/// Client request headers forwarded upstream (besides `Authorization`, when configured, and
/// `X-HF-Bill-To`, when the target allows it).
const FORWARDED_REQUEST_HEADERS: &[&str] =
    &["content-type", "accept", "x-use-cache", "x-wait-for-model"];

/// The header naming the organisation a call is billed to.
const BILL_TO_HEADER: &str = "x-hf-bill-to";

/// Longest organisation name recorded in a `bill_to` decision.
const MAX_RECORDED_BILL_TO_CHARS: usize = 96;

/// `{prefix}/{target}` and `{prefix}/{target}/{*path}`.
pub(crate) async fn handle(
    State(state): State<Arc<ProxyState>>,
    Path(params): Path<std::collections::HashMap<String, String>>,
    request: Request,
) -> Response {
    let Some(passthrough) = state.settings.passthrough.as_ref() else {
        return ProxyError::UnknownEndpoint(request.uri().path().to_owned()).into_response();
    };
    let path = UpstreamPath::from_caller(raw_rest(request.uri().path(), &passthrough.prefix));
    let label = path
        .as_ref()
        .ok()
        .map(UpstreamPath::as_relative)
        .filter(|relative| KNOWN_PATHS.contains(&relative.as_str()));
    let endpoint = format!(
        "{}/{}",
        passthrough.prefix,
        label.as_deref().unwrap_or("other")
    );
    let mut call = state.start_call(&endpoint, &request);
    let request_id = call.request_id.clone();
    let target_id = params.get("target").cloned().unwrap_or_default();
    let (parts, body) = request.into_parts();
    let mut quotas = Quotas::default();
    let outcome = forward(
        &state,
        &mut call,
        &mut quotas,
        (&target_id, path),
        &parts,
        body,
    )
    .await;
    let mut response = match outcome {
        Ok(Forwarded::Complete(answer)) => released(answer.deliver(call)).await,
        Ok(Forwarded::Stream(upstream, limits)) => {
            let status = upstream.status();
            let mut response =
                TranslatedStream::new(upstream, call, PassthroughEvents::default(), limits)
                    .into_response();
            *response.status_mut() = status;
            response
        }
        Err(err) => released(fail(call, err)).await,
    };
    quotas.write_headers(response.headers_mut());
    with_request_id(response, &request_id)
}

enum Forwarded {
    Complete(Box<Answer>),
    Stream(reqwest::Response, StreamLimits),
}

/// The still-encoded path below `{prefix}/{target}` in a request path the route matched.
fn raw_rest<'a>(request_path: &'a str, prefix: &str) -> &'a str {
    let below_prefix = request_path.strip_prefix(prefix).unwrap_or_default();
    let below_prefix = below_prefix.strip_prefix('/').unwrap_or(below_prefix);
    below_prefix
        .find('/')
        .map_or("", |slash| &below_prefix[slash..])
}

async fn forward(
    state: &ProxyState,
    call: &mut CallAudit,
    quotas: &mut Quotas,
    (target_id, path): (&str, Result<UpstreamPath, crate::upstream::PathRejected>),
    parts: &axum::http::request::Parts,
    body: Body,
) -> Result<Forwarded, ProxyError> {
    let (method, headers) = (parts.method.clone(), &parts.headers);
    let forward_authorization = state
        .settings
        .passthrough
        .as_ref()
        .is_some_and(|passthrough| passthrough.forward_client_authorization);
    let key_header = if forward_authorization {
        KeyHeader::WardenKey
    } else {
        KeyHeader::Authorization
    };
    let caller = state.authenticate(call, key_header.key(headers)).await?;
    let path = path.map_err(|rejected| {
        call.decided("passthrough_path", "deny", Some(&rejected.to_string()));
        ProxyError::InvalidPath(rejected.to_string())
    })?;
    let credentials = if forward_authorization {
        let authorization = headers
            .get(header::AUTHORIZATION)
            .filter(|value| !value.is_empty())
            .ok_or(ProxyError::MissingUpstreamToken)?;
        UpstreamCredentials::Caller(authorization.clone())
    } else {
        UpstreamCredentials::Target
    };
    if !matches!(method, Method::GET | Method::POST) {
        return Err(ProxyError::Unsupported(format!(
            "pass-through forwards GET and POST, not {method}"
        )));
    }
    // The body is read before the rest of the chain: token limits reserve from it.
    let body = read_body(body, &state.settings).await?;
    call.request.bytes = body.len() as u64;
    let parsed: Option<Map<String, Value>> = serde_json::from_slice(&body).ok();
    if let Some(request) = &parsed {
        call.request.prompt_hash = Some(prompt_hash(&state.settings.fingerprinter, request));
    }
    let generates = !path.as_relative().starts_with("pipeline/");
    let estimate = parsed
        .as_ref()
        .map(|request| TokenEstimate::of_request(request, generates))
        .unwrap_or_default();
    let admission = state.admit(call, &caller, Requested::Target(target_id), &estimate, None)?;
    *quotas = admission.quotas;
    let target = admission.candidates[0];
    if state.policies.control.disabled(&target.id) {
        return Err(ProxyError::TargetDisabled(target.public_name().to_owned()));
    }
    if !state.policies.breakers.allow(&target.id) {
        return Err(ProxyError::CircuitOpen(target.public_name().to_owned()));
    }
    call.route.stream = path.as_relative() == "generate_stream"
        || parsed
            .as_ref()
            .and_then(|request| request.get("stream"))
            .and_then(Value::as_bool)
            == Some(true);
    if call.captures_content() {
        call.request.content = call.captured(&String::from_utf8_lossy(&body));
    }
    call.request_received();

    let mut upstream_headers = HeaderMap::new();
    for name in FORWARDED_REQUEST_HEADERS {
        if let Some(value) = headers.get(*name) {
            upstream_headers.insert(HeaderName::from_static(name), value.clone());
        }
    }
    if let Some(bill_to) = headers.get(BILL_TO_HEADER) {
        let organisation = String::from_utf8_lossy(bill_to.as_bytes());
        let recorded: String = organisation
            .chars()
            .take(MAX_RECORDED_BILL_TO_CHARS)
            .collect();
        if target.allows_bill_to(&organisation) {
            upstream_headers.insert(HeaderName::from_static(BILL_TO_HEADER), bill_to.clone());
            call.decided("bill_to", "allow", Some(&format!("billed to {recorded:?}")));
        } else {
            let reason =
                format!("{recorded:?} is not in the target's allow_bill_to; header dropped");
            call.decided("bill_to", "drop", Some(&reason));
        }
    }
    let request = UpstreamRequest {
        method,
        path: upstream_path(target, path),
        body,
        headers: upstream_headers,
        credentials,
        streaming: call.route.stream,
    };
    call.durable().await?;
    let sent = state.upstream.send(target, &request).await;
    let breakers = &state.policies.breakers;
    match &sent {
        Ok((response, _)) if response.status().is_server_error() => breakers.failed(&target.id),
        Ok(_) => breakers.succeeded(&target.id),
        Err(err) if err.is_target_failure() => breakers.failed(&target.id),
        Err(_) => {}
    }
    let (response, time_to_headers) = sent?;
    let is_event_stream = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("text/event-stream"));
    if is_event_stream && response.status().is_success() {
        return Ok(Forwarded::Stream(response, StreamLimits::of(target)));
    }
    let reply = read_reply(response, time_to_headers, target).await?;
    Ok(Forwarded::Complete(Box::new(answer(reply))))
}

/// Where the caller's path lives on the target.
fn upstream_path(target: &Target, path: UpstreamPath) -> UpstreamPath {
    match target.kind {
        TargetKind::Tgi | TargetKind::TgiMessages => path,
        TargetKind::HfServerless => path.below(&serverless::model_path(target)),
    }
}

/// The upstream's answer, unchanged, with what the audit can read from it.
fn answer(reply: UpstreamReply) -> Answer {
    let parsed: Option<Value> = serde_json::from_slice(&reply.body).ok();
    let first = match &parsed {
        Some(Value::Array(items)) => items.first(),
        other => other.as_ref(),
    };
    let details = first.and_then(|answer| answer.get("details"));
    let usage = first.and_then(|answer| answer.get("usage"));
    let count = |value: Option<&Value>, field: &str| {
        value
            .and_then(|value| value.get(field))
            .and_then(Value::as_u64)
    };
    let input_tokens = reply
        .header_u64("x-prompt-tokens")
        .or_else(|| count(usage, "prompt_tokens"));
    let output_tokens = reply
        .header_u64("x-generated-tokens")
        .or_else(|| count(details, "generated_tokens"))
        .or_else(|| count(usage, "completion_tokens"));
    let finish_reason = details
        .and_then(|details| details.get("finish_reason"))
        .or_else(|| first.and_then(|answer| answer.pointer("/choices/0/finish_reason")))
        .and_then(Value::as_str)
        .map(|reason| normalize_finish_reason(reason).to_owned());
    let content = first
        .and_then(|answer| {
            answer
                .get("generated_text")
                .or_else(|| answer.pointer("/choices/0/message/content"))
                .or_else(|| answer.pointer("/choices/0/text"))
        })
        .and_then(Value::as_str)
        .map(str::to_owned);
    let error_type = (!reply.status.is_success()).then(|| upstream_error(&reply).code().to_owned());
    let mut headers = HeaderMap::new();
    for (name, value) in &reply.headers {
        let passes_back = name.as_str().starts_with("x-") && name.as_str() != "x-request-id";
        if passes_back {
            headers.append(name.clone(), value.clone());
        }
    }
    let content_type = reply
        .headers
        .get(header::CONTENT_TYPE)
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static("application/json"));
    Answer {
        status: reply.status,
        headers,
        content_type,
        input_tokens,
        content,
        upstream_seconds: reply.elapsed.as_secs_f64(),
        response: ResponseInfo {
            ttft_ms: Some(reply.time_to_headers.as_secs_f64() * 1000.0),
            output_tokens,
            finish_reason,
            error_type,
            ..ResponseInfo::default()
        },
        body: reply.body.to_vec(),
    }
}

/// Reads a pass-through stream's events (TGI tokens, or OpenAI chunks) for the audit while
/// its bytes go to the client untouched.
#[derive(Debug, Default)]
struct PassthroughEvents {
    tokens_seen: u64,
}

impl StreamTranslator for PassthroughEvents {
    fn event(&mut self, data: &str, tally: &mut StreamTally, _out: &mut ClientWriter) {
        let Ok(event) = serde_json::from_str::<Map<String, Value>>(data) else {
            return;
        };
        if let Some(error) = event.get("error") {
            tally.error_type = Some("upstream_stream_error");
            tracing::debug!(error = %in_band_error_message(error), "in-band upstream error");
            return;
        }
        if let Some(token) = event.get("token") {
            // TGI's per-token events.
            self.tokens_seen = self.tokens_seen.saturating_add(1);
            tally.output_tokens = Some(self.tokens_seen);
            if token.get("special").and_then(Value::as_bool) != Some(true) {
                tally.text(
                    token
                        .get("text")
                        .and_then(Value::as_str)
                        .unwrap_or_default(),
                );
            }
            if let Some(details) = event.get("details").filter(|d| d.is_object()) {
                tally.input_tokens = details.get("input_length").and_then(Value::as_u64);
                tally.output_tokens = details
                    .get("generated_tokens")
                    .and_then(Value::as_u64)
                    .or(tally.output_tokens);
                tally.finish_reason = details
                    .get("finish_reason")
                    .and_then(Value::as_str)
                    .map(|reason| normalize_finish_reason(reason).to_owned());
            }
        } else if let Some(choice) = event.get("choices").and_then(|choices| choices.get(0)) {
            // OpenAI chunks (the Messages API through pass-through).
            if let Some(text) = choice.pointer("/delta/content").and_then(Value::as_str) {
                tally.text(text);
            }
            if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
                tally.finish_reason = Some(normalize_finish_reason(reason).to_owned());
            }
        }
        if let Some(usage) = event.get("usage").filter(|usage| usage.is_object()) {
            tally.input_tokens = usage.get("prompt_tokens").and_then(Value::as_u64);
            tally.output_tokens = usage.get("completion_tokens").and_then(Value::as_u64);
        }
    }

    fn end(&mut self, _tally: &mut StreamTally, _out: &mut ClientWriter) {}

    fn failed(&mut self, message: &str, out: &mut ClientWriter) {
        // TGI's own in-band error shape, which HF clients already understand.
        let event = json!({"error": message, "error_type": "warden"});
        out.raw(format!("data: {event}\n\n").as_bytes());
    }

    fn forwards_raw(&self) -> bool {
        true
    }
}
