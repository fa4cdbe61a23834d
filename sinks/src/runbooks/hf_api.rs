//! `[hf_api]` and the client of the Hugging Face Inference Endpoints management API, as
//! `huggingface_hub` calls it: `GET` / `PUT` (a partial update: only the fields that change)
//! `{base_url}/v2/endpoint/{namespace}/{name}`, `POST …/pause` and `…/resume`, with
//! `Authorization: Bearer <token>`. After a change the endpoint is polled until it settles:
//! `running`, `paused` or `scaledToZero` is done, `failed` or `updateFailed` is a failed step.
//!
//! The token is a secret reference and never leaves this module: errors name the endpoint
//! and the status, never the token, and the answer body is cut short.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::respond::config::Secret;

/// The public API's host.
pub const DEFAULT_BASE_URL: &str = "https://api.endpoints.huggingface.cloud";

/// `[hf_api]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HfApiConfig {
    /// The host; `/v2/endpoint/{namespace}/{name}` is appended.
    pub base_url: String,
    /// `env:NAME`: a token allowed to manage the endpoints.
    pub token: Option<String>,
    /// How long one call may take.
    pub timeout_s: u64,
}

impl Default for HfApiConfig {
    fn default() -> Self {
        Self {
            base_url: DEFAULT_BASE_URL.to_owned(),
            token: None,
            timeout_s: 30,
        }
    }
}

/// `[hf_api]`, validated: `None` without a token (no runbook may touch an endpoint).
#[derive(Debug, Clone)]
pub struct HfApiSettings {
    pub base_url: String,
    pub token: Secret,
    pub timeout: Duration,
}

impl HfApiConfig {
    pub fn validate(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<HfApiSettings>, Vec<String>> {
        let mut errors = Vec::new();
        match url::Url::parse(&self.base_url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => {}
            _ => errors.push(format!(
                "hf_api.base_url: {:?} is not an http(s) URL",
                self.base_url
            )),
        }
        if !(1..=600).contains(&self.timeout_s) {
            errors.push("hf_api.timeout_s: between 1 and 600".to_owned());
        }
        let token = match self.token.as_deref() {
            None => None,
            Some(reference) => match reference.strip_prefix("env:") {
                Some(name) => match env(name).filter(|value| !value.is_empty()) {
                    Some(value) => Some(Secret::from_resolved(value)),
                    None => {
                        errors.push(format!("hf_api.token: env var {name} is not set"));
                        None
                    }
                },
                None => {
                    errors.push(
                        "hf_api.token: must be a reference like \"env:HF_API_TOKEN\", not an \
                         inline value"
                            .to_owned(),
                    );
                    None
                }
            },
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(token.map(|token| HfApiSettings {
            base_url: self.base_url.trim_end_matches('/').to_owned(),
            token,
            timeout: Duration::from_secs(self.timeout_s),
        }))
    }
}

/// An endpoint as the API describes it (the parts runbooks use).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointStatus {
    pub state: String,
    pub min_replica: u32,
    pub max_replica: u32,
    pub ready_replica: u32,
    pub target_replica: u32,
}

impl EndpointStatus {
    fn from_view(view: &Value) -> Result<Self, HfApiError> {
        let number = |value: &Value| value.as_u64().and_then(|n| u32::try_from(n).ok());
        let scaling = &view["compute"]["scaling"];
        let status = &view["status"];
        let read = || {
            Some(Self {
                state: status["state"].as_str()?.to_owned(),
                min_replica: number(&scaling["minReplica"])?,
                max_replica: number(&scaling["maxReplica"])?,
                ready_replica: number(&status["readyReplica"]).unwrap_or(0),
                target_replica: number(&status["targetReplica"]).unwrap_or(0),
            })
        };
        read().ok_or_else(|| {
            HfApiError::Unexpected(
                "the endpoint's description lacks its scaling or state".to_owned(),
            )
        })
    }

    /// Whether a change has settled (successfully).
    pub fn is_settled(&self) -> bool {
        matches!(self.state.as_str(), "running" | "paused" | "scaledToZero")
    }

    /// Whether the endpoint failed.
    pub fn is_failed(&self) -> bool {
        matches!(self.state.as_str(), "failed" | "updateFailed")
    }
}

/// A failed management call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HfApiError {
    #[error("the endpoints API could not be reached: {0}")]
    Transport(String),
    #[error("the endpoints API answered {status} for {endpoint}: {body}")]
    Status {
        status: u16,
        endpoint: String,
        body: String,
    },
    #[error("{0}")]
    Unexpected(String),
    #[error("{endpoint} is {state}")]
    Failed { endpoint: String, state: String },
    #[error("{endpoint} did not settle within {waited:?} (last state {state})")]
    NotSettled {
        endpoint: String,
        state: String,
        waited: Duration,
    },
}

