//! A TGI emulator: an HTTP server answering like text-generation-inference (v3), following
//! `shared/reference/tgi-openapi.json` and the wire facts in `hf-wire-formats.md`, with
//! deterministic output so tests can assert exact text and token counts.
//!
//! What it reproduces, because the proxy must cope with it:
//! - native `/generate` and `/generate_stream` (per-token SSE, no `[DONE]`, `details` only when
//!   asked for, `x-prompt-tokens` / `x-generated-tokens` headers);
//! - the Messages API `/v1/chat/completions` (non-stream and stream, `stop_sequence` as a
//!   non-OpenAI finish reason is not produced here but `eos_token` → `stop` is);
//! - TGI's validation (422 for `temperature <= 0`, `top_p` outside (0, 1), more than 4 stop
//!   sequences, `max_new_tokens == 0`), and, on `/generate_stream`, those errors in-band with
//!   HTTP 200;
//! - TGI's compat `POST /` (`{inputs, parameters, stream}`, non-streamed answers in a list);
//! - the HF serverless API under `/models/{model}`: the text-generation task payload, the
//!   `pipeline/feature-extraction` route (deterministic 8-dimensional vectors) and the
//!   per-model `v1/chat/completions`;
//! - `/health`, `/info`, `/v1/models`.
//!
//! Tokens are the words of the configured reply; prompt tokens are the whitespace-separated
//! words of the prompt. Every request is recorded for assertions.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A chat message with exactly this content makes a streamed answer fail mid-stream the way
/// TGI's Messages API does: two tokens, then an in-band error (HTTP status stays 200).
pub const STREAM_ERROR_TRIGGER: &str = "EMULATE_STREAM_ERROR";

/// How the emulator behaves.
#[derive(Debug, Clone)]
pub struct EmulatorOptions {
    /// The model id reported by `/info` and `/v1/models`.
    pub model_id: String,
    /// The text every generation produces (cut short by `max_new_tokens`).
    pub reply: String,
    /// Delay before each streamed token.
    pub token_delay: Duration,
    /// TGI's `MAX_STOP_SEQUENCES`.
    pub max_stop_sequences: usize,
    /// The first this-many generation requests get HF's cold-start 503 ("currently loading").
    pub cold_start_503s: usize,
    /// The `estimated_time` those 503s announce.
    pub cold_start_estimated_time: Duration,
}

impl Default for EmulatorOptions {
    fn default() -> Self {
        Self {
            model_id: "meta-llama/Meta-Llama-3.1-8B-Instruct".to_owned(),
            reply: "Hello from the TGI emulator. It answers every prompt the same way.".to_owned(),
            token_delay: Duration::ZERO,
            max_stop_sequences: 4,
            cold_start_503s: 0,
            cold_start_estimated_time: Duration::from_millis(100),
        }
    }
}

/// One request the emulator received.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub path: String,
    pub authorization: Option<String>,
    /// Every header, lower-case names.
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

#[derive(Debug)]
struct EmulatorState {
    options: EmulatorOptions,
    requests: Mutex<Vec<RecordedRequest>>,
    /// Generation requests answered so far (for the cold-start 503s).
    num_generations: AtomicUsize,
}

/// A running emulator; stops when dropped.
#[derive(Debug)]
pub struct TgiEmulator {
    address: SocketAddr,
    state: Arc<EmulatorState>,
    server: JoinHandle<()>,
}

impl TgiEmulator {
    /// Starts an emulator on a free loopback port.
    pub async fn start(options: EmulatorOptions) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        Self::serve(listener, options).await
    }

    /// Starts an emulator on `listener`.
    pub async fn serve(listener: TcpListener, options: EmulatorOptions) -> std::io::Result<Self> {
        let address = listener.local_addr()?;
        let state = Arc::new(EmulatorState {
            options,
            requests: Mutex::new(Vec::new()),
            num_generations: AtomicUsize::new(0),
        });
        let app = router(state.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            address,
            state,
            server,
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state
            .requests
            .lock()
            .map(|requests| requests.clone())
            .unwrap_or_default()
    }

    /// Serves until the process is stopped (for the standalone binary).
    pub async fn wait(mut self) {
        let _ = (&mut self.server).await;
    }
}

impl Drop for TgiEmulator {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn router(state: Arc<EmulatorState>) -> Router {
    Router::new()
        .route("/health", get(|| async { StatusCode::OK }))
        .route("/info", get(info))
        .route("/v1/models", get(models))
        .route("/generate", post(generate))
        .route("/generate_stream", post(generate_stream))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/", post(compat_generate))
        .route("/models/{*path}", post(serverless))
        .with_state(state)
}

impl EmulatorState {
    fn record(&self, path: &str, headers: &HeaderMap, body: &Value) {
        if let Ok(mut requests) = self.requests.lock() {
            requests.push(RecordedRequest {
                path: path.to_owned(),
                authorization: headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
                headers: headers
                    .iter()
                    .map(|(name, value)| {
                        (
                            name.to_string(),
                            value.to_str().unwrap_or_default().to_owned(),
                        )
                    })
                    .collect(),
                body: body.clone(),
            });
        }
    }

