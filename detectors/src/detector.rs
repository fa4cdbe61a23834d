//! What every detector is to the [engine](crate::engine): something that counts events and,
//! when asked at a bucket boundary, names the subjects whose condition holds.
//!
//! A detector never decides what is published: it reports every condition that holds at each
//! evaluation, and the engine's [alert book](crate::lifecycle) turns that into fire, suppress,
//! escalate, remind and resolve. A subject a detector stops reporting is resolved.
//!
//! **Hysteresis.** A detector fires at its fire line and clears only below its resolve line,
//! [`RESOLVE_RATIO`] of the fire line: in between, it reports the subject as *holding*
//! ([`Detector::take_holding`]), which keeps an open alert open and fires nothing new. A value
//! hovering at a threshold therefore fires once and resolves once it has really dropped, not
//! at every bucket.

use hashbrown::HashMap;
use std::fmt;

use chrono::TimeDelta;
use warden_ingest::action::ControlAction;
use warden_ingest::alert::{Alert, SourceShare, Subject};
use warden_ingest::event_row::EventRow;

use crate::buckets::BUCKET_SECONDS;
use crate::engine::{Evaluation, Subjects};

/// Where a detector's resolve line is, as a share of its fire line (see the module docs).
pub const RESOLVE_RATIO: f64 = 0.8;

/// How a measured value stands against a fire line (higher is worse).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// At or over the fire line.
    Fires,
    /// Under the fire line, at or over the resolve line: an open alert stays open.
    Holds,
    /// Under the resolve line.
    Clear,
}

impl Standing {
    pub fn of(value: f64, fire_line: f64) -> Self {
        if value >= fire_line {
            Self::Fires
        } else if value >= fire_line * RESOLVE_RATIO {
            Self::Holds
        } else {
            Self::Clear
        }
    }

    /// The worse of two standings (a subject judged on several measures).
    pub fn worst(self, other: Self) -> Self {
        match (self, other) {
            (Self::Fires, _) | (_, Self::Fires) => Self::Fires,
            (Self::Holds, _) | (_, Self::Holds) => Self::Holds,
            _ => Self::Clear,
        }
    }
}

/// The subjects a detector found holding at its last evaluation, as the alerts they would be
/// (only their dedup keys matter), until the engine takes them.
#[derive(Debug, Clone, Default)]
pub struct Holding(Vec<Alert>);

/// What a detector concluded about one subject.
#[derive(Debug)]
pub enum Judgement {
    Fire(Alert),
    /// Between the resolve and the fire line: the alert (unpublished) names the subject.
    Hold(Alert),
    Clear,
}

impl Holding {
    pub fn push(&mut self, alert: Alert) {
        self.0.push(alert);
    }

    /// Keeps a holding subject; returns a firing alert.
    pub fn sort(&mut self, judgement: Judgement) -> Option<Alert> {
        match judgement {
            Judgement::Fire(alert) => Some(alert),
            Judgement::Hold(alert) => {
                self.0.push(alert);
                None
            }
            Judgement::Clear => None,
        }
    }

    pub fn take(&mut self) -> Vec<Alert> {
        std::mem::take(&mut self.0)
    }
}

/// How many sample request ids an alert carries.
pub const SAMPLE_REQUEST_IDS: usize = 3;
/// How many top sources an alert names.
pub const TOP_SOURCES: usize = 3;

