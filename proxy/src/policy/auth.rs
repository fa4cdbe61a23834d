//! Client authentication: `Authorization: Bearer <key>` against the configured key hashes.
//!
//! A client may hold several keys (rotation with overlap), each valid until its `not_after`:
//! a key past it is refused as `expired_api_key`, told apart from an unknown one.
//!
//! Keys are never stored or logged: the config holds their SHA-256, the comparison is
//! constant-time over every configured client, and events carry only a [`TokenId`]: a keyed
//! fingerprint ([`crate::fingerprint`]), also for rejected keys, so detectors can see token
//! stuffing without ever seeing a key, and nobody can confirm a guessed key from the archive.

use std::sync::Arc;

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use warden_ingest::TokenId;

use chrono::{DateTime, Utc};

use crate::config::ClientKey;
#[cfg(test)]
use crate::config::KeyDigest;
use crate::fingerprint::Fingerprinter;

/// The outcome of authenticating one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome {
    /// No clients are configured: everyone is let through.
    Open { token_id: Option<TokenId> },
    Authenticated {
        client: Arc<ClientKey>,
        token_id: TokenId,
    },
    Rejected {
        token_id: Option<TokenId>,
        reason: RejectReason,
    },
}

/// Why a request was not authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// No key was presented.
    Missing,
    /// The key is no client's.
    Unknown,
    /// A client's key past its `not_after`.
    Expired,
    /// Revoked through the control topic (the token, or its whole client).
    Revoked,
}

impl RejectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "missing_api_key",
            Self::Unknown => "invalid_api_key",
            Self::Expired => "expired_api_key",
            Self::Revoked => "revoked_api_key",
        }
    }
}

impl AuthOutcome {
    pub fn token_id(&self) -> Option<&TokenId> {
        match self {
            Self::Open { token_id } | Self::Rejected { token_id, .. } => token_id.as_ref(),
            Self::Authenticated { token_id, .. } => Some(token_id),
        }
    }

    /// The configured client, when one authenticated.
    pub fn client(&self) -> Option<&ClientKey> {
        match self {
            Self::Authenticated { client, .. } => Some(client),
            _ => None,
        }
    }

    pub fn client_name(&self) -> Option<&str> {
        self.client().map(|client| client.name.as_str())
    }
}

/// The configured clients.
#[derive(Debug, Clone)]
pub struct ClientRegistry {
    clients: Vec<Arc<ClientKey>>,
    fingerprinter: Fingerprinter,
}

impl ClientRegistry {
    pub fn new(clients: Vec<ClientKey>, fingerprinter: Fingerprinter) -> Self {
        Self {
            clients: clients.into_iter().map(Arc::new).collect(),
            fingerprinter,
        }
    }

    pub fn is_open(&self) -> bool {
        self.clients.is_empty()
    }

    /// Authenticates `Authorization: Bearer <key>`.
    #[cfg(test)]
    pub fn authenticate(&self, headers: &HeaderMap) -> AuthOutcome {
        self.authenticate_key(bearer_key(headers))
    }

    /// Authenticates a key presented some other way (pass-through's `X-Warden-Key`), now,
    /// against the configured keys only.
    #[cfg(test)]
    pub fn authenticate_key(&self, key: Option<&str>) -> AuthOutcome {
        self.authenticate_key_at(key, Utc::now(), |_| None)
    }

    /// Authenticates `key` as of `now` (keys past their `not_after` are refused). A key no
    /// configured client holds is looked up in `added` (keys given through the control
    /// topic: the client's name and the key's `not_after`); it authenticates as that
    /// configured client.
    pub fn authenticate_key_at(
        &self,
        key: Option<&str>,
        now: DateTime<Utc>,
        added: impl FnOnce(&[u8; 32]) -> Option<(String, Option<DateTime<Utc>>)>,
    ) -> AuthOutcome {
        let token_id = key.map(|key| self.fingerprinter.token_id(key));
        if self.is_open() {
            return AuthOutcome::Open { token_id };
        }
        let (Some(key), Some(token_id)) = (key, token_id) else {
            return AuthOutcome::Rejected {
                token_id: None,
                reason: RejectReason::Missing,
            };
        };
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        // Compare against every key of every client, without early exit, in constant time
        // per compare.
        let mut matched: Option<(&Arc<ClientKey>, Option<DateTime<Utc>>)> = None;
        for client in &self.clients {
            for key in &client.keys {
                if bool::from(key.sha256.ct_eq(digest.as_slice())) {
                    matched = Some((client, key.not_after));
                }
            }
        }
        if matched.is_none()
            && let Some((name, not_after)) = added(&digest)
        {
            // The key is already known valid for someone: only which client is left to find.
            matched = self
                .clients
                .iter()
                .find(|client| client.name == name)
                .map(|client| (client, not_after));
        }
        match matched {
            Some((_, not_after)) if not_after.is_some_and(|last| now > last) => {
                AuthOutcome::Rejected {
                    token_id: Some(token_id),
                    reason: RejectReason::Expired,
                }
            }
            Some((client, _)) => AuthOutcome::Authenticated {
                client: Arc::clone(client),
                token_id,
            },
            None => AuthOutcome::Rejected {
                token_id: Some(token_id),
                reason: RejectReason::Unknown,
            },
        }
    }
}

