//! `[runbooks]`: which runbook runs which steps, in which mode per environment, and the
//! guard rails that bound what all of them may do. Validated into [`RunbookSettings`]
//! (no IO; every problem collected and named by key).
//!
//! The default is the safe one: without a `[runbooks]` section both runbooks run in
//! `dry_run` (the plan is computed, recorded and notified; nothing is changed).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use chrono::TimeDelta;
use serde::Deserialize;

/// How much a runbook may do by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Compute, record and notify the plan; change nothing.
    #[default]
    DryRun,
    /// Act, except steps that change infrastructure (and revoking a critical client): those
    /// wait for `warden incident approve`.
    Approve,
    /// Act.
    Auto,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DryRun => "dry_run",
            Self::Approve => "approve",
            Self::Auto => "auto",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "dry_run" => Some(Self::DryRun),
            "approve" => Some(Self::Approve),
            "auto" => Some(Self::Auto),
            _ => None,
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The runbooks Warden carries out (seed 000's incident procedures).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RunbookKind {
    RunawayCost,
    TokenCompromise,
}

impl RunbookKind {
    pub const ALL: [Self; 2] = [Self::RunawayCost, Self::TokenCompromise];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::RunawayCost => "runaway_cost",
            Self::TokenCompromise => "token_compromise",
        }
    }

    /// The runbook an alert names in its `runbook` field.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }

    /// Every step the runbook knows, in the order it executes them.
    pub fn known_steps(self) -> &'static [Step] {
        match self {
            Self::RunawayCost => &[
                Step::BurnRate,
                Step::TopSources,
                Step::DisableAutoscaling,
                Step::ScaleDown,
                Step::EmergencyRateLimit,
                Step::Incident,
            ],
            Self::TokenCompromise => &[
                Step::Revoke,
                Step::AccessReport,
                Step::NotifyOwner,
                Step::WatchRetries,
            ],
        }
    }
}

impl fmt::Display for RunbookKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One step of a runbook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Step {
    /// Runaway cost 1: the burn rate, per environment, target and client, attached.
    BurnRate,
    /// Runaway cost 2: the top sources, from the alert's live window and the archive.
    TopSources,
    /// Runaway cost 3: pin the endpoint's replicas where they are (`minReplica = maxReplica`).
    DisableAutoscaling,
    /// Runaway cost 4: pin them at the target's `min_replicas`.
    ScaleDown,
    /// Runaway cost 5: an emergency rate limit on the top sources, with an expiry.
    EmergencyRateLimit,
    /// Runaway cost 6: the incident record, with the SQL to continue.
    Incident,
    /// Token compromise 1: revoke the token on every proxy.
    Revoke,
    /// Token compromise 2: the token's calls by IP, country, hour and target.
    AccessReport,
    /// Token compromise 3: tell the client's owner how to rotate.
    NotifyOwner,
    /// Token compromise 4: retries with the revoked token join the incident.
    WatchRetries,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BurnRate => "burn_rate",
            Self::TopSources => "top_sources",
            Self::DisableAutoscaling => "disable_autoscaling",
            Self::ScaleDown => "scale_down",
            Self::EmergencyRateLimit => "emergency_rate_limit",
            Self::Incident => "incident",
            Self::Revoke => "revoke",
            Self::AccessReport => "access_report",
            Self::NotifyOwner => "notify_owner",
            Self::WatchRetries => "watch_retries",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::BurnRate,
            Self::TopSources,
            Self::DisableAutoscaling,
            Self::ScaleDown,
            Self::EmergencyRateLimit,
            Self::Incident,
            Self::Revoke,
            Self::AccessReport,
            Self::NotifyOwner,
            Self::WatchRetries,
        ]
        .into_iter()
        .find(|step| step.as_str() == text)
    }

    /// Whether the step changes something (in `dry_run` it is only planned).
    pub fn changes_something(self) -> bool {
        matches!(
            self,
            Self::DisableAutoscaling
                | Self::ScaleDown
                | Self::EmergencyRateLimit
                | Self::Revoke
                | Self::NotifyOwner
        )
    }

    /// Whether the step changes infrastructure (in `approve` mode it waits for approval).
    pub fn changes_infrastructure(self) -> bool {
        matches!(self, Self::DisableAutoscaling | Self::ScaleDown)
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[runbooks]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunbooksConfig {
    /// Run the runbooks inside `warden up` and `warden respond`.
    pub enabled: bool,
    /// The most changes all runbooks together may make in any hour; past it, steps are
    /// skipped (and say so) until the hour has room again.
    pub max_actions_per_hour: u32,
    /// How long a plan waits for `warden incident approve` before it expires.
    pub approval_expires: String,
    /// How long an infrastructure step waits for the endpoint to settle before the next.
    pub settle_timeout_s: u64,
    /// The consumer group the runbook engines share (one acts at a time).
    pub group_id: String,
    pub runaway_cost: RunbookConfig,
    pub token_compromise: RunbookConfig,
}

impl Default for RunbooksConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_actions_per_hour: 20,
            approval_expires: "1h".to_owned(),
            settle_timeout_s: 120,
            group_id: "warden-runbooks".to_owned(),
            runaway_cost: RunbookConfig::default(),
            token_compromise: RunbookConfig::default(),
        }
    }
}

