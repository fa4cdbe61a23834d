//! Traffic spike: requests in the last window ≥ `factor` × a robust baseline of earlier windows
//! (seed 000: "10x traffic spike in 5 minutes indicates client logic failure"), globally, per
//! target and per client, with a minimum count so quiet services don't page.
//!
//! Each scope keeps its request counts in [`BUCKET_SECONDS`] buckets. At every evaluation (the
//! watermark reaching a new bucket) the window is the `window` of closed buckets before the
//! watermark, and the baseline is the median of the `baseline_windows` windows before it that
//! lie after the detector started watching (a zero there is a real zero, not a gap).

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, TimeDelta, Utc};
use serde::Deserialize;
use warden_ingest::alert::{Alert, Severity, SourceShare, Subject};
use warden_ingest::{AuditEvent, EventKind};

use crate::buckets::{BUCKET_SECONDS, BucketCounts, bucket_of, bucket_start, median};

/// The detector's name in its alerts.
const DETECTOR: &str = "traffic_spike";
/// How many sample request ids an alert carries.
const SAMPLE_REQUEST_IDS: usize = 3;
/// How many top sources an alert names.
const TOP_SOURCES: usize = 3;

/// `[detect.traffic_spike]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpikeConfig {
    pub enabled: bool,
    /// Window length, in seconds (a multiple of 10).
    pub window_s: i64,
    /// Spike when the window holds at least this many times the baseline.
    pub factor: f64,
    /// Critical rather than warning from this many times the baseline.
    pub critical_factor: f64,
    /// Earlier windows the baseline is the median of.
    pub baseline_windows: usize,
    /// No finding before this many earlier windows were watched.
    pub min_baseline_windows: usize,
    /// No finding for a window with fewer requests than this.
    pub min_requests: u64,
    /// A repeat of an open alert is published again after this long (event time).
    pub cooldown_s: i64,
}

impl Default for SpikeConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            window_s: 300,
            factor: 10.0,
            critical_factor: 30.0,
            baseline_windows: 12,
            min_baseline_windows: 3,
            min_requests: 100,
            cooldown_s: 900,
        }
    }
}

impl SpikeConfig {
    /// One message per problem, each naming its key.
    pub fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        let key = "detect.traffic_spike";
        if self.window_s < BUCKET_SECONDS || self.window_s % BUCKET_SECONDS != 0 {
            errors.push(format!(
                "{key}.window_s: must be a positive multiple of {BUCKET_SECONDS}"
            ));
        }
        if self.factor.is_nan() || self.factor <= 1.0 {
            errors.push(format!("{key}.factor: must be greater than 1"));
        }
        if self.critical_factor.is_nan() || self.critical_factor < self.factor {
            errors.push(format!("{key}.critical_factor: must be at least factor"));
        }
        if self.baseline_windows == 0 || self.min_baseline_windows > self.baseline_windows {
            errors.push(format!(
                "{key}.baseline_windows: must be at least 1 and at least min_baseline_windows"
            ));
        }
        if self.cooldown_s < 0 {
            errors.push(format!("{key}.cooldown_s: must not be negative"));
        }
        errors
    }

    fn window_buckets(&self) -> i64 {
        (self.window_s / BUCKET_SECONDS).max(1)
    }

    pub fn cooldown(&self) -> TimeDelta {
        TimeDelta::seconds(self.cooldown_s)
    }
}

/// The counts of one scope (the whole service, a target, a client).
#[derive(Debug)]
struct Scope {
    requests: BucketCounts,
    /// Who sent them (clients, or IPs for a client's own scope), over the window only.
    sources: HashMap<String, BucketCounts>,
    recent_request_ids: Vec<String>,
}

/// The traffic-spike detector.
#[derive(Debug)]
pub struct TrafficSpike {
    config: SpikeConfig,
    scopes: BTreeMap<Subject, Scope>,
    /// The first bucket this detector saw: windows before it are unknown, not empty.
    watching_since: Option<i64>,
}

impl TrafficSpike {
    pub fn new(config: SpikeConfig) -> Self {
        Self {
            config,
            scopes: BTreeMap::new(),
            watching_since: None,
        }
    }

