//! Hourly cost burn rate against a schedule (seed 000: "$100/hour business hours, $10/hour
//! off-hours"; "hourly burn rate monitoring, not just daily totals").
//!
//! Cost is the `response.cost_usd` of response events, summed over a rolling hour for each
//! environment (events without one form their own scope). Two findings:
//!
//! - **projected** (warning): the spend of the last `projection_window_s` reaches the budget
//!   of that stretch (the schedule integrated over it, like the hour's below). A runaway is
//!   caught minutes in, before the hour is spent; a business-hours spend just after closing
//!   time is judged against the business-hours budget it was spent under;
//! - **over** (critical): the rolling hour has spent its budget.
//!
//! An alert resolves once both are below [`RESOLVE_RATIO`](crate::detector::RESOLVE_RATIO)
//! of their budgets.
//!
//! The budget of a rolling hour is the schedule integrated over it, bucket by bucket: the hour
//! from 17:30 to 18:30 on a weekday with business hours ending at 18:00 may spend $55, not $10
//! (which would page every evening at six) nor $100. Business hours are read in the configured
//! IANA time zone, so they follow daylight saving time.

use hashbrown::HashMap;
use std::str::FromStr;

use chrono::{DateTime, Datelike, NaiveTime, TimeDelta, Utc, Weekday};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use warden_ingest::EventKind;
use warden_ingest::alert::{Alert, Severity, SourceShare, Subject};
use warden_ingest::event_row::EventRow;

use crate::buckets::{BUCKET_SECONDS, BucketCounts, bucket_of, bucket_start};
use crate::detector::{
    Detector, Holding, Judgement, RecentIds, SectionCheck, Standing, TOP_SOURCES, client_of, entry,
};
use crate::engine::Evaluation;

const DETECTOR: &str = "cost_burn";
const HOUR_BUCKETS: i64 = 3_600 / BUCKET_SECONDS;
/// Costs are counted in millionths of a dollar.
const MICROS_PER_USD: f64 = 1_000_000.0;

/// `[detect.cost_burn]` as written.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CostBurnConfig {
    pub enabled: bool,
    /// Budget per hour within business hours, in USD.
    pub business_hours_usd_per_hour: f64,
    /// Budget per hour outside them.
    pub off_hours_usd_per_hour: f64,
    /// IANA time zone business hours are read in, e.g. "Europe/Paris".
    pub timezone: String,
    /// `HH:MM-HH:MM`, local time; an end before the start spans midnight.
    pub business_hours: String,
    /// Local weekdays with business hours: "mon", "tue", ...
    pub business_days: Vec<String>,
    /// The recent stretch the hourly burn is projected from, in seconds.
    pub projection_window_s: i64,
    pub cooldown_s: i64,
}

impl Default for CostBurnConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            business_hours_usd_per_hour: 100.0,
            off_hours_usd_per_hour: 10.0,
            timezone: "UTC".to_owned(),
            business_hours: "09:00-18:00".to_owned(),
            business_days: ["mon", "tue", "wed", "thu", "fri"]
                .map(String::from)
                .to_vec(),
            projection_window_s: 600,
            cooldown_s: 900,
        }
    }
}

impl CostBurnConfig {
    /// One message per problem, each naming its key.
    pub fn validate(&self) -> Vec<String> {
        let mut check = SectionCheck::new("detect.cost_burn");
        for (key, usd) in [
            (
                "business_hours_usd_per_hour",
                self.business_hours_usd_per_hour,
            ),
            ("off_hours_usd_per_hour", self.off_hours_usd_per_hour),
        ] {
            check.require(
                usd.is_finite() && usd > 0.0,
                key,
                "must be a positive amount",
            );
        }
        if let Err((key, message)) = self.schedule() {
            check.require(false, key, &message);
        }
        check.window("projection_window_s", self.projection_window_s);
        check.require(
            (60..=3_600).contains(&self.projection_window_s),
            "projection_window_s",
            "must be between 60 and 3600",
        );
        check.cooldown(self.cooldown_s);
        check.finish()
    }

