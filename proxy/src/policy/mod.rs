//! Admission: the policy chain every call passes before anything reaches an upstream.
//!
//! Every endpoint — the OpenAI ones and pass-through — is admitted the same way, in the same
//! order, by the members of the chain:
//!
//! 1. `auth` ([`Policies::authenticate`]): the caller's key against the configured clients.
//!    It runs before the call's body is read, so a caller without a valid key costs no body
//!    read (and, refused, never waits on the audit pipeline: see
//!    [`ProxyState::authenticate`](crate::state::ProxyState::authenticate)).
//! 2. The rest ([`Policies::admit`]), on what the call asks for, in the configured order
//!    (`[proxy.policies].chain`, validated at start):
//!    - `rate_limit` ([`limits`]): requests and tokens per subject; a refused call gets a
//!      429 `rate_limit_exceeded` with `Retry-After`, and every call a limit applies to gets
//!      OpenAI's `x-ratelimit-*` headers;
//!    - `budget` ([`budgets`]): spend caps per client, team or department; a call over a
//!      `deny` budget gets a 429 `insufficient_quota`;
//!    - `injection` ([`injection`]), `pii` ([`pii`]), `content` ([`content`]): the
//!      guardrails on what the call sends (and `pii` and `content` on its answer); a refused
//!      call gets a 400 `prompt_injection`, `pii_detected` or `content_policy_violation`,
//!      and a guardrail that fails answers for its `on_error` (see [`guarded`]);
//!    - `router`: which target serves it — the target an OpenAI call's `model` names, or
//!      the one a pass-through path names — then `target_access`: whether this client may
//!      use that target.
//!
//! Each member that decides records a decision on the call: a `policy_decision` event
//! (`auth` always; the others when they refuse, a fallback when it switches targets), except
//! the router's `route` for a call a rule routed, which rides on the call's `request` event
//! (`decision.policy = "router"`) so that routing adds no event to every call. A refusal is
//! a [`ProxyError`] with OpenAI's error shape.

pub(crate) mod auth;
pub(crate) mod breaker;
pub(crate) mod budgets;
pub(crate) mod content;
pub(crate) mod injection;
pub(crate) mod limits;
pub(crate) mod pii;
pub(crate) mod texts;

use axum::http::HeaderMap;
use chrono::Utc;

use std::sync::Arc;

use crate::audit::CallAudit;
use crate::config::{ChainMember, ProxySettings, RouteRule, Scoped, Target};
use crate::control::ControlPlane;
use crate::error::ProxyError;
use auth::{AuthOutcome, ClientRegistry, RejectReason};
use breaker::Breakers;
use budgets::{BudgetLabels, Budgets};
use limits::{CallSubjects, Limiter, Quotas, TokenEstimate};

/// What a call asks to be served by.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Requested<'a> {
    /// An OpenAI call's `model` and headers: the target a router rule names, else the
    /// target serving that model.
    Model {
        model: &'a str,
        headers: &'a HeaderMap,
    },
    /// A pass-through call's `{target}`: that target, by id.
    Target(&'a str),
}

/// Where a caller presents its Warden key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyHeader {
    /// `Authorization: Bearer <key>`.
    Authorization,
    /// `X-Warden-Key` (pass-through in transparent mode, where `Authorization` carries the
    /// caller's own HF token).
    WardenKey,
}

/// The header carrying Warden's client key when `Authorization` holds the caller's HF token.
pub const WARDEN_KEY_HEADER: &str = "x-warden-key";

impl KeyHeader {
    /// The key the caller presented there, if any.
    pub(crate) fn key(self, headers: &HeaderMap) -> Option<&str> {
        match self {
            Self::Authorization => auth::bearer_key(headers),
            Self::WardenKey => headers
                .get(WARDEN_KEY_HEADER)
                .and_then(|value| value.to_str().ok())
                .map(|value| value.trim().trim_start_matches("Bearer ").trim())
                .filter(|key| !key.is_empty()),
        }
    }
}

