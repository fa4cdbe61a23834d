//! The notification record, schema version 1: one message on `warden.notifications` per
//! notification the responder delivered, dead-lettered, or held back (a silenced or
//! inhibited alert), and one row of the archive's `notifications` table. Same compatibility
//! rules as [`crate::event`].

use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::event::EventId;
use crate::table_record::TableRecord;

/// The notification schema version this build writes.
pub const NOTIFICATION_SCHEMA_VERSION: u32 = 1;

/// The archive table of notifications.
pub const NOTIFICATIONS_TABLE: &str = "notifications";

/// What became of a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationOutcome {
    /// The receiver took it.
    Delivered,
    /// It could not be delivered within the retry budget, or the receiver refused it for
    /// good: it is on `warden.dlq` with the reason.
    DeadLettered,
    /// A silence held the alert back.
    Silenced,
    /// A firing alert of an inhibition rule held the alert back.
    Inhibited,
}

/// One notification's audit record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotificationRecord {
    /// UUIDv7.
    pub notification_id: EventId,
    pub schema_version: u32,
    /// When the outcome was known.
    pub ts: DateTime<Utc>,
    pub receiver: String,
    /// `slack`, `email`, `webhook`...
    pub receiver_kind: String,
    /// The aggregation group (route and grouping label values).
    pub group_key: String,
    /// `firing`, `resolved` or `repeat`; none for held-back alerts.
    #[serde(default)]
    pub reason: Option<String>,
    /// `firing` or `resolved`.
    pub status: String,
    pub outcome: NotificationOutcome,
    /// Delivery attempts made (0 for held-back alerts).
    pub attempts: u32,
    #[serde(default)]
    pub http_status: Option<u16>,
    /// Why it failed (never a credential).
    #[serde(default)]
    pub error: Option<String>,
    /// The alert publications it carried (`alert_id`s).
    pub alert_ids: Vec<String>,
    /// Their conditions.
    pub dedup_keys: Vec<String>,
    #[serde(default)]
    pub content_sha256: Option<String>,
    /// What held an alert back: the silence's id, or the inhibiting alert's dedup key.
    #[serde(default)]
    pub held_by: Option<String>,
}

static NOTIFICATION_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let utc_micros = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let required = |name: &str, data_type: DataType| Field::new(name, data_type, false);
    let optional = |name: &str, data_type: DataType| Field::new(name, data_type, true);
    let strings = DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)));
    Arc::new(Schema::new(vec![
        required("notification_id", DataType::Utf8),
        required("schema_version", DataType::Int32),
        required("ts", utc_micros),
        required("receiver", DataType::Utf8),
        required("receiver_kind", DataType::Utf8),
        required("group_key", DataType::Utf8),
        optional("reason", DataType::Utf8),
        required("status", DataType::Utf8),
        required("outcome", DataType::Utf8),
        required("attempts", DataType::Int32),
        optional("http_status", DataType::Int32),
        optional("error", DataType::Utf8),
        optional("alert_ids", strings.clone()),
        optional("dedup_keys", strings),
        optional("content_sha256", DataType::Utf8),
        optional("held_by", DataType::Utf8),
    ]))
});

impl TableRecord for NotificationRecord {
    const TABLE: &'static str = NOTIFICATIONS_TABLE;
    const SUPPORTED_SCHEMA_VERSIONS: &'static [u32] = &[1];

    fn schema() -> SchemaRef {
        NOTIFICATION_SCHEMA.clone()
    }

    fn record_id(&self) -> EventId {
        self.notification_id
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
    use chrono::SubsecRound;

    use super::*;
    use crate::table_record::{batch_to_records, records_to_batch};

    #[test]
    fn notifications_round_trip_through_json_and_arrow() {
        let record = NotificationRecord {
            notification_id: EventId::new(),
            schema_version: NOTIFICATION_SCHEMA_VERSION,
            ts: Utc::now().trunc_subsecs(6),
            receiver: "sec-slack".into(),
            receiver_kind: "slack".into(),
            group_key: "respond{detector=\"cost_burn\"}".into(),
            reason: Some("firing".into()),
            status: "firing".into(),
            outcome: NotificationOutcome::Delivered,
            attempts: 2,
            http_status: Some(200),
            error: None,
            alert_ids: vec!["a1".into(), "a2".into()],
            dedup_keys: vec!["cost_burn/client:app".into()],
            content_sha256: Some("ab".repeat(32)),
            held_by: None,
        };
        let json = serde_json::to_vec(&record).expect("json");
        assert_eq!(NotificationRecord::decode(&json).expect("decode"), record);
        let records = vec![record];
        let batch = records_to_batch(&records).expect("to arrow");
        assert_eq!(
            batch_to_records::<NotificationRecord>(&batch).expect("back"),
            records
        );
    }
}
