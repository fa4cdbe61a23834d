//! The responder's loop: `warden.alerts` in, notifications out, nothing lost or repeated.
//!
//! - Alerts are read in the responders' consumer group. `warden.alerts` has one partition,
//!   so one member at a time dispatches every group (others stand by and take over on a
//!   rebalance).
//! - The dispatcher's state lives in the compacted `warden.respond.state`: the current
//!   publication of each condition held (`alert/<dedup key>`) and the notification log
//!   (`log/<receiver>/<group key>`). A record's offset is committed only after the state
//!   it changed is on the broker, and a member that gets the partition rebuilds the state
//!   from that topic first: a restarted or rebalanced responder neither loses an alert nor
//!   repeats a notification the log says was delivered.
//! - Each receiver has its own queue and task (retries, `Retry-After`, its rate limit), so
//!   a receiver that is down holds up no other. A notification that cannot be delivered
//!   within the retry budget (or is refused for good) goes to `warden.dlq` with the reason,
//!   and a `notification_failure` alert about that receiver goes to the others.
//! - Every notification's outcome, and every alert held back by a silence or an inhibition,
//!   is an audit record on `warden.notifications` (the archive's `notifications` table).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use warden_ingest::EventId;
use warden_ingest::alert::{Alert, AlertStatus, Severity, Subject};
use warden_ingest::kafka::{
    AlertPublisher, ConsumedRecord, DeadLetterPublisher, DeliveringProducer, Delivery,
    KafkaCluster, KafkaError, KafkaSetupError, Outgoing, PartitionOffsets, Received, TopicConsumer,
    TopicReader,
};
use warden_ingest::notification::{
    NOTIFICATION_SCHEMA_VERSION, NotificationOutcome, NotificationRecord,
};
use warden_ingest::table_record::TableRecord;

use super::config::RespondSettings;
use super::dispatch::{Dispatcher, LogEntry, Muted, Notification};
use super::notify::{self, Delivered, Notifier, NotifyError};
use super::retry::RetryPolicy;
use super::silence::{Silence, SilenceRecord};

/// Notifications waiting per receiver before new ones are dead-lettered.
const RECEIVER_QUEUE: usize = 10_000;
/// Alerts ingested before their state is written and their offsets committed.
const BATCH: usize = 1_000;
/// How long a record of a state topic may take to arrive while it is read to its end.
const READ_PATIENCE: Duration = Duration::from_secs(10);
/// The detector name of the alerts about receivers that cannot be reached.
pub const NOTIFICATION_FAILURE: &str = "notification_failure";

/// Why the responder could not start.
#[derive(Debug, thiserror::Error)]
pub enum RespondError {
    #[error(transparent)]
    Kafka(#[from] KafkaSetupError),
    #[error("{0}")]
    Receiver(String),
}

/// One receiver's delivery task, as the loop sees it.
struct ReceiverHandle {
    kind: &'static str,
    queue: mpsc::Sender<Notification>,
}

/// How one notification went, reported by its receiver's task.
struct Outcome {
    notification: Notification,
    result: Result<Delivered, NotifyError>,
    attempts: u32,
}

/// The responder role.
#[derive(Debug)]
pub struct Responder {
    cluster: KafkaCluster,
    settings: Arc<RespondSettings>,
}

impl Responder {
    pub fn new(cluster: &KafkaCluster, settings: RespondSettings) -> Self {
        Self {
            cluster: cluster.clone(),
            settings: Arc::new(settings),
        }
    }

