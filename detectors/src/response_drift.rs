//! Response drift (seed 000: "Compare current response quality with baseline samples";
//! "model-specific vs infrastructure-wide problems"): per target, the answers of the last
//! window against the target's own baseline — the median of the `baseline_windows` windows
//! before it with at least `min_responses` each.
//!
//! Four measures, each with its line:
//!
//! - **output length**: the mean `output_tokens` of answered calls moved by `token_factor`
//!   (up or down) *with confidence*: the mean's confidence bound (`confidence_z` standard
//!   errors, from the window's own spread) is past the line, not just the mean;
//! - **truncation**: the share of `finish_reason = "length"` rose by `share_rise` (absolute)
//!   and to at least twice the baseline's;
//! - **empty answers**: the same for answers with no output token;
//! - **errors**: the same for upstream errors among the target's responses.
//!
//! One alert per target names what moved, from what to what. When the same measure moved on
//! at least two targets that are at least `infrastructure_share` of the targets judged, the
//! change is the infrastructure's, not a model's: one alert (subject `global`) names them
//! all instead. Alerts resolve once every measure is back under
//! [`RESOLVE_RATIO`](crate::detector::RESOLVE_RATIO) of its line.

use hashbrown::HashMap;

use chrono::TimeDelta;
use serde::{Deserialize, Serialize};
use warden_ingest::EventKind;
use warden_ingest::alert::{Alert, Severity, Subject};
use warden_ingest::event_row::EventRow;

use crate::buckets::{Counts, bucket_of, bucket_start, median};
use crate::detector::{
    Detector, Holding, RecentIds, SectionCheck, Standing, buckets_in, entry, target_of,
};
use crate::engine::Evaluation;

const DETECTOR: &str = "response_drift";
/// Judged once a minute (a window is 15 by default): in between, the last judgement stands.
const JUDGE_EVERY_BUCKETS: i64 = 6;

/// `[detect.response_drift]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResponseDriftConfig {
    pub enabled: bool,
    /// Window length, in seconds (a multiple of 10).
    pub window_s: i64,
    pub baseline_windows: usize,
    pub min_baseline_windows: usize,
    /// Windows with fewer responses than this are neither judged nor part of a baseline.
    pub min_responses: u64,
    /// The factor the mean output length must move by (up, or down by its inverse).
    pub token_factor: f64,
    pub confidence_z: f64,
    /// How much (absolute) a share (truncated, empty, errors) must rise.
    pub share_rise: f64,
    /// A measure moved on this share of the targets judged (and on two at least) is the
    /// infrastructure's.
    pub infrastructure_share: f64,
    pub cooldown_s: i64,
}

impl Default for ResponseDriftConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            window_s: 900,
            baseline_windows: 8,
            min_baseline_windows: 3,
            min_responses: 30,
            token_factor: 2.0,
            confidence_z: 3.0,
            share_rise: 0.2,
            infrastructure_share: 0.5,
            cooldown_s: 3_600,
        }
    }
}

impl ResponseDriftConfig {
    /// One message per problem, each naming its key.
    pub fn validate(&self) -> Vec<String> {
        let mut check = SectionCheck::new("detect.response_drift");
        check.window("window_s", self.window_s);
        check.baseline(self.baseline_windows, self.min_baseline_windows);
        check.factor("token_factor", self.token_factor);
        check.require(
            self.confidence_z.is_finite() && (0.0..=10.0).contains(&self.confidence_z),
            "confidence_z",
            "must be between 0 and 10",
        );
        check.share("share_rise", self.share_rise);
        check.share("infrastructure_share", self.infrastructure_share);
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

/// What drifted, as judged on one target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Measure {
    OutputLength,
    Truncation,
    EmptyAnswers,
    Errors,
}

impl Measure {
    const ALL: [Self; 4] = [
        Self::OutputLength,
        Self::Truncation,
        Self::EmptyAnswers,
        Self::Errors,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::OutputLength => "mean output tokens",
            Self::Truncation => "truncated answers (finish_reason length)",
            Self::EmptyAnswers => "empty answers",
            Self::Errors => "upstream errors",
        }
    }
}

/// What is counted per bucket of a target, by index in its [`Counts`].
const ALL: usize = 0; // every upstream-answered response
const ERRORS: usize = 1;
const ANSWERED: usize = 2; // 2xx with an output token count
const TOKENS: usize = 3;
const TOKEN_SQUARES: usize = 4;
const TRUNCATED: usize = 5;
const EMPTY: usize = 6;

