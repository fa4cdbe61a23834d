//! The live state the control topic (`warden.control`) sets: revoked tokens and clients,
//! emergency rate limits, disabled targets. Every proxy replica folds the topic's actions
//! into one [`ControlState`] in order (the later action on a piece of state wins, as the
//! compacted topic keeps it), and `warden control list` does the same to print what is in
//! force.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::action::{ActionKind, ControlAction};
use crate::alert::Subject;

/// What the control actions seen so far put in force, by [`ControlAction::state_key`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ControlState {
    /// The standing action of each piece of state (`revoke_token`, `emergency_rate_limit`,
    /// `disable_target`); an undoing action removes the entry.
    standing: BTreeMap<String, ControlAction>,
}

impl ControlState {
    /// Folds `action` in. Returns whether anything changed.
    pub fn apply(&mut self, action: &ControlAction) -> bool {
        let key = action.state_key();
        match action.action {
            ActionKind::AddKey if !is_key_digest(action) => false,
            ActionKind::RevokeToken
            | ActionKind::EmergencyRateLimit
            | ActionKind::DisableTarget
            | ActionKind::AddKey => {
                let previous = self.standing.insert(key, action.clone());
                previous.as_ref() != Some(action)
            }
            ActionKind::RestoreToken
            | ActionKind::LiftRateLimit
            | ActionKind::EnableTarget
            | ActionKind::RemoveKey => self.standing.remove(&key).is_some(),
            // Carried out against the endpoint, not by the proxy.
            ActionKind::FreezeAutoscaling | ActionKind::ScaleDown | ActionKind::RestoreScaling => {
                false
            }
        }
    }

    /// Every standing action still in force at `now`, in key order.
    pub fn in_force(&self, now: DateTime<Utc>) -> impl Iterator<Item = &ControlAction> {
        self.standing
            .values()
            .filter(move |action| action.is_in_force(now))
    }

    /// Whether a token (by id) or its client is revoked.
    pub fn is_revoked(
        &self,
        token_id: Option<&str>,
        client: Option<&str>,
    ) -> Option<&ControlAction> {
        let revoked = |subject: Subject| {
            self.standing
                .get(&format!("access/{subject}"))
                .filter(|action| action.action == ActionKind::RevokeToken)
        };
        token_id
            .and_then(|token| revoked(Subject::Token(token.to_owned())))
            .or_else(|| client.and_then(|client| revoked(Subject::Client(client.to_owned()))))
    }

    /// Whether `target` is disabled.
    pub fn is_disabled(&self, target: &str) -> Option<&ControlAction> {
        if self.standing.is_empty() {
            return None;
        }
        self.standing
            .get(&format!("target/{}", Subject::Target(target.to_owned())))
            .filter(|action| action.action == ActionKind::DisableTarget)
    }

    /// The emergency limits in force at `now`.
    pub fn emergency_limits(&self, now: DateTime<Utc>) -> impl Iterator<Item = &ControlAction> {
        self.in_force(now)
            .filter(|action| action.action == ActionKind::EmergencyRateLimit)
    }

    /// The keys `add_key` gave, expired ones included (a key past its `expires_at` is
    /// refused as expired, not as unknown): (client, SHA-256, valid until).
    pub fn added_keys(&self) -> impl Iterator<Item = AddedKey<'_>> {
        self.standing.values().filter_map(|action| {
            let (ActionKind::AddKey, Subject::Client(client), Some(digest)) =
                (action.action, &action.subject, &action.key_sha256)
            else {
                return None;
            };
            let mut sha256 = [0u8; 32];
            hex::decode_to_slice(digest, &mut sha256).ok()?;
            Some(AddedKey {
                client,
                sha256,
                not_after: action.expires_at,
            })
        })
    }

    /// The standing actions (in force or expired), to keep on disk.
    pub fn standing(&self) -> impl Iterator<Item = &ControlAction> {
        self.standing.values()
    }
}

/// A key given to a client through the control topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddedKey<'a> {
    pub client: &'a str,
    pub sha256: [u8; 32],
    pub not_after: Option<DateTime<Utc>>,
}

/// Whether an `add_key` names its client and a SHA-256 (64 hex digits); any other is
/// ignored, as no proxy could use it.
fn is_key_digest(action: &ControlAction) -> bool {
    matches!(action.subject, Subject::Client(_))
        && action.key_sha256.as_deref().is_some_and(|digest| {
            digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit())
        })
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;

    fn action(kind: ActionKind, subject: Subject) -> ControlAction {
        ControlAction::new(kind, subject, "test", "operator:test")
    }

    #[test]
    fn the_later_action_on_a_piece_of_state_wins() {
        let mut state = ControlState::default();
        let token = Subject::Token("tok_1".into());
        assert!(state.apply(&action(ActionKind::RevokeToken, token.clone())));
        assert!(state.is_revoked(Some("tok_1"), None).is_some());
        assert!(state.is_revoked(Some("tok_2"), Some("app")).is_none());
        assert!(state.apply(&action(ActionKind::RestoreToken, token)));
        assert!(state.is_revoked(Some("tok_1"), None).is_none());
        assert!(!state.apply(&action(
            ActionKind::RestoreToken,
            Subject::Client("x".into())
        )));

        state.apply(&action(
            ActionKind::RevokeToken,
            Subject::Client("app".into()),
        ));
        assert!(
            state.is_revoked(Some("tok_9"), Some("app")).is_some(),
            "every key of it"
        );

        state.apply(&action(
            ActionKind::DisableTarget,
            Subject::Target("llama".into()),
        ));
        assert!(state.is_disabled("llama").is_some());
        state.apply(&action(
            ActionKind::EnableTarget,
            Subject::Target("llama".into()),
        ));
        assert!(state.is_disabled("llama").is_none());
    }

    #[test]
    fn added_keys_stand_per_digest_until_removed() {
        let mut state = ControlState::default();
        let give = |digest: &str| {
            let mut add = action(ActionKind::AddKey, Subject::Client("app".into()));
            add.key_sha256 = Some(digest.to_owned());
            add
        };
        let (first, second) = ("ab".repeat(32), "cd".repeat(32));
        assert!(state.apply(&give(&first)));
        assert!(state.apply(&give(&second)), "a second key beside the first");
        assert!(
            !state.apply(&give("not-hex")),
            "a malformed digest is ignored"
        );
        let mut for_a_token = give(&first);
        for_a_token.subject = Subject::Token("tok_1".into());
        assert!(!state.apply(&for_a_token), "keys belong to clients");
        assert_eq!(state.added_keys().count(), 2);
        let mut remove = give(&first);
        remove.action = ActionKind::RemoveKey;
        assert!(state.apply(&remove));
        let left: Vec<_> = state.added_keys().collect();
        assert_eq!(left.len(), 1);
        assert_eq!((left[0].client, left[0].sha256), ("app", [0xcd; 32]));
    }

    #[test]
    fn emergency_limits_apply_until_they_expire_or_are_lifted() {
        let mut state = ControlState::default();
        let mut limit = action(
            ActionKind::EmergencyRateLimit,
            Subject::Client("app".into()),
        );
        limit.limit_per_minute = Some(10);
        limit.expires_at = Some(limit.ts + TimeDelta::minutes(30));
        let now = limit.ts;
        state.apply(&limit);
        assert_eq!(state.emergency_limits(now).count(), 1);
        assert_eq!(state.emergency_limits(now + TimeDelta::hours(1)).count(), 0);
        state.apply(&action(
            ActionKind::LiftRateLimit,
            Subject::Client("app".into()),
        ));
        assert_eq!(state.emergency_limits(now).count(), 0);
    }
}
