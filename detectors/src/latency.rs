//! Latency SLOs (seed 000: "Performance SLA monitoring at different percentiles (200ms
//! typical, 30s breaks user experience)"), per target, for the whole call (`latency_ms`) and
//! for streams' time to first token (`ttft_ms`).
//!
//! Each objective says which share of calls must be faster than a bound: `{ measure =
//! "latency", percentile = 99.0, under_ms = 30000 }` is "p99 under 30 s". Its error budget is
//! the share allowed slower (1 % there), and its **burn rate** over a window is the share
//! that was slower divided by the budget. As in Google's SRE workbook, an alert needs the
//! budget to burn fast over a short window *and* a long one, so a blip of a few minutes
//! pages no one while a sustained slowdown pages within minutes:
//!
//! - **critical**: burn rate ≥ `fast_burn_rate` (14.4: a month's budget in two days) over
//!   both `short_window_s` (5 min) and `long_window_s` (1 h);
//! - **warning**: burn rate ≥ `slow_burn_rate` (6) over both windows.
//!
//! The alert gives the target's p50/p95/p99 of the measure over the short window (from a
//! log-scale histogram, to within 10 %), and resolves once either window's burn is below
//! [`RESOLVE_RATIO`](crate::detector::RESOLVE_RATIO) of the warning line. Only calls the
//! upstream answered count (Warden's own refusals have no upstream latency).

use hashbrown::HashMap;

use chrono::TimeDelta;
use serde::{Deserialize, Serialize};
use warden_ingest::EventKind;
use warden_ingest::alert::{Alert, Severity, Subject};
use warden_ingest::event_row::EventRow;

use crate::buckets::{BucketCounts, bucket_of, bucket_start};
use crate::detector::{
    Detector, Holding, Judgement, RecentIds, SectionCheck, Standing, buckets_in, target_of,
};
use crate::engine::Evaluation;

const DETECTOR: &str = "latency_slo";
/// Histogram bins: bin `i` holds values in [1.1^i, 1.1^(i+1)) ms; 1.1^200 ms is 5.3 hours.
const BINS: usize = 200;
const BIN_GROWTH: f64 = 1.1;

/// What an objective measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Measure {
    /// `response.latency_ms`: the whole call.
    Latency,
    /// `response.ttft_ms`: a stream's time to first token.
    Ttft,
}

impl Measure {
    fn name(self) -> &'static str {
        match self {
            Self::Latency => "latency",
            Self::Ttft => "time to first token",
        }
    }
}

/// One objective: `percentile` % of calls under `under_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Objective {
    pub measure: Measure,
    pub percentile: f64,
    pub under_ms: f64,
}

impl Objective {
    /// The share of calls allowed to be slower.
    fn budget(&self) -> f64 {
        (100.0 - self.percentile) / 100.0
    }
}

/// `[detect.latency]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LatencyConfig {
    pub enabled: bool,
    pub objectives: Vec<Objective>,
    pub short_window_s: i64,
    pub long_window_s: i64,
    pub fast_burn_rate: f64,
    pub slow_burn_rate: f64,
    /// No finding for a short window with fewer measured calls than this.
    pub min_calls: u64,
    pub cooldown_s: i64,
}

impl Default for LatencyConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            objectives: vec![
                Objective {
                    measure: Measure::Latency,
                    percentile: 99.0,
                    under_ms: 30_000.0,
                },
                Objective {
                    measure: Measure::Ttft,
                    percentile: 95.0,
                    under_ms: 2_000.0,
                },
            ],
            short_window_s: 300,
            long_window_s: 3_600,
            fast_burn_rate: 14.4,
            slow_burn_rate: 6.0,
            min_calls: 20,
            cooldown_s: 900,
        }
    }
}

