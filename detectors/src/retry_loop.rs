//! Retry loops (seed 000: "identical requests repeated rapidly indicate retry loops";
//! "exponential backoff retry mechanisms creating request amplification"; "network timeout
//! handling creating infinite retry loops"). Two findings, per client:
//!
//! - `retry_loop`: one client sending the same request (same `prompt_hash`, the hash of the
//!   normalized request) `min_repeats` times or more within the window; critical from
//!   `critical_repeats`;
//! - `retry_amplification` (warning): a client whose calls mostly fail upstream (429 or 5xx,
//!   at least `amplification_error_share` of its responses) while its request rate is
//!   `amplification_factor` times its median rate of the windows before: retries stacking up
//!   on a struggling endpoint instead of backing off.
//!
//! The Kafka key of an event is its client's token, so one worker sees all of a client's
//! requests and these counts are exact under scale-out.

use hashbrown::hash_map::Entry;
use hashbrown::{HashMap, HashSet};
use std::hash::BuildHasher;

use chrono::TimeDelta;
use serde::{Deserialize, Serialize};
use warden_ingest::EventKind;
use warden_ingest::alert::{Alert, Severity, SourceShare, Subject};
use warden_ingest::event_row::EventRow;

use crate::buckets::{BucketCounts, bucket_of, bucket_start, median};
use crate::detector::{
    Detector, Holding, Judgement, RecentIds, SectionCheck, Standing, TOP_SOURCES, buckets_in,
    client_of, entry,
};
use crate::engine::Evaluation;

/// How much of a prompt hash an alert shows.
const PROMPT_HASH_PREFIX: usize = 16;

/// `[detect.retry_loop]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryLoopConfig {
    pub enabled: bool,
    /// Window length, in seconds (a multiple of 10).
    pub window_s: i64,
    pub min_repeats: u64,
    pub critical_repeats: u64,
    pub amplification_factor: f64,
    pub amplification_error_share: f64,
    /// No amplification finding for a window with fewer requests than this.
    pub amplification_min_requests: u64,
    /// Earlier windows the amplification baseline is the median of.
    pub baseline_windows: usize,
    pub cooldown_s: i64,
}

impl Default for RetryLoopConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            window_s: 60,
            min_repeats: 10,
            critical_repeats: 50,
            amplification_factor: 3.0,
            amplification_error_share: 0.5,
            amplification_min_requests: 30,
            baseline_windows: 5,
            cooldown_s: 600,
        }
    }
}

impl RetryLoopConfig {
    /// One message per problem, each naming its key.
    pub fn validate(&self) -> Vec<String> {
        let mut check = SectionCheck::new("detect.retry_loop");
        check.window("window_s", self.window_s);
        check.require(
            self.min_repeats >= 2 && self.critical_repeats >= self.min_repeats,
            "min_repeats",
            "must be at least 2 and at most critical_repeats",
        );
        check.factor("amplification_factor", self.amplification_factor);
        check.share("amplification_error_share", self.amplification_error_share);
        check.baseline(self.baseline_windows, 1);
        check.cooldown(self.cooldown_s);
        check.finish()
    }

    fn window_buckets(&self) -> i64 {
        buckets_in(self.window_s)
    }
}

/// Repeats of one (client, request).
#[derive(Debug, Clone)]
enum Repeats {
    /// Seen once so far, in this bucket: most requests are, and never need more.
    Once(i64),
    /// Seen again: counted by bucket, with the prompt hash for the evidence.
    Again {
        counts: BucketCounts,
        prompt_hash: String,
    },
}

/// One client's traffic.
#[derive(Debug, Clone)]
struct Client {
    requests: BucketCounts,
    responses: BucketCounts,
    failures: BucketCounts,
    since: i64,
    recent: RecentIds,
}

/// The retry-loop detector.
#[derive(Debug, Clone)]
pub struct RetryLoop {
    config: RetryLoopConfig,
    /// By a hash of (client, prompt hash): a map entry without strings or counts for a
    /// request seen once.
    repeats: HashMap<u64, Repeats>,
    /// Which client each repeats entry belongs to, for the entries that repeat.
    repeat_clients: HashMap<u64, String>,
    clients: HashMap<String, Client>,
    /// The closed evaluation from which `repeats` is swept of entries with nothing left in
    /// the window. Once a window, not at every bucket: there is an entry per distinct
    /// request (most are seen once), and walking them all every bucket was most of this
    /// detector's time. Windows are summed by bucket, so older counts never show.
    next_sweep: i64,
    holding: Holding,
}

