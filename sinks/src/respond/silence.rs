//! Silences: an operator's "not now" for the alerts that match every one of its matchers,
//! from `starts_at` to `ends_at`. Kept on the compacted `warden.silences` topic (keyed by
//! id; expiring one early republishes it with `ends_at` now), so every responder shares them
//! and a restarted one has them again. A silenced alert is recorded, not delivered.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use warden_ingest::alert::Alert;

use super::labels::{Matcher, Matchers};

/// A silence as published on `warden.silences`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SilenceRecord {
    /// UUIDv7.
    pub id: String,
    /// As written: `detector=traffic_spike`, `subject=~client:batch.*`.
    pub matchers: Vec<String>,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub created_by: String,
    pub comment: String,
}

/// A silence ready to match alerts.
#[derive(Debug, Clone)]
pub struct Silence {
    pub record: SilenceRecord,
    matchers: Matchers,
}

impl Silence {
    /// Checks a record: matchers that parse (at least one), a comment and an author, and an
    /// end after its start.
    pub fn new(record: SilenceRecord) -> Result<Self, String> {
        if record.matchers.is_empty() {
            return Err("a silence needs at least one matcher".to_owned());
        }
        let matchers = record
            .matchers
            .iter()
            .map(|text| Matcher::parse(text))
            .collect::<Result<Vec<_>, _>>()?;
        if record.comment.trim().is_empty() || record.created_by.trim().is_empty() {
            return Err("a silence needs a comment and its author".to_owned());
        }
        if record.ends_at <= record.starts_at {
            return Err("a silence ends after it starts".to_owned());
        }
        Ok(Self {
            record,
            matchers: Matchers(matchers),
        })
    }

    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        self.record.starts_at <= now && now < self.record.ends_at
    }

    /// Whether it mutes `alert` at `now`.
    pub fn mutes(&self, alert: &Alert, now: DateTime<Utc>) -> bool {
        self.is_active(now) && self.matchers.matches(alert)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;
    use warden_ingest::alert::Severity;

    use super::super::labels::tests::alert;
    use super::*;

    fn record(matchers: &[&str], for_: TimeDelta) -> SilenceRecord {
        let now = Utc::now();
        SilenceRecord {
            id: "s1".into(),
            matchers: matchers.iter().map(|m| (*m).to_owned()).collect(),
            starts_at: now,
            ends_at: now + for_,
            created_by: "alice".into(),
            comment: "batch backfill".into(),
        }
    }

    #[test]
    fn a_silence_mutes_what_all_its_matchers_match_while_it_lasts() {
        let silence = Silence::new(record(
            &["detector=traffic_spike", "subject=client:batch"],
            TimeDelta::hours(2),
        ))
        .expect("valid");
        let now = Utc::now();
        let batch = alert("traffic_spike", Severity::Warning, "client:batch");
        let other = alert("traffic_spike", Severity::Warning, "client:app");
        assert!(silence.mutes(&batch, now));
        assert!(!silence.mutes(&other, now));
        assert!(!silence.mutes(&batch, now + TimeDelta::hours(3)));
        assert!(Silence::new(record(&[], TimeDelta::hours(1))).is_err());
        assert!(Silence::new(record(&["colour=red"], TimeDelta::hours(1))).is_err());
    }
}
