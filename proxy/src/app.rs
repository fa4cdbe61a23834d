//! The HTTP front door: routes, shared state, and the request-path glue between auth,
//! routing, translation and the audit trail.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use serde_json::{Map, Value, json};
use tokio::sync::Semaphore;
use tracing::warn;
use warden_ingest::event::ResponseInfo;
use warden_ingest::{AuditUnavailable, EventEmitter, RequestId};

use crate::answer::Answer;
use crate::audit::{AuditTrail, CallAudit, prompt_hash};
use crate::auth::{AuthOutcome, ClientRegistry, RejectReason};
use crate::config::{ProxySettings, Target, TargetKind};
use crate::error::ProxyError;
use crate::generation::Generation;
use crate::metrics::{OverloadedResource, ProxyMetrics, SharedMetrics};
use crate::openai::client_wants_usage;
use crate::stream::{StreamLimits, StreamTranslator, TranslatedStream};
use crate::upstream::Upstream;
use crate::{chat, embeddings, passthrough};

/// Header carrying the call's request id back to the client.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Everything the handlers share. Immutable after startup.
#[derive(Debug)]
pub struct ProxyState {
    pub(crate) settings: ProxySettings,
    pub(crate) clients: ClientRegistry,
    pub(crate) upstream: Upstream,
    emitter: EventEmitter,
    metrics: SharedMetrics,
    /// One permit per call in flight, `max_in_flight_calls` in all.
    in_flight: Arc<Semaphore>,
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
        let clients = ClientRegistry::new(settings.clients.clone(), settings.fingerprinter.clone());
        if clients.is_open() {
            warn!(
                "OPEN MODE: no [[proxy.clients]] configured, every caller is let through; \
                 configure client keys before exposing this proxy"
            );
        }
        Ok(Arc::new(Self {
            clients,
            upstream: Upstream::new(&settings.targets)?,
            metrics: Arc::new(ProxyMetrics::new(emitter.clone())),
            in_flight: Arc::new(Semaphore::new(settings.server.max_in_flight_calls)),
            emitter,
            settings,
        }))
    }

    pub(crate) fn metrics(&self) -> &ProxyMetrics {
        &self.metrics
    }

    fn target_for(&self, requested_model: &str) -> Option<&Target> {
        self.settings
            .targets
            .iter()
            .find(|target| target.serves(requested_model))
    }

    /// Records the authentication outcome on the call; a rejected caller goes no further.
    /// An authenticated caller then passes the audit gate: it waits while the audit pipeline
    /// has no room for its events, as `[audit].on_spool_full` says (`block`), or is refused
    /// (`fail_closed`: 503 `audit_unavailable`). A rejected caller never waits there and its
    /// events are sheddable (see [`CallAudit::authenticated`]): a flood of bad keys cannot
    /// hold back or refuse authenticated calls.
    pub(crate) async fn admit(
        &self,
        call: &mut CallAudit,
        auth: AuthOutcome,
    ) -> Result<AuthOutcome, ProxyError> {
        call.authenticated(&auth);
        match auth {
            AuthOutcome::Rejected { reason, .. } => Err(match reason {
                RejectReason::MissingKey => ProxyError::MissingApiKey,
                RejectReason::UnknownKey => ProxyError::InvalidApiKey,
            }),
            admitted => match self.emitter.admit().await {
                Ok(()) => Ok(admitted),
                Err(AuditUnavailable) => {
                    self.metrics.refused_unaudited();
                    Err(ProxyError::AuditUnavailable)
                }
            },
        }
    }

    /// Authenticates the caller's bearer key and records the decision on the call.
    async fn authorize(
        &self,
        call: &mut CallAudit,
        headers: &HeaderMap,
    ) -> Result<AuthOutcome, ProxyError> {
        self.admit(call, self.clients.authenticate(headers)).await
    }

    /// A client restricted to some targets gets a 403 (and a `target_access` decision) for
    /// any other.
    pub(crate) fn check_access(
        &self,
        call: &mut CallAudit,
        auth: &AuthOutcome,
        target: &Target,
    ) -> Result<(), ProxyError> {
        match auth.client() {
            Some(client) if !client.may_call(&target.id) => {
                let reason = format!(
                    "client {:?} may not use target {:?}",
                    client.name, target.id
                );
                call.decided("target_access", "deny", Some(&reason));
                Err(ProxyError::TargetNotAllowed(
                    target.public_name().to_owned(),
                ))
            }
            _ => Ok(()),
        }
    }

    pub(crate) fn start_call(&self, endpoint: &str, request: &Request) -> CallAudit {
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0.ip());
        let client_address = self.settings.client_locator.locate(peer, request.headers());
        CallAudit::start(
            self.emitter.clone(),
            self.metrics.clone(),
            &self.settings.proxy_id,
            self.settings.environment.as_deref(),
            endpoint,
            client_address,
            request.headers(),
        )
    }
}