impl RetryLoop {
    pub fn new(config: RetryLoopConfig) -> Self {
        Self {
            config,
            repeats: HashMap::new(),
            repeat_clients: HashMap::new(),
            clients: HashMap::new(),
            next_sweep: i64::MIN,
            holding: Holding::default(),
        }
    }

    fn history(&self) -> usize {
        let windows = self.config.baseline_windows as i64 + 1;
        usize::try_from(self.config.window_buckets() * windows).unwrap_or(usize::MAX)
    }

    /// The clients in a retry loop; those close to one (between the resolve and the fire
    /// line) go to `holding`.
    fn judge_loops(&self, evaluation: Evaluation, holding: &mut Holding) -> Vec<Alert> {
        let (end, width) = (evaluation.end, self.config.window_buckets());
        let window = (bucket_start(end - width), evaluation.at);
        // The repeated requests of each client in the window, most repeated first.
        let mut by_client: HashMap<&str, Vec<(u64, &str)>> = HashMap::new();
        let mut close: HashSet<&str> = HashSet::new();
        for (key, client) in &self.repeat_clients {
            let Some(Repeats::Again {
                counts,
                prompt_hash,
            }) = self.repeats.get(key)
            else {
                continue;
            };
            let count = counts.sum(end - width, end);
            match Standing::of(count as f64, self.config.min_repeats as f64) {
                Standing::Fires => by_client
                    .entry(client)
                    .or_default()
                    .push((count, prompt_hash.as_str())),
                Standing::Holds => {
                    close.insert(client.as_str());
                }
                Standing::Clear => {}
            }
        }
        for client in close.into_iter().filter(|c| !by_client.contains_key(c)) {
            let subject = Subject::Client(client.to_owned());
            holding.push(Alert::firing(
                "retry_loop",
                Severity::Warning,
                subject,
                window,
            ));
        }
        let mut alerts = Vec::new();
        for (client, mut prompts) in by_client {
            prompts.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
            let most = prompts[0].0;
            let severity = if most >= self.config.critical_repeats {
                Severity::Critical
            } else {
                Severity::Warning
            };
            let subject = Subject::Client(client.to_owned());
            let mut alert = Alert::firing("retry_loop", severity, subject, window);
            alert.observed = most as f64;
            alert.threshold = self.config.min_repeats as f64;
            alert.unit = "identical requests".to_owned();
            alert.summary = format!(
                "{client} sent the same request {most} times in {}s ({} requests repeating)",
                self.config.window_s,
                prompts.len()
            );
            alert.evidence.top_sources = prompts
                .iter()
                .take(TOP_SOURCES)
                .map(|(count, prompt)| SourceShare {
                    source: format!(
                        "prompt_hash:{}",
                        prompt.get(..PROMPT_HASH_PREFIX).unwrap_or(prompt)
                    ),
                    value: *count as f64,
                })
                .collect();
            if let Some(state) = self.clients.get(client) {
                alert.evidence.sample_request_ids = state.recent.to_vec();
            }
            alert.runbook = Some("runaway_cost".to_owned());
            alerts.push(alert);
        }
        alerts
    }

    fn judge_amplification(
        &self,
        name: &str,
        client: &Client,
        evaluation: Evaluation,
    ) -> Judgement {
        let config = &self.config;
        let (end, width) = (evaluation.end, config.window_buckets());
        let requests = client.requests.sum(end - width, end);
        let responses = client.responses.sum(end - width, end);
        let failures = client.failures.sum(end - width, end);
        if requests < config.amplification_min_requests || responses == 0 {
            return Judgement::Clear;
        }
        let failure_share = failures as f64 / responses as f64;
        let baselines: Vec<f64> = (1..=config.baseline_windows as i64)
            .map(|i| (end - (i + 1) * width, end - i * width))
            .filter(|(from, _)| *from >= client.since)
            .map(|(from, to)| client.requests.sum(from, to) as f64)
            .collect();
        let Some(baseline) = median(baselines) else {
            return Judgement::Clear;
        };
        let ratio = requests as f64 / baseline.max(1.0);
        let window = (bucket_start(end - width), evaluation.at);
        // Both must hold: the failures and the growth.
        let failing = Standing::of(failure_share, config.amplification_error_share);
        let growing = Standing::of(ratio, config.amplification_factor);
        match (failing, growing) {
            (Standing::Fires, Standing::Fires) => {}
            (Standing::Clear, _) | (_, Standing::Clear) => return Judgement::Clear,
            _ => {
                let subject = Subject::Client(name.to_owned());
                let alert =
                    Alert::firing("retry_amplification", Severity::Warning, subject, window);
                return Judgement::Hold(alert);
            }
        }
        let subject = Subject::Client(name.to_owned());
        let mut alert = Alert::firing("retry_amplification", Severity::Warning, subject, window);
        alert.observed = requests as f64;
        alert.threshold = config.amplification_factor * baseline.max(1.0);
        alert.unit = "requests".to_owned();
        alert.summary = format!(
            "{name} sent {requests} requests in {}s, {ratio:.1}x its usual {baseline}, while \
             {:.0}% of its calls failed upstream: retries are amplifying",
            config.window_s,
            failure_share * 100.0
        );
        alert.evidence.sample_request_ids = client.recent.to_vec();
        alert.runbook = Some("runaway_cost".to_owned());
        Judgement::Fire(alert)
    }
}

