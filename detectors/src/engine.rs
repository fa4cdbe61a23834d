//! The detector engine: event time, evaluations and the alert books, without any IO.
//!
//! The engine is fed events one at a time and returns the alerts to publish. It is the same
//! code under `warden detect` (events from Kafka), `warden detect --replay` (events from the
//! archive) and the scenario tests (events from the generator).
//!
//! # Time
//!
//! Everything is event time. The *watermark* is the newest event time seen minus the allowed
//! lateness: the engine assumes no event older than that is still to come. Two kinds of
//! evaluation follow from it:
//!
//! - a **closed** evaluation each time the watermark enters a new [bucket](crate::buckets):
//!   windows end at the watermark's bucket, every bucket in them is complete, and an open
//!   alert whose condition no longer holds is resolved. When the watermark jumps (a lull in
//!   traffic, or events counted ahead of a clock that then catches up with them), every
//!   bucket it passed that ends a window with events in it is evaluated in turn: each bucket
//!   up to [`MAX_CATCH_UP_BUCKETS`] after a bucket with events, so neither a burst just before
//!   a lull nor anything in a backlog is skipped, while an empty day costs one evaluation;
//! - an **early** evaluation each time the newest event time enters a new second: windows end
//!   after the newest event's bucket, still filling. Detectors whose condition can only grow
//!   with more events (counts against a threshold) fire from it, so an alert follows the
//!   event that crossed the threshold within a second instead of a bucket plus the lateness.
//!   An early evaluation never resolves anything.
//!
//! Events behind the watermark are still counted (they reach the windows not yet evaluated
//! and the baselines) and reported as late.
//!
//! # Overrides
//!
//! The detectors come in [sets](DetectorSet): the default set watches every environment not
//! named by an override; an environment that is (`[[detect.overrides]] environment = ...`)
//! is watched on its own by a set built from its settings, and its alerts end their dedup key
//! in `@{environment}`. Within a set, a client or target with its own settings has its own
//! detectors, fed only its events, which alone report on that subject (and, for a client, on
//! its tokens); the set's main detectors see every event of the set (a global count includes
//! the client) but leave those subjects to them.

use std::collections::BTreeSet;

use hashbrown::HashMap;

use chrono::{DateTime, TimeDelta, Utc};
use warden_ingest::action::ControlAction;
use warden_ingest::alert::{Alert, Subject};
use warden_ingest::event_row::EventRow;

use crate::buckets::{BUCKET_SECONDS, bucket_of, bucket_start};
use crate::detector::Detector;
use crate::lifecycle::AlertBook;

/// After a bucket with events, the buckets passed by a jump of the watermark are evaluated
/// for this long (an hour): beyond that its windows are long gone from every detector.
pub const MAX_CATCH_UP_BUCKETS: i64 = 3_600 / BUCKET_SECONDS;

/// How windows are cut for one evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Evaluation {
    /// Windows end before this bucket.
    pub end: i64,
    /// Whether every bucket before `end` is complete. An early evaluation (`false`) fires
    /// only; detectors with conditions that can also shrink as events come return nothing.
    pub closed: bool,
    /// The event time the evaluation stands for, and its alerts' window end: the start of
    /// bucket `end` when closed, the newest event time when early.
    pub at: DateTime<Utc>,
}

/// Counts the engine keeps about its input.
/// Which subjects an engine reports on. Events are partitioned by client token, so with
/// several detect workers each sees every event of its tokens but only a share of
/// everything else: each worker reports on tokens over its own partitions ([`Keyed`]), and
/// one worker, reading every event passed on to it, reports on the rest ([`Shared`]).
///
/// [`Keyed`]: Subjects::Keyed
/// [`Shared`]: Subjects::Shared
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subjects {
    /// Every subject: one engine sees every event (rehearsals, replays).
    All,
    /// Subjects that follow the partition key: tokens.
    Keyed,
    /// Subjects that do not: global, per target, client, IP and country.
    Shared,
}

impl Subjects {
    /// Whether token subjects are reported.
    pub fn tokens(self) -> bool {
        self != Self::Shared
    }

    /// Whether subjects other than tokens are reported.
    pub fn others(self) -> bool {
        self != Self::Keyed
    }

