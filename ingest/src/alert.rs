//! The alert, schema version 1: what a detector publishes to `warden.alerts`, what the
//! responder acts on, and one row of the archive's `alerts` table.
//!
//! It lives here, beside the audit event, because three crates read it (detectors write it,
//! sinks archive and deliver it) and crates share only what `warden-ingest` defines. The
//! compatibility rules of [`crate::event`] apply: unknown fields are accepted, later fields are
//! optional, and every schema version ever shipped stays decodable.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};

use crate::event::EventId;
use crate::table_record::TableRecord;

/// The alert schema version this build writes.
pub const ALERT_SCHEMA_VERSION: u32 = 1;

/// The archive table of alerts.
pub const ALERTS_TABLE: &str = "alerts";

/// Whether an alert's condition holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    /// The condition holds (first publication, or an escalation).
    Firing,
    /// The condition cleared.
    Resolved,
}

/// How urgent an alert is. Ordered: an escalation goes up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }
}

/// What an alert (or an action) is about: written `kind:value` (`client:app-prod`,
/// `ip:203.0.113.7`, `token:tok_…`, `target:llama-8b`, `country:DE`), or `global`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Subject {
    Global,
    Target(String),
    Client(String),
    /// A client token, by its fingerprint ([`crate::TokenId`]), never the key.
    Token(String),
    Ip(String),
    Country(String),
}

impl Subject {
    /// The kind, as written before the colon.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Global => "global",
            Self::Target(_) => "target",
            Self::Client(_) => "client",
            Self::Token(_) => "token",
            Self::Ip(_) => "ip",
            Self::Country(_) => "country",
        }
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Global => f.write_str("global"),
            Self::Target(v) | Self::Client(v) | Self::Token(v) | Self::Ip(v) | Self::Country(v) => {
                write!(f, "{}:{v}", self.kind())
            }
        }
    }
}

impl FromStr for Subject {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if text == "global" {
            return Ok(Self::Global);
        }
        let (kind, value) = text
            .split_once(':')
            .ok_or_else(|| format!("subject {text:?} is not kind:value or global"))?;
        if value.is_empty() {
            return Err(format!("subject {text:?} has no value"));
        }
        let value = value.to_owned();
        match kind {
            "target" => Ok(Self::Target(value)),
            "client" => Ok(Self::Client(value)),
            "token" => Ok(Self::Token(value)),
            "ip" => Ok(Self::Ip(value)),
            "country" => Ok(Self::Country(value)),
            other => Err(format!("unknown subject kind {other:?}")),
        }
    }
}

impl From<Subject> for String {
    fn from(subject: Subject) -> Self {
        subject.to_string()
    }
}

impl TryFrom<String> for Subject {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        text.parse()
    }
}

/// One source and how much it contributed (requests, dollars...: the alert's `unit`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceShare {
    pub source: String,
    pub value: f64,
}

/// Why a detector thinks so.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// The largest contributors, largest first.
    #[serde(default)]
    pub top_sources: Vec<SourceShare>,
    /// A few `request_id`s of the calls involved, to look up in `events`.
    #[serde(default)]
    pub sample_request_ids: Vec<String>,
}

/// The namespace of derived alert ids.
const ALERT_ID_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x5f0c_1a7e_9d42_4b8e_a1c3_7e2d_9b64_0f15);

/// One alert publication: a detector's finding about one subject over one window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Unique per publication, and derived from it (UUIDv5 of dedup key, status, severity
    /// and event time; see [`Alert::with_derived_id`]): a worker that re-publishes the same
    /// finding after a restart gives it the same id, so readers can drop the copy.
    pub alert_id: EventId,
    pub schema_version: u32,
    /// The event time the detector decided at (the end of its window, as its watermark saw it).
    pub ts: DateTime<Utc>,
    pub status: AlertStatus,
    /// Which detector: `cost_burn`, `traffic_spike`, `auth_failures`...
    pub detector: String,
    pub severity: Severity,
    pub subject: Subject,
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    /// What was measured, in `unit`.
    pub observed: f64,
    /// What it was compared with, in `unit`.
    pub threshold: f64,
    /// `usd_per_hour`, `requests`, `ratio`...
    pub unit: String,
    /// One line for a human.
    pub summary: String,
    #[serde(default)]
    pub evidence: Evidence,
    /// The runbook to follow (from the incident-response procedures), when there is one.
    #[serde(default)]
    pub runbook: Option<String>,
    /// Equal for every publication about the same condition (detector, subject, kind of
    /// breach): repeats are suppressed by it, and a resolve names the alert it clears.
    pub dedup_key: String,
    #[serde(default)]
    pub environment: Option<String>,
}

impl Alert {
    /// The dedup key of `detector`'s alerts about `subject`: `{detector}/{subject}`.
    pub fn dedup_key_for(detector: &str, subject: &Subject) -> String {
        format!("{detector}/{subject}")
    }

    /// The alert about `environment` only (a detector that watches each environment on its
    /// own): the environment is recorded and ends the dedup key, `{detector}/{subject}@{env}`.
    pub fn in_environment(mut self, environment: Option<&str>) -> Self {
        if let Some(environment) = environment {
            self.dedup_key = format!(
                "{}@{environment}",
                Self::dedup_key_for(&self.detector, &self.subject)
            );
            self.environment = Some(environment.to_owned());
        }
        self
    }