impl Detector for RetryLoop {
    fn observe(&mut self, event: &EventRow<'_>) {
        let Some(name) = client_of(event) else {
            return;
        };
        if !matches!(event.kind, EventKind::Request | EventKind::Response) {
            return;
        }
        let bucket = bucket_of(event.ts);
        let history = self.history();
        let window = self.config.window_buckets() as usize;
        let client = entry(&mut self.clients, name, || Client {
            requests: BucketCounts::new(history),
            responses: BucketCounts::new(window),
            failures: BucketCounts::new(window),
            since: bucket,
            recent: RecentIds::default(),
        });
        client.since = client.since.min(bucket);
        match event.kind {
            EventKind::Request => {
                client.requests.add(bucket, 1);
                client.recent.push(bucket, &event.request_id);
            }
            EventKind::Response => {
                if let Some(response) = &event.response {
                    client.responses.add(bucket, 1);
                    if response.status == 429 || response.status >= 500 {
                        client.failures.add(bucket, 1);
                    }
                }
                return;
            }
            _ => return,
        }
        let Some(prompt_hash) = event
            .request
            .as_ref()
            .and_then(|r| r.prompt_hash.as_deref())
        else {
            return;
        };
        // 64 bits of a randomly seeded hash: two requests sharing a key by chance is not a
        // concern at any realistic number of entries.
        let key = self.repeats.hasher().hash_one((name, prompt_hash));
        match self.repeats.entry(key) {
            Entry::Vacant(vacant) => {
                vacant.insert(Repeats::Once(bucket));
            }
            Entry::Occupied(mut occupied) => match occupied.get_mut() {
                Repeats::Once(first) => {
                    let mut counts = BucketCounts::new(window);
                    counts.add(*first, 1);
                    counts.add(bucket, 1);
                    occupied.insert(Repeats::Again {
                        counts,
                        prompt_hash: prompt_hash.to_owned(),
                    });
                    self.repeat_clients.insert(key, name.to_owned());
                }
                Repeats::Again { counts, .. } => {
                    counts.add(bucket, 1);
                }
            },
        }
    }