/// The configured policies. Immutable after startup.
#[derive(Debug)]
pub(crate) struct Policies {
    /// Replaced whole when the clients are reloaded (SIGHUP).
    clients: std::sync::RwLock<Arc<ClientRegistry>>,
    /// The members after `auth`, in order.
    chain: Vec<ChainMember>,
    limiter: Arc<Limiter>,
    rules: Vec<RouteRule>,
    /// Each rule's `route` decision reason, written once.
    rule_reasons: Vec<String>,
    pub(crate) breakers: Breakers,
    budgets: Arc<Budgets>,
    /// What `warden.control` put in force.
    pub(crate) control: Arc<ControlPlane>,
    /// The guardrails, each for the chain (when it is in it) and for targets and clients
    /// with their own settings.
    pii: Scoped<pii::PiiPolicy>,
    injection: Scoped<injection::InjectionPolicy>,
    content: Scoped<content::ContentPolicy>,
}

/// An admitted call: the target that serves it, and what the limits granted.
#[derive(Debug)]
pub(crate) struct Admission<'t> {
    /// The target the router chose, then its fallbacks the caller may use, in order.
    pub(crate) candidates: Vec<&'t Target>,
    /// For the `x-ratelimit-*` headers of its answer.
    pub(crate) quotas: Quotas,
    /// A guardrail changed the request (its captured content is the changed one).
    pub(crate) redacted: bool,
}

impl Policies {
    pub(crate) fn new(settings: &ProxySettings, control: Arc<ControlPlane>) -> Self {
        Self {
            control,
            clients: std::sync::RwLock::new(Arc::new(ClientRegistry::new(
                settings.clients.clone(),
                settings.fingerprinter.clone(),
            ))),
            chain: settings.chain.clone(),
            limiter: Limiter::new(settings.rate_limits.clone()),
            rules: settings.router_rules.clone(),
            rule_reasons: settings
                .router_rules
                .iter()
                .enumerate()
                .map(|(index, rule)| {
                    format!("rule {index} ({}): target {}", rule.describe(), rule.target)
                })
                .collect(),
            breakers: Breakers::new(&settings.targets),
            budgets: Budgets::new(settings.budgets.clone()),
            pii: settings.guardrails.pii.map(pii::PiiPolicy::new),
            injection: settings
                .guardrails
                .injection
                .map(injection::InjectionPolicy::new),
            content: settings.guardrails.content.map(content::ContentPolicy::new),
        }
    }

