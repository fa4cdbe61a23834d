//! Settings per environment, per target and per client: `[[detect.overrides]]`.
//!
//! ```toml
//! [[detect.overrides]]
//! environment = "staging"                  # staging is watched on its own, with these settings
//! cost_burn = { business_hours_usd_per_hour = 10.0, off_hours_usd_per_hour = 2.0 }
//!
//! [[detect.overrides]]
//! client = "batch-indexer"                 # or target = "llama-70b"; environment = ... narrows it
//! traffic_spike = { factor = 50.0, critical_factor = 100.0 }
//! retry_loop = { enabled = false }
//! ```
//!
//! An override names where it applies (`environment`, and at most one of `target` or
//! `client`) and sets any keys of the detector sections (`[detect.traffic_spike]`...); keys it
//! does not set keep their value from `[detect]`. Settings are laid over each other from the
//! general to the particular: `[detect]`, then the environment's overrides, then the
//! client's or target's in every environment, then the client's or target's in that
//! environment, each in the order written.
//!
//! How the engine applies them (see [`crate::engine`]): an environment named by any override
//! is watched by its own [set](crate::engine::DetectorSet) of detectors, which sees only that
//! environment's events and ends its alerts' dedup keys in `@{environment}`; every other
//! environment is watched by the default set. A client or target with settings of its own
//! has its own detectors in its environment's set, fed only its events, and only they report
//! on it (and, for a client, on its tokens).

use serde::Deserialize;

use crate::DetectConfig;
use crate::engine::Scope;

/// The detector sections an override may set.
pub const SECTIONS: [&str; 10] = [
    "cost_burn",
    "traffic_spike",
    "single_source",
    "auth_failures",
    "upstream_503",
    "retry_loop",
    "cost_per_request",
    "geo",
    "latency",
    "response_drift",
];

/// One `[[detect.overrides]]` entry: where it applies, and the detector settings it changes.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct DetectOverride {
    pub environment: Option<String>,
    pub target: Option<String>,
    pub client: Option<String>,
    /// Detector sections (`traffic_spike = { factor = 50.0 }`), checked when the config is.
    #[serde(flatten)]
    pub settings: toml::Table,
}

impl DetectOverride {
    fn scope(&self) -> Option<Scope> {
        match (&self.client, &self.target) {
            (Some(client), _) => Some(Scope::Client(client.clone())),
            (None, Some(target)) => Some(Scope::Target(target.clone())),
            (None, None) => None,
        }
    }

    /// Problems of the entry itself (not of the settings it leads to).
    fn check(&self, index: usize) -> Vec<String> {
        let name = format!("detect.overrides[{index}]");
        let mut errors = Vec::new();
        if self.environment.is_none() && self.target.is_none() && self.client.is_none() {
            errors.push(format!(
                "{name}: names no environment, target or client to apply to"
            ));
        }
        if self.target.is_some() && self.client.is_some() {
            errors.push(format!(
                "{name}: names both a target and a client; write one override for each"
            ));
        }
        for (key, value) in &self.settings {
            if !SECTIONS.contains(&key.as_str()) {
                errors.push(format!(
                    "{name}.{key}: not a detector section (one of {})",
                    SECTIONS.join(", ")
                ));
            } else if !value.is_table() {
                errors.push(format!(
                    "{name}.{key}: must be a table of that section's keys"
                ));
            }
        }
        errors
    }
}

/// The settings of one set of detectors: an environment's (or the default set's), and those
/// of each client or target in it with settings of its own.
#[derive(Debug)]
pub struct SetPlan {
    /// `None` for the default set.
    pub environment: Option<String>,
    pub main: DetectConfig,
    pub scoped: Vec<(Scope, DetectConfig)>,
}

