//! Authentication failures (seed 000: "401s = brute force"; "token stuffing attacks attempt
//! brute force authentication"; after a compromise, "monitor for retry attempts with old
//! tokens"). Three findings, each its own detector name:
//!
//! - `auth_brute_force`: one IP failing authentication `brute_force_failures` times or more
//!   within the window (critical from `brute_force_critical_failures`);
//! - `token_stuffing` (critical): one IP trying `stuffing_distinct_tokens` or more different
//!   keys within the window;
//! - `revoked_token` (critical): any use of a revoked key, whether the proxy refused it or
//!   not. Revoked keys are those listed in `revoked_tokens` — by token id (`tok_…`), or by
//!   client name (`client:NAME`), which stays the same when the deployment's fingerprint
//!   secret changes: a named client's key is watched from the first event that shows it (any
//!   call it made) — any key revoked through `warden.control` (`warden control revoke`,
//!   the responder), and any key the proxy refuses with the reason `revoked_api_key`.
//!
//! Failures are the proxy's `policy_decision` events for policy `auth` with outcome `deny`:
//! one per refused call, carrying the caller's IP and the fingerprint of the key it tried.

use hashbrown::HashMap;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use warden_ingest::EventKind;
use warden_ingest::action::{ActionKind, ControlAction};
use warden_ingest::alert::{Alert, Severity, Subject};
use warden_ingest::event_row::EventRow;

use crate::buckets::{BucketCounts, bucket_of, bucket_start};
use crate::detector::{
    Detector, Holding, Judgement, RecentIds, SectionCheck, Standing, buckets_in, entry,
    named_sources,
};
use crate::engine::{Evaluation, Subjects};

/// Marks a `revoked_tokens` entry that names a client rather than a token id.
const CLIENT_PREFIX: &str = "client:";

/// The reason a proxy gives for refusing a revoked key.
pub const REVOKED_REASON: &str = "revoked_api_key";

/// `[detect.auth_failures]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthFailuresConfig {
    pub enabled: bool,
    /// Window length, in seconds (a multiple of 10).
    pub window_s: i64,
    pub brute_force_failures: u64,
    pub brute_force_critical_failures: u64,
    pub stuffing_distinct_tokens: usize,
    /// Keys that must not be used any more: token ids (`tok_…`) or client names
    /// (`client:NAME`).
    pub revoked_tokens: Vec<String>,
    pub cooldown_s: i64,
}

impl Default for AuthFailuresConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            window_s: 300,
            brute_force_failures: 20,
            brute_force_critical_failures: 100,
            stuffing_distinct_tokens: 10,
            revoked_tokens: Vec::new(),
            cooldown_s: 900,
        }
    }
}

impl AuthFailuresConfig {
    /// One message per problem, each naming its key.
    pub fn validate(&self) -> Vec<String> {
        let mut check = SectionCheck::new("detect.auth_failures");
        check.window("window_s", self.window_s);
        check.require(
            self.brute_force_failures > 0
                && self.brute_force_critical_failures >= self.brute_force_failures,
            "brute_force_failures",
            "must be positive and at most brute_force_critical_failures",
        );
        check.require(
            self.stuffing_distinct_tokens >= 2,
            "stuffing_distinct_tokens",
            "must be at least 2",
        );
        check.cooldown(self.cooldown_s);
        check.finish()
    }

    fn window_buckets(&self) -> i64 {
        buckets_in(self.window_s)
    }
}

/// The failures of one IP.
#[derive(Debug, Clone)]
struct Failures {
    counts: BucketCounts,
    /// Each key tried, with the last bucket it was tried in.
    tokens: HashMap<String, i64>,
    recent: RecentIds,
}

/// Uses of one revoked key.
#[derive(Debug, Clone)]
struct RevokedUse {
    counts: BucketCounts,
    ips: HashMap<String, i64>,
    recent: RecentIds,
}

/// The authentication-failure detector.
#[derive(Debug, Clone)]
pub struct AuthFailures {
    config: AuthFailuresConfig,
    /// Revoked token ids: listed, learnt from a revoked client's events, or refused as revoked.
    revoked: HashMap<String, DateTime<Utc>>,
    /// Clients listed by name in `revoked_tokens`, or revoked through `warden.control`.
    revoked_clients: HashMap<String, DateTime<Utc>>,
    /// Token ids learnt as revoked from a revoked client's events, by client: forgotten
    /// when the client is restored.
    learnt_from_client: HashMap<String, String>,
    by_ip: HashMap<String, Failures>,
    revoked_uses: HashMap<String, RevokedUse>,
    /// The subjects reported on: revoked keys' uses are followed only if tokens are among
    /// them, failures per IP only if IPs are.
    subjects: Subjects,
    holding: Holding,
}

