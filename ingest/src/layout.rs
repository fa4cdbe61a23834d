//! The archive layout: where tables live in object storage and how they are partitioned.
//!
//! This is the contract between the archive writer (`warden-sinks`) and every reader
//! (`warden sql`, DuckDB, Spark...): `{archive}/{table}/dt=YYYY-MM-DD/hour=HH/*.parquet`,
//! hive-style, partitioned by event time (UTC).

use std::path::PathBuf;

use chrono::{DateTime, Timelike, Utc};

/// The table of audit events.
pub const EVENTS_TABLE: &str = "events";

/// Every table the archive keeps (each under its own top-level directory).
pub const ARCHIVE_TABLES: &[&str] = &[
    EVENTS_TABLE,
    crate::alert::ALERTS_TABLE,
    crate::action::ACTIONS_TABLE,
    crate::notification::NOTIFICATIONS_TABLE,
    crate::incident::INCIDENTS_TABLE,
];

/// Where the archive is: a local directory or an object-store URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchiveUrl {
    /// `file:///abs/path`, or a plain (possibly relative) path.
    Local(PathBuf),
    /// `s3://bucket/prefix` and other object-store schemes.
    Remote(url::Url),
}

impl ArchiveUrl {
    /// Parses `[archive].url` without touching the filesystem.
    pub fn parse(value: &str) -> Result<Self, String> {
        let value = value.trim();
        if value.is_empty() {
            return Err("must not be empty".to_owned());
        }
        if let Some(path) = value.strip_prefix("file://") {
            if path.is_empty() {
                return Err("file:// URL has no path".to_owned());
            }
            return Ok(Self::Local(PathBuf::from(path)));
        }
        if value.contains("://") {
            let url = url::Url::parse(value).map_err(|err| format!("{value:?}: {err}"))?;
            return match url.scheme() {
                "s3" => Ok(Self::Remote(url)),
                other => Err(format!(
                    "unsupported scheme {other:?} (use file://, s3:// or a path)"
                )),
            };
        }
        Ok(Self::Local(PathBuf::from(value)))
    }
}

impl std::fmt::Display for ArchiveUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Local(path) => write!(f, "{}", path.display()),
            Self::Remote(url) => write!(f, "{url}"),
        }
    }
}

/// The partition directory of `table` for the hour containing `ts`, relative to the archive root.
pub fn hour_partition(table: &str, ts: DateTime<Utc>) -> String {
    format!("{table}/dt={}/hour={:02}", ts.format("%Y-%m-%d"), ts.hour())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_paths_file_urls_and_s3() {
        assert_eq!(
            ArchiveUrl::parse("./data/archive"),
            Ok(ArchiveUrl::Local("./data/archive".into()))
        );
        assert_eq!(
            ArchiveUrl::parse("file:///var/lib/warden"),
            Ok(ArchiveUrl::Local("/var/lib/warden".into()))
        );
        assert!(matches!(
            ArchiveUrl::parse("s3://bucket/prefix"),
            Ok(ArchiveUrl::Remote(_))
        ));
        assert!(ArchiveUrl::parse("ftp://x/y").is_err());
        assert!(ArchiveUrl::parse("  ").is_err());
    }

    #[test]
    fn hour_partitions_are_hive_style_utc() {
        let ts = DateTime::parse_from_rfc3339("2026-11-22T07:59:59.999+00:00")
            .expect("ts")
            .with_timezone(&Utc);
        assert_eq!(hour_partition("events", ts), "events/dt=2026-11-22/hour=07");
    }
}