    /// The schedule the budget follows; an error is the offending key and what is wrong.
    pub fn schedule(&self) -> Result<Schedule, (&'static str, String)> {
        let timezone = Tz::from_str(&self.timezone).map_err(|_| {
            let message = format!("{:?} is not an IANA time zone", self.timezone);
            ("timezone", message)
        })?;
        let hours_error = || {
            let message = format!("{:?} is not HH:MM-HH:MM", self.business_hours);
            ("business_hours", message)
        };
        let (start, end) = self
            .business_hours
            .split_once('-')
            .ok_or_else(hours_error)?;
        let time = |text: &str| NaiveTime::parse_from_str(text.trim(), "%H:%M");
        let (start, end) = (
            time(start).map_err(|_| hours_error())?,
            time(end).map_err(|_| hours_error())?,
        );
        let days = self
            .business_days
            .iter()
            .map(|day| {
                Weekday::from_str(day)
                    .map_err(|_| ("business_days", format!("{day:?} is not a weekday")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Schedule {
            timezone,
            start,
            end,
            days,
            business_usd: self.business_hours_usd_per_hour,
            off_hours_usd: self.off_hours_usd_per_hour,
        })
    }
}

/// Business hours and the hourly budget in and out of them.
#[derive(Debug, Clone)]
pub struct Schedule {
    timezone: Tz,
    start: NaiveTime,
    end: NaiveTime,
    days: Vec<Weekday>,
    business_usd: f64,
    off_hours_usd: f64,
}

impl Schedule {
    /// Whether `at` is within business hours, in the schedule's time zone. A span across
    /// midnight belongs to the day it starts on.
    pub fn is_business_hours(&self, at: DateTime<Utc>) -> bool {
        let local = at.with_timezone(&self.timezone);
        let (time, day) = (local.time(), local.weekday());
        if self.start <= self.end {
            self.days.contains(&day) && self.start <= time && time < self.end
        } else {
            (self.days.contains(&day) && time >= self.start)
                || (self.days.contains(&day.pred()) && time < self.end)
        }
    }

    /// The budgeted rate at `at`, USD per hour.
    pub fn usd_per_hour(&self, at: DateTime<Utc>) -> f64 {
        if self.is_business_hours(at) {
            self.business_usd
        } else {
            self.off_hours_usd
        }
    }

    /// The budget of buckets `from..to`: each bucket's share of its hourly rate.
    #[cfg(test)]
    fn budget(&self, from: i64, to: i64) -> f64 {
        let business = self.business_buckets(from, to);
        self.budget_of(business, to - from)
    }

    /// How many of buckets `from..to` start in business hours.
    fn business_buckets(&self, from: i64, to: i64) -> i64 {
        (from..to)
            .filter(|&bucket| self.is_business_hours(bucket_start(bucket)))
            .count() as i64
    }

    /// The budget of `buckets` buckets, `business` of them in business hours.
    fn budget_of(&self, business: i64, buckets: i64) -> f64 {
        let usd =
            business as f64 * self.business_usd + (buckets - business) as f64 * self.off_hours_usd;
        usd * (BUCKET_SECONDS as f64 / 3_600.0)
    }
}

/// The business buckets of the last hour window, kept up to date as the window slides: the
/// time-zone lookups of a whole hour (360 buckets) at every evaluation were most of the
/// engine's time. Counts are integers, so sliding never drifts from a full count.
#[derive(Debug, Clone, Copy)]
struct BusinessBuckets {
    from: i64,
    to: i64,
    business: i64,
}

impl BusinessBuckets {
    /// The count for `from..to`, sliding from the last one when the window moved forward by
    /// less than its length, counting afresh otherwise.
    fn slide(last: Option<Self>, schedule: &Schedule, from: i64, to: i64) -> Self {
        let business = match last {
            Some(last) if last.to - last.from == to - from && to >= last.to && from < last.to => {
                last.business + schedule.business_buckets(last.to, to)
                    - schedule.business_buckets(last.from, from)
            }
            _ => schedule.business_buckets(from, to),
        };
        Self { from, to, business }
    }
}

/// The spend of one environment.
#[derive(Debug, Clone)]
struct Scope {
    micros: BucketCounts,
    /// Spend per client, per minute, over the hour.
    clients: HashMap<String, BucketCounts>,
    recent: RecentIds,
}

/// The cost-burn detector.
#[derive(Debug, Clone)]
pub struct CostBurn {
    schedule: Schedule,
    projection_buckets: i64,
    cooldown: TimeDelta,
    /// By environment; `None` for events without one.
    scopes: HashMap<Option<String>, Scope>,
    /// The business buckets of the last evaluated hour and projection window, for closed
    /// (`[1]`) and early (`[0]`) evaluations apart: each kind moves forward on its own, while
    /// the two interleaved go back and forth by a bucket (an early evaluation runs ahead of
    /// the watermark), which would make every slide a fresh count.
    business_buckets: [Option<BusinessBuckets>; 2],
    projection_business: [Option<BusinessBuckets>; 2],
    holding: Holding,
}

/// What a stretch of time may spend: the last hour's budget, and the projection window's.
#[derive(Debug, Clone, Copy)]
struct Budgets {
    hour: f64,
    projection: f64,
}

impl CostBurn {
    /// A detector for a config that passed [`CostBurnConfig::validate`].
    pub fn new(config: &CostBurnConfig) -> Result<Self, String> {
        let schedule = config
            .schedule()
            .map_err(|(key, message)| format!("cost_burn.{key}: {message}"))?;
        Ok(Self {
            schedule,
            projection_buckets: (config.projection_window_s / BUCKET_SECONDS).max(1),
            cooldown: TimeDelta::seconds(config.cooldown_s),
            scopes: HashMap::new(),
            business_buckets: [None; 2],
            projection_business: [None; 2],
            holding: Holding::default(),
        })
    }

    fn judge(
        &self,
        environment: Option<&str>,
        scope: &Scope,
        evaluation: Evaluation,
        budgets: Budgets,
    ) -> Judgement {
        let end = evaluation.end;
        let spent = scope.micros.sum(end - HOUR_BUCKETS, end) as f64 / MICROS_PER_USD;
        let recent = scope.micros.sum(end - self.projection_buckets, end) as f64 / MICROS_PER_USD;
        let hourly = HOUR_BUCKETS as f64 / self.projection_buckets as f64;
        let (projected, budgeted_rate) = (recent * hourly, budgets.projection * hourly);
        if spent <= 0.0 {
            // Nothing spent is never over a budget, even a zero one.
            return Judgement::Clear;
        }
        let scope_name = environment.map_or_else(String::new, |env| format!(" in {env}"));
        let window = (bucket_start(end - HOUR_BUCKETS), evaluation.at);
        let over = Standing::of(spent, budgets.hour);
        let burning = Standing::of(recent, budgets.projection);
        let (severity, observed, threshold, summary) = if over == Standing::Fires {
            let budget = budgets.hour;
            let summary = format!(
                "${spent:.2} spent in the last hour{scope_name}, over its budget of ${budget:.2}"
            );
            (Severity::Critical, spent, budget, summary)
        } else if burning == Standing::Fires {
            let minutes = self.projection_buckets * BUCKET_SECONDS / 60;
            let summary = format!(
                "burning ${projected:.2}/hour{scope_name} (the last {minutes} minutes), over the \
                 budget of ${budgeted_rate:.2}/hour"
            );
            (Severity::Warning, projected, budgeted_rate, summary)
        } else if over.worst(burning) == Standing::Holds {
            let alert = Alert::firing(DETECTOR, Severity::Warning, Subject::Global, window);
            return Judgement::Hold(alert.in_environment(environment));
        } else {
            return Judgement::Clear;
        };
        let mut alert =
            Alert::firing(DETECTOR, severity, Subject::Global, window).in_environment(environment);
        alert.observed = round_cents(observed);
        alert.threshold = round_cents(threshold);
        alert.unit = "usd".to_owned();
        alert.summary = summary;
        alert.evidence.top_sources = top_spenders(scope, evaluation.at);
        alert.evidence.sample_request_ids = scope.recent.to_vec();
        alert.runbook = Some("runaway_cost".to_owned());
        Judgement::Fire(alert)
    }
}

fn round_cents(usd: f64) -> f64 {
    (usd * 100.0).round() / 100.0
}

fn top_spenders(scope: &Scope, at: DateTime<Utc>) -> Vec<SourceShare> {
    let minute = at.timestamp().div_euclid(60);
    let mut spenders: Vec<SourceShare> = scope
        .clients
        .iter()
        .map(|(client, micros)| SourceShare {
            source: Subject::Client(client.clone()).to_string(),
            value: round_cents(micros.sum(minute - 59, minute + 1) as f64 / MICROS_PER_USD),
        })
        .filter(|share| share.value > 0.0)
        .collect();
    spenders.sort_by(|a, b| b.value.total_cmp(&a.value).then(a.source.cmp(&b.source)));
    spenders.truncate(TOP_SOURCES);
    spenders
}

/// An event's environment, looked up in [`CostBurn::scopes`] without making a key.
#[derive(Hash)]
struct EnvironmentRef<'e>(Option<&'e str>);

impl hashbrown::Equivalent<Option<String>> for EnvironmentRef<'_> {
    fn equivalent(&self, key: &Option<String>) -> bool {
        key.as_deref() == self.0
    }
}

impl Detector for CostBurn {
    fn observe(&mut self, event: &EventRow<'_>) {
        if event.kind != EventKind::Response {
            return;
        }
        let Some(cost) = event.response.as_ref().and_then(|r| r.cost_usd) else {
            return;
        };
        if !(cost.is_finite() && cost > 0.0) {
            return;
        }
        let micros = (cost * MICROS_PER_USD).round() as u64;
        let environment = EnvironmentRef(event.environment.as_deref());
        if self.scopes.get(&environment).is_none() {
            self.scopes.insert(
                environment.0.map(str::to_owned),
                Scope {
                    micros: BucketCounts::new(HOUR_BUCKETS as usize),
                    clients: HashMap::new(),
                    recent: RecentIds::default(),
                },
            );
        }
        let Some(scope) = self.scopes.get_mut(&environment) else {
            return;
        };
        let bucket = bucket_of(event.ts);
        scope.micros.add(bucket, micros);
        if let Some(client) = client_of(event) {
            entry(&mut scope.clients, client, || BucketCounts::new(60))
                .add(event.ts.timestamp().div_euclid(60), micros);
        }
        scope.recent.push(bucket, &event.request_id);
    }