    pub fn include(self, subject: &Subject) -> bool {
        let keyed = matches!(subject, Subject::Token(_));
        match self {
            Self::All => true,
            Self::Keyed => keyed,
            Self::Shared => !keyed,
        }
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EngineStats {
    pub events: u64,
    /// Events that arrived behind the watermark.
    pub late: u64,
}

/// Detectors and the alert book of each.
pub type Detectors = Vec<(Box<dyn Detector>, AlertBook)>;

/// A client or a target with settings of its own.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    Client(String),
    Target(String),
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Client(name) => write!(f, "client:{name}"),
            Self::Target(id) => write!(f, "target:{id}"),
        }
    }
}

impl Scope {
    fn matches(&self, event: &EventRow<'_>) -> bool {
        match self {
            Self::Client(name) => event.client.name.as_deref() == Some(name.as_str()),
            Self::Target(id) => {
                event
                    .route
                    .as_ref()
                    .and_then(|route| route.target_id.as_deref())
                    == Some(id.as_str())
            }
        }
    }
}

/// The detectors watching one environment (or, for the default set, every environment
/// without a set of its own): the main detectors, and those of each scope with its own
/// settings.
#[derive(Debug, Clone)]
pub struct DetectorSet {
    /// `None` for the default set.
    environment: Option<String>,
    /// `groups[0]` is the main detectors; `groups[i + 1]` those of `scopes[i]`.
    groups: Vec<Detectors>,
    scopes: Vec<Scope>,
    /// The client of each token seen, when a client has its own detectors: they report on
    /// its tokens too.
    token_clients: HashMap<String, String>,
}

impl DetectorSet {
    /// `scoped` are the detectors of each client or target with settings of its own.
    pub fn new(
        environment: Option<String>,
        main: Vec<Box<dyn Detector>>,
        scoped: Vec<(Scope, Vec<Box<dyn Detector>>)>,
    ) -> Self {
        let books = |detectors: Vec<Box<dyn Detector>>| -> Detectors {
            detectors
                .into_iter()
                .map(|detector| (detector, AlertBook::default()))
                .collect()
        };
        let mut groups = vec![books(main)];
        let mut scopes = Vec::new();
        for (scope, detectors) in scoped {
            scopes.push(scope);
            groups.push(books(detectors));
        }
        Self {
            environment,
            groups,
            scopes,
            token_clients: HashMap::new(),
        }
    }

    fn observe(&mut self, event: &EventRow<'_>) {
        for (detector, _) in &mut self.groups[0] {
            detector.observe(event);
        }
        if self.scopes.is_empty() {
            return;
        }
        for (scope, group) in self.scopes.iter().zip(&mut self.groups[1..]) {
            if scope.matches(event) {
                for (detector, _) in group {
                    detector.observe(event);
                }
            }
        }
        if let (Some(token), Some(client)) = (&event.client.token_id, &event.client.name)
            && self.token_clients.get(&**token).map(String::as_str) != Some(&**client)
        {
            self.token_clients
                .insert((**token).to_owned(), (**client).to_owned());
        }
    }

    /// Tells every detector of a control action.
    fn control(&mut self, action: &ControlAction) {
        for group in &mut self.groups {
            for (detector, _) in group {
                detector.control(action);
            }
        }
    }

    /// The group that reports on `subject`: its scope's, else the main one.
    fn group_of(&self, subject: &Subject) -> usize {
        let client = match subject {
            Subject::Client(name) => Some(name),
            Subject::Token(token) => self.token_clients.get(token),
            _ => None,
        };
        let position = match (client, subject) {
            (Some(client), _) => self
                .scopes
                .iter()
                .position(|scope| matches!(scope, Scope::Client(name) if name == client)),
            (None, Subject::Target(target)) => self
                .scopes
                .iter()
                .position(|scope| matches!(scope, Scope::Target(id) if id == target)),
            (None, _) => None,
        };
        position.map_or(0, |index| index + 1)
    }

