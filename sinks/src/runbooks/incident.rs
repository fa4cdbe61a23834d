//! An incident's state, folded from its timeline entries (`warden.incidents`), and its plan.
//!
//! The fold is the only truth: the engine that acts, a standby that takes over, and
//! `warden incident show` all read the same entries and reach the same state. What is left
//! to do follows from it — a step with no outcome yet, or one `started` and never finished
//! (the engine stopped mid-step), is done again; one with a final outcome never is. That is
//! what makes a repeat, a restart or a second engine harmless.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use warden_ingest::EventId;
use warden_ingest::alert::{Alert, AlertStatus};
use warden_ingest::incident::{EntryKind, IncidentEntry, StepOutcome};

use super::config::{Mode, RunbookKind, Step};

/// How long after its last alert resolved an incident still takes alerts about the same
/// condition (a flapping condition stays one incident).
pub const REJOIN_WINDOW: TimeDelta = TimeDelta::hours(1);

/// The incident id for the alert that opens one: `inc-` and 12 hex digits of a hash of its
/// dedup key and the start of its window, so every engine that sees the alert (again)
/// derives the same id.
pub fn incident_id_for(alert: &Alert) -> String {
    let mut hash = Sha256::new();
    hash.update(alert.dedup_key.as_bytes());
    hash.update(b"\n");
    hash.update(alert.window_start.timestamp_micros().to_be_bytes());
    let digest = hex::encode(hash.finalize());
    format!("inc-{}", &digest[..12])
}

/// One thing the plan will do, computed when the incident opens and recorded with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedAction {
    pub step: String,
    /// Unique within the incident: the step and what it acts on (`scale_down/target:llama`).
    pub key: String,
    /// One line: what it does ("pin my-org/llama at its current replicas").
    pub detail: String,
    #[serde(default)]
    pub target: Option<String>,
    /// The Inference Endpoint (`namespace/name`).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// `scale_down`: the replicas to pin (the target's floor).
    #[serde(default)]
    pub replicas: Option<u32>,
    /// The floor no scaling change may go below.
    #[serde(default)]
    pub floor: Option<u32>,
    /// `emergency_rate_limit` / `revoke`: whom it applies to.
    #[serde(default)]
    pub subject: Option<String>,
    #[serde(default)]
    pub limit_per_minute: Option<u64>,
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    /// `notify_owner`: the receiver.
    #[serde(default)]
    pub receiver: Option<String>,
    /// Waits for `warden incident approve` in this mode (infrastructure; a critical client).
    #[serde(default)]
    pub needs_approval: bool,
}

impl PlannedAction {
    pub fn new(step: Step, on: &str, detail: impl Into<String>) -> Self {
        Self {
            step: step.as_str().to_owned(),
            key: format!("{step}/{on}"),
            detail: detail.into(),
            target: None,
            endpoint: None,
            replicas: None,
            floor: None,
            subject: None,
            limit_per_minute: None,
            expires_at: None,
            receiver: None,
            needs_approval: false,
        }
    }

    pub fn step(&self) -> Option<Step> {
        Step::parse(&self.step)
    }
}

/// The plan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub actions: Vec<PlannedAction>,
}

/// The `data` of an `opened` entry: the plan and the alert it was made for (the reports
/// of a resumed incident are made from it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpenedData {
    pub plan: Plan,
    #[serde(default)]
    pub alert: Option<Alert>,
}

/// The `step` of the report entry that records what the incident's notification said
/// (so a restarted engine does not announce it again).
pub const ANNOUNCED: &str = "announced";

/// A step's latest entry.
#[derive(Debug, Clone, PartialEq)]
pub struct StepState {
    pub outcome: StepOutcome,
    pub detail: String,
    /// The `data` of its `started` entry (what undo needs), kept across its outcome.
    pub started_data: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub action_id: Option<String>,
}

