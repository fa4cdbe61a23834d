//! The incident timeline entry, schema version 1: one message on `warden.incidents` and one
//! row of the archive's `incidents` table. Same compatibility rules as [`crate::event`].
//!
//! An incident is what a runbook opened for an alert: its plan, each step's outcome, the
//! reports it attached, approvals, undo. It is never one record that is rewritten but the
//! sequence of its entries, keyed by `incident_id` (so one partition keeps them in order):
//! whoever reads the topic folds them into the incident's state, the runbook engine to know
//! what is left to do, `warden incident show` to print the timeline, and the archive keeps
//! every entry for years.

use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};

use crate::event::EventId;
use crate::table_record::TableRecord;

/// The incident schema version this build writes.
pub const INCIDENT_SCHEMA_VERSION: u32 = 1;

/// The archive table of incident timelines.
pub const INCIDENTS_TABLE: &str = "incidents";

/// What an entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// The runbook opened the incident for an alert: its mode and its plan (`data`).
    Opened,
    /// A later alert joined the incident (a repeat, an escalation, a resolve, a retry with a
    /// revoked token).
    Alert,
    /// A step of the plan: about to run (`started`, with what undo needs), or its outcome.
    Step,
    /// A report attached to the incident (top sources, a token's activity), in `data`.
    Report,
    /// An operator approved the steps that wait for approval.
    Approved,
    /// The plan's approval window passed without an approval: the waiting steps are dropped.
    Expired,
    /// An operator asked for the incident's changes to be undone.
    UndoRequested,
    /// One change undone (`step` names what it undid), or the undo finished (no `step`).
    Undone,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Opened => "opened",
            Self::Alert => "alert",
            Self::Step => "step",
            Self::Report => "report",
            Self::Approved => "approved",
            Self::Expired => "expired",
            Self::UndoRequested => "undo_requested",
            Self::Undone => "undone",
        }
    }
}

/// How a step (or an undo of one) went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepOutcome {
    /// Dry run: computed and recorded, nothing changed.
    Planned,
    /// Waits for `warden incident approve`.
    AwaitingApproval,
    /// About to change something (written before the change, so a restart knows).
    Started,
    Ok,
    Failed,
    /// Not applicable, or held back by a guard rail (`detail` says which).
    Skipped,
}

impl StepOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Planned => "planned",
            Self::AwaitingApproval => "awaiting_approval",
            Self::Started => "started",
            Self::Ok => "ok",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
        }
    }

    /// Whether the step is over (nothing more will be done for it).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Planned | Self::Ok | Self::Failed | Self::Skipped
        )
    }
}

/// One entry of an incident's timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentEntry {
    /// Unique per entry (UUIDv7).
    pub entry_id: EventId,
    pub schema_version: u32,
    pub ts: DateTime<Utc>,
    /// `inc-` and 12 hex digits, derived from the alert that opened it.
    pub incident_id: String,
    /// `runaway_cost`, `token_compromise`.
    pub runbook: String,
    pub kind: EntryKind,
    /// The step (`disable_autoscaling`, `revoke`...), for step and undo entries.
    #[serde(default)]
    pub step: Option<String>,
    #[serde(default)]
    pub outcome: Option<StepOutcome>,
    /// `dry_run`, `approve` or `auto` (opened entries).
    #[serde(default)]
    pub mode: Option<String>,
    /// The alert concerned (opened and alert entries; the opening alert for steps).
    #[serde(default)]
    pub alert_dedup_key: Option<String>,
    #[serde(default)]
    pub alert_id: Option<String>,
    /// What the incident (or the step) is about: `global`, `client:app`, `token:tok_…`.
    #[serde(default)]
    pub subject: Option<String>,
    #[serde(default)]
    pub environment: Option<String>,
    /// One line for a human.
    pub detail: String,
    /// Who approved or asked for the undo: `operator:<name>`; `runbook:<name>` otherwise.
    pub actor: String,
    /// The `warden.control` action a step published, if it did.
    #[serde(default)]
    pub action_id: Option<String>,
    /// The Endpoints API's status code, for steps that called it.
    #[serde(default)]
    pub http_status: Option<u16>,
    /// Step-specific JSON: the plan, the scaling before a change, a report's rows, the SQL to
    /// continue with.
    #[serde(default)]
    pub data: Option<String>,
}