impl LatencyConfig {
    /// One message per problem, each naming its key.
    pub fn validate(&self) -> Vec<String> {
        let mut check = SectionCheck::new("detect.latency");
        check.window("short_window_s", self.short_window_s);
        check.window("long_window_s", self.long_window_s);
        check.require(
            self.long_window_s > self.short_window_s && self.long_window_s <= 86_400,
            "long_window_s",
            "must be longer than short_window_s and at most a day",
        );
        check.require(
            self.slow_burn_rate >= 1.0 && self.fast_burn_rate >= self.slow_burn_rate,
            "fast_burn_rate",
            "must be at least slow_burn_rate, which must be at least 1",
        );
        check.require(
            self.objectives.len() <= 16,
            "objectives",
            "at most 16 objectives",
        );
        for objective in &self.objectives {
            check.require(
                objective.percentile > 0.0 && objective.percentile < 100.0,
                "objectives",
                "a percentile must be above 0 and below 100",
            );
            check.require(
                objective.under_ms.is_finite() && objective.under_ms > 0.0,
                "objectives",
                "under_ms must be positive",
            );
        }
        check.cooldown(self.cooldown_s);
        check.finish()
    }
}

/// The calls of one target for one measure: all, and per objective those too slow; plus a
/// histogram of the short window for the percentiles an alert reports.
#[derive(Debug, Clone)]
struct Calls {
    all: BucketCounts,
    slow: Vec<BucketCounts>,
    /// Per bucket of the short window: counts per bin.
    histogram: HashMap<i64, Vec<u32>>,
    /// The first bucket the histogram keeps (older ones are no longer reported on).
    histogram_from: i64,
    recent_slow: RecentIds,
}

impl Calls {
    fn new(history: usize, objectives: usize) -> Self {
        Self {
            all: BucketCounts::new(history),
            slow: (0..objectives)
                .map(|_| BucketCounts::new(history))
                .collect(),
            histogram: HashMap::new(),
            histogram_from: i64::MIN,
            recent_slow: RecentIds::default(),
        }
    }

    /// The `quantile` (0–1) of the short window's values, to within a bin (10 %).
    fn quantile(&self, from: i64, to: i64, quantile: f64) -> Option<f64> {
        let mut bins = [0u64; BINS];
        for (bucket, counts) in &self.histogram {
            if (from..to).contains(bucket) {
                for (bin, count) in counts.iter().enumerate() {
                    bins[bin] += u64::from(*count);
                }
            }
        }
        let total: u64 = bins.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = (quantile * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (bin, count) in bins.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(BIN_GROWTH.powi(bin as i32 + 1));
            }
        }
        None
    }
}

fn bin_of(value_ms: f64) -> usize {
    if value_ms <= 1.0 {
        return 0;
    }
    ((value_ms.ln() / BIN_GROWTH.ln()) as usize).min(BINS - 1)
}

/// The latency-SLO detector.
#[derive(Debug, Clone)]
pub struct LatencySlo {
    config: LatencyConfig,
    /// By (target, measure).
    targets: HashMap<(String, Measure), Calls>,
    holding: Holding,
}

impl LatencySlo {
    pub fn new(config: LatencyConfig) -> Self {
        Self {
            config,
            targets: HashMap::new(),
            holding: Holding::default(),
        }
    }

    fn history(&self) -> usize {
        usize::try_from(buckets_in(self.config.long_window_s)).unwrap_or(usize::MAX)
    }