    /// Runs until `shutdown`; fails only when it cannot start.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), RespondError> {
        let client = notify::http_client().map_err(RespondError::Receiver)?;
        let (outcomes_tx, mut outcomes) = mpsc::unbounded_channel();
        let retry = RetryPolicy {
            max_attempts: self.settings.max_attempts,
            initial_backoff: Duration::from_secs(1),
            max_backoff: self.settings.max_backoff,
        };
        let mut receivers = HashMap::new();
        for receiver in &self.settings.receivers {
            let notifier: Arc<dyn Notifier> =
                Arc::from(notify::build(receiver, &client).map_err(RespondError::Receiver)?);
            let (queue, pending) = mpsc::channel(RECEIVER_QUEUE);
            tokio::spawn(deliver_each(
                notifier,
                pending,
                outcomes_tx.clone(),
                retry,
                shutdown.clone(),
            ));
            receivers.insert(
                receiver.name.clone(),
                ReceiverHandle {
                    kind: receiver.kind.as_str(),
                    queue,
                },
            );
        }
        drop(outcomes_tx);
        let topics = self.cluster.topics().clone();
        let consumer =
            TopicConsumer::subscribe(&self.cluster, &self.settings.group_id, &[&topics.alerts])?;
        if let Ok(partitions) = consumer.partitions_of(&topics.alerts).await
            && partitions.len() > 1
        {
            warn!(
                topic = %topics.alerts,
                partitions = partitions.len(),
                "the alerts topic has more than one partition: with several responders, a \
                 group's alerts may be split between them; run one responder, or recreate \
                 the topic with one partition"
            );
        }
        let (silences_tx, silences) = watch::channel(None);
        tokio::spawn(follow_silences(
            self.cluster.clone(),
            silences_tx,
            shutdown.clone(),
        ));
        let mut loop_state = Loop {
            settings: Arc::clone(&self.settings),
            cluster: self.cluster.clone(),
            writes: Writes::new(&self.cluster)?,
            dead_letters: DeadLetterPublisher::new(&self.cluster)?,
            receivers,
            dispatcher: None,
            seen_assignments: 0,
            offsets: PartitionOffsets::default(),
            failing: HashSet::new(),
            unread: None,
            silences,
            alerts: AlertPublisher::new(&self.cluster)?,
        };
        info!(
            receivers = self.settings.receivers.len(),
            group = %self.settings.group_id,
            "responder started"
        );
        let mut records = consumer.records();
        loop {
            let wake = loop_state.next_wake();
            tokio::select! {
                () = shutdown.cancelled() => break,
                received = records.next() => match received {
                    Ok(Received::Record(record)) => {
                        loop_state.ensure_state(&consumer).await;
                        loop_state.take_record(record.topic(), record.partition(), record.offset(), record.key(), record.payload()).await;
                        let mut taken = 1;
                        while taken < BATCH {
                            match records.ready() {
                                Some(Ok(Received::Record(record))) => {
                                    loop_state.take_record(record.topic(), record.partition(), record.offset(), record.key(), record.payload()).await;
                                    taken += 1;
                                }
                                Some(Ok(Received::End { .. })) => {}
                                Some(Err(err)) => {
                                    warn!(error = %err, "reading alerts failed");
                                    break;
                                }
                                None => break,
                            }
                        }
                        loop_state.settle(&consumer).await;
                    }
                    Ok(Received::End { .. }) => {}
                    Err(err) => {
                        warn!(error = %err, "reading alerts failed");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                },
                () = tokio::time::sleep(wake) => {
                    loop_state.ensure_state(&consumer).await;
                    loop_state.flush(&consumer).await;
                }
                Some(outcome) = outcomes.recv() => {
                    loop_state.outcome(outcome).await;
                    while let Ok(outcome) = outcomes.try_recv() {
                        loop_state.outcome(outcome).await;
                    }
                    loop_state.writes.flush().await;
                }
                Ok(()) = loop_state.silences.changed() => loop_state.apply_silences(),
            }
        }
        loop_state.writes.flush().await;
        info!("responder stopped");
        Ok(())
    }
}

/// The loop's state.
struct Loop {
    settings: Arc<RespondSettings>,
    cluster: KafkaCluster,
    writes: Writes,
    dead_letters: DeadLetterPublisher,
    receivers: HashMap<String, ReceiverHandle>,
    /// `None` while this member holds no partition of the alerts (or has not rebuilt the
    /// state since it got it).
    dispatcher: Option<Dispatcher>,
    /// The consumer's assignment count the dispatcher was rebuilt for.
    seen_assignments: u64,
    /// Offsets taken but not yet committed.
    offsets: PartitionOffsets,
    /// Receivers whose last notification was dead-lettered.
    failing: HashSet<String>,
    /// The first record taken while no dispatcher could hold it: read again from there.
    unread: Option<(String, i32, i64)>,
    /// The silences, once the topic has been read to its end (`None` before: nothing is
    /// flushed until then, or a silenced alert could go out).
    silences: watch::Receiver<Option<Vec<Silence>>>,
    /// Publishes the `notification_failure` alerts.
    alerts: AlertPublisher,
}

impl Loop {
    fn apply_silences(&mut self) {
        let current = self.silences.borrow_and_update().clone();
        if let (Some(dispatcher), Some(silences)) = (&mut self.dispatcher, current) {
            dispatcher.set_silences(silences);
        }
    }