    /// The findings of one evaluation of every group, each kept by the group that reports on
    /// its subject, as publications.
    fn evaluate(&mut self, evaluation: Evaluation, subjects: Subjects) -> Vec<Alert> {
        let mut alerts = Vec::new();
        for index in 0..self.groups.len() {
            for detector_index in 0..self.groups[index].len() {
                let (detector, _) = &mut self.groups[index][detector_index];
                let cooldown = detector.cooldown();
                let mut findings = detector.evaluate(evaluation);
                let mut holding = detector.take_holding();
                for list in [&mut findings, &mut holding] {
                    list.retain(|finding| {
                        subjects.include(&finding.subject)
                            && (self.scopes.is_empty() || self.group_of(&finding.subject) == index)
                    });
                    if let Some(environment) = &self.environment {
                        for finding in list.iter_mut() {
                            if finding.environment.is_none() {
                                finding.dedup_key = format!("{}@{environment}", finding.dedup_key);
                                finding.environment = Some(environment.clone());
                            }
                        }
                    }
                }
                let (_, book) = &mut self.groups[index][detector_index];
                if evaluation.closed {
                    let holding: Vec<String> = holding.into_iter().map(|h| h.dedup_key).collect();
                    alerts.extend(book.settle(findings, &holding, evaluation.at, cooldown));
                } else {
                    for finding in findings {
                        let key = finding.dedup_key.clone();
                        alerts.extend(book.update(&key, Some(finding), evaluation.at, cooldown));
                    }
                }
            }
        }
        alerts
    }
}

/// The detectors of one worker, their alert books and its event-time clock.
#[derive(Debug, Clone)]
pub struct Engine {
    /// Which findings this engine reports.
    subjects: Subjects,
    /// `sets[0]` is the default set.
    sets: Vec<DetectorSet>,
    lateness: TimeDelta,
    newest: Option<DateTime<Utc>>,
    /// `newest` minus `lateness`, kept with it: every event counted is compared with it.
    watermark: Option<DateTime<Utc>>,
    /// The bucket the last closed evaluation ended at.
    closed_until: Option<i64>,
    /// Buckets with events counted that no closed evaluation has passed yet.
    pending_buckets: BTreeSet<i64>,
    /// The last bucket added to `pending_buckets` (most events fall in the same one).
    last_pending: Option<i64>,
    /// The newest bucket with events that closed evaluations have passed.
    passed_bucket: Option<i64>,
    /// The second of the last early evaluation.
    early_second: Option<i64>,
    stats: EngineStats,
}

impl Engine {
    /// One set of detectors for every event.
    pub fn new(detectors: Vec<Box<dyn Detector>>, lateness: TimeDelta) -> Self {
        Self::with_sets(
            DetectorSet::new(None, detectors, Vec::new()),
            Vec::new(),
            lateness,
        )
    }

    /// `default` for every environment not in `environments`, which each have their own set.
    pub fn with_sets(
        default: DetectorSet,
        environments: Vec<DetectorSet>,
        lateness: TimeDelta,
    ) -> Self {
        Self {
            sets: std::iter::once(default).chain(environments).collect(),
            lateness,
            subjects: Subjects::All,
            newest: None,
            watermark: None,
            closed_until: None,
            pending_buckets: BTreeSet::new(),
            last_pending: None,
            passed_bucket: None,
            early_second: None,
            stats: EngineStats::default(),
        }
    }

    /// The engine reporting only on `subjects`. Detectors keep one state for all their
    /// scopes, so each still counts every event; for [`Subjects::Keyed`], detectors that
    /// never report on a token are left out. Every detector is told which subjects count
    /// ([`Detector::report_only_on`]).
    pub fn reporting_on(mut self, subjects: Subjects) -> Self {
        self.subjects = subjects;
        for set in &mut self.sets {
            for group in &mut set.groups {
                if subjects == Subjects::Keyed {
                    group.retain(|(detector, _)| detector.reports_on_tokens());
                }
                for (detector, _) in group.iter_mut() {
                    detector.report_only_on(subjects);
                }
            }
        }
        self
    }

    pub fn stats(&self) -> EngineStats {
        self.stats
    }

    /// The newest event time the clock has reached.
    pub fn newest(&self) -> Option<DateTime<Utc>> {
        self.newest
    }

    /// The watermark: no event older than this is expected any more.
    pub fn watermark(&self) -> Option<DateTime<Utc>> {
        self.watermark
    }

    fn set_newest(&mut self, newest: DateTime<Utc>) {
        self.newest = Some(newest);
        self.watermark = Some(newest - self.lateness);
    }