    fn clients(&self) -> Arc<ClientRegistry> {
        Arc::clone(&self.clients.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Whether every caller is let through (no clients configured).
    pub(crate) fn is_open(&self) -> bool {
        self.clients().is_open()
    }

    /// Replaces the clients (their keys, labels and allowed targets) for the calls from now
    /// on. Refused when it would turn a proxy with clients into an open one.
    pub(crate) fn reload_clients(
        &self,
        clients: Vec<crate::config::ClientKey>,
        fingerprinter: crate::fingerprint::Fingerprinter,
    ) -> Result<usize, String> {
        if clients.is_empty() && !self.is_open() {
            return Err(
                "the new config has no [[proxy.clients]]: reloading would open the proxy to \
                 everyone; restart it to do that"
                    .to_owned(),
            );
        }
        let count = clients.len();
        let registry = Arc::new(ClientRegistry::new(clients, fingerprinter));
        *self.clients.write().unwrap_or_else(|p| p.into_inner()) = registry;
        Ok(count)
    }

    /// Member `auth`: authenticates `key` and records the decision on the call; a rejected
    /// caller goes no further.
    pub(crate) fn authenticate(
        &self,
        call: &mut CallAudit,
        key: Option<&str>,
    ) -> Result<AuthOutcome, ProxyError> {
        let mut outcome = self
            .clients()
            .authenticate_key_at(key, Utc::now(), |digest| {
                let added = self.control.added_key(digest)?;
                Some((added.client, added.not_after))
            });
        if let AuthOutcome::Authenticated { client, token_id } = &outcome
            && self
                .control
                .revoked(Some(&token_id.0), Some(&client.name))
                .is_some()
        {
            outcome = AuthOutcome::Rejected {
                token_id: Some(token_id.clone()),
                reason: RejectReason::Revoked,
            };
        }
        call.authenticated(&outcome);
        match outcome {
            AuthOutcome::Rejected { reason, .. } => Err(match reason {
                RejectReason::Missing => ProxyError::MissingApiKey,
                RejectReason::Unknown => ProxyError::InvalidApiKey,
                RejectReason::Expired => ProxyError::ExpiredApiKey,
                RejectReason::Revoked => ProxyError::RevokedApiKey,
            }),
            admitted => Ok(admitted),
        }
    }

    /// The members after `auth`, in the chain's order, for an authenticated `caller` asking
    /// for `requested` with a call of about `estimate` tokens: returns the target that
    /// serves the call, recorded on it. A token reservation is held by the call, and
    /// settled on its usage when it ends.
    pub(crate) fn admit<'t>(
        &self,
        call: &mut CallAudit,
        caller: &AuthOutcome,
        requested: Requested<'_>,
        estimate: &TokenEstimate,
        targets: &'t [Target],
        mut content: Option<&mut serde_json::Map<String, serde_json::Value>>,
    ) -> Result<Admission<'t>, ProxyError> {
        let mut target = None;
        let mut quotas = Quotas::default();
        let mut redacted = false;
        // The injection and content members read the same texts: normalized once.
        let mut normalized = crate::guard::normalize::NormalizedTexts::default();
        for member in &self.chain {
            match member {
                ChainMember::Injection | ChainMember::Pii | ChainMember::Content => {
                    let Some(request) = content.as_deref_mut() else {
                        continue;
                    };
                    // A client's own settings, else its target's (once routed), else the chain's.
                    let client = caller.client_name();
                    let target_id = target.map(|target: &Target| target.id.as_str());
                    match member {
                        ChainMember::Injection => {
                            if let Some(policy) = self.injection.for_call(client, target_id) {
                                guarded(call, "injection", policy.fail_closed, (), |call| {
                                    policy.guard_request(call, request, &mut normalized)
                                })?;
                            }
                        }
                        ChainMember::Pii => {
                            if let Some(policy) = self.pii.for_call(client, target_id) {
                                redacted |=
                                    guarded(call, "pii", policy.fail_closed, false, |call| {
                                        policy.guard_request(call, request)
                                    })?;
                            }
                        }
                        _ => {
                            if let Some(policy) = self.content.for_call(client, target_id) {
                                guarded(call, "content", policy.fail_closed, (), |call| {
                                    policy.guard_request(call, request, &mut normalized)
                                })?;
                            }
                        }
                    }
                }
                ChainMember::Router => {
                    let routed = self.route(call, caller, requested, targets)?;
                    check_access(call, caller, routed)?;
                    call.routed(routed);
                    target = Some(routed);
                }
                ChainMember::RateLimit => {
                    let emergency = self.control.has_emergency_limits();
                    if self.limiter.is_empty() && !emergency {
                        continue;
                    }
                    let client = &call.client;
                    let subjects = CallSubjects {
                        client: caller.client_name(),
                        token: client.token_id.as_ref().map(|id| id.0.as_str()),
                        ip: client.ip.as_deref(),
                        target: target.map(|target: &Target| target.id.as_str()),
                        environment: call.environment(),
                    };
                    let throttled = if emergency {
                        self.control
                            .admit(&subjects, client.country.as_deref(), estimate)
                            .err()
                            .map(|throttled| (throttled, true))
                    } else {
                        None
                    };
                    let outcome = match throttled {
                        Some(throttled) => Err(throttled),
                        None if self.limiter.is_empty() => Ok(None),
                        None => match self.limiter.admit(&subjects, estimate) {
                            Ok(grant) => Ok(Some(grant)),
                            Err(throttled) => Err((throttled, false)),
                        },
                    };
                    match outcome {
                        Ok(Some(grant)) => {
                            quotas = grant.quotas;
                            call.token_hold = grant.tokens;
                        }
                        Ok(None) => {}
                        Err((throttled, emergency)) => {
                            call.decided("rate_limit", "throttle", Some(&throttled.reason));
                            return Err(ProxyError::RateLimited {
                                reason: throttled.reason,
                                retry_after: throttled.retry_after,
                                quotas: throttled.quotas,
                                emergency,
                            });
                        }
                    }
                }
                ChainMember::Budget if !self.budgets.is_empty() => {
                    let client = caller.client();
                    let labels = BudgetLabels {
                        client: client.map(|c| c.name.as_str()),
                        team: client.and_then(|c| c.team.as_deref()),
                        department: client.and_then(|c| c.department.as_deref()),
                    };
                    let estimate_usd = target
                        .and_then(|target: &Target| target.pricing)
                        .map_or(0.0, |pricing| {
                            pricing.cost_usd(estimate.prompt, estimate.output(), 0.0)
                        });
                    match self
                        .budgets
                        .admit(&labels, estimate_usd, chrono::Utc::now())
                    {
                        Ok(grant) => {
                            for alert in &grant.alerts {
                                call.decided("budget", "alert", Some(alert));
                            }
                            call.budget_hold = grant.hold;
                        }
                        Err(over) => {
                            call.decided("budget", "deny", Some(&over.reason));
                            return Err(ProxyError::InsufficientQuota(over.reason));
                        }
                    }
                }
                ChainMember::Budget => {}
            }
        }
        let target = target
            .ok_or_else(|| ProxyError::Internal("the policy chain has no router".to_owned()))?;
        let mut candidates = vec![target];
        // Pass-through names its target and path: no fallback to another.
        if matches!(requested, Requested::Model { .. }) {
            let fallbacks = target
                .fallback
                .iter()
                .filter_map(|id| targets.iter().find(|other| other.id == *id))
                .filter(|fallback| caller.client().is_none_or(|c| c.may_call(&fallback.id)));
            candidates.extend(fallbacks);
        }
        Ok(Admission {
            candidates,
            quotas,
            redacted,
        })
    }

