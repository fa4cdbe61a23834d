//! Live control of every replica: each proxy reads `warden.control` from its beginning
//! (outside any consumer group, so every replica sees every action) and applies what is in
//! force — revoked tokens and clients (401 `revoked_api_key`), emergency rate limits (429
//! `emergency_rate_limit`), disabled targets (their fallbacks serve, else 503
//! `target_disabled`).
//!
//! The state is also kept on local disk (`[proxy].control_state_file`, rewritten on every
//! change by rename): a proxy restarted while Kafka is down still refuses a revoked key. On
//! start the disk state applies at once; the topic, read from its beginning, is then folded
//! on top in order, which ends in the same state the topic holds.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tracing::{debug, info, warn};
use warden_ingest::action::{ActionKind, ControlAction};
use warden_ingest::alert::Subject;
use warden_ingest::control::ControlState;
use warden_ingest::kafka::{ConsumedRecord, KafkaCluster, KafkaError, TopicReader};
use warden_ingest::table_record::TableRecord;

use crate::policy::limits::{
    CallSubjects, LimitSubject, Limiter, RateLimit, Throttled, TokenEstimate, Window,
};

/// A control record's action; an unreadable one is reported and skipped.
fn decode(record: &ConsumedRecord) -> Option<ControlAction> {
    match ControlAction::decode(&record.payload) {
        Ok(action) => Some(action),
        Err(err) => {
            warn!(
                partition = record.partition,
                offset = record.offset,
                error = %err,
                "skipping an unreadable control action"
            );
            None
        }
    }
}

/// The control state this replica applies, and the emergency limits' cells.
#[derive(Debug)]
pub struct ControlPlane {
    state: RwLock<ControlState>,
    /// One limiter per emergency limit in force, by its state key (kept while the limit
    /// stands, so a repeated action does not reset its cells).
    emergency: Mutex<HashMap<String, (ControlAction, Arc<Limiter>)>>,
    /// The keys `add_key` gave, by SHA-256: looked up when a key is no configured one's.
    added_keys: RwLock<HashMap<[u8; 32], AddedKey>>,
    state_file: Option<PathBuf>,
}

/// A key given through the control topic: whose, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AddedKey {
    pub(crate) client: String,
    pub(crate) not_after: Option<DateTime<Utc>>,
}

impl ControlPlane {
    /// A control plane with nothing in force and nothing kept on disk (tests, replays).
    pub fn in_memory() -> Arc<Self> {
        Arc::new(Self {
            state: RwLock::new(ControlState::default()),
            emergency: Mutex::new(HashMap::new()),
            added_keys: RwLock::new(HashMap::new()),
            state_file: None,
        })
    }

    /// The control plane of a proxy, starting from what `state_file` kept (an unreadable
    /// file is reported and ignored: the topic rebuilds the state).
    pub fn load(state_file: &Path) -> Arc<Self> {
        let plane = Self {
            state: RwLock::new(ControlState::default()),
            emergency: Mutex::new(HashMap::new()),
            added_keys: RwLock::new(HashMap::new()),
            state_file: Some(state_file.to_owned()),
        };
        match std::fs::read(state_file) {
            Ok(bytes) => match serde_json::from_slice::<Vec<ControlAction>>(&bytes) {
                Ok(actions) => {
                    let mut state = plane.state.write().unwrap_or_else(|p| p.into_inner());
                    for action in &actions {
                        state.apply(action);
                    }
                    info!(
                        file = %state_file.display(),
                        actions = actions.len(),
                        "control state loaded from disk"
                    );
                }
                Err(err) => warn!(
                    file = %state_file.display(),
                    error = %err,
                    "the kept control state is unreadable; rebuilding it from the control topic"
                ),
            },
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => {
                warn!(file = %state_file.display(), error = %err, "cannot read the kept control state")
            }
        }
        let plane = Arc::new(plane);
        plane.sync_derived_state();
        plane
    }

    /// Applies one action; returns whether the state changed (and then keeps it on disk).
    pub fn apply(&self, action: &ControlAction) -> bool {
        let changed = {
            let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
            state.apply(action)
        };
        if changed {
            info!(
                action = action.action.as_str(),
                subject = %action.subject,
                actor = %action.actor,
                reason = %action.reason,
                "control action applied"
            );
            self.sync_derived_state();
            self.persist();
        }
        changed
    }