/// The proxy's routes. Every call that reaches an upstream first passes the audit gate, once
/// authenticated ([`ProxyState::admit`]).
/// `/metrics` is not here: it is on the admin listener ([`admin_router`]).
pub fn router(state: Arc<ProxyState>) -> Router {
    let mut calls = Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/models", get(list_models));
    if let Some(passthrough) = &state.settings.passthrough {
        calls = calls
            .route(
                &format!("{}/{{target}}", passthrough.prefix),
                any(passthrough::handle),
            )
            .route(
                &format!("{}/{{target}}/{{*path}}", passthrough.prefix),
                any(passthrough::handle),
            );
    }
    let calls = calls.route_layer(middleware::from_fn_with_state(state.clone(), in_flight_cap));
    Router::new()
        .route("/healthz", get(healthz))
        .merge(calls)
        .fallback(unknown_endpoint)
        .with_state(state)
}

/// The admin routes, served on `[proxy].admin_listen` (loopback by default), never on the
/// listener callers reach: `/metrics` and `/healthz`.
pub fn admin_router(state: Arc<ProxyState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(unknown_endpoint)
        .with_state(state)
}

/// Refuses a call with 503 while `max_in_flight_calls` are being served. A call's place is
/// held until its response body ends, so a stream counts for as long as it runs.
async fn in_flight_cap(
    State(state): State<Arc<ProxyState>>,
    request: Request,
    next: Next,
) -> Response {
    let Ok(place) = state.in_flight.clone().try_acquire_owned() else {
        state.metrics.refused_overloaded(OverloadedResource::Calls);
        return ProxyError::Overloaded.into_response();
    };
    next.run(request).await.map(|body| {
        Body::new(HoldWhileStreaming {
            body,
            _place: place,
        })
    })
}

/// A response body that keeps its call's in-flight place until it ends or is dropped.
struct HoldWhileStreaming {
    body: Body,
    _place: tokio::sync::OwnedSemaphorePermit,
}

impl http_body::Body for HoldWhileStreaming {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
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

/// The OpenAI endpoints Warden serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpenAiEndpoint {
    Chat,
    Completions,
    Embeddings,
}

impl OpenAiEndpoint {
    fn path(self) -> &'static str {
        match self {
            Self::Chat => "/v1/chat/completions",
            Self::Completions => "/v1/completions",
            Self::Embeddings => "/v1/embeddings",
        }
    }
}

async fn chat_completions(State(state): State<Arc<ProxyState>>, request: Request) -> Response {
    openai_call(&state, OpenAiEndpoint::Chat, request).await
}

async fn completions(State(state): State<Arc<ProxyState>>, request: Request) -> Response {
    openai_call(&state, OpenAiEndpoint::Completions, request).await
}

async fn embeddings(State(state): State<Arc<ProxyState>>, request: Request) -> Response {
    openai_call(&state, OpenAiEndpoint::Embeddings, request).await
}

/// One OpenAI call, start to finish: admitted, routed, forwarded, answered, audited.
async fn openai_call(state: &ProxyState, endpoint: OpenAiEndpoint, request: Request) -> Response {
    let mut call = state.start_call(endpoint.path(), &request);
    let request_id = call.request_id.clone();
    let (parts, body) = request.into_parts();
    let response = match forward(state, &mut call, endpoint, &parts.headers, body).await {
        Ok(Outcome::Complete(answer)) => released(answer.deliver(call)).await,
        Ok(Outcome::Stream(respond)) => respond(call),
        Err(err) => released(fail(call, err)).await,
    };
    with_request_id(response, &request_id)
}

/// The client's response, once its call's trail is durable (at once under `buffered`); a
/// trail that cannot be made durable gets the client a 503 `audit_unavailable` instead.
pub(crate) async fn released((response, trail): (Response, AuditTrail)) -> Response {
    match trail.durable().await {
        Ok(()) => response,
        Err(AuditUnavailable) => ProxyError::AuditUnavailable.into_response(),
    }
}

/// What forwarding a call produced.
enum Outcome {
    Complete(Box<Answer>),
    /// Builds the streamed response once it is handed the call to audit.
    Stream(Box<dyn FnOnce(CallAudit) -> Response + Send>),
}

impl Outcome {
    fn complete(answer: Answer) -> Self {
        Self::Complete(Box::new(answer))
    }

    fn stream<T: StreamTranslator>(
        upstream: reqwest::Response,
        translator: T,
        limits: StreamLimits,
    ) -> Self {
        Self::Stream(Box::new(move |call| {
            TranslatedStream::new(upstream, call, translator, limits).into_response()
        }))
    }
}

/// A parsed request, admitted and routed.
struct Routed<'a> {
    request: Map<String, Value>,
    model: String,
    target: &'a Target,
}