/// The responses of one target, per bucket.
#[derive(Debug, Clone)]
struct Responses {
    counts: Counts<7>,
    recent: RecentIds,
}

/// One window of a target.
#[derive(Debug, Clone, Copy)]
struct Window {
    answered: u64,
    mean_tokens: f64,
    tokens_standard_error: f64,
    shares: [f64; 3],
}

impl Responses {
    fn new(history: usize) -> Self {
        Self {
            counts: Counts::new(history),
            recent: RecentIds::default(),
        }
    }

    fn window(&self, from: i64, to: i64, min_responses: u64) -> Option<Window> {
        let sums = self.counts.sum(from, to);
        let all = sums[ALL];
        if all < min_responses.max(2) {
            return None;
        }
        let answered = sums[ANSWERED];
        let n = answered.max(1) as f64;
        let mean = sums[TOKENS] as f64 / n;
        let mean_of_squares = sums[TOKEN_SQUARES] as f64 / n;
        let variance = ((mean_of_squares - mean * mean) * n / (n - 1.0).max(1.0)).max(0.0);
        let share = |count: u64, of: u64| count as f64 / of.max(1) as f64;
        Some(Window {
            answered,
            mean_tokens: mean,
            tokens_standard_error: (variance / n).sqrt(),
            shares: [
                share(sums[TRUNCATED], answered),
                share(sums[EMPTY], answered),
                share(sums[ERRORS], all),
            ],
        })
    }
}

/// A measure that moved on a target: how far (1.0 is the line), and what from and to.
#[derive(Debug, Clone)]
struct Moved {
    measure: Measure,
    standing: Standing,
    description: String,
}

/// The response-drift detector.
#[derive(Debug, Clone)]
pub struct ResponseDrift {
    config: ResponseDriftConfig,
    targets: HashMap<String, Responses>,
    holding: Holding,
    /// The findings and holding subjects of the last judgement.
    last: (Vec<Alert>, Vec<Alert>),
}

impl ResponseDrift {
    pub fn new(config: ResponseDriftConfig) -> Self {
        Self {
            config,
            targets: HashMap::new(),
            holding: Holding::default(),
            last: (Vec::new(), Vec::new()),
        }
    }

    /// What moved on one target in `evaluation`'s window; `None` when it cannot be judged.
    fn judge(&self, responses: &Responses, evaluation: Evaluation) -> Option<Vec<Moved>> {
        let config = &self.config;
        let (end, width) = (evaluation.end, config.window_buckets());
        let current = responses.window(end - width, end, config.min_responses)?;
        let baselines: Vec<Window> = (1..=config.baseline_windows as i64)
            .filter_map(|i| {
                responses.window(end - (i + 1) * width, end - i * width, config.min_responses)
            })
            .collect();
        if baselines.len() < config.min_baseline_windows {
            return None;
        }
        let mut moved = Vec::new();
        let usual_tokens = median(baselines.iter().map(|w| w.mean_tokens).collect())?;
        if current.answered >= config.min_responses && usual_tokens > 0.0 {
            let margin = config.confidence_z * current.tokens_standard_error;
            // How far past its line the mean's confidence bound is, up or down.
            let up = (current.mean_tokens - margin) / (config.token_factor * usual_tokens);
            let down =
                usual_tokens / (config.token_factor * (current.mean_tokens + margin).max(1e-9));
            let standing = Standing::of(up.max(down), 1.0);
            if standing != Standing::Clear {
                moved.push(Moved {
                    measure: Measure::OutputLength,
                    standing,
                    description: format!(
                        "{} {:.0} (usually {usual_tokens:.0})",
                        Measure::OutputLength.name(),
                        current.mean_tokens
                    ),
                });
            }
        }
        for (index, measure) in Measure::ALL[1..].iter().enumerate() {
            let usual = median(baselines.iter().map(|w| w.shares[index]).collect())?;
            let now = current.shares[index];
            // Both must hold: the rise, and at least twice the usual share.
            let rise = (now - usual) / config.share_rise;
            let multiple = now / (2.0 * usual).max(1e-9);
            let standing = Standing::of(rise.min(multiple), 1.0);
            if standing != Standing::Clear {
                moved.push(Moved {
                    measure: *measure,
                    standing,
                    description: format!(
                        "{} {:.0} % (usually {:.0} %)",
                        measure.name(),
                        now * 100.0,
                        usual * 100.0
                    ),
                });
            }
        }
        Some(moved)
    }
}

