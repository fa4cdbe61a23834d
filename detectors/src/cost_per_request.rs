//! Cost per request doubling (seed 000: "cost per request doubling suggests traffic pattern
//! changes or larger model responses"), per target and per client, against its own baseline.
//!
//! The mean `cost_usd` of the responses in the window is compared with the median of the
//! means of the `baseline_windows` windows before it (those with at least `min_responses`).
//! It fires (warning) when the mean is `factor` times the baseline **with confidence**: the
//! lower confidence bound of the window's mean (mean − `confidence_z` standard errors, from
//! the window's own spread of costs) must reach the line, and the window must have spent at
//! least `min_spend_usd`. A client whose calls mix a cheap and a ten times dearer model has a
//! wide spread, so a handful of dear calls at night moves its mean but not its bound; a real
//! change of pattern (every call dearer, or many more dear ones) moves both. The alert
//! resolves once the mean itself is below [`RESOLVE_RATIO`](crate::detector::RESOLVE_RATIO)
//! of the line. A mean can fall as more responses come, so this waits for closed windows.

use hashbrown::HashMap;

use chrono::TimeDelta;
use serde::{Deserialize, Serialize};
use warden_ingest::EventKind;
use warden_ingest::alert::{Alert, Severity, Subject};
use warden_ingest::event_row::EventRow;

use crate::buckets::{BucketCounts, bucket_of, bucket_start, median};
use crate::detector::{
    Detector, Holding, Judgement, RecentIds, SectionCheck, Standing, buckets_in, client_of, entry,
    target_of,
};
use crate::engine::Evaluation;

const DETECTOR: &str = "cost_per_request";
const MICROS_PER_USD: f64 = 1_000_000.0;
/// Squares of costs are summed in units of 1/10,000 USD (so a $1,000 call squares to 10^14,
/// and sums stay far from overflowing).
const SQUARE_UNITS_PER_USD: f64 = 10_000.0;

/// `[detect.cost_per_request]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CostPerRequestConfig {
    pub enabled: bool,
    /// Window length, in seconds (a multiple of 10).
    pub window_s: i64,
    pub factor: f64,
    pub baseline_windows: usize,
    pub min_baseline_windows: usize,
    /// Windows with fewer priced responses than this are not judged, nor part of a baseline.
    pub min_responses: u64,
    /// A window that spent less than this (USD) is not judged: cents are not a pattern.
    pub min_spend_usd: f64,
    /// Standard errors the window's mean must clear the line by.
    pub confidence_z: f64,
    pub cooldown_s: i64,
}

impl Default for CostPerRequestConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            window_s: 900,
            factor: 2.0,
            baseline_windows: 8,
            min_baseline_windows: 3,
            min_responses: 20,
            min_spend_usd: 0.5,
            confidence_z: 3.0,
            cooldown_s: 3_600,
        }
    }
}

impl CostPerRequestConfig {
    /// One message per problem, each naming its key.
    pub fn validate(&self) -> Vec<String> {
        let mut check = SectionCheck::new("detect.cost_per_request");
        check.window("window_s", self.window_s);
        check.factor("factor", self.factor);
        check.baseline(self.baseline_windows, self.min_baseline_windows);
        check.require(
            self.min_spend_usd.is_finite() && self.min_spend_usd >= 0.0,
            "min_spend_usd",
            "must be zero or more",
        );
        check.require(
            self.confidence_z.is_finite() && (0.0..=10.0).contains(&self.confidence_z),
            "confidence_z",
            "must be between 0 and 10",
        );
        check.cooldown(self.cooldown_s);
        check.finish()
    }

    fn window_buckets(&self) -> i64 {
        buckets_in(self.window_s)
    }

    fn history(&self) -> usize {
        let windows = self.baseline_windows as i64 + 1;
        usize::try_from(self.window_buckets() * windows).unwrap_or(usize::MAX)
    }
}

/// Priced responses of one target or client.
#[derive(Debug, Clone)]
struct Spend {
    micros: BucketCounts,
    /// Sums of squared costs, in [`SQUARE_UNITS_PER_USD`] units.
    squares: BucketCounts,
    responses: BucketCounts,
    recent: RecentIds,
}

/// The priced responses of a stretch of buckets.
#[derive(Debug, Clone, Copy)]
struct Sample {
    responses: u64,
    /// USD.
    total: f64,
    mean: f64,
    /// The standard error of the mean, USD.
    standard_error: f64,
}

