//! An emulator of the Hugging Face Inference Endpoints management API, written from
//! `huggingface_hub`'s behaviour (`hf_api.py`, `_inference_endpoints.py`), for the runbooks
//! that scale endpoints down: `GET` / `PUT` (partial update) `/v2/endpoint/{ns}/{name}`,
//! `POST …/pause`, `…/resume`, `…/scale-to-zero`, bearer-token auth, and the states an
//! endpoint goes through (`updating` or `initializing` for a while after a change, then
//! `running`; `paused`; `scaledToZero`).
//!
//! Where the real API is undocumented (error bodies, a `PUT` on a paused endpoint), the
//! emulator answers `{"error": "..."}` and keeps a paused endpoint paused with its new
//! scaling; tests must not rely on more than that.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// One emulated endpoint as a test sets it up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmulatedEndpoint {
    pub namespace: String,
    pub name: String,
    pub min_replica: u32,
    pub max_replica: u32,
    /// Replicas running now (within min..=max once running).
    pub replicas: u32,
}

impl EmulatedEndpoint {
    pub fn running(namespace: &str, name: &str, min_replica: u32, max_replica: u32) -> Self {
        Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            min_replica,
            max_replica,
            replicas: max_replica,
        }
    }
}

/// A request the emulator received.
#[derive(Debug, Clone, PartialEq)]
pub struct ManagementRequest {
    pub method: &'static str,
    pub path: String,
    pub body: Option<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    /// Changing (after an update, or waking from a resume) until the instant.
    Transition {
        state: &'static str,
        until: Instant,
    },
    Paused,
    ScaledToZero,
}

#[derive(Debug)]
struct Endpoint {
    spec: EmulatedEndpoint,
    phase: Phase,
    scale_to_zero_timeout: Option<u32>,
    updated_at: chrono::DateTime<chrono::Utc>,
}

impl Endpoint {
    /// The state now (a finished transition becomes `running`).
    fn settle(&mut self) {
        if let Phase::Transition { until, .. } = self.phase
            && Instant::now() >= until
        {
            self.phase = Phase::Running;
            self.spec.replicas = self
                .spec
                .replicas
                .clamp(self.spec.min_replica, self.spec.max_replica.max(1));
        }
    }

    fn view(&self, base: &str) -> Value {
        let (state, ready, target) = match self.phase {
            Phase::Running => ("running", self.spec.replicas, self.spec.replicas),
            Phase::Transition { state, .. } => (
                state,
                self.spec.replicas.min(self.spec.max_replica),
                self.spec
                    .replicas
                    .clamp(self.spec.min_replica, self.spec.max_replica.max(1)),
            ),
            Phase::Paused => ("paused", 0, 0),
            Phase::ScaledToZero => ("scaledToZero", 0, 0),
        };
        json!({
            "name": self.spec.name,
            "type": "protected",
            "healthRoute": "/health",
            "provider": { "vendor": "aws", "region": "us-east-1" },
            "compute": {
                "accelerator": "gpu",
                "instanceType": "nvidia-a10g",
                "instanceSize": "x1",
                "scaling": {
                    "minReplica": self.spec.min_replica,
                    "maxReplica": self.spec.max_replica,
                    "scaleToZeroTimeout": self.scale_to_zero_timeout,
                },
            },
            "model": {
                "repository": "meta-llama/Meta-Llama-3.1-70B-Instruct",
                "revision": "main",
                "task": "text-generation",
                "framework": "pytorch",
                "image": { "tgi": {} },
            },
            "status": {
                "state": state,
                "message": format!("Endpoint is {state}"),
                "url": format!("{base}/endpoints/{}", self.spec.name),
                "readyReplica": ready,
                "targetReplica": target,
                "createdAt": "2026-01-01T00:00:00.000Z",
                "updatedAt": self.updated_at.to_rfc3339(),
                "createdBy": { "id": "1", "name": self.spec.namespace },
                "updatedBy": { "id": "1", "name": self.spec.namespace },
            },
        })
    }
}

#[derive(Debug)]
struct Shared {
    token: String,
    base: String,
    transition: Duration,
    endpoints: Mutex<HashMap<(String, String), Endpoint>>,
    requests: Mutex<Vec<ManagementRequest>>,
}

/// A running emulator; stops when dropped.
#[derive(Debug)]
pub struct HfEndpointsEmulator {
    address: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl Drop for HfEndpointsEmulator {
    fn drop(&mut self) {
        self.server.abort();
    }
}

type Answer = (StatusCode, Json<Value>);

fn error(status: StatusCode, message: &str) -> Answer {
    (status, Json(json!({ "error": message })))
}

impl HfEndpointsEmulator {
    /// Serves `endpoints` on a free loopback port, to callers presenting `token`; changes
    /// take `transition` to settle.
    pub async fn start(
        token: &str,
        endpoints: Vec<EmulatedEndpoint>,
        transition: Duration,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let shared = Arc::new(Shared {
            token: token.to_owned(),
            base: format!("http://{address}"),
            transition,
            endpoints: Mutex::new(
                endpoints
                    .into_iter()
                    .map(|spec| {
                        let key = (spec.namespace.clone(), spec.name.clone());
                        let endpoint = Endpoint {
                            spec,
                            phase: Phase::Running,
                            scale_to_zero_timeout: None,
                            updated_at: chrono::Utc::now(),
                        };
                        (key, endpoint)
                    })
                    .collect(),
            ),
            requests: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route(
                "/v2/endpoint/{namespace}/{name}",
                get(get_endpoint).put(update_endpoint),
            )
            .route(
                "/v2/endpoint/{namespace}/{name}/{action}",
                post(endpoint_action),
            )
            .with_state(Arc::clone(&shared));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            address,
            shared,
            server,
        })
    }

