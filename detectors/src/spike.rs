//! Traffic spike: requests in the last window ≥ `factor` × a robust baseline of earlier windows
//! (seed 000: "10x traffic spike in 5 minutes indicates client logic failure"), globally, per
//! target and per client, with a minimum count so quiet services don't page.
//!
//! Each scope keeps its request counts in [`BUCKET_SECONDS`](crate::buckets::BUCKET_SECONDS)
//! buckets. At every evaluation (the watermark reaching a new bucket) the window is the
//! `window` of closed buckets before the watermark, and the baseline is the median of the `baseline_windows` windows before it that
//! lie after the scope's first request (a zero there is a real zero, not a gap; a new client
//! has no baseline until it has `min_baseline_windows` windows of history).
//!
//! A spike is a jump **within** the window: the window must also hold `factor` times the
//! window just before it. A normal ramp (a client going from its quiet night to its daytime
//! rate over half an hour) outgrows an hour's median but never jumps tenfold in five minutes,
//! so it raises nothing; a step change does both at once. An alert stays open while the
//! window holds [`RESOLVE_RATIO`](crate::detector::RESOLVE_RATIO) of the fire line over the
//! baseline.

use hashbrown::HashMap;

use chrono::TimeDelta;
use serde::{Deserialize, Serialize};
use warden_ingest::EventKind;
use warden_ingest::alert::{Alert, Severity, SourceShare, Subject};
use warden_ingest::event_row::EventRow;

use crate::buckets::{BucketCounts, bucket_of, bucket_start, median};
use crate::detector::{
    Detector, Holding, Judgement, RecentIds, SectionCheck, Standing, TOP_SOURCES, buckets_in,
    client_of, entry, target_of,
};
use crate::engine::Evaluation;

/// The detector's name in its alerts.
const DETECTOR: &str = "traffic_spike";

/// `[detect.traffic_spike]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
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
        let mut check = SectionCheck::new("detect.traffic_spike");
        check.window("window_s", self.window_s);
        check.factor("factor", self.factor);
        check.require(
            self.critical_factor >= self.factor,
            "critical_factor",
            "must be at least factor",
        );
        check.baseline(self.baseline_windows, self.min_baseline_windows);
        check.cooldown(self.cooldown_s);
        check.finish()
    }

    fn window_buckets(&self) -> i64 {
        buckets_in(self.window_s)
    }
}

/// Whom a scope's sources are.
#[derive(Debug, Clone, Copy)]
enum SourceKind {
    Client,
    Ip,
}

/// The counts of one scope (the whole service, a target, a client).
#[derive(Debug, Clone)]
struct Scope {
    requests: BucketCounts,
    /// Who sent them, over the window only.
    sources: HashMap<String, BucketCounts>,
    source_kind: SourceKind,
    recent: RecentIds,
    /// The first bucket of this scope: windows before it are unknown, not empty (a new client
    /// has no baseline yet, rather than a baseline of zero).
    since: i64,
}

impl Scope {
    fn new(history: usize, source_kind: SourceKind) -> Self {
        Self {
            requests: BucketCounts::new(history),
            sources: HashMap::new(),
            source_kind,
            recent: RecentIds::default(),
            since: i64::MAX,
        }
    }

    fn count(
        &mut self,
        bucket: i64,
        source: Option<&str>,
        window: usize,
        (request_id, weight): (&str, u64),
    ) {
        self.since = self.since.min(bucket);
        self.requests.add(bucket, weight);
        if let Some(source) = source {
            entry(&mut self.sources, source, || BucketCounts::new(window)).add(bucket, weight);
        }
        self.recent.push(bucket, request_id);
    }

    fn top_sources(&self, from: i64, to: i64) -> Vec<SourceShare> {
        let named = |source: &str| match self.source_kind {
            SourceKind::Client => Subject::Client(source.to_owned()),
            SourceKind::Ip => Subject::Ip(source.to_owned()),
        };
        let mut sources: Vec<SourceShare> = self
            .sources
            .iter()
            .map(|(source, counts)| SourceShare {
                source: named(source).to_string(),
                value: counts.sum(from, to) as f64,
            })
            .filter(|share| share.value > 0.0)
            .collect();
        sources.sort_by(|a, b| b.value.total_cmp(&a.value).then(a.source.cmp(&b.source)));
        sources.truncate(TOP_SOURCES);
        sources
    }
}

/// The traffic-spike detector.
#[derive(Debug, Clone)]
pub struct TrafficSpike {
    config: SpikeConfig,
    global: Scope,
    targets: HashMap<String, Scope>,
    clients: HashMap<String, Scope>,
    holding: Holding,
}

impl TrafficSpike {
    pub fn new(config: SpikeConfig) -> Self {
        let history = history_buckets(&config);
        Self {
            config,
            global: Scope::new(history, SourceKind::Client),
            targets: HashMap::new(),
            clients: HashMap::new(),
            holding: Holding::default(),
        }
    }

