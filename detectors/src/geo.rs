//! Geographic anomalies (seed 000: "geographic anomaly detection for traffic outside expected
//! regions"; "geographic traffic shifts outside business regions indicate security issues";
//! data residency: "financial services require specific geographic regions"). Three findings:
//!
//! - `geo_disallowed_country` (warning, per country): requests from a country outside
//!   `allowed_countries` (when that list is set), naming the clients and IPs behind them;
//! - `geo_new_country` (critical, per token): a token used from a country never seen for it,
//!   once the token has a history (`min_history_requests` requests over at least
//!   `min_history_s`). Possible token theft: the runbook is token compromise;
//! - `geo_multi_country` (critical, per token): one token used from `max_countries_per_window`
//!   + 1 or more countries within the window.
//!
//! The country is the event's `client.country` (set by the proxy from its GeoIP database and
//! its trusted reverse proxies); for events without one, the detector looks the client IP up
//! in `database` if one is configured. A token's history is what this detector has seen
//! (its countries are kept for `history_days`).

use std::borrow::Cow;
use std::collections::BTreeSet;

use hashbrown::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use warden_ingest::EventKind;
use warden_ingest::alert::{Alert, Severity, Subject};
use warden_ingest::event_row::EventRow;
use warden_ingest::geo::GeoIp;

use crate::buckets::{BucketCounts, bucket_of, bucket_start};
use crate::detector::{
    Detector, Holding, RecentIds, SectionCheck, buckets_in, client_of, entry, named_sources,
};
use crate::engine::{Evaluation, Subjects};

/// `[detect.geo]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GeoConfig {
    pub enabled: bool,
    /// A MaxMind database for events that carry no country.
    pub database: Option<PathBuf>,
    /// ISO country codes traffic may come from; empty: anywhere.
    pub allowed_countries: Vec<String>,
    /// Window length, in seconds (a multiple of 10).
    pub window_s: i64,
    /// A token used from more countries than this within the window is suspect.
    pub max_countries_per_window: usize,
    /// A token's history must hold this many requests...
    pub min_history_requests: u64,
    /// ... over at least this long before a new country counts as new.
    pub min_history_s: i64,
    /// How long a token's countries are remembered.
    pub history_days: i64,
    pub cooldown_s: i64,
}

impl Default for GeoConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            database: None,
            allowed_countries: Vec::new(),
            window_s: 600,
            max_countries_per_window: 1,
            min_history_requests: 20,
            min_history_s: 3_600,
            history_days: 30,
            cooldown_s: 1_800,
        }
    }
}

impl GeoConfig {
    /// One message per problem, each naming its key.
    pub fn validate(&self) -> Vec<String> {
        let mut check = SectionCheck::new("detect.geo");
        check.window("window_s", self.window_s);
        for country in &self.allowed_countries {
            check.require(
                country.len() == 2 && country.chars().all(|c| c.is_ascii_uppercase()),
                "allowed_countries",
                &format!("{country:?} is not an ISO code like \"DE\""),
            );
        }
        check.require(
            self.max_countries_per_window > 0,
            "max_countries_per_window",
            "must be at least 1",
        );
        check.require(self.history_days > 0, "history_days", "must be positive");
        check.require(
            self.min_history_s >= 0,
            "min_history_s",
            "must not be negative",
        );
        check.cooldown(self.cooldown_s);
        check.finish()
    }

    fn window_buckets(&self) -> i64 {
        buckets_in(self.window_s)
    }
}

/// What is known of one token.
#[derive(Debug, Clone)]
struct TokenHistory {
    first_seen: DateTime<Utc>,
    requests: u64,
    /// Each country with the last time the token was used from it.
    countries: HashMap<String, DateTime<Utc>>,
    /// Countries first seen after the history was established, with when.
    new_countries: Vec<(String, DateTime<Utc>, String)>,
    recent: RecentIds,
}

/// Requests from one disallowed country.
#[derive(Debug, Clone)]
struct CountryTraffic {
    counts: BucketCounts,
    sources: HashMap<String, i64>,
    recent: RecentIds,
}

