//! The dispatcher: Alertmanager's aggregation groups, inhibition, silences and notification
//! log, as plain state driven by the caller's clock (no IO, no timers of its own), so it is
//! tested and measured without a broker.
//!
//! - [`Dispatcher::ingest`] takes an alert publication: the latest publication of each
//!   condition (dedup key) is kept, and joins one group per route it matches.
//! - [`Dispatcher::flush`] looks at the groups whose timer is due: a new group after
//!   `group_wait`, then every `group_interval`. For each receiver of the group it compares
//!   what is firing and resolved now (silenced and inhibited alerts left out) with the
//!   notification log's entry for that receiver and group — what it was last told — and
//!   issues a [`Notification`] when something new fires, something it was told of resolved
//!   (with `send_resolved`), or `repeat_interval` passed. Resolved alerts then leave their
//!   group; an empty group closes.
//! - The log entry is updated as the notification is issued (a slow delivery must not cause
//!   a second one); the caller persists it once the receiver has it, and gives the
//!   persisted log back with [`Dispatcher::restore`] after a restart, so an unchanged group
//!   is not notified again.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use warden_ingest::alert::{Alert, AlertStatus};

use super::config::{InhibitRule, RespondSettings};
use super::labels::LabelName;
use super::route::Timing;
use super::silence::Silence;

/// What one receiver was last told about one group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    pub receiver: String,
    pub group_key: String,
    /// The firing alerts it was told of, by [`fingerprint`].
    pub firing: BTreeSet<String>,
    /// The resolved ones.
    pub resolved: BTreeSet<String>,
    pub sent_at: DateTime<Utc>,
}

impl LogEntry {
    /// The key of the entry in the durable log.
    pub fn key(&self) -> String {
        log_key(&self.receiver, &self.group_key)
    }
}

fn log_key(receiver: &str, group_key: &str) -> String {
    format!("{receiver}/{group_key}")
}

/// An alert's identity in the log: its condition and severity (an escalation is news).
pub fn fingerprint(alert: &Alert) -> String {
    format!("{}|{}", alert.dedup_key, alert.severity.as_str())
}

/// Why a notification goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyReason {
    /// Alerts fired that the receiver was not told of.
    Firing,
    /// Alerts it was told of resolved.
    Resolved,
    /// Nothing changed for `repeat_interval`.
    Repeat,
}

impl NotifyReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Firing => "firing",
            Self::Resolved => "resolved",
            Self::Repeat => "repeat",
        }
    }
}

/// One notification for one receiver: a group's alerts at one flush.
#[derive(Debug, Clone)]
pub struct Notification {
    pub receiver: String,
    pub group_key: String,
    pub group_labels: Vec<(LabelName, String)>,
    pub reason: NotifyReason,
    /// Firing first, then resolved (only with `send_resolved`), each by dedup key.
    pub alerts: Vec<Arc<Alert>>,
    /// What the receiver will have been told: persist it once delivered.
    pub entry: LogEntry,
    /// The fingerprints of the alerts it had been told were firing before this one (an
    /// alert among them is an update, not news: OCSF's activity Update, not Create).
    pub told_before: BTreeSet<String>,
    /// When the receiver was last told of the group (its log entry before this one).
    pub previous_sent_at: Option<DateTime<Utc>>,
    /// A hash of the content (the alerts' fingerprints and statuses): equal for a repeat of
    /// the same content, so receivers that take an idempotency key can drop a copy.
    pub content_sha256: String,
}

impl Notification {
    pub fn firing(&self) -> impl Iterator<Item = &Alert> {
        self.alerts
            .iter()
            .map(Arc::as_ref)
            .filter(|alert| alert.status == AlertStatus::Firing)
    }

    pub fn resolved(&self) -> impl Iterator<Item = &Alert> {
        self.alerts
            .iter()
            .map(Arc::as_ref)
            .filter(|alert| alert.status == AlertStatus::Resolved)
    }

    /// `firing` when anything in it fires, else `resolved`.
    pub fn status(&self) -> AlertStatus {
        if self.firing().next().is_some() {
            AlertStatus::Firing
        } else {
            AlertStatus::Resolved
        }
    }

