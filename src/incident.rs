//! `warden incident list|show|approve|undo`, and the archive reports the runbooks attach to
//! incidents (the saved investigations of `warden sql --saved`, run through DataFusion).
//!
//! Incidents are read from `warden.incidents` on the configured brokers; with the embedded
//! broker (which lives inside one `warden up` process) `list` and `show` read the archive's
//! `incidents` table instead. Approvals and undo requests are entries on the same topic: the
//! runbook engine that holds the alerts acts on them, and the command waits to print what
//! it did.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use futures::FutureExt;
use futures::future::BoxFuture;
use warden_ingest::archive_store::S3Options;
use warden_ingest::incident::{EntryKind, IncidentEntry, StepOutcome};
use warden_ingest::kafka::{DeliveringProducer, KafkaCluster, Outgoing, TopicReader};
use warden_ingest::table_record::TableRecord;
use warden_sinks::runbooks::config::Mode;
use warden_sinks::runbooks::incident::{ANNOUNCED, Incident, Incidents};
use warden_sinks::runbooks::reports::{ArchiveReports, Report};
use warden_sql::saved::{self, TimeRange};
use warden_sql::{ArchiveSession, OutputFormat};

use crate::config::ValidatedConfig;

const TIMEOUT: Duration = Duration::from_secs(15);
/// How long `approve` and `undo` wait for the engine to report what it did.
const ACT_WAIT: Duration = Duration::from_secs(60);

/// The saved investigations, run over the archive.
#[derive(Debug, Clone)]
pub struct SqlReports {
    url: String,
    s3: S3Options,
}

impl SqlReports {
    pub fn new(config: &ValidatedConfig) -> Self {
        Self {
            url: config.archive.url.clone(),
            s3: config.archive.s3.clone(),
        }
    }

    async fn run(&self, sql: String) -> Result<Report, String> {
        let session = ArchiveSession::open(&self.url, &self.s3)
            .map_err(|err| err.to_string())?
            .with_views()
            .await
            .map_err(|err| err.to_string())?;
        let result = session.query(&sql).await.map_err(|err| err.to_string())?;
        let mut table = Vec::new();
        warden_sql::write_result(&result, OutputFormat::Table, &mut table)
            .map_err(|err| err.to_string())?;
        let mut json = Vec::new();
        warden_sql::write_result(&result, OutputFormat::Json, &mut json)
            .map_err(|err| err.to_string())?;
        let rows = String::from_utf8_lossy(&json)
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect();
        Ok(Report {
            sql,
            table: String::from_utf8_lossy(&table).trim_end().to_owned(),
            rows,
        })
    }
}

impl ArchiveReports for SqlReports {
    fn saved<'a>(
        &'a self,
        name: &'a str,
        since: DateTime<Utc>,
        params: BTreeMap<String, String>,
    ) -> BoxFuture<'a, Result<Report, String>> {
        async move {
            let query = saved::find(name)?;
            let sql = query.render(&TimeRange { since, until: None }, &params)?;
            self.run(sql).await
        }
        .boxed()
    }

    fn client_of_token<'a>(
        &'a self,
        token_id: &'a str,
        since: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Option<String>, String>> {
        async move {
            let range = TimeRange { since, until: None }.predicate();
            let literal = token_id.replace('\'', "''");
            let sql = format!(
                "SELECT client.name AS client FROM events WHERE client.token_id = '{literal}' \
                 AND client.name IS NOT NULL AND {range} LIMIT 1"
            );
            let report = self.run(sql).await?;
            Ok(report
                .rows
                .first()
                .and_then(|row| row.get("client"))
                .and_then(|client| client.as_str())
                .map(str::to_owned))
        }
        .boxed()
    }
}

async fn cluster_of(config: &ValidatedConfig) -> anyhow::Result<KafkaCluster> {
    let cluster = KafkaCluster::new(&config.kafka, None);
    tokio::time::timeout(TIMEOUT, cluster.wait_until_ready())
        .await
        .context("the broker did not answer")?;
    Ok(cluster)
}