impl Spend {
    /// The responses in buckets `from..to`, if there are at least `min_responses`.
    fn sample(&self, from: i64, to: i64, min_responses: u64) -> Option<Sample> {
        let responses = self.responses.sum(from, to);
        if responses < min_responses.max(2) {
            return None;
        }
        let n = responses as f64;
        let total = self.micros.sum(from, to) as f64 / MICROS_PER_USD;
        let mean = total / n;
        let mean_of_squares =
            self.squares.sum(from, to) as f64 / (SQUARE_UNITS_PER_USD * SQUARE_UNITS_PER_USD) / n;
        // Rounding can make it a hair negative for equal costs.
        let variance = ((mean_of_squares - mean * mean) * n / (n - 1.0)).max(0.0);
        Some(Sample {
            responses,
            total,
            mean,
            standard_error: (variance / n).sqrt(),
        })
    }

    /// Mean cost of the responses in buckets `from..to`, if there are enough of them.
    fn mean(&self, from: i64, to: i64, min_responses: u64) -> Option<f64> {
        let responses = self.responses.sum(from, to);
        (responses >= min_responses.max(2))
            .then(|| self.micros.sum(from, to) as f64 / MICROS_PER_USD / responses as f64)
    }
}

/// The cost-per-request detector.
#[derive(Debug, Clone)]
pub struct CostPerRequest {
    config: CostPerRequestConfig,
    targets: HashMap<String, Spend>,
    clients: HashMap<String, Spend>,
    holding: Holding,
}

impl CostPerRequest {
    pub fn new(config: CostPerRequestConfig) -> Self {
        Self {
            config,
            targets: HashMap::new(),
            clients: HashMap::new(),
            holding: Holding::default(),
        }
    }

    fn judge(
        &self,
        spend: &Spend,
        subject: impl FnOnce() -> Subject,
        evaluation: Evaluation,
    ) -> Judgement {
        let config = &self.config;
        let (end, width) = (evaluation.end, config.window_buckets());
        let Some(current) = spend.sample(end - width, end, config.min_responses) else {
            return Judgement::Clear;
        };
        let baselines: Vec<f64> = (1..=config.baseline_windows as i64)
            .filter_map(|i| {
                spend.mean(end - (i + 1) * width, end - i * width, config.min_responses)
            })
            .collect();
        if baselines.len() < config.min_baseline_windows {
            return Judgement::Clear;
        }
        let baseline = median(baselines).unwrap_or(0.0);
        if baseline <= 0.0 {
            return Judgement::Clear;
        }
        let line = config.factor * baseline;
        let lower_bound = current.mean - config.confidence_z * current.standard_error;
        let window = (bucket_start(end - width), evaluation.at);
        let confident = lower_bound >= line && current.total >= config.min_spend_usd;
        match Standing::of(current.mean, line) {
            Standing::Fires if confident => {}
            Standing::Clear => return Judgement::Clear,
            // Over the line by chance of a small or mixed sample, or between the resolve and
            // the fire line: no news, but an open alert stays open.
            Standing::Fires | Standing::Holds => {
                let alert = Alert::firing(DETECTOR, Severity::Warning, subject(), window);
                return Judgement::Hold(alert);
            }
        }
        let subject = subject();
        let mut alert = Alert::firing(DETECTOR, Severity::Warning, subject.clone(), window);
        alert.observed = current.mean;
        alert.threshold = line;
        alert.unit = "usd/request".to_owned();
        alert.summary = format!(
            "{subject} costs ${:.5} a request over the last {}s ({} calls, at least ${lower_bound:.5} \
             with confidence), {:.1}x its usual ${baseline:.5}",
            current.mean,
            config.window_s,
            current.responses,
            current.mean / baseline
        );
        alert.evidence.sample_request_ids = spend.recent.to_vec();
        Judgement::Fire(alert)
    }
}

impl Detector for CostPerRequest {
    fn observe(&mut self, event: &EventRow<'_>) {
        if event.kind != EventKind::Response {
            return;
        }
        let Some(cost) = event.response.as_ref().and_then(|r| r.cost_usd) else {
            return;
        };
        if !(cost.is_finite() && cost >= 0.0) {
            return;
        }
        let micros = (cost * MICROS_PER_USD).round() as u64;
        let bucket = bucket_of(event.ts);
        let history = self.config.history();
        let square = (cost * SQUARE_UNITS_PER_USD).powi(2).min(u64::MAX as f64) as u64;
        let make = || Spend {
            micros: BucketCounts::new(history),
            squares: BucketCounts::new(history),
            responses: BucketCounts::new(history),
            recent: RecentIds::default(),
        };
        let scopes = [
            target_of(event).map(|target| (&mut self.targets, target)),
            client_of(event).map(|client| (&mut self.clients, client)),
        ];
        for (map, key) in scopes.into_iter().flatten() {
            let spend = entry(map, key, make);
            spend.micros.add(bucket, micros);
            spend.squares.add(bucket, square);
            spend.responses.add(bucket, 1);
            spend.recent.push(bucket, &event.request_id);
        }
    }

