//! The whole `warden.toml`: each section is owned by the crate that uses it; this file only
//! composes them, finds the file, and reports every problem at once.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;
use warden_detectors::DetectConfig;
use warden_ingest::AuditConfig;
use warden_ingest::kafka::KafkaConfig;
use warden_proxy::config::{Environment, ProxyConfig, ProxySettings};
use warden_sinks::archive::ArchiveConfig;
use warden_sinks::respond::{RespondConfig, RespondSettings};
use warden_sinks::runbooks::hf_api::{HfApiConfig, HfApiSettings};
use warden_sinks::runbooks::{RunbooksConfig, RunbooksSettings};

/// The config file as written. Unknown keys are errors, so typos don't pass silently.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WardenConfig {
    pub proxy: ProxyConfig,
    pub kafka: KafkaConfig,
    pub audit: AuditConfig,
    pub archive: ArchiveConfig,
    pub detect: DetectConfig,
    pub respond: RespondConfig,
    pub hf_api: HfApiConfig,
    pub runbooks: RunbooksConfig,
}

/// The validated config: the proxy's settings resolved, the other sections checked.
#[derive(Debug, Clone)]
pub struct ValidatedConfig {
    /// The file it was read from, if any (reloaded from there on SIGHUP).
    pub source: Option<PathBuf>,
    pub proxy: ProxySettings,
    pub kafka: KafkaConfig,
    pub audit: AuditConfig,
    pub archive: ArchiveConfig,
    pub detect: DetectConfig,
    pub respond: RespondSettings,
    /// `None` without a token: no runbook may touch an endpoint.
    pub hf_api: Option<HfApiSettings>,
    pub runbooks: RunbooksSettings,
}

/// The default file looked for when neither `--config` nor `$WARDEN_CONFIG` is given.
const DEFAULT_CONFIG_FILE: &str = "warden.toml";

impl WardenConfig {
    /// Loads `explicit` (from `--config` or `$WARDEN_CONFIG`; must exist), else
    /// `./warden.toml` if present, else the built-in defaults.
    pub fn load(explicit: Option<&Path>) -> anyhow::Result<(Self, Option<PathBuf>)> {
        let path = match explicit {
            Some(path) => path.to_path_buf(),
            None if Path::new(DEFAULT_CONFIG_FILE).is_file() => PathBuf::from(DEFAULT_CONFIG_FILE),
            None => return Ok((Self::default(), None)),
        };
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        let config = toml::from_str(&text)
            .with_context(|| format!("parsing config file {}", path.display()))?;
        Ok((config, Some(path)))
    }

    /// Validates every section and returns all problems together.
    pub fn validate(mut self, env: &dyn Environment) -> anyhow::Result<ValidatedConfig> {
        let mut errors = Vec::new();
        errors.extend(self.kafka.resolve_secrets(&|name| env.var(name)));
        if self.kafka.instance_id.is_none() {
            self.kafka.instance_id = env.var("WARDEN_INSTANCE_ID").filter(|id| !id.is_empty());
        }
        errors.extend(self.archive.resolve_signing_key(&|name| env.var(name)));
        let proxy = self
            .proxy
            .validate(env)
            .map_err(|proxy_errors| errors.extend(proxy_errors))
            .ok();
        errors.extend(self.kafka.validate());
        errors.extend(self.audit.validate());
        errors.extend(self.archive.validate());
        errors.extend(self.detect.validate());
        let respond = self
            .respond
            .validate(&|name| env.var(name))
            .map_err(|respond_errors| errors.extend(respond_errors))
            .ok();
        let hf_api = self
            .hf_api
            .validate(&|name| env.var(name))
            .map_err(|hf_errors| errors.extend(hf_errors))
            .ok()
            .flatten();
        let runbooks = self
            .runbooks
            .validate()
            .map_err(|runbook_errors| errors.extend(runbook_errors))
            .ok();
        if let (Some(proxy), Some(respond)) = (&proxy, &respond) {
            for (index, client) in proxy.clients.iter().enumerate() {
                if let Some(owner) = &client.owner_receiver
                    && !respond
                        .receivers
                        .iter()
                        .any(|receiver| receiver.name == *owner)
                {
                    errors.push(format!(
                        "proxy.clients[{index}].owner_receiver: no [[respond.receivers]] named \
                         {owner:?}"
                    ));
                }
            }
        }
        match (proxy, respond, runbooks) {
            (Some(proxy), Some(respond), Some(runbooks)) if errors.is_empty() => {
                // `key_expiry` watches the proxy's keys.
                self.detect.expiring_keys = proxy
                    .clients
                    .iter()
                    .flat_map(|client| {
                        client.keys.iter().filter_map(|key| {
                            key.not_after.map(|not_after| {
                                warden_detectors::key_expiry::ExpiringKey {
                                    client: client.name.clone(),
                                    not_after,
                                }
                            })
                        })
                    })
                    .collect();
                Ok(ValidatedConfig {
                    source: None,
                    proxy,
                    kafka: self.kafka,
                    audit: self.audit,
                    archive: self.archive,
                    detect: self.detect,
                    respond,
                    hf_api,
                    runbooks,
                })
            }
            _ => bail!("invalid configuration:\n  {}", errors.join("\n  ")),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn the_example_config_is_valid() {
        let text = include_str!("../deploy/warden.example.toml");
        let config: WardenConfig = toml::from_str(text).expect("parses");
        let env = HashMap::from([("HF_API_TOKEN".to_owned(), "hf_test".to_owned())]);
        config.validate(&env).expect("valid");
    }

    #[test]
    fn the_docker_compose_config_is_valid() {
        let text = include_str!("../deploy/warden.compose.toml");
        let config: WardenConfig = toml::from_str(text).expect("parses");
        let env = HashMap::from([
            ("HF_API_TOKEN".to_owned(), "hf_test".to_owned()),
            ("WARDEN_APP_KEY_SHA256".to_owned(), "ab".repeat(32)),
            (
                "WARDEN_FINGERPRINT_KEY".to_owned(),
                "a-made-up-test-secret-32-bytes!!".to_owned(),
            ),
        ]);
        let validated = config.clone().validate(&env).expect("valid");
        assert!(!validated.kafka.is_embedded());
        assert_eq!(validated.proxy.clients.len(), 1, "callers need a key");
        // Without the key's hash it does not start: no open mode on 0.0.0.0 by accident.
        let env = HashMap::from([
            ("HF_API_TOKEN".to_owned(), "hf_test".to_owned()),
            (
                "WARDEN_FINGERPRINT_KEY".to_owned(),
                "a-made-up-test-secret-32-bytes!!".to_owned(),
            ),
        ]);
        let message = config.validate(&env).expect_err("no key").to_string();
        assert!(message.contains("WARDEN_APP_KEY_SHA256"), "{message}");
    }

    #[test]
    fn problems_of_every_section_are_reported_together() {
        let config: WardenConfig = toml::from_str(
            r#"
            [proxy]
            listen = "bad"
            [kafka]
            brokers = "nohost"
            [archive]
            url = "ftp://x"
            "#,
        )
        .expect("parses");
        let message = config
            .validate(&HashMap::new())
            .expect_err("invalid")
            .to_string();
        for key in ["proxy.listen", "kafka.brokers", "archive.url"] {
            assert!(message.contains(key), "{message}");
        }
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = toml::from_str::<WardenConfig>("[archive]\nurll = \"x\"\n").expect_err("typo");
        assert!(err.to_string().contains("urll"), "{err}");
    }
}