    /// How long until the next group is due (at most a second: assignments are checked).
    fn next_wake(&self) -> Duration {
        let now = Utc::now();
        self.dispatcher
            .as_ref()
            .and_then(Dispatcher::next_due)
            .map(|due| (due - now).to_std().unwrap_or(Duration::ZERO))
            .unwrap_or(Duration::from_secs(1))
            .min(Duration::from_secs(1))
    }

    /// Rebuilds the dispatcher from the state topic when the partition was (re)assigned, and
    /// drops it when this member lost the partition.
    async fn ensure_state(&mut self, consumer: &TopicConsumer) {
        let alerts = &self.cluster.topics().alerts;
        let assignments = consumer.assignments();
        if assignments == self.seen_assignments && self.dispatcher.is_some() {
            return;
        }
        if !consumer.is_assigned(alerts, 0).await {
            if self.dispatcher.take().is_some() {
                info!("the alerts partition went to another responder: standing by");
            }
            return;
        }
        // What this member wrote must be on the broker before it is read back.
        self.writes.flush().await;
        match self.load_state().await {
            Ok(dispatcher) => {
                let (groups, conditions) = dispatcher.len();
                info!(groups, conditions, "responder state rebuilt");
                self.dispatcher = Some(dispatcher);
                self.seen_assignments = assignments;
                self.apply_silences();
            }
            // Tried again at the next tick; records taken meanwhile are read again.
            Err(err) => warn!(error = %err, "cannot read the responder state yet"),
        }
    }

    async fn load_state(&self) -> Result<Dispatcher, KafkaError> {
        let topic = &self.cluster.topics().respond_state;
        let reader = TopicReader::from_beginning(&self.cluster, topic).await?;
        let mut latest: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        for record in reader.read_to_end(READ_PATIENCE).await? {
            let Some(key) = record.key else { continue };
            if record.payload.is_empty() {
                latest.remove(&key);
            } else {
                latest.insert(key, record.payload);
            }
        }
        let now = Utc::now();
        let mut dispatcher = Dispatcher::new(Arc::clone(&self.settings));
        let mut entries = Vec::new();
        let mut alerts = Vec::new();
        for (key, payload) in latest {
            if key.starts_with(b"log/") {
                match serde_json::from_slice::<LogEntry>(&payload) {
                    Ok(entry) => entries.push(entry),
                    Err(err) => {
                        warn!(error = %err, "skipping an unreadable notification log entry")
                    }
                }
            } else if key.starts_with(b"alert/") {
                match Alert::decode(&payload) {
                    Ok(alert) => alerts.push(alert),
                    Err(err) => warn!(error = %err, "skipping an unreadable kept alert"),
                }
            }
        }
        dispatcher.restore(entries);
        alerts.sort_by_key(|alert| alert.ts);
        for alert in alerts {
            dispatcher.restore_alert(alert, now);
        }
        Ok(dispatcher)
    }

    /// Takes one alert record (an unreadable one is dead-lettered).
    async fn take_record(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        key: Option<&[u8]>,
        payload: &[u8],
    ) {
        self.offsets.mark(topic, partition, offset);
        let alert = match Alert::decode(payload) {
            Ok(alert) => alert,
            Err(err) => {
                let record = ConsumedRecord {
                    topic: topic.to_owned(),
                    partition,
                    offset,
                    key: key.map(<[u8]>::to_vec),
                    payload: payload.to_vec(),
                    headers: Vec::new(),
                };
                warn!(partition, offset, error = %err, "dead-lettering an unreadable alert");
                if let Err(err) = self.dead_letters.publish(&record, &err.to_string()).await {
                    warn!(error = %err, "cannot dead-letter an unreadable alert");
                }
                return;
            }
        };
        let Some(dispatcher) = &mut self.dispatcher else {
            // Not this member's to dispatch now: read it again from here.
            self.unread
                .get_or_insert((topic.to_owned(), partition, offset));
            return;
        };
        let key = format!("alert/{}", alert.dedup_key);
        let payload = serde_json::to_vec(&alert).unwrap_or_default();
        if dispatcher.ingest(alert, Utc::now()) {
            self.writes.put_state(&key, &payload);
        }
    }

