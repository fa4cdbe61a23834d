//! `key_expiry` (warning, seed 000: "90-day keys, 30-day warnings"): a client key within
//! `warn_days` of its `not_after` (`[[proxy.clients]] keys = [{ key_sha256, not_after }]`),
//! one alert per key, resolved once the key has expired or is gone from the config. Keys
//! given through the control topic (`add_key` with an `expires_at`) are watched as well,
//! from the action on, until a `remove_key` takes them back.
//!
//! A key's expiry is a fact of the calendar, not of traffic: it is judged at closed
//! evaluations that are live (within [`LIVE`] of the wall clock), never while a worker
//! rebuilds its state from past events or in a replay, so a warning first due during a
//! rebuild is not held back as if it had been published. The alert's cooldown outlasts the
//! warning period: published once per key and run (a restarted worker tells it again).

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use warden_ingest::action::{ActionKind, ControlAction};
use warden_ingest::alert::{Alert, Severity, Subject};
use warden_ingest::event_row::EventRow;

use crate::detector::{Detector, SectionCheck};
use crate::engine::Evaluation;

/// How close to the wall clock an evaluation must be to count as live.
pub const LIVE: TimeDelta = TimeDelta::minutes(10);

/// `[detect.key_expiry]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeyExpiryConfig {
    pub enabled: bool,
    /// How long before a key's `not_after` the warning is raised, in days.
    pub warn_days: i64,
}

impl Default for KeyExpiryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            warn_days: 30,
        }
    }
}

impl KeyExpiryConfig {
    pub fn validate(&self) -> Vec<String> {
        let mut check = SectionCheck::new("detect.key_expiry");
        check.require(
            (1..=365).contains(&self.warn_days),
            "warn_days",
            "must be between 1 and 365",
        );
        check.finish()
    }
}

/// A client key with an expiry, as the proxy's config names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiringKey {
    pub client: String,
    pub not_after: DateTime<Utc>,
}

/// The detector.
#[derive(Debug, Clone)]
pub struct KeyExpiry {
    config: KeyExpiryConfig,
    /// The configured keys.
    keys: Vec<ExpiringKey>,
    /// The keys `add_key` gave, by their SHA-256.
    added: BTreeMap<String, ExpiringKey>,
}

impl KeyExpiry {
    pub fn new(config: KeyExpiryConfig, keys: Vec<ExpiringKey>) -> Self {
        Self {
            config,
            keys,
            added: BTreeMap::new(),
        }
    }

    /// The warnings due at `at`.
    fn judge(&self, at: DateTime<Utc>) -> Vec<Alert> {
        let warn = TimeDelta::days(self.config.warn_days);
        self.keys
            .iter()
            .chain(self.added.values())
            .filter(|key| at <= key.not_after && key.not_after - at <= warn)
            .map(|key| {
                let subject = Subject::Client(key.client.clone());
                let mut alert =
                    Alert::firing("key_expiry", Severity::Warning, subject.clone(), (at, at));
                let day = key.not_after.format("%Y-%m-%d");
                // One alert per key: a client's keys expire on different days.
                alert.dedup_key = format!("{}@{day}", alert.dedup_key);
                let left = (key.not_after - at).num_hours() as f64 / 24.0;
                alert.observed = (left * 10.0).floor() / 10.0;
                alert.threshold = self.config.warn_days as f64;
                alert.unit = "days".to_owned();
                alert.summary = format!(
                    "a key of client {} expires on {day} ({:.0} days left): make its \
                     successor (`warden keys new {}`), add it beside the old one, roll it out",
                    key.client, left, key.client
                );
                alert
            })
            .collect()
    }
}

impl Detector for KeyExpiry {
    fn observe(&mut self, _event: &EventRow<'_>) {}

    fn evaluate(&mut self, evaluation: Evaluation) -> Vec<Alert> {
        if !evaluation.closed || (Utc::now() - evaluation.at).abs() > LIVE {
            return Vec::new();
        }
        self.judge(evaluation.at)
    }

    fn control(&mut self, action: &ControlAction) {
        let (Subject::Client(client), Some(digest)) = (&action.subject, &action.key_sha256) else {
            return;
        };
        match (action.action, action.expires_at) {
            (ActionKind::AddKey, Some(not_after)) => {
                let key = ExpiringKey {
                    client: client.clone(),
                    not_after,
                };
                self.added.insert(digest.clone(), key);
            }
            (ActionKind::AddKey | ActionKind::RemoveKey, _) => {
                self.added.remove(digest);
            }
            _ => {}
        }
    }

    /// Longer than any warning period: once per key.
    fn cooldown(&self) -> TimeDelta {
        TimeDelta::days(self.config.warn_days + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buckets::bucket_of;

    fn key(client: &str, not_after: DateTime<Utc>) -> ExpiringKey {
        ExpiringKey {
            client: client.to_owned(),
            not_after,
        }
    }

    fn closed_now() -> Evaluation {
        let now = Utc::now();
        Evaluation {
            end: bucket_of(now),
            closed: true,
            at: now,
        }
    }

    #[test]
    fn a_key_within_its_warning_period_is_reported_once_per_key() {
        let now = Utc::now();
        let mut detector = KeyExpiry::new(
            KeyExpiryConfig::default(),
            vec![
                key("app", now + TimeDelta::days(10)),
                key("app", now + TimeDelta::days(20)),
                key("later", now + TimeDelta::days(45)),
                key("gone", now - TimeDelta::days(1)),
            ],
        );
        let alerts = detector.evaluate(closed_now());
        assert_eq!(alerts.len(), 2, "{alerts:?}");
        assert!(alerts.iter().all(|a| a.detector == "key_expiry"));
        assert_ne!(alerts[0].dedup_key, alerts[1].dedup_key);
        assert!(alerts[0].dedup_key.starts_with("key_expiry/client:app@"));
        assert!(alerts[0].summary.contains("warden keys new app"));
        assert!((9.0..=10.0).contains(&alerts[0].observed));
    }

    #[test]
    fn a_key_given_through_the_control_topic_is_watched_until_taken_back() {
        let now = Utc::now();
        let mut detector = KeyExpiry::new(KeyExpiryConfig::default(), Vec::new());
        let mut add = ControlAction::new(
            ActionKind::AddKey,
            Subject::Client("app".into()),
            "rotation",
            "operator:test",
        );
        add.key_sha256 = Some("ab".repeat(32));
        add.expires_at = Some(now + TimeDelta::days(5));
        detector.control(&add);
        let alerts = detector.evaluate(closed_now());
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        assert!(alerts[0].dedup_key.starts_with("key_expiry/client:app@"));
        let mut remove = add.clone();
        remove.action = ActionKind::RemoveKey;
        remove.expires_at = None;
        detector.control(&remove);
        assert!(detector.evaluate(closed_now()).is_empty());
    }

    #[test]
    fn nothing_is_judged_away_from_the_wall_clock_or_early() {
        let now = Utc::now();
        let mut detector = KeyExpiry::new(
            KeyExpiryConfig::default(),
            vec![key("app", now + TimeDelta::days(3))],
        );
        let past = now - TimeDelta::hours(1);
        let rebuilding = Evaluation {
            end: bucket_of(past),
            closed: true,
            at: past,
        };
        assert!(detector.evaluate(rebuilding).is_empty());
        let early = Evaluation {
            closed: false,
            ..closed_now()
        };
        assert!(detector.evaluate(early).is_empty());
        assert_eq!(detector.evaluate(closed_now()).len(), 1);
    }
}