    /// Counts one event (only `request` events are requests). An event older than the kept
    /// history (window plus baseline windows) no longer changes any evaluation and is not
    /// counted; the loop reports it as late.
    pub fn observe(&mut self, event: &AuditEvent) {
        if event.kind != EventKind::Request {
            return;
        }
        let bucket = bucket_of(event.ts);
        self.watching_since = Some(self.watching_since.map_or(bucket, |b| b.min(bucket)));
        let client = event
            .client
            .name
            .clone()
            .or_else(|| event.client.token_id.as_ref().map(|t| t.0.clone()));
        let mut scopes = vec![(Subject::Global, client.clone().map(Subject::Client))];
        if let Some(target) = event.route.as_ref().and_then(|r| r.target_id.clone()) {
            scopes.push((Subject::Target(target), client.clone().map(Subject::Client)));
        }
        if let Some(client) = client {
            let ip = event.client.ip.clone().map(Subject::Ip);
            scopes.push((Subject::Client(client), ip));
        }
        let history = self.history_buckets();
        let window = self.config.window_buckets() as usize;
        for (subject, source) in scopes {
            let scope = self.scopes.entry(subject).or_insert_with(|| Scope {
                requests: BucketCounts::new(history),
                sources: HashMap::new(),
                recent_request_ids: Vec::new(),
            });
            scope.requests.add(bucket, 1);
            if let Some(source) = source {
                scope
                    .sources
                    .entry(source.to_string())
                    .or_insert_with(|| BucketCounts::new(window))
                    .add(bucket, 1);
            }
            if scope.recent_request_ids.len() == SAMPLE_REQUEST_IDS {
                scope.recent_request_ids.remove(0);
            }
            scope
                .recent_request_ids
                .push(event.request_id.as_str().to_owned());
        }
    }

    fn history_buckets(&self) -> usize {
        let windows = self.config.baseline_windows as i64 + 1;
        usize::try_from(self.config.window_buckets() * windows).unwrap_or(usize::MAX)
    }

    /// Evaluates every scope for the window ending at `watermark` (exclusive): one entry per
    /// scope, `Some` where the spike condition holds.
    pub fn evaluate(&mut self, watermark: DateTime<Utc>) -> Vec<(String, Option<Alert>)> {
        let end = bucket_of(watermark);
        let width = self.config.window_buckets();
        let Some(since) = self.watching_since else {
            return Vec::new();
        };
        let mut results = Vec::new();
        for (subject, scope) in &mut self.scopes {
            scope.requests.advance_to(end - 1);
            let current = scope.requests.sum(end - width, end);
            let baselines: Vec<u64> = (1..=self.config.baseline_windows as i64)
                .map(|i| (end - (i + 1) * width, end - i * width))
                .filter(|(from, _)| *from >= since)
                .map(|(from, to)| scope.requests.sum(from, to))
                .collect();
            let dedup_key = Alert::dedup_key_for(DETECTOR, subject);
            let enough_history = baselines.len() >= self.config.min_baseline_windows;
            let baseline = median(baselines).unwrap_or(0.0);
            let ratio = current as f64 / baseline.max(1.0);
            let spiking = enough_history
                && current >= self.config.min_requests
                && ratio >= self.config.factor;
            let finding = spiking.then(|| {
                let severity = if ratio >= self.config.critical_factor {
                    Severity::Critical
                } else {
                    Severity::Warning
                };
                let window = (bucket_start(end - width), bucket_start(end));
                let mut alert = Alert::firing(DETECTOR, severity, subject.clone(), window);
                alert.observed = current as f64;
                alert.threshold = self.config.factor * baseline.max(1.0);
                alert.unit = "requests".to_owned();
                alert.summary = format!(
                    "{current} requests in {}s for {subject}, {ratio:.1}x the baseline of {baseline}",
                    self.config.window_s
                );
                alert.evidence.top_sources = top_sources(scope, end - width, end);
                alert.evidence.sample_request_ids = scope.recent_request_ids.clone();
                alert.runbook = Some("runaway_cost".to_owned());
                alert
            });
            scope.sources.retain(|_, counts| {
                counts.advance_to(end - 1);
                counts.sum(end - width, end) > 0
            });
            results.push((dedup_key, finding));
        }
        results
    }
}

fn top_sources(scope: &Scope, from: i64, to: i64) -> Vec<SourceShare> {
    let mut sources: Vec<SourceShare> = scope
        .sources
        .iter()
        .map(|(source, counts)| SourceShare {
            source: source.clone(),
            value: counts.sum(from, to) as f64,
        })
        .filter(|share| share.value > 0.0)
        .collect();
    sources.sort_by(|a, b| b.value.total_cmp(&a.value).then(a.source.cmp(&b.source)));
    sources.truncate(TOP_SOURCES);
    sources
}

#[cfg(test)]
mod tests {
    use warden_ingest::RequestId;
    use warden_ingest::event::RouteInfo;

    use super::*;