    /// What `[hf_api].base_url` is set to.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<ManagementRequest> {
        self.shared
            .requests
            .lock()
            .map(|requests| requests.clone())
            .unwrap_or_default()
    }

    /// An endpoint's scaling and state now: (minReplica, maxReplica, state).
    pub fn endpoint(&self, namespace: &str, name: &str) -> Option<(u32, u32, String)> {
        let mut endpoints = self.shared.endpoints.lock().ok()?;
        let endpoint = endpoints.get_mut(&(namespace.to_owned(), name.to_owned()))?;
        endpoint.settle();
        let view = endpoint.view(&self.shared.base);
        Some((
            endpoint.spec.min_replica,
            endpoint.spec.max_replica,
            view["status"]["state"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        ))
    }
}

fn authorised(shared: &Shared, headers: &HeaderMap) -> bool {
    headers
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .is_some_and(|token| token == shared.token)
}

fn record(shared: &Shared, method: &'static str, path: String, body: Option<Value>) {
    if let Ok(mut requests) = shared.requests.lock() {
        requests.push(ManagementRequest { method, path, body });
    }
}

/// Runs `change` on the endpoint, answering with its view (401 / 404 first).
fn with_endpoint(
    shared: &Shared,
    headers: &HeaderMap,
    namespace: String,
    name: String,
    change: impl FnOnce(&mut Endpoint, Duration) -> Result<(), Answer>,
) -> Answer {
    if !authorised(shared, headers) {
        return error(
            StatusCode::UNAUTHORIZED,
            "Invalid credentials in Authorization header",
        );
    }
    let Ok(mut endpoints) = shared.endpoints.lock() else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "emulator state poisoned");
    };
    let Some(endpoint) = endpoints.get_mut(&(namespace, name)) else {
        return error(StatusCode::NOT_FOUND, "Endpoint not found");
    };
    endpoint.settle();
    if let Err(answer) = change(endpoint, shared.transition) {
        return answer;
    }
    (StatusCode::OK, Json(endpoint.view(&shared.base)))
}

async fn get_endpoint(
    State(shared): State<Arc<Shared>>,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Answer {
    record(
        &shared,
        "GET",
        format!("/v2/endpoint/{namespace}/{name}"),
        None,
    );
    with_endpoint(&shared, &headers, namespace, name, |_, _| Ok(()))
}

async fn update_endpoint(
    State(shared): State<Arc<Shared>>,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Answer {
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    record(
        &shared,
        "PUT",
        format!("/v2/endpoint/{namespace}/{name}"),
        parsed.clone(),
    );
    with_endpoint(
        &shared,
        &headers,
        namespace,
        name,
        |endpoint, transition| {
            let Some(body) = parsed.filter(Value::is_object) else {
                return Err(error(StatusCode::BAD_REQUEST, "body must be a JSON object"));
            };
            let scaling = &body["compute"]["scaling"];
            let read = |key: &str, current: u32| -> Result<u32, Answer> {
                match &scaling[key] {
                    Value::Null => Ok(current),
                    value => value
                        .as_u64()
                        .and_then(|n| u32::try_from(n).ok())
                        .filter(|n| *n <= 100)
                        .ok_or_else(|| {
                            error(StatusCode::BAD_REQUEST, &format!("{key} must be 0..=100"))
                        }),
                }
            };
            let min_replica = read("minReplica", endpoint.spec.min_replica)?;
            let max_replica = read("maxReplica", endpoint.spec.max_replica)?;
            if min_replica > max_replica {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    "minReplica must not exceed maxReplica",
                ));
            }
            if max_replica == 0 {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    "maxReplica must be at least 1",
                ));
            }
            if let Some(timeout) = scaling["scaleToZeroTimeout"].as_u64() {
                endpoint.scale_to_zero_timeout = u32::try_from(timeout).ok();
            }
            endpoint.spec.min_replica = min_replica;
            endpoint.spec.max_replica = max_replica;
            endpoint.updated_at = chrono::Utc::now();
            if matches!(endpoint.phase, Phase::Running | Phase::Transition { .. }) {
                endpoint.phase = Phase::Transition {
                    state: "updating",
                    until: Instant::now() + transition,
                };
            }
            Ok(())
        },
    )
}

async fn endpoint_action(
    State(shared): State<Arc<Shared>>,
    Path((namespace, name, action)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Answer {
    record(
        &shared,
        "POST",
        format!("/v2/endpoint/{namespace}/{name}/{action}"),
        None,
    );
    with_endpoint(
        &shared,
        &headers,
        namespace,
        name,
        |endpoint, transition| {
            endpoint.updated_at = chrono::Utc::now();
            match action.as_str() {
                "pause" => endpoint.phase = Phase::Paused,
                "scale-to-zero" => endpoint.phase = Phase::ScaledToZero,
                "resume" => match endpoint.phase {
                    Phase::Running => {
                        return Err(error(
                            StatusCode::BAD_REQUEST,
                            "Endpoint is already running",
                        ));
                    }
                    _ => {
                        endpoint.spec.replicas = endpoint.spec.min_replica.max(1);
                        endpoint.phase = Phase::Transition {
                            state: "initializing",
                            until: Instant::now() + transition,
                        };
                    }
                },
                _ => return Err(error(StatusCode::NOT_FOUND, "Unknown action")),
            }
            Ok(())
        },
    )
}
