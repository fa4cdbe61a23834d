//! The runbook engine: alerts in, incidents opened and their plans carried out, safely.
//!
//! - It reads `warden.alerts` in its own consumer group (`[runbooks].group_id`). The topic
//!   has one partition, so one engine at a time acts; the others stand by. An engine that
//!   gets the partition first reads `warden.incidents` to its end: what was done is known
//!   before anything is done again.
//! - An alert naming a configured runbook opens an incident (its id derived from the
//!   alert's dedup key and window, so a repeat, a restart or a second engine finds it open)
//!   or joins the incident already open for it. The plan is computed once and recorded in
//!   the `opened` entry.
//! - Each incident's steps run in a task of their own (an endpoint that takes a minute to
//!   settle holds up no revocation). A step that changes something writes `started` (with
//!   what undo needs) before it acts and its outcome after: an engine that stopped
//!   mid-step does that step again, never a finished one.
//! - Modes and guard rails: `dry_run` records `planned`; `approve` holds infrastructure
//!   steps until `warden incident approve`, and plans expire; revoking a critical client
//!   always waits for approval; no scaling goes below the target's `min_replicas`; all
//!   runbooks together make at most `max_actions_per_hour` changes.
//! - Every change is also an action on `warden.control` (actor `runbook:<name>`, the
//!   alert's dedup key, the incident id): the proxies apply limits and revocations from
//!   there, and the archive keeps them all in `actions`.
//! - What an incident did is announced through the responder like any alert (detector
//!   `runbook`, dedup key `runbook/<incident id>`), resolved when its alerts resolve or it
//!   is undone.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use warden_ingest::action::{ActionKind, ControlAction};
use warden_ingest::alert::{Alert, AlertStatus, Severity, Subject};
use warden_ingest::incident::{EntryKind, IncidentEntry, StepOutcome};
use warden_ingest::kafka::{
    AlertPublisher, DeliveringProducer, KafkaCluster, KafkaError, KafkaSetupError, Outgoing,
    PartitionOffsets, Received, TopicConsumer, TopicReader,
};
use warden_ingest::notification::NotificationRecord;
use warden_ingest::table_record::TableRecord;

use super::config::{Mode, RunbookKind, RunbooksSettings, Step};
use super::hf_api::{EndpointStatus, HfApi, HfApiError, HfApiSettings};
use super::incident::{
    ANNOUNCED, Incident, Incidents, OpenedData, PlannedAction, StepState, incident_id_for,
};
use super::plan::{PlanInputs, RunbookClient, RunbookTarget, plan};
use super::reports::{ArchiveReports, Report};
use crate::respond::config::ReceiverSettings;
use crate::respond::dispatch::{LogEntry, Notification, NotifyReason};
use crate::respond::notify::{self, Notifier};
use crate::respond::worker::delivery_record;

/// The detector name of the alerts that announce what a runbook did (never acted on).
pub const RUNBOOK_DETECTOR: &str = "runbook";
/// How long a record of the incidents topic may take to arrive while it is read to its end.
const READ_PATIENCE: Duration = Duration::from_secs(10);
/// How long one write to the broker may take before the step is tried again later.
const WRITE_TIMEOUT: Duration = Duration::from_secs(15);
/// How long an archive report may take (the step goes on without it after that).
const REPORT_TIMEOUT: Duration = Duration::from_secs(20);
/// How often an endpoint being changed is polled.
const SETTLE_POLL: Duration = Duration::from_secs(2);
/// How long a failed undo waits before it is tried again.
const UNDO_RETRY: Duration = Duration::from_secs(30);
/// Incidents with no alert for this long (or for the approval window, if longer) are
/// history: the engine looks at them again only when an operator approves or undoes them.
const HISTORY: TimeDelta = TimeDelta::days(1);
/// How far back the archive is asked about a token.
const TOKEN_HISTORY: TimeDelta = TimeDelta::days(7);

/// What the engine works with besides its settings.
#[derive(Debug, Clone, Default)]
pub struct RunbookInputs {
    pub targets: Vec<RunbookTarget>,
    pub clients: Vec<RunbookClient>,
    /// `[hf_api]`; without it, scaling steps are skipped (and say why).
    pub hf_api: Option<HfApiSettings>,
    /// The responder's receivers (`notify_owner` reaches a client's owner through one).
    pub receivers: Vec<ReceiverSettings>,
    /// The archive's saved investigations; without them, reports hold the live window only.
    pub reports: Option<Arc<dyn ArchiveReports>>,
}

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunbookError {
    #[error(transparent)]
    Kafka(#[from] KafkaSetupError),
    #[error("{0}")]
    Setup(String),
}

/// The runbook role (inside `warden respond` and `warden up`).
#[derive(Debug)]
pub struct RunbookEngine {
    cluster: KafkaCluster,
    settings: Arc<RunbooksSettings>,
    inputs: RunbookInputs,
}

impl RunbookEngine {
    pub fn new(cluster: &KafkaCluster, settings: RunbooksSettings, inputs: RunbookInputs) -> Self {
        Self {
            cluster: cluster.clone(),
            settings: Arc::new(settings),
            inputs,
        }
    }

    /// Runs until `shutdown`; fails only when it cannot start.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), RunbookError> {
        let client = notify::http_client().map_err(RunbookError::Setup)?;
        let mut owners = HashMap::new();
        for receiver in &self.inputs.receivers {
            let notifier: Arc<dyn Notifier> =
                Arc::from(notify::build(receiver, &client).map_err(RunbookError::Setup)?);
            owners.insert(receiver.name.clone(), (receiver.kind.as_str(), notifier));
        }
        let hf_api = match self.inputs.hf_api.clone() {
            Some(settings) => Some(HfApi::new(settings).map_err(RunbookError::Setup)?),
            None => None,
        };
        let (entries_tx, mut entries) = mpsc::unbounded_channel();
        let (done_tx, mut done) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            settings: Arc::clone(&self.settings),
            targets: self.inputs.targets.clone(),
            clients: self.inputs.clients.clone(),
            hf_api,
            owners,
            reports: self.inputs.reports.clone(),
            writer: Writer::new(&self.cluster)?,
            alerts: AlertPublisher::new(&self.cluster)?,
            budget: Mutex::new(ActionBudget::default()),
            claims: Mutex::new(HashMap::new()),
            applied: entries_tx.clone(),
        });
        let topics = self.cluster.topics().clone();
        let consumer =
            TopicConsumer::subscribe(&self.cluster, &self.settings.group_id, &[&topics.alerts])?;
        tokio::spawn(follow_incidents(
            self.cluster.clone(),
            entries_tx,
            shutdown.clone(),
        ));
        let mut engine = Loop {
            shared,
            cluster: self.cluster.clone(),
            incidents: None,
            seen_assignments: 0,
            busy: HashSet::new(),
            done: done_tx,
            shutdown: shutdown.clone(),
        };
        info!(
            runbooks = self.settings.runbooks.len(),
            group = %self.settings.group_id,
            "runbook engine started"
        );
        let mut records = consumer.records();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                received = records.next() => match received {
                    Ok(Received::Record(record)) => {
                        engine.ensure_state(&consumer).await;
                        let position = (record.topic().to_owned(), record.partition(), record.offset());
                        let taken = engine.take_alert(record.payload()).await;
                        let mut offsets = PartitionOffsets::default();
                        offsets.mark(&position.0, position.1, position.2);
                        if taken {
                            if let Err(err) = consumer.commit(&offsets).await {
                                warn!(error = %err, "committing alert offsets failed");
                            }
                        } else if let Err(err) = consumer.rewind(&position.0, position.1, position.2).await {
                            warn!(error = %err, "cannot rewind the alerts partition");
                        }
                    }
                    Ok(Received::End { .. }) => {}
                    Err(err) => {
                        warn!(error = %err, "reading alerts failed");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                },
                Some(entry) = entries.recv() => {
                    engine.apply(&entry);
                    while let Ok(entry) = entries.try_recv() {
                        engine.apply(&entry);
                    }
                }
                Some(id) = done.recv() => {
                    engine.busy.remove(&id);
                }
                _ = tick.tick() => {
                    engine.ensure_state(&consumer).await;
                    engine.reconcile_all().await;
                }
            }
        }
        info!("runbook engine stopped");
        Ok(())
    }
}