    /// A key a receiver may use to drop a repeated delivery of this very notification: the
    /// same for the copy a restarted responder sends again (same receiver, group, content,
    /// and the same last notification before it), different for a deliberate repeat (its
    /// last notification is the one it repeats).
    pub fn idempotency_key(&self) -> String {
        let mut hasher = Sha256::new();
        for part in [&self.receiver, &self.group_key, &self.content_sha256] {
            hasher.update(part.as_bytes());
            hasher.update([0]);
        }
        let previous = self.previous_sent_at.map_or(0, |at| at.timestamp_micros());
        hasher.update(previous.to_be_bytes());
        hex::encode(&hasher.finalize()[..16])
    }
}

/// An alert that was not delivered, and why (recorded once per publication).
#[derive(Debug, Clone)]
pub struct Muted {
    pub alert: Arc<Alert>,
    pub group_key: String,
    pub receivers: Vec<String>,
    /// `silenced` or `inhibited`.
    pub outcome: &'static str,
    /// The silence's id, or the inhibiting alert's dedup key.
    pub by: String,
}

/// What a flush decided.
#[derive(Debug, Default)]
pub struct Flushed {
    pub notifications: Vec<Notification>,
    pub muted: Vec<Muted>,
    /// Log entries updated without a notification (resolved alerts for a receiver without
    /// `send_resolved`): persist them too.
    pub quiet_entries: Vec<LogEntry>,
    /// Conditions gone for good (resolved and flushed from every group): forget them in the
    /// durable state.
    pub forgotten: Vec<String>,
    /// Log entries of groups that closed with nothing firing: forget them too (a later alert
    /// of the group is news either way), so the log does not grow with every group ever.
    pub forgotten_entries: Vec<String>,
}

#[derive(Debug)]
struct Group {
    receivers: Vec<String>,
    group_labels: Vec<(LabelName, String)>,
    timing: Timing,
    /// Dedup keys of its alerts.
    members: BTreeSet<String>,
    next_flush: DateTime<Utc>,
}

/// The dispatcher's state.
#[derive(Debug)]
pub struct Dispatcher {
    settings: Arc<RespondSettings>,
    /// `send_resolved` of each receiver.
    send_resolved: HashMap<String, bool>,
    /// The latest publication of each condition.
    alerts: HashMap<String, Arc<Alert>>,
    /// How many groups hold each condition.
    memberships: HashMap<String, usize>,
    groups: HashMap<String, Group>,
    /// Groups by when they are next due.
    schedule: BTreeSet<(DateTime<Utc>, String)>,
    log: HashMap<String, LogEntry>,
    silences: Vec<Silence>,
    /// Publications already recorded as muted.
    recorded_muted: HashSet<(uuid::Uuid, String)>,
}

fn delta(duration: Duration) -> TimeDelta {
    TimeDelta::from_std(duration).unwrap_or(TimeDelta::MAX)
}

impl Dispatcher {
    pub fn new(settings: Arc<RespondSettings>) -> Self {
        let send_resolved = settings
            .receivers
            .iter()
            .map(|receiver| (receiver.name.clone(), receiver.send_resolved))
            .collect();
        Self {
            settings,
            send_resolved,
            alerts: HashMap::new(),
            memberships: HashMap::new(),
            groups: HashMap::new(),
            schedule: BTreeSet::new(),
            log: HashMap::new(),
            silences: Vec::new(),
            recorded_muted: HashSet::new(),
        }
    }

    /// Puts back the notification log kept durably (after a restart).
    pub fn restore(&mut self, entries: impl IntoIterator<Item = LogEntry>) {
        for entry in entries {
            self.log.insert(entry.key(), entry);
        }
    }

    /// Replaces the silences.
    pub fn set_silences(&mut self, silences: Vec<Silence>) {
        self.silences = silences;
    }

    /// Takes one publication. Returns whether it changed anything (a copy of the current
    /// publication, or one older than it, does not).
    pub fn ingest(&mut self, alert: Alert, now: DateTime<Utc>) -> bool {
        self.take(alert, now, false)
    }

    /// Puts back a publication the durable state kept (after a restart): a resolve is kept
    /// too, as its groups may still owe receivers that resolve.
    pub fn restore_alert(&mut self, alert: Alert, now: DateTime<Utc>) {
        self.take(alert, now, true);
    }