    fn evaluate(&mut self, evaluation: Evaluation) -> Vec<Alert> {
        if !evaluation.closed {
            return Vec::new();
        }
        let end = evaluation.end;
        for map in [&mut self.targets, &mut self.clients] {
            map.retain(|_, spend| {
                spend.micros.advance_to(end - 1);
                spend.squares.advance_to(end - 1);
                spend.responses.advance_to(end - 1);
                spend.responses.total() > 0
            });
        }
        let mut findings = Vec::new();
        for (target, spend) in &self.targets {
            let judgement = self.judge(spend, || Subject::Target(target.clone()), evaluation);
            findings.extend(self.holding.sort(judgement));
        }
        for (client, spend) in &self.clients {
            let judgement = self.judge(spend, || Subject::Client(client.clone()), evaluation);
            findings.extend(self.holding.sort(judgement));
        }
        findings
    }

    fn take_holding(&mut self) -> Vec<Alert> {
        self.holding.take()
    }

    fn cooldown(&self) -> TimeDelta {
        TimeDelta::seconds(self.config.cooldown_s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{closed_at, feed, findings, priced};

    #[test]
    fn a_doubled_cost_per_request_is_found_for_the_target_and_the_client() {
        let mut detector = CostPerRequest::new(CostPerRequestConfig::default());
        // An hour at $0.002 a call (one call every 10 s from each of two clients).
        for i in 0..360 {
            feed(&mut detector, &priced(i * 10, "app-a", 0.002));
            feed(&mut detector, &priced(i * 10 + 5, "app-b", 0.002));
        }
        assert!(detector.evaluate(closed_at(3_600)).is_empty());
        // Then app-b's calls cost $0.010 (longer answers): app-b 5x, the target 3x.
        for i in 360..450 {
            feed(&mut detector, &priced(i * 10, "app-a", 0.002));
            feed(&mut detector, &priced(i * 10 + 5, "app-b", 0.010));
        }
        let mut found = findings(&detector.evaluate(closed_at(4_500)));
        found.sort();
        assert_eq!(
            found,
            [
                ("client:app-b".to_owned(), Severity::Warning),
                ("target:llama".to_owned(), Severity::Warning)
            ]
        );
    }

    /// One response of `client` at `second` for `cost`.
    fn call(detector: &mut CostPerRequest, second: i64, cost: f64) {
        feed(detector, &priced(second, "app-a", cost));
    }

    /// Eight windows of a client mixing a $0.001 model (90 % of calls) and a ten times
    /// dearer one, 60 calls per 15 minutes.
    fn mixed_day(detector: &mut CostPerRequest) {
        for window in 0..8 {
            for i in 0..60 {
                let cost = if i % 10 == 0 { 0.01 } else { 0.001 };
                call(detector, window * 900 + i * 15, cost);
            }
        }
    }

    #[test]
    fn a_few_dear_calls_in_a_mixed_quiet_window_are_noise_not_a_doubling() {
        // At night, 25 calls of which 8 happen to be dear: the mean doubles (2.0x), on a
        // sample that cannot tell.
        let config = CostPerRequestConfig {
            min_spend_usd: 0.0,
            ..CostPerRequestConfig::default()
        };
        let mut detector = CostPerRequest::new(config.clone());
        mixed_day(&mut detector);
        for i in 0..25 {
            let cost = if i % 3 == 0 && i < 24 { 0.01 } else { 0.001 };
            call(&mut detector, 8 * 900 + i * 36, cost);
        }
        assert!(detector.evaluate(closed_at(9 * 900)).is_empty());
        assert_eq!(
            detector.take_holding().len(),
            2,
            "over the line by chance: held (target and client), not fired"
        );

        // Every call on the dear model: a real change of pattern.
        let mut changed = CostPerRequest::new(config);
        mixed_day(&mut changed);
        for i in 0..60 {
            call(&mut changed, 8 * 900 + i * 15, 0.01);
        }
        let mut found = findings(&changed.evaluate(closed_at(9 * 900)));
        found.sort();
        assert_eq!(
            found,
            [
                ("client:app-a".to_owned(), Severity::Warning),
                ("target:llama".to_owned(), Severity::Warning)
            ]
        );
    }

    #[test]
    fn too_few_responses_are_not_judged() {
        let mut detector = CostPerRequest::new(CostPerRequestConfig::default());
        for i in 0..40 {
            feed(&mut detector, &priced(i * 90, "app-a", 0.002));
        }
        for i in 0..10 {
            feed(&mut detector, &priced(3_600 + i * 90, "app-a", 0.05));
        }
        assert!(detector.evaluate(closed_at(4_500)).is_empty());
    }
}