/// One detector of the engine. Detectors are `Clone` (through [`FreshCopy`]) so an engine can
/// be copied before it has seen any event and started afresh from that copy.
pub trait Detector: FreshCopy + fmt::Debug + Send + Sync {
    /// Counts one event. Events come in any order; one older than the history the detector
    /// keeps is not counted.
    fn observe(&mut self, event: &EventRow<'_>);

    /// The conditions that hold for the windows of `evaluation`: one firing alert per
    /// subject, each with its dedup key and `evaluation.at` as its window end.
    fn evaluate(&mut self, evaluation: Evaluation) -> Vec<Alert>;

    /// How long (event time) a repeat of an open alert is held back.
    fn cooldown(&self) -> TimeDelta;

    /// The subjects found *holding* by the last `evaluate` (between the resolve line and the
    /// fire line): an open alert on one stays open. Taken by the engine right after each
    /// evaluation; a detector without hysteresis has none.
    fn take_holding(&mut self) -> Vec<Alert> {
        Vec::new()
    }

    /// Whether any of its findings may be about a token ([`Subject::Token`]): a keyed-stage
    /// engine ([`crate::engine::Subjects::Keyed`]) runs only the detectors that do.
    fn reports_on_tokens(&self) -> bool {
        false
    }

    /// Told once, before any event, by an engine that reports only on `subjects`: the
    /// detector may leave out what it keeps only for findings about other subjects.
    fn report_only_on(&mut self, subjects: Subjects) {
        let _ = subjects;
    }

    /// Told of an action on `warden.control` (a revocation, its undoing, ...), as it is
    /// published: detectors that watch for what it forbids learn it here.
    fn control(&mut self, action: &ControlAction) {
        let _ = action;
    }
}

/// A boxed copy of a detector; implemented for every `Clone` detector.
pub trait FreshCopy {
    fn boxed_copy(&self) -> Box<dyn Detector>;
}

impl<T: Detector + Clone + 'static> FreshCopy for T {
    fn boxed_copy(&self) -> Box<dyn Detector> {
        Box::new(self.clone())
    }
}

impl Clone for Box<dyn Detector> {
    fn clone(&self) -> Self {
        self.boxed_copy()
    }
}

/// The whole buckets in `seconds` (at least one).
pub fn buckets_in(seconds: i64) -> i64 {
    (seconds / BUCKET_SECONDS).max(1)
}

/// The problems of one `[detect.*]` section, each message naming `{section}.{key}`.
#[derive(Debug)]
pub struct SectionCheck {
    section: &'static str,
    errors: Vec<String>,
}

impl SectionCheck {
    pub fn new(section: &'static str) -> Self {
        Self {
            section,
            errors: Vec::new(),
        }
    }

    /// A problem with `key` unless `ok`.
    pub fn require(&mut self, ok: bool, key: &str, message: &str) {
        if !ok {
            self.errors
                .push(format!("{}.{key}: {message}", self.section));
        }
    }

    /// A window length: whole buckets.
    pub fn window(&mut self, key: &str, seconds: i64) {
        let message = format!("must be a positive multiple of {BUCKET_SECONDS}");
        self.require(
            seconds >= BUCKET_SECONDS && seconds % BUCKET_SECONDS == 0,
            key,
            &message,
        );
    }

    /// A multiple of a baseline: above 1.
    pub fn factor(&mut self, key: &str, value: f64) {
        self.require(value > 1.0, key, "must be greater than 1");
    }

    /// A share: above 0, at most 1.
    pub fn share(&mut self, key: &str, value: f64) {
        self.require(
            value > 0.0 && value <= 1.0,
            key,
            "must be above 0 and at most 1",
        );
    }

    /// `baseline_windows` against `min_baseline_windows`.
    pub fn baseline(&mut self, windows: usize, min_windows: usize) {
        self.require(
            windows > 0 && windows >= min_windows,
            "baseline_windows",
            "must be at least 1 and at least min_baseline_windows",
        );
    }

    pub fn cooldown(&mut self, seconds: i64) {
        self.require(seconds >= 0, "cooldown_s", "must not be negative");
    }

    pub fn finish(self) -> Vec<String> {
        self.errors
    }
}