/// What every incident's task shares.
struct Shared {
    settings: Arc<RunbooksSettings>,
    targets: Vec<RunbookTarget>,
    clients: Vec<RunbookClient>,
    hf_api: Option<HfApi>,
    /// Receivers by name, with their kind.
    owners: HashMap<String, (&'static str, Arc<dyn Notifier>)>,
    reports: Option<Arc<dyn ArchiveReports>>,
    writer: Writer,
    alerts: AlertPublisher,
    budget: Mutex<ActionBudget>,
    /// Endpoints whose scaling an open incident changed, and which incident: another
    /// incident leaves them alone (two plans scaling one endpoint would record each other's
    /// pins as "before" and undo would restore the wrong bounds).
    claims: Mutex<HashMap<String, String>>,
    /// Entries written, for the loop's fold.
    applied: mpsc::UnboundedSender<IncidentEntry>,
}

/// The engine loop's state.
struct Loop {
    shared: Arc<Shared>,
    cluster: KafkaCluster,
    /// `None` while this engine holds no partition of the alerts (or has not read the
    /// incidents since it got it).
    incidents: Option<Incidents>,
    seen_assignments: u64,
    /// Incidents whose task is running.
    busy: HashSet<String>,
    done: mpsc::UnboundedSender<String>,
    shutdown: CancellationToken,
}

impl Loop {
    /// Reads the incidents again when the alerts partition was (re)assigned, and forgets
    /// them when another engine got it.
    async fn ensure_state(&mut self, consumer: &TopicConsumer) {
        let assignments = consumer.assignments();
        if assignments == self.seen_assignments && self.incidents.is_some() {
            return;
        }
        if !consumer.is_assigned(&self.cluster.topics().alerts, 0).await {
            if self.incidents.take().is_some() {
                info!("the alerts partition went to another runbook engine: standing by");
            }
            return;
        }
        match read_incidents(&self.cluster).await {
            Ok(incidents) => {
                let since = Utc::now() - TimeDelta::hours(1);
                let mut budget = ActionBudget::default();
                for incident in incidents.by_id.values() {
                    for step in incident.steps.values() {
                        if let Some(at) = step.started_at.filter(|at| *at >= since) {
                            budget.taken.push_back(at);
                        }
                    }
                }
                budget.taken.make_contiguous().sort();
                *lock(&self.shared.budget) = budget;
                *lock(&self.shared.claims) = claims_of(&incidents);
                info!(incidents = incidents.by_id.len(), "incidents read");
                self.incidents = Some(incidents);
                self.seen_assignments = assignments;
            }
            Err(err) => warn!(error = %err, "cannot read the incidents yet"),
        }
    }

    fn apply(&mut self, entry: &IncidentEntry) {
        if let Some(incidents) = &mut self.incidents {
            incidents.apply(entry);
        }
    }

    /// Takes one alert: opens or joins an incident. `false` if it must be read again (this
    /// engine is not ready, or the broker did not take the entry).
    async fn take_alert(&mut self, payload: &[u8]) -> bool {
        let alert = match Alert::decode(payload) {
            Ok(alert) => alert,
            Err(err) => {
                // The responder dead-letters it; the runbooks have nothing to act on.
                debug!(error = %err, "skipping an unreadable alert");
                return true;
            }
        };
        if alert.detector == RUNBOOK_DETECTOR {
            return true;
        }
        let Some(kind) = alert.runbook.as_deref().and_then(RunbookKind::parse) else {
            return true;
        };
        let Some(runbook) = self.shared.settings.runbook(kind) else {
            return true;
        };
        let Some(incidents) = &self.incidents else {
            return false;
        };
        let now = Utc::now();
        if let Some(incident) = incidents.taking(&alert, now) {
            if incident.alert_ids.contains(&alert.alert_id.0.to_string()) {
                return true;
            }
            let mut entry = incident.alert_entry(&alert);
            if incident.undo_requested_by.is_some() {
                entry
                    .detail
                    .push_str(" — not acted on: the incident was undone");
            }
            let id = incident.id.clone();
            if self.shared.writer.entry(&entry).await.is_err() {
                return false;
            }
            self.apply(&entry);
            self.start(&id);
            return true;
        }
        if alert.status == AlertStatus::Resolved {
            return true;
        }
        let id = incident_id_for(&alert);
        if incidents.by_id.contains_key(&id) {
            // That episode's incident was opened (and closed) before.
            return true;
        }
        let mode = runbook.mode_in(alert.environment.as_deref());
        let token_client = self.token_client(kind, &alert).await;
        let plan = plan(
            runbook,
            mode,
            &alert,
            PlanInputs {
                targets: &self.shared.targets,
                clients: &self.shared.clients,
                token_client: token_client.as_deref(),
            },
        );
        let mut entry = IncidentEntry::new(
            &id,
            kind.as_str(),
            EntryKind::Opened,
            format!(
                "{} {}{}: {}",
                alert.detector,
                alert.subject,
                alert
                    .environment
                    .as_deref()
                    .map(|env| format!(" in {env}"))
                    .unwrap_or_default(),
                alert.summary
            ),
            format!("runbook:{kind}"),
        );
        entry.mode = Some(mode.as_str().to_owned());
        entry.alert_dedup_key = Some(alert.dedup_key.clone());
        entry.alert_id = Some(alert.alert_id.0.to_string());
        entry.subject = Some(alert.subject.to_string());
        entry.environment = alert.environment.clone();
        entry.data = serde_json::to_string(&OpenedData {
            plan,
            alert: Some(alert),
        })
        .ok();
        if self.shared.writer.entry(&entry).await.is_err() {
            return false;
        }
        info!(incident = %id, runbook = %kind, mode = %mode, "incident opened");
        self.apply(&entry);
        self.start(&id);
        true
    }