/// Every entry: from the topic, or with the embedded broker from the archive.
async fn read_entries(config: &ValidatedConfig) -> anyhow::Result<Vec<IncidentEntry>> {
    if config.kafka.is_embedded() {
        let session = ArchiveSession::open(&config.archive.url, &config.archive.s3)?;
        let result = session.query("SELECT * FROM incidents ORDER BY ts").await?;
        let mut json = Vec::new();
        warden_sql::write_result(&result, OutputFormat::Json, &mut json)?;
        return Ok(String::from_utf8_lossy(&json)
            .lines()
            .filter_map(|line| IncidentEntry::decode(line.as_bytes()).ok())
            .collect());
    }
    let cluster = cluster_of(config).await?;
    let reader = TopicReader::from_beginning(&cluster, &cluster.topics().incidents)
        .await
        .context("reading the incidents topic")?;
    let mut entries = Vec::new();
    for record in reader.read_to_end(TIMEOUT).await? {
        match IncidentEntry::decode(&record.payload) {
            Ok(entry) => entries.push(entry),
            Err(err) => eprintln!(
                "skipping an unreadable incident entry at {}:{}: {err}",
                record.partition, record.offset
            ),
        }
    }
    Ok(entries)
}

fn fold(entries: &[IncidentEntry]) -> Incidents {
    let mut incidents = Incidents::default();
    for entry in entries {
        incidents.apply(entry);
    }
    incidents
}

/// `incident list`: one line per incident, its id first, newest first.
pub async fn list(config: &ValidatedConfig) -> anyhow::Result<()> {
    let entries = read_entries(config).await?;
    let incidents = fold(&entries);
    let mut all: Vec<&Incident> = incidents.by_id.values().collect();
    all.sort_by_key(|incident| std::cmp::Reverse(incident.opened_at));
    if all.is_empty() {
        println!("no incidents");
    }
    for incident in all {
        let summary = entries
            .iter()
            .find(|entry| entry.incident_id == incident.id && entry.kind == EntryKind::Opened)
            .map_or("", |entry| entry.detail.as_str());
        println!(
            "{}  {}  {}  {}  {}",
            incident.id,
            incident.opened_at.format("%Y-%m-%d %H:%M:%SZ"),
            incident.runbook,
            incident.status(),
            summary
        );
    }
    Ok(())
}

/// `incident show ID`: the timeline.
pub async fn show(config: &ValidatedConfig, id: &str) -> anyhow::Result<()> {
    let entries = read_entries(config).await?;
    let incidents = fold(&entries);
    let incident = incidents
        .by_id
        .get(id)
        .with_context(|| format!("no incident {id} (warden incident list shows them)"))?;
    println!("incident {}", incident.id);
    println!("  runbook:  {}", incident.runbook);
    println!(
        "  mode:     {}",
        match incident.mode {
            Mode::DryRun => "dry run (the plan is recorded; nothing is changed)",
            Mode::Approve => "approve (infrastructure changes wait for approval)",
            Mode::Auto => "auto",
        }
    );
    println!("  status:   {}", incident.status());
    println!("  subject:  {}", incident.subject);
    if let Some(environment) = &incident.environment {
        println!("  environment: {environment}");
    }
    if let Some(by) = &incident.approved_by {
        println!("  approved by: {by}");
    }
    println!("\ntimeline:");
    for entry in entries.iter().filter(|entry| entry.incident_id == id) {
        println!("{}", timeline_line(entry));
    }
    Ok(())
}

fn timeline_line(entry: &IncidentEntry) -> String {
    let what = match (entry.kind, entry.step.as_deref()) {
        (EntryKind::Report, Some(ANNOUNCED)) => "notified".to_owned(),
        (kind, Some(step)) => format!("{} {step}", kind.as_str()),
        (kind, None) => kind.as_str().to_owned(),
    };
    let outcome = entry
        .outcome
        .map(|outcome| format!(" [{}]", outcome.as_str()))
        .unwrap_or_default();
    let mut line = format!(
        "  {}  {what}{outcome}  {}",
        entry.ts.format("%H:%M:%S%.3f"),
        entry.actor
    );
    let mut detail = entry.detail.lines();
    if let Some(first) = detail.next() {
        line.push_str(" — ");
        line.push_str(first);
    }
    for more in detail {
        line.push_str("\n      ");
        line.push_str(more);
    }
    line
}