    /// Writes what the taken records changed, then commits their offsets.
    async fn settle(&mut self, consumer: &TopicConsumer) {
        if let Some((topic, partition, offset)) = self.unread.take() {
            self.offsets.clear();
            if let Err(err) = consumer.rewind(&topic, partition, offset).await {
                warn!(error = %err, "cannot rewind the alerts partition");
            }
            return;
        }
        if !self.writes.flush().await {
            // Not committed: the records are read again (taking one twice is harmless).
            warn!("the responder state was not written; its alerts will be read again");
            self.offsets.clear();
            return;
        }
        if self.dispatcher.is_none() {
            self.offsets.clear();
            return;
        }
        if let Err(err) = consumer.commit(&self.offsets).await {
            warn!(error = %err, "committing alert offsets failed");
        }
        self.offsets.clear();
    }

    /// Flushes the due groups: notifications to their receivers' queues, the rest recorded.
    async fn flush(&mut self, consumer: &TopicConsumer) {
        if self.dispatcher.is_some()
            && !consumer.is_assigned(&self.cluster.topics().alerts, 0).await
        {
            self.dispatcher = None;
            info!("the alerts partition went to another responder: standing by");
        }
        if self.silences.borrow().is_none() {
            debug!("the silences are not read yet: nothing is flushed");
            return;
        }
        let Some(dispatcher) = &mut self.dispatcher else {
            return;
        };
        let flushed = dispatcher.flush(Utc::now());
        for dedup_key in &flushed.forgotten {
            self.writes.delete_state(&format!("alert/{dedup_key}"));
        }
        for entry in &flushed.quiet_entries {
            self.writes.put_log(entry);
        }
        for key in &flushed.forgotten_entries {
            self.writes.delete_state(&format!("log/{key}"));
        }
        for muted in &flushed.muted {
            for receiver in &muted.receivers {
                let kind = self.receivers.get(receiver).map_or("unknown", |r| r.kind);
                self.writes.audit(&muted_record(muted, receiver, kind));
            }
        }
        for notification in flushed.notifications {
            let Some(notification) = without_alerts_about_itself(notification) else {
                continue;
            };
            let Some(receiver) = self.receivers.get(&notification.receiver) else {
                continue;
            };
            if let Err(err) = receiver.queue.try_send(notification) {
                let notification = match err {
                    mpsc::error::TrySendError::Full(n) | mpsc::error::TrySendError::Closed(n) => n,
                };
                let failed = Outcome {
                    notification,
                    result: Err(NotifyError::permanent("the receiver's queue is full")),
                    attempts: 0,
                };
                Box::pin(self.outcome(failed)).await;
            }
        }
        self.writes.flush().await;
    }