/// Evidence naming sources without a measure (the keys an IP tried, the countries a token
/// came from): the first [`TOP_SOURCES`] in order, each with value 1.
pub fn named_sources(sources: impl IntoIterator<Item = Subject>) -> Vec<SourceShare> {
    let mut names: Vec<String> = sources.into_iter().map(|s| s.to_string()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .take(TOP_SOURCES)
        .map(|source| SourceShare { source, value: 1.0 })
        .collect()
}

/// Who the client of an event is: its configured name. A key the proxy refused has a
/// fingerprint but no name, and is no client: keying per-client state by it would let a
/// flood of made-up keys create state (and evaluations) without bound — those calls are
/// judged per IP ([`crate::auth_failures`]) and globally.
pub fn client_of<'e>(event: &'e EventRow<'_>) -> Option<&'e str> {
    event.client.name.as_deref()
}

/// The target an event was routed to.
pub fn target_of<'e>(event: &'e EventRow<'_>) -> Option<&'e str> {
    event
        .route
        .as_ref()
        .and_then(|route| route.target_id.as_deref())
}

/// The value under `key`, made by `make` first if missing; hashes `key` once and allocates
/// it only then.
pub fn entry<'m, V>(
    map: &'m mut HashMap<String, V>,
    key: &str,
    make: impl FnOnce() -> V,
) -> &'m mut V {
    map.entry_ref(key).or_insert_with(make)
}

/// A few recent request ids of a subject, as an alert's samples: the first few of each
/// bucket, so the last ones kept are from the newest bucket with events. Kept without
/// allocating once warm, and copying only a few ids a bucket however many events come.
#[derive(Debug, Clone)]
pub struct RecentIds {
    ids: [String; SAMPLE_REQUEST_IDS],
    next: usize,
    len: usize,
    /// The newest bucket pushed, and how many ids were kept since it began.
    bucket: i64,
    kept_in_bucket: usize,
}

impl Default for RecentIds {
    fn default() -> Self {
        Self {
            ids: Default::default(),
            next: 0,
            len: 0,
            bucket: i64::MIN,
            kept_in_bucket: 0,
        }
    }
}

impl RecentIds {
    /// Notes `request_id`, of an event in `bucket` (any period that grows with event time:
    /// a bucket, a minute), unless the newest bucket has its samples already.
    pub fn push(&mut self, bucket: i64, request_id: &str) {
        if bucket > self.bucket {
            self.bucket = bucket;
            self.kept_in_bucket = 0;
        } else if self.kept_in_bucket >= SAMPLE_REQUEST_IDS {
            return;
        }
        self.kept_in_bucket += 1;
        let slot = &mut self.ids[self.next];
        slot.clear();
        slot.push_str(request_id);
        self.next = (self.next + 1) % SAMPLE_REQUEST_IDS;
        self.len = (self.len + 1).min(SAMPLE_REQUEST_IDS);
    }

    /// Oldest first.
    pub fn to_vec(&self) -> Vec<String> {
        (0..self.len)
            .map(|i| (self.next + SAMPLE_REQUEST_IDS - self.len + i) % SAMPLE_REQUEST_IDS)
            .map(|i| self.ids[i].clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_ids_keep_the_first_few_of_the_newest_buckets_oldest_first() {
        let mut ids = RecentIds::default();
        assert!(ids.to_vec().is_empty());
        ids.push(1, "a");
        ids.push(1, "b");
        assert_eq!(ids.to_vec(), ["a", "b"]);
        ids.push(1, "c");
        ids.push(1, "d");
        assert_eq!(ids.to_vec(), ["a", "b", "c"], "the bucket has its samples");
        ids.push(2, "e");
        assert_eq!(ids.to_vec(), ["b", "c", "e"]);
        ids.push(0, "late");
        ids.push(2, "f");
        assert_eq!(ids.to_vec(), ["e", "late", "f"]);
        ids.push(2, "g");
        assert_eq!(ids.to_vec(), ["e", "late", "f"]);
    }

    #[test]
    fn recent_ids_keep_ids_of_any_length() {
        let mut ids = RecentIds::default();
        let long = "r".repeat(300);
        let uuid = "0193a9c4-6a43-7c51-9f3b-2f7c1e5d8a90";
        ids.push(1, &long);
        ids.push(1, uuid);
        ids.push(1, "");
        assert_eq!(ids.to_vec(), [long.as_str(), uuid, ""]);
        ids.push(2, uuid);
        assert_eq!(ids.to_vec(), [uuid, "", uuid]);
    }
}
