//! The HTTP front door: routes, shared state, and the request-path glue between auth,
//! routing, translation and the audit trail.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use warden_ingest::event::ResponseInfo;
use warden_ingest::{EventEmitter, RequestId};

use crate::audit::{CallAudit, prompt_hash};
use crate::auth::{AuthOutcome, ClientRegistry, RejectReason};
use crate::chat::{self, ChatReply, OpenedStream};
use crate::chat_stream::ChatStream;
use crate::config::{ProxySettings, Target};
use crate::error::ProxyError;
use crate::metrics::{ProxyMetrics, SharedMetrics};
use crate::upstream::Upstream;

/// Header carrying the call's request id back to the client.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Everything the handlers share. Immutable after startup.
#[derive(Debug)]
pub struct ProxyState {
    settings: ProxySettings,
    clients: ClientRegistry,
    upstream: Upstream,
    emitter: EventEmitter,
    metrics: SharedMetrics,
}

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProxySetupError {
    #[error("building the upstream HTTP client: {0}")]
    HttpClient(#[from] reqwest::Error),
}

impl ProxyState {
    pub fn new(
        settings: ProxySettings,
        emitter: EventEmitter,
    ) -> Result<Arc<Self>, ProxySetupError> {
        let clients = ClientRegistry::new(settings.clients.clone());
        if clients.is_open() {
            warn!(
                "OPEN MODE: no [[proxy.clients]] configured, every caller is let through; \
                 configure client keys before exposing this proxy"
            );
        }
        Ok(Arc::new(Self {
            clients,
            upstream: Upstream::new()?,
            metrics: Arc::new(ProxyMetrics::new(emitter.clone())),
            emitter,
            settings,
        }))
    }

    fn target_for(&self, requested_model: &str) -> Option<&Target> {
        self.settings
            .targets
            .iter()
            .find(|target| target.serves(requested_model))
    }

    /// Authenticates the caller and records the decision on the call.
    fn authorize(&self, call: &mut CallAudit, headers: &HeaderMap) -> Result<(), ProxyError> {
        let auth = self.clients.authenticate(headers);
        call.authenticated(&auth);
        match auth {
            AuthOutcome::Rejected { reason, .. } => Err(match reason {
                RejectReason::MissingKey => ProxyError::MissingApiKey,
                RejectReason::UnknownKey => ProxyError::InvalidApiKey,
            }),
            AuthOutcome::Open { .. } | AuthOutcome::Authenticated { .. } => Ok(()),
        }
    }

    fn start_call(&self, endpoint: &str, request: &Request) -> CallAudit {
        let client_ip = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0.ip());
        CallAudit::start(
            self.emitter.clone(),
            self.metrics.clone(),
            &self.settings.proxy_id,
            self.settings.environment.as_deref(),
            endpoint,
            client_ip,
            request.headers(),
        )
    }
}

/// The proxy's routes.
pub fn router(state: Arc<ProxyState>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(list_models))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(unknown_endpoint)
        .with_state(state)
}

/// Serves until `shutdown` fires, then finishes in-flight calls and returns.
pub async fn serve(
    listener: TcpListener,
    state: Arc<ProxyState>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    info!(listen = %listener.local_addr()?, "proxy listening");
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.cancelled_owned())
    .await
}

async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({"status": "ok"}))
}