/// The geographic-anomaly detector.
#[derive(Debug, Clone)]
pub struct GeoAnomaly {
    config: GeoConfig,
    /// Shared by the copies of this detector (one memory map).
    database: Option<Arc<GeoIp>>,
    tokens: HashMap<String, TokenHistory>,
    disallowed: HashMap<String, CountryTraffic>,
    /// The subjects reported on: token histories are kept only if tokens are among them,
    /// traffic from disallowed countries only if countries are.
    subjects: Subjects,
    holding: Holding,
}

impl GeoAnomaly {
    /// The detector, with its database opened if one is configured.
    pub fn new(config: GeoConfig) -> Result<Self, String> {
        let database = match &config.database {
            Some(path) => Some(Arc::new(
                GeoIp::open(path).map_err(|err| format!("geo.database: {err}"))?,
            )),
            None => None,
        };
        Ok(Self {
            config,
            database,
            tokens: HashMap::new(),
            disallowed: HashMap::new(),
            subjects: Subjects::All,
            holding: Holding::default(),
        })
    }

    fn country_of<'e>(&self, event: &'e EventRow<'_>) -> Option<Cow<'e, str>> {
        if let Some(country) = event.client.country.as_deref() {
            return Some(Cow::Borrowed(country));
        }
        let ip: IpAddr = event.client.ip.as_deref()?.parse().ok()?;
        self.database.as_ref()?.country(ip).map(Cow::Owned)
    }