/// The sets of detectors `config` asks for: the default set first, then one per environment
/// named by an override. Fails with every problem found, each naming where it is.
pub fn plan(config: &DetectConfig) -> Result<Vec<SetPlan>, Vec<String>> {
    let overrides = &config.overrides;
    let mut errors: Vec<String> = overrides
        .iter()
        .enumerate()
        .flat_map(|(index, entry)| entry.check(index))
        .collect();
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut environments: Vec<Option<&str>> = vec![None];
    for entry in overrides {
        let environment = entry.environment.as_deref();
        if environment.is_some() && !environments.contains(&environment) {
            environments.push(environment);
        }
    }
    let mut sets = Vec::new();
    for environment in environments {
        let in_environment = |entry: &&DetectOverride| {
            environment.is_some() && entry.environment.as_deref() == environment
        };
        let layers: Vec<&toml::Table> = overrides
            .iter()
            .filter(|entry| entry.scope().is_none())
            .filter(in_environment)
            .map(|entry| &entry.settings)
            .collect();
        let place = environment.map_or_else(String::new, |env| format!(" in environment {env}"));
        let main = overlaid(config, &layers)
            .map_err(|err| errors.push(format!("detect.overrides{place}: {err}")));
        let mut scopes: Vec<Scope> = Vec::new();
        for entry in overrides {
            let applies = entry.environment.is_none() || in_environment(&entry);
            if let Some(scope) = entry
                .scope()
                .filter(|scope| applies && !scopes.contains(scope))
            {
                scopes.push(scope);
            }
        }
        let mut scoped = Vec::new();
        for scope in scopes {
            let mine = |entry: &&DetectOverride| entry.scope().as_ref() == Some(&scope);
            let scope_layers: Vec<&toml::Table> = layers
                .iter()
                .copied()
                .chain(
                    overrides
                        .iter()
                        .filter(mine)
                        .filter(|entry| entry.environment.is_none())
                        .map(|entry| &entry.settings),
                )
                .chain(
                    overrides
                        .iter()
                        .filter(mine)
                        .filter(in_environment)
                        .map(|entry| &entry.settings),
                )
                .collect();
            match overlaid(config, &scope_layers) {
                Ok(settings) => scoped.push((scope, settings)),
                Err(err) => errors.push(format!("detect.overrides for {scope}{place}: {err}")),
            }
        }
        if let Ok(main) = main {
            sets.push(SetPlan {
                environment: environment.map(str::to_owned),
                main,
                scoped,
            });
        }
    }
    if errors.is_empty() {
        Ok(sets)
    } else {
        Err(errors)
    }
}

/// `config` with `layers` laid over it in order, checked.
fn overlaid(config: &DetectConfig, layers: &[&toml::Table]) -> Result<DetectConfig, String> {
    if layers.is_empty() {
        return Ok(config.clone());
    }
    let toml::Value::Table(mut table) =
        toml::Value::try_from(config).map_err(|err| err.to_string())?
    else {
        return Err("the [detect] section is not a table".to_owned());
    };
    for layer in layers {
        lay_over(&mut table, layer);
    }
    let settings: DetectConfig = toml::Value::Table(table)
        .try_into()
        .map_err(|err: toml::de::Error| err.message().to_owned())?;
    let problems = settings.validate();
    if problems.is_empty() {
        Ok(settings)
    } else {
        Err(problems.join("; "))
    }
}