    /// Whether `scope` spikes in `evaluation`'s window.
    fn judge(
        &self,
        scope: &Scope,
        subject: impl FnOnce() -> Subject,
        evaluation: Evaluation,
    ) -> Judgement {
        let config = &self.config;
        let (end, width) = (evaluation.end, config.window_buckets());
        let since = scope.since;
        let current = scope.requests.sum(end - width, end);
        if current < config.min_requests {
            return Judgement::Clear;
        }
        let baselines: Vec<f64> = (1..=config.baseline_windows as i64)
            .map(|i| (end - (i + 1) * width, end - i * width))
            .filter(|(from, _)| *from >= since)
            .map(|(from, to)| scope.requests.sum(from, to) as f64)
            .collect();
        if baselines.len() < config.min_baseline_windows {
            return Judgement::Clear;
        }
        let baseline = median(baselines).unwrap_or(0.0);
        let ratio = current as f64 / baseline.max(1.0);
        // The window just before this one (a baseline window, so watched).
        let before = scope.requests.sum(end - 2 * width, end - width) as f64;
        let jumped = current as f64 >= config.factor * before.max(1.0);
        let window = (bucket_start(end - width), evaluation.at);
        match Standing::of(ratio, config.factor) {
            Standing::Fires if jumped => {}
            Standing::Clear => return Judgement::Clear,
            // Over the baseline without a jump within the window (a ramp), or between the
            // resolve and the fire line: no news, but an open alert stays open.
            Standing::Fires | Standing::Holds => {
                return Judgement::Hold(Alert::firing(
                    DETECTOR,
                    Severity::Warning,
                    subject(),
                    window,
                ));
            }
        }
        let severity = if ratio >= config.critical_factor {
            Severity::Critical
        } else {
            Severity::Warning
        };
        let subject = subject();
        let mut alert = Alert::firing(DETECTOR, severity, subject.clone(), window);
        alert.observed = current as f64;
        alert.threshold = config.factor * baseline.max(1.0);
        alert.unit = "requests".to_owned();
        alert.summary = format!(
            "{current} requests in {}s for {subject}, {ratio:.1}x the baseline of {baseline}",
            config.window_s
        );
        alert.evidence.top_sources = scope.top_sources(end - width, end);
        alert.evidence.sample_request_ids = scope.recent.to_vec();
        alert.runbook = Some("runaway_cost".to_owned());
        Judgement::Fire(alert)
    }
}

impl TrafficSpike {
    /// How many clients have counts of their own.
    #[cfg(test)]
    pub(crate) fn client_scopes(&self) -> usize {
        self.clients.len()
    }
}

fn history_buckets(config: &SpikeConfig) -> usize {
    let windows = config.baseline_windows as i64 + 1;
    usize::try_from(config.window_buckets() * windows).unwrap_or(usize::MAX)
}

impl Detector for TrafficSpike {
    /// Counts `request` events. One older than the kept history (window plus baseline
    /// windows) no longer changes any evaluation and is not counted.
    fn observe(&mut self, event: &EventRow<'_>) {
        if event.kind != EventKind::Request {
            return;
        }
        let bucket = bucket_of(event.ts);
        let client = client_of(event);
        let ip = event.client.ip.as_deref();
        let history = history_buckets(&self.config);
        let window = self.config.window_buckets() as usize;
        let request = (&*event.request_id, event.weight());
        self.global.count(bucket, client, window, request);
        if let Some(target) = target_of(event) {
            entry(&mut self.targets, target, || {
                Scope::new(history, SourceKind::Client)
            })
            .count(bucket, client, window, request);
        }
        if let Some(client) = client {
            entry(&mut self.clients, client, || {
                Scope::new(history, SourceKind::Ip)
            })
            .count(bucket, ip, window, request);
        }
    }

    fn evaluate(&mut self, evaluation: Evaluation) -> Vec<Alert> {
        let (end, width) = (evaluation.end, self.config.window_buckets());
        let scopes = std::iter::once(&mut self.global)
            .chain(self.targets.values_mut())
            .chain(self.clients.values_mut());
        for scope in scopes {
            scope.requests.advance_to(end - 1);
            if evaluation.closed {
                scope.sources.retain(|_, counts| {
                    counts.advance_to(end - 1);
                    counts.sum(end - width, end) > 0
                });
            }
        }
        if evaluation.closed {
            // A target or client silent for the whole history has nothing left to compare.
            self.targets.retain(|_, scope| scope.requests.total() > 0);
            self.clients.retain(|_, scope| scope.requests.total() > 0);
        }
        let mut findings = Vec::new();
        let global = self.judge(&self.global, || Subject::Global, evaluation);
        findings.extend(self.holding.sort(global));
        for (target, scope) in &self.targets {
            let judgement = self.judge(scope, || Subject::Target(target.clone()), evaluation);
            findings.extend(self.holding.sort(judgement));
        }
        for (client, scope) in &self.clients {
            let judgement = self.judge(scope, || Subject::Client(client.clone()), evaluation);
            findings.extend(self.holding.sort(judgement));
        }
        findings
    }

