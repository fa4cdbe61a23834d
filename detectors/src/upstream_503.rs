//! Upstream 503 bursts (seed 000: "503s = capacity exceeded"), per target, telling capacity
//! exhaustion from a cold start.
//!
//! Over each window a target's upstream responses (not Warden's own refusals) are split by what the proxy recorded: 503s with
//! `error_type = "upstream_loading"` (the endpoint is scaled to zero or still loading its
//! model, and says so) are a **cold start**; any other upstream 503 is **capacity** (the
//! endpoint is up but turning calls away). Each share is judged separately, once the window
//! holds `min_responses`:
//!
//! - `capacity_503`: warning from `warning_share`, critical from `critical_share`;
//! - `cold_start_503` (info): a cold start that is hurting calls; it needs a minimum replica
//!   count or patience, not an incident.
//!
//! A share can fall as more responses come, so these findings wait for closed windows. An
//! alert resolves once its share is below [`RESOLVE_RATIO`](crate::detector::RESOLVE_RATIO)
//! of `warning_share`.

use hashbrown::HashMap;

use chrono::TimeDelta;
use serde::{Deserialize, Serialize};
use warden_ingest::EventKind;
use warden_ingest::alert::{Alert, Severity, Subject};
use warden_ingest::event_row::EventRow;

use crate::buckets::{BucketCounts, bucket_of, bucket_start};
use crate::detector::{
    Detector, Holding, RecentIds, SectionCheck, Standing, buckets_in, entry, target_of,
};
use crate::engine::Evaluation;

/// The `error_type` of a 503 the upstream sent while loading its model.
pub const LOADING_ERROR_TYPE: &str = "upstream_loading";

/// `[detect.upstream_503]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Upstream503Config {
    pub enabled: bool,
    /// Window length, in seconds (a multiple of 10).
    pub window_s: i64,
    /// No finding for a window with fewer responses than this.
    pub min_responses: u64,
    pub warning_share: f64,
    pub critical_share: f64,
    pub cooldown_s: i64,
}

impl Default for Upstream503Config {
    fn default() -> Self {
        Self {
            enabled: true,
            window_s: 120,
            min_responses: 20,
            warning_share: 0.2,
            critical_share: 0.5,
            cooldown_s: 600,
        }
    }
}

impl Upstream503Config {
    /// One message per problem, each naming its key.
    pub fn validate(&self) -> Vec<String> {
        let mut check = SectionCheck::new("detect.upstream_503");
        check.window("window_s", self.window_s);
        check.share("warning_share", self.warning_share);
        check.share("critical_share", self.critical_share);
        check.require(
            self.critical_share >= self.warning_share,
            "critical_share",
            "must be at least warning_share",
        );
        check.cooldown(self.cooldown_s);
        check.finish()
    }

    fn window_buckets(&self) -> i64 {
        buckets_in(self.window_s)
    }
}

/// One target's responses.
#[derive(Debug, Clone)]
struct Responses {
    all: BucketCounts,
    capacity: BucketCounts,
    loading: BucketCounts,
    recent_503: RecentIds,
}

/// The upstream-503 detector.
#[derive(Debug, Clone)]
pub struct Upstream503 {
    config: Upstream503Config,
    targets: HashMap<String, Responses>,
    holding: Holding,
}

impl Upstream503 {
    pub fn new(config: Upstream503Config) -> Self {
        Self {
            config,
            targets: HashMap::new(),
            holding: Holding::default(),
        }
    }

    /// The target's findings; the holding ones go to `holding`.
    fn judge(
        &self,
        target: &str,
        responses: &Responses,
        evaluation: Evaluation,
        holding: &mut Holding,
    ) -> Vec<Alert> {
        let (end, width) = (evaluation.end, self.config.window_buckets());
        let all = responses.all.sum(end - width, end);
        if all < self.config.min_responses {
            return Vec::new();
        }
        let window = (bucket_start(end - width), evaluation.at);
        let mut alerts = Vec::new();
        let capacity = responses.capacity.sum(end - width, end);
        let loading = responses.loading.sum(end - width, end);
        for (detector, count, cause) in [
            ("capacity_503", capacity, "capacity exhausted"),
            ("cold_start_503", loading, "model loading (cold start)"),
        ] {
            let share = count as f64 / all as f64;
            match Standing::of(share, self.config.warning_share) {
                Standing::Fires => {}
                Standing::Holds => {
                    let subject = Subject::Target(target.to_owned());
                    holding.push(Alert::firing(detector, Severity::Info, subject, window));
                    continue;
                }
                Standing::Clear => continue,
            }
            let severity = match detector {
                "cold_start_503" => Severity::Info,
                _ if share >= self.config.critical_share => Severity::Critical,
                _ => Severity::Warning,
            };
            let subject = Subject::Target(target.to_owned());
            let mut alert = Alert::firing(detector, severity, subject, window);
            alert.observed = (share * 1_000.0).round() / 1_000.0;
            alert.threshold = self.config.warning_share;
            alert.unit = "share of responses".to_owned();
            alert.summary = format!(
                "{count} of {all} responses from {target} were 503 ({cause}) in {}s",
                self.config.window_s
            );
            alert.evidence.sample_request_ids = responses.recent_503.to_vec();
            alerts.push(alert);
        }
        alerts
    }
}