/// The management API client.
#[derive(Debug, Clone)]
pub struct HfApi {
    client: reqwest::Client,
    settings: HfApiSettings,
}

impl HfApi {
    pub fn new(settings: HfApiSettings) -> Result<Self, String> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|err| format!("building the HF API client: {err}"))?;
        Ok(Self { client, settings })
    }

    fn url(&self, endpoint: &str, action: Option<&str>) -> Result<String, HfApiError> {
        let (namespace, name) = endpoint
            .split_once('/')
            .filter(|(namespace, name)| {
                let ok = |part: &str| {
                    !part.is_empty()
                        && part
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                };
                ok(namespace) && ok(name)
            })
            .ok_or_else(|| HfApiError::Unexpected(format!("{endpoint:?} is not namespace/name")))?;
        let mut url = format!("{}/v2/endpoint/{namespace}/{name}", self.settings.base_url);
        if let Some(action) = action {
            url.push('/');
            url.push_str(action);
        }
        Ok(url)
    }

    async fn send(
        &self,
        endpoint: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<Value, HfApiError> {
        let response = request
            .bearer_auth(self.settings.token.expose())
            .send()
            .await
            .map_err(|err| {
                HfApiError::Transport(if err.is_timeout() {
                    "timed out".to_owned()
                } else {
                    "could not connect".to_owned()
                })
            })?;
        let status = response.status().as_u16();
        let body = crate::respond::notify::read_body_capped(response, 64 * 1024).await;
        if !(200..300).contains(&status) {
            return Err(HfApiError::Status {
                status,
                endpoint: endpoint.to_owned(),
                body: crate::respond::notify::content::truncate(body.trim(), 300),
            });
        }
        serde_json::from_str(&body).map_err(|_| {
            HfApiError::Unexpected(format!(
                "the endpoints API answered {endpoint} with no JSON"
            ))
        })
    }

    /// The endpoint (`namespace/name`) now.
    pub async fn get(&self, endpoint: &str) -> Result<EndpointStatus, HfApiError> {
        let url = self.url(endpoint, None)?;
        let view = self.send(endpoint, self.client.get(url)).await?;
        EndpointStatus::from_view(&view)
    }

    /// Sets the replica bounds (a partial update: only `compute.scaling`).
    pub async fn set_scaling(
        &self,
        endpoint: &str,
        min_replica: u32,
        max_replica: u32,
    ) -> Result<EndpointStatus, HfApiError> {
        let url = self.url(endpoint, None)?;
        let body =
            json!({"compute": {"scaling": {"minReplica": min_replica, "maxReplica": max_replica}}});
        let view = self
            .send(endpoint, self.client.put(url).json(&body))
            .await?;
        EndpointStatus::from_view(&view)
    }

    /// Pauses the endpoint (no replica, not billed; needs an explicit resume).
    pub async fn pause(&self, endpoint: &str) -> Result<EndpointStatus, HfApiError> {
        let url = self.url(endpoint, Some("pause"))?;
        let view = self.send(endpoint, self.client.post(url)).await?;
        EndpointStatus::from_view(&view)
    }

    /// Resumes a paused endpoint; one already running is fine (huggingface_hub's rule).
    pub async fn resume(&self, endpoint: &str) -> Result<EndpointStatus, HfApiError> {
        let url = self.url(endpoint, Some("resume"))?;
        match self.send(endpoint, self.client.post(url)).await {
            Ok(view) => EndpointStatus::from_view(&view),
            Err(HfApiError::Status {
                status: 400, body, ..
            }) if body.contains("already running") => self.get(endpoint).await,
            Err(err) => Err(err),
        }
    }

    /// Polls every `every` until the endpoint settles, fails, or `limit` passes.
    pub async fn wait_settled(
        &self,
        endpoint: &str,
        every: Duration,
        limit: Duration,
    ) -> Result<EndpointStatus, HfApiError> {
        let started = std::time::Instant::now();
        loop {
            let status = self.get(endpoint).await?;
            if status.is_failed() {
                return Err(HfApiError::Failed {
                    endpoint: endpoint.to_owned(),
                    state: status.state,
                });
            }
            if status.is_settled() {
                return Ok(status);
            }
            if started.elapsed() >= limit {
                return Err(HfApiError::NotSettled {
                    endpoint: endpoint.to_owned(),
                    state: status.state,
                    waited: started.elapsed(),
                });
            }
            tokio::time::sleep(every).await;
        }
    }
}