    /// The alert with its id derived from what makes the publication unique: its dedup key,
    /// status, severity and event time.
    pub fn with_derived_id(mut self) -> Self {
        let name = format!(
            "{}|{:?}|{}|{}",
            self.dedup_key,
            self.status,
            self.severity.as_str(),
            self.ts.timestamp_micros()
        );
        self.alert_id = EventId(uuid::Uuid::new_v5(&ALERT_ID_NAMESPACE, name.as_bytes()));
        self
    }

    /// A firing alert stamped now; the caller fills in the measurement.
    pub fn firing(
        detector: impl Into<String>,
        severity: Severity,
        subject: Subject,
        window: (DateTime<Utc>, DateTime<Utc>),
    ) -> Self {
        let detector = detector.into();
        let dedup_key = Self::dedup_key_for(&detector, &subject);
        Self {
            alert_id: EventId::new(),
            schema_version: ALERT_SCHEMA_VERSION,
            ts: window.1.trunc_subsecs(6),
            status: AlertStatus::Firing,
            detector,
            severity,
            subject,
            window_start: window.0.trunc_subsecs(6),
            window_end: window.1.trunc_subsecs(6),
            observed: 0.0,
            threshold: 0.0,
            unit: String::new(),
            summary: String::new(),
            evidence: Evidence::default(),
            runbook: None,
            dedup_key,
            environment: None,
        }
    }
}

static ALERT_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let utc_micros = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let required = |name: &str, data_type: DataType| Field::new(name, data_type, false);
    let optional = |name: &str, data_type: DataType| Field::new(name, data_type, true);
    let source_share = DataType::Struct(Fields::from(vec![
        optional("source", DataType::Utf8),
        optional("value", DataType::Float64),
    ]));
    Arc::new(Schema::new(vec![
        required("alert_id", DataType::Utf8),
        required("schema_version", DataType::Int32),
        required("ts", utc_micros.clone()),
        required("status", DataType::Utf8),
        required("detector", DataType::Utf8),
        required("severity", DataType::Utf8),
        required("subject", DataType::Utf8),
        required("window_start", utc_micros.clone()),
        required("window_end", utc_micros),
        required("observed", DataType::Float64),
        required("threshold", DataType::Float64),
        required("unit", DataType::Utf8),
        required("summary", DataType::Utf8),
        optional(
            "evidence",
            DataType::Struct(Fields::from(vec![
                optional(
                    "top_sources",
                    DataType::List(Arc::new(Field::new("item", source_share, true))),
                ),
                optional(
                    "sample_request_ids",
                    DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
                ),
            ])),
        ),
        optional("runbook", DataType::Utf8),
        required("dedup_key", DataType::Utf8),
        optional("environment", DataType::Utf8),
    ]))
});

impl TableRecord for Alert {
    const TABLE: &'static str = ALERTS_TABLE;
    const SUPPORTED_SCHEMA_VERSIONS: &'static [u32] = &[1];

    fn schema() -> SchemaRef {
        ALERT_SCHEMA.clone()
    }

    fn record_id(&self) -> EventId {
        self.alert_id
    }

    fn ts(&self) -> DateTime<Utc> {
        self.ts
    }

    fn schema_version(&self) -> u32 {
        self.schema_version
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table_record::{batch_to_records, records_to_batch};

    fn alert() -> Alert {
        let end = Utc::now();
        let mut alert = Alert::firing(
            "traffic_spike",
            Severity::Critical,
            Subject::Client("app-prod".into()),
            (end - chrono::TimeDelta::minutes(5), end),
        );
        alert.observed = 5200.0;
        alert.threshold = 4100.0;
        alert.unit = "requests".into();
        alert.summary = "10x traffic".into();
        alert.evidence.top_sources = vec![SourceShare {
            source: "ip:203.0.113.7".into(),
            value: 5000.0,
        }];
        alert.evidence.sample_request_ids = vec!["r-1".into(), "r-2".into()];
        alert.runbook = Some("runaway_cost".into());
        alert
    }

    #[test]
    fn subjects_read_back_as_written() {
        for subject in [
            Subject::Global,
            Subject::Client("app:prod".into()),
            Subject::Ip("2001:db8::1".into()),
            Subject::Country("DE".into()),
        ] {
            assert_eq!(subject.to_string().parse::<Subject>(), Ok(subject));
        }
        assert!("planet:mars".parse::<Subject>().is_err());
        assert!("client:".parse::<Subject>().is_err());
        assert!("nonsense".parse::<Subject>().is_err());
    }

    #[test]
    fn alerts_round_trip_through_json_and_arrow() {
        let alerts = vec![alert(), {
            let mut resolved = alert();
            resolved.status = AlertStatus::Resolved;
            resolved.evidence = Evidence::default();
            resolved.runbook = None;
            resolved
        }];
        let json: Vec<Alert> = alerts
            .iter()
            .map(|a| Alert::decode(&serde_json::to_vec(a).expect("json")).expect("decode"))
            .collect();
        assert_eq!(json, alerts);
        let batch = records_to_batch(&alerts).expect("to arrow");
        assert_eq!(batch.schema(), Alert::schema());
        assert_eq!(batch_to_records::<Alert>(&batch).expect("back"), alerts);
    }
}
