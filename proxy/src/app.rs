//! The HTTP front door: routes, and the request path of the OpenAI endpoints from admission
//! to the audit trail. Shared state is in [`crate::state`], the helpers that end a call in
//! [`crate::call`], pass-through in [`crate::passthrough`].

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use serde_json::{Map, Value, json};
use warden_ingest::event::ResponseInfo;

use crate::audit::{CallAudit, prompt_hash};
use crate::call::{fail, read_body, released, with_request_id};
use crate::config::Target;
use crate::error::ProxyError;
use crate::metrics::OverloadedResource;
use crate::passthrough;
use crate::policy::limits::{Quotas, TokenEstimate};
use crate::policy::{KeyHeader, Requested};
use crate::state::ProxyState;
use crate::targets::{self, Admitted, OpenAiEndpoint, Outcome};

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
        state
            .metrics()
            .refused_overloaded(OverloadedResource::Calls);
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
    state
        .metrics()
        .set_circuit_states(state.policies.breakers.states());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics().render(),
    )
}

async fn unknown_endpoint(request: Request) -> ProxyError {
    ProxyError::UnknownEndpoint(format!("{} {}", request.method(), request.uri().path()))
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

/// One OpenAI call, start to finish: admitted, forwarded, answered, audited.
async fn openai_call(state: &ProxyState, endpoint: OpenAiEndpoint, request: Request) -> Response {
    let mut call = state.start_call(endpoint.path(), &request);
    let request_id = call.request_id.clone();
    let (parts, body) = request.into_parts();
    let mut quotas = Quotas::default();
    let outcome = match admit(state, &mut call, endpoint, &parts.headers, body).await {
        Ok(admitted) => {
            quotas = admitted.quotas;
            serve(state, &mut call, endpoint, admitted).await
        }
        Err(err) => Err(err),
    };
    let mut response = match outcome {
        Ok(Outcome::Complete(answer)) => released(answer.deliver(call)).await,
        Ok(Outcome::Stream(respond)) => respond(call),
        Err(err) => released(fail(call, err)).await,
    };
    quotas.write_headers(response.headers_mut());
    with_request_id(response, &request_id)
}

/// An OpenAI call through the chain: its parsed request and the targets that may serve it.
struct AdmittedCall<'a> {
    request: Map<String, Value>,
    model: String,
    stream: bool,
    quotas: Quotas,
    /// The router's target, then its fallbacks.
    candidates: Vec<&'a Target>,
}

/// Sends an admitted call to its target, and on a target failure (connect failure,
/// timeout, 5xx, a cold start past its budget, an open circuit) to each fallback in turn.
/// Every attempt is recorded on the call; a fallback leaves a `fallback` decision.
async fn serve(
    state: &ProxyState,
    call: &mut CallAudit,
    endpoint: OpenAiEndpoint,
    admitted: AdmittedCall<'_>,
) -> Result<Outcome, ProxyError> {
    let AdmittedCall {
        mut request,
        model,
        stream,
        candidates,
        ..
    } = admitted;
    let breakers = &state.policies.breakers;
    let mut failure: Option<ProxyError> = None;
    let count = candidates.len();
    for (index, target) in candidates.into_iter().enumerate() {
        if let Some(previous) = &failure {
            call.routed(target);
            let reason = format!("{}; trying {}", previous.code(), target.id);
            call.decided("fallback", "route", Some(&reason));
        }
        if state.policies.control.disabled(&target.id) {
            call.attempted(&target.id, "target_disabled");
            failure = Some(ProxyError::TargetDisabled(target.public_name().to_owned()));
            continue;
        }
        if !breakers.allow(&target.id) {
            call.attempted(&target.id, "circuit_open");
            failure = Some(ProxyError::CircuitOpen(target.public_name().to_owned()));
            continue;
        }
        let last = index + 1 == count;
        let attempt = Admitted {
            request: if last {
                std::mem::take(&mut request)
            } else {
                request.clone()
            },
            model: model.clone(),
            target,
            stream,
        };
        // Boxed: the upstream call's future is large, and every handler future holding it
        // inline is moved whole when axum boxes it.
        let forwarded = Box::pin(targets::forward(
            &state.upstream,
            endpoint,
            attempt,
            &call.request_id,
        ));
        match forwarded.await {
            Ok(outcome) => {
                breakers.succeeded(&target.id);
                if failure.is_some() {
                    call.attempted(&target.id, "ok");
                }
                return Ok(outcome);
            }
            Err(err) if err.is_target_failure() => {
                breakers.failed(&target.id);
                call.attempted(&target.id, err.code());
                failure = Some(err);
            }
            Err(err) => return Err(err),
        }
    }
    Err(failure.unwrap_or_else(|| ProxyError::Internal("no target to serve the call".to_owned())))
}

/// Authenticates the caller (before its body is read), reads and parses the body, and passes
/// the rest of the policy chain on what it asks for; emits the `request` event, and waits
/// until it is durable where `[audit].durability` asks.
async fn admit<'a>(
    state: &'a ProxyState,
    call: &mut CallAudit,
    endpoint: OpenAiEndpoint,
    headers: &HeaderMap,
    body: Body,
) -> Result<AdmittedCall<'a>, ProxyError> {
    let caller = state
        .authenticate(call, KeyHeader::Authorization.key(headers))
        .await?;
    let body = read_body(body, &state.settings).await?;
    call.request.bytes = body.len() as u64;
    let mut request: Map<String, Value> =
        serde_json::from_slice(&body).map_err(|err| ProxyError::InvalidJson(err.to_string()))?;
    call.request.prompt_hash = Some(prompt_hash(&state.settings.fingerprinter, &request));
    let stream = request.get("stream").and_then(Value::as_bool) == Some(true);
    call.route.stream = stream;
    let model = request
        .get("model")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            ProxyError::InvalidRequest("you must provide a 'model' parameter".to_owned())
        })?
        .to_owned();
    let generates = endpoint != OpenAiEndpoint::Embeddings;
    let estimate = TokenEstimate::of_request(&request, generates);
    let requested = Requested::Model {
        model: &model,
        headers,
    };
    let admission = state.admit(call, &caller, requested, &estimate, Some(&mut request))?;
    if call.captures_content() {
        // What a guardrail redacted is not kept: the request as it goes upstream.
        let content = if admission.redacted {
            serde_json::to_string(&request).unwrap_or_default()
        } else {
            String::from_utf8_lossy(&body).into_owned()
        };
        call.request.content = call.captured(&content);
    }
    call.request_received();
    call.durable().await?;
    Ok(AdmittedCall {
        request,
        model,
        stream,
        quotas: admission.quotas,
        candidates: admission.candidates,
    })
}

/// `GET /v1/models`: the configured targets the caller may use, by the names clients use.
async fn list_models(State(state): State<Arc<ProxyState>>, request: Request) -> Response {
    let mut call = state.start_call("/v1/models", &request);
    let request_id = call.request_id.clone();
    let key = KeyHeader::Authorization.key(request.headers());
    let response = match state.authenticate(&mut call, key).await {
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