/// `incident approve ID --by NAME` and `incident undo ID --by NAME`.
pub async fn request(
    config: &ValidatedConfig,
    id: &str,
    by: &str,
    kind: EntryKind,
) -> anyhow::Result<()> {
    anyhow::ensure!(!by.trim().is_empty(), "--by must name who decides");
    anyhow::ensure!(
        !config.kafka.is_embedded(),
        "warden incident approve/undo publish to the runbook engine's broker: set \
         [kafka].brokers (the embedded broker lives inside one `warden up` process)"
    );
    let cluster = cluster_of(config).await?;
    let entries = read_entries(config).await?;
    let incidents = fold(&entries);
    let incident = incidents
        .by_id
        .get(id)
        .with_context(|| format!("no incident {id} (warden incident list shows them)"))?;
    if kind == EntryKind::Approved {
        anyhow::ensure!(incident.approved_by.is_none(), "{id} was approved already");
        anyhow::ensure!(!incident.expired, "{id}'s plan expired unapproved");
        anyhow::ensure!(
            incident
                .steps
                .values()
                .any(|step| step.outcome == StepOutcome::AwaitingApproval),
            "{id} has no step waiting for approval"
        );
    } else {
        anyhow::ensure!(
            incident.undo_requested_by.is_none(),
            "undo of {id} was asked already"
        );
    }
    let actor = format!("operator:{}", by.trim());
    let detail = if kind == EntryKind::Approved {
        format!("approved by {}", by.trim())
    } else {
        format!("undo asked by {}", by.trim())
    };
    let mut entry = IncidentEntry::new(id, incident.runbook.as_str(), kind, detail, actor);
    entry.alert_dedup_key = Some(incident.alert_dedup_key.clone());
    entry.environment = incident.environment.clone();
    let producer = DeliveringProducer::from_config(&cluster.producer_config())
        .context("creating the producer")?;
    let payload = serde_json::to_vec(&entry).context("encoding the entry")?;
    tokio::time::timeout(
        TIMEOUT,
        producer.deliver(
            Outgoing::new(&cluster.topics().incidents, id.as_bytes(), &payload),
            TIMEOUT,
        ),
    )
    .await
    .context("the broker did not take the request in time")?
    .context("publishing the request")?;
    println!(
        "{} {id}: published; waiting for the runbook engine",
        kind.as_str()
    );
    // Print what the engine does about it, until it is done or the wait is over.
    let reader = TopicReader::from_beginning(&cluster, &cluster.topics().incidents)
        .await
        .context("reading the incidents topic")?;
    let deadline = tokio::time::Instant::now() + ACT_WAIT;
    let mut after_request = false;
    loop {
        let record = match tokio::time::timeout_at(deadline, reader.recv()).await {
            Ok(Ok(record)) => record,
            Ok(Err(err)) => anyhow::bail!("reading the incidents topic: {err}"),
            Err(_) => {
                println!(
                    "the runbook engine has not finished within {}s: `warden incident show {id}` \
                     follows it (is `warden respond` running?)",
                    ACT_WAIT.as_secs()
                );
                return Ok(());
            }
        };
        let Ok(seen) = IncidentEntry::decode(&record.payload) else {
            continue;
        };
        if seen.entry_id == entry.entry_id {
            after_request = true;
            continue;
        }
        if !after_request || seen.incident_id != id {
            continue;
        }
        if seen.outcome == Some(StepOutcome::Started) {
            continue;
        }
        println!("{}", timeline_line(&seen));
        let finished = match kind {
            EntryKind::UndoRequested => seen.kind == EntryKind::Undone && seen.step.is_none(),
            _ => seen.kind == EntryKind::Report && seen.step.as_deref() == Some(ANNOUNCED),
        };
        if finished {
            return Ok(());
        }
    }
}