async fn forward(
    state: &ProxyState,
    call: &mut CallAudit,
    endpoint: OpenAiEndpoint,
    headers: &HeaderMap,
    body: Body,
) -> Result<Outcome, ProxyError> {
    let Routed {
        request,
        model,
        target,
    } = route(state, call, headers, body).await?;
    let upstream = &state.upstream;
    let stream = call.route.stream;
    let limits = StreamLimits::of(target);
    match (endpoint, target.kind) {
        (OpenAiEndpoint::Chat, TargetKind::TgiMessages | TargetKind::HfServerless) => {
            if stream {
                let (response, translator) =
                    chat::open_stream(upstream, target, &model, request).await?;
                Ok(Outcome::stream(response, translator, limits))
            } else {
                chat::complete(upstream, target, &model, request)
                    .await
                    .map(Outcome::complete)
            }
        }
        (OpenAiEndpoint::Chat | OpenAiEndpoint::Completions, _) => {
            let generation = if endpoint == OpenAiEndpoint::Chat {
                Generation::chat(&request, target, &model, &call.request_id)?
            } else {
                Generation::completions(&request, target, &model, &call.request_id)?
            };
            if stream {
                let (response, translator) = generation
                    .open_stream(upstream, target, client_wants_usage(&request))
                    .await?;
                Ok(Outcome::stream(response, translator, limits))
            } else {
                generation
                    .complete(upstream, target)
                    .await
                    .map(Outcome::complete)
            }
        }
        (OpenAiEndpoint::Embeddings, _) => embeddings::embed(upstream, target, &model, &request)
            .await
            .map(Outcome::complete),
    }
}

/// Admits the caller, reads and parses the body, and finds the target its `model` names;
/// emits the `request` event.
async fn route<'a>(
    state: &'a ProxyState,
    call: &mut CallAudit,
    headers: &HeaderMap,
    body: Body,
) -> Result<Routed<'a>, ProxyError> {
    let auth = state.authorize(call, headers).await?;
    let body = read_body(body, &state.settings).await?;
    call.request.bytes = body.len() as u64;
    let request: Map<String, Value> =
        serde_json::from_slice(&body).map_err(|err| ProxyError::InvalidJson(err.to_string()))?;
    call.request.prompt_hash = Some(prompt_hash(&state.settings.fingerprinter, &request));
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
    state.check_access(call, &auth, target)?;
    call.routed(target);
    if call.captures_content() {
        call.request.content = call.captured(&String::from_utf8_lossy(&body));
    }
    call.request_received();
    call.durable().await?;
    Ok(Routed {
        request,
        model,
        target,
    })
}

/// `GET /v1/models`: the configured targets the caller may use, by the names clients use.
async fn list_models(State(state): State<Arc<ProxyState>>, request: Request) -> Response {
    let mut call = state.start_call("/v1/models", &request);
    let request_id = call.request_id.clone();
    let response = match state.authorize(&mut call, request.headers()).await {
        Ok(auth) => {
            let data: Vec<Value> = state
                .settings
                .targets
                .iter()
                .filter(|target| {
                    auth.client()
                        .is_none_or(|client| client.may_call(&target.id))
                })
                .map(|target| {
                    json!({
                        "id": target.public_name(),
                        "object": "model",
                        "created": 0,
                        "owned_by": target.kind.as_str(),
                    })
                })
                .collect();
            let trail = call.finish(ResponseInfo {
                status: 200,
                ..ResponseInfo::default()
            });
            let list = axum::Json(json!({"object": "list", "data": data})).into_response();
            released((list, trail)).await
        }
        Err(err) => released(fail(call, err)).await,
    };
    with_request_id(response, &request_id)
}

/// Ends a failed call: its response event, then the client's error (to release per
/// [`released`]).
pub(crate) fn fail(call: CallAudit, err: ProxyError) -> (Response, AuditTrail) {
    let trail = call.finish(ResponseInfo {
        status: err.status().as_u16(),
        error_type: Some(err.code().to_owned()),
        ..ResponseInfo::default()
    });
    // Refused because the trail is unavailable: answered at once, not after waiting on the
    // same pipeline again.
    let trail = match err {
        ProxyError::AuditUnavailable => trail.unwaited(),
        _ => trail,
    };
    (err.into_response(), trail)
}

pub(crate) fn with_request_id(mut response: Response, request_id: &RequestId) -> Response {
    if let Ok(value) = HeaderValue::from_str(request_id.as_str()) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

/// Reads the whole request body, refusing more than the configured size, or a body that
/// takes longer than the configured deadline.
pub(crate) async fn read_body(
    body: Body,
    settings: &ProxySettings,
) -> Result<bytes::Bytes, ProxyError> {
    let (limit, deadline) = (settings.max_body_bytes, settings.server.body_read_timeout);
    let read = axum::body::to_bytes(body, limit);
    let read = tokio::time::timeout(deadline, read)
        .await
        .map_err(|_| ProxyError::BodyTimeout(deadline))?;
    read.map_err(|err| {
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
