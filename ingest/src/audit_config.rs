//! `[audit]` configuration: the proxy's side of the audit pipeline — when Kafka counts as
//! unreachable or slow, where events then wait (the disk spool), how durably, and what the
//! proxy does when even the spool is full.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::emitter::{ChannelOptions, DEFAULT_EMIT_CAPACITY, Durability, OnSpoolFull};
use crate::spool::{FsyncPolicy, SpoolOptions};

/// `[audit].fsync` as written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsyncSetting {
    /// fsync after every batch written to the spool.
    #[default]
    Always,
    /// fsync at most `fsync_interval_ms` after a write.
    Interval,
    /// Leave it to the OS.
    Never,
}

/// Raw `[audit]` section as written in TOML.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Directory of the disk spool (one proxy process per directory).
    pub spool_dir: PathBuf,
    /// Largest size of the spool on disk, in MiB.
    pub spool_max_mb: u64,
    /// Size of one spool segment file, in MiB.
    pub spool_segment_mb: u64,
    pub fsync: FsyncSetting,
    pub fsync_interval_ms: u64,
    /// What new calls meet while the spool is full: `block`, `drop` or `fail_closed`.
    pub on_spool_full: OnSpoolFull,
    /// How long Kafka may take to acknowledge an event before it goes to the spool instead.
    pub delivery_timeout_s: f64,
    /// Unacknowledged events in the producer beyond which Kafka counts as slow (and new
    /// events are spooled): with `max_in_flight_mb`, what a killed proxy can lose.
    pub max_in_flight: usize,
    /// Bytes (MiB) of unacknowledged events the producer may hold in memory.
    pub max_in_flight_mb: u64,
    /// Events queued between the request path and the publisher beyond which the pipeline
    /// counts as backed up.
    pub queue_capacity: usize,
    /// `buffered` (the default) or `acked`: an admitted call's answer is released only once
    /// its events are acknowledged by Kafka or fsynced in the spool.
    pub durability: Durability,
    /// How long an `acked` call waits for its events to be durable; past it the call is
    /// refused with 503 `audit_unavailable`.
    pub acked_timeout_s: f64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            spool_dir: PathBuf::from("./warden-data/spool"),
            spool_max_mb: 1024,
            spool_segment_mb: 64,
            fsync: FsyncSetting::Always,
            fsync_interval_ms: 1000,
            on_spool_full: OnSpoolFull::Block,
            delivery_timeout_s: 10.0,
            max_in_flight: 20_000,
            max_in_flight_mb: 32,
            queue_capacity: DEFAULT_EMIT_CAPACITY,
            durability: Durability::Buffered,
            acked_timeout_s: 30.0,
        }
    }
}

impl AuditConfig {
    /// Checks the section without IO; one message per problem, each naming its key.
    pub fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if self.spool_dir.as_os_str().is_empty() {
            errors.push("audit.spool_dir: must not be empty".to_owned());
        }
        if self.spool_max_mb == 0 {
            errors.push("audit.spool_max_mb: must be at least 1".to_owned());
        }
        if self.spool_segment_mb == 0 || self.spool_segment_mb > self.spool_max_mb.max(1) {
            errors.push("audit.spool_segment_mb: must be in [1, spool_max_mb]".to_owned());
        }
        if self.fsync == FsyncSetting::Interval && self.fsync_interval_ms == 0 {
            errors.push("audit.fsync_interval_ms: must be at least 1".to_owned());
        }
        if !(self.delivery_timeout_s >= 1.0 && self.delivery_timeout_s <= 3600.0) {
            errors.push("audit.delivery_timeout_s: must be in [1, 3600]".to_owned());
        }
        if !(1..=10_000_000).contains(&self.max_in_flight) {
            errors.push("audit.max_in_flight: must be in [1, 10000000]".to_owned());
        }
        if !(1..=2048).contains(&self.max_in_flight_mb) {
            errors.push("audit.max_in_flight_mb: must be in [1, 2048]".to_owned());
        }
        if self.queue_capacity == 0 {
            errors.push("audit.queue_capacity: must be at least 1".to_owned());
        }
        if !(self.acked_timeout_s >= 1.0 && self.acked_timeout_s <= 3600.0) {
            errors.push("audit.acked_timeout_s: must be in [1, 3600]".to_owned());
        }
        errors
    }

    pub fn spool_options(&self) -> SpoolOptions {
        const MIB: u64 = 1024 * 1024;
        SpoolOptions {
            dir: self.spool_dir.clone(),
            max_bytes: self.spool_max_mb.saturating_mul(MIB),
            segment_bytes: self.spool_segment_mb.saturating_mul(MIB),
            fsync: match self.fsync {
                FsyncSetting::Always => FsyncPolicy::Always,
                FsyncSetting::Interval => {
                    FsyncPolicy::Interval(Duration::from_millis(self.fsync_interval_ms))
                }
                FsyncSetting::Never => FsyncPolicy::Never,
            },
        }
    }

    /// How the emit queue between the request path and the publisher behaves.
    pub fn channel_options(&self) -> ChannelOptions {
        ChannelOptions {
            capacity: self.queue_capacity,
            on_spool_full: self.on_spool_full,
            durability: self.durability,
            acked_timeout: Duration::from_secs_f64(self.acked_timeout_s),
        }
    }

    pub fn delivery_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.delivery_timeout_s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_keep_every_event() {
        let config = AuditConfig::default();
        assert!(config.validate().is_empty());
        assert_eq!(config.on_spool_full, OnSpoolFull::Block);
        assert_eq!(config.spool_options().fsync, FsyncPolicy::Always);
    }

    #[test]
    fn parses_the_policies_and_names_bad_keys() {
        let config: AuditConfig = toml::from_str(
            "on_spool_full = \"fail_closed\"\nfsync = \"interval\"\nfsync_interval_ms = 0\n",
        )
        .expect("parses");
        assert_eq!(config.on_spool_full, OnSpoolFull::FailClosed);
        assert_eq!(
            config.validate(),
            ["audit.fsync_interval_ms: must be at least 1"]
        );
    }
}