/// An incident, as its entries say.
#[derive(Debug, Clone)]
pub struct Incident {
    pub id: String,
    pub runbook: RunbookKind,
    pub mode: Mode,
    pub opened_at: DateTime<Utc>,
    pub subject: String,
    pub environment: Option<String>,
    /// The alert that opened it.
    pub alert_dedup_key: String,
    pub alert: Option<Alert>,
    pub plan: Plan,
    /// Latest entry per planned action key.
    pub steps: BTreeMap<String, StepState>,
    /// The alerts that joined (by alert id), and the dedup keys firing now.
    pub alert_ids: BTreeSet<String>,
    pub firing: BTreeSet<String>,
    pub last_alert_at: DateTime<Utc>,
    pub approved_by: Option<String>,
    pub expired: bool,
    pub undo_requested_by: Option<String>,
    /// Planned action keys undone, and whether the undo finished.
    pub undone: BTreeSet<String>,
    pub undo_finished: bool,
    /// What the incident's last notification said.
    pub last_announced: Option<String>,
    /// Entries applied (an entry read twice, e.g. the engine's own read back, counts once).
    seen: HashSet<EventId>,
}

impl Incident {
    /// The incident an `opened` entry starts; `None` for another kind or an unknown runbook.
    pub fn open(entry: &IncidentEntry) -> Option<Self> {
        if entry.kind != EntryKind::Opened {
            return None;
        }
        let runbook = RunbookKind::parse(&entry.runbook)?;
        let opened: Option<OpenedData> = entry
            .data
            .as_deref()
            .and_then(|data| serde_json::from_str(data).ok());
        let (plan, alert) = opened.map_or_else(Default::default, |data| (data.plan, data.alert));
        let dedup_key = entry.alert_dedup_key.clone().unwrap_or_default();
        Some(Self {
            id: entry.incident_id.clone(),
            runbook,
            mode: entry
                .mode
                .as_deref()
                .and_then(Mode::parse)
                .unwrap_or_default(),
            opened_at: entry.ts,
            subject: entry.subject.clone().unwrap_or_else(|| "global".to_owned()),
            environment: entry.environment.clone(),
            alert_dedup_key: dedup_key.clone(),
            alert,
            plan,
            steps: BTreeMap::new(),
            alert_ids: entry.alert_id.iter().cloned().collect(),
            firing: BTreeSet::from([dedup_key]),
            last_alert_at: entry.ts,
            approved_by: None,
            expired: false,
            undo_requested_by: None,
            undone: BTreeSet::new(),
            undo_finished: false,
            last_announced: None,
            seen: HashSet::from([entry.entry_id]),
        })
    }

    /// Applies a later entry; `false` if it was applied before.
    pub fn apply(&mut self, entry: &IncidentEntry) -> bool {
        if !self.seen.insert(entry.entry_id) {
            return false;
        }
        match entry.kind {
            EntryKind::Opened => {}
            EntryKind::Report => {
                if entry.step.as_deref() == Some(ANNOUNCED) {
                    self.last_announced = Some(entry.detail.clone());
                }
            }
            EntryKind::Alert => {
                if let Some(alert_id) = &entry.alert_id {
                    self.alert_ids.insert(alert_id.clone());
                }
                if let Some(key) = &entry.alert_dedup_key {
                    if entry.outcome == Some(StepOutcome::Skipped) {
                        // A resolve (recorded as "nothing to do").
                        self.firing.remove(key);
                    } else {
                        self.firing.insert(key.clone());
                    }
                }
                self.last_alert_at = self.last_alert_at.max(entry.ts);
            }
            EntryKind::Step => {
                let (Some(key), Some(outcome)) = (&entry.step, entry.outcome) else {
                    return true;
                };
                let previous = self.steps.remove(key);
                let (started_data, started_at) = match (outcome, previous) {
                    (StepOutcome::Started, _) => (entry.data.clone(), Some(entry.ts)),
                    (_, Some(previous)) => (previous.started_data, previous.started_at),
                    (_, None) => (None, None),
                };
                self.steps.insert(
                    key.clone(),
                    StepState {
                        outcome,
                        detail: entry.detail.clone(),
                        started_data,
                        started_at,
                        action_id: entry.action_id.clone(),
                    },
                );
            }
            EntryKind::Approved => {
                self.approved_by.get_or_insert_with(|| entry.actor.clone());
            }
            EntryKind::Expired => self.expired = true,
            EntryKind::UndoRequested => {
                self.undo_requested_by
                    .get_or_insert_with(|| entry.actor.clone());
            }
            EntryKind::Undone => match &entry.step {
                Some(key) => {
                    self.undone.insert(key.clone());
                }
                None => self.undo_finished = true,
            },
        }
        true
    }