/// `[runbooks.<name>]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunbookConfig {
    /// `dry_run` (default), `approve` or `auto`.
    pub mode: Mode,
    /// The mode in particular environments (`{ staging = "auto" }`), overriding `mode`.
    pub environments: BTreeMap<String, Mode>,
    /// The steps that run, by name; every known step when empty.
    pub steps: Vec<String>,
    /// `runaway_cost`: the emergency limit put on each top source.
    pub emergency_requests_per_minute: Option<u64>,
    /// `runaway_cost`: how long the emergency limit holds (`30m`).
    pub emergency_for: Option<String>,
    /// `runaway_cost`: how many of the top sources get the emergency limit.
    pub emergency_top_sources: Option<usize>,
}

/// One runbook, validated.
#[derive(Debug, Clone)]
pub struct RunbookSettings {
    pub kind: RunbookKind,
    pub mode: Mode,
    pub environments: BTreeMap<String, Mode>,
    /// In execution order.
    pub steps: Vec<Step>,
    pub emergency_requests_per_minute: u64,
    pub emergency_for: TimeDelta,
    pub emergency_top_sources: usize,
}

impl RunbookSettings {
    /// The mode for an incident in `environment`.
    pub fn mode_in(&self, environment: Option<&str>) -> Mode {
        environment
            .and_then(|environment| self.environments.get(environment))
            .copied()
            .unwrap_or(self.mode)
    }
}

/// `[runbooks]`, validated.
#[derive(Debug, Clone)]
pub struct RunbooksSettings {
    pub enabled: bool,
    pub max_actions_per_hour: u32,
    pub approval_expires: TimeDelta,
    pub settle_timeout: Duration,
    pub group_id: String,
    pub runbooks: Vec<RunbookSettings>,
}

impl RunbooksSettings {
    pub fn runbook(&self, kind: RunbookKind) -> Option<&RunbookSettings> {
        self.runbooks.iter().find(|runbook| runbook.kind == kind)
    }
}

impl Default for RunbooksSettings {
    fn default() -> Self {
        RunbooksConfig::default()
            .validate()
            .unwrap_or_else(|errors| unreachable!("the defaults are valid: {errors:?}"))
    }
}