pub(crate) fn bearer_key(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, key) = value.trim().split_once(' ')?;
    let key = key.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !key.is_empty()).then_some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> ClientRegistry {
        ClientRegistry::new(
            vec![ClientKey {
                name: "app".into(),
                keys: vec![
                    KeyDigest {
                        sha256: Sha256::digest(b"sk-right").into(),
                        not_after: None,
                    },
                    KeyDigest {
                        sha256: Sha256::digest(b"sk-old").into(),
                        not_after: Some(expiry()),
                    },
                ],
                role: None,
                team: None,
                department: None,
                environment: None,
                allowed_targets: Vec::new(),
                owner_receiver: None,
                critical: false,
            }],
            Fingerprinter::ephemeral(),
        )
    }

    fn expiry() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2027-03-01T23:59:59Z")
            .expect("instant")
            .with_timezone(&Utc)
    }

    #[test]
    fn a_rotated_key_works_until_its_not_after_then_is_expired_not_unknown() {
        let registry = registry();
        let before = expiry() - chrono::TimeDelta::seconds(1);
        let after = expiry() + chrono::TimeDelta::seconds(1);
        let old = registry.authenticate_key_at(Some("sk-old"), before, |_| None);
        assert_eq!(old.client_name(), Some("app"));
        let expired = registry.authenticate_key_at(Some("sk-old"), after, |_| None);
        assert!(matches!(
            expired,
            AuthOutcome::Rejected {
                reason: RejectReason::Expired,
                ..
            }
        ));
        assert_eq!(
            expired.token_id(),
            old.token_id(),
            "the same key, the same id"
        );
        let current = registry.authenticate_key_at(Some("sk-right"), after, |_| None);
        assert_eq!(current.client_name(), Some("app"));
        assert_ne!(current.token_id(), old.token_id());
    }

    fn headers(authorization: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, authorization.parse().expect("header"));
        headers
    }

    #[test]
    fn right_key_authenticates_and_wrong_key_is_fingerprinted() {
        let registry = registry();
        let right = registry.authenticate(&headers("Bearer sk-right"));
        assert_eq!(right.client_name(), Some("app"));
        let wrong = registry.authenticate(&headers("bearer sk-wrong"));
        assert!(matches!(
            wrong,
            AuthOutcome::Rejected {
                reason: RejectReason::Unknown,
                ..
            }
        ));
        let (right_id, wrong_id) = (right.token_id().expect("id"), wrong.token_id().expect("id"));
        assert_ne!(right_id, wrong_id);
        assert!(right_id.0.starts_with("tok_") && right_id.0.len() == 20);
        assert!(!right_id.0.contains("sk-right"));
    }

    #[test]
    fn missing_or_malformed_header_is_rejected() {
        let registry = registry();
        for value in ["", "Bearer", "Bearer   ", "Basic sk-right", "sk-right"] {
            let outcome = if value.is_empty() {
                registry.authenticate(&HeaderMap::new())
            } else {
                registry.authenticate(&headers(value))
            };
            assert!(
                matches!(
                    outcome,
                    AuthOutcome::Rejected {
                        reason: RejectReason::Missing,
                        ..
                    }
                ),
                "{value:?}: {outcome:?}"
            );
        }
    }

    #[test]
    fn a_key_given_through_the_control_topic_authenticates_as_its_configured_client() {
        let registry = registry();
        let given: [u8; 32] = Sha256::digest(b"sk-given").into();
        let lookup = |expiry: Option<DateTime<Utc>>, client: &'static str| {
            move |digest: &[u8; 32]| (*digest == given).then(|| (client.to_owned(), expiry))
        };
        let before = expiry() - chrono::TimeDelta::seconds(1);
        let now = registry.authenticate_key_at(Some("sk-given"), before, lookup(None, "app"));
        assert_eq!(now.client_name(), Some("app"));
        let expired = registry.authenticate_key_at(
            Some("sk-given"),
            expiry() + chrono::TimeDelta::seconds(1),
            lookup(Some(expiry()), "app"),
        );
        assert!(matches!(
            expired,
            AuthOutcome::Rejected {
                reason: RejectReason::Expired,
                ..
            }
        ));
        let unconfigured =
            registry.authenticate_key_at(Some("sk-given"), before, lookup(None, "nobody"));
        assert!(
            matches!(
                unconfigured,
                AuthOutcome::Rejected {
                    reason: RejectReason::Unknown,
                    ..
                }
            ),
            "a key for a client this proxy does not know is no key"
        );
    }

    #[test]
    fn open_mode_lets_everyone_through() {
        let registry = ClientRegistry::new(Vec::new(), Fingerprinter::ephemeral());
        assert!(matches!(
            registry.authenticate(&HeaderMap::new()),
            AuthOutcome::Open { token_id: None }
        ));
    }
}
