//! The runbook action, schema version 1: one message on `warden.control` and one row of the
//! archive's `actions` table.
//!
//! An action is a decision to change how Warden or an endpoint behaves: revoke a token, impose
//! or lift an emergency rate limit, scale an endpoint down. The responder (or an operator)
//! publishes it to the control topic, every proxy replica applies what concerns it, and the
//! archiver keeps it for the audit trail. Same compatibility rules as [`crate::event`].

use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};

use crate::alert::Subject;
use crate::event::EventId;
use crate::table_record::TableRecord;

/// The action schema version this build writes.
pub const ACTION_SCHEMA_VERSION: u32 = 1;

/// The archive table of actions.
pub const ACTIONS_TABLE: &str = "actions";

/// What an action does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    /// Refuse a client token from now on (subject: `token:…` or `client:…`).
    RevokeToken,
    /// Undo a revocation (same subjects).
    RestoreToken,
    /// Cap a subject's request rate (`limit_per_minute`, and tokens with
    /// `tokens_per_minute`) until `expires_at` (subject: global, target, client, token, IP,
    /// country).
    EmergencyRateLimit,
    /// Remove an emergency rate limit before it expires.
    LiftRateLimit,
    /// Stop sending calls to a target (subject: `target:…`): its fallbacks serve them, else
    /// a 503 `target_disabled`.
    DisableTarget,
    /// Undo a `disable_target`.
    EnableTarget,
    /// Pin an endpoint's replicas where they are, `minReplica = maxReplica = replicas`, so
    /// autoscaling adds none (subject: `target:…`, `endpoint`; the bounds it had in
    /// `min_replicas` / `max_replicas`).
    FreezeAutoscaling,
    /// Scale an endpoint down (subject: `target:…`, `replicas`; the bounds it had in
    /// `min_replicas` / `max_replicas`).
    ScaleDown,
    /// Give an endpoint back the replica bounds it had before (`min_replicas`,
    /// `max_replicas`).
    RestoreScaling,
    /// Give a configured client one more key (subject: `client:…`, `key_sha256`; valid
    /// until `expires_at` if set): key rotation on every replica without editing configs.
    AddKey,
    /// Take back a key an `add_key` gave (same subject and `key_sha256`).
    RemoveKey,
}

impl ActionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RevokeToken => "revoke_token",
            Self::RestoreToken => "restore_token",
            Self::EmergencyRateLimit => "emergency_rate_limit",
            Self::LiftRateLimit => "lift_rate_limit",
            Self::DisableTarget => "disable_target",
            Self::EnableTarget => "enable_target",
            Self::FreezeAutoscaling => "freeze_autoscaling",
            Self::ScaleDown => "scale_down",
            Self::RestoreScaling => "restore_scaling",
            Self::AddKey => "add_key",
            Self::RemoveKey => "remove_key",
        }
    }

    /// The piece of live state an action sets: the later of two actions with the same slot
    /// and subject replaces the earlier (`revoke_token` and `restore_token` share one), which
    /// is what the compacted control topic keeps.
    fn slot(self) -> &'static str {
        match self {
            Self::RevokeToken | Self::RestoreToken => "access",
            Self::EmergencyRateLimit | Self::LiftRateLimit => "limit",
            Self::DisableTarget | Self::EnableTarget => "target",
            Self::FreezeAutoscaling | Self::ScaleDown | Self::RestoreScaling => "scale",
            Self::AddKey | Self::RemoveKey => "key",
        }
    }
}

/// One runbook action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlAction {
    /// Unique per action (UUIDv7).
    pub action_id: EventId,
    pub schema_version: u32,
    /// When it was decided.
    pub ts: DateTime<Utc>,
    pub action: ActionKind,
    pub subject: Subject,
    /// Why, in one line for a human.
    pub reason: String,
    /// Who decided: `runbook:<name>` (an automated runbook) or `operator:<name>`.
    pub actor: String,
    /// The `dedup_key` of the alert that led to it, if one did.
    #[serde(default)]
    pub alert_dedup_key: Option<String>,
    /// The runbook step it carries out.
    #[serde(default)]
    pub runbook: Option<String>,
    #[serde(default)]
    pub limit_per_minute: Option<u64>,
    /// Emergency limits: tokens per minute, besides (or instead of) requests.
    #[serde(default)]
    pub tokens_per_minute: Option<u64>,
    #[serde(default)]
    pub replicas: Option<u32>,
    /// When the action stops applying by itself (emergency limits), if ever.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub environment: Option<String>,
    /// `add_key` / `remove_key`: the key's SHA-256, in hex (never the key itself).
    #[serde(default)]
    pub key_sha256: Option<String>,
    /// The incident a runbook acted for.
    #[serde(default)]
    pub incident_id: Option<String>,
    /// Scaling actions: the Inference Endpoint (`namespace/name`).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Scaling actions: the endpoint's bounds before the change (what undo restores), or
    /// for `restore_scaling` the bounds restored.
    #[serde(default)]
    pub min_replicas: Option<u32>,
    #[serde(default)]
    pub max_replicas: Option<u32>,
}