impl Detector for ResponseDrift {
    fn observe(&mut self, event: &EventRow<'_>) {
        if event.kind != EventKind::Response {
            return;
        }
        let (Some(target), Some(response)) = (target_of(event), event.response.as_ref()) else {
            return;
        };
        let error_type = response.error_type.as_deref();
        // Warden's own refusals say nothing of the model.
        if error_type.is_some_and(|error| !error.starts_with("upstream")) {
            return;
        }
        let mut counted = [0; 7];
        counted[ALL] = 1;
        let mut notable = false;
        if error_type == Some(crate::upstream_503::LOADING_ERROR_TYPE) {
            // A cold start is the model loading, not answering worse: counted, no more.
        } else if response.status >= 500 || error_type.is_some() {
            counted[ERRORS] = 1;
            notable = true;
        } else if let Some(tokens) = response.output_tokens.filter(|_| response.status < 300) {
            counted[ANSWERED] = 1;
            counted[TOKENS] = tokens;
            counted[TOKEN_SQUARES] = tokens.saturating_mul(tokens);
            counted[TRUNCATED] = u64::from(response.finish_reason.as_deref() == Some("length"));
            counted[EMPTY] = u64::from(tokens == 0);
            notable = counted[TRUNCATED] + counted[EMPTY] > 0;
        }
        let history = self.config.history();
        let responses = entry(&mut self.targets, target, || Responses::new(history));
        let bucket = bucket_of(event.ts);
        if responses.counts.add(bucket, counted) && notable {
            responses.recent.push(bucket, &event.request_id);
        }
    }