    /// The client of the alert's token, when a guard rail needs it at planning time (some
    /// client is marked critical) and the archive can tell.
    async fn token_client(&self, kind: RunbookKind, alert: &Alert) -> Option<String> {
        let Subject::Token(token) = &alert.subject else {
            return None;
        };
        if kind != RunbookKind::TokenCompromise || !self.shared.clients.iter().any(|c| c.critical) {
            return None;
        }
        let reports = self.shared.reports.as_ref()?;
        let since = Utc::now() - TOKEN_HISTORY;
        match tokio::time::timeout(
            Duration::from_secs(2),
            reports.client_of_token(token, since),
        )
        .await
        {
            Ok(Ok(client)) => client,
            Ok(Err(err)) => {
                warn!(error = %err, "cannot look the token's client up");
                None
            }
            Err(_) => None,
        }
    }

    /// Starts the task of incident `id` unless it runs or has nothing to do.
    fn start(&mut self, id: &str) {
        let Some(incident) = self.incidents.as_ref().and_then(|all| all.by_id.get(id)) else {
            return;
        };
        if self.busy.contains(id) || !has_work(incident, &self.shared.settings, Utc::now()) {
            return;
        }
        self.busy.insert(id.to_owned());
        let run = Run {
            shared: Arc::clone(&self.shared),
            incident: incident.clone(),
            settling: Vec::new(),
        };
        let done = self.done.clone();
        let id = id.to_owned();
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = run.carry_out() => {}
                () = shutdown.cancelled() => {}
            }
            let _ = done.send(id);
        });
    }

    /// Starts every incident that has something left to do.
    async fn reconcile_all(&mut self) {
        let Some(incidents) = &self.incidents else {
            return;
        };
        let now = Utc::now();
        let history = HISTORY.max(self.shared.settings.approval_expires);
        let ids: Vec<String> = incidents
            .by_id
            .values()
            .filter(|incident| !incident.is_closed())
            .filter(|incident| {
                incident.undo_requested_by.is_some()
                    || incident.approved_by.is_some()
                    || now - incident.last_alert_at < history
            })
            .map(|incident| incident.id.clone())
            .collect();
        for id in ids {
            self.start(&id);
        }
    }
}

/// The endpoints each open incident holds: an infrastructure step started or done, not undone.
fn claims_of(incidents: &Incidents) -> HashMap<String, String> {
    let mut claims = HashMap::new();
    for incident in incidents.by_id.values().filter(|i| !i.is_closed()) {
        for action in &incident.plan.actions {
            let holds = action.step().is_some_and(Step::changes_infrastructure)
                && !incident.undone.contains(&action.key)
                && incident.steps.get(&action.key).is_some_and(|step| {
                    matches!(step.outcome, StepOutcome::Ok | StepOutcome::Started)
                });
            if let (true, Some(endpoint)) = (holds, &action.endpoint) {
                claims.insert(endpoint.clone(), incident.id.clone());
            }
        }
    }
    claims
}

/// Whether incident has anything for the engine to do now.
fn has_work(incident: &Incident, settings: &RunbooksSettings, now: DateTime<Utc>) -> bool {
    if incident.is_closed() {
        return false;
    }
    if incident.undo_requested_by.is_some() {
        return true;
    }
    if incident.approval_lapsed(now, settings.approval_expires) {
        return true;
    }
    let pending =
        incident
            .plan
            .actions
            .iter()
            .any(|action| match incident.steps.get(&action.key) {
                None => true,
                Some(step) => match step.outcome {
                    StepOutcome::Started => true,
                    StepOutcome::AwaitingApproval => {
                        incident.approved_by.is_some() && !incident.expired
                    }
                    _ => false,
                },
            });
    pending || incident.last_announced.as_deref() != Some(&announcement(incident).1)
}

/// The changes made in the last hour, against the cap.
#[derive(Debug, Default)]
struct ActionBudget {
    taken: VecDeque<DateTime<Utc>>,
}