impl ControlAction {
    /// An action decided now by `actor`; optional parameters left empty.
    pub fn new(
        action: ActionKind,
        subject: Subject,
        reason: impl Into<String>,
        actor: impl Into<String>,
    ) -> Self {
        Self {
            action_id: EventId::new(),
            schema_version: ACTION_SCHEMA_VERSION,
            ts: Utc::now().trunc_subsecs(6),
            action,
            subject,
            reason: reason.into(),
            actor: actor.into(),
            alert_dedup_key: None,
            runbook: None,
            limit_per_minute: None,
            tokens_per_minute: None,
            replicas: None,
            expires_at: None,
            environment: None,
            key_sha256: None,
            incident_id: None,
            endpoint: None,
            min_replicas: None,
            max_replicas: None,
        }
    }

    /// The record key on `warden.control`: the slot the action sets and its subject
    /// (`access/token:tok_…`; a key's hash too, `key/client:app/9f86…`, as a client holds
    /// several), so compaction keeps the latest action per piece of state.
    pub fn state_key(&self) -> String {
        match (self.action.slot(), &self.key_sha256) {
            ("key", Some(digest)) => format!("key/{}/{digest}", self.subject),
            (slot, _) => format!("{slot}/{}", self.subject),
        }
    }

    /// Whether the action still applies at `now` (emergency limits expire).
    pub fn is_in_force(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_none_or(|expires_at| now < expires_at)
    }
}

static ACTION_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let utc_micros = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let required = |name: &str, data_type: DataType| Field::new(name, data_type, false);
    let optional = |name: &str, data_type: DataType| Field::new(name, data_type, true);
    Arc::new(Schema::new(vec![
        required("action_id", DataType::Utf8),
        required("schema_version", DataType::Int32),
        required("ts", utc_micros.clone()),
        required("action", DataType::Utf8),
        required("subject", DataType::Utf8),
        required("reason", DataType::Utf8),
        required("actor", DataType::Utf8),
        optional("alert_dedup_key", DataType::Utf8),
        optional("runbook", DataType::Utf8),
        optional("limit_per_minute", DataType::Int64),
        optional("replicas", DataType::Int32),
        optional("expires_at", utc_micros),
        optional("environment", DataType::Utf8),
        // Added with the control plane: null in older files.
        optional("tokens_per_minute", DataType::Int64),
        optional("key_sha256", DataType::Utf8),
        // Added with the runbooks: null in older files.
        optional("incident_id", DataType::Utf8),
        optional("endpoint", DataType::Utf8),
        optional("min_replicas", DataType::Int32),
        optional("max_replicas", DataType::Int32),
    ]))
});

impl TableRecord for ControlAction {
    const TABLE: &'static str = ACTIONS_TABLE;
    const SUPPORTED_SCHEMA_VERSIONS: &'static [u32] = &[1];

    fn schema() -> SchemaRef {
        ACTION_SCHEMA.clone()
    }

    fn record_id(&self) -> EventId {
        self.action_id
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
    fn actions_round_trip_through_json_and_arrow() {
        let mut limit = ControlAction::new(
            ActionKind::EmergencyRateLimit,
            Subject::Client("app-prod".into()),
            "runaway cost",
            "responder",
        );
        limit.limit_per_minute = Some(60);
        limit.expires_at = Some(limit.ts + chrono::TimeDelta::hours(1));
        limit.alert_dedup_key = Some("cost_burn/client:app-prod".into());
        let revoke = ControlAction::new(
            ActionKind::RevokeToken,
            Subject::Token("tok_0123".into()),
            "used from a new country",
            "operator:alice",
        );
        let actions = vec![limit, revoke];
        for action in &actions {
            let json = serde_json::to_vec(action).expect("json");
            assert_eq!(&ControlAction::decode(&json).expect("decode"), action);
        }
        let batch = records_to_batch(&actions).expect("to arrow");
        assert_eq!(batch.schema(), ControlAction::schema());
        assert_eq!(
            batch_to_records::<ControlAction>(&batch).expect("back"),
            actions
        );
    }

    #[test]
    fn a_newer_schema_version_is_refused() {
        let mut action = ControlAction::new(
            ActionKind::ScaleDown,
            Subject::Target("llama".into()),
            "r",
            "responder",
        );
        action.schema_version = 7;
        let err = ControlAction::decode(&serde_json::to_vec(&action).expect("json"))
            .expect_err("refused");
        assert!(err.to_string().contains("schema_version 7"), "{err}");
    }
}