    fn take(&mut self, alert: Alert, now: DateTime<Utc>, restoring: bool) -> bool {
        if let Some(current) = self.alerts.get(&alert.dedup_key)
            && (current.alert_id == alert.alert_id || current.ts > alert.ts)
        {
            return false;
        }
        let alert = Arc::new(alert);
        let dedup_key = alert.dedup_key.clone();
        let is_new = self
            .alerts
            .insert(dedup_key.clone(), Arc::clone(&alert))
            .is_none();
        if alert.status == AlertStatus::Resolved && !restoring {
            if is_new {
                // A resolve of a condition no group holds: no receiver was told it fired.
                self.alerts.remove(&dedup_key);
                return false;
            }
            // Its groups see the resolve at their next flush.
            return true;
        }
        // A firing publication joins the groups of every route it matches now: one whose
        // labels changed (an escalation to critical) also reaches the routes of its new
        // labels, and stays in the groups it was in (their receivers hear of the change).
        let settings = Arc::clone(&self.settings);
        let routes = settings.routes.matching(&alert);
        for route in routes {
            if route.receivers.is_empty() {
                continue;
            }
            let group_key = route.group_key(&alert);
            let group = self.groups.entry(group_key.clone()).or_insert_with(|| {
                let next_flush = now + delta(route.timing.group_wait);
                self.schedule.insert((next_flush, group_key.clone()));
                Group {
                    receivers: route.receivers.clone(),
                    group_labels: route.group_labels(&alert),
                    timing: route.timing,
                    members: BTreeSet::new(),
                    next_flush,
                }
            });
            if group.members.insert(dedup_key.clone()) {
                *self.memberships.entry(dedup_key.clone()).or_default() += 1;
            }
        }
        if !self.memberships.contains_key(&dedup_key) {
            // No route with receivers takes it.
            self.alerts.remove(&dedup_key);
            return false;
        }
        true
    }

    /// Whether the group is open.
    pub fn has_group(&self, group_key: &str) -> bool {
        self.groups.contains_key(group_key)
    }

    /// When the next group is due, if any.
    pub fn next_due(&self) -> Option<DateTime<Utc>> {
        self.schedule.first().map(|(at, _)| *at)
    }

    /// The number of open groups and of conditions they hold.
    pub fn len(&self) -> (usize, usize) {
        (self.groups.len(), self.alerts.len())
    }

    /// The current publication of every condition held (for the durable state).
    pub fn alerts(&self) -> impl Iterator<Item = &Alert> {
        self.alerts.values().map(Arc::as_ref)
    }

    /// Flushes every group due at `now`.
    pub fn flush(&mut self, now: DateTime<Utc>) -> Flushed {
        let mut flushed = Flushed::default();
        let due: Vec<String> = {
            let mut due = Vec::new();
            while let Some((at, _)) = self.schedule.first() {
                if *at > now {
                    break;
                }
                if let Some((_, key)) = self.schedule.pop_first() {
                    due.push(key);
                }
            }
            due
        };
        if due.is_empty() {
            return flushed;
        }
        let settings = Arc::clone(&self.settings);
        let inhibitors = Inhibitors::new(&settings.inhibit_rules, self.alerts.values());
        for group_key in due {
            self.flush_group(&group_key, now, &inhibitors, &mut flushed);
        }
        flushed
    }