    /// Records how a notification went: the log entry kept (delivered or given up on), the
    /// audit record, and for a failure the dead letter and an alert to the other receivers.
    async fn outcome(&mut self, outcome: Outcome) {
        let Outcome {
            notification,
            result,
            attempts,
        } = outcome;
        let kind = self
            .receivers
            .get(&notification.receiver)
            .map_or("unknown", |receiver| receiver.kind);
        let group_closed = self
            .dispatcher
            .as_ref()
            .is_some_and(|dispatcher| !dispatcher.has_group(&notification.group_key));
        if group_closed && notification.entry.firing.is_empty() {
            // The last word on a group that closed: nothing to keep.
            self.writes
                .delete_state(&format!("log/{}", notification.entry.key()));
        } else {
            self.writes.put_log(&notification.entry);
        }
        let record = delivery_record(&notification, kind, &result, attempts);
        self.writes.audit(&record);
        match result {
            Ok(_) => {
                debug!(receiver = %notification.receiver, attempts, "notification delivered");
                if self.failing.remove(&notification.receiver) {
                    self.publish_failure(&notification.receiver, None).await;
                }
            }
            Err(err) => {
                warn!(
                    receiver = %notification.receiver,
                    attempts,
                    error = %err,
                    "notification dead-lettered"
                );
                let dead_letter = ConsumedRecord {
                    topic: self.cluster.topics().notifications.clone(),
                    partition: -1,
                    offset: -1,
                    key: Some(notification.entry.key().into_bytes()),
                    payload: serde_json::to_vec(&serde_json::json!({
                        "notification": record,
                        "alerts": notification.alerts.iter().map(AsRef::as_ref).collect::<Vec<&Alert>>(),
                    }))
                    .unwrap_or_default(),
                    headers: Vec::new(),
                };
                if let Err(err) = self.dead_letters.publish(&dead_letter, &err.message).await {
                    warn!(error = %err, "cannot dead-letter a notification");
                }
                if self.failing.insert(notification.receiver.clone()) {
                    self.publish_failure(&notification.receiver, Some(&err))
                        .await;
                }
            }
        }
    }

    /// Fires (or with `None`, resolves) the `notification_failure` alert about `receiver`,
    /// through `warden.alerts` like any other alert, so it is archived and routed.
    async fn publish_failure(&self, receiver: &str, error: Option<&NotifyError>) {
        let now = Utc::now();
        let mut alert = Alert::firing(
            NOTIFICATION_FAILURE,
            Severity::Critical,
            Subject::Global,
            (now, now),
        );
        alert.dedup_key = failure_dedup_key(receiver);
        alert.unit = "notifications".to_owned();
        alert.observed = 1.0;
        alert.threshold = 1.0;
        match error {
            Some(error) => {
                alert.summary = format!("notifications to receiver {receiver} fail: {error}");
            }
            None => {
                alert.status = AlertStatus::Resolved;
                alert.summary = format!("notifications to receiver {receiver} go through again");
            }
        }
        let alert = alert.with_derived_id();
        if let Err(err) = self.alerts.publish(&alert).await {
            warn!(error = %err, "cannot publish the notification failure alert");
        }
    }
}

fn failure_dedup_key(receiver: &str) -> String {
    format!("{NOTIFICATION_FAILURE}/receiver:{receiver}")
}

/// The notification without the alerts about its own receiver failing (that receiver
/// cannot be told it is unreachable); `None` when nothing else is left.
fn without_alerts_about_itself(mut notification: Notification) -> Option<Notification> {
    let own = failure_dedup_key(&notification.receiver);
    notification.alerts.retain(|alert| alert.dedup_key != own);
    (!notification.alerts.is_empty()).then_some(notification)
}

/// The audit record of a notification's delivery (or dead letter).
pub(crate) fn delivery_record(
    notification: &Notification,
    receiver_kind: &str,
    result: &Result<Delivered, NotifyError>,
    attempts: u32,
) -> NotificationRecord {
    let (outcome, http_status, error) = match result {
        Ok(delivered) => (NotificationOutcome::Delivered, delivered.status, None),
        Err(err) => (
            NotificationOutcome::DeadLettered,
            err.status,
            Some(err.message.clone()),
        ),
    };
    NotificationRecord {
        notification_id: EventId::new(),
        schema_version: NOTIFICATION_SCHEMA_VERSION,
        ts: micros(Utc::now()),
        receiver: notification.receiver.clone(),
        receiver_kind: receiver_kind.to_owned(),
        group_key: notification.group_key.clone(),
        reason: Some(notification.reason.as_str().to_owned()),
        status: status_text(notification.status()).to_owned(),
        outcome,
        attempts,
        http_status,
        error,
        alert_ids: notification
            .alerts
            .iter()
            .map(|alert| alert.alert_id.0.to_string())
            .collect(),
        dedup_keys: notification
            .alerts
            .iter()
            .map(|alert| alert.dedup_key.clone())
            .collect(),
        content_sha256: Some(notification.content_sha256.clone()),
        held_by: None,
    }
}

fn muted_record(muted: &Muted, receiver: &str, receiver_kind: &str) -> NotificationRecord {
    NotificationRecord {
        notification_id: EventId::new(),
        schema_version: NOTIFICATION_SCHEMA_VERSION,
        ts: micros(Utc::now()),
        receiver: receiver.to_owned(),
        receiver_kind: receiver_kind.to_owned(),
        group_key: muted.group_key.clone(),
        reason: None,
        status: status_text(muted.alert.status).to_owned(),
        outcome: if muted.outcome == "silenced" {
            NotificationOutcome::Silenced
        } else {
            NotificationOutcome::Inhibited
        },
        attempts: 0,
        http_status: None,
        error: None,
        alert_ids: vec![muted.alert.alert_id.0.to_string()],
        dedup_keys: vec![muted.alert.dedup_key.clone()],
        content_sha256: None,
        held_by: Some(muted.by.clone()),
    }
}

fn micros(at: DateTime<Utc>) -> DateTime<Utc> {
    use chrono::SubsecRound;
    at.trunc_subsecs(6)
}

fn status_text(status: AlertStatus) -> &'static str {
    match status {
        AlertStatus::Firing => "firing",
        AlertStatus::Resolved => "resolved",
    }
}