impl RunbooksConfig {
    pub fn validate(&self) -> Result<RunbooksSettings, Vec<String>> {
        let mut errors = Vec::new();
        if !(1..=10_000).contains(&self.max_actions_per_hour) {
            errors.push("runbooks.max_actions_per_hour: between 1 and 10000".to_owned());
        }
        let approval_expires = parse_duration(&self.approval_expires)
            .map_err(|err| errors.push(format!("runbooks.approval_expires: {err}")))
            .unwrap_or(TimeDelta::hours(1));
        if !(1..=3_600).contains(&self.settle_timeout_s) {
            errors.push("runbooks.settle_timeout_s: between 1 and 3600".to_owned());
        }
        if self.group_id.trim().is_empty() {
            errors.push("runbooks.group_id: must not be empty".to_owned());
        }
        let mut runbooks = Vec::new();
        for (kind, config) in [
            (RunbookKind::RunawayCost, &self.runaway_cost),
            (RunbookKind::TokenCompromise, &self.token_compromise),
        ] {
            if let Some(runbook) = config.validate(kind, &mut errors) {
                runbooks.push(runbook);
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(RunbooksSettings {
            enabled: self.enabled,
            max_actions_per_hour: self.max_actions_per_hour,
            approval_expires,
            settle_timeout: Duration::from_secs(self.settle_timeout_s),
            group_id: self.group_id.clone(),
            runbooks,
        })
    }
}

impl RunbookConfig {
    fn validate(&self, kind: RunbookKind, errors: &mut Vec<String>) -> Option<RunbookSettings> {
        let key = format!("runbooks.{kind}");
        let before = errors.len();
        let known = kind.known_steps();
        let steps: Vec<Step> = if self.steps.is_empty() {
            known.to_vec()
        } else {
            let mut chosen = Vec::new();
            for (index, name) in self.steps.iter().enumerate() {
                match Step::parse(name).filter(|step| known.contains(step)) {
                    Some(step) if chosen.contains(&step) => {
                        errors.push(format!("{key}.steps[{index}]: {name:?} twice"));
                    }
                    Some(step) => chosen.push(step),
                    None => errors.push(format!(
                        "{key}.steps[{index}]: {kind} has no step {name:?} (its steps: {})",
                        known
                            .iter()
                            .map(|step| step.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                }
            }
            // Seed 000 says "execute in order": the procedure's order, whatever the listing's.
            chosen.sort_by_key(|step| known.iter().position(|known| known == step));
            chosen
        };
        let is_runaway = kind == RunbookKind::RunawayCost;
        for (name, given) in [
            (
                "emergency_requests_per_minute",
                self.emergency_requests_per_minute.is_some(),
            ),
            ("emergency_for", self.emergency_for.is_some()),
            (
                "emergency_top_sources",
                self.emergency_top_sources.is_some(),
            ),
        ] {
            if given && !is_runaway {
                errors.push(format!(
                    "{key}.{name}: only runaway_cost sets emergency limits"
                ));
            }
        }
        let emergency_requests_per_minute = self.emergency_requests_per_minute.unwrap_or(10);
        if !(1..=1_000_000).contains(&emergency_requests_per_minute) {
            errors.push(format!(
                "{key}.emergency_requests_per_minute: between 1 and 1000000"
            ));
        }
        let emergency_for = match self.emergency_for.as_deref() {
            None => TimeDelta::minutes(30),
            Some(text) => parse_duration(text)
                .map_err(|err| errors.push(format!("{key}.emergency_for: {err}")))
                .unwrap_or(TimeDelta::minutes(30)),
        };
        let emergency_top_sources = self.emergency_top_sources.unwrap_or(1);
        if !(1..=20).contains(&emergency_top_sources) {
            errors.push(format!("{key}.emergency_top_sources: between 1 and 20"));
        }
        (errors.len() == before).then(|| RunbookSettings {
            kind,
            mode: self.mode,
            environments: self.environments.clone(),
            steps,
            emergency_requests_per_minute,
            emergency_for,
            emergency_top_sources,
        })
    }
}

/// A duration like `90s`, `30m`, `2h`, `7d` (between a second and 366 days).
pub fn parse_duration(text: &str) -> Result<TimeDelta, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?}: add a unit (s, m, h, d), e.g. 30m"))?;
    let (number, unit) = text.split_at(split);
    let number: i64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected a number and a unit, e.g. 30m"))?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: the unit is one of s, m, h, d")),
    };
    number
        .checked_mul(seconds)
        .and_then(TimeDelta::try_seconds)
        .filter(|delta| *delta > TimeDelta::zero() && *delta <= TimeDelta::days(366))
        .ok_or_else(|| format!("{text:?}: between 1s and 366d"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> RunbooksConfig {
        toml::from_str(text).expect("parses")
    }

    #[test]
    fn without_a_section_both_runbooks_plan_only() {
        let settings = RunbooksSettings::default();
        assert_eq!(settings.runbooks.len(), 2);
        for runbook in &settings.runbooks {
            assert_eq!(runbook.mode, Mode::DryRun);
            assert_eq!(runbook.steps, runbook.kind.known_steps());
        }
    }

    #[test]
    fn the_contract_example_is_valid() {
        let settings = parse(
            r#"
            [runaway_cost]
            mode = "dry_run"
            steps = ["burn_rate", "top_sources", "disable_autoscaling", "scale_down", "emergency_rate_limit", "incident"]
            emergency_requests_per_minute = 10
            emergency_for = "30m"
            environments = { staging = "auto" }

            [token_compromise]
            mode = "auto"
            steps = ["revoke", "access_report", "notify_owner", "watch_retries"]
            "#,
        )
        .validate()
        .expect("valid");
        let runaway = settings.runbook(RunbookKind::RunawayCost).expect("runaway");
        assert_eq!(runaway.mode_in(Some("staging")), Mode::Auto);
        assert_eq!(runaway.mode_in(Some("prod")), Mode::DryRun);
        assert_eq!(runaway.emergency_for, TimeDelta::minutes(30));
        let token = settings
            .runbook(RunbookKind::TokenCompromise)
            .expect("token");
        assert_eq!(token.mode_in(None), Mode::Auto);
    }

    #[test]
    fn steps_run_in_the_procedure_order_and_unknown_ones_are_named() {
        let settings = parse(
            r#"
            [runaway_cost]
            steps = ["emergency_rate_limit", "burn_rate"]
            "#,
        )
        .validate()
        .expect("valid");
        let runaway = settings.runbook(RunbookKind::RunawayCost).expect("runaway");
        assert_eq!(runaway.steps, [Step::BurnRate, Step::EmergencyRateLimit]);

        let errors = parse(
            r#"
            max_actions_per_hour = 0
            [runaway_cost]
            steps = ["revoke", "reboot"]
            emergency_for = "forever"
            [token_compromise]
            emergency_requests_per_minute = 5
            "#,
        )
        .validate()
        .expect_err("invalid");
        let text = errors.join("\n");
        for needle in [
            "runbooks.max_actions_per_hour",
            "runbooks.runaway_cost.steps[0]",
            "runbooks.runaway_cost.steps[1]",
            "runbooks.runaway_cost.emergency_for",
            "runbooks.token_compromise.emergency_requests_per_minute",
        ] {
            assert!(text.contains(needle), "{needle} in {text}");
        }
    }

    #[test]
    fn durations_read_as_operators_write_them() {
        assert_eq!(parse_duration("30m"), Ok(TimeDelta::minutes(30)));
        assert_eq!(parse_duration("2h"), Ok(TimeDelta::hours(2)));
        assert_eq!(parse_duration("90s"), Ok(TimeDelta::seconds(90)));
        assert!(parse_duration("30").is_err());
        assert!(parse_duration("0m").is_err());
        assert!(parse_duration("9999999999999d").is_err());
        assert!(parse_duration("m").is_err());
    }
}
