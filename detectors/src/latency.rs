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
//! log-scale histogram, to within 13 %), and resolves once either window's burn is below
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
    Detector, Holding, Judgement, RecentIds, SectionCheck, Standing, buckets_in, entry, target_of,
};
use crate::engine::Evaluation;

const DETECTOR: &str = "latency_slo";
/// Histogram bins: eighths of an octave (from a value's binary exponent and its top three
/// mantissa bits, no logarithm), 32 octaves from 1 ms (2^32 ms is 50 days).
const BINS: usize = 256;

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
    const ALL: [Self; 2] = [Self::Latency, Self::Ttft];

    fn index(self) -> usize {
        match self {
            Self::Latency => 0,
            Self::Ttft => 1,
        }
    }

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
    histogram: Histogram,
    recent_slow: RecentIds,
}

/// Counts per log-scale bin, per bucket, of the short window (and a little beyond): a ring
/// of buckets `first..`, trimmed at each closed evaluation.
#[derive(Debug, Clone, Default)]
struct Histogram {
    first: i64,
    buckets: std::collections::VecDeque<Box<[u32; BINS]>>,
}

impl Histogram {
    /// Counts `value_ms` in `bucket`, keeping at most `span` buckets: a newer bucket pushes
    /// the oldest out (the window reported on is the newest), an older one that would not
    /// fit is not counted.
    fn add(&mut self, bucket: i64, value_ms: f64, span: usize) {
        let span = span.max(1) as i64;
        if self.buckets.is_empty() || bucket - self.first >= 2 * span {
            self.buckets.clear();
            self.first = bucket;
        }
        while bucket - self.first >= span {
            self.buckets.pop_front();
            self.first += 1;
        }
        let last = self.first + self.buckets.len() as i64 - 1;
        if last.max(bucket) - bucket >= span {
            return;
        }
        while bucket < self.first {
            self.buckets.push_front(Box::new([0; BINS]));
            self.first -= 1;
        }
        while self.first + (self.buckets.len() as i64) <= bucket {
            self.buckets.push_back(Box::new([0; BINS]));
        }
        let bins = &mut self.buckets[usize::try_from(bucket - self.first).unwrap_or(0)];
        let bin = bin_of(value_ms);
        bins[bin] = bins[bin].saturating_add(1);
    }

    /// Forgets the buckets before `from`.
    fn trim(&mut self, from: i64) {
        while self.first < from && !self.buckets.is_empty() {
            self.buckets.pop_front();
            self.first += 1;
        }
    }
}

impl Calls {
    fn new(history: usize, objectives: usize) -> Self {
        Self {
            all: BucketCounts::new(history),
            slow: (0..objectives)
                .map(|_| BucketCounts::new(history))
                .collect(),
            histogram: Histogram::default(),
            recent_slow: RecentIds::default(),
        }
    }

    /// The `quantile` (0–1) of the short window's values, to within a bin (13 %).
    fn quantile(&self, from: i64, to: i64, quantile: f64) -> Option<f64> {
        let mut bins = [0u64; BINS];
        let first = self.histogram.first;
        for (offset, counts) in self.histogram.buckets.iter().enumerate() {
            if (from..to).contains(&(first + offset as i64)) {
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
                return Some(bin_upper_edge(bin));
            }
        }
        None
    }
}

fn bin_of(value_ms: f64) -> usize {
    if value_ms.is_nan() || value_ms < 1.0 {
        return 0;
    }
    let bits = value_ms.to_bits();
    // At least 0 for a value of 1 or more; the top three mantissa bits split the octave.
    let octave = ((bits >> 52) & 0x7ff).saturating_sub(1023);
    let eighth = (bits >> 49) & 0x7;
    usize::try_from(octave * 8 + eighth).map_or(BINS - 1, |bin| bin.min(BINS - 1))
}

/// The upper edge of `bin` (what a percentile falling in it is reported as).
fn bin_upper_edge(bin: usize) -> f64 {
    let (octave, eighth) = (bin / 8, bin % 8);
    2f64.powi(octave as i32) * (1.0 + (eighth + 1) as f64 / 8.0)
}

/// The latency-SLO detector.
#[derive(Debug, Clone)]
pub struct LatencySlo {
    config: LatencyConfig,
    /// By target, then measure ([`Measure::index`]).
    targets: HashMap<String, [Calls; 2]>,
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
        // The short window, and as much again for events ahead of the evaluations.
        let histogram_span =
            usize::try_from(2 * buckets_in(self.config.short_window_s)).unwrap_or(usize::MAX);
        let measures = entry(&mut self.targets, target, || {
            Measure::ALL.map(|_| Calls::new(history, objectives))
        });
        for (measure, value) in [
            (Measure::Latency, response.latency_ms),
            (Measure::Ttft, response.ttft_ms),
        ] {
            let Some(value) = value.filter(|v| v.is_finite() && *v >= 0.0) else {
                continue;
            };
            let calls = &mut measures[measure.index()];
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
                calls.recent_slow.push(bucket, &event.request_id);
            }
            // Trimmed to the short window at each closed evaluation.
            calls.histogram.add(bucket, value, histogram_span);
        }
    }

    fn evaluate(&mut self, evaluation: Evaluation) -> Vec<Alert> {
        if !evaluation.closed {
            return Vec::new();
        }
        let end = evaluation.end;
        let short = buckets_in(self.config.short_window_s);
        self.targets.retain(|_, measures| {
            for calls in measures.iter_mut() {
                calls.all.advance_to(end - 1);
                for slow in &mut calls.slow {
                    slow.advance_to(end - 1);
                }
                calls.histogram.trim(end - short);
            }
            measures.iter().any(|calls| calls.all.total() > 0)
        });
        let mut findings = Vec::new();
        for (target, measures) in &self.targets {
            for measure in Measure::ALL {
                let calls = &measures[measure.index()];
                for judgement in self.judge(target, measure, calls, evaluation) {
                    findings.extend(self.holding.sort(judgement));
                }
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
    fn a_value_is_reported_at_most_an_eighth_above_itself() {
        let mut value = 1.0;
        while value < 1e9 {
            let edge = bin_upper_edge(bin_of(value));
            assert!(
                edge >= value && edge <= value * 1.125 + 1e-9,
                "{value} -> {edge}"
            );
            value *= 1.013;
        }
        assert_eq!(bin_of(0.2), 0);
        assert_eq!(bin_of(f64::NAN), 0);
        assert_eq!(bin_of(f64::INFINITY), BINS - 1);
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