/// One receiver's deliveries, in order: its rate limit kept, failures retried per the
/// policy, each outcome reported. Stops with the responder (a notification cut short is
/// not reported: its log entry is not kept, so a restarted responder sends it again).
async fn deliver_each(
    notifier: Arc<dyn Notifier>,
    mut pending: mpsc::Receiver<Notification>,
    outcomes: mpsc::UnboundedSender<Outcome>,
    retry: RetryPolicy,
    shutdown: CancellationToken,
) {
    let mut last_send: Option<tokio::time::Instant> = None;
    while let Some(notification) = tokio::select! {
        next = pending.recv() => next,
        () = shutdown.cancelled() => None,
    } {
        let mut attempt = 0;
        let result = loop {
            attempt += 1;
            if let Some(last) = last_send {
                tokio::time::sleep_until(last + notifier.min_interval()).await;
            }
            last_send = Some(tokio::time::Instant::now());
            let result = tokio::select! {
                result = notifier.notify(&notification) => result,
                () = shutdown.cancelled() => return,
            };
            match result {
                Ok(delivered) => break Ok(delivered),
                Err(err)
                    if err.class == notify::FailureClass::Retryable && retry.may_retry(attempt) =>
                {
                    let pause = retry.pause(attempt, err.retry_after);
                    debug!(attempt, ?pause, error = %err, "delivery failed; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        () = shutdown.cancelled() => return,
                    }
                }
                Err(err) => break Err(err),
            }
        };
        let report = Outcome {
            notification,
            result,
            attempts: attempt,
        };
        if outcomes.send(report).is_err() {
            return;
        }
    }
}

/// Follows `warden.silences` for as long as the responder runs: after the topic has been
/// read to its end, and after each change, the silences that have not ended.
async fn follow_silences(
    cluster: KafkaCluster,
    current: watch::Sender<Option<Vec<Silence>>>,
    shutdown: CancellationToken,
) {
    let topic = cluster.topics().silences.clone();
    let mut known: BTreeMap<String, Silence> = BTreeMap::new();
    let publish = |known: &mut BTreeMap<String, Silence>| {
        let now = Utc::now();
        known.retain(|_, silence| silence.record.ends_at > now);
        current.send_replace(Some(known.values().cloned().collect()));
    };
    while !shutdown.is_cancelled() {
        let reader = match TopicReader::from_beginning(&cluster, &topic).await {
            Ok(reader) => reader,
            Err(err) => {
                debug!(error = %err, "the silences topic is not readable yet");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    () = shutdown.cancelled() => return,
                }
            }
        };
        let caught_up = tokio::select! {
            records = reader.read_to_end(READ_PATIENCE) => records,
            () = shutdown.cancelled() => return,
        };
        match caught_up {
            Ok(records) => {
                known.clear();
                for record in &records {
                    apply_silence_record(&mut known, record);
                }
                publish(&mut known);
            }
            Err(err) => {
                warn!(error = %err, "reading the silences failed; reconnecting");
                continue;
            }
        }
        loop {
            let record = tokio::select! {
                record = reader.recv() => record,
                () = shutdown.cancelled() => return,
            };
            let Ok(record) = record else { break };
            apply_silence_record(&mut known, &record);
            publish(&mut known);
        }
    }
}

