//! Admission: the policy chain every call passes before anything reaches an upstream.
//!
//! Every endpoint — the OpenAI ones and pass-through — is admitted the same way, in the same
//! order, by the members of the chain:
//!
//! 1. `auth` ([`Policies::authenticate`]): the caller's key against the configured clients.
//!    It runs before the call's body is read, so a caller without a valid key costs no body
//!    read (and, refused, never waits on the audit pipeline: see
//!    [`ProxyState::authenticate`](crate::state::ProxyState::authenticate)).
//! 2. The rest ([`Policies::admit`]), on what the call asks for:
//!    - `router`: which target serves it — the target an OpenAI call's `model` names, or
//!      the one a pass-through path names;
//!    - `target_access`: whether this client may use that target.
//!
//! Each member that decides records a `policy_decision` on the call (`auth` always does; the
//! others when they refuse). A refusal is a [`ProxyError`] with OpenAI's error shape.

pub(crate) mod auth;

use axum::http::HeaderMap;

use crate::audit::CallAudit;
use crate::config::{ProxySettings, Target};
use crate::error::ProxyError;
use auth::{AuthOutcome, ClientRegistry, RejectReason};

/// What a call asks to be served by.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Requested<'a> {
    /// An OpenAI call's `model`: the target serving that name.
    Model(&'a str),
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
    clients: ClientRegistry,
}

impl Policies {
    pub(crate) fn new(settings: &ProxySettings) -> Self {
        Self {
            clients: ClientRegistry::new(settings.clients.clone(), settings.fingerprinter.clone()),
        }
    }

    /// Whether every caller is let through (no clients configured).
    pub(crate) fn is_open(&self) -> bool {
        self.clients.is_open()
    }

    /// Member `auth`: authenticates `key` and records the decision on the call; a rejected
    /// caller goes no further.
    pub(crate) fn authenticate(
        &self,
        call: &mut CallAudit,
        key: Option<&str>,
    ) -> Result<AuthOutcome, ProxyError> {
        let outcome = self.clients.authenticate_key(key);
        call.authenticated(&outcome);
        match outcome {
            AuthOutcome::Rejected { reason, .. } => Err(match reason {
                RejectReason::MissingKey => ProxyError::MissingApiKey,
                RejectReason::UnknownKey => ProxyError::InvalidApiKey,
            }),
            admitted => Ok(admitted),
        }
    }

    /// The members after `auth`, for an authenticated `caller` asking for `requested`:
    /// returns the target that serves the call, recorded on it.
    pub(crate) fn admit<'t>(
        &self,
        call: &mut CallAudit,
        caller: &AuthOutcome,
        requested: Requested<'_>,
        targets: &'t [Target],
    ) -> Result<&'t Target, ProxyError> {
        let target = route(call, requested, targets)?;
        check_access(call, caller, target)?;
        call.routed(target);
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
        Requested::Model(model) => {
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