impl ActionBudget {
    fn try_take(&mut self, cap: u32, now: DateTime<Utc>) -> bool {
        while self
            .taken
            .front()
            .is_some_and(|at| now - *at >= TimeDelta::hours(1))
        {
            self.taken.pop_front();
        }
        if self.taken.len() >= cap as usize {
            return false;
        }
        self.taken.push_back(now);
        true
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The scaling a scaling step found, and what it set (its `started` data).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct ScalingChange {
    previous_min: u32,
    previous_max: u32,
    set_min: u32,
    set_max: u32,
}

/// One incident's task: carries out what is left of it.
struct Run {
    shared: Arc<Shared>,
    incident: Incident,
    /// Endpoints this run changed, to check once the steps are done.
    settling: Vec<String>,
}

impl Run {
    async fn carry_out(mut self) {
        let now = Utc::now();
        if self.incident.undo_requested_by.is_some() {
            if self.undo().await.is_err() {
                return;
            }
        } else if self
            .incident
            .approval_lapsed(now, self.shared.settings.approval_expires)
        {
            let entry = self.entry(
                EntryKind::Expired,
                format!(
                    "not approved within {} minutes: the waiting steps are dropped",
                    self.shared.settings.approval_expires.num_minutes()
                ),
            );
            if self.record(entry).await.is_err() {
                return;
            }
        } else if self.steps().await.is_err() {
            return;
        }
        self.announce().await;
        if self.check_settled().await.is_err() {
            return;
        }
        self.announce().await;
    }

    /// The steps that have not run, in order. `Err` when the broker did not take an entry
    /// (the task stops; the loop starts it again).
    async fn steps(&mut self) -> Result<(), KafkaError> {
        let actions = self.incident.plan.actions.clone();
        for action in &actions {
            let Some(step) = action.step() else { continue };
            let current = self.incident.steps.get(&action.key).map(|s| s.outcome);
            match current {
                Some(outcome) if outcome.is_final() => continue,
                Some(StepOutcome::AwaitingApproval)
                    if self.incident.approved_by.is_none() || self.incident.expired =>
                {
                    continue;
                }
                _ => {}
            }
            let is_change = step.changes_something() && !action.key.ends_with("/no-endpoint");
            if is_change && self.incident.mode == Mode::DryRun {
                self.step_entry(
                    action,
                    StepOutcome::Planned,
                    format!("would {}", action.detail),
                )
                .await?;
                continue;
            }
            if is_change && action.needs_approval && self.incident.approved_by.is_none() {
                self.step_entry(
                    action,
                    StepOutcome::AwaitingApproval,
                    format!(
                        "waits for approval: {} (warden incident approve {} --by NAME)",
                        action.detail, self.incident.id
                    ),
                )
                .await?;
                continue;
            }
            if is_change && current != Some(StepOutcome::Started) {
                let cap = self.shared.settings.max_actions_per_hour;
                if !lock(&self.shared.budget).try_take(cap, Utc::now()) {
                    self.step_entry(
                        action,
                        StepOutcome::Skipped,
                        format!(
                            "not done: the runbooks made {cap} changes in the last hour, \
                             their cap (runbooks.max_actions_per_hour)"
                        ),
                    )
                    .await?;
                    continue;
                }
            }
            self.execute(step, action).await?;
        }
        Ok(())
    }

    async fn execute(&mut self, step: Step, action: &PlannedAction) -> Result<(), KafkaError> {
        match step {
            Step::BurnRate => self.burn_rate(action).await,
            Step::TopSources => self.top_sources(action).await,
            Step::DisableAutoscaling | Step::ScaleDown => self.scale(step, action).await,
            Step::EmergencyRateLimit => self.emergency_limit(action).await,
            Step::Incident => self.incident_record(action).await,
            Step::Revoke => self.revoke(action).await,
            Step::AccessReport => self.access_report(action).await,
            Step::NotifyOwner => self.notify_owner(action).await,
            Step::WatchRetries => {
                self.step_entry(
                    action,
                    StepOutcome::Ok,
                    "watching: alerts about this token (revoked_token retries) join this \
                     incident",
                )
                .await
            }
        }
    }

    async fn burn_rate(&mut self, action: &PlannedAction) -> Result<(), KafkaError> {
        let alert = self.incident.alert.clone();
        if let Some(alert) = &alert {
            let live = serde_json::json!({
                "detector": alert.detector,
                "subject": alert.subject.to_string(),
                "environment": alert.environment,
                "observed": alert.observed,
                "threshold": alert.threshold,
                "unit": alert.unit,
                "window_start": alert.window_start,
                "window_end": alert.window_end,
                "top_sources": alert.evidence.top_sources,
            });
            let mut entry = self.entry(
                EntryKind::Report,
                format!(
                    "burn rate (live window): {} {} against {} — {}",
                    alert.observed, alert.unit, alert.threshold, alert.summary
                ),
            );
            entry.step = Some("burn_rate/live".to_owned());
            entry.data = Some(live.to_string());
            self.record(entry).await?;
        }
        self.archive_report(
            "burn_rate/archive",
            "burn-by-hour",
            TimeDelta::hours(3),
            BTreeMap::new(),
        )
        .await?;
        self.step_entry(action, StepOutcome::Ok, "burn rate attached")
            .await
    }

    async fn top_sources(&mut self, action: &PlannedAction) -> Result<(), KafkaError> {
        if let Some(alert) = self.incident.alert.clone() {
            let sources: Vec<String> = alert
                .evidence
                .top_sources
                .iter()
                .map(|share| format!("{} {}", share.source, share.value))
                .collect();
            let mut entry = self.entry(
                EntryKind::Report,
                format!(
                    "top sources (live window): {}; sample calls: {}",
                    if sources.is_empty() {
                        "none named".to_owned()
                    } else {
                        sources.join(", ")
                    },
                    alert.evidence.sample_request_ids.join(", ")
                ),
            );
            entry.step = Some("top_sources/live".to_owned());
            entry.data = serde_json::to_string(&alert.evidence).ok();
            self.record(entry).await?;
        }
        self.archive_report(
            "top_sources/archive",
            "top-sources",
            TimeDelta::hours(1),
            BTreeMap::new(),
        )
        .await?;
        self.step_entry(action, StepOutcome::Ok, "top sources attached")
            .await
    }

    async fn access_report(&mut self, action: &PlannedAction) -> Result<(), KafkaError> {
        let subject = self.incident.subject.clone();
        let Some(token) = subject.strip_prefix("token:") else {
            return self
                .step_entry(
                    action,
                    StepOutcome::Skipped,
                    format!("{subject} is not a token: no access report"),
                )
                .await;
        };
        let params = BTreeMap::from([("token".to_owned(), token.to_owned())]);
        self.archive_report("access_report", "token-activity", TOKEN_HISTORY, params)
            .await?;
        self.step_entry(action, StepOutcome::Ok, "access report attached")
            .await
    }

    /// Runs a saved query and attaches it (or why it could not be run).
    async fn archive_report(
        &mut self,
        step: &str,
        query: &str,
        back: TimeDelta,
        params: BTreeMap<String, String>,
    ) -> Result<(), KafkaError> {
        let Some(reports) = self.shared.reports.clone() else {
            return Ok(());
        };
        let since = self.incident.opened_at - back;
        let (detail, data) =
            match tokio::time::timeout(REPORT_TIMEOUT, reports.saved(query, since, params)).await {
                Ok(Ok(Report { sql, table, rows })) => (
                    format!("{query} (archive, {} rows):\n{table}", rows.len()),
                    serde_json::json!({"sql": sql, "rows": rows}).to_string(),
                ),
                Ok(Err(err)) => (
                    format!("{query} (archive) could not run: {err}"),
                    String::new(),
                ),
                Err(_) => (
                    format!(
                        "{query} (archive) took over {}s: run `warden sql --saved {query}`",
                        REPORT_TIMEOUT.as_secs()
                    ),
                    String::new(),
                ),
            };
        let mut entry = self.entry(EntryKind::Report, detail);
        entry.step = Some(step.to_owned());
        entry.data = (!data.is_empty()).then_some(data);
        self.record(entry).await
    }

    async fn incident_record(&mut self, action: &PlannedAction) -> Result<(), KafkaError> {
        let id = &self.incident.id;
        let since = (self.incident.opened_at - TimeDelta::hours(1)).format("%Y-%m-%dT%H:%M:%SZ");
        let continue_with = serde_json::json!({
            "timeline": format!("warden sql --saved incident-timeline --param incident={id} --since {since}"),
            "top_sources": format!("warden sql --saved top-sources --since {since}"),
            "burn_by_hour": format!("warden sql --saved burn-by-hour --since {since}"),
            "actions": format!("warden sql \"SELECT ts, action, subject, actor, reason FROM actions WHERE incident_id = '{id}' ORDER BY ts\""),
        });
        let mut entry = self.step_record(
            action,
            StepOutcome::Ok,
            format!(
                "incident recorded; continue the root cause analysis with `warden incident \
                 show {id}` and `warden sql --saved incident-timeline --param incident={id} \
                 --since {since}`"
            ),
        );
        entry.data = Some(continue_with.to_string());
        self.record(entry).await
    }

    async fn scale(&mut self, step: Step, action: &PlannedAction) -> Result<(), KafkaError> {
        let (Some(endpoint), Some(target)) = (action.endpoint.clone(), action.target.clone())
        else {
            return self
                .step_entry(action, StepOutcome::Skipped, action.detail.clone())
                .await;
        };
        let Some(api) = self.shared.hf_api.clone() else {
            return self
                .step_entry(
                    action,
                    StepOutcome::Skipped,
                    "no [hf_api] token: the endpoint cannot be changed",
                )
                .await;
        };
        let holder = lock(&self.shared.claims)
            .entry(endpoint.clone())
            .or_insert_with(|| self.incident.id.clone())
            .clone();
        if holder != self.incident.id {
            return self
                .step_entry(
                    action,
                    StepOutcome::Skipped,
                    format!(
                        "{endpoint} is held by incident {holder}: its scaling stays as that \
                         incident set it (undo that one first)"
                    ),
                )
                .await;
        }
        let floor = action.floor.unwrap_or(1);
        // Resumed after a stop mid-step: the change it recorded, not what is there now.
        let recorded: Option<ScalingChange> = self
            .incident
            .steps
            .get(&action.key)
            .and_then(|state| state.started_data.as_deref())
            .and_then(|data| serde_json::from_str(data).ok());
        let change = match recorded {
            Some(change) => change,
            None => {
                let now = match api.get(&endpoint).await {
                    Ok(status) => status,
                    Err(err) => return self.api_failed(action, &err).await,
                };
                // What undo restores: the bounds before the incident's first change.
                let previous = self
                    .previous_scaling(&endpoint)
                    .unwrap_or((now.min_replica, now.max_replica));
                let pinned = if step == Step::DisableAutoscaling {
                    running_replicas(&now).max(floor)
                } else {
                    action.replicas.unwrap_or(floor).max(floor)
                };
                ScalingChange {
                    previous_min: previous.0,
                    previous_max: previous.1,
                    set_min: pinned,
                    set_max: pinned,
                }
            }
        };
        let mut started = self.step_record(
            action,
            StepOutcome::Started,
            format!(
                "setting {endpoint} to {}..{} replicas (was {}..{})",
                change.set_min, change.set_max, change.previous_min, change.previous_max
            ),
        );
        started.data = serde_json::to_string(&change).ok();
        self.record(started).await?;
        let kind = if step == Step::DisableAutoscaling {
            ActionKind::FreezeAutoscaling
        } else {
            ActionKind::ScaleDown
        };
        let status = match api
            .set_scaling(&endpoint, change.set_min, change.set_max)
            .await
        {
            Ok(status) => status,
            Err(err) => return self.api_failed(action, &err).await,
        };
        let mut control = self.control(
            kind,
            Subject::Target(target.clone()),
            format!(
                "{}: {} replicas pinned at {}",
                self.incident.runbook, endpoint, change.set_min
            ),
        );
        control.endpoint = Some(endpoint.clone());
        control.replicas = Some(change.set_min);
        control.min_replicas = Some(change.previous_min);
        control.max_replicas = Some(change.previous_max);
        let action_id = control.action_id.0.to_string();
        self.shared.writer.action(&control).await?;
        let mut entry = self.step_record(
            action,
            StepOutcome::Ok,
            format!(
                "{endpoint} pinned at {} replica(s) (was {}..{}); the API took it ({})",
                change.set_min, change.previous_min, change.previous_max, status.state
            ),
        );
        entry.action_id = Some(action_id);
        entry.http_status = Some(200);
        self.record(entry).await?;
        // The steps after it (the emergency limit) do not wait for the endpoint to settle.
        if !self.settling.contains(&endpoint) {
            self.settling.push(endpoint);
        }
        Ok(())
    }

    /// After the plan's steps: waits for each endpoint changed to settle, and records how it
    /// ended (a change the API took but the endpoint failed is a failed incident, not a
    /// quiet one).
    async fn check_settled(&mut self) -> Result<(), KafkaError> {
        let Some(api) = self.shared.hf_api.clone() else {
            return Ok(());
        };
        for endpoint in std::mem::take(&mut self.settling) {
            let settled = api
                .wait_settled(&endpoint, SETTLE_POLL, self.shared.settings.settle_timeout)
                .await;
            let detail = match settled {
                Ok(status) => format!(
                    "{endpoint} settled: {} at {}..{} replicas ({} ready)",
                    status.state, status.min_replica, status.max_replica, status.ready_replica
                ),
                Err(err) => format!("{endpoint} did not settle: {err}"),
            };
            let mut entry = self.entry(EntryKind::Report, detail);
            entry.step = Some(format!("settled/{endpoint}"));
            self.record(entry).await?;
        }
        Ok(())
    }

    /// The scaling an endpoint had before this incident first changed it.
    fn previous_scaling(&self, endpoint: &str) -> Option<(u32, u32)> {
        self.incident
            .plan
            .actions
            .iter()
            .filter(|action| action.endpoint.as_deref() == Some(endpoint))
            .filter_map(|action| self.incident.steps.get(&action.key))
            .filter_map(|state| state.started_data.as_deref())
            .filter_map(|data| serde_json::from_str::<ScalingChange>(data).ok())
            .map(|change| (change.previous_min, change.previous_max))
            .next()
    }

    async fn api_failed(
        &mut self,
        action: &PlannedAction,
        err: &HfApiError,
    ) -> Result<(), KafkaError> {
        let mut entry = self.step_record(action, StepOutcome::Failed, err.to_string());
        if let HfApiError::Status { status, .. } = err {
            entry.http_status = Some(*status);
        }
        self.record(entry).await
    }

    async fn emergency_limit(&mut self, action: &PlannedAction) -> Result<(), KafkaError> {
        let Some(subject) = action.subject.as_deref().and_then(|s| s.parse().ok()) else {
            return self
                .step_entry(action, StepOutcome::Skipped, "no source to limit")
                .await;
        };
        let runbook = self.shared.settings.runbook(self.incident.runbook);
        let duration = runbook.map_or(TimeDelta::minutes(30), |r| r.emergency_for);
        let mut control = self.control(
            ActionKind::EmergencyRateLimit,
            subject,
            format!("{}: {}", self.incident.runbook, action.detail),
        );
        control.limit_per_minute = action.limit_per_minute;
        control.expires_at = Some(control.ts + duration);
        let until = control.expires_at;
        self.publish_change(action, control, |_| {
            format!(
                "{} limited to {} requests/minute until {}",
                action.subject.as_deref().unwrap_or("?"),
                action.limit_per_minute.unwrap_or_default(),
                until.map(|at| at.to_rfc3339()).unwrap_or_default()
            )
        })
        .await
    }

    async fn revoke(&mut self, action: &PlannedAction) -> Result<(), KafkaError> {
        let Some(subject) = action.subject.as_deref().and_then(|s| s.parse().ok()) else {
            return self
                .step_entry(action, StepOutcome::Skipped, action.detail.clone())
                .await;
        };
        let control = self.control(
            ActionKind::RevokeToken,
            subject,
            format!(
                "{}: {}",
                self.incident.runbook,
                self.incident
                    .alert
                    .as_ref()
                    .map_or("compromised", |alert| alert.summary.as_str())
            ),
        );
        self.publish_change(action, control, |control| {
            format!("{} revoked on every proxy", control.subject)
        })
        .await
    }

    /// Writes `started`, publishes the action, writes the outcome.
    async fn publish_change(
        &mut self,
        action: &PlannedAction,
        control: ControlAction,
        done: impl Fn(&ControlAction) -> String,
    ) -> Result<(), KafkaError> {
        let started = self.step_record(action, StepOutcome::Started, action.detail.clone());
        self.record(started).await?;
        let mut entry = match self.shared.writer.action(&control).await {
            Ok(()) => self.step_record(action, StepOutcome::Ok, done(&control)),
            Err(err) => {
                // Not taken: left `started`, so the next run publishes it again.
                warn!(error = %err, "the broker did not take a runbook action");
                return Err(err);
            }
        };
        entry.action_id = Some(control.action_id.0.to_string());
        self.record(entry).await
    }

    async fn notify_owner(&mut self, action: &PlannedAction) -> Result<(), KafkaError> {
        let mut client = action
            .subject
            .as_deref()
            .and_then(|subject| subject.strip_prefix("client:"))
            .map(str::to_owned);
        if client.is_none()
            && let (Some(token), Some(reports)) = (
                self.incident.subject.strip_prefix("token:"),
                self.shared.reports.clone(),
            )
        {
            let since = self.incident.opened_at - TOKEN_HISTORY;
            if let Ok(Ok(found)) =
                tokio::time::timeout(REPORT_TIMEOUT, reports.client_of_token(token, since)).await
            {
                client = found;
            }
        }
        let Some(client) = client else {
            return self
                .step_entry(
                    action,
                    StepOutcome::Skipped,
                    "the token's client is not known (not in the archive yet): nobody to tell",
                )
                .await;
        };
        let receiver = action.receiver.clone().or_else(|| {
            self.shared
                .clients
                .iter()
                .find(|c| c.name == client)
                .and_then(|c| c.owner_receiver.clone())
        });
        let Some((receiver, (kind, notifier))) = receiver.and_then(|name| {
            self.shared
                .owners
                .get(&name)
                .cloned()
                .map(|found| (name, found))
        }) else {
            return self
                .step_entry(
                    action,
                    StepOutcome::Skipped,
                    format!("client {client} has no owner_receiver that exists: nobody to tell"),
                )
                .await;
        };
        let started = self.step_record(action, StepOutcome::Started, action.detail.clone());
        self.record(started).await?;
        let notification = owner_notification(&self.incident, &client, &receiver);
        let mut attempts: u32 = 0;
        let result = loop {
            attempts += 1;
            match notifier.notify(&notification).await {
                Ok(delivered) => break Ok(delivered),
                Err(err) if attempts < 3 && err.class == notify::FailureClass::Retryable => {
                    tokio::time::sleep(
                        err.retry_after
                            .unwrap_or(Duration::from_secs(u64::from(attempts)))
                            .min(Duration::from_secs(10)),
                    )
                    .await;
                }
                Err(err) => break Err(err),
            }
        };
        let record = delivery_record(&notification, kind, &result, attempts);
        if let Err(err) = self.shared.writer.notification(&record).await {
            warn!(error = %err, "cannot record the owner notification");
        }
        let entry = match result {
            Ok(_) => self.step_record(
                action,
                StepOutcome::Ok,
                format!("{client}'s owner told through {receiver}"),
            ),
            Err(err) => self.step_record(
                action,
                StepOutcome::Failed,
                format!("{client}'s owner could not be told through {receiver}: {err}"),
            ),
        };
        self.record(entry).await
    }

    /// Undoes what the incident changed, newest first: emergency limits are lifted, each
    /// endpoint gets back the scaling it had before the first change. Revocations stay.
    async fn undo(&mut self) -> Result<(), KafkaError> {
        let by = self.incident.undo_requested_by.clone().unwrap_or_default();
        let actions = self.incident.plan.actions.clone();
        let mut kept = Vec::new();
        for action in actions.iter().rev() {
            if self.incident.undone.contains(&action.key) {
                continue;
            }
            let Some(state) = self.incident.steps.get(&action.key).cloned() else {
                continue;
            };
            if !matches!(state.outcome, StepOutcome::Ok | StepOutcome::Started) {
                continue;
            }
            match action.step() {
                Some(Step::EmergencyRateLimit) => self.lift_limit(action, &by).await?,
                Some(Step::DisableAutoscaling | Step::ScaleDown) => {
                    self.restore_scaling(action, &by).await?;
                }
                Some(Step::Revoke) => kept.push(format!(
                    "{} stays revoked (warden control restore-token to take it back)",
                    action.subject.as_deref().unwrap_or("the token")
                )),
                _ => {}
            }
        }
        let mut entry = self.entry(
            EntryKind::Undone,
            if kept.is_empty() {
                format!("undo finished (asked by {by})")
            } else {
                format!("undo finished (asked by {by}); {}", kept.join("; "))
            },
        );
        entry.actor = self.incident.actor();
        self.record(entry).await
    }

    async fn lift_limit(&mut self, action: &PlannedAction, by: &str) -> Result<(), KafkaError> {
        let Some(subject) = action.subject.as_deref().and_then(|s| s.parse().ok()) else {
            return Ok(());
        };
        let control = self.control(
            ActionKind::LiftRateLimit,
            subject,
            format!("undo of {} asked by {by}", self.incident.id),
        );
        self.shared.writer.action(&control).await?;
        let mut entry = self.entry(
            EntryKind::Undone,
            format!(
                "emergency limit on {} lifted",
                action.subject.as_deref().unwrap_or("?")
            ),
        );
        entry.step = Some(action.key.clone());
        entry.action_id = Some(control.action_id.0.to_string());
        self.record(entry).await
    }

    async fn restore_scaling(
        &mut self,
        action: &PlannedAction,
        by: &str,
    ) -> Result<(), KafkaError> {
        let (Some(endpoint), Some(target)) = (action.endpoint.clone(), action.target.clone())
        else {
            return Ok(());
        };
        let Some((min, max)) = self.previous_scaling(&endpoint) else {
            return Ok(());
        };
        let same_endpoint: Vec<String> = self
            .incident
            .plan
            .actions
            .iter()
            .filter(|other| other.endpoint.as_deref() == Some(endpoint.as_str()))
            .map(|other| other.key.clone())
            .collect();
        let outcome = match &self.shared.hf_api {
            None => Err("no [hf_api] token".to_owned()),
            Some(api) => match api.set_scaling(&endpoint, min, max).await {
                Ok(_) => Ok(api
                    .wait_settled(&endpoint, SETTLE_POLL, self.shared.settings.settle_timeout)
                    .await
                    .map(|status: EndpointStatus| status.state)
                    .unwrap_or_else(|err| err.to_string())),
                Err(err) => Err(err.to_string()),
            },
        };
        match outcome {
            Ok(state) => {
                let mut control = self.control(
                    ActionKind::RestoreScaling,
                    Subject::Target(target),
                    format!("undo of {} asked by {by}", self.incident.id),
                );
                control.endpoint = Some(endpoint.clone());
                control.min_replicas = Some(min);
                control.max_replicas = Some(max);
                self.shared.writer.action(&control).await?;
                {
                    let mut claims = lock(&self.shared.claims);
                    if claims.get(&endpoint) == Some(&self.incident.id) {
                        claims.remove(&endpoint);
                    }
                }
                for key in same_endpoint {
                    let mut entry = self.entry(
                        EntryKind::Undone,
                        format!("{endpoint} scaling restored to {min}..{max} ({state})"),
                    );
                    entry.step = Some(key);
                    entry.action_id = Some(control.action_id.0.to_string());
                    self.record(entry).await?;
                }
                Ok(())
            }
            Err(err) => {
                // Recorded, not marked undone: the next run tries again.
                let mut entry = self.entry(
                    EntryKind::Report,
                    format!("restoring {endpoint} to {min}..{max} failed: {err}"),
                );
                entry.step = Some(format!("undo/{}", action.key));
                self.record(entry).await?;
                // Tried again by the next run; not sooner (each try is an entry).
                tokio::time::sleep(UNDO_RETRY).await;
                Err(KafkaError::Canceled)
            }
        }
    }

    /// Publishes (or resolves) the incident's notification when what it says changed.
    async fn announce(&mut self) {
        let (status, text) = announcement(&self.incident);
        if self.incident.last_announced.as_deref() == Some(text.as_str()) {
            return;
        }
        let severity = self
            .incident
            .alert
            .as_ref()
            .map_or(Severity::Warning, |alert| alert.severity);
        let subject = self.incident.subject.parse().unwrap_or(Subject::Global);
        let now = Utc::now();
        let mut alert = Alert::firing(RUNBOOK_DETECTOR, severity, subject, (now, now));
        alert.status = status;
        alert.dedup_key = format!("{RUNBOOK_DETECTOR}/{}", self.incident.id);
        alert.environment = self.incident.environment.clone();
        alert.summary = text.clone();
        alert.unit = "steps".to_owned();
        alert.observed = self.incident.steps.len() as f64;
        if let Some(opening) = &self.incident.alert {
            alert.evidence = opening.evidence.clone();
        }
        let alert = alert.with_derived_id();
        if let Err(err) = self.shared.alerts.publish(&alert).await {
            warn!(error = %err, "cannot publish the incident's notification");
            return;
        }
        let mut entry = self.entry(EntryKind::Report, text);
        entry.step = Some(ANNOUNCED.to_owned());
        entry.alert_dedup_key = Some(alert.dedup_key.clone());
        entry.alert_id = Some(alert.alert_id.0.to_string());
        let _ = self.record(entry).await;
    }

    fn entry(&self, kind: EntryKind, detail: impl Into<String>) -> IncidentEntry {
        let mut entry = IncidentEntry::new(
            &self.incident.id,
            self.incident.runbook.as_str(),
            kind,
            detail,
            self.incident.actor(),
        );
        entry.alert_dedup_key = Some(self.incident.alert_dedup_key.clone());
        entry.environment = self.incident.environment.clone();
        entry
    }

    fn step_record(
        &self,
        action: &PlannedAction,
        outcome: StepOutcome,
        detail: impl Into<String>,
    ) -> IncidentEntry {
        let mut entry = self.entry(EntryKind::Step, detail);
        entry.step = Some(action.key.clone());
        entry.outcome = Some(outcome);
        entry.subject = action.subject.clone().or_else(|| {
            action
                .target
                .as_ref()
                .map(|target| format!("target:{target}"))
        });
        entry
    }

    async fn step_entry(
        &mut self,
        action: &PlannedAction,
        outcome: StepOutcome,
        detail: impl Into<String>,
    ) -> Result<(), KafkaError> {
        let entry = self.step_record(action, outcome, detail);
        self.record(entry).await
    }

    /// A control action of this incident's runbook.
    fn control(&self, kind: ActionKind, subject: Subject, reason: String) -> ControlAction {
        let mut action = ControlAction::new(kind, subject, reason, self.incident.actor());
        action.alert_dedup_key = Some(self.incident.alert_dedup_key.clone());
        action.runbook = Some(self.incident.runbook.as_str().to_owned());
        action.incident_id = Some(self.incident.id.clone());
        action.environment = self.incident.environment.clone();
        action
    }

    /// Writes an entry, then folds it into this task's copy and the loop's.
    async fn record(&mut self, entry: IncidentEntry) -> Result<(), KafkaError> {
        self.shared.writer.entry(&entry).await?;
        self.incident.apply(&entry);
        let _ = self.shared.applied.send(entry);
        Ok(())
    }
}

/// The replicas an endpoint runs now (what `disable_autoscaling` pins), within its bounds.
fn running_replicas(status: &EndpointStatus) -> u32 {
    let running = if status.target_replica > 0 {
        status.target_replica
    } else {
        status.ready_replica
    };
    running.clamp(
        status.min_replica,
        status.max_replica.max(status.min_replica),
    )
}

/// What the incident's notification says, and whether it is still firing.
fn announcement(incident: &Incident) -> (AlertStatus, String) {
    let id = &incident.id;
    let mut lines = Vec::new();
    for action in &incident.plan.actions {
        let Some(step) = action.step() else { continue };
        if !step.changes_something() {
            continue;
        }
        let Some(state) = incident.steps.get(&action.key) else {
            continue;
        };
        lines.push(step_line(state));
    }
    let mode = match incident.mode {
        Mode::DryRun => " (dry run: nothing was changed)",
        Mode::Approve => " (changes to infrastructure wait for approval)",
        Mode::Auto => "",
    };
    let status = if incident.undo_finished || incident.expired || incident.firing.is_empty() {
        AlertStatus::Resolved
    } else {
        AlertStatus::Firing
    };
    let closing = if incident.undo_finished {
        " — undone"
    } else if incident.expired {
        " — the plan expired unapproved"
    } else {
        ""
    };
    let text = format!(
        "incident {id}: runbook {}{mode}{closing}. {}. Timeline: `warden incident show {id}`",
        incident.runbook,
        if lines.is_empty() {
            "No change planned".to_owned()
        } else {
            lines.join("; ")
        },
    );
    (status, text)
}

fn step_line(state: &StepState) -> String {
    match state.outcome {
        StepOutcome::Planned | StepOutcome::AwaitingApproval => state.detail.clone(),
        outcome => format!("{} [{}]", state.detail, outcome.as_str()),
    }
}

/// What the owner of a revoked token's client is told.
fn owner_notification(incident: &Incident, client: &str, receiver: &str) -> Notification {
    let now = Utc::now();
    let subject: Subject = incident.subject.parse().unwrap_or(Subject::Global);
    let mut alert = Alert::firing(
        RUNBOOK_DETECTOR,
        Severity::Critical,
        subject.clone(),
        (now, now),
    );
    alert.dedup_key = format!("{RUNBOOK_DETECTOR}/{}/owner", incident.id);
    alert.environment = incident.environment.clone();
    let why = incident
        .alert
        .as_ref()
        .map_or_else(String::new, |alert| format!(" ({})", alert.summary));
    alert.summary = format!(
        "A key of client {client} ({subject}) was revoked by Warden as compromised{why}, \
         incident {id}. To rotate: 1) make a replacement with `warden keys new {client}` \
         (or `warden control add-key --client {client} --new`, which every proxy admits at \
         once); 2) put it in the applications' secrets and redeploy them; 3) the old key \
         stays refused, and calls still made with it show up as revoked_token alerts on \
         the incident (`warden incident show {id}`).",
        id = incident.id
    );
    let alert = Arc::new(alert.with_derived_id());
    let group_key = format!("runbook/{}/owner", incident.id);
    let content_sha256 = {
        use sha2::{Digest, Sha256};
        hex::encode(Sha256::digest(alert.summary.as_bytes()))
    };
    Notification {
        receiver: receiver.to_owned(),
        group_key: group_key.clone(),
        group_labels: Vec::new(),
        reason: NotifyReason::Firing,
        alerts: vec![alert],
        entry: LogEntry {
            receiver: receiver.to_owned(),
            group_key,
            firing: Default::default(),
            resolved: Default::default(),
            sent_at: now,
        },
        told_before: Default::default(),
        previous_sent_at: None,
        content_sha256,
    }
}

/// Reads `warden.incidents` to its end and folds it.
async fn read_incidents(cluster: &KafkaCluster) -> Result<Incidents, KafkaError> {
    let reader = TopicReader::from_beginning(cluster, &cluster.topics().incidents).await?;
    let mut incidents = Incidents::default();
    for record in reader.read_to_end(READ_PATIENCE).await? {
        match IncidentEntry::decode(&record.payload) {
            Ok(entry) => {
                incidents.apply(&entry);
            }
            Err(err) => warn!(error = %err, "skipping an unreadable incident entry"),
        }
    }
    Ok(incidents)
}

/// Follows `warden.incidents` for as long as the engine runs: operators' approvals and undo
/// requests (and the engine's own entries, which the fold counts once) reach the loop.
async fn follow_incidents(
    cluster: KafkaCluster,
    entries: mpsc::UnboundedSender<IncidentEntry>,
    shutdown: CancellationToken,
) {
    let topic = cluster.topics().incidents.clone();
    while !shutdown.is_cancelled() {
        let reader = match TopicReader::from_beginning(&cluster, &topic).await {
            Ok(reader) => reader,
            Err(err) => {
                debug!(error = %err, "the incidents topic is not readable yet");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    () = shutdown.cancelled() => return,
                }
            }
        };
        loop {
            let record = tokio::select! {
                record = reader.recv() => record,
                () = shutdown.cancelled() => return,
            };
            let Ok(record) = record else { break };
            match IncidentEntry::decode(&record.payload) {
                Ok(entry) => {
                    if entries.send(entry).is_err() {
                        return;
                    }
                }
                Err(err) => warn!(error = %err, "skipping an unreadable incident entry"),
            }
        }
    }
}

/// The engine's writes: incident entries, control actions, notification records — each
/// awaited (an entry is on the broker before the change it announces is made).
struct Writer {
    producer: DeliveringProducer,
    incidents: String,
    control: String,
    notifications: String,
}

impl Writer {
    fn new(cluster: &KafkaCluster) -> Result<Self, KafkaSetupError> {
        let topics = cluster.topics();
        Ok(Self {
            producer: DeliveringProducer::from_config(&cluster.producer_config())?,
            incidents: topics.incidents.clone(),
            control: topics.control.clone(),
            notifications: topics.notifications.clone(),
        })
    }

