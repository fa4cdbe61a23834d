//! `warden detect --replay`: backtesting the detectors over the Parquet archive.
//!
//! The events of `[from, to)` are read back from the archive's `events` table hour partition
//! by hour partition, each hour in event-time order, and fed to the same engine `warden
//! detect` runs, configured from the same `[detect]` section: what it prints is what the
//! detectors would have published had they been running with this config. Nothing is
//! published.
//!
//! Like a worker after a restart, the replay first re-reads `[detect].rebuild_history_s`
//! before `from` with its alerts held back, so baselines and histories are warm at `from`;
//! alerts still open when `from` is reached are listed first, as already open. At the end
//! the watermark is moved to `to`, so windows that closed by then resolve.
//!
//! Each hour is sorted by the query engine (the archive partitions by event time, so hours
//! come in order). The sort holds one hour partition in memory: DataFusion's default session
//! has no memory limit and does not spill, so a very busy hour needs its size in RAM.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::Context;
use chrono::{DateTime, DurationRound, TimeDelta, Timelike, Utc};
use futures::StreamExt;
use warden_detectors::engine::Engine;
use warden_ingest::alert::{Alert, AlertStatus};
use warden_ingest::columnar::{batch_to_events, event_schema};
use warden_ingest::event_row::EventRow;
use warden_ingest::layout::EVENTS_TABLE;
use warden_sql::ArchiveSession;

use crate::config::ValidatedConfig;
use crate::report::alert_line;

/// How instants are printed: to the second, in UTC.
const TIME_FORMAT: &str = "%Y-%m-%dT%H:%M:%SZ";

/// What `warden detect --replay` was asked.
#[derive(Debug)]
pub struct ReplayRequest {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// One JSON alert per line instead of text lines.
    pub json: bool,
}

/// What a replay read and raised.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReplaySummary {
    /// Events of `[from, to)`.
    pub events: u64,
    /// Events before `from` read to warm the detectors up.
    pub warm_up_events: u64,
    pub fired: u64,
    pub resolved: u64,
    /// Alerts raised before `from` and still open then.
    pub open_at_start: u64,
}

/// Runs the replay, printing alerts to stdout as they come and a summary at the end.
pub async fn replay(config: &ValidatedConfig, request: &ReplayRequest) -> anyhow::Result<()> {
    anyhow::ensure!(
        request.from < request.to,
        "--from ({}) must be before --to ({})",
        request.from,
        request.to
    );
    let engine = config
        .detect
        .engine()
        .map_err(|err| anyhow::anyhow!("detect.{err}"))?;
    let session = ArchiveSession::open(&config.archive.url, &config.archive.s3)?;
    let warm_up_from = request.from - TimeDelta::seconds(config.detect.rebuild_history_s);
    let mut replay = Replay::new(engine, request);
    let mut hour = hour_start(warm_up_from);
    while hour < request.to {
        let mut batches = session
            .query_stream(&hour_query(hour))
            .await
            .with_context(|| format!("reading the events of {hour}"))?;
        while let Some(batch) = batches.next().await {
            let batch = batch.with_context(|| format!("reading the events of {hour}"))?;
            let events = batch_to_events(&batch)
                .with_context(|| format!("decoding the events of {hour}"))?;
            for event in &events {
                if event.ts >= warm_up_from && event.ts < request.to {
                    replay.take(&EventRow::from(event))?;
                }
            }
        }
        hour += TimeDelta::hours(1);
    }
    let summary = replay.finish()?;
    let mut stdout = std::io::stdout().lock();
    writeln!(
        stdout,
        "replayed {} events from {} to {} ({} before, to warm up): {} fired, {} resolved, {} \
         already open",
        summary.events,
        request.from.format(TIME_FORMAT),
        request.to.format(TIME_FORMAT),
        summary.warm_up_events,
        summary.fired,
        summary.resolved,
        summary.open_at_start
    )?;
    Ok(())
}