impl IncidentEntry {
    /// An entry of `incident_id` written now by `actor`; optional fields left empty.
    pub fn new(
        incident_id: &str,
        runbook: &str,
        kind: EntryKind,
        detail: impl Into<String>,
        actor: impl Into<String>,
    ) -> Self {
        Self {
            entry_id: EventId::new(),
            schema_version: INCIDENT_SCHEMA_VERSION,
            ts: Utc::now().trunc_subsecs(6),
            incident_id: incident_id.to_owned(),
            runbook: runbook.to_owned(),
            kind,
            step: None,
            outcome: None,
            mode: None,
            alert_dedup_key: None,
            alert_id: None,
            subject: None,
            environment: None,
            detail: detail.into(),
            actor: actor.into(),
            action_id: None,
            http_status: None,
            data: None,
        }
    }
}

static INCIDENT_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let utc_micros = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let required = |name: &str, data_type: DataType| Field::new(name, data_type, false);
    let optional = |name: &str, data_type: DataType| Field::new(name, data_type, true);
    Arc::new(Schema::new(vec![
        required("entry_id", DataType::Utf8),
        required("schema_version", DataType::Int32),
        required("ts", utc_micros),
        required("incident_id", DataType::Utf8),
        required("runbook", DataType::Utf8),
        required("kind", DataType::Utf8),
        optional("step", DataType::Utf8),
        optional("outcome", DataType::Utf8),
        optional("mode", DataType::Utf8),
        optional("alert_dedup_key", DataType::Utf8),
        optional("alert_id", DataType::Utf8),
        optional("subject", DataType::Utf8),
        optional("environment", DataType::Utf8),
        required("detail", DataType::Utf8),
        required("actor", DataType::Utf8),
        optional("action_id", DataType::Utf8),
        optional("http_status", DataType::Int32),
        optional("data", DataType::Utf8),
    ]))
});

impl TableRecord for IncidentEntry {
    const TABLE: &'static str = INCIDENTS_TABLE;
    const SUPPORTED_SCHEMA_VERSIONS: &'static [u32] = &[1];

    fn schema() -> SchemaRef {
        INCIDENT_SCHEMA.clone()
    }

    fn record_id(&self) -> EventId {
        self.entry_id
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

    #[test]
    fn entries_round_trip_through_json_and_arrow() {
        let mut opened = IncidentEntry::new(
            "inc-0123456789ab",
            "runaway_cost",
            EntryKind::Opened,
            "cost_burn global: $812.40 in the last hour",
            "runbook:runaway_cost",
        );
        opened.mode = Some("dry_run".into());
        opened.alert_dedup_key = Some("cost_burn/global@prod".into());
        opened.data = Some(r#"{"steps":["burn_rate"]}"#.into());
        let mut step = IncidentEntry::new(
            "inc-0123456789ab",
            "runaway_cost",
            EntryKind::Step,
            "pinned my-org/llama at 3 replicas",
            "runbook:runaway_cost",
        );
        step.step = Some("disable_autoscaling".into());
        step.outcome = Some(StepOutcome::Ok);
        step.http_status = Some(200);
        let entries = vec![opened, step];
        for entry in &entries {
            let json = serde_json::to_vec(entry).expect("json");
            assert_eq!(&IncidentEntry::decode(&json).expect("decode"), entry);
        }
        let batch = records_to_batch(&entries).expect("to arrow");
        assert_eq!(batch.schema(), IncidentEntry::schema());
        assert_eq!(
            batch_to_records::<IncidentEntry>(&batch).expect("back"),
            entries
        );
    }
}