    fn evaluate(&mut self, evaluation: Evaluation) -> Vec<Alert> {
        if !evaluation.closed {
            return Vec::new();
        }
        let end = evaluation.end;
        self.targets.retain(|_, responses| {
            responses.counts.advance_to(end - 1);
            responses.counts.total()[ALL] > 0
        });
        if end.rem_euclid(JUDGE_EVERY_BUCKETS) != 0 {
            let (findings, holding) = &self.last;
            for alert in holding {
                self.holding.push(alert.clone());
            }
            return findings.clone();
        }
        let judged: Vec<(&String, &Responses, Vec<Moved>)> = self
            .targets
            .iter()
            .filter_map(|(target, responses)| {
                self.judge(responses, evaluation)
                    .map(|moved| (target, responses, moved))
            })
            .collect();
        let width = self.config.window_buckets();
        let window = (bucket_start(end - width), evaluation.at);
        // A measure that moved on enough of the targets judged is the infrastructure's.
        let infrastructure: Vec<Measure> = Measure::ALL
            .into_iter()
            .filter(|measure| {
                let on = judged
                    .iter()
                    .filter(|(_, _, moved)| {
                        moved
                            .iter()
                            .any(|m| m.measure == *measure && m.standing == Standing::Fires)
                    })
                    .count();
                on >= 2 && on as f64 >= self.config.infrastructure_share * judged.len() as f64
            })
            .collect();
        let mut findings = Vec::new();
        let mut holding = std::mem::take(&mut self.holding);
        if !infrastructure.is_empty() {
            let mut targets: Vec<&str> = judged
                .iter()
                .filter(|(_, _, moved)| moved.iter().any(|m| infrastructure.contains(&m.measure)))
                .map(|(target, _, _)| target.as_str())
                .collect();
            targets.sort_unstable();
            let names: Vec<&str> = infrastructure.iter().map(|m| m.name()).collect();
            let mut alert = Alert::firing(DETECTOR, Severity::Warning, Subject::Global, window);
            alert.observed = targets.len() as f64;
            alert.threshold = 2.0;
            alert.unit = "targets".to_owned();
            alert.summary = format!(
                "infrastructure-wide: {} changed on {} of {} targets ({}) against their baselines",
                names.join(", "),
                targets.len(),
                judged.len(),
                targets.join(", ")
            );
            findings.push(alert);
        }
        for (target, responses, moved) in &judged {
            let own: Vec<&Moved> = moved
                .iter()
                .filter(|m| !infrastructure.contains(&m.measure))
                .collect();
            let subject = Subject::Target((*target).clone());
            if own.iter().any(|m| m.standing == Standing::Fires) {
                let mut alert = Alert::firing(DETECTOR, Severity::Warning, subject, window);
                alert.observed = own.len() as f64;
                alert.threshold = 1.0;
                alert.unit = "measures".to_owned();
                let described: Vec<&str> = own.iter().map(|m| m.description.as_str()).collect();
                alert.summary = format!(
                    "{target} (this model only) answers differently over the last {}s: {}",
                    self.config.window_s,
                    described.join("; ")
                );
                alert.evidence.sample_request_ids = responses.recent.to_vec();
                findings.push(alert);
            } else if !own.is_empty() {
                holding.push(Alert::firing(DETECTOR, Severity::Warning, subject, window));
            }
        }
        let held = holding.take();
        for alert in &held {
            self.holding.push(alert.clone());
        }
        self.last = (findings.clone(), held);
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
    use warden_ingest::event::{ResponseInfo, RouteInfo};

    use super::*;
    use crate::test_support::{closed_at, event, feed, findings};

    fn answer(second: i64, target: &str, tokens: u64, finish: &str) -> AuditEvent {
        let mut event = event(EventKind::Response, second, "app", "10.0.0.1");
        event.route = Some(RouteInfo {
            endpoint: "/v1/chat/completions".into(),
            target_id: Some(target.into()),
            ..RouteInfo::default()
        });
        event.response = Some(ResponseInfo {
            status: 200,
            output_tokens: Some(tokens),
            finish_reason: Some(finish.into()),
            ..ResponseInfo::default()
        });
        event
    }

    /// Two hours of normal answers on `targets`: 200 ± 100 tokens, 4 % truncated.
    fn normal(detector: &mut ResponseDrift, targets: &[&str], from: i64, to: i64) {
        for second in (from..to).step_by(10) {
            for target in targets {
                let tokens = 100 + (second as u64 * 37 % 200);
                let finish = if second % 250 == 0 { "length" } else { "stop" };
                feed(detector, &answer(second, target, tokens, finish));
            }
        }
    }

    #[test]
    fn truncation_on_one_model_is_that_model_and_on_all_is_the_infrastructure() {
        let targets = ["llama-8b", "llama-70b", "mistral"];
        let mut detector = ResponseDrift::new(ResponseDriftConfig::default());
        normal(&mut detector, &targets, 0, 7_200);
        assert!(detector.evaluate(closed_at(7_200)).is_empty());

        // One model starts cutting answers short (max tokens lowered upstream).
        let mut one = detector.clone();
        normal(&mut one, &targets[1..], 7_200, 8_100);
        for second in (7_200..8_100).step_by(10) {
            feed(&mut one, &answer(second, "llama-8b", 64, "length"));
        }
        let alerts = one.evaluate(closed_at(8_100));
        assert_eq!(
            findings(&alerts),
            [("target:llama-8b".to_owned(), Severity::Warning)]
        );
        assert!(
            alerts[0].summary.contains("this model only"),
            "{}",
            alerts[0].summary
        );
        assert!(
            alerts[0].summary.contains("truncated"),
            "{}",
            alerts[0].summary
        );

        // Every model at once: the infrastructure (a gateway's timeout, a shared limit).
        let mut all = detector.clone();
        for second in (7_200..8_100).step_by(10) {
            for target in targets {
                feed(&mut all, &answer(second, target, 64, "length"));
            }
        }
        let alerts = all.evaluate(closed_at(8_100));
        assert_eq!(
            findings(&alerts),
            [("global".to_owned(), Severity::Warning)]
        );
        assert!(
            alerts[0].summary.starts_with("infrastructure-wide")
                && alerts[0].summary.contains("3 of 3"),
            "{}",
            alerts[0].summary
        );
    }

    #[test]
    fn normal_variation_raises_nothing() {
        let mut detector = ResponseDrift::new(ResponseDriftConfig::default());
        normal(&mut detector, &["llama-8b"], 0, 14_400);
        for hour in 2..=4 {
            assert!(detector.evaluate(closed_at(hour * 3_600)).is_empty());
            assert!(detector.take_holding().is_empty());
        }
    }

    #[test]
    fn the_config_is_checked() {
        let config = ResponseDriftConfig {
            token_factor: 1.0,
            share_rise: 0.0,
            ..ResponseDriftConfig::default()
        };
        let errors = config.validate().join("\n");
        assert!(errors.contains("token_factor"), "{errors}");
        assert!(errors.contains("share_rise"), "{errors}");
    }
}