/// The engine of one replay and what it has printed.
struct Replay<'a> {
    engine: Engine,
    request: &'a ReplayRequest,
    /// Alerts raised during the warm-up and still open, by dedup key, until `from`.
    open_before: Option<BTreeMap<String, Alert>>,
    summary: ReplaySummary,
    out: std::io::Stdout,
}

impl<'a> Replay<'a> {
    fn new(engine: Engine, request: &'a ReplayRequest) -> Self {
        Self {
            engine,
            request,
            open_before: Some(BTreeMap::new()),
            summary: ReplaySummary::default(),
            out: std::io::stdout(),
        }
    }

    fn take(&mut self, event: &EventRow<'_>) -> anyhow::Result<()> {
        if event.ts < self.request.from {
            self.summary.warm_up_events += 1;
        } else {
            self.summary.events += 1;
        }
        let alerts = self.engine.take(event);
        self.publish(alerts)
    }

    fn finish(mut self) -> anyhow::Result<ReplaySummary> {
        let alerts = self.engine.advance_to(self.request.to);
        self.publish(alerts)?;
        self.reach_start()?;
        self.out.flush()?;
        Ok(self.summary)
    }

    /// Holds back the alerts of the warm-up (remembering which are open) and prints the rest.
    fn publish(&mut self, alerts: Vec<Alert>) -> anyhow::Result<()> {
        for alert in alerts {
            if alert.ts < self.request.from {
                if let Some(open) = &mut self.open_before {
                    match alert.status {
                        AlertStatus::Firing => open.insert(alert.dedup_key.clone(), alert),
                        AlertStatus::Resolved => open.remove(&alert.dedup_key),
                    };
                }
                continue;
            }
            self.reach_start()?;
            match alert.status {
                AlertStatus::Firing => self.summary.fired += 1,
                AlertStatus::Resolved => self.summary.resolved += 1,
            }
            self.print(&alert, "")?;
        }
        Ok(())
    }

    /// At the first alert of `[from, to)` (or the end): lists the alerts already open.
    fn reach_start(&mut self) -> anyhow::Result<()> {
        let Some(open) = self.open_before.take() else {
            return Ok(());
        };
        self.summary.open_at_start = open.len() as u64;
        for alert in open.values() {
            self.print(alert, "already open: ")?;
        }
        Ok(())
    }

    fn print(&mut self, alert: &Alert, prefix: &str) -> anyhow::Result<()> {
        if self.request.json {
            let line = serde_json::to_string(alert).context("encoding an alert")?;
            writeln!(self.out, "{line}")?;
        } else {
            writeln!(
                self.out,
                "{prefix}{}  {}",
                alert.ts.format(TIME_FORMAT),
                alert_line(alert)
            )?;
        }
        Ok(())
    }
}

fn hour_start(ts: DateTime<Utc>) -> DateTime<Utc> {
    ts.duration_trunc(TimeDelta::hours(1)).unwrap_or(ts)
}

/// The events of one hour partition, in event-time order, with exactly the event columns.
fn hour_query(hour: DateTime<Utc>) -> String {
    let columns: Vec<String> = event_schema()
        .fields()
        .iter()
        .map(|field| format!("\"{}\"", field.name()))
        .collect();
    format!(
        "SELECT {} FROM {EVENTS_TABLE} WHERE dt = '{}' AND hour = '{:02}' ORDER BY ts",
        columns.join(", "),
        hour.format("%Y-%m-%d"),
        hour.hour()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_hour_is_read_by_its_partition_values_in_event_time_order() {
        let hour = DateTime::parse_from_rfc3339("2026-11-22T07:00:00Z")
            .expect("ts")
            .with_timezone(&Utc);
        let query = hour_query(hour);
        assert!(
            query.ends_with("WHERE dt = '2026-11-22' AND hour = '07' ORDER BY ts"),
            "{query}"
        );
        assert!(
            query.starts_with("SELECT \"event_id\", \"schema_version\""),
            "{query}"
        );
        assert!(!query.contains("\"dt\""), "{query}");
    }
}