impl AuthFailures {
    pub fn new(config: AuthFailuresConfig) -> Self {
        let (clients, tokens): (Vec<&String>, Vec<&String>) = config
            .revoked_tokens
            .iter()
            .partition(|entry| entry.starts_with(CLIENT_PREFIX));
        Self {
            // Listed in the config: revoked for all time.
            revoked: tokens
                .into_iter()
                .map(|token| (token.clone(), DateTime::<Utc>::MIN_UTC))
                .collect(),
            revoked_clients: clients
                .into_iter()
                .map(|entry| {
                    (
                        entry[CLIENT_PREFIX.len()..].to_owned(),
                        DateTime::<Utc>::MIN_UTC,
                    )
                })
                .collect(),
            config,
            by_ip: HashMap::new(),
            learnt_from_client: HashMap::new(),
            revoked_uses: HashMap::new(),
            subjects: Subjects::All,
            holding: Holding::default(),
        }
    }

    /// The brute-force and token-stuffing judgements of one IP.
    fn judge_ip(&self, ip: &str, failures: &Failures, evaluation: Evaluation) -> [Judgement; 2] {
        let (end, width) = (evaluation.end, self.config.window_buckets());
        let window = (bucket_start(end - width), evaluation.at);
        let count = failures.counts.sum(end - width, end);
        let tokens: Vec<&String> = failures
            .tokens
            .iter()
            .filter(|(_, last)| **last >= end - width)
            .map(|(token, _)| token)
            .collect();
        let hold = |detector: &str| {
            let subject = Subject::Ip(ip.to_owned());
            Judgement::Hold(Alert::firing(detector, Severity::Warning, subject, window))
        };
        let brute_force = match Standing::of(count as f64, self.config.brute_force_failures as f64)
        {
            Standing::Fires => {
                let severity = if count >= self.config.brute_force_critical_failures {
                    Severity::Critical
                } else {
                    Severity::Warning
                };
                let subject = Subject::Ip(ip.to_owned());
                let mut alert = Alert::firing("auth_brute_force", severity, subject, window);
                alert.observed = count as f64;
                alert.threshold = self.config.brute_force_failures as f64;
                alert.unit = "failed authentications".to_owned();
                alert.summary = format!(
                    "{count} failed authentications from {ip} in {}s ({} distinct keys)",
                    self.config.window_s,
                    tokens.len()
                );
                alert.evidence.sample_request_ids = failures.recent.to_vec();
                Judgement::Fire(alert)
            }
            Standing::Holds => hold("auth_brute_force"),
            Standing::Clear => Judgement::Clear,
        };
        let distinct = tokens.len() as f64;
        let stuffing = match Standing::of(distinct, self.config.stuffing_distinct_tokens as f64) {
            Standing::Holds => return [brute_force, hold("token_stuffing")],
            Standing::Clear => return [brute_force, Judgement::Clear],
            Standing::Fires => {
                let subject = Subject::Ip(ip.to_owned());
                let mut alert =
                    Alert::firing("token_stuffing", Severity::Critical, subject, window);
                alert.observed = tokens.len() as f64;
                alert.threshold = self.config.stuffing_distinct_tokens as f64;
                alert.unit = "distinct keys".to_owned();
                alert.summary = format!(
                    "{} different keys tried from {ip} in {}s",
                    tokens.len(),
                    self.config.window_s
                );
                alert.evidence.top_sources = named_sources(
                    tokens
                        .into_iter()
                        .map(|token| Subject::Token(token.clone())),
                );
                alert.evidence.sample_request_ids = failures.recent.to_vec();
                Judgement::Fire(alert)
            }
        };
        [brute_force, stuffing]
    }