    /// Feeds one event of a single input read in event-time order (a rehearsal, a replay):
    /// counts it, then takes its time as the input's progress ([`reach`](Self::reach)).
    /// Returns the alerts to publish, in order.
    pub fn take(&mut self, event: &EventRow<'_>) -> Vec<Alert> {
        self.count(event);
        self.reach(event.ts)
    }

    /// Counts one event without moving event time: for inputs read at different paces,
    /// whose progress is told separately ([`crate::frontier`]). An event ahead of the clock
    /// is judged once the clock reaches it; one behind the watermark is late.
    /// Tells every detector of an action on `warden.control` (revocations and their
    /// undoing), as it is published.
    pub fn control(&mut self, action: &ControlAction) {
        for set in &mut self.sets {
            set.control(action);
        }
    }

    pub fn count(&mut self, event: &EventRow<'_>) {
        self.stats.events += 1;
        if self
            .watermark()
            .is_some_and(|watermark| event.ts < watermark)
        {
            self.stats.late += 1;
        }
        let set = match &event.environment {
            Some(environment) if self.sets.len() > 1 => self.sets[1..]
                .iter()
                .position(|set| set.environment.as_deref() == Some(&**environment))
                .map_or(0, |index| index + 1),
            _ => 0,
        };
        self.sets[set].observe(event);
        // A late event's windows are the ones still to come.
        let bucket = bucket_of(event.ts).max(self.closed_until.unwrap_or(i64::MIN));
        if self.last_pending != Some(bucket) {
            self.pending_buckets.insert(bucket);
            self.last_pending = Some(bucket);
        }
    }

    /// The input has reached event time `newest`: runs the closed evaluations the new
    /// watermark (`newest` minus the allowed lateness) completes, and an early one if
    /// `newest` entered a new second. Time never goes back: an older `newest` does nothing.
    /// Returns the alerts to publish, in order.
    pub fn reach(&mut self, newest: DateTime<Utc>) -> Vec<Alert> {
        if self.newest.is_some_and(|current| newest <= current) {
            return Vec::new();
        }
        self.set_newest(newest);
        let mut alerts = Vec::new();
        if let Some(watermark) = self.watermark() {
            alerts.extend(self.close_until(bucket_of(watermark)));
        }
        let second = newest.timestamp();
        if self.early_second.is_none_or(|done| second > done) {
            self.early_second = Some(second);
            alerts.extend(self.evaluate_early(newest));
        }
        alerts
    }

    /// Moves the watermark to `watermark` without an event (the input is idle, or over:
    /// a replay ends by advancing past its last event); returns the alerts to publish.
    pub fn advance_to(&mut self, watermark: DateTime<Utc>) -> Vec<Alert> {
        let newest = watermark + self.lateness;
        if self.newest.is_none_or(|n| newest > n) {
            self.set_newest(newest);
        }
        self.close_until(bucket_of(watermark))
    }

    /// Runs the closed evaluations up to bucket `end` not run yet: each bucket up to
    /// [`MAX_CATCH_UP_BUCKETS`] after one with events, and `end` itself.
    fn close_until(&mut self, end: i64) -> Vec<Alert> {
        let mut next = match self.closed_until {
            Some(done) if done >= end => return Vec::new(),
            Some(done) => done + 1,
            None => self.pending_buckets.first().map_or(end, |first| first + 1),
        };
        self.closed_until = Some(end);
        let later = self.pending_buckets.split_off(&end);
        let with_events: Vec<i64> = self
            .passed_bucket
            .into_iter()
            .chain(std::mem::replace(&mut self.pending_buckets, later))
            .collect();
        self.passed_bucket = with_events.last().copied();
        self.last_pending = None;
        let mut alerts = Vec::new();
        for bucket_with_events in with_events {
            let last = (bucket_with_events + MAX_CATCH_UP_BUCKETS).min(end);
            for bucket in next.max(bucket_with_events + 1)..=last {
                alerts.extend(self.close(bucket));
                next = bucket + 1;
            }
        }
        if next <= end {
            alerts.extend(self.close(end));
        }
        alerts
    }

    /// The closed evaluation of windows ending before `bucket`.
    fn close(&mut self, bucket: i64) -> Vec<Alert> {
        let evaluation = Evaluation {
            end: bucket,
            closed: true,
            at: bucket_start(bucket),
        };
        let subjects = self.subjects;
        let mut alerts = Vec::new();
        for set in &mut self.sets {
            alerts.extend(set.evaluate(evaluation, subjects));
        }
        alerts
    }

