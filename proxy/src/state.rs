//! What every call shares: settings, the policies, the upstream client, the audit emitter and
//! metrics. Immutable after startup.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request};
use tokio::sync::Semaphore;
use tracing::warn;
use warden_ingest::{AuditUnavailable, EventEmitter};

use crate::audit::CallAudit;
use crate::config::ProxySettings;
use crate::control::ControlPlane;
use crate::error::ProxyError;
use crate::metrics::{ProxyMetrics, SharedMetrics};
use crate::policy::auth::AuthOutcome;
use crate::policy::limits::TokenEstimate;
use crate::policy::{Admission, Policies, Requested};
use crate::upstream::Upstream;

/// Everything the handlers share. Immutable after startup.
#[derive(Debug)]
pub struct ProxyState {
    pub(crate) settings: ProxySettings,
    pub(crate) policies: Policies,
    pub(crate) upstream: Upstream,
    emitter: EventEmitter,
    metrics: SharedMetrics,
    /// One permit per call in flight, `max_in_flight_calls` in all.
    pub(crate) in_flight: Arc<Semaphore>,
}

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProxySetupError {
    #[error("building the upstream HTTP client: {0}")]
    HttpClient(#[from] reqwest::Error),
}

impl ProxyState {
    /// A proxy with nothing put in force by the control topic (tests, benchmarks).
    pub fn new(
        settings: ProxySettings,
        emitter: EventEmitter,
    ) -> Result<Arc<Self>, ProxySetupError> {
        Self::with_control(settings, emitter, ControlPlane::in_memory())
    }

    /// A proxy applying what `control` (fed from `warden.control`) puts in force.
    pub fn with_control(
        settings: ProxySettings,
        emitter: EventEmitter,
        control: Arc<ControlPlane>,
    ) -> Result<Arc<Self>, ProxySetupError> {
        let policies = Policies::new(&settings, control);
        if policies.is_open() {
            warn!(
                "OPEN MODE: no [[proxy.clients]] configured, every caller is let through; \
                 configure client keys before exposing this proxy"
            );
        }
        Ok(Arc::new(Self {
            policies,
            upstream: Upstream::new(&settings.targets)?,
            metrics: Arc::new(ProxyMetrics::new(emitter.clone())),
            in_flight: Arc::new(Semaphore::new(settings.server.max_in_flight_calls)),
            emitter,
            settings,
        }))
    }

    /// Replaces the configured clients with those of `settings` (a reloaded config), for the
    /// calls from now on: keys added or rotated out, labels, allowed targets. Returns how
    /// many clients there are now. Limits, budgets and targets keep their start-up values.
    pub fn reload_clients(&self, settings: &ProxySettings) -> Result<usize, String> {
        self.policies.reload_clients(
            settings.clients.clone(),
            self.settings.fingerprinter.clone(),
        )
    }

    pub(crate) fn emitter(&self) -> &EventEmitter {
        &self.emitter
    }

    pub(crate) fn shared_metrics(&self) -> SharedMetrics {
        self.metrics.clone()
    }

    pub(crate) fn metrics(&self) -> &ProxyMetrics {
        &self.metrics
    }

    /// The chain's `auth` member ([`Policies::authenticate`]), then the audit gate: an
    /// authenticated caller waits while the audit pipeline has no room for its events, as
    /// `[audit].on_spool_full` says (`block`), or is refused (`fail_closed`: 503
    /// `audit_unavailable`). A rejected caller never waits there and its events are
    /// sheddable (see [`CallAudit::authenticated`]): a flood of bad keys cannot hold back or
    /// refuse authenticated calls.
    pub(crate) async fn authenticate(
        &self,
        call: &mut CallAudit,
        key: Option<&str>,
    ) -> Result<AuthOutcome, ProxyError> {
        let caller = self.policies.authenticate(call, key)?;
        match self.emitter.admit().await {
            Ok(()) => Ok(caller),
            Err(AuditUnavailable) => {
                self.metrics.refused_unaudited();
                Err(ProxyError::AuditUnavailable)
            }
        }
    }

    /// The rest of the chain ([`Policies::admit`]): the target serving the call.
    pub(crate) fn admit(
        &self,
        call: &mut CallAudit,
        caller: &AuthOutcome,
        requested: Requested<'_>,
        estimate: &TokenEstimate,
        content: Option<&mut serde_json::Map<String, serde_json::Value>>,
    ) -> Result<Admission<'_>, ProxyError> {
        self.policies.admit(
            call,
            caller,
            requested,
            estimate,
            &self.settings.targets,
            content,
        )
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