    fn evaluate(&mut self, evaluation: Evaluation) -> Vec<Alert> {
        if evaluation.closed {
            let minute = evaluation.at.timestamp().div_euclid(60);
            for scope in self.scopes.values_mut() {
                scope.micros.advance_to(evaluation.end - 1);
                scope.clients.retain(|_, micros| {
                    micros.advance_to(minute);
                    micros.total() > 0
                });
            }
            self.scopes.retain(|_, scope| scope.micros.total() > 0);
        }
        if self.scopes.is_empty() {
            return Vec::new();
        }
        let (from, to) = (evaluation.end - HOUR_BUCKETS, evaluation.end);
        let kind = usize::from(evaluation.closed);
        let window = BusinessBuckets::slide(self.business_buckets[kind], &self.schedule, from, to);
        self.business_buckets[kind] = Some(window);
        let projection_from = evaluation.end - self.projection_buckets;
        let projection = BusinessBuckets::slide(
            self.projection_business[kind],
            &self.schedule,
            projection_from,
            to,
        );
        self.projection_business[kind] = Some(projection);
        let budgets = Budgets {
            hour: self.schedule.budget_of(window.business, HOUR_BUCKETS),
            projection: self
                .schedule
                .budget_of(projection.business, self.projection_buckets),
        };
        let mut findings = Vec::new();
        for (environment, scope) in &self.scopes {
            let judgement = self.judge(environment.as_deref(), scope, evaluation, budgets);
            findings.extend(self.holding.sort(judgement));
        }
        findings
    }