    /// Parses and records a generation request; the error answer for unreadable JSON, or
    /// HF's cold-start 503 while the emulated model is "loading".
    fn accept(
        &self,
        path: &str,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Result<Value, Box<Response>> {
        let request = parse_json(body)?;
        self.record(path, headers, &request);
        match self.cold_start() {
            Some(loading) => Err(Box::new(loading)),
            None => Ok(request),
        }
    }

    /// HF's cold-start answer, while the emulated model is "loading".
    fn cold_start(&self) -> Option<Response> {
        let served = self.num_generations.fetch_add(1, Ordering::Relaxed);
        (served < self.options.cold_start_503s).then(|| {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(json!({
                    "error": format!("Model {} is currently loading", self.options.model_id),
                    "estimated_time": self.options.cold_start_estimated_time.as_secs_f64(),
                })),
            )
                .into_response()
        })
    }

    /// The reply's tokens: each word with its leading space, as TGI's tokenizers produce.
    fn tokens(&self, max_new_tokens: Option<u64>) -> (Vec<String>, &'static str) {
        let words: Vec<String> = self
            .options
            .reply
            .split_whitespace()
            .enumerate()
            .map(|(i, w)| {
                if i == 0 {
                    w.to_owned()
                } else {
                    format!(" {w}")
                }
            })
            .collect();
        match max_new_tokens {
            Some(max) if (max as usize) < words.len() => (words[..max as usize].to_vec(), "length"),
            _ => (words, "eos_token"),
        }
    }
}

fn count_words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// TGI's error body.
fn tgi_error(status: StatusCode, message: &str, error_type: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": message, "error_type": error_type})),
    )
        .into_response()
}

fn parse_json(body: &Bytes) -> Result<Value, Box<Response>> {
    serde_json::from_slice(body).map_err(|err| {
        Box::new(tgi_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!("Failed to deserialize the JSON body into the target type: {err}"),
            "validation",
        ))
    })
}

/// TGI's parameter validation (router/src/validation.rs).
fn validate_parameters(parameters: &Value, max_stop_sequences: usize) -> Result<(), String> {
    if let Some(temperature) = parameters.get("temperature").and_then(Value::as_f64)
        && temperature <= 0.0
    {
        return Err("`temperature` must be strictly positive".to_owned());
    }
    for name in ["top_p", "typical_p"] {
        if let Some(value) = parameters.get(name).and_then(Value::as_f64)
            && (value <= 0.0 || value >= 1.0)
        {
            return Err(format!("`{name}` must be > 0.0 and < 1.0"));
        }
    }
    if parameters.get("max_new_tokens").and_then(Value::as_u64) == Some(0) {
        return Err("`max_new_tokens` must be strictly positive".to_owned());
    }
    if let Some(stop) = parameters.get("stop").and_then(Value::as_array)
        && stop.len() > max_stop_sequences
    {
        return Err(format!(
            "`stop` supports up to {max_stop_sequences} stop sequences. Given: {}",
            stop.len()
        ));
    }
    Ok(())
}

async fn info(State(state): State<Arc<EmulatorState>>) -> impl IntoResponse {
    axum::Json(json!({
        "model_id": state.options.model_id,
        "model_dtype": "torch.float16",
        "model_device_type": "cpu",
        "max_concurrent_requests": 128,
        "max_best_of": 2,
        "max_stop_sequences": state.options.max_stop_sequences,
        "max_input_tokens": 4095,
        "max_total_tokens": 4096,
        "max_client_batch_size": 4,
        "validation_workers": 2,
        "router": "text-generation-router",
        "version": "3.3.6-emulator",
    }))
}

async fn models(State(state): State<Arc<EmulatorState>>) -> impl IntoResponse {
    axum::Json(json!({
        "object": "list",
        "data": [{"id": state.options.model_id, "object": "model", "created": unix_now(), "owned_by": "system"}],
    }))
}

async fn generate(
    State(state): State<Arc<EmulatorState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = match state.accept("/generate", &headers, &body) {
        Ok(request) => request,
        Err(response) => return *response,
    };
    generate_answer(&state, &request, false)
}