    /// Follows the control topic until the process ends. Each time it connects (at start,
    /// and after the cluster stopped answering) it reads the topic from its beginning into
    /// a fresh state, which replaces the one in use only once it has caught up — so an
    /// action long undone (a revocation since restored) never applies again for a moment —
    /// then applies each new action as it comes.
    pub async fn follow(self: Arc<Self>, cluster: KafkaCluster) {
        let topic = cluster.topics().control.clone();
        let mut backoff = Duration::from_millis(250);
        loop {
            match TopicReader::from_beginning(&cluster, &topic).await {
                Ok(reader) => {
                    backoff = Duration::from_millis(250);
                    if let Err(err) = self.follow_reader(&reader).await {
                        warn!(error = %err, "reading the control topic failed; reconnecting");
                    }
                }
                Err(err) => debug!(error = %err, "the control topic is not readable yet"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// Catches up on the whole topic, swaps the state in, then applies as actions come.
    async fn follow_reader(&self, reader: &TopicReader) -> Result<(), KafkaError> {
        let mut behind: Vec<(i32, i64)> = reader
            .ends()
            .await?
            .into_iter()
            .filter(|(_, end)| *end > 0)
            .collect();
        if behind.is_empty() {
            let kept = self.in_force().len();
            if kept > 0 {
                // A topic with nothing in it next to a state that had actions: the broker
                // lost its data, or this is another cluster. Keeping what was decided is
                // the safe side (a revoked key stays refused).
                warn!(
                    kept,
                    "the control topic is empty but actions are kept on disk: they stay in force"
                );
            }
        }
        let mut caught_up = if behind.is_empty() {
            self.state.read().unwrap_or_else(|p| p.into_inner()).clone()
        } else {
            ControlState::default()
        };
        while !behind.is_empty() {
            let record = reader.recv().await?;
            if let Some(action) = decode(&record) {
                caught_up.apply(&action);
            }
            behind.retain(|(partition, end)| {
                !(*partition == record.partition && record.offset + 1 >= *end)
            });
        }
        let changed = {
            let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
            let changed = *state != caught_up;
            *state = caught_up;
            changed
        };
        if changed {
            info!("control state caught up with the control topic");
            self.sync_derived_state();
            self.persist();
        }
        loop {
            let record = reader.recv().await?;
            if let Some(action) = decode(&record) {
                self.apply(&action);
            }
        }
    }
    /// The revocation standing against a token (by id) or its client, if any.
    pub(crate) fn revoked(&self, token_id: Option<&str>, client: Option<&str>) -> Option<String> {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        state
            .is_revoked(token_id, client)
            .map(|action| format!("{} revoked: {}", action.subject, action.reason))
    }

    /// Whether `target` is disabled.
    pub(crate) fn disabled(&self, target: &str) -> bool {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        state.is_disabled(target).is_some()
    }

    /// Whether any emergency limit stands (else [`admit`](Self::admit) has nothing to do).
    pub(crate) fn has_emergency_limits(&self) -> bool {
        !self
            .emergency
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    /// Charges the call to every emergency limit in force that applies to it.
    pub(crate) fn admit(
        &self,
        subjects: &CallSubjects<'_>,
        country: Option<&str>,
        estimate: &TokenEstimate,
    ) -> Result<(), Throttled> {
        let now = Utc::now();
        let limiters: Vec<(ControlAction, Arc<Limiter>)> = {
            let emergency = self.emergency.lock().unwrap_or_else(|p| p.into_inner());
            if emergency.is_empty() {
                return Ok(());
            }
            emergency.values().cloned().collect()
        };
        for (action, limiter) in limiters {
            if !action.is_in_force(now) {
                continue;
            }
            let applies = match &action.subject {
                Subject::Global => true,
                Subject::Target(id) => subjects.target == Some(id.as_str()),
                Subject::Client(name) => subjects.client == Some(name.as_str()),
                Subject::Token(token) => subjects.token == Some(token.as_str()),
                Subject::Ip(ip) => subjects.ip == Some(ip.as_str()),
                Subject::Country(code) => country == Some(code.as_str()),
            };
            if !applies {
                continue;
            }
            // The limiter's one limit is global: it is this subject's own.
            match limiter.admit(&CallSubjects::default(), estimate) {
                // Emergency limits count tokens as reserved at admission: no settlement.
                Ok(_) => {}
                Err(mut throttled) => {
                    throttled.reason = format!(
                        "emergency rate limit on {}: {} ({})",
                        action.subject, throttled.reason, action.reason
                    );
                    return Err(throttled);
                }
            }
        }
        Ok(())
    }

    /// Every action standing now (for tests and diagnostics).
    pub fn in_force(&self) -> Vec<ControlAction> {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        state.in_force(Utc::now()).cloned().collect()
    }

    /// The client a key given through the control topic belongs to, by its SHA-256.
    pub(crate) fn added_key(&self, sha256: &[u8; 32]) -> Option<AddedKey> {
        let keys = self.added_keys.read().unwrap_or_else(|p| p.into_inner());
        if keys.is_empty() {
            return None;
        }
        keys.get(sha256).cloned()
    }

    /// Rebuilds what is derived from the state: the emergency limiters, the added keys.
    fn sync_derived_state(&self) {
        self.sync_emergency_limits();
        let keys: HashMap<[u8; 32], AddedKey> = {
            let state = self.state.read().unwrap_or_else(|p| p.into_inner());
            state
                .added_keys()
                .map(|key| {
                    let added = AddedKey {
                        client: key.client.to_owned(),
                        not_after: key.not_after,
                    };
                    (key.sha256, added)
                })
                .collect()
        };
        *self.added_keys.write().unwrap_or_else(|p| p.into_inner()) = keys;
    }

    /// Makes the emergency limiters match the standing emergency limits.
    fn sync_emergency_limits(&self) {
        let standing: Vec<ControlAction> = {
            let state = self.state.read().unwrap_or_else(|p| p.into_inner());
            state
                .standing()
                .filter(|action| action.action == ActionKind::EmergencyRateLimit)
                .cloned()
                .collect()
        };
        let mut emergency = self.emergency.lock().unwrap_or_else(|p| p.into_inner());
        emergency.retain(|key, (kept, _)| {
            standing
                .iter()
                .any(|action| action.state_key() == *key && action == kept)
        });
        for action in standing {
            let key = action.state_key();
            if emergency.contains_key(&key) {
                continue;
            }
            let minute = Duration::from_secs(60);
            let window = |limit: Option<u64>| {
                limit
                    .filter(|limit| *limit > 0)
                    .map(|limit| Window {
                        period: minute,
                        limit,
                    })
                    .into_iter()
                    .collect::<Vec<_>>()
            };
            let limit = RateLimit {
                subject: LimitSubject::Global,
                matches: None,
                requests: window(action.limit_per_minute),
                tokens: window(action.tokens_per_minute),
                default_max_tokens: crate::policy::limits::DEFAULT_MAX_TOKENS,
                max_subjects: 1,
            };
            if limit.requests.is_empty() && limit.tokens.is_empty() {
                warn!(subject = %action.subject, "an emergency rate limit without a limit is ignored");
                continue;
            }
            emergency.insert(key, (action, Limiter::new(vec![limit])));
        }
    }

    /// Writes the standing actions to the state file (a temporary file, then a rename).
    fn persist(&self) {
        let Some(path) = &self.state_file else {
            return;
        };
        let actions: Vec<ControlAction> = {
            let state = self.state.read().unwrap_or_else(|p| p.into_inner());
            state.standing().cloned().collect()
        };
        let write = || -> std::io::Result<()> {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let temporary = path.with_extension("json.tmp");
            let bytes = serde_json::to_vec_pretty(&actions).map_err(std::io::Error::other)?;
            std::fs::write(&temporary, bytes)?;
            std::fs::File::open(&temporary)?.sync_all()?;
            std::fs::rename(&temporary, path)
        };
        if let Err(err) = write() {
            warn!(file = %path.display(), error = %err, "cannot keep the control state on disk");
        }
    }
}