    fn judge_revoked(
        &self,
        token: &str,
        uses: &RevokedUse,
        evaluation: Evaluation,
    ) -> Option<Alert> {
        let (end, width) = (evaluation.end, self.config.window_buckets());
        let count = uses.counts.sum(end - width, end);
        if count == 0 {
            return None;
        }
        let window = (bucket_start(end - width), evaluation.at);
        let subject = Subject::Token(token.to_owned());
        let mut alert = Alert::firing("revoked_token", Severity::Critical, subject, window);
        alert.observed = count as f64;
        alert.threshold = 1.0;
        alert.unit = "uses".to_owned();
        alert.summary = format!(
            "revoked key {token} used {count} times in {}s from {} IPs",
            self.config.window_s,
            uses.ips.len()
        );
        alert.evidence.top_sources =
            named_sources(uses.ips.keys().map(|ip| Subject::Ip(ip.clone())));
        alert.evidence.sample_request_ids = uses.recent.to_vec();
        alert.runbook = Some("token_compromise".to_owned());
        Some(alert)
    }
}

impl Detector for AuthFailures {
    fn control(&mut self, action: &ControlAction) {
        match (action.action, &action.subject) {
            // Uses from the revocation on: the key's earlier calls were its owner's.
            (ActionKind::RevokeToken, Subject::Token(token)) => {
                self.revoked.entry(token.clone()).or_insert(action.ts);
            }
            (ActionKind::RevokeToken, Subject::Client(client)) => {
                self.revoked_clients
                    .entry(client.clone())
                    .or_insert(action.ts);
            }
            (ActionKind::RestoreToken, Subject::Token(token)) => {
                self.revoked.remove(token);
                self.revoked_uses.remove(token);
            }
            (ActionKind::RestoreToken, Subject::Client(client)) => {
                self.revoked_clients.remove(client);
                let learnt: Vec<String> = self
                    .learnt_from_client
                    .iter()
                    .filter(|(_, of)| *of == client)
                    .map(|(token, _)| token.clone())
                    .collect();
                for token in learnt {
                    self.learnt_from_client.remove(&token);
                    self.revoked.remove(&token);
                    self.revoked_uses.remove(&token);
                }
            }
            _ => {}
        }
    }

    fn observe(&mut self, event: &EventRow<'_>) {
        if event.kind != EventKind::PolicyDecision {
            return;
        }
        let Some(decision) = event.decision.as_ref().filter(|d| &*d.policy == "auth") else {
            return;
        };
        let bucket = bucket_of(event.ts);
        let history = self.config.window_buckets() as usize;
        let token = event.client.token_id.as_deref();
        let ip = event.client.ip.as_deref().unwrap_or("unknown");
        let denied = &*decision.outcome == "deny";
        if let Some(token) = token.filter(|_| self.subjects.tokens()) {
            let revoked_reason = denied && decision.reason.as_deref() == Some(REVOKED_REASON);
            let revoked_client = event
                .client
                .name
                .as_deref()
                .and_then(|name| self.revoked_clients.get(name))
                .is_some_and(|since| event.ts >= *since);
            if (revoked_reason || revoked_client) && !self.revoked.contains_key(token) {
                self.revoked.insert(token.to_owned(), event.ts);
                if let (false, Some(client)) = (revoked_reason, event.client.name.as_deref()) {
                    self.learnt_from_client
                        .insert(token.to_owned(), client.to_owned());
                }
            }
            if self
                .revoked
                .get(token)
                .is_some_and(|since| event.ts >= *since)
            {
                let uses = entry(&mut self.revoked_uses, token, || RevokedUse {
                    counts: BucketCounts::new(history),
                    ips: HashMap::new(),
                    recent: RecentIds::default(),
                });
                uses.counts.add(bucket, event.weight());
                *entry(&mut uses.ips, ip, || bucket) = bucket;
                uses.recent.push(bucket, &event.request_id);
            }
        }
        if !denied || !self.subjects.others() {
            return;
        }
        let failures = entry(&mut self.by_ip, ip, || Failures {
            counts: BucketCounts::new(history),
            tokens: HashMap::new(),
            recent: RecentIds::default(),
        });
        failures.counts.add(bucket, event.weight());
        if let Some(token) = token {
            let last = entry(&mut failures.tokens, token, || bucket);
            *last = (*last).max(bucket);
        }
        failures.recent.push(bucket, &event.request_id);
    }