/// TGI's compat route `POST /`: `{inputs, parameters, stream}`; a non-streamed answer comes
/// wrapped in a list, as the legacy Inference API did.
async fn compat_generate(
    State(state): State<Arc<EmulatorState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = match state.accept("/", &headers, &body) {
        Ok(request) => request,
        Err(response) => return *response,
    };
    if request.get("stream").and_then(Value::as_bool) == Some(true) {
        return generate_stream_answer(&state, &request);
    }
    generate_answer(&state, &request, true)
}

/// The HF serverless API under `/models/{model}`: the text-generation task payload, the
/// feature-extraction pipeline, and the per-model chat route.
async fn serverless(
    State(state): State<Arc<EmulatorState>>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if path.ends_with("/v1/chat/completions") {
        return chat_completions(State(state), headers, body).await;
    }
    let request = match state.accept(&format!("/models/{path}"), &headers, &body) {
        Ok(request) => request,
        Err(response) => return *response,
    };
    if path.ends_with("/pipeline/feature-extraction") {
        return feature_extraction(&request);
    }
    if request.get("stream").and_then(Value::as_bool) == Some(true) {
        return generate_stream_answer(&state, &request);
    }
    generate_answer(&state, &request, true)
}

/// The feature-extraction pipeline: a deterministic 8-dimensional vector per input (one
/// vector for a string, a list of vectors for a list).
fn feature_extraction(request: &Value) -> Response {
    let vector = |text: &str| -> Vec<f64> {
        let mut vector = [0.0f64; 8];
        for (index, byte) in text.bytes().enumerate() {
            vector[index % 8] += f64::from(byte) / 256.0;
        }
        let norm = vector.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-9);
        vector.iter().map(|x| x / norm).collect()
    };
    match request.get("inputs") {
        Some(Value::String(text)) => axum::Json(json!(vector(text))).into_response(),
        Some(Value::Array(items)) => {
            let vectors: Vec<Vec<f64>> = items
                .iter()
                .map(|item| vector(item.as_str().unwrap_or_default()))
                .collect();
            axum::Json(json!(vectors)).into_response()
        }
        _ => tgi_error(
            StatusCode::BAD_REQUEST,
            "inputs must be a string or a list of strings",
            "validation",
        ),
    }
}

/// A `/generate` answer (wrapped in a list when `as_list`).
fn generate_answer(state: &EmulatorState, request: &Value, as_list: bool) -> Response {
    let Some(inputs) = request.get("inputs").and_then(Value::as_str) else {
        return tgi_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "missing field `inputs`",
            "validation",
        );
    };
    let parameters = request.get("parameters").cloned().unwrap_or(json!({}));
    if let Err(message) = validate_parameters(&parameters, state.options.max_stop_sequences) {
        return tgi_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!("Input validation error: {message}"),
            "validation",
        );
    }
    let (tokens, finish_reason) =
        state.tokens(parameters.get("max_new_tokens").and_then(Value::as_u64));
    let generated_text: String = tokens.concat();
    let prompt_tokens = count_words(inputs);
    let mut answer = json!({"generated_text": generated_text});
    // serde default of `details` is false in TGI, whatever the schema says.
    if parameters.get("details").and_then(Value::as_bool) == Some(true) {
        answer["details"] = json!({
            "finish_reason": finish_reason,
            "generated_tokens": tokens.len(),
            "seed": null,
            "prefill": [],
            "tokens": tokens.iter().enumerate().map(|(i, t)| json!({"id": i, "text": t, "logprob": -0.1, "special": false})).collect::<Vec<_>>(),
            "top_tokens": [],
            "best_of_sequences": null,
        });
    }
    (
        [
            ("x-compute-type", "cpu".to_owned()),
            ("x-prompt-tokens", prompt_tokens.to_string()),
            ("x-generated-tokens", tokens.len().to_string()),
        ],
        axum::Json(if as_list { json!([answer]) } else { answer }),
    )
        .into_response()
}