    fn flush_group(
        &mut self,
        group_key: &str,
        now: DateTime<Utc>,
        inhibitors: &Inhibitors,
        flushed: &mut Flushed,
    ) {
        let Some(group) = self.groups.get_mut(group_key) else {
            return;
        };
        let mut firing = Vec::new();
        let mut resolved = Vec::new();
        for dedup_key in &group.members {
            let Some(alert) = self.alerts.get(dedup_key) else {
                continue;
            };
            if alert.status == AlertStatus::Resolved {
                resolved.push(Arc::clone(alert));
                continue;
            }
            let muted = match self.silences.iter().find(|s| s.mutes(alert, now)) {
                Some(silence) => Some(("silenced", silence.record.id.clone())),
                None => inhibitors
                    .inhibitor_of(alert)
                    .map(|by| ("inhibited", by.to_owned())),
            };
            match muted {
                Some((outcome, by)) => {
                    if self
                        .recorded_muted
                        .insert((alert.alert_id.0, group_key.to_owned()))
                    {
                        flushed.muted.push(Muted {
                            alert: Arc::clone(alert),
                            group_key: group_key.to_owned(),
                            receivers: group.receivers.clone(),
                            outcome,
                            by,
                        });
                    }
                }
                None => firing.push(Arc::clone(alert)),
            }
        }
        let firing_set: BTreeSet<String> = firing.iter().map(|a| fingerprint(a)).collect();
        let resolved_set: BTreeSet<String> = resolved.iter().map(|a| fingerprint(a)).collect();
        let content_sha256 = content_hash(&firing, &resolved);
        for receiver in &group.receivers {
            let key = log_key(receiver, group_key);
            let send_resolved = self.send_resolved.get(receiver).copied().unwrap_or(true);
            let previous = self.log.get(&key);
            let told_before = previous
                .map(|entry| entry.firing.clone())
                .unwrap_or_default();
            let previous_sent_at = previous.map(|entry| entry.sent_at);
            let Some(reason) = needs_update(
                previous,
                &firing_set,
                &resolved_set,
                send_resolved,
                group.timing.repeat_interval,
                now,
            ) else {
                continue;
            };
            let entry = LogEntry {
                receiver: receiver.clone(),
                group_key: group_key.to_owned(),
                firing: firing_set.clone(),
                resolved: resolved_set.clone(),
                sent_at: now,
            };
            self.log.insert(key, entry.clone());
            let mut alerts = firing.clone();
            if send_resolved {
                alerts.extend(resolved.iter().cloned());
            }
            if alerts.is_empty() {
                // Everything it was told of resolved, and it does not hear resolves: the
                // log forgets those alerts, nothing is sent.
                flushed.quiet_entries.push(entry);
                continue;
            }
            flushed.notifications.push(Notification {
                receiver: receiver.clone(),
                group_key: group_key.to_owned(),
                group_labels: group.group_labels.clone(),
                reason,
                alerts,
                entry,
                told_before,
                previous_sent_at,
                content_sha256: content_sha256.clone(),
            });
        }
        // Resolved alerts have been told: they leave the group.
        for alert in &resolved {
            group.members.remove(&alert.dedup_key);
            if let Some(count) = self.memberships.get_mut(&alert.dedup_key) {
                *count -= 1;
                if *count == 0 {
                    self.memberships.remove(&alert.dedup_key);
                    self.alerts.remove(&alert.dedup_key);
                    flushed.forgotten.push(alert.dedup_key.clone());
                }
            }
        }
        if group.members.is_empty() {
            for receiver in &group.receivers {
                let key = log_key(receiver, group_key);
                if self
                    .log
                    .get(&key)
                    .is_some_and(|entry| entry.firing.is_empty())
                {
                    self.log.remove(&key);
                    flushed.forgotten_entries.push(key);
                }
            }
            self.groups.remove(group_key);
            return;
        }
        group.next_flush = now + delta(group.timing.group_interval);
        self.schedule
            .insert((group.next_flush, group_key.to_owned()));
    }
}

/// Alertmanager's `needsUpdate`: whether `receiver` must hear of the group now, and why.
fn needs_update(
    entry: Option<&LogEntry>,
    firing: &BTreeSet<String>,
    resolved: &BTreeSet<String>,
    send_resolved: bool,
    repeat_interval: Duration,
    now: DateTime<Utc>,
) -> Option<NotifyReason> {
    let Some(entry) = entry else {
        // Never told of this group: only what fires is news.
        return (!firing.is_empty()).then_some(NotifyReason::Firing);
    };
    if !firing.is_subset(&entry.firing) {
        return Some(NotifyReason::Firing);
    }
    if firing.is_empty() {
        // All it was told of resolved (told even without send_resolved, so the log forgets
        // them); alerts that fired and resolved unseen in between are no news.
        return (!entry.firing.is_empty()).then_some(NotifyReason::Resolved);
    }
    if send_resolved && !resolved.is_subset(&entry.resolved) {
        return Some(NotifyReason::Resolved);
    }
    (now - entry.sent_at >= delta(repeat_interval)).then_some(NotifyReason::Repeat)
}

