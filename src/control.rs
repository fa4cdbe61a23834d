//! `warden control`: operator actions published to `warden.control` — every proxy replica
//! applies them within a second or two, and the archiver keeps them in the `actions` table —
//! and `control list`, what is in force now.

use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, TimeDelta, Utc};
use warden_ingest::action::{ActionKind, ControlAction};
use warden_ingest::alert::Subject;
use warden_ingest::control::ControlState;
use warden_ingest::kafka::{DeliveringProducer, KafkaCluster, Outgoing, TopicReader};
use warden_ingest::table_record::TableRecord;

pub use warden_sinks::runbooks::config::parse_duration;

use crate::config::ValidatedConfig;

/// How long the command waits for the broker to take the action.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(15);

/// An operator's action, as the command line gave it.
#[derive(Debug, Clone)]
pub struct OperatorAction {
    pub action: ActionKind,
    pub subject: Subject,
    pub reason: String,
    pub by: String,
    pub requests_per_minute: Option<u64>,
    pub tokens_per_minute: Option<u64>,
    pub duration: Option<TimeDelta>,
    /// When it stops applying, given as an instant (a key's `not_after`).
    pub expires_at: Option<DateTime<Utc>>,
    /// `add_key` / `remove_key`: which key.
    pub key: Option<KeyToAdd>,
}

/// The key of an `add-key` or `remove-key`.
#[derive(Debug, Clone)]
pub enum KeyToAdd {
    /// Make one now (printed once, after the action is published).
    New,
    /// A key's SHA-256, in hex.
    Given(String),
}

fn cluster_of(config: &ValidatedConfig) -> anyhow::Result<KafkaCluster> {
    anyhow::ensure!(
        !config.kafka.is_embedded(),
        "warden control publishes to the proxies' broker: set [kafka].brokers (the embedded \
         broker lives inside one `warden up` process)"
    );
    Ok(KafkaCluster::new(&config.kafka, None))
}

/// Publishes `request` and returns once the broker has it.
pub async fn publish(config: &ValidatedConfig, request: OperatorAction) -> anyhow::Result<()> {
    anyhow::ensure!(!request.reason.trim().is_empty(), "--reason must say why");
    anyhow::ensure!(!request.by.trim().is_empty(), "--by must name who decides");
    if let Subject::Client(name) = &request.subject {
        let clients = &config.proxy.clients;
        anyhow::ensure!(
            clients.is_empty() || clients.iter().any(|client| client.name == *name),
            "no client {name:?} in [[proxy.clients]]: the proxies would not know it"
        );
    }
    let mut new_key = None;
    let key_sha256 = match request.key.clone() {
        None => None,
        Some(KeyToAdd::Given(digest)) => {
            let digest = digest.trim().to_ascii_lowercase();
            anyhow::ensure!(
                digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()),
                "--key-sha256 must be 64 hex digits (a key's SHA-256, never the key)"
            );
            Some(digest)
        }
        Some(KeyToAdd::New) => {
            let Subject::Client(name) = &request.subject else {
                anyhow::bail!("keys belong to clients");
            };
            let made = crate::keys::new_key(name)?;
            let digest = made.key_sha256.clone();
            new_key = Some(made);
            Some(digest)
        }
    };
    let cluster = cluster_of(config)?;
    tokio::time::timeout(DELIVERY_TIMEOUT, cluster.wait_until_ready())
        .await
        .context("the broker did not answer")?;
    let mut action = ControlAction::new(
        request.action,
        request.subject,
        request.reason,
        format!("operator:{}", request.by.trim()),
    );
    action.limit_per_minute = request.requests_per_minute;
    action.tokens_per_minute = request.tokens_per_minute;
    action.expires_at = request
        .duration
        .map(|duration| action.ts + duration)
        .or(request.expires_at);
    action.key_sha256 = key_sha256;
    let producer = DeliveringProducer::from_config(&cluster.producer_config())
        .context("creating the producer")?;
    let key = action.state_key();
    let payload = serde_json::to_vec(&action).context("encoding the action")?;
    let topic = &cluster.topics().control;
    tokio::time::timeout(
        DELIVERY_TIMEOUT,
        producer.deliver(
            Outgoing::new(topic, key.as_bytes(), &payload),
            DELIVERY_TIMEOUT,
        ),
    )
    .await
    .context("the broker did not take the action in time")?
    .context("publishing the action")?;
    println!(
        "{} {} published ({}){}",
        action.action.as_str(),
        action.subject,
        action.action_id.0,
        action
            .expires_at
            .map(|until| format!(", until {}", until.to_rfc3339()))
            .unwrap_or_default()
    );
    if let Some(made) = new_key {
        println!(
            "\nClient key (shown only now; give it to the client, every proxy admits it):\n\n    {}\n",
            made.key
        );
    }
    Ok(())
}

/// Prints one line per action in force: the control topic read to its end.
pub async fn list(config: &ValidatedConfig) -> anyhow::Result<()> {
    let cluster = cluster_of(config)?;
    tokio::time::timeout(DELIVERY_TIMEOUT, cluster.wait_until_ready())
        .await
        .context("the broker did not answer")?;
    let reader = TopicReader::from_beginning(&cluster, &cluster.topics().control)
        .await
        .context("reading the control topic")?;
    let records = reader
        .read_to_end(DELIVERY_TIMEOUT)
        .await
        .context("reading the control topic")?;
    let mut state = ControlState::default();
    for record in records {
        match ControlAction::decode(&record.payload) {
            Ok(action) => {
                state.apply(&action);
            }
            Err(err) => eprintln!(
                "skipping an unreadable action at {}:{}: {err}",
                record.partition, record.offset
            ),
        }
    }
    let now = Utc::now();
    let mut count = 0;
    for action in state.in_force(now) {
        count += 1;
        let limits = [
            action.limit_per_minute.map(|n| format!("{n} requests/min")),
            action.tokens_per_minute.map(|n| format!("{n} tokens/min")),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(", ");
        println!(
            "{} {}{}{} by {} since {}{} — {}",
            action.action.as_str(),
            action.subject,
            action
                .key_sha256
                .as_deref()
                .map(|digest| format!(" key {digest}"))
                .unwrap_or_default(),
            if limits.is_empty() {
                String::new()
            } else {
                format!(" ({limits})")
            },
            action.actor,
            action.ts.to_rfc3339(),
            action
                .expires_at
                .map(|until| format!(" until {}", until.to_rfc3339()))
                .unwrap_or_default(),
            action.reason
        );
    }
    if count == 0 {
        println!("nothing in force");
    }
    Ok(())
}