/// Lays `layer` over `base`: tables merge key by key, anything else replaces.
fn lay_over(base: &mut toml::Table, layer: &toml::Table) {
    for (key, value) in layer {
        match (base.get_mut(key), value) {
            (Some(toml::Value::Table(base)), toml::Value::Table(layer)) => lay_over(base, layer),
            _ => {
                base.insert(key.clone(), value.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use warden_ingest::AuditEvent;
    use warden_ingest::alert::{Alert, AlertStatus};
    use warden_ingest::event_row::EventRow;

    use super::*;
    use crate::test_support::request;

    /// An hour of one request every 7.5 s from each of app-a and batch (prod) and app-s
    /// (staging), then 5 minutes of 4 a second from each (30x): the firing alerts.
    fn spikes_under(config: &DetectConfig) -> Vec<Alert> {
        let mut events: Vec<(i64, AuditEvent)> = Vec::new();
        for (client, environment) in [("app-a", "prod"), ("batch", "prod"), ("app-s", "staging")] {
            let seconds = (0..480)
                .map(|i| i * 15 / 2)
                .chain((0..1_200).map(|i| 3_600 + i / 4));
            for second in seconds {
                let mut event = request(second, client, "10.0.0.1");
                event.environment = Some(environment.into());
                events.push((second, event));
            }
        }
        events.sort_by_key(|(second, _)| *second);
        let mut engine = config.engine().expect("engine");
        events
            .iter()
            .flat_map(|(_, event)| engine.take(&EventRow::from(event)))
            .filter(|alert| alert.status == AlertStatus::Firing)
            .collect()
    }

    fn keys(alerts: &[Alert]) -> std::collections::BTreeSet<&str> {
        alerts
            .iter()
            .map(|alert| alert.dedup_key.as_str())
            .collect()
    }

    #[test]
    fn a_client_and_an_environment_with_settings_of_their_own_are_judged_by_them() {
        let plain = spikes_under(&DetectConfig::default());
        for key in ["client:app-a", "client:batch", "client:app-s", "global"] {
            assert!(
                keys(&plain).contains(format!("traffic_spike/{key}").as_str()),
                "{key}"
            );
        }

        let alerts = spikes_under(&detect_section(
            r#"
            [[overrides]]
            client = "batch"
            traffic_spike = { factor = 50.0, critical_factor = 100.0 }
            [[overrides]]
            environment = "staging"
            traffic_spike = { min_requests = 100000 }
            "#,
        ));
        let fired = keys(&alerts);
        // batch's 30x is under its own 50x; the global count still includes it.
        assert!(!fired.contains("traffic_spike/client:batch"), "{fired:?}");
        assert!(fired.contains("traffic_spike/client:app-a"), "{fired:?}");
        assert!(fired.contains("traffic_spike/global"), "{fired:?}");
        // Staging is watched on its own, under a minimum it does not reach.
        assert!(!fired.iter().any(|key| key.contains("app-s")), "{fired:?}");
        assert!(alerts.iter().all(|alert| alert.environment.is_none()));

        let alerts = spikes_under(&detect_section(
            r#"
            [[overrides]]
            environment = "staging"
            traffic_spike = { factor = 20.0 }
            "#,
        ));
        let fired = keys(&alerts);
        assert!(
            fired.contains("traffic_spike/client:app-s@staging"),
            "{fired:?}"
        );
        assert!(fired.contains("traffic_spike/global@staging"), "{fired:?}");
        assert!(!fired.contains("traffic_spike/client:app-s"), "{fired:?}");
        let staging_global = alerts
            .iter()
            .find(|alert| alert.dedup_key == "traffic_spike/global@staging")
            .expect("staging's global");
        assert_eq!(staging_global.environment.as_deref(), Some("staging"));
    }

    fn detect_section(text: &str) -> DetectConfig {
        toml::from_str(text).expect("detect section")
    }

    #[test]
    fn a_client_with_settings_of_its_own_is_judged_by_them_for_its_tokens_too() {
        use warden_ingest::event::DecisionInfo;
        use warden_ingest::{EventKind, TokenId};

        let uses: Vec<AuditEvent> = (0..30)
            .map(|second| {
                let mut event = crate::test_support::event(
                    EventKind::PolicyDecision,
                    second,
                    "batch",
                    "10.0.0.9",
                );
                event.client.token_id = Some(TokenId("tok_batch".into()));
                event.decision = Some(DecisionInfo {
                    policy: "auth".into(),
                    outcome: "allow".into(),
                    reason: None,
                });
                event
            })
            .collect();
        let revoked = |text: &str| -> Vec<String> {
            let mut engine = detect_section(text).engine().expect("engine");
            uses.iter()
                .flat_map(|event| engine.take(&EventRow::from(event)))
                .map(|alert| alert.dedup_key)
                .collect()
        };
        let base = "auth_failures = { revoked_tokens = [\"tok_batch\"] }\n";
        assert!(revoked(base).contains(&"revoked_token/token:tok_batch".to_owned()));
        let muted = format!(
            "{base}[[overrides]]\nclient = \"batch\"\nauth_failures = {{ enabled = false }}\n"
        );
        assert_eq!(revoked(&muted), Vec::<String>::new());
    }

    #[test]
    fn settings_are_laid_from_the_general_to_the_particular() {
        let config = detect_section(
            r#"
            traffic_spike = { factor = 12.0 }
            [[overrides]]
            client = "batch"
            traffic_spike = { factor = 50.0, critical_factor = 100.0 }
            [[overrides]]
            environment = "staging"
            cost_burn = { business_hours_usd_per_hour = 10.0 }
            traffic_spike = { min_requests = 1000 }
            [[overrides]]
            client = "batch"
            environment = "staging"
            traffic_spike = { factor = 80.0 }
            [[overrides]]
            target = "llama-70b"
            upstream_503 = { enabled = false }
            "#,
        );
        let sets = plan(&config).expect("plan");
        assert_eq!(sets.len(), 2);
        let (default, staging) = (&sets[0], &sets[1]);
        assert_eq!(default.environment, None);
        assert_eq!(default.main.traffic_spike.factor, 12.0);
        assert_eq!(default.main.cost_burn.business_hours_usd_per_hour, 100.0);
        let scopes: Vec<String> = default.scoped.iter().map(|(s, _)| s.to_string()).collect();
        assert_eq!(scopes, ["client:batch", "target:llama-70b"]);
        assert_eq!(default.scoped[0].1.traffic_spike.factor, 50.0);
        assert_eq!(default.scoped[0].1.traffic_spike.min_requests, 100);
        assert!(!default.scoped[1].1.upstream_503.enabled);

        assert_eq!(staging.environment.as_deref(), Some("staging"));
        assert_eq!(staging.main.cost_burn.business_hours_usd_per_hour, 10.0);
        assert_eq!(staging.main.traffic_spike.min_requests, 1000);
        assert_eq!(staging.main.traffic_spike.factor, 12.0);
        let batch = &staging.scoped[0].1.traffic_spike;
        assert_eq!(
            (batch.factor, batch.critical_factor, batch.min_requests),
            (80.0, 100.0, 1000)
        );
    }

    #[test]
    fn every_problem_is_named_where_it_is() {
        let config = detect_section(
            r#"
            [[overrides]]
            traffic_spike = { factor = 50.0 }
            [[overrides]]
            client = "a"
            target = "b"
            [[overrides]]
            client = "a"
            consumer_group = "x"
            trafic_spike = { factor = 2.0 }
            "#,
        );
        let errors = plan(&config).expect_err("invalid").join("\n");
        for expected in [
            "detect.overrides[0]: names no environment",
            "detect.overrides[1]: names both",
            "detect.overrides[2].consumer_group: not a detector section",
            "detect.overrides[2].trafic_spike: not a detector section",
        ] {
            assert!(errors.contains(expected), "{expected} in {errors}");
        }
        let config = detect_section(
            r#"
            [[overrides]]
            environment = "staging"
            traffic_spike = { factr = 50.0 }
            [[overrides]]
            client = "a"
            traffic_spike = { factor = 0.5 }
            "#,
        );
        let errors = plan(&config).expect_err("invalid").join("\n");
        assert!(
            errors.contains("in environment staging: unknown field `factr`"),
            "{errors}"
        );
        assert!(
            errors.contains("for client:a: detect.traffic_spike.factor: must be greater than 1"),
            "{errors}"
        );
    }
}