    fn evaluate(&mut self, evaluation: Evaluation) -> Vec<Alert> {
        let end = evaluation.end;
        if evaluation.closed && end >= self.next_sweep {
            let keep_from = end - self.config.window_buckets();
            self.repeats.retain(|_, repeats| match repeats {
                Repeats::Once(bucket) => *bucket >= keep_from,
                Repeats::Again { counts, .. } => {
                    counts.advance_to(end - 1);
                    counts.total() > 0
                }
            });
            let repeats = &self.repeats;
            self.repeat_clients
                .retain(|key, _| repeats.contains_key(key));
            self.next_sweep = end + self.config.window_buckets();
        }
        if evaluation.closed {
            self.clients.retain(|_, client| {
                client.requests.advance_to(end - 1);
                client.responses.advance_to(end - 1);
                client.failures.advance_to(end - 1);
                client.requests.total() + client.responses.total() > 0
            });
        }
        let mut holding = std::mem::take(&mut self.holding);
        let mut findings = self.judge_loops(evaluation, &mut holding);
        if evaluation.closed {
            for (name, client) in &self.clients {
                let judgement = self.judge_amplification(name, client, evaluation);
                findings.extend(holding.sort(judgement));
            }
        }
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
    use warden_ingest::event::{RequestInfo, ResponseInfo};

    use super::*;
    use crate::test_support::{closed_at, early_at, event, feed, findings, request};

    fn prompt(second: i64, client: &str, prompt_hash: &str) -> AuditEvent {
        let mut event = request(second, client, "10.0.0.1");
        event.request = Some(RequestInfo {
            bytes: 100,
            prompt_hash: Some(prompt_hash.into()),
            ..RequestInfo::default()
        });
        event
    }

    fn response(second: i64, client: &str, status: u16) -> AuditEvent {
        let mut event = event(EventKind::Response, second, client, "10.0.0.1");
        event.response = Some(ResponseInfo {
            status,
            ..ResponseInfo::default()
        });
        event
    }

    #[test]
    fn the_same_request_repeated_is_a_retry_loop() {
        let mut detector = RetryLoop::new(RetryLoopConfig::default());
        // app-a: distinct prompts, many of them; app-b: one prompt every 5 s, then every 1 s.
        for i in 0..600 {
            feed(
                &mut detector,
                &prompt(i / 10, "app-a", &format!("{i:064x}")),
            );
        }
        for i in 0..9 {
            feed(&mut detector, &prompt(i * 5, "app-b", "deadbeef"));
        }
        assert!(detector.evaluate(early_at(44)).is_empty(), "9 < 10");
        feed(&mut detector, &prompt(45, "app-b", "deadbeef"));
        let alerts = detector.evaluate(early_at(45));
        assert_eq!(
            findings(&alerts),
            [("client:app-b".to_owned(), Severity::Warning)]
        );
        assert_eq!(
            alerts[0].evidence.top_sources[0].source,
            "prompt_hash:deadbeef"
        );
        for i in 0..60 {
            feed(&mut detector, &prompt(46 + i / 4, "app-b", "deadbeef"));
        }
        let alerts = detector.evaluate(closed_at(60));
        assert_eq!(
            findings(&alerts),
            [("client:app-b".to_owned(), Severity::Critical)]
        );
        // Requests seen once keep no strings.
        assert_eq!(detector.repeat_clients.len(), 1);
    }

    #[test]
    fn repeats_further_apart_than_the_window_never_add_up_and_are_swept() {
        let config = RetryLoopConfig::default();
        let window = config.window_s;
        let mut detector = RetryLoop::new(config);
        // Nine copies of one prompt every 1.5 windows: never two visits in a window, though
        // the entry lives on between sweeps.
        let mut second = 0;
        while second < window * 40 {
            for copy in 0..9 {
                feed(&mut detector, &prompt(second + copy, "app-a", "cafe"));
            }
            feed(
                &mut detector,
                &prompt(second + 9, "app-a", &format!("{second:x}")),
            );
            for bucket_second in (second..second + window * 3 / 2).step_by(10) {
                let alerts = detector.evaluate(closed_at(bucket_second));
                assert!(
                    alerts
                        .iter()
                        .all(|a| a.detector != "retry_loop" || a.observed < 10.0)
                );
            }
            second += window * 3 / 2;
        }
        // 9 repeats in each visit, never 10 in one window: no loop.
        assert!(detector.evaluate(early_at(second)).is_empty());
        // Requests seen once are swept within two windows, not kept forever.
        assert!(
            detector.repeats.len() <= 2 * 3 + 1,
            "{}",
            detector.repeats.len()
        );
    }

    #[test]
    fn retries_piling_up_on_failures_are_amplification() {
        let mut detector = RetryLoop::new(RetryLoopConfig::default());
        // Five minutes at 20 calls a minute, all fine; then a minute of 100 calls, 90 failing.
        for i in 0..100 {
            let second = i * 3;
            feed(&mut detector, &request(second, "app-a", "10.0.0.1"));
            feed(&mut detector, &response(second, "app-a", 200));
        }
        assert!(detector.evaluate(closed_at(300)).is_empty());
        for i in 0..100 {
            let second = 300 + i * 3 / 5;
            feed(&mut detector, &request(second, "app-a", "10.0.0.1"));
            let status = if i % 10 == 0 { 200 } else { 503 };
            feed(&mut detector, &response(second, "app-a", status));
        }
        let alerts = detector.evaluate(closed_at(360));
        assert_eq!(
            findings(&alerts),
            [("client:app-a".to_owned(), Severity::Warning)]
        );
        assert_eq!(alerts[0].detector, "retry_amplification");
        assert_eq!(alerts[0].observed, 100.0);
    }
}