fn content_hash(firing: &[Arc<Alert>], resolved: &[Arc<Alert>]) -> String {
    let mut hasher = Sha256::new();
    for (status, alerts) in [("firing", firing), ("resolved", resolved)] {
        for alert in alerts {
            hasher.update(status.as_bytes());
            hasher.update(fingerprint(alert).as_bytes());
            hasher.update([0]);
        }
    }
    hex::encode(hasher.finalize())
}

/// The firing alerts that mute others, indexed per rule by their `equal` label values.
struct Inhibitors<'r> {
    rules: Vec<(&'r InhibitRule, HashMap<Vec<String>, String>)>,
}

impl<'r> Inhibitors<'r> {
    fn new<'a>(rules: &'r [InhibitRule], alerts: impl Iterator<Item = &'a Arc<Alert>>) -> Self {
        let mut indexed: Vec<(&InhibitRule, HashMap<Vec<String>, String>)> =
            rules.iter().map(|rule| (rule, HashMap::new())).collect();
        if indexed.is_empty() {
            return Self { rules: indexed };
        }
        for alert in alerts {
            if alert.status != AlertStatus::Firing {
                continue;
            }
            for (rule, sources) in &mut indexed {
                if rule.source.matches(alert) {
                    sources
                        .entry(equal_values(rule, alert))
                        .or_insert_with(|| alert.dedup_key.clone());
                }
            }
        }
        Self { rules: indexed }
    }

    /// The dedup key of an alert that inhibits `alert`, if one does. An alert matching a
    /// rule's both sides cannot be muted by that rule (it would mute itself).
    fn inhibitor_of(&self, alert: &Alert) -> Option<&str> {
        self.rules.iter().find_map(|(rule, sources)| {
            if sources.is_empty() || !rule.target.matches(alert) || rule.source.matches(alert) {
                return None;
            }
            sources.get(&equal_values(rule, alert)).map(String::as_str)
        })
    }
}

fn equal_values(rule: &InhibitRule, alert: &Alert) -> Vec<String> {
    rule.equal
        .iter()
        .map(|label| label.value(alert).to_text())
        .collect()
}

/// A view of the log, for tests and diagnostics.
impl Dispatcher {
    pub fn log_entries(&self) -> BTreeMap<String, LogEntry> {
        self.log
            .iter()
            .map(|(key, entry)| (key.clone(), entry.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use warden_ingest::alert::{Severity, Subject};

    use super::super::config::RespondConfig;
    use super::super::labels::tests::alert;
    use super::super::silence::SilenceRecord;
    use super::*;

    fn settings(extra: &str) -> Arc<RespondSettings> {
        let text = format!(
            r#"
            [respond]
            group_wait_s = 30
            group_interval_s = 300
            repeat_interval_s = 3600
            default_receivers = ["slack", "hook"]
            [[respond.receivers]]
            name = "slack"
            kind = "webhook"
            url = "http://127.0.0.1:1/a"
            send_resolved = false
            [[respond.receivers]]
            name = "hook"
            kind = "webhook"
            url = "http://127.0.0.1:1/b"
            {extra}
            "#
        );
        Arc::new(
            RespondConfig::from_toml(&text)
                .expect("parses")
                .validate(&|_| None)
                .expect("valid"),
        )
    }

    fn start() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-01T10:00:00Z")
            .expect("instant")
            .with_timezone(&Utc)
    }

    fn at(seconds: i64) -> DateTime<Utc> {
        start() + TimeDelta::seconds(seconds)
    }

    fn published(mut alert: Alert, seconds: i64) -> Alert {
        alert.ts = at(seconds);
        alert.with_derived_id()
    }

    fn resolved(alert: &Alert, seconds: i64) -> Alert {
        let mut resolved = alert.clone();
        resolved.status = AlertStatus::Resolved;
        published(resolved, seconds)
    }

    fn sent_to<'n>(flushed: &'n Flushed, receiver: &str) -> Vec<&'n Notification> {
        flushed
            .notifications
            .iter()
            .filter(|n| n.receiver == receiver)
            .collect()
    }