    const START: i64 = 1_800_000_000;

    fn request(second: i64, client: &str, ip: &str) -> AuditEvent {
        let mut event = AuditEvent::new(EventKind::Request, RequestId::new(), "p");
        event.ts = DateTime::from_timestamp(START + second, 0).expect("time");
        event.client.name = Some(client.into());
        event.client.ip = Some(ip.into());
        event.route = Some(RouteInfo {
            endpoint: "/v1/chat/completions".into(),
            target_id: Some("llama".into()),
            ..RouteInfo::default()
        });
        event
    }

    fn at(second: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(START + second, 0).expect("time")
    }

    fn findings(results: &[(String, Option<Alert>)]) -> Vec<(String, Severity)> {
        results
            .iter()
            .filter_map(|(_, alert)| alert.as_ref())
            .map(|a| (a.subject.to_string(), a.severity))
            .collect()
    }

    /// An hour of steady traffic: `per_window` requests every 5 minutes from two clients.
    fn steady_hour(detector: &mut TrafficSpike, per_window: i64) {
        for window in 0..12 {
            for i in 0..per_window {
                let client = if i % 2 == 0 { "app-a" } else { "app-b" };
                detector.observe(&request(
                    window * 300 + i * 300 / per_window,
                    client,
                    "10.0.0.1",
                ));
            }
        }
    }

    #[test]
    fn steady_traffic_raises_nothing() {
        let mut detector = TrafficSpike::new(SpikeConfig::default());
        steady_hour(&mut detector, 40);
        for minute in 5..=60 {
            assert!(findings(&detector.evaluate(at(minute * 60))).is_empty());
        }
    }

    #[test]
    fn ten_times_the_traffic_of_one_client_is_named() {
        let mut detector = TrafficSpike::new(SpikeConfig::default());
        steady_hour(&mut detector, 40);
        // The next five minutes: app-b in a loop, 1,000 requests from one IP.
        for i in 0..1_000 {
            detector.observe(&request(3_600 + i * 300 / 1_000, "app-b", "203.0.113.9"));
        }
        let results = detector.evaluate(at(3_900));
        let found = findings(&results);
        assert!(
            found.contains(&("client:app-b".to_owned(), Severity::Critical)),
            "{found:?}"
        );
        // 1,000 against a baseline of 40: 25x, a warning; app-b alone had 20: 50x, critical.
        assert!(found.contains(&("global".to_owned(), Severity::Warning)));
        assert!(found.contains(&("target:llama".to_owned(), Severity::Warning)));
        assert!(!found.iter().any(|(subject, _)| subject == "client:app-a"));
        let client_alert = results
            .iter()
            .find_map(|(key, alert)| (key == "traffic_spike/client:app-b").then_some(alert))
            .and_then(Option::as_ref)
            .expect("client alert");
        assert_eq!(client_alert.observed, 1_000.0);
        assert_eq!(
            client_alert.evidence.top_sources[0].source,
            "ip:203.0.113.9"
        );
        assert_eq!(
            client_alert.evidence.sample_request_ids.len(),
            SAMPLE_REQUEST_IDS
        );
        let global = results
            .iter()
            .find_map(|(key, alert)| (key == "traffic_spike/global").then_some(alert))
            .and_then(Option::as_ref)
            .expect("global alert");
        assert_eq!(global.evidence.top_sources[0].source, "client:app-b");
    }

    #[test]
    fn a_quiet_service_does_not_page() {
        let mut detector = TrafficSpike::new(SpikeConfig::default());
        steady_hour(&mut detector, 2);
        for i in 0..60 {
            detector.observe(&request(3_600 + i * 5, "app-a", "10.0.0.1"));
        }
        assert!(
            findings(&detector.evaluate(at(3_900))).is_empty(),
            "60 < min_requests"
        );
    }

    #[test]
    fn no_finding_without_enough_history() {
        let mut detector = TrafficSpike::new(SpikeConfig::default());
        for i in 0..1_000 {
            detector.observe(&request(i / 4, "app-a", "10.0.0.1"));
        }
        assert!(findings(&detector.evaluate(at(300))).is_empty());
    }

    #[test]
    fn the_config_is_checked() {
        let config = SpikeConfig {
            window_s: 25,
            factor: 0.5,
            ..SpikeConfig::default()
        };
        let errors = config.validate().join("\n");
        assert!(errors.contains("detect.traffic_spike.window_s"), "{errors}");
        assert!(errors.contains("detect.traffic_spike.factor"), "{errors}");
        assert!(SpikeConfig::default().validate().is_empty());
    }
}