async fn metrics(State(state): State<Arc<ProxyState>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

async fn unknown_endpoint(request: Request) -> ProxyError {
    ProxyError::UnknownEndpoint(format!("{} {}", request.method(), request.uri().path()))
}

async fn chat_completions(State(state): State<Arc<ProxyState>>, request: Request) -> Response {
    let mut call = state.start_call("/v1/chat/completions", &request);
    let request_id = call.request_id.clone();
    let (parts, body) = request.into_parts();
    let response = match forward_chat(&state, &mut call, &parts.headers, body).await {
        Ok(Forwarded::Complete(reply)) => {
            call.request.input_tokens = reply.input_tokens;
            call.upstream_seconds = Some(reply.upstream_seconds);
            let mut response = reply.response;
            response.content = reply
                .content
                .as_deref()
                .and_then(|text| call.captured(text));
            call.finish(response);
            ([(header::CONTENT_TYPE, "application/json")], reply.body).into_response()
        }
        Ok(Forwarded::Stream { opened, model }) => {
            let stream = ChatStream::new(opened.response, call, model, opened.client_wants_usage);
            (
                [
                    (header::CONTENT_TYPE, "text/event-stream"),
                    (header::CACHE_CONTROL, "no-cache"),
                    (header::HeaderName::from_static("x-accel-buffering"), "no"),
                ],
                Body::from_stream(stream),
            )
                .into_response()
        }
        Err(err) => fail(call, err),
    };
    with_request_id(response, &request_id)
}

/// `GET /v1/models`: the configured targets, by the names clients use.
async fn list_models(State(state): State<Arc<ProxyState>>, request: Request) -> Response {
    let mut call = state.start_call("/v1/models", &request);
    let request_id = call.request_id.clone();
    let response = match state.authorize(&mut call, request.headers()) {
        Ok(()) => {
            let data: Vec<Value> = state
                .settings
                .targets
                .iter()
                .map(|target| {
                    json!({
                        "id": target.model.as_deref().unwrap_or(&target.id),
                        "object": "model",
                        "created": 0,
                        "owned_by": target.kind.as_str(),
                    })
                })
                .collect();
            call.finish(ResponseInfo {
                status: 200,
                ..ResponseInfo::default()
            });
            axum::Json(json!({"object": "list", "data": data})).into_response()
        }
        Err(err) => fail(call, err),
    };
    with_request_id(response, &request_id)
}

/// Ends a failed call: its response event, then the client's error.
fn fail(call: CallAudit, err: ProxyError) -> Response {
    call.finish(ResponseInfo {
        status: err.status().as_u16(),
        error_type: Some(err.code().to_owned()),
        ..ResponseInfo::default()
    });
    err.into_response()
}

fn with_request_id(mut response: Response, request_id: &RequestId) -> Response {
    if let Ok(value) = HeaderValue::from_str(request_id.as_str()) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

/// What the upstream gave for a chat call.
enum Forwarded {
    Complete(ChatReply),
    Stream { opened: OpenedStream, model: String },
}

async fn forward_chat(
    state: &ProxyState,
    call: &mut CallAudit,
    headers: &HeaderMap,
    body: Body,
) -> Result<Forwarded, ProxyError> {
    state.authorize(call, headers)?;
    let body = read_body(body, state.settings.max_body_bytes).await?;
    call.request.bytes = body.len() as u64;
    let request: Map<String, Value> =
        serde_json::from_slice(&body).map_err(|err| ProxyError::InvalidJson(err.to_string()))?;
    call.request.prompt_hash = Some(prompt_hash(&request));
    call.route.stream = request.get("stream").and_then(Value::as_bool) == Some(true);
    let model = request
        .get("model")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            ProxyError::InvalidRequest("you must provide a 'model' parameter".to_owned())
        })?
        .to_owned();
    call.route.model = Some(model.clone());
    let target = state
        .target_for(&model)
        .ok_or_else(|| ProxyError::UnknownModel(model.clone()))?;
    call.routed(target);
    if call.captures_content() {
        call.request.content = call.captured(&String::from_utf8_lossy(&body));
    }
    call.request_received();
    if call.route.stream {
        let opened = chat::open_stream(&state.upstream, target, request).await?;
        return Ok(Forwarded::Stream { opened, model });
    }
    chat::complete(&state.upstream, target, &model, request)
        .await
        .map(Forwarded::Complete)
}

/// Reads the whole request body, refusing more than `limit` bytes.
async fn read_body(body: Body, limit: usize) -> Result<bytes::Bytes, ProxyError> {
    axum::body::to_bytes(body, limit).await.map_err(|err| {
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