    fn evaluate_early(&mut self, newest: DateTime<Utc>) -> Vec<Alert> {
        let evaluation = Evaluation {
            end: bucket_of(newest) + 1,
            closed: false,
            at: newest,
        };
        let subjects = self.subjects;
        let mut alerts = Vec::new();
        for set in &mut self.sets {
            alerts.extend(set.evaluate(evaluation, subjects));
        }
        alerts
    }
}

#[cfg(test)]
mod tests {
    use warden_ingest::alert::{AlertStatus, Severity};

    use super::*;
    use crate::spike::{SpikeConfig, TrafficSpike};
    use crate::test_support::{START, request};

    fn at(second: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(START + second, 0).expect("time")
    }

    fn engine() -> Engine {
        let spike = TrafficSpike::new(SpikeConfig::default());
        Engine::new(vec![Box::new(spike)], TimeDelta::seconds(5))
    }

    /// Feeds requests from `client` at the given seconds; returns (second, alert) published.
    fn run(
        engine: &mut Engine,
        seconds: impl Iterator<Item = i64>,
        client: &str,
    ) -> Vec<(i64, Alert)> {
        let mut published = Vec::new();
        for second in seconds {
            let event = request(second, client, "10.0.0.1");
            for alert in engine.take(&EventRow::from(&event)) {
                published.push((second, alert));
            }
        }
        published
    }

    #[test]
    fn a_spike_fires_within_a_second_of_crossing_and_resolves_once_without_flapping() {
        let mut engine = engine();
        // An hour at 40 requests per 5 minutes (one every 7.5 s), from two clients.
        let mut quiet = Vec::new();
        for i in 0..480 {
            let client = if i % 2 == 0 { "app-a" } else { "app-b" };
            quiet.extend(run(&mut engine, [i * 15 / 2].into_iter(), client));
        }
        assert!(quiet.is_empty(), "{quiet:?}");
        // Then 4 requests a second from app-b for 5 minutes: app-b's threshold is 10x its 20
        // per window, 200; the window already holds 20 of its steady requests, so the 180th
        // request of the burst, 45 s in, crosses it.
        let spike = run(&mut engine, (0..1_200).map(|i| 3_600 + i / 4), "app-b");
        let first = spike
            .iter()
            .find(|(_, alert)| alert.subject.to_string() == "client:app-b")
            .expect("app-b alert");
        assert!(first.0 <= 3_600 + 46, "published at {}", first.0);
        assert_eq!(first.1.status, AlertStatus::Firing);
        // Quiet again; the spike leaves the window after 5 minutes and everything resolves.
        let after = run(&mut engine, (0..120).map(|i| 3_900 + i * 5), "app-a");
        let all: Vec<_> = spike.iter().chain(&after).collect();
        for subject in ["client:app-b", "global", "target:llama"] {
            let statuses: Vec<_> = all
                .iter()
                .filter(|(_, alert)| alert.subject.to_string() == subject)
                .map(|(_, alert)| (alert.status, alert.severity))
                .filter(|(status, _)| *status == AlertStatus::Resolved)
                .collect();
            assert_eq!(
                statuses,
                [(AlertStatus::Resolved, Severity::Info)],
                "{subject}"
            );
        }
        let fired_twice = all
            .iter()
            .filter(|(_, alert)| alert.subject.to_string() == "client:app-b")
            .filter(|(_, alert)| alert.status == AlertStatus::Firing)
            .map(|(_, alert)| alert.severity)
            .collect::<Vec<_>>();
        assert_eq!(
            fired_twice,
            [Severity::Warning, Severity::Critical],
            "fire, escalate"
        );
        assert_eq!(engine.stats().events, 480 + 1_200 + 120);
        assert_eq!(engine.stats().late, 0);
    }