    fn evaluate(&mut self, evaluation: Evaluation) -> Vec<Alert> {
        let (end, width) = (evaluation.end, self.config.window_buckets());
        if evaluation.closed {
            self.by_ip.retain(|_, failures| {
                failures.counts.advance_to(end - 1);
                failures.tokens.retain(|_, last| *last >= end - width);
                failures.counts.total() > 0
            });
            self.revoked_uses.retain(|_, uses| {
                uses.counts.advance_to(end - 1);
                uses.ips.retain(|_, last| *last >= end - width);
                uses.counts.total() > 0
            });
        }
        let mut findings = Vec::new();
        for (ip, failures) in &self.by_ip {
            for judgement in self.judge_ip(ip, failures, evaluation) {
                findings.extend(self.holding.sort(judgement));
            }
        }
        // Any use of a revoked key fires: there is no line to hover at.
        for (token, uses) in &self.revoked_uses {
            findings.extend(self.judge_revoked(token, uses, evaluation));
        }
        findings
    }

    fn cooldown(&self) -> TimeDelta {
        TimeDelta::seconds(self.config.cooldown_s)
    }

    fn take_holding(&mut self) -> Vec<Alert> {
        self.holding.take()
    }

    fn reports_on_tokens(&self) -> bool {
        true
    }

    fn report_only_on(&mut self, subjects: Subjects) {
        self.subjects = subjects;
    }
}

#[cfg(test)]
mod tests {
    use warden_ingest::AuditEvent;
    use warden_ingest::TokenId;
    use warden_ingest::event::DecisionInfo;

    use super::*;
    use crate::test_support::{closed_at, early_at, event, feed, findings};

    fn auth(second: i64, ip: &str, token: &str, outcome: &str, reason: Option<&str>) -> AuditEvent {
        let mut event = event(EventKind::PolicyDecision, second, "", ip);
        event.client.name = None;
        event.client.token_id = Some(TokenId(token.into()));
        event.decision = Some(DecisionInfo {
            policy: "auth".into(),
            outcome: outcome.into(),
            reason: reason.map(Into::into),
        });
        event
    }

    #[test]
    fn brute_force_from_one_ip_is_found_and_escalates() {
        let mut detector = AuthFailures::new(AuthFailuresConfig::default());
        // One key, guessed wrong twice a second from one IP; a legitimate client elsewhere.
        for i in 0..19 {
            feed(
                &mut detector,
                &auth(
                    i / 2,
                    "203.0.113.5",
                    "tok-x",
                    "deny",
                    Some("invalid_api_key"),
                ),
            );
            feed(
                &mut detector,
                &auth(i, "10.0.0.1", "tok-good", "allow", None),
            );
        }
        assert!(detector.evaluate(early_at(9)).is_empty(), "19 < 20");
        feed(
            &mut detector,
            &auth(10, "203.0.113.5", "tok-x", "deny", Some("invalid_api_key")),
        );
        assert_eq!(
            findings(&detector.evaluate(early_at(10))),
            [("ip:203.0.113.5".to_owned(), Severity::Warning)]
        );
        for i in 0..80 {
            feed(
                &mut detector,
                &auth(11 + i / 2, "203.0.113.5", "tok-x", "deny", None),
            );
        }
        let alerts = detector.evaluate(closed_at(60));
        assert_eq!(
            findings(&alerts),
            [("ip:203.0.113.5".to_owned(), Severity::Critical)]
        );
        assert_eq!(alerts[0].detector, "auth_brute_force");
        // Five quiet minutes later it is gone.
        assert!(detector.evaluate(closed_at(400)).is_empty());
    }

    #[test]
    fn a_summary_of_shed_failures_counts_as_many_as_it_stands_for() {
        let mut detector = AuthFailures::new(AuthFailuresConfig::default());
        let mut summary = auth(3, "203.0.113.5", "tok-x", "deny", Some("invalid_api_key"));
        summary.occurrences = Some(250);
        feed(&mut detector, &summary);
        let alerts = detector.evaluate(early_at(3));
        assert_eq!(
            findings(&alerts),
            [("ip:203.0.113.5".to_owned(), Severity::Critical)]
        );
        assert_eq!(alerts[0].observed, 250.0);
    }

    #[test]
    fn many_keys_from_one_ip_are_token_stuffing() {
        let mut detector = AuthFailures::new(AuthFailuresConfig::default());
        for i in 0..12 {
            feed(
                &mut detector,
                &auth(i * 5, "198.51.100.2", &format!("tok-{i}"), "deny", None),
            );
        }
        let alerts = detector.evaluate(closed_at(60));
        let stuffing: Vec<_> = alerts
            .iter()
            .filter(|a| a.detector == "token_stuffing")
            .collect();
        assert_eq!(stuffing.len(), 1, "{alerts:?}");
        assert_eq!(stuffing[0].observed, 12.0);
        assert_eq!(stuffing[0].severity, Severity::Critical);
        assert!(
            !alerts.iter().any(|a| a.detector == "auth_brute_force"),
            "12 < 20"
        );
    }