    fn cooldown(&self) -> TimeDelta {
        self.cooldown
    }

    fn take_holding(&mut self) -> Vec<Alert> {
        self.holding.take()
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::test_support::{closed_at, early_at, feed, findings, priced};

    fn utc(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, min, 0)
            .single()
            .expect("time")
    }

    #[test]
    fn business_hours_follow_daylight_saving_time() {
        let schedule = CostBurnConfig {
            timezone: "America/New_York".into(),
            ..CostBurnConfig::default()
        }
        .schedule()
        .expect("schedule");
        // 13:45 UTC: 08:45 EST on Friday 6 March 2026, 09:45 EDT on Monday 9 March (the
        // clocks went forward on Sunday the 8th).
        assert!(!schedule.is_business_hours(utc(2026, 3, 6, 13, 45)));
        assert!(schedule.is_business_hours(utc(2026, 3, 9, 13, 45)));
        assert_eq!(schedule.usd_per_hour(utc(2026, 3, 9, 13, 45)), 100.0);
        // Saturday is off all day.
        assert!(!schedule.is_business_hours(utc(2026, 3, 7, 16, 0)));
        // Spanning midnight: 22:00-06:00 belongs to the weekday it starts on.
        let night = CostBurnConfig {
            business_hours: "22:00-06:00".into(),
            ..CostBurnConfig::default()
        }
        .schedule()
        .expect("schedule");
        assert!(
            night.is_business_hours(utc(2026, 3, 6, 23, 0)),
            "Friday night"
        );
        assert!(
            night.is_business_hours(utc(2026, 3, 7, 5, 0)),
            "Saturday early"
        );
        assert!(
            !night.is_business_hours(utc(2026, 3, 8, 5, 0)),
            "Sunday early"
        );
    }