    /// Member `router`: the target serving `requested`. An OpenAI call goes to the target
    /// of the first rule that matches it (a `route` decision says which), else to the one
    /// serving its `model`; the call's `model` stays what the client named. A pass-through
    /// call goes to the target its path names; its `model` is that target's public name.
    fn route<'t>(
        &self,
        call: &mut CallAudit,
        caller: &AuthOutcome,
        requested: Requested<'_>,
        targets: &'t [Target],
    ) -> Result<&'t Target, ProxyError> {
        let Requested::Model { model, headers } = requested else {
            return route(call, requested, targets);
        };
        let role = caller.client().and_then(|client| client.role.as_deref());
        let environment = call.environment();
        let matched = self.rules.iter().enumerate().find(|(_, rule)| {
            rule.default
                || (rule
                    .when_role
                    .as_deref()
                    .is_none_or(|wanted| role == Some(wanted))
                    && rule
                        .when_environment
                        .as_deref()
                        .is_none_or(|wanted| environment == Some(wanted))
                    && rule
                        .when_model
                        .as_deref()
                        .is_none_or(|wanted| wanted == model)
                    && rule.when_header.as_ref().is_none_or(|(name, value)| {
                        headers
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .is_some_and(|v| v == value)
                    }))
        });
        let Some((index, rule)) = matched else {
            return route(call, requested, targets);
        };
        call.route.model = Some(model.to_owned());
        let target = targets
            .iter()
            .find(|target| target.id == rule.target)
            .ok_or_else(|| ProxyError::Internal(format!("rule target {:?}", rule.target)))?;
        call.routed_by_rule(&self.rule_reasons[index]);
        Ok(target)
    }
}

