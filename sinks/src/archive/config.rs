//! `[archive]` configuration.

use std::time::Duration;

use serde::Deserialize;
use warden_ingest::archive_store::S3Options;
use warden_ingest::layout::ArchiveUrl;

/// Raw `[archive]` section as written in TOML.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArchiveConfig {
    /// A local path, `file:///abs/path`, or `s3://bucket/prefix`.
    pub url: String,
    /// Longest time an event waits in memory before its file is written.
    pub flush_interval_s: f64,
    /// A batch is written as soon as it holds this many events.
    pub max_batch_events: usize,
    /// Consumer group of the archivers.
    pub consumer_group: String,
    /// Days of events kept; `warden archive prune` removes older day partitions.
    pub retention_days: u32,
    /// `[archive.s3]`: endpoint, region and plain-http switch of an `s3://` archive.
    pub s3: S3Options,
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        Self {
            url: "./warden-data/archive".to_owned(),
            flush_interval_s: 2.0,
            max_batch_events: 100_000,
            consumer_group: "warden-archive".to_owned(),
            retention_days: 400,
            s3: S3Options::default(),
        }
    }
}

impl ArchiveConfig {
    /// Checks the section without IO; one message per problem, each naming its key.
    pub fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if let Err(err) = ArchiveUrl::parse(&self.url) {
            errors.push(format!("archive.url: {err}"));
        }
        if !(self.flush_interval_s > 0.0 && self.flush_interval_s <= 3600.0) {
            errors.push("archive.flush_interval_s: must be in (0, 3600]".to_owned());
        }
        if self.max_batch_events == 0 {
            errors.push("archive.max_batch_events: must be at least 1".to_owned());
        }
        if self.consumer_group.is_empty() {
            errors.push("archive.consumer_group: must not be empty".to_owned());
        }
        if !(1..=36_500).contains(&self.retention_days) {
            errors.push("archive.retention_days: must be in [1, 36500]".to_owned());
        }
        errors.extend(self.s3.validate());
        errors
    }

    pub fn flush_interval(&self) -> Duration {
        Duration::from_secs_f64(self.flush_interval_s)
    }
}