    #[test]
    fn the_budget_of_an_hour_across_closing_time_is_prorated() {
        let schedule = CostBurnConfig::default().schedule().expect("schedule");
        // Monday 9 March 2026, 17:30 to 18:30 UTC: half business, half off.
        let from = bucket_of(utc(2026, 3, 9, 17, 30));
        let budget = schedule.budget(from, from + HOUR_BUCKETS);
        assert!((budget - 55.0).abs() < 1e-9, "{budget}");
    }

    #[test]
    fn a_business_hours_spend_is_not_judged_against_the_off_hours_budget_at_closing_time() {
        // START + 10 h is 18:00 UTC on a Friday: closing time. $60/hour all afternoon, well
        // within the $100 of business hours, until 18:00:05.
        let mut detector = CostBurn::new(&CostBurnConfig::default()).expect("detector");
        let closing = 10 * 3_600;
        let mut found = Vec::new();
        for second in (closing - 2 * 3_600..=closing + 5).step_by(6) {
            feed(&mut detector, &priced(second, "app-a", 0.10));
            found.extend(findings(&detector.evaluate(early_at(second))));
            if second % 10 == 0 {
                found.extend(findings(&detector.evaluate(closed_at(second))));
            }
        }
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn a_runaway_is_projected_within_minutes_then_found_over_budget() {
        // START is 08:00 UTC on Friday 15 January 2027: the hour before it and the minutes
        // after are off-hours, $10/hour.
        let mut detector = CostBurn::new(&CostBurnConfig::default()).expect("detector");
        // Steady: $5/hour, a $0.05 response every 36 s, for an hour.
        for i in 0..100 {
            feed(&mut detector, &priced(i * 36 - 3_600, "app-a", 0.05));
        }
        assert!(detector.evaluate(closed_at(0)).is_empty());
        // Then app-b at $0.02 a second ($72/hour).
        let mut warned_at = None;
        for second in 0..600 {
            feed(&mut detector, &priced(second, "app-b", 0.02));
            let found = findings(&detector.evaluate(early_at(second)));
            if warned_at.is_none() && !found.is_empty() {
                assert_eq!(found, [("global".to_owned(), Severity::Warning)]);
                warned_at = Some(second);
            }
        }
        // $10/hour over 10 minutes is $1.67: about 80 s of app-b with app-a's share.
        let warned_at = warned_at.expect("projected");
        assert!(warned_at <= 90, "{warned_at}");
        // The hour's $10 is spent once app-b has added the $5 app-a left: 250 s in.
        let alerts = detector.evaluate(closed_at(600));
        assert_eq!(
            findings(&alerts),
            [("global".to_owned(), Severity::Critical)]
        );
        assert_eq!(alerts[0].evidence.top_sources[0].source, "client:app-b");
        assert_eq!(alerts[0].unit, "usd");
    }

    #[test]
    fn environments_have_their_own_budgets_and_dedup_keys() {
        let mut detector = CostBurn::new(&CostBurnConfig::default()).expect("detector");
        for i in 0..600 {
            let mut event = priced(i, "app-a", 0.05);
            event.environment = Some("staging".into());
            feed(&mut detector, &event);
            feed(&mut detector, &priced(i * 60, "app-b", 0.01));
        }
        let alerts = detector.evaluate(closed_at(600));
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        assert_eq!(alerts[0].dedup_key, "cost_burn/global@staging");
        assert_eq!(alerts[0].environment.as_deref(), Some("staging"));
    }

    #[test]
    fn the_config_is_checked() {
        let config = CostBurnConfig {
            timezone: "Mars/Olympus".into(),
            business_days: vec!["funday".into()],
            off_hours_usd_per_hour: -1.0,
            ..CostBurnConfig::default()
        };
        let errors = config.validate().join("\n");
        assert!(errors.contains("detect.cost_burn.timezone"), "{errors}");
        assert!(errors.contains("off_hours_usd_per_hour"), "{errors}");
        assert!(CostBurnConfig::default().validate().is_empty());
        let bad_hours = CostBurnConfig {
            business_hours: "9-5".into(),
            ..CostBurnConfig::default()
        };
        assert!(bad_hours.validate()[0].contains("business_hours"));
    }

    proptest::proptest! {
        /// However the hour window moves (forward a little, forward past itself, back), the
        /// slid count of business buckets is the count made afresh — across opening, closing,
        /// weekends and the 2026 DST change of America/New_York.
        #[test]
        fn sliding_the_business_count_matches_counting_afresh(
            start in 0i64..(14 * 8_640),
            steps in proptest::collection::vec(-400i64..800, 1..40),
        ) {
            let schedule = CostBurnConfig {
                timezone: "America/New_York".into(),
                ..CostBurnConfig::default()
            }
            .schedule()
            .expect("schedule");
            // 1 March 2026 00:00 UTC, in buckets, plus up to two weeks.
            let mut to = bucket_of(utc(2026, 3, 1, 0, 0)) + start;
            let mut last = None;
            for step in steps {
                to += step;
                let window = BusinessBuckets::slide(last, &schedule, to - HOUR_BUCKETS, to);
                proptest::prop_assert_eq!(
                    window.business,
                    schedule.business_buckets(to - HOUR_BUCKETS, to)
                );
                last = Some(window);
            }
        }
    }
}