/// Member `router`: the target serving `requested`. The call's `model` is what the client
/// named (an OpenAI call), or the target's public name (pass-through).
fn route<'t>(
    call: &mut CallAudit,
    requested: Requested<'_>,
    targets: &'t [Target],
) -> Result<&'t Target, ProxyError> {
    match requested {
        Requested::Model { model, .. } => {
            call.route.model = Some(model.to_owned());
            targets
                .iter()
                .find(|target| target.serves(model))
                .ok_or_else(|| ProxyError::UnknownModel(model.to_owned()))
        }
        Requested::Target(id) => {
            let target = targets
                .iter()
                .find(|target| target.id == id)
                .ok_or_else(|| ProxyError::UnknownModel(id.to_owned()))?;
            call.route.model = Some(target.public_name().to_owned());
            Ok(target)
        }
    }
}

/// Runs guardrail `policy` on the call, honouring its `on_error`: when the guardrail itself
/// fails (a bug: it panicked), the call gets a 500 `guardrail_error` under `block` (the
/// default: a broken guardrail never silently lets data through), or goes on unchecked
/// under `allow` (`unchecked` stands for what the guardrail would have said) — either way
/// with an `error` decision.
fn guarded<T>(
    call: &mut CallAudit,
    policy: &'static str,
    fail_closed: bool,
    unchecked: T,
    run: impl FnOnce(&mut CallAudit) -> Result<T, ProxyError>,
) -> Result<T, ProxyError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(call))) {
        Ok(outcome) => outcome,
        Err(_) if fail_closed => {
            tracing::error!(
                policy,
                "a guardrail failed: the call is refused (on_error = block)"
            );
            call.decided(
                policy,
                "error",
                Some("the guardrail failed; on_error = block"),
            );
            Err(ProxyError::GuardrailFailed(policy))
        }
        Err(_) => {
            tracing::error!(
                policy,
                "a guardrail failed: the call goes on unchecked (on_error = allow)"
            );
            call.decided(
                policy,
                "error",
                Some("the guardrail failed; on_error = allow: the call went on unchecked"),
            );
            Ok(unchecked)
        }
    }
}

/// Member `target_access`: a client restricted to some targets gets a 403 (and a
/// `target_access` decision) for any other.
fn check_access(
    call: &mut CallAudit,
    caller: &AuthOutcome,
    target: &Target,
) -> Result<(), ProxyError> {
    match caller.client() {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn call() -> CallAudit {
        let (emitter, _events) =
            warden_ingest::event_channel(16, warden_ingest::OnSpoolFull::Block);
        CallAudit::start(
            emitter.clone(),
            Arc::new(crate::metrics::ProxyMetrics::new(emitter)),
            "test",
            None,
            "/v1/chat/completions",
            crate::client_address::ClientAddress {
                ip: None,
                country: None,
            },
            &HeaderMap::new(),
        )
    }

    #[test]
    fn a_failing_guardrail_blocks_under_block_and_lets_through_under_allow() {
        let panicking = |_: &mut CallAudit| -> Result<bool, ProxyError> {
            panic!("a guardrail bug");
        };
        let mut audit = call();
        let refused = guarded(&mut audit, "pii", true, false, panicking);
        assert!(matches!(refused, Err(ProxyError::GuardrailFailed("pii"))));
        let mut audit = call();
        let allowed = guarded(&mut audit, "pii", false, false, panicking);
        assert!(matches!(allowed, Ok(false)));
        // A guardrail that works answers for itself.
        let mut audit = call();
        let outcome = guarded(&mut audit, "pii", true, false, |_| Ok(true));
        assert!(matches!(outcome, Ok(true)));
    }
}