    async fn send(&self, topic: &str, key: &[u8], payload: &[u8]) -> Result<(), KafkaError> {
        match tokio::time::timeout(
            WRITE_TIMEOUT,
            self.producer
                .deliver(Outgoing::new(topic, key, payload), WRITE_TIMEOUT),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(KafkaError::Canceled),
        }
    }

    async fn entry(&self, entry: &IncidentEntry) -> Result<(), KafkaError> {
        let payload = serde_json::to_vec(entry).unwrap_or_default();
        let result = self
            .send(&self.incidents, entry.incident_id.as_bytes(), &payload)
            .await;
        if let Err(err) = &result {
            warn!(incident = %entry.incident_id, error = %err, "an incident entry was not written");
        }
        result
    }

    async fn action(&self, action: &ControlAction) -> Result<(), KafkaError> {
        let payload = serde_json::to_vec(action).unwrap_or_default();
        self.send(&self.control, action.state_key().as_bytes(), &payload)
            .await
    }

    async fn notification(&self, record: &NotificationRecord) -> Result<(), KafkaError> {
        let payload = serde_json::to_vec(record).unwrap_or_default();
        self.send(&self.notifications, record.group_key.as_bytes(), &payload)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_refuses_past_its_cap_and_frees_up_after_an_hour() {
        let mut budget = ActionBudget::default();
        let start = Utc::now();
        assert!(budget.try_take(2, start));
        assert!(budget.try_take(2, start));
        assert!(!budget.try_take(2, start + TimeDelta::minutes(59)));
        assert!(budget.try_take(2, start + TimeDelta::minutes(61)));
    }

    /// An incident whose plan scales `endpoint`, its freeze step at `outcome`.
    fn scaling_incident(incidents: &mut Incidents, endpoint: &str, outcome: StepOutcome) -> String {
        use super::super::incident::Plan;
        let mut freeze = PlannedAction::new(Step::DisableAutoscaling, "target:llama", "pin");
        freeze.endpoint = Some(endpoint.to_owned());
        freeze.target = Some("llama".to_owned());
        let id = format!("inc-{}", uuid::Uuid::new_v4().simple());
        let mut opened = IncidentEntry::new(&id, "runaway_cost", EntryKind::Opened, "o", "r");
        opened.data = serde_json::to_string(&OpenedData {
            plan: Plan {
                actions: vec![freeze.clone()],
            },
            alert: None,
        })
        .ok();
        incidents.apply(&opened);
        let mut step = IncidentEntry::new(&id, "runaway_cost", EntryKind::Step, "s", "r");
        step.step = Some(freeze.key.clone());
        step.outcome = Some(outcome);
        incidents.apply(&step);
        id
    }

    #[test]
    fn an_endpoint_is_held_by_the_open_incident_that_scaled_it() {
        let mut incidents = Incidents::default();
        let holder = scaling_incident(&mut incidents, "org/a", StepOutcome::Ok);
        scaling_incident(&mut incidents, "org/b", StepOutcome::Planned);
        let claims = claims_of(&incidents);
        assert_eq!(claims.get("org/a"), Some(&holder));
        assert!(!claims.contains_key("org/b"), "a plan holds nothing");
        let mut undone = IncidentEntry::new(&holder, "runaway_cost", EntryKind::Undone, "u", "r");
        undone.step = None;
        incidents.apply(&undone);
        assert!(
            claims_of(&incidents).is_empty(),
            "an undone incident lets go"
        );
    }

    #[test]
    fn pinning_keeps_what_runs_within_the_bounds() {
        let status = |min, max, target, ready| EndpointStatus {
            state: "running".into(),
            min_replica: min,
            max_replica: max,
            ready_replica: ready,
            target_replica: target,
        };
        assert_eq!(running_replicas(&status(1, 8, 5, 4)), 5);
        assert_eq!(running_replicas(&status(1, 8, 0, 3)), 3);
        assert_eq!(running_replicas(&status(2, 8, 0, 0)), 2);
    }
}
