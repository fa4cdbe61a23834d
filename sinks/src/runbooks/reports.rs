//! The reports a runbook attaches to an incident, from the archive: the saved
//! investigations of `warden sql --saved`, run for the incident's time window.
//!
//! The archive is read through DataFusion, which this crate does not link: the binary hands
//! the engine an [`ArchiveReports`] that runs them (and tests, one that answers from memory).

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;

/// A report's result.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The SQL it ran (what `warden sql` runs to continue from there).
    pub sql: String,
    /// The rows as a text table, for people.
    pub table: String,
    /// The rows as JSON objects, for the runbook.
    pub rows: Vec<serde_json::Map<String, serde_json::Value>>,
}

/// Runs a saved investigation over the archive.
pub trait ArchiveReports: Send + Sync + fmt::Debug {
    /// The saved query `name` (`top-sources`, `token-activity`...) over `[since, now)`.
    fn saved<'a>(
        &'a self,
        name: &'a str,
        since: DateTime<Utc>,
        params: BTreeMap<String, String>,
    ) -> BoxFuture<'a, Result<Report, String>>;

    /// The client a token belongs to, as the archived events say.
    fn client_of_token<'a>(
        &'a self,
        token_id: &'a str,
        since: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Option<String>, String>>;
}