    #[test]
    fn late_events_are_counted_and_a_lull_is_caught_up() {
        let mut engine = engine();
        run(&mut engine, (0..480).map(|i| i * 15 / 2), "app-a");
        // A burst, then nothing for 20 minutes: the next event moves the watermark past the
        // burst's windows, and the skipped buckets are evaluated on the way.
        run(&mut engine, (0..400).map(|i| 3_600 + i / 40), "app-b");
        let after = run(&mut engine, [4_800].into_iter(), "app-a");
        assert!(
            after
                .iter()
                .any(|(_, alert)| alert.status == AlertStatus::Resolved),
            "{after:?}"
        );
        let late = request(3_000, "app-a", "10.0.0.1");
        engine.take(&EventRow::from(&late));
        assert_eq!(engine.stats().late, 1);
    }

    #[test]
    fn events_ahead_of_the_input_clock_are_judged_when_it_reaches_them() {
        // Two inputs: a steady one, and one whose burst is read before the steady one has
        // caught up to it. Counted ahead of the clock, the burst is neither late nor lost.
        let mut engine = engine();
        for i in 0..480 {
            let client = if i % 2 == 0 { "app-a" } else { "app-b" };
            engine.count(&EventRow::from(&request(i * 15 / 2, client, "10.0.0.1")));
        }
        for i in 0..1_200 {
            engine.count(&EventRow::from(&request(
                3_600 + i / 4,
                "app-b",
                "10.0.0.2",
            )));
        }
        let mut fired = Vec::new();
        for second in (0..3_900).step_by(10) {
            fired.extend(engine.reach(at(second)));
        }
        assert_eq!(engine.stats().late, 0);
        let spike = fired
            .iter()
            .find(|alert| alert.subject.to_string() == "client:app-b")
            .expect("app-b alert once the clock reaches the burst");
        assert!(spike.window_end >= at(3_600), "{spike:?}");
        assert!(engine.reach(at(100)).is_empty(), "time never goes back");
    }

    /// A detector whose value is the weight of the last request it saw: fires at 100, holds
    /// from [`crate::detector::RESOLVE_RATIO`] of that.
    #[derive(Debug, Clone, Default)]
    struct Level {
        value: u64,
        holding: crate::detector::Holding,
    }

    impl Detector for Level {
        fn observe(&mut self, event: &EventRow<'_>) {
            self.value = event.weight();
        }

        fn evaluate(&mut self, evaluation: Evaluation) -> Vec<Alert> {
            use crate::detector::Standing;
            let alert = || {
                let window = (evaluation.at - TimeDelta::seconds(10), evaluation.at);
                let subject = warden_ingest::alert::Subject::Global;
                Alert::firing("level", Severity::Warning, subject, window)
            };
            match Standing::of(self.value as f64, 100.0) {
                Standing::Fires => vec![alert()],
                Standing::Holds => {
                    self.holding.push(alert());
                    Vec::new()
                }
                Standing::Clear => Vec::new(),
            }
        }

        fn cooldown(&self) -> TimeDelta {
            TimeDelta::hours(1)
        }

        fn take_holding(&mut self) -> Vec<Alert> {
            self.holding.take()
        }
    }

    proptest::proptest! {
        /// Hysteresis: once fired, a value that never drops below the resolve line never
        /// resolves, however it hovers about the fire line; once it drops below, it resolves
        /// exactly once.
        #[test]
        fn a_value_above_the_resolve_line_never_resolves(
            hovering in proptest::collection::vec(80u64..=130, 1..200),
            below in 0u64..80,
        ) {
            let mut engine = Engine::new(vec![Box::new(Level::default())], TimeDelta::seconds(0));
            let mut feed = |second: i64, value: u64| {
                let mut event = request(second, "app", "10.0.0.1");
                event.occurrences = Some(value);
                engine.take(&EventRow::from(&event))
            };
            let mut published = feed(0, 100);
            for (index, value) in hovering.iter().enumerate() {
                published.extend(feed(10 * (index as i64 + 1), *value));
            }
            let statuses: Vec<AlertStatus> = published.iter().map(|a| a.status).collect();
            proptest::prop_assert_eq!(&statuses, &[AlertStatus::Firing]);
            let end = 10 * (hovering.len() as i64 + 1);
            let mut after = feed(end, below);
            after.extend(feed(end + 10, below));
            after.extend(feed(end + 20, below));
            let statuses: Vec<AlertStatus> = after.iter().map(|a| a.status).collect();
            proptest::prop_assert_eq!(statuses, [AlertStatus::Resolved]);
        }
    }
}