    #[test]
    fn a_group_waits_then_notifies_once_with_every_alert_then_repeats_and_resolves() {
        let mut dispatcher = Dispatcher::new(settings(""));
        let first = published(alert("traffic_spike", Severity::Warning, "client:a"), 0);
        let mut same_group = alert("traffic_spike", Severity::Warning, "client:a");
        same_group.dedup_key.push_str("@prod");
        let same_group = published(same_group, 1);
        assert!(dispatcher.ingest(first.clone(), at(0)));
        assert!(dispatcher.ingest(same_group, at(10)));
        assert!(
            !dispatcher.ingest(first.clone(), at(11)),
            "a copy changes nothing"
        );
        assert!(
            dispatcher.flush(at(29)).notifications.is_empty(),
            "group_wait"
        );
        let flushed = dispatcher.flush(at(30));
        assert_eq!(flushed.notifications.len(), 2, "one per receiver");
        assert_eq!(
            sent_to(&flushed, "slack")[0].alerts.len(),
            2,
            "the whole group"
        );
        assert_eq!(sent_to(&flushed, "slack")[0].reason, NotifyReason::Firing);
        assert_eq!(dispatcher.next_due(), Some(at(330)));
        assert!(
            dispatcher.flush(at(330)).notifications.is_empty(),
            "nothing changed"
        );
        let repeat = dispatcher.flush(at(3630));
        assert_eq!(repeat.notifications.len(), 2);
        assert!(
            repeat
                .notifications
                .iter()
                .all(|n| n.reason == NotifyReason::Repeat)
        );

        dispatcher.ingest(resolved(&first, 3700), at(3700));
        let flushed = dispatcher.flush(at(3930));
        let hook = sent_to(&flushed, "hook");
        assert_eq!(hook.len(), 1, "send_resolved receivers hear of it");
        assert_eq!(hook[0].reason, NotifyReason::Resolved);
        assert_eq!(hook[0].resolved().count(), 1);
        assert_eq!(hook[0].firing().count(), 1);
        assert!(
            sent_to(&flushed, "slack").is_empty(),
            "slack does not hear resolves"
        );
        assert_eq!(flushed.forgotten, vec![first.dedup_key.clone()]);
    }

    #[test]
    fn a_copy_sent_again_after_a_restart_has_the_same_idempotency_key_and_a_repeat_does_not() {
        let settings = settings("");
        let spike = published(alert("traffic_spike", Severity::Warning, "client:a"), 0);
        let mut before = Dispatcher::new(Arc::clone(&settings));
        before.ingest(spike.clone(), at(0));
        let first = before.flush(at(30)).notifications;
        // The responder dies before the log entry is kept: a new one sends the group again.
        let mut after = Dispatcher::new(Arc::clone(&settings));
        after.ingest(spike.clone(), at(40));
        let again = after.flush(at(70)).notifications;
        assert_eq!(first[0].idempotency_key(), again[0].idempotency_key());
        let repeat = before.flush(at(3630)).notifications;
        assert_eq!(repeat[0].reason, NotifyReason::Repeat);
        assert_ne!(repeat[0].idempotency_key(), first[0].idempotency_key());
    }

    #[test]
    fn an_escalation_reaches_the_routes_of_its_new_severity() {
        let mut dispatcher = Dispatcher::new(settings(
            r#"
            [[respond.routes]]
            match = { severity = "critical" }
            receivers = ["slack"]
            continue = true
            [[respond.routes]]
            receivers = ["hook"]
            "#,
        ));
        let warning = published(alert("cost_burn", Severity::Warning, "client:a"), 0);
        dispatcher.ingest(warning.clone(), at(0));
        let first = dispatcher.flush(at(30));
        assert!(
            sent_to(&first, "slack").is_empty(),
            "a warning is not critical"
        );
        assert_eq!(sent_to(&first, "hook").len(), 1);
        let mut critical = warning;
        critical.severity = Severity::Critical;
        dispatcher.ingest(published(critical, 60), at(60));
        let escalated = dispatcher.flush(at(90));
        assert_eq!(
            sent_to(&escalated, "slack").len(),
            1,
            "the critical route hears of it"
        );
        let later = dispatcher.flush(at(330));
        assert_eq!(
            sent_to(&later, "hook").len(),
            1,
            "its first group hears of the change"
        );
    }