    /// The token's findings; those that no longer fire but were true within the window
    /// before (the resolve condition is a whole window without them) go to `holding`.
    fn judge_token(
        &self,
        token: &str,
        history: &TokenHistory,
        evaluation: Evaluation,
        holding: &mut Holding,
    ) -> Vec<Alert> {
        let width = self.config.window_buckets();
        let window_start = bucket_start(evaluation.end - width);
        let held_since = bucket_start(evaluation.end - 2 * width);
        let window = (window_start, evaluation.at);
        let mut alerts = Vec::new();
        let used_since = |since: DateTime<Utc>| {
            let mut used: Vec<&String> = history
                .countries
                .iter()
                .filter(|(_, last)| **last >= since)
                .map(|(country, _)| country)
                .collect();
            used.sort();
            used
        };
        let recent = used_since(window_start);
        let hold = |detector: &str| {
            let subject = Subject::Token(token.to_owned());
            Alert::firing(detector, Severity::Critical, subject, window)
        };
        if recent.len() <= self.config.max_countries_per_window
            && used_since(held_since).len() > self.config.max_countries_per_window
        {
            holding.push(hold("geo_multi_country"));
        }
        if recent.len() > self.config.max_countries_per_window {
            let subject = Subject::Token(token.to_owned());
            let mut alert = Alert::firing("geo_multi_country", Severity::Critical, subject, window);
            alert.observed = recent.len() as f64;
            alert.threshold = self.config.max_countries_per_window as f64;
            alert.unit = "countries".to_owned();
            alert.summary = format!(
                "token {token} used from {} countries within {}s: {}",
                recent.len(),
                self.config.window_s,
                recent
                    .iter()
                    .map(|c| c.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            alert.evidence.top_sources = named_sources(
                recent
                    .iter()
                    .map(|country| Subject::Country((*country).clone())),
            );
            alert.evidence.sample_request_ids = history.recent.to_vec();
            alert.runbook = Some("token_compromise".to_owned());
            alerts.push(alert);
        }
        // A new country stays suspicious while the token is still used from it.
        let new: Vec<&(String, DateTime<Utc>, String)> = history
            .new_countries
            .iter()
            .filter(|(country, _, _)| still_used(history, country, window_start))
            .collect();
        if new.is_empty()
            && history
                .new_countries
                .iter()
                .any(|(country, _, _)| still_used(history, country, held_since))
        {
            holding.push(hold("geo_new_country"));
        }
        if let Some((_, _, known)) = new.first() {
            let subject = Subject::Token(token.to_owned());
            let mut alert = Alert::firing("geo_new_country", Severity::Critical, subject, window);
            let names: BTreeSet<&str> = new.iter().map(|(c, _, _)| c.as_str()).collect();
            alert.observed = names.len() as f64;
            alert.threshold = 0.0;
            alert.unit = "new countries".to_owned();
            alert.summary = format!(
                "token {token} used from {} for the first time (seen before from {known})",
                names.into_iter().collect::<Vec<_>>().join(", ")
            );
            alert.evidence.top_sources = named_sources(
                new.iter()
                    .map(|(country, _, _)| Subject::Country(country.clone())),
            );
            alert.evidence.sample_request_ids = history.recent.to_vec();
            alert.runbook = Some("token_compromise".to_owned());
            alerts.push(alert);
        }
        alerts
    }

    fn judge_country(
        &self,
        country: &str,
        traffic: &CountryTraffic,
        evaluation: Evaluation,
    ) -> Option<Alert> {
        let (end, width) = (evaluation.end, self.config.window_buckets());
        let count = traffic.counts.sum(end - width, end);
        if count == 0 {
            return None;
        }
        let subject = Subject::Country(country.to_owned());
        let window = (bucket_start(end - width), evaluation.at);
        let mut alert = Alert::firing("geo_disallowed_country", Severity::Warning, subject, window);
        alert.observed = count as f64;
        alert.threshold = 0.0;
        alert.unit = "requests".to_owned();
        alert.summary = format!(
            "{count} requests from {country}, outside the allowed countries ({})",
            self.config.allowed_countries.join(", ")
        );
        let sources = traffic
            .sources
            .iter()
            .filter(|(_, last)| **last >= end - width)
            .filter_map(|(source, _)| source.parse::<Subject>().ok());
        alert.evidence.top_sources = named_sources(sources);
        alert.evidence.sample_request_ids = traffic.recent.to_vec();
        Some(alert)
    }
}

/// Whether `history`'s token was used from `country` since `since`.
fn still_used(history: &TokenHistory, country: &str, since: DateTime<Utc>) -> bool {
    history
        .countries
        .get(country)
        .is_some_and(|last| *last >= since)
}

impl Detector for GeoAnomaly {
    fn observe(&mut self, event: &EventRow<'_>) {
        if event.kind != EventKind::Request {
            return;
        }
        let Some(country) = self.country_of(event) else {
            return;
        };
        let bucket = bucket_of(event.ts);
        if self.subjects.others()
            && !self.config.allowed_countries.is_empty()
            && !self
                .config
                .allowed_countries
                .iter()
                .any(|allowed| *allowed == *country)
        {
            let history = self.config.window_buckets() as usize;
            let traffic = entry(&mut self.disallowed, &country, || CountryTraffic {
                counts: BucketCounts::new(history),
                sources: HashMap::new(),
                recent: RecentIds::default(),
            });
            traffic.counts.add(bucket, 1);
            if let Some(client) = client_of(event) {
                *entry(
                    &mut traffic.sources,
                    &Subject::Client(client.to_owned()).to_string(),
                    || bucket,
                ) = bucket;
            }
            if let Some(ip) = event.client.ip.as_deref() {
                *entry(
                    &mut traffic.sources,
                    &Subject::Ip(ip.to_owned()).to_string(),
                    || bucket,
                ) = bucket;
            }
            traffic.recent.push(bucket, &event.request_id);
        }
        // Only the keys of authenticated calls (a configured client's) have a history: a
        // refused, made-up key is no one's, and a flood of them must not create state.
        let Some(token) = event
            .client
            .token_id
            .as_deref()
            .filter(|_| self.subjects.tokens() && client_of(event).is_some())
        else {
            return;
        };
        let (min_requests, min_age) = (
            self.config.min_history_requests,
            TimeDelta::seconds(self.config.min_history_s),
        );
        let history = entry(&mut self.tokens, token, || TokenHistory {
            first_seen: event.ts,
            requests: 0,
            countries: HashMap::new(),
            new_countries: Vec::new(),
            recent: RecentIds::default(),
        });
        let established = history.requests >= min_requests
            && event.ts - history.first_seen >= min_age
            && !history.countries.is_empty();
        history.first_seen = history.first_seen.min(event.ts);
        history.requests += 1;
        history.recent.push(bucket_of(event.ts), &event.request_id);
        match history.countries.get_mut(&*country) {
            Some(last) => *last = (*last).max(event.ts),
            None => {
                if established {
                    let mut known: Vec<&String> = history.countries.keys().collect();
                    known.sort();
                    let known = known
                        .iter()
                        .map(|c| c.as_str())
                        .collect::<Vec<_>>()
                        .join(", ");
                    history
                        .new_countries
                        .push((country.to_string(), event.ts, known));
                }
                history.countries.insert(country.into_owned(), event.ts);
            }
        }
    }

    fn evaluate(&mut self, evaluation: Evaluation) -> Vec<Alert> {
        let (end, width) = (evaluation.end, self.config.window_buckets());
        if evaluation.closed {
            let window_start = bucket_start(end - width);
            let forget_before = evaluation.at - TimeDelta::days(self.config.history_days);
            self.tokens.retain(|_, history| {
                history.countries.retain(|_, last| *last >= forget_before);
                let countries = &history.countries;
                history.new_countries.retain(|(country, _, _)| {
                    countries
                        .get(country)
                        .is_some_and(|last| *last >= window_start)
                });
                !history.countries.is_empty()
            });
            self.disallowed.retain(|_, traffic| {
                traffic.counts.advance_to(end - 1);
                traffic.sources.retain(|_, last| *last >= end - width);
                traffic.counts.total() > 0
            });
        }
        let mut findings = Vec::new();
        let mut holding = std::mem::take(&mut self.holding);
        for (token, history) in &self.tokens {
            findings.extend(self.judge_token(token, history, evaluation, &mut holding));
        }
        self.holding = holding;
        for (country, traffic) in &self.disallowed {
            findings.extend(self.judge_country(country, traffic, evaluation));
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
    use warden_ingest::{AuditEvent, TokenId};

    use super::*;
    use crate::test_support::{closed_at, early_at, feed, findings, request};

    fn call(second: i64, token: &str, ip: &str, country: Option<&str>) -> AuditEvent {
        let mut event = request(second, "app-a", ip);
        event.client.token_id = Some(TokenId(token.into()));
        event.client.country = country.map(Into::into);
        event
    }

    #[test]
    fn a_flood_of_made_up_keys_leaves_no_state_in_the_per_key_detectors() {
        use crate::spike::{SpikeConfig, TrafficSpike};
        // Refused calls carry the fingerprint of a key no client has: no name. Each used to
        // get a token history here (kept 30 days, judged at every evaluation) and a client
        // scope in the spike detector: a flood of 100,000 made-up keys was that many.
        let mut geo = GeoAnomaly::new(GeoConfig::default()).expect("detector");
        let mut spike = TrafficSpike::new(SpikeConfig::default());
        for i in 0..5_000 {
            let mut refused = call(
                i / 10,
                &format!("tk_made_up_{i}"),
                "198.18.0.66",
                Some("NL"),
            );
            refused.client.name = None;
            feed(&mut geo, &refused);
            feed(&mut spike, &refused);
        }
        assert!(geo.tokens.is_empty());
        assert!(spike.evaluate(closed_at(600)).is_empty());
        assert_eq!(spike.client_scopes(), 0);
    }

    #[test]
    fn a_token_from_a_new_country_after_a_history_is_possible_theft() {
        let mut detector = GeoAnomaly::new(GeoConfig::default()).expect("detector");
        // Two hours from Germany, then one call from Brazil.
        for i in 0..120 {
            feed(
                &mut detector,
                &call(i * 60, "tok-a", "192.0.2.1", Some("DE")),
            );
        }
        assert!(detector.evaluate(closed_at(7_200)).is_empty());
        feed(
            &mut detector,
            &call(7_200, "tok-a", "198.51.100.9", Some("BR")),
        );
        let alerts = detector.evaluate(early_at(7_200));
        let mut found: Vec<_> = alerts
            .iter()
            .map(|a| (a.detector.as_str(), a.severity))
            .collect();
        found.sort();
        assert_eq!(
            found,
            [
                ("geo_multi_country", Severity::Critical),
                ("geo_new_country", Severity::Critical)
            ]
        );
        let new = alerts
            .iter()
            .find(|a| a.detector == "geo_new_country")
            .expect("new");
        assert_eq!(new.subject.to_string(), "token:tok-a");
        assert_eq!(new.runbook.as_deref(), Some("token_compromise"));
        assert!(
            new.summary.contains("BR") && new.summary.contains("DE"),
            "{}",
            new.summary
        );
        // The token goes on being used from Brazil for an hour: the alert holds (a resolve
        // while the theft goes on would read as the all-clear).
        for i in 1..=60 {
            feed(
                &mut detector,
                &call(7_200 + i * 60, "tok-a", "198.51.100.9", Some("BR")),
            );
        }
        let still = detector.evaluate(closed_at(10_800));
        assert!(
            still.iter().any(|a| a.detector == "geo_new_country"),
            "{still:?}"
        );
        // Then Brazil stops; once the window has passed, the condition clears.
        assert!(
            !detector
                .evaluate(closed_at(10_800 + 660))
                .iter()
                .any(|a| a.detector == "geo_new_country")
        );
    }

    #[test]
    fn a_new_token_is_learning_not_stolen() {
        let mut detector = GeoAnomaly::new(GeoConfig::default()).expect("detector");
        feed(&mut detector, &call(0, "tok-b", "192.0.2.1", Some("DE")));
        feed(
            &mut detector,
            &call(3_000, "tok-b", "198.51.100.9", Some("FR")),
        );
        let alerts = detector.evaluate(closed_at(3_010));
        assert!(
            !alerts.iter().any(|a| a.detector == "geo_new_country"),
            "{alerts:?}"
        );
    }

    #[test]
    fn traffic_from_outside_the_allowed_countries_is_named() {
        let mut detector = GeoAnomaly::new(GeoConfig {
            allowed_countries: vec!["US".into(), "IE".into()],
            ..GeoConfig::default()
        })
        .expect("detector");
        feed(&mut detector, &call(0, "tok-a", "192.0.2.1", Some("US")));
        feed(&mut detector, &call(1, "tok-c", "203.0.113.7", Some("KP")));
        let alerts = detector.evaluate(closed_at(10));
        assert_eq!(
            findings(&alerts),
            [("country:KP".to_owned(), Severity::Warning)]
        );
        let sources: Vec<_> = alerts[0]
            .evidence
            .top_sources
            .iter()
            .map(|s| s.source.as_str())
            .collect();
        assert_eq!(sources, ["client:app-a", "ip:203.0.113.7"]);
        // Ten quiet minutes later it resolves (no finding).
        assert!(detector.evaluate(closed_at(700)).is_empty());
    }

    #[test]
    fn events_without_a_country_are_looked_up_in_the_database() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("countries.mmdb");
        let database = warden_testkit::mmdb::country_database(&[
            ("192.0.2.0/24", "DE"),
            ("203.0.113.0/24", "KP"),
        ]);
        std::fs::write(&path, database).expect("write");
        let mut detector = GeoAnomaly::new(GeoConfig {
            database: Some(path),
            allowed_countries: vec!["DE".into()],
            ..GeoConfig::default()
        })
        .expect("detector");
        feed(&mut detector, &call(0, "tok-a", "192.0.2.1", None));
        feed(&mut detector, &call(1, "tok-c", "203.0.113.7", None));
        feed(&mut detector, &call(2, "tok-d", "10.1.2.3", None));
        assert_eq!(
            findings(&detector.evaluate(closed_at(10))),
            [("country:KP".to_owned(), Severity::Warning)]
        );
    }

    #[test]
    fn a_missing_database_is_a_clear_error() {
        let err = GeoAnomaly::new(GeoConfig {
            database: Some("/nonexistent/GeoLite2-Country.mmdb".into()),
            ..GeoConfig::default()
        })
        .expect_err("no database");
        assert!(
            err.contains("geo.database") && err.contains("GeoLite2-Country.mmdb"),
            "{err}"
        );
    }
}
