//! Single-source spike: one IP or one client sending more than `max_requests_per_hour`
//! requests over a rolling hour (seed 000: "50,000 requests/hour from single source usually
//! indicates application bug"), with an early projection so a runaway loop is caught minutes
//! in rather than when the hour is spent.
//!
//! - **projected** (warning): the rate of the last `projection_window_s`, extrapolated to an
//!   hour, reaches the limit. The rate is the requests of the window's whole minutes plus
//!   those of the current minute so far, over the time that covers (the whole minutes plus
//!   the seconds elapsed): a partly elapsed minute never counts as a whole one, so the
//!   projection does not dip at every minute boundary;
//! - **over** (critical): the rolling hour holds the limit or more.
//!
//! An alert resolves once both measures are below [`RESOLVE_RATIO`] of the limit.
//!
//! Sources keep per-minute counts for an hour (60 counters each, so a hundred thousand busy
//! IPs cost about 50 MB) and are forgotten after an hour of silence. A source crossing either
//! line is noted as it is counted, so early evaluations look at those sources only.

use hashbrown::{HashMap, HashSet};

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use warden_ingest::EventKind;
use warden_ingest::alert::{Alert, Severity, Subject};
use warden_ingest::event_row::EventRow;

use crate::buckets::BucketCounts;
use crate::detector::{
    Detector, Holding, Judgement, RESOLVE_RATIO, RecentIds, SectionCheck, Standing, client_of,
    entry,
};
use crate::engine::Evaluation;

const DETECTOR: &str = "single_source";
const MINUTES_PER_HOUR: i64 = 60;

/// `[detect.single_source]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SingleSourceConfig {
    pub enabled: bool,
    /// Requests per rolling hour from one IP or one client.
    pub max_requests_per_hour: u64,
    /// The recent stretch the hourly rate is projected from, in seconds (whole minutes).
    pub projection_window_s: i64,
    pub cooldown_s: i64,
}

impl Default for SingleSourceConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_requests_per_hour: 50_000,
            projection_window_s: 300,
            cooldown_s: 900,
        }
    }
}

impl SingleSourceConfig {
    /// One message per problem, each naming its key.
    pub fn validate(&self) -> Vec<String> {
        let mut check = SectionCheck::new("detect.single_source");
        check.require(
            self.max_requests_per_hour > 0,
            "max_requests_per_hour",
            "must be positive",
        );
        check.require(
            (60..=3_600).contains(&self.projection_window_s) && self.projection_window_s % 60 == 0,
            "projection_window_s",
            "must be whole minutes between 60 and 3600",
        );
        check.cooldown(self.cooldown_s);
        check.finish()
    }

    fn projection_minutes(&self) -> i64 {
        (self.projection_window_s / 60).clamp(1, MINUTES_PER_HOUR)
    }
}

/// The last hour of one source, per minute.
#[derive(Debug, Clone)]
struct Source {
    minutes: BucketCounts,
    recent: RecentIds,
}

/// What the last hour of one source says.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Rates {
    hour: u64,
    projected: f64,
}

impl Source {
    /// The rates at `at`: the rolling hour's count, and the hourly rate projected from the
    /// last `projection_minutes` whole minutes and the current minute so far.
    fn rates(&self, at: DateTime<Utc>, projection_minutes: i64) -> Rates {
        let minute = at.timestamp().div_euclid(60);
        let elapsed_s =
            (at.timestamp() - minute * 60) as f64 + f64::from(at.timestamp_subsec_nanos()) / 1e9;
        let whole_minutes = self.minutes.sum(minute - projection_minutes, minute);
        let this_minute = self.minutes.sum(minute, minute + 1);
        let covered_s = (projection_minutes * 60) as f64 + elapsed_s;
        Rates {
            hour: self.minutes.sum(minute - MINUTES_PER_HOUR + 1, minute + 1),
            projected: (whole_minutes + this_minute) as f64 * 3_600.0 / covered_s,
        }
    }
}

/// The single-source detector.
#[derive(Debug, Clone)]
pub struct SingleSource {
    config: SingleSourceConfig,
    ips: HashMap<String, Source>,
    clients: HashMap<String, Source>,
    /// Sources over either line since the last closed evaluation.
    ip_candidates: HashSet<String>,
    client_candidates: HashSet<String>,
    holding: Holding,
}

impl SingleSource {
    pub fn new(config: SingleSourceConfig) -> Self {
        Self {
            config,
            ips: HashMap::new(),
            clients: HashMap::new(),
            ip_candidates: HashSet::new(),
            client_candidates: HashSet::new(),
            holding: Holding::default(),
        }
    }