    #[test]
    fn an_alert_resolved_within_group_wait_is_never_sent_and_its_group_closes() {
        let mut dispatcher = Dispatcher::new(settings(""));
        let spike = published(alert("traffic_spike", Severity::Warning, "client:a"), 0);
        dispatcher.ingest(spike.clone(), at(0));
        dispatcher.ingest(resolved(&spike, 5), at(5));
        let flushed = dispatcher.flush(at(30));
        assert!(
            flushed.notifications.is_empty(),
            "{:?}",
            flushed.notifications
        );
        assert_eq!(dispatcher.len(), (0, 0));
    }

    #[test]
    fn the_log_from_before_a_restart_prevents_a_second_notification() {
        let settings = settings("");
        let spike = published(alert("traffic_spike", Severity::Warning, "client:a"), 0);
        let mut before = Dispatcher::new(Arc::clone(&settings));
        before.ingest(spike.clone(), at(0));
        let delivered: Vec<LogEntry> = before
            .flush(at(30))
            .notifications
            .into_iter()
            .map(|n| n.entry)
            .collect();
        let mut after = Dispatcher::new(settings);
        after.restore(delivered);
        after.ingest(spike.clone(), at(100));
        assert!(
            after.flush(at(130)).notifications.is_empty(),
            "told already"
        );
        let mut escalated = spike.clone();
        escalated.severity = Severity::Critical;
        after.ingest(published(escalated, 140), at(140));
        let flushed = after.flush(at(430));
        assert_eq!(flushed.notifications.len(), 2, "an escalation is news");
    }

    #[test]
    fn a_firing_critical_inhibits_warnings_with_equal_labels() {
        let mut dispatcher = Dispatcher::new(settings(
            r#"
            [[respond.inhibit_rules]]
            source_match = { severity = "critical" }
            target_match = { severity = "warning" }
            equal = ["detector", "subject"]
            "#,
        ));
        let mut critical = alert("cost_burn", Severity::Critical, "client:a");
        critical.dedup_key.push_str("/actual");
        let mut projected = alert("cost_burn", Severity::Warning, "client:a");
        projected.dedup_key.push_str("/projected");
        let other = alert("cost_burn", Severity::Warning, "client:b");
        dispatcher.ingest(published(critical, 0), at(0));
        dispatcher.ingest(published(projected.clone(), 0), at(0));
        dispatcher.ingest(published(other, 0), at(0));
        let flushed = dispatcher.flush(at(30));
        let told: BTreeSet<String> = flushed
            .notifications
            .iter()
            .flat_map(|n| n.alerts.iter().map(|a| a.dedup_key.clone()))
            .collect();
        assert!(!told.contains(&projected.dedup_key), "{told:?}");
        assert_eq!(told.len(), 2);
        assert_eq!(flushed.muted.len(), 1);
        assert_eq!(flushed.muted[0].outcome, "inhibited");
    }

    #[test]
    fn silenced_alerts_are_recorded_once_and_not_delivered() {
        let mut dispatcher = Dispatcher::new(settings(""));
        let silence = Silence::new(SilenceRecord {
            id: "s-1".into(),
            matchers: vec![
                "detector=traffic_spike".into(),
                "subject=client:batch".into(),
            ],
            starts_at: at(0),
            ends_at: at(7200),
            created_by: "alice".into(),
            comment: "backfill".into(),
        })
        .expect("valid");
        dispatcher.set_silences(vec![silence]);
        let batch = published(alert("traffic_spike", Severity::Warning, "client:batch"), 0);
        dispatcher.ingest(batch.clone(), at(0));
        let flushed = dispatcher.flush(at(30));
        assert!(flushed.notifications.is_empty());
        assert_eq!(flushed.muted.len(), 1);
        assert_eq!(
            (flushed.muted[0].outcome, flushed.muted[0].by.as_str()),
            ("silenced", "s-1")
        );
        assert!(dispatcher.flush(at(330)).muted.is_empty(), "recorded once");
        // Once the silence ends, the alert is news.
        let flushed = dispatcher.flush(at(7230));
        assert_eq!(flushed.notifications.len(), 2);
        assert_eq!(
            flushed.notifications[0].alerts[0].subject,
            Subject::Client("batch".into())
        );
    }
}