    /// Whether `alert` joins this incident instead of opening another: a runaway is one
    /// incident per environment while it lasts (the detectors that see it — burn, spike, a
    /// single source — are its alerts, and two plans must not scale the same endpoint); a
    /// compromise is one per token (or client).
    ///
    /// An undone incident goes on taking its condition's alerts (recorded, not acted on)
    /// until the condition has been quiet for [`REJOIN_WINDOW`]: an operator who undid a
    /// runbook's changes is not overruled by the next alert about the same episode.
    pub fn takes(&self, alert: &Alert, now: DateTime<Utc>) -> bool {
        let same_runbook = alert.runbook.as_deref() == Some(self.runbook.as_str());
        // An alert of no environment (a detector that sees them all) goes with any.
        let same_environment = alert.environment.is_none()
            || self.environment.is_none()
            || alert.environment == self.environment;
        let same = alert.dedup_key == self.alert_dedup_key
            || self.firing.contains(&alert.dedup_key)
            || (same_runbook
                && same_environment
                && match self.runbook {
                    RunbookKind::RunawayCost => true,
                    RunbookKind::TokenCompromise => alert.subject.to_string() == self.subject,
                });
        same && (!self.firing.is_empty() || now - self.last_alert_at < REJOIN_WINDOW)
    }

    /// Records that `alert` joined (what the entry for it changes).
    pub fn alert_entry(&self, alert: &Alert) -> IncidentEntry {
        let resolved = alert.status == AlertStatus::Resolved;
        let mut entry = IncidentEntry::new(
            &self.id,
            self.runbook.as_str(),
            EntryKind::Alert,
            format!(
                "{} {} {}: {}",
                alert.detector,
                alert.subject,
                if resolved {
                    "resolved"
                } else {
                    alert.severity.as_str()
                },
                alert.summary
            ),
            self.actor(),
        );
        entry.alert_dedup_key = Some(alert.dedup_key.clone());
        entry.alert_id = Some(alert.alert_id.0.to_string());
        entry.subject = Some(alert.subject.to_string());
        entry.environment = alert.environment.clone();
        if resolved {
            entry.outcome = Some(StepOutcome::Skipped);
        }
        entry
    }

    /// `runbook:<name>`.
    pub fn actor(&self) -> String {
        format!("runbook:{}", self.runbook)
    }

    /// Whether the approval window passed with steps still waiting.
    pub fn approval_lapsed(&self, now: DateTime<Utc>, window: TimeDelta) -> bool {
        self.approved_by.is_none()
            && !self.expired
            && now - self.opened_at >= window
            && self
                .steps
                .values()
                .any(|step| step.outcome == StepOutcome::AwaitingApproval)
    }

    /// Whether nothing is left for the engine to do.
    pub fn is_closed(&self) -> bool {
        self.undo_finished
    }