    fn judge(
        &self,
        target: &str,
        measure: Measure,
        calls: &Calls,
        evaluation: Evaluation,
    ) -> Vec<Judgement> {
        let config = &self.config;
        let end = evaluation.end;
        let short = buckets_in(config.short_window_s);
        let long = buckets_in(config.long_window_s);
        let short_calls = calls.all.sum(end - short, end);
        if short_calls < config.min_calls {
            return Vec::new();
        }
        let long_calls = calls.all.sum(end - long, end).max(1);
        let mut judgements = Vec::new();
        for (index, objective) in config.objectives.iter().enumerate() {
            if objective.measure != measure {
                continue;
            }
            let slow = &calls.slow[index];
            let burn = |slow: u64, all: u64| slow as f64 / all as f64 / objective.budget();
            let short_burn = burn(slow.sum(end - short, end), short_calls);
            let long_burn = burn(slow.sum(end - long, end), long_calls);
            // The slower of the two windows decides: both must burn.
            let burning = short_burn.min(long_burn);
            let window = (bucket_start(end - long), evaluation.at);
            let subject = Subject::Target(target.to_owned());
            let severity = match Standing::of(burning, config.slow_burn_rate) {
                Standing::Fires if burning >= config.fast_burn_rate => Severity::Critical,
                Standing::Fires => Severity::Warning,
                Standing::Holds => {
                    let alert = Alert::firing(DETECTOR, Severity::Warning, subject, window);
                    judgements.push(Judgement::Hold(alert));
                    continue;
                }
                Standing::Clear => continue,
            };
            let percentile = |q: f64| {
                calls
                    .quantile(end - short, end, q)
                    .map_or_else(|| "?".to_owned(), |ms| format!("{:.0} ms", ms))
            };
            let mut alert = Alert::firing(DETECTOR, severity, subject, window);
            alert.observed = (short_burn * 10.0).round() / 10.0;
            alert.threshold = config.slow_burn_rate;
            alert.unit = "error budget burn rate".to_owned();
            alert.summary = format!(
                "{target}: {} p{} objective under {:.0} ms is burning its budget {short_burn:.1}x \
                 over {}s and {long_burn:.1}x over {}s (p50 {}, p95 {}, p99 {})",
                measure.name(),
                objective.percentile,
                objective.under_ms,
                config.short_window_s,
                config.long_window_s,
                percentile(0.50),
                percentile(0.95),
                percentile(0.99),
            );
            alert.evidence.sample_request_ids = calls.recent_slow.to_vec();
            judgements.push(Judgement::Fire(alert));
        }
        judgements
    }
}

impl Detector for LatencySlo {
    fn observe(&mut self, event: &EventRow<'_>) {
        if event.kind != EventKind::Response {
            return;
        }
        let (Some(target), Some(response)) = (target_of(event), event.response.as_ref()) else {
            return;
        };
        // Warden's own refusals and errors have no upstream latency to judge.
        if response
            .error_type
            .as_deref()
            .is_some_and(|error| !error.starts_with("upstream"))
        {
            return;
        }
        let bucket = bucket_of(event.ts);
        let history = self.history();
        let objectives = self.config.objectives.len();
        for (measure, value) in [
            (Measure::Latency, response.latency_ms),
            (Measure::Ttft, response.ttft_ms),
        ] {
            let Some(value) = value.filter(|v| v.is_finite() && *v >= 0.0) else {
                continue;
            };
            let key = (target.to_owned(), measure);
            let calls = self
                .targets
                .entry(key)
                .or_insert_with(|| Calls::new(history, objectives));
            if !calls.all.add(bucket, 1) {
                continue;
            }
            let mut slow = false;
            for (index, objective) in self.config.objectives.iter().enumerate() {
                if objective.measure == measure && value > objective.under_ms {
                    calls.slow[index].add(bucket, 1);
                    slow = true;
                }
            }
            if slow {
                calls.recent_slow.push(&event.request_id);
            }
            // Trimmed to the short window at each closed evaluation.
            if bucket >= calls.histogram_from {
                let bins = entry_bins(&mut calls.histogram, bucket);
                bins[bin_of(value)] = bins[bin_of(value)].saturating_add(1);
            }
        }
    }