    fn judge(&self, source: &Source, subject: Subject, evaluation: Evaluation) -> Judgement {
        let projection_minutes = self.config.projection_minutes();
        let rates = source.rates(evaluation.at, projection_minutes);
        let limit = self.config.max_requests_per_hour;
        let window = (evaluation.at - TimeDelta::hours(1), evaluation.at);
        let hour = Standing::of(rates.hour as f64, limit as f64);
        let projected = Standing::of(rates.projected, limit as f64);
        let (severity, observed, summary) = if hour == Standing::Fires {
            let summary = format!("{} requests in the last hour from {subject}", rates.hour);
            (Severity::Critical, rates.hour as f64, summary)
        } else if projected == Standing::Fires {
            let summary = format!(
                "{subject} is on course for {:.0} requests this hour (from the last {} minutes)",
                rates.projected, projection_minutes
            );
            (Severity::Warning, rates.projected, summary)
        } else if hour.worst(projected) == Standing::Holds {
            return Judgement::Hold(Alert::firing(DETECTOR, Severity::Warning, subject, window));
        } else {
            return Judgement::Clear;
        };
        let mut alert = Alert::firing(DETECTOR, severity, subject, window);
        alert.observed = observed;
        alert.threshold = limit as f64;
        alert.unit = "requests/hour".to_owned();
        alert.summary = format!("{summary}; the limit is {limit}");
        alert.evidence.sample_request_ids = source.recent.to_vec();
        alert.runbook = Some("runaway_cost".to_owned());
        Judgement::Fire(alert)
    }
}

/// Counts one request (standing for `weight`) of `key` at `at`, and notes the source in
/// `candidates` if it is over either line. A source already noted is not judged again (its
/// rates are a sum over the hour): that is the closed evaluation's job.
fn count(
    (sources, candidates): (&mut HashMap<String, Source>, &mut HashSet<String>),
    key: &str,
    at: DateTime<Utc>,
    (request_id, weight): (&str, u64),
    config: &SingleSourceConfig,
) {
    let minute = at.timestamp().div_euclid(60);
    let source = entry(sources, key, || Source {
        minutes: BucketCounts::new(MINUTES_PER_HOUR as usize),
        recent: RecentIds::default(),
    });
    source.minutes.add(minute, weight);
    source.recent.push(minute, request_id);
    let limit = config.max_requests_per_hour;
    // The running total bounds the hour from above: most sources stop here.
    if source.minutes.total() < limit / MINUTES_PER_HOUR as u64 * config.projection_minutes() as u64
        || candidates.contains(key)
    {
        return;
    }
    let rates = source.rates(at, config.projection_minutes());
    if rates.hour >= limit || rates.projected >= limit as f64 {
        candidates.insert(key.to_owned());
    }
}

impl Detector for SingleSource {
    fn observe(&mut self, event: &EventRow<'_>) {
        if event.kind != EventKind::Request {
            return;
        }
        let request = (&*event.request_id, event.weight());
        if let Some(ip) = event.client.ip.as_deref() {
            let ips = (&mut self.ips, &mut self.ip_candidates);
            count(ips, ip, event.ts, request, &self.config);
        }
        if let Some(client) = client_of(event) {
            let clients = (&mut self.clients, &mut self.client_candidates);
            count(clients, client, event.ts, request, &self.config);
        }
    }