fn apply_silence_record(known: &mut BTreeMap<String, Silence>, record: &ConsumedRecord) {
    if record.payload.is_empty() {
        if let Some(key) = &record.key {
            known.remove(String::from_utf8_lossy(key).as_ref());
        }
        return;
    }
    match serde_json::from_slice::<SilenceRecord>(&record.payload)
        .map_err(|err| err.to_string())
        .and_then(Silence::new)
    {
        Ok(silence) => {
            known.insert(silence.record.id.clone(), silence);
        }
        Err(err) => warn!(error = %err, "skipping an unreadable silence"),
    }
}

/// The responder's writes to the broker: state records and audit records, queued, then
/// awaited together before offsets are committed.
struct Writes {
    producer: DeliveringProducer,
    state_topic: String,
    audit_topic: String,
    pending: Vec<Delivery>,
}

impl Writes {
    fn new(cluster: &KafkaCluster) -> Result<Self, KafkaSetupError> {
        Ok(Self {
            producer: DeliveringProducer::from_config(&cluster.producer_config())?,
            state_topic: cluster.topics().respond_state.clone(),
            audit_topic: cluster.topics().notifications.clone(),
            pending: Vec::new(),
        })
    }

    fn queue(&mut self, topic_is_state: bool, key: &[u8], payload: &[u8]) {
        let topic = if topic_is_state {
            &self.state_topic
        } else {
            &self.audit_topic
        };
        match self.producer.queue(Outgoing::new(topic, key, payload)) {
            Ok(delivery) => self.pending.push(delivery),
            Err(err) => warn!(error = %err, "cannot queue a responder record"),
        }
    }

    fn put_state(&mut self, key: &str, payload: &[u8]) {
        self.queue(true, key.as_bytes(), payload);
    }

    /// A tombstone: compaction drops the key.
    fn delete_state(&mut self, key: &str) {
        self.queue(true, key.as_bytes(), &[]);
    }

    fn put_log(&mut self, entry: &LogEntry) {
        let payload = serde_json::to_vec(entry).unwrap_or_default();
        self.put_state(&format!("log/{}", entry.key()), &payload);
    }

    fn audit(&mut self, record: &NotificationRecord) {
        let payload = serde_json::to_vec(record).unwrap_or_default();
        let key = record.group_key.clone();
        self.queue(false, key.as_bytes(), &payload);
    }

    /// Waits until the broker has every queued record; `false` if one was refused.
    async fn flush(&mut self) -> bool {
        let mut all = true;
        for delivery in self.pending.drain(..) {
            if let Err(err) = delivery.await {
                warn!(error = %err, "a responder record was not written");
                all = false;
            }
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_receiver_is_not_told_of_its_own_failure() {
        let now = Utc::now();
        let mut failure = Alert::firing(
            NOTIFICATION_FAILURE,
            Severity::Critical,
            Subject::Global,
            (now, now),
        );
        failure.dedup_key = failure_dedup_key("slack");
        let notification = |alerts: Vec<Alert>| Notification {
            receiver: "slack".into(),
            group_key: "g".into(),
            group_labels: Vec::new(),
            reason: super::super::dispatch::NotifyReason::Firing,
            alerts: alerts.into_iter().map(Arc::new).collect(),
            entry: LogEntry {
                receiver: "slack".into(),
                group_key: "g".into(),
                firing: Default::default(),
                resolved: Default::default(),
                sent_at: now,
            },
            told_before: Default::default(),
            previous_sent_at: None,
            content_sha256: String::new(),
        };
        assert!(without_alerts_about_itself(notification(vec![failure.clone()])).is_none());
        let other = Alert::firing("cost_burn", Severity::Warning, Subject::Global, (now, now));
        let kept = without_alerts_about_itself(notification(vec![failure, other])).expect("kept");
        assert_eq!(kept.alerts.len(), 1);
    }
}