    #[test]
    fn a_revoked_key_is_found_whether_listed_or_refused_as_revoked() {
        let mut detector = AuthFailures::new(AuthFailuresConfig {
            revoked_tokens: vec!["tok-leaked".into()],
            ..AuthFailuresConfig::default()
        });
        feed(
            &mut detector,
            &auth(
                1,
                "192.0.2.1",
                "tok-leaked",
                "deny",
                Some("invalid_api_key"),
            ),
        );
        feed(
            &mut detector,
            &auth(2, "192.0.2.9", "tok-old", "deny", Some(REVOKED_REASON)),
        );
        feed(
            &mut detector,
            &auth(3, "10.0.0.1", "tok-good", "allow", None),
        );
        let alerts = detector.evaluate(early_at(3));
        let mut revoked: Vec<_> = alerts
            .iter()
            .filter(|a| a.detector == "revoked_token")
            .map(|a| (a.subject.to_string(), a.runbook.clone()))
            .collect();
        revoked.sort();
        let runbook = Some("token_compromise".to_owned());
        assert_eq!(
            revoked,
            [
                ("token:tok-leaked".to_owned(), runbook.clone()),
                ("token:tok-old".to_owned(), runbook)
            ]
        );
    }

    #[test]
    fn a_client_named_as_revoked_has_its_key_watched() {
        let mut detector = AuthFailures::new(AuthFailuresConfig {
            revoked_tokens: vec!["client:batch-job".into()],
            ..AuthFailuresConfig::default()
        });
        // The client still authenticates (not yet removed from the config) ...
        let mut allowed = auth(1, "10.0.0.7", "tok_batch", "allow", None);
        allowed.client.name = Some("batch-job".into());
        feed(&mut detector, &allowed);
        // ... and its key, once removed, is refused as unknown from another IP.
        feed(
            &mut detector,
            &auth(
                2,
                "192.0.2.50",
                "tok_batch",
                "deny",
                Some("invalid_api_key"),
            ),
        );
        let alerts = detector.evaluate(early_at(2));
        let revoked: Vec<_> = alerts
            .iter()
            .filter(|a| a.detector == "revoked_token")
            .collect();
        assert_eq!(revoked.len(), 1, "{alerts:?}");
        assert_eq!(revoked[0].subject.to_string(), "token:tok_batch");
        assert_eq!(revoked[0].observed, 2.0);
    }

    #[test]
    fn a_key_revoked_through_the_control_topic_is_watched_from_then_until_restored() {
        let mut detector = AuthFailures::new(AuthFailuresConfig::default());
        // Its owner's calls before the revocation are no concern.
        feed(
            &mut detector,
            &auth(1, "10.0.0.1", "tok-stolen", "allow", None),
        );
        let mut revoke = ControlAction::new(
            ActionKind::RevokeToken,
            Subject::Token("tok-stolen".into()),
            "leaked",
            "operator:alice",
        );
        revoke.ts = crate::test_support::at(2);
        detector.control(&revoke);
        assert!(
            detector
                .evaluate(early_at(2))
                .iter()
                .all(|a| a.detector != "revoked_token"),
            "no use since the revocation"
        );
        // A replica that has not applied the revocation yet lets a call through: caught.
        feed(
            &mut detector,
            &auth(3, "198.51.100.4", "tok-stolen", "allow", None),
        );
        let alerts = detector.evaluate(early_at(3));
        let revoked: Vec<_> = alerts
            .iter()
            .filter(|a| a.detector == "revoked_token")
            .collect();
        assert_eq!(revoked.len(), 1, "{alerts:?}");
        assert_eq!(revoked[0].observed, 1.0);

        let mut restore = revoke.clone();
        restore.action = ActionKind::RestoreToken;
        detector.control(&restore);
        feed(
            &mut detector,
            &auth(4, "10.0.0.1", "tok-stolen", "allow", None),
        );
        assert!(
            detector
                .evaluate(early_at(4))
                .iter()
                .all(|a| a.detector != "revoked_token"),
            "restored"
        );
    }
}