    fn evaluate(&mut self, evaluation: Evaluation) -> Vec<Alert> {
        if !evaluation.closed {
            return Vec::new();
        }
        let end = evaluation.end;
        let short = buckets_in(self.config.short_window_s);
        self.targets.retain(|_, calls| {
            calls.all.advance_to(end - 1);
            for slow in &mut calls.slow {
                slow.advance_to(end - 1);
            }
            calls.histogram.retain(|bucket, _| *bucket >= end - short);
            calls.histogram_from = end - short;
            calls.all.total() > 0
        });
        let mut findings = Vec::new();
        for ((target, measure), calls) in &self.targets {
            for judgement in self.judge(target, *measure, calls, evaluation) {
                findings.extend(self.holding.sort(judgement));
            }
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

fn entry_bins(histogram: &mut HashMap<i64, Vec<u32>>, bucket: i64) -> &mut Vec<u32> {
    histogram.entry(bucket).or_insert_with(|| vec![0; BINS])
}

#[cfg(test)]
mod tests {
    use warden_ingest::AuditEvent;
    use warden_ingest::event::ResponseInfo;

    use super::*;
    use crate::test_support::{closed_at, event, feed, findings};

    fn answered(second: i64, latency_ms: f64, ttft_ms: Option<f64>) -> AuditEvent {
        let mut event = event(EventKind::Response, second, "app", "10.0.0.1");
        event.response = Some(ResponseInfo {
            status: 200,
            latency_ms: Some(latency_ms),
            ttft_ms,
            ..ResponseInfo::default()
        });
        event
    }

    /// `seconds` of calls every 2 s from `from`, a share `slow` of them taking 40 s.
    fn traffic(detector: &mut LatencySlo, from: i64, seconds: i64, slow: f64) {
        for i in 0..seconds / 2 {
            let late = (i as f64 * slow).fract() + slow >= 1.0;
            let latency = if late { 40_000.0 } else { 2_000.0 };
            feed(detector, &answered(from + i * 2, latency, Some(300.0)));
        }
    }

    #[test]
    fn a_sustained_slowdown_pages_and_a_short_blip_does_not() {
        let mut detector = LatencySlo::new(LatencyConfig::default());
        traffic(&mut detector, 0, 3_600, 0.0);
        // Four minutes with half the calls over 30 s: the short window burns 40x, the hour 3x.
        traffic(&mut detector, 3_600, 240, 0.5);
        assert!(detector.evaluate(closed_at(3_840)).is_empty(), "a blip");
        traffic(&mut detector, 3_840, 600, 0.0);
        assert!(detector.evaluate(closed_at(4_440)).is_empty());

        // Then a third of the calls slow for 25 minutes: both windows burn past 14.4x.
        traffic(&mut detector, 4_440, 1_500, 0.35);
        let alerts = detector.evaluate(closed_at(5_940));
        assert_eq!(
            findings(&alerts),
            [("target:llama".to_owned(), Severity::Critical)]
        );
        let summary = &alerts[0].summary;
        assert!(
            summary.contains("p50 2") && summary.contains("p99 4"),
            "{summary}"
        );
    }

    #[test]
    fn slow_time_to_first_token_is_its_own_objective() {
        let mut detector = LatencySlo::new(LatencyConfig::default());
        for i in 0..1_800 {
            let ttft = if i % 5 < 2 { 5_000.0 } else { 400.0 };
            feed(&mut detector, &answered(i * 2, 3_000.0, Some(ttft)));
        }
        let alerts = detector.evaluate(closed_at(3_600));
        assert_eq!(alerts.len(), 1);
        assert!(
            alerts[0].summary.contains("time to first token"),
            "{}",
            alerts[0].summary
        );
        assert_eq!(
            alerts[0].severity,
            Severity::Warning,
            "40 % over a 5 % budget: 8x"
        );
    }

    #[test]
    fn the_config_is_checked() {
        let config = LatencyConfig {
            long_window_s: 60,
            objectives: vec![Objective {
                measure: Measure::Latency,
                percentile: 100.0,
                under_ms: 0.0,
            }],
            ..LatencyConfig::default()
        };
        let errors = config.validate().join("\n");
        assert!(errors.contains("long_window_s"), "{errors}");
        assert!(errors.contains("percentile"), "{errors}");
        assert!(errors.contains("under_ms"), "{errors}");
    }
}
