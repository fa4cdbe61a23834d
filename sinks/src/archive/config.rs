//! `[archive]` configuration.

use std::time::Duration;

use serde::Deserialize;
use warden_ingest::archive_store::S3Options;
use warden_ingest::layout::ArchiveUrl;

use super::signing::{DigestSigner, DigestVerifier};

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
    /// The archivers' digest signing key, as a reference (`env:WARDEN_DIGEST_SIGNING_KEY`,
    /// the base64 of a 32-byte Ed25519 seed; `warden keys signing` makes one).
    pub signing_key: Option<String>,
    /// Public keys (base64) whose signatures `warden verify` accepts on digests. Empty:
    /// signatures are not checked (and verify says so).
    pub verify_keys: Vec<String>,
    /// How long after an hour's end its digest may still be missing before `verify` calls it
    /// a problem, in seconds.
    pub digest_grace_s: u64,
    /// The signer resolved from `signing_key` by [`ArchiveConfig::resolve_signing_key`].
    #[serde(skip)]
    pub signer: Option<DigestSigner>,
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
            signing_key: None,
            verify_keys: Vec::new(),
            digest_grace_s: 900,
            signer: None,
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
        if let Err(err) = DigestVerifier::from_base64_keys(&self.verify_keys) {
            errors.push(format!("archive.verify_keys{err}"));
        }
        if !(60..=86_400).contains(&self.digest_grace_s) {
            errors.push("archive.digest_grace_s: must be in [60, 86400]".to_owned());
        }
        errors
    }

    /// Resolves `signing_key` (an `env:` reference) through `lookup`, the environment seam.
    pub fn resolve_signing_key(&mut self, lookup: &dyn Fn(&str) -> Option<String>) -> Vec<String> {
        let Some(reference) = self.signing_key.as_deref() else {
            return Vec::new();
        };
        let Some(name) = reference.strip_prefix("env:") else {
            return vec![
                "archive.signing_key: must be a reference like \"env:WARDEN_DIGEST_SIGNING_KEY\", \
                 not an inline value"
                    .to_owned(),
            ];
        };
        match lookup(name).map(|seed| DigestSigner::from_base64_seed(&seed)) {
            Some(Ok(signer)) => {
                self.signer = Some(signer);
                Vec::new()
            }
            Some(Err(err)) => vec![format!("archive.signing_key: env var {name} {err}")],
            None => vec![format!("archive.signing_key: env var {name} is not set")],
        }
    }

    /// The verifier of `verify_keys`, if any are configured (validated already).
    pub fn verifier(&self) -> Option<DigestVerifier> {
        if self.verify_keys.is_empty() {
            return None;
        }
        DigestVerifier::from_base64_keys(&self.verify_keys).ok()
    }

    pub fn digest_grace(&self) -> Duration {
        Duration::from_secs(self.digest_grace_s)
    }

    pub fn flush_interval(&self) -> Duration {
        Duration::from_secs_f64(self.flush_interval_s)
    }
}