impl Detector for Upstream503 {
    fn observe(&mut self, event: &EventRow<'_>) {
        if event.kind != EventKind::Response {
            return;
        }
        let (Some(target), Some(response)) = (target_of(event), event.response.as_ref()) else {
            return;
        };
        // Only what the upstream answered counts: Warden's own refusals (a bad key, a bad
        // request, an unavailable audit trail) say nothing of the endpoint.
        let error_type = response.error_type.as_deref();
        if error_type.is_some_and(|error_type| !error_type.starts_with("upstream")) {
            return;
        }
        let history = self.config.window_buckets() as usize;
        let responses = entry(&mut self.targets, target, || Responses {
            all: BucketCounts::new(history),
            capacity: BucketCounts::new(history),
            loading: BucketCounts::new(history),
            recent_503: RecentIds::default(),
        });
        let bucket = bucket_of(event.ts);
        responses.all.add(bucket, 1);
        if response.status != 503 {
            return;
        }
        if error_type == Some(LOADING_ERROR_TYPE) {
            responses.loading.add(bucket, 1);
        } else {
            responses.capacity.add(bucket, 1);
        }
        responses.recent_503.push(bucket, &event.request_id);
    }

    fn evaluate(&mut self, evaluation: Evaluation) -> Vec<Alert> {
        if !evaluation.closed {
            return Vec::new();
        }
        let end = evaluation.end;
        self.targets.retain(|_, responses| {
            for counts in [
                &mut responses.all,
                &mut responses.capacity,
                &mut responses.loading,
            ] {
                counts.advance_to(end - 1);
            }
            responses.all.total() > 0
        });
        let mut holding = std::mem::take(&mut self.holding);
        let findings = self
            .targets
            .iter()
            .flat_map(|(target, responses)| self.judge(target, responses, evaluation, &mut holding))
            .collect();
        self.holding = holding;
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
    use crate::test_support::{closed_at, early_at, event, feed, findings};

    fn response(second: i64, status: u16, error_type: Option<&str>) -> AuditEvent {
        let mut event = event(EventKind::Response, second, "app-a", "10.0.0.1");
        event.response = Some(ResponseInfo {
            status,
            error_type: error_type.map(Into::into),
            ..ResponseInfo::default()
        });
        event
    }

    #[test]
    fn capacity_503s_are_told_from_a_cold_start() {
        let mut detector = Upstream503::new(Upstream503Config::default());
        // Two minutes: 60 fine, 40 capacity 503s (40 %: warning).
        for i in 0..100 {
            let (status, error_type) = if i % 5 < 2 {
                (503, Some("upstream_unavailable"))
            } else {
                (200, None)
            };
            feed(&mut detector, &response(i * 6 / 5, status, error_type));
        }
        assert!(
            detector.evaluate(early_at(119)).is_empty(),
            "shares wait for closed windows"
        );
        let alerts = detector.evaluate(closed_at(120));
        assert_eq!(
            findings(&alerts),
            [("target:llama".to_owned(), Severity::Warning)]
        );
        assert_eq!(alerts[0].detector, "capacity_503");
        assert_eq!(alerts[0].observed, 0.4);

        // The next two minutes: the endpoint scaled to zero and is loading.
        let mut detector = Upstream503::new(Upstream503Config::default());
        for i in 0..30 {
            feed(
                &mut detector,
                &response(i * 4, 503, Some(LOADING_ERROR_TYPE)),
            );
        }
        let alerts = detector.evaluate(closed_at(120));
        assert_eq!(
            findings(&alerts),
            [("target:llama".to_owned(), Severity::Info)]
        );
        assert_eq!(alerts[0].detector, "cold_start_503");
    }

    #[test]
    fn few_responses_or_warden_refusals_raise_nothing() {
        let mut detector = Upstream503::new(Upstream503Config::default());
        for i in 0..10 {
            feed(
                &mut detector,
                &response(i, 503, Some("upstream_unavailable")),
            );
        }
        for i in 0..30 {
            feed(
                &mut detector,
                &response(20 + i, 503, Some("audit_unavailable")),
            );
        }
        let alerts = detector.evaluate(closed_at(120));
        assert!(alerts.is_empty(), "{alerts:?}");
    }
}