    /// A short state for `incident list`.
    pub fn status(&self) -> &'static str {
        let waiting = self
            .steps
            .values()
            .any(|step| step.outcome == StepOutcome::AwaitingApproval);
        if self.undo_finished {
            "undone"
        } else if self.undo_requested_by.is_some() {
            "undoing"
        } else if self.expired {
            "expired"
        } else if waiting && self.approved_by.is_none() {
            "awaiting approval"
        } else if self.mode == Mode::DryRun {
            "dry run"
        } else if self
            .steps
            .values()
            .any(|step| step.outcome == StepOutcome::Failed)
        {
            "acted (a step failed)"
        } else {
            "acted"
        }
    }
}

/// Every incident, folded from the topic.
#[derive(Debug, Default)]
pub struct Incidents {
    pub by_id: BTreeMap<String, Incident>,
    /// Entries of incidents whose `opened` entry has not been read (should not happen with
    /// one partition per incident, but a fold must not lose them).
    orphans: Vec<IncidentEntry>,
}

impl Incidents {
    /// Applies an entry; returns the id of the incident it changed, if any.
    pub fn apply(&mut self, entry: &IncidentEntry) -> Option<String> {
        if let Some(incident) = self.by_id.get_mut(&entry.incident_id) {
            return incident.apply(entry).then(|| entry.incident_id.clone());
        }
        match Incident::open(entry) {
            Some(mut incident) => {
                let id = incident.id.clone();
                let orphans = std::mem::take(&mut self.orphans);
                for orphan in orphans {
                    if orphan.incident_id == id {
                        incident.apply(&orphan);
                    } else {
                        self.orphans.push(orphan);
                    }
                }
                self.by_id.insert(id.clone(), incident);
                Some(id)
            }
            None if entry.kind != EntryKind::Opened && self.orphans.len() < 10_000 => {
                self.orphans.push(entry.clone());
                None
            }
            None => None,
        }
    }

    /// The incident `alert` joins, if one does (the newest, when several would).
    pub fn taking(&self, alert: &Alert, now: DateTime<Utc>) -> Option<&Incident> {
        self.by_id
            .values()
            .filter(|incident| incident.takes(alert, now))
            .max_by_key(|incident| incident.opened_at)
    }

