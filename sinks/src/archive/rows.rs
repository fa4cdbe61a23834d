//! The archive's tables, and the rows the archiver gathers for one object of one of them.
//!
//! Each archived topic feeds one table: `warden.events` → `events`, `warden.alerts` →
//! `alerts`, `warden.control` → `actions`, `warden.notifications` → `notifications`, `warden.incidents` → `incidents`. Events take the fast path (decoded as borrowed
//! [`EventRow`]s, appended straight to Arrow columns); alerts, actions, notifications and incident
//! entries, a few a minute, are decoded into their structs and converted through serde.

use arrow::array::RecordBatch;
use arrow::error::ArrowError;
use chrono::{DateTime, Utc};
use warden_ingest::EventId;
use warden_ingest::action::ControlAction;
use warden_ingest::alert::Alert;
use warden_ingest::columnar::EventBatchBuilder;
use warden_ingest::event::DecodeError;
use warden_ingest::event_row::EventRow;
use warden_ingest::incident::IncidentEntry;
use warden_ingest::layout::EVENTS_TABLE;
use warden_ingest::notification::NotificationRecord;
use warden_ingest::table_record::{TableRecord, records_to_batch};

/// An archive table fed by a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Events,
    Alerts,
    Actions,
    Notifications,
    Incidents,
}

impl Table {
    /// The table's name: its directory in the archive and its name in `warden sql`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Events => EVENTS_TABLE,
            Self::Alerts => Alert::TABLE,
            Self::Actions => ControlAction::TABLE,
            Self::Notifications => NotificationRecord::TABLE,
            Self::Incidents => IncidentEntry::TABLE,
        }
    }
}

/// One Kafka record decoded for its table.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "events are nearly every record: boxing them would add an allocation each"
)]
pub enum ArchiveRecord<'a> {
    Event(EventRow<'a>),
    Alert(Alert),
    Action(ControlAction),
    Notification(NotificationRecord),
    Incident(IncidentEntry),
}

impl<'a> ArchiveRecord<'a> {
    /// Decodes a payload of a topic feeding `table`; an error is the dead-letter reason.
    pub fn decode(table: Table, payload: &'a [u8]) -> Result<Self, DecodeError> {
        Ok(match table {
            Table::Events => Self::Event(EventRow::from_json(payload)?),
            Table::Alerts => Self::Alert(Alert::decode(payload)?),
            Table::Actions => Self::Action(ControlAction::decode(payload)?),
            Table::Notifications => Self::Notification(NotificationRecord::decode(payload)?),
            Table::Incidents => Self::Incident(IncidentEntry::decode(payload)?),
        })
    }

    /// The record's own id: a second record with the same id in a batch is skipped.
    pub fn id(&self) -> EventId {
        match self {
            Self::Event(event) => event.event_id,
            Self::Alert(alert) => alert.record_id(),
            Self::Action(action) => action.record_id(),
            Self::Notification(notification) => notification.record_id(),
            Self::Incident(entry) => entry.record_id(),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Self::Event(_) => "event",
            Self::Alert(_) => "alert",
            Self::Action(_) => "action",
            Self::Notification(_) => "notification",
            Self::Incident(_) => "incident entry",
        }
    }

    /// Event time: the hour partition the record goes to.
    pub fn ts(&self) -> DateTime<Utc> {
        match self {
            Self::Event(event) => event.ts,
            Self::Alert(alert) => TableRecord::ts(alert),
            Self::Action(action) => TableRecord::ts(action),
            Self::Notification(notification) => TableRecord::ts(notification),
            Self::Incident(entry) => TableRecord::ts(entry),
        }
    }
}

/// The rows of one object being gathered: one table, one hour, one partition's batch.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "one per object, and most objects are of events"
)]
pub enum ObjectRows {
    /// Arrow columns, appended to as events are read: a full batch costs its compact column
    /// bytes, not one struct per event.
    Events(EventBatchBuilder),
    Alerts(Vec<Alert>),
    Actions(Vec<ControlAction>),
    Notifications(Vec<NotificationRecord>),
    Incidents(Vec<IncidentEntry>),
}

impl ObjectRows {
    pub fn new(table: Table) -> Self {
        match table {
            Table::Events => Self::Events(EventBatchBuilder::default()),
            Table::Alerts => Self::Alerts(Vec::new()),
            Table::Actions => Self::Actions(Vec::new()),
            Table::Notifications => Self::Notifications(Vec::new()),
            Table::Incidents => Self::Incidents(Vec::new()),
        }
    }

    /// Adds a record. The archiver keeps one `ObjectRows` per table and decodes every record
    /// of a topic for that topic's table, so kinds always match.
    pub fn push(&mut self, record: ArchiveRecord<'_>) {
        match (self, record) {
            (Self::Events(columns), ArchiveRecord::Event(event)) => columns.append(&event),
            (Self::Alerts(alerts), ArchiveRecord::Alert(alert)) => alerts.push(alert),
            (Self::Actions(actions), ArchiveRecord::Action(action)) => actions.push(action),
            (Self::Notifications(rows), ArchiveRecord::Notification(row)) => rows.push(row),
            (Self::Incidents(rows), ArchiveRecord::Incident(row)) => rows.push(row),
            (rows, record) => unreachable!(
                "a {} record among {} rows: records are decoded for their topic's table",
                record.kind(),
                rows.kind()
            ),
        }
    }

    /// The rows as one record batch of their table's schema; `self` is left empty.
    pub fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        match self {
            Self::Events(columns) => columns.finish(),
            Self::Alerts(alerts) => records_to_batch(&std::mem::take(alerts)),
            Self::Actions(actions) => records_to_batch(&std::mem::take(actions)),
            Self::Notifications(rows) => records_to_batch(&std::mem::take(rows)),
            Self::Incidents(rows) => records_to_batch(&std::mem::take(rows)),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Self::Events(_) => "events",
            Self::Alerts(_) => "alerts",
            Self::Actions(_) => "actions",
            Self::Notifications(_) => "notifications",
            Self::Incidents(_) => "incidents",
        }
    }
}

#[cfg(test)]
mod tests {
    use warden_ingest::layout::ARCHIVE_TABLES;

    use super::*;

    /// Retention (`warden archive prune`) and `warden verify` walk `ARCHIVE_TABLES`: a table
    /// the archiver writes but that list lacks is never pruned nor verified (the
    /// `notifications` table was, until the incidents table joined).
    #[test]
    fn every_table_the_archiver_writes_is_pruned_and_verified() {
        for table in [
            Table::Events,
            Table::Alerts,
            Table::Actions,
            Table::Notifications,
            Table::Incidents,
        ] {
            assert!(
                ARCHIVE_TABLES.contains(&table.name()),
                "{} is not in ARCHIVE_TABLES",
                table.name()
            );
        }
    }
}
