//! Cost per request doubling (seed 000: "cost per request doubling suggests traffic pattern
//! changes or larger model responses"), per target and per client, against its own baseline.
//!
//! The mean `cost_usd` of the responses in the window is compared with the median of the
//! means of the `baseline_windows` windows before it (those with at least `min_responses`).
//! It fires (warning) at `factor` times the baseline. A mean can fall as more responses
//! come, so this waits for closed windows.

use hashbrown::HashMap;

use chrono::TimeDelta;
use serde::{Deserialize, Serialize};
use warden_ingest::EventKind;
use warden_ingest::alert::{Alert, Severity, Subject};
use warden_ingest::event_row::EventRow;

use crate::buckets::{BucketCounts, bucket_of, bucket_start, median};
use crate::detector::{Detector, RecentIds, SectionCheck, buckets_in, client_of, entry, target_of};
use crate::engine::Evaluation;

const DETECTOR: &str = "cost_per_request";
const MICROS_PER_USD: f64 = 1_000_000.0;

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
    responses: BucketCounts,
    recent: RecentIds,
}

impl Spend {
    /// Mean cost of the responses in buckets `from..to`, if there are enough of them.
    fn mean(&self, from: i64, to: i64, min_responses: u64) -> Option<f64> {
        let responses = self.responses.sum(from, to);
        (responses >= min_responses.max(1))
            .then(|| self.micros.sum(from, to) as f64 / MICROS_PER_USD / responses as f64)
    }
}

/// The cost-per-request detector.
#[derive(Debug, Clone)]
pub struct CostPerRequest {
    config: CostPerRequestConfig,
    targets: HashMap<String, Spend>,
    clients: HashMap<String, Spend>,
}

impl CostPerRequest {
    pub fn new(config: CostPerRequestConfig) -> Self {
        Self {
            config,
            targets: HashMap::new(),
            clients: HashMap::new(),
        }
    }

    fn judge(
        &self,
        spend: &Spend,
        subject: impl FnOnce() -> Subject,
        evaluation: Evaluation,
    ) -> Option<Alert> {
        let config = &self.config;
        let (end, width) = (evaluation.end, config.window_buckets());
        let current = spend.mean(end - width, end, config.min_responses)?;
        let baselines: Vec<f64> = (1..=config.baseline_windows as i64)
            .filter_map(|i| {
                spend.mean(end - (i + 1) * width, end - i * width, config.min_responses)
            })
            .collect();
        if baselines.len() < config.min_baseline_windows {
            return None;
        }
        let baseline = median(baselines)?;
        if baseline <= 0.0 || current < config.factor * baseline {
            return None;
        }
        let subject = subject();
        let window = (bucket_start(end - width), evaluation.at);
        let mut alert = Alert::firing(DETECTOR, Severity::Warning, subject.clone(), window);
        alert.observed = current;
        alert.threshold = config.factor * baseline;
        alert.unit = "usd/request".to_owned();
        alert.summary = format!(
            "{subject} costs ${current:.5} a request over the last {}s, {:.1}x its usual \
             ${baseline:.5}",
            config.window_s,
            current / baseline
        );
        alert.evidence.sample_request_ids = spend.recent.to_vec();
        Some(alert)
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
        let make = || Spend {
            micros: BucketCounts::new(history),
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
            spend.responses.add(bucket, 1);
            spend.recent.push(&event.request_id);
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
                spend.responses.advance_to(end - 1);
                spend.responses.total() > 0
            });
        }
        let mut findings = Vec::new();
        for (target, spend) in &self.targets {
            findings.extend(self.judge(spend, || Subject::Target(target.clone()), evaluation));
        }
        for (client, spend) in &self.clients {
            findings.extend(self.judge(spend, || Subject::Client(client.clone()), evaluation));
        }
        findings
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