    /// Changes the runbooks made since `since` (each step started counts once).
    pub fn actions_since(&self, since: DateTime<Utc>) -> usize {
        self.by_id
            .values()
            .flat_map(|incident| incident.steps.values())
            .filter(|step| step.started_at.is_some_and(|at| at >= since))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use warden_ingest::alert::{Severity, Subject};

    use super::*;

    fn alert() -> Alert {
        let now = Utc::now();
        let mut alert = Alert::firing(
            "cost_burn",
            Severity::Critical,
            Subject::Global,
            (now - TimeDelta::hours(1), now),
        );
        alert.runbook = Some("runaway_cost".into());
        alert.with_derived_id()
    }

    fn opened(alert: &Alert) -> IncidentEntry {
        let mut entry = IncidentEntry::new(
            &incident_id_for(alert),
            "runaway_cost",
            EntryKind::Opened,
            "opened",
            "runbook:runaway_cost",
        );
        entry.mode = Some("auto".into());
        entry.alert_dedup_key = Some(alert.dedup_key.clone());
        entry.subject = Some(alert.subject.to_string());
        let mut plan = Plan::default();
        plan.actions.push(PlannedAction::new(
            Step::EmergencyRateLimit,
            "client:batch",
            "limit",
        ));
        let data = OpenedData {
            plan,
            alert: Some(alert.clone()),
        };
        entry.data = Some(serde_json::to_string(&data).expect("plan"));
        entry
    }

    #[test]
    fn the_same_alert_gives_the_same_incident_id() {
        let first = alert();
        let mut again = first.clone();
        again.ts += TimeDelta::minutes(5);
        assert_eq!(incident_id_for(&first), incident_id_for(&again));
        let id = incident_id_for(&first);
        assert!(id.starts_with("inc-") && id.len() == 16, "{id}");
    }

    #[test]
    fn steps_fold_to_their_latest_outcome_and_entries_count_once() {
        let alert = alert();
        let mut incidents = Incidents::default();
        let open = opened(&alert);
        let id = incidents.apply(&open).expect("opened");
        let mut started = IncidentEntry::new(&id, "runaway_cost", EntryKind::Step, "go", "r");
        started.step = Some("emergency_rate_limit/client:batch".into());
        started.outcome = Some(StepOutcome::Started);
        started.data = Some("{\"previous\":1}".into());
        let mut done = started.clone();
        done.entry_id = EventId::new();
        done.outcome = Some(StepOutcome::Ok);
        done.data = None;
        assert!(incidents.apply(&started).is_some());
        assert!(
            incidents.apply(&started).is_none(),
            "read twice, applied once"
        );
        incidents.apply(&done);
        let incident = &incidents.by_id[&id];
        assert_eq!(incident.plan.actions.len(), 1);
        assert_eq!(incident.alert.as_ref(), Some(&alert));
        let step = &incident.steps["emergency_rate_limit/client:batch"];
        assert_eq!(step.outcome, StepOutcome::Ok);
        assert_eq!(step.started_data.as_deref(), Some("{\"previous\":1}"));
        assert_eq!(incidents.actions_since(Utc::now() - TimeDelta::hours(1)), 1);
        assert!(incidents.taking(&alert, Utc::now()).is_some());
    }

    #[test]
    fn the_detectors_that_see_one_runaway_make_one_incident() {
        let cost = alert();
        let mut incidents = Incidents::default();
        incidents.apply(&opened(&cost));
        let now = Utc::now();
        let mut single = Alert::firing(
            "single_source",
            Severity::Warning,
            Subject::Client("app-batch".into()),
            (now, now),
        )
        .in_environment(Some("prod"));
        single.runbook = Some("runaway_cost".into());
        assert!(incidents.taking(&single, now).is_some());
        let mut stolen = single.clone();
        stolen.runbook = Some("token_compromise".into());
        assert!(incidents.taking(&stolen, now).is_none(), "another runbook");
    }

    #[test]
    fn a_plan_waiting_for_approval_lapses_after_its_window() {
        let alert = alert();
        let mut incidents = Incidents::default();
        let id = incidents.apply(&opened(&alert)).expect("opened");
        let mut waiting = IncidentEntry::new(&id, "runaway_cost", EntryKind::Step, "w", "r");
        waiting.step = Some("emergency_rate_limit/client:batch".into());
        waiting.outcome = Some(StepOutcome::AwaitingApproval);
        incidents.apply(&waiting);
        let incident = &incidents.by_id[&id];
        let window = TimeDelta::hours(1);
        assert!(!incident.approval_lapsed(Utc::now(), window));
        assert!(incident.approval_lapsed(Utc::now() + TimeDelta::minutes(61), window));
        assert_eq!(incident.status(), "awaiting approval");
    }

    #[test]
    fn an_undone_incident_holds_its_episode_and_lets_a_later_one_open() {
        let alert = alert();
        let mut incidents = Incidents::default();
        let id = incidents.apply(&opened(&alert)).expect("opened");
        incidents.apply(&IncidentEntry::new(
            &id,
            "runaway_cost",
            EntryKind::UndoRequested,
            "undo",
            "operator:alice",
        ));
        assert_eq!(incidents.by_id[&id].status(), "undoing");
        // The same episode's next alert joins it (recorded, not acted on): no new incident.
        let taken = incidents.taking(&alert, Utc::now()).expect("taken");
        assert_eq!(taken.id, id);
        // Once the condition resolved and stayed quiet, a new episode opens a new incident.
        let mut resolved = alert.clone();
        resolved.status = AlertStatus::Resolved;
        let entry = incidents.by_id[&id].alert_entry(&resolved);
        incidents.apply(&entry);
        let later = Utc::now() + REJOIN_WINDOW + TimeDelta::minutes(1);
        assert!(incidents.taking(&alert, later).is_none());
    }
}