    fn evaluate(&mut self, evaluation: Evaluation) -> Vec<Alert> {
        let mut findings = Vec::new();
        if !evaluation.closed {
            for ip in &self.ip_candidates {
                if let Some(source) = self.ips.get(ip)
                    && let Judgement::Fire(alert) =
                        self.judge(source, Subject::Ip(ip.clone()), evaluation)
                {
                    findings.push(alert);
                }
            }
            for client in &self.client_candidates {
                if let Some(source) = self.clients.get(client)
                    && let Judgement::Fire(alert) =
                        self.judge(source, Subject::Client(client.clone()), evaluation)
                {
                    findings.push(alert);
                }
            }
            return findings;
        }
        let minute = evaluation.at.timestamp().div_euclid(60);
        for sources in [&mut self.ips, &mut self.clients] {
            sources.retain(|_, source| {
                source.minutes.advance_to(minute);
                source.minutes.total() > 0
            });
        }
        self.ip_candidates.clear();
        self.client_candidates.clear();
        // Only a source with RESOLVE_RATIO of the limit in its hour so far can fire or hold.
        let floor = (self.config.max_requests_per_hour as f64 * RESOLVE_RATIO
            / MINUTES_PER_HOUR as f64
            * self.config.projection_minutes() as f64) as u64;
        for (ip, source) in self.ips.iter().filter(|(_, s)| s.minutes.total() >= floor) {
            let judgement = self.judge(source, Subject::Ip(ip.clone()), evaluation);
            findings.extend(self.holding.sort(judgement));
        }
        for (client, source) in self
            .clients
            .iter()
            .filter(|(_, s)| s.minutes.total() >= floor)
        {
            let judgement = self.judge(source, Subject::Client(client.clone()), evaluation);
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
    use crate::test_support::{closed_at, early_at, feed, findings, request};

    fn detector() -> SingleSource {
        SingleSource::new(SingleSourceConfig {
            max_requests_per_hour: 6_000,
            ..SingleSourceConfig::default()
        })
    }

    #[test]
    fn a_busy_source_is_projected_early_then_found_over_the_hour() {
        let mut detector = detector();
        // 20 requests a second (72,000/hour against a limit of 6,000) from one IP, spread
        // over clients so only the IP is over.
        let mut first_warning = None;
        for i in 0..6_400 {
            let second = i / 20;
            let client = format!("app-{}", i % 50);
            feed(&mut detector, &request(second, &client, "198.51.100.7"));
            if i % 20 == 19 && first_warning.is_none() {
                let found = findings(&detector.evaluate(early_at(second)));
                if !found.is_empty() {
                    assert_eq!(found, [("ip:198.51.100.7".to_owned(), Severity::Warning)]);
                    first_warning = Some(second);
                }
            }
        }
        // 500 requests in the 5-minute projection window are 6,000 an hour: 25 s in.
        let first_warning = first_warning.expect("projected");
        assert!(first_warning <= 30, "{first_warning}");
        let found = findings(&detector.evaluate(closed_at(320)));
        assert_eq!(found, [("ip:198.51.100.7".to_owned(), Severity::Critical)]);
    }

    #[test]
    fn steady_sources_under_the_limit_raise_nothing_and_idle_ones_are_forgotten() {
        let mut detector = detector();
        // 5,400 an hour from one client, evenly, judged at every minute.
        for minute in 0..60 {
            for i in minute * 90..(minute + 1) * 90 {
                feed(&mut detector, &request(i * 2 / 3, "app-a", "10.0.0.1"));
            }
            assert!(detector.evaluate(closed_at((minute + 1) * 60)).is_empty());
        }
        assert!(detector.evaluate(early_at(3_599)).is_empty());
        detector.evaluate(closed_at(3 * 3_600));
        assert!(detector.ips.is_empty() && detector.clients.is_empty());
    }

    #[test]
    fn a_steady_source_over_the_line_fires_once_and_never_flaps() {
        use crate::engine::Engine;
        use warden_ingest::alert::AlertStatus;
        use warden_ingest::event_row::EventRow;
        // 60,000 requests an hour (1,000 a minute) from one client for two hours, against
        // the default 50,000: the projection fires in the first minutes and the hour goes
        // over after 50 minutes; it must never resolve in between (it used to at every
        // minute boundary, when the projection counted the new minute as a whole one).
        let detector = SingleSource::new(SingleSourceConfig::default());
        let mut engine = Engine::new(vec![Box::new(detector)], TimeDelta::seconds(5));
        let mut published = Vec::new();
        for i in 0..120_000 {
            let second = i * 60 / 1_000;
            let event = request(second, "app-a", &format!("10.0.{}.{}", i % 200, i % 100));
            published.extend(engine.take(&EventRow::from(&event)));
        }
        let changes: Vec<(AlertStatus, Severity)> = published
            .iter()
            .filter(|alert| alert.subject.to_string() == "client:app-a")
            .map(|alert| (alert.status, alert.severity))
            .collect();
        assert_eq!(changes[0], (AlertStatus::Firing, Severity::Warning));
        assert!(
            changes
                .iter()
                .all(|(status, _)| *status == AlertStatus::Firing),
            "never resolved: {changes:?}"
        );
        // The escalation, then a reminder per 15-minute cooldown at most.
        assert!(changes.len() <= 2 + 120 / 15, "{changes:?}");
    }

    #[test]
    fn the_config_is_checked() {
        let config = SingleSourceConfig {
            projection_window_s: 90,
            max_requests_per_hour: 0,
            ..SingleSourceConfig::default()
        };
        let errors = config.validate().join("\n");
        assert!(errors.contains("projection_window_s"), "{errors}");
        assert!(errors.contains("max_requests_per_hour"), "{errors}");
    }
}
