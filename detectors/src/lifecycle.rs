//! What becomes of a detector's findings: which are published, which are suppressed, and when
//! an alert is resolved.
//!
//! A detector says, at each evaluation, whether its condition holds for a subject (a
//! finding) or not. The [`AlertBook`] turns that into publications, keyed by the alert's
//! dedup key:
//! - the first finding fires the alert;
//! - a repeat at the same or a lower severity is suppressed until the cooldown has passed
//!   since the last publication (then it is published again as a reminder);
//! - a finding at a higher severity is published at once (an escalation);
//! - the first evaluation without a finding publishes a resolve and closes the alert, unless
//!   the detector reports the subject as holding (between its resolve and fire lines, see
//!   [`crate::detector`]): then the alert stays open, and nothing is published.
//!
//! [`AlertBook::settle`] takes a whole evaluation at once: the findings, and (by their absence)
//! every open alert whose condition no longer holds.
//!
//! All times are event times (the detector's watermark), so the same events give the same
//! publications on any worker and on a replay.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, TimeDelta, Utc};
use warden_ingest::alert::{Alert, AlertStatus, Severity};

/// An alert that was published and not yet resolved.
#[derive(Debug, Clone)]
struct OpenAlert {
    last: Alert,
    published_at: DateTime<Utc>,
}

/// The open alerts of one detector.
#[derive(Debug, Default, Clone)]
pub struct AlertBook {
    open: BTreeMap<String, OpenAlert>,
}

impl AlertBook {
    /// Takes one closed evaluation's findings at event time `now`: updates each finding's
    /// alert and resolves every open alert without one, except an alert whose subject is
    /// `holding` (by dedup key) and an alert last found over a window ending after `now` (an
    /// early evaluation's, which this evaluation cannot judge). Returns what to publish,
    /// resolves last (in key order, so a replay publishes the same sequence).
    pub fn settle(
        &mut self,
        findings: Vec<Alert>,
        holding: &[String],
        now: DateTime<Utc>,
        cooldown: TimeDelta,
    ) -> Vec<Alert> {
        let mut cleared: BTreeSet<String> = self
            .open
            .iter()
            .filter(|(_, open)| open.last.window_end <= now)
            .map(|(key, _)| key.clone())
            .collect();
        for key in holding {
            cleared.remove(key);
        }
        let mut published = Vec::new();
        for finding in findings {
            cleared.remove(&finding.dedup_key);
            let key = finding.dedup_key.clone();
            published.extend(self.update(&key, Some(finding), now, cooldown));
        }
        for key in cleared {
            published.extend(self.update(&key, None, now, cooldown));
        }
        published
    }

    /// Takes the finding (`Some`) or its absence (`None`) for `dedup_key` at event time `now`;
    /// returns the alert to publish, if any.
    pub fn update(
        &mut self,
        dedup_key: &str,
        finding: Option<Alert>,
        now: DateTime<Utc>,
        cooldown: TimeDelta,
    ) -> Option<Alert> {
        match (finding, self.open.get(dedup_key)) {
            (Some(alert), None) => Some(self.publish(alert, now)),
            (Some(alert), Some(open)) => {
                let escalated = alert.severity > open.last.severity;
                let cooled_down = now - open.published_at >= cooldown;
                if escalated || cooled_down {
                    Some(self.publish(alert, now))
                } else {
                    None
                }
            }
            (None, Some(_)) => {
                let open = self.open.remove(dedup_key)?;
                let mut resolved = open.last;
                resolved.status = AlertStatus::Resolved;
                resolved.severity = Severity::Info;
                resolved.ts = now;
                resolved.summary = format!("resolved: {}", resolved.summary);
                Some(resolved.with_derived_id())
            }
            (None, None) => None,
        }
    }

    fn publish(&mut self, alert: Alert, now: DateTime<Utc>) -> Alert {
        let alert = alert.with_derived_id();
        self.open.insert(
            alert.dedup_key.clone(),
            OpenAlert {
                last: alert.clone(),
                published_at: now,
            },
        );
        alert
    }

    /// Whether an alert is open under `dedup_key`.
    pub fn is_open(&self, dedup_key: &str) -> bool {
        self.open.contains_key(dedup_key)
    }
}

#[cfg(test)]
mod tests {
    use warden_ingest::alert::Subject;

    use super::*;

    fn at(minutes: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + minutes * 60, 0).expect("time")
    }

    fn finding(severity: Severity, minutes: i64) -> Alert {
        Alert::firing(
            "traffic_spike",
            severity,
            Subject::Global,
            (at(minutes - 5), at(minutes)),
        )
    }

    #[test]
    fn fires_suppresses_escalates_reminds_and_resolves() {
        let mut book = AlertBook::default();
        let cooldown = TimeDelta::minutes(15);
        let key = finding(Severity::Warning, 0).dedup_key;

        let fired = book.update(&key, Some(finding(Severity::Warning, 0)), at(0), cooldown);
        assert_eq!(fired.map(|a| a.status), Some(AlertStatus::Firing));
        assert!(
            book.update(&key, Some(finding(Severity::Warning, 1)), at(1), cooldown)
                .is_none(),
            "a repeat within the cooldown is suppressed"
        );
        let escalated = book.update(&key, Some(finding(Severity::Critical, 2)), at(2), cooldown);
        assert_eq!(escalated.map(|a| a.severity), Some(Severity::Critical));
        assert!(
            book.update(&key, Some(finding(Severity::Warning, 3)), at(3), cooldown)
                .is_none(),
            "a lower severity is no news"
        );
        let reminder = book.update(&key, Some(finding(Severity::Warning, 17)), at(17), cooldown);
        assert!(
            reminder.is_some(),
            "published again once the cooldown passed"
        );

        let resolved = book.update(&key, None, at(18), cooldown).expect("resolve");
        assert_eq!(resolved.status, AlertStatus::Resolved);
        assert_eq!(resolved.dedup_key, key);
        assert_eq!(resolved.ts, at(18));
        assert!(!book.is_open(&key));
        assert!(book.update(&key, None, at(19), cooldown).is_none());
    }
}