    fn cooldown(&self) -> TimeDelta {
        TimeDelta::seconds(self.config.cooldown_s)
    }

    fn take_holding(&mut self) -> Vec<Alert> {
        self.holding.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detector::SAMPLE_REQUEST_IDS;
    use crate::test_support::{closed_at, feed, findings, request};

    /// `rate(second)` requests a second (fractional rates spread evenly) from `client`, from
    /// `from` to `to`; returns every alert published for `subject`.
    fn run_rate(
        engine: &mut crate::engine::Engine,
        (from, to): (i64, i64),
        client: &str,
        rate: impl Fn(i64) -> f64,
    ) -> Vec<Alert> {
        use warden_ingest::event_row::EventRow;
        let mut published = Vec::new();
        let mut owed = 0.0;
        for second in from..to {
            owed += rate(second);
            while owed >= 1.0 {
                owed -= 1.0;
                let event = request(second, client, "10.0.0.1");
                published.extend(engine.take(&EventRow::from(&event)));
            }
        }
        published
    }

    /// An hour of steady traffic: `per_window` requests every 5 minutes from two clients.
    fn steady_hour(detector: &mut TrafficSpike, per_window: i64) {
        for window in 0..12 {
            for i in 0..per_window {
                let client = if i % 2 == 0 { "app-a" } else { "app-b" };
                feed(
                    detector,
                    &request(window * 300 + i * 300 / per_window, client, "10.0.0.1"),
                );
            }
        }
    }

    #[test]
    fn steady_traffic_raises_nothing() {
        let mut detector = TrafficSpike::new(SpikeConfig::default());
        steady_hour(&mut detector, 40);
        for minute in 5..=60 {
            assert!(findings(&detector.evaluate(closed_at(minute * 60))).is_empty());
        }
    }

    #[test]
    fn ten_times_the_traffic_of_one_client_is_named() {
        let mut detector = TrafficSpike::new(SpikeConfig::default());
        steady_hour(&mut detector, 40);
        // The next five minutes: app-b in a loop, 1,000 requests from one IP.
        for i in 0..1_000 {
            feed(
                &mut detector,
                &request(3_600 + i * 300 / 1_000, "app-b", "203.0.113.9"),
            );
        }
        let results = detector.evaluate(closed_at(3_900));
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
            .find(|alert| alert.dedup_key == "traffic_spike/client:app-b")
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
            .find(|alert| alert.dedup_key == "traffic_spike/global")
            .expect("global alert");
        assert_eq!(global.evidence.top_sources[0].source, "client:app-b");
    }

    #[test]
    fn a_quiet_service_does_not_page() {
        let mut detector = TrafficSpike::new(SpikeConfig::default());
        steady_hour(&mut detector, 2);
        for i in 0..60 {
            feed(&mut detector, &request(3_600 + i * 5, "app-a", "10.0.0.1"));
        }
        assert!(
            findings(&detector.evaluate(closed_at(3_900))).is_empty(),
            "60 < min_requests"
        );
    }

    #[test]
    fn no_finding_without_enough_history() {
        let mut detector = TrafficSpike::new(SpikeConfig::default());
        for i in 0..1_000 {
            feed(&mut detector, &request(i / 4, "app-a", "10.0.0.1"));
        }
        assert!(findings(&detector.evaluate(closed_at(300))).is_empty());
    }

    #[test]
    fn a_morning_ramp_is_not_a_spike_but_a_jump_within_five_minutes_is() {
        use crate::engine::Engine;
        let engine = || {
            let detector = TrafficSpike::new(SpikeConfig::default());
            Engine::new(vec![Box::new(detector)], TimeDelta::seconds(5))
        };
        // A quiet night at 3 % of the daytime rate (0.03 a second, 9 per window), then a
        // half-hour ramp to the day's 1 a second (300 per window), then the day.
        let day = 1.0;
        let night = 0.03 * day;
        let ramp = |second: i64| -> f64 {
            match second {
                s if s < 7_200 => night,
                s if s < 9_000 => night + (day - night) * (s - 7_200) as f64 / 1_800.0,
                _ => day,
            }
        };
        let mut morning = engine();
        let alerts = run_rate(&mut morning, (0, 12_600), "app-a", ramp);
        assert!(alerts.is_empty(), "{:?}", findings(&alerts));

        // The same night, then the day's rate at once: ten times and more within a window.
        let mut step = engine();
        let step_rate = |second: i64| if second < 7_200 { night * 3.0 } else { day };
        let alerts = run_rate(&mut step, (0, 7_800), "app-a", step_rate);
        assert!(
            findings(&alerts).contains(&("client:app-a".to_owned(), Severity::Critical))
                || findings(&alerts).contains(&("client:app-a".to_owned(), Severity::Warning)),
            "{:?}",
            findings(&alerts)
        );
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