fn sse_response(events: Vec<String>, delay: Duration) -> Response {
    let stream = futures::stream::iter(events).then(move |event| async move {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        Ok::<_, Infallible>(Bytes::from(format!("data: {event}\n\n")))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header("x-accel-buffering", "no")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

async fn generate_stream(
    State(state): State<Arc<EmulatorState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = match state.accept("/generate_stream", &headers, &body) {
        Ok(request) => request,
        Err(response) => return *response,
    };
    generate_stream_answer(&state, &request)
}

/// A `/generate_stream` answer: one event per token, no `[DONE]`; the stream error trigger
/// makes it fail in-band after two tokens, as TGI does (HTTP 200).
fn generate_stream_answer(state: &EmulatorState, request: &Value) -> Response {
    let inputs = request
        .get("inputs")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let parameters = request.get("parameters").cloned().unwrap_or(json!({}));
    // TGI answers 200 and reports validation errors in-band on the stream endpoint.
    if let Err(message) = validate_parameters(&parameters, state.options.max_stop_sequences) {
        let error = json!({"error": format!("Input validation error: {message}"), "error_type": "validation"});
        return sse_response(vec![error.to_string()], Duration::ZERO);
    }
    let details = parameters.get("details").and_then(Value::as_bool) == Some(true);
    let (tokens, finish_reason) =
        state.tokens(parameters.get("max_new_tokens").and_then(Value::as_u64));
    let generated_text: String = tokens.concat();
    let last = tokens.len().saturating_sub(1);
    let mut events: Vec<String> = tokens
        .iter()
        .enumerate()
        .map(|(i, token)| {
            let is_last = i == last;
            json!({
                "index": i + 1,
                "token": {"id": i, "text": token, "logprob": -0.1, "special": false},
                "top_tokens": [],
                "generated_text": if is_last { json!(generated_text) } else { Value::Null },
                "details": if is_last && details {
                    json!({"finish_reason": finish_reason, "generated_tokens": tokens.len(), "seed": null, "input_length": count_words(inputs)})
                } else { Value::Null },
            })
            .to_string()
        })
        .collect();
    if inputs.contains(STREAM_ERROR_TRIGGER) {
        events.truncate(2);
        events
            .push(json!({"error": "Model is overloaded", "error_type": "overloaded"}).to_string());
    }
    sse_response(events, state.options.token_delay)
}

async fn chat_completions(
    State(state): State<Arc<EmulatorState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = match state.accept("/v1/chat/completions", &headers, &body) {
        Ok(request) => request,
        Err(response) => return *response,
    };
    let Some(messages) = request.get("messages").and_then(Value::as_array) else {
        return tgi_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "missing field `messages`",
            "validation",
        );
    };
    let prompt: String = messages
        .iter()
        .filter_map(|m| m.get("content").and_then(Value::as_str))
        .collect::<Vec<_>>()
        .join(" ");
    let mut parameters = json!({
        "temperature": request.get("temperature"),
        "top_p": request.get("top_p"),
        "stop": request.get("stop"),
        "max_new_tokens": request.get("max_tokens"),
    });
    // The Messages API maps temperature 0 to greedy decoding instead of rejecting it.
    if parameters["temperature"].as_f64() == Some(0.0) {
        parameters["temperature"] = Value::Null;
    }
    if let Err(message) = validate_parameters(&parameters, state.options.max_stop_sequences) {
        return tgi_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!("Input validation error: {message}"),
            "validation",
        );
    }
    let (tokens, finish_reason) = state.tokens(request.get("max_tokens").and_then(Value::as_u64));
    let finish_reason = if finish_reason == "eos_token" {
        "stop"
    } else {
        finish_reason
    };
    let prompt_tokens = count_words(&prompt);
    let usage = json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": tokens.len(),
        "total_tokens": prompt_tokens + tokens.len() as u64,
    });
    // TGI echoes the model it was given ("tgi" unless an adapter was asked for).
    let model = request.get("model").cloned().unwrap_or(json!("tgi"));
    let created = unix_now();
    if request.get("stream").and_then(Value::as_bool) == Some(true) {
        let include_usage = request
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            == Some(true);
        let last = tokens.len().saturating_sub(1);
        let mut events: Vec<String> = tokens
            .iter()
            .enumerate()
            .map(|(i, token)| {
                json!({
                    "object": "chat.completion.chunk", "id": "", "created": created, "model": model,
                    "system_fingerprint": "3.3.6-emulator",
                    "choices": [{"index": 0, "delta": {"role": "assistant", "content": token},
                                 "logprobs": null, "finish_reason": if i == last { json!(finish_reason) } else { Value::Null }}],
                    "usage": null,
                })
                .to_string()
            })
            .collect();
        if include_usage {
            events.push(
                json!({"object": "chat.completion.chunk", "id": "", "created": created, "model": model,
                       "system_fingerprint": "3.3.6-emulator", "choices": [], "usage": usage})
                .to_string(),
            );
        }
        if prompt == STREAM_ERROR_TRIGGER {
            events.truncate(2);
            events.push(
                json!({"error": {"message": "Model is overloaded", "http_status_code": 422}})
                    .to_string(),
            );
        }
        events.push("[DONE]".to_owned());
        return sse_response(events, state.options.token_delay);
    }
    axum::Json(json!({
        "object": "chat.completion",
        "id": "",
        "created": created,
        "model": model,
        "system_fingerprint": "3.3.6-emulator",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": tokens.concat()},
            "logprobs": null,
            "finish_reason": finish_reason,
        }],
        "usage": usage,
    }))
    .into_response()
}
