//! `[respond]`: receivers, the routing tree, inhibition rules and the grouping timers, as
//! written (serde, unknown keys refused) and validated into [`RespondSettings`] (no IO;
//! every problem collected, each naming its key: `respond.routes[1].receivers[0]: no
//! receiver named "pager"`).
//!
//! Timers and routing follow Prometheus Alertmanager, whose semantics users already know:
//! `group_wait` 30 s, `group_interval` 5 min, `repeat_interval` 4 h unless set, children
//! inherit them and `group_by` from their parent, the first matching route wins unless it
//! says `continue = true`, and an alert no route matches goes to `default_receivers`.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use super::labels::{LabelName, Matcher, Matchers};
use super::route::{GroupBy, Route, RouteTree, Timing};

/// `[respond]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RespondConfig {
    /// Run the responder inside `warden up` (`warden respond` runs it regardless).
    pub enabled: bool,
    pub group_wait_s: u64,
    pub group_interval_s: u64,
    pub repeat_interval_s: u64,
    /// How alerts are grouped where no route says otherwise.
    pub group_by: Vec<String>,
    /// Who hears an alert no route matches.
    pub default_receivers: Vec<String>,
    pub receivers: Vec<ReceiverConfig>,
    pub routes: Vec<RouteConfig>,
    pub inhibit_rules: Vec<InhibitRuleConfig>,
    /// The consumer group the responders share.
    pub group_id: String,
    /// Attempts per notification before it is dead-lettered.
    pub max_attempts: u32,
    /// The longest pause between two attempts (the backoff doubles up to it, with jitter).
    pub max_backoff_s: u64,
}

impl Default for RespondConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            group_wait_s: 30,
            group_interval_s: 300,
            repeat_interval_s: 4 * 3_600,
            group_by: vec!["detector".to_owned(), "subject".to_owned()],
            default_receivers: Vec::new(),
            receivers: Vec::new(),
            routes: Vec::new(),
            inhibit_rules: Vec::new(),
            group_id: "warden-respond".to_owned(),
            max_attempts: 8,
            max_backoff_s: 60,
        }
    }
}

/// One `[[respond.routes]]` (and its children, `routes = [...]`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouteConfig {
    /// Label = value, every one must hold.
    #[serde(rename = "match")]
    pub matches: BTreeMap<String, String>,
    /// Label = regex (anchored), every one must hold.
    pub match_re: BTreeMap<String, String>,
    pub receivers: Vec<String>,
    pub group_by: Option<Vec<String>>,
    pub group_wait_s: Option<u64>,
    pub group_interval_s: Option<u64>,
    pub repeat_interval_s: Option<u64>,
    /// Keep looking at the next sibling routes after this one matched.
    #[serde(rename = "continue")]
    pub continue_matching: bool,
    pub routes: Vec<RouteConfig>,
}

/// One `[[respond.inhibit_rules]]`: while an alert matching the source matchers fires,
/// alerts matching the target matchers with equal `equal` labels are not notified.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InhibitRuleConfig {
    pub source_match: BTreeMap<String, String>,
    pub source_match_re: BTreeMap<String, String>,
    pub target_match: BTreeMap<String, String>,
    pub target_match_re: BTreeMap<String, String>,
    pub equal: Vec<String>,
}

/// A secret given as `env:NAME` and resolved at validation; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// A secret already resolved from its reference (by another section's validation).
    pub fn from_resolved(value: String) -> Self {
        Self(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// One `[[respond.receivers]]`, by `kind`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ReceiverConfig {
    Slack(SlackConfig),
    Webhook(WebhookConfig),
    Email(EmailConfig),
    Syslog(SyslogConfig),
    SplunkHec(SplunkHecConfig),
    Ocsf(OcsfConfig),
}

/// A Slack incoming webhook.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    pub name: String,
    /// `env:NAME`: the webhook's URL is its credential.
    pub url: String,
    /// Alertmanager's default for Slack: false.
    #[serde(default)]
    pub send_resolved: Option<bool>,
    /// Messages per second to this webhook (Slack allows about one).
    #[serde(default = "one_per_second")]
    pub max_per_second: f64,
}

fn one_per_second() -> f64 {
    1.0
}

/// Alertmanager's webhook (payload version 4): PagerDuty/Opsgenie bridges, in-house tools.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub name: String,
    /// The URL, or `env:NAME` when it holds a credential.
    pub url: String,
    #[serde(default)]
    pub send_resolved: Option<bool>,
    /// `Authorization: Bearer` for the receiver, `env:NAME`.
    #[serde(default)]
    pub bearer_token: Option<String>,
    /// At most this many alerts per notification (the rest counted in `truncatedAlerts`).
    #[serde(default)]
    pub max_alerts: usize,
}

/// Email over SMTP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    pub name: String,
    /// `smtp://host:port` (STARTTLS when offered; `?starttls=required` insists) or
    /// `smtps://host:port` (implicit TLS).
    pub smtp: String,
    pub from: String,
    pub to: Vec<String>,
    #[serde(default)]
    pub username: Option<String>,
    /// `env:NAME`.
    #[serde(default)]
    pub password: Option<String>,
    /// A PEM file of the CA that signed the server's certificate, besides the system's.
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    #[serde(default)]
    pub send_resolved: Option<bool>,
}

/// Syslog (RFC 5424) to a SIEM.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogConfig {
    pub name: String,
    /// `udp://host:port`, `tcp://host:port` (octet counting) or `tls://host:port`.
    pub address: String,
    /// `cef` | `rfc5424-json`.
    #[serde(default = "cef")]
    pub format: String,
    /// tls://: a PEM file of the CA that signed the server's certificate, besides the
    /// system's.
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    #[serde(default)]
    pub send_resolved: Option<bool>,
}

fn cef() -> String {
    "cef".to_owned()
}

/// Splunk's HTTP Event Collector.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplunkHecConfig {
    pub name: String,
    /// The collector's base URL (`http://splunk:8088`).
    pub url: String,
    /// `env:NAME`.
    pub token: String,
    #[serde(default)]
    pub index: Option<String>,
    #[serde(default = "warden_sourcetype")]
    pub sourcetype: String,
    /// Wait for indexer acknowledgement (the token must have it enabled).
    #[serde(default)]
    pub ack: bool,
    /// `warden` (the alert as JSON) or `ocsf` (an OCSF Detection Finding).
    #[serde(default = "warden_format")]
    pub format: String,
    #[serde(default)]
    pub send_resolved: Option<bool>,
}

fn warden_sourcetype() -> String {
    "warden:alert".to_owned()
}

fn warden_format() -> String {
    "warden".to_owned()
}

/// OCSF Detection Findings (class 2004), as JSON lines to a file or POSTed to a URL.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OcsfConfig {
    pub name: String,
    /// `file:///path/findings.jsonl` or an `http(s)://` URL (or `env:NAME`).
    pub url: String,
    #[serde(default)]
    pub send_resolved: Option<bool>,
}

impl ReceiverConfig {
    pub fn name(&self) -> &str {
        match self {
            Self::Slack(c) => &c.name,
            Self::Webhook(c) => &c.name,
            Self::Email(c) => &c.name,
            Self::Syslog(c) => &c.name,
            Self::SplunkHec(c) => &c.name,
            Self::Ocsf(c) => &c.name,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Slack(_) => "slack",
            Self::Webhook(_) => "webhook",
            Self::Email(_) => "email",
            Self::Syslog(_) => "syslog",
            Self::SplunkHec(_) => "splunk_hec",
            Self::Ocsf(_) => "ocsf",
        }
    }

    /// `send_resolved` as set, else Alertmanager's default: false for Slack and email,
    /// true for the others.
    fn send_resolved(&self) -> bool {
        let (set, default) = match self {
            Self::Slack(c) => (c.send_resolved, false),
            Self::Email(c) => (c.send_resolved, false),
            Self::Webhook(c) => (c.send_resolved, true),
            Self::Syslog(c) => (c.send_resolved, true),
            Self::SplunkHec(c) => (c.send_resolved, true),
            Self::Ocsf(c) => (c.send_resolved, true),
        };
        set.unwrap_or(default)
    }
}

/// A receiver, validated: its secrets resolved.
#[derive(Debug, Clone)]
pub struct ReceiverSettings {
    pub name: String,
    pub send_resolved: bool,
    pub kind: ReceiverKind,
}

/// What a receiver talks to.
#[derive(Debug, Clone)]
pub enum ReceiverKind {
    Slack {
        url: Secret,
        min_interval: Duration,
    },
    Webhook {
        url: Secret,
        bearer_token: Option<Secret>,
        max_alerts: usize,
    },
    Email(EmailConfig, Option<Secret>),
    Syslog(SyslogConfig),
    SplunkHec(SplunkHecConfig, Secret),
    Ocsf {
        url: Secret,
    },
}

impl ReceiverKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Slack { .. } => "slack",
            Self::Webhook { .. } => "webhook",
            Self::Email(..) => "email",
            Self::Syslog(_) => "syslog",
            Self::SplunkHec(..) => "splunk_hec",
            Self::Ocsf { .. } => "ocsf",
        }
    }
}

/// An inhibition rule, validated.
#[derive(Debug, Clone)]
pub struct InhibitRule {
    pub source: Matchers,
    pub target: Matchers,
    pub equal: Vec<LabelName>,
}

/// `[respond]`, validated.
#[derive(Debug, Clone)]
pub struct RespondSettings {
    pub enabled: bool,
    pub receivers: Vec<ReceiverSettings>,
    pub routes: RouteTree,
    pub inhibit_rules: Vec<InhibitRule>,
    pub group_id: String,
    pub max_attempts: u32,
    pub max_backoff: Duration,
}

/// The bounds of the timers, in seconds.
const MAX_GROUP_WAIT_S: u64 = 3_600;
const MAX_GROUP_INTERVAL_S: u64 = 86_400;
const MAX_REPEAT_INTERVAL_S: u64 = 30 * 86_400;

impl RespondConfig {
    /// The `[respond]` table of a TOML document (other tables ignored), for tools, tests
    /// and benches that hold only this section.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        #[derive(Deserialize)]
        struct Document {
            #[serde(default)]
            respond: RespondConfig,
        }
        toml::from_str::<Document>(text)
            .map(|document| document.respond)
            .map_err(|err| err.to_string())
    }

    /// Validates the section; `env` resolves `env:NAME` references.
    pub fn validate(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<RespondSettings, Vec<String>> {
        let mut errors = Vec::new();
        let mut receivers = Vec::new();
        for (index, receiver) in self.receivers.iter().enumerate() {
            let path = format!("respond.receivers[{index}]");
            if receiver.name().trim().is_empty() {
                errors.push(format!("{path}.name: must not be empty"));
            } else if self.receivers[..index]
                .iter()
                .any(|other| other.name() == receiver.name())
            {
                errors.push(format!(
                    "{path}.name: {:?} names another receiver too",
                    receiver.name()
                ));
            }
            if let Some(kind) = validate_receiver(receiver, &path, env, &mut errors) {
                receivers.push(ReceiverSettings {
                    name: receiver.name().to_owned(),
                    send_resolved: receiver.send_resolved(),
                    kind,
                });
            }
        }
        let names: Vec<&str> = self.receivers.iter().map(ReceiverConfig::name).collect();
        let root_timing = Timing {
            group_wait: Duration::from_secs(self.group_wait_s),
            group_interval: Duration::from_secs(self.group_interval_s),
            repeat_interval: Duration::from_secs(self.repeat_interval_s),
        };
        check_timing(&root_timing, "respond", &mut errors);
        let root_group_by = parse_group_by(&self.group_by, "respond.group_by", &mut errors);
        check_receivers(
            &self.default_receivers,
            &names,
            "respond.default_receivers",
            &mut errors,
        );
        let children = self
            .routes
            .iter()
            .enumerate()
            .map(|(index, route)| {
                build_route(
                    route,
                    &format!("respond.routes[{index}]"),
                    &root_group_by,
                    &root_timing,
                    &names,
                    &mut errors,
                )
            })
            .collect();
        let routes = RouteTree::new(Route {
            id: "respond".to_owned(),
            matchers: Matchers::default(),
            receivers: self.default_receivers.clone(),
            group_by: root_group_by,
            timing: root_timing,
            continue_matching: false,
            children,
        });
        let mut inhibit_rules = Vec::new();
        for (index, rule) in self.inhibit_rules.iter().enumerate() {
            let path = format!("respond.inhibit_rules[{index}]");
            let source = matchers(
                &rule.source_match,
                &rule.source_match_re,
                &path,
                "source",
                &mut errors,
            );
            let target = matchers(
                &rule.target_match,
                &rule.target_match_re,
                &path,
                "target",
                &mut errors,
            );
            if target.is_empty() {
                errors.push(format!(
                    "{path}: target_match or target_match_re must say which alerts are muted"
                ));
            }
            let equal = rule
                .equal
                .iter()
                .enumerate()
                .filter_map(|(at, name)| {
                    LabelName::parse(name)
                        .map_err(|err| errors.push(format!("{path}.equal[{at}]: {err}")))
                        .ok()
                })
                .collect();
            inhibit_rules.push(InhibitRule {
                source,
                target,
                equal,
            });
        }
        if self.group_id.trim().is_empty() {
            errors.push("respond.group_id: must not be empty".to_owned());
        }
        if !(1..=100).contains(&self.max_attempts) {
            errors.push("respond.max_attempts: must be between 1 and 100".to_owned());
        }
        if !(1..=3_600).contains(&self.max_backoff_s) {
            errors.push("respond.max_backoff_s: must be between 1 and 3600".to_owned());
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(RespondSettings {
            enabled: self.enabled,
            receivers,
            routes,
            inhibit_rules,
            group_id: self.group_id.clone(),
            max_attempts: self.max_attempts,
            max_backoff: Duration::from_secs(self.max_backoff_s),
        })
    }
}

fn check_timing(timing: &Timing, path: &str, errors: &mut Vec<String>) {
    let seconds = |duration: Duration| duration.as_secs();
    if seconds(timing.group_wait) > MAX_GROUP_WAIT_S {
        errors.push(format!("{path}.group_wait_s: at most {MAX_GROUP_WAIT_S}"));
    }
    if !(1..=MAX_GROUP_INTERVAL_S).contains(&seconds(timing.group_interval)) {
        errors.push(format!(
            "{path}.group_interval_s: between 1 and {MAX_GROUP_INTERVAL_S}"
        ));
    }
    if seconds(timing.repeat_interval) < seconds(timing.group_interval)
        || seconds(timing.repeat_interval) > MAX_REPEAT_INTERVAL_S
    {
        errors.push(format!(
            "{path}.repeat_interval_s: between group_interval_s and {MAX_REPEAT_INTERVAL_S}"
        ));
    }
}

fn parse_group_by(names: &[String], path: &str, errors: &mut Vec<String>) -> GroupBy {
    if names.iter().any(|name| name == "...") {
        if names.len() > 1 {
            errors.push(format!("{path}: \"...\" (no grouping) stands alone"));
        }
        return GroupBy::EveryAlert;
    }
    let mut labels = Vec::new();
    for (index, name) in names.iter().enumerate() {
        match LabelName::parse(name) {
            Ok(label) if !labels.contains(&label) => labels.push(label),
            Ok(_) => errors.push(format!("{path}[{index}]: {name:?} is listed twice")),
            Err(err) => errors.push(format!("{path}[{index}]: {err}")),
        }
    }
    GroupBy::Labels(labels)
}

fn check_receivers(listed: &[String], known: &[&str], path: &str, errors: &mut Vec<String>) {
    for (index, name) in listed.iter().enumerate() {
        if !known.contains(&name.as_str()) {
            errors.push(format!("{path}[{index}]: no receiver named {name:?}"));
        }
    }
}

fn matchers(
    equal: &BTreeMap<String, String>,
    regex: &BTreeMap<String, String>,
    path: &str,
    prefix: &str,
    errors: &mut Vec<String>,
) -> Matchers {
    let (equal_key, regex_key) = if prefix.is_empty() {
        ("match".to_owned(), "match_re".to_owned())
    } else {
        (format!("{prefix}_match"), format!("{prefix}_match_re"))
    };
    let mut matchers = Vec::new();
    for (name, value) in equal {
        match LabelName::parse(name) {
            Ok(label) => matchers.push(Matcher::equal(label, value.clone())),
            Err(err) => errors.push(format!("{path}.{equal_key}.{name}: {err}")),
        }
    }
    for (name, pattern) in regex {
        match LabelName::parse(name).and_then(|label| Matcher::regex(label, pattern)) {
            Ok(matcher) => matchers.push(matcher),
            Err(err) => errors.push(format!("{path}.{regex_key}.{name}: {err}")),
        }
    }
    Matchers(matchers)
}

fn build_route(
    config: &RouteConfig,
    path: &str,
    parent_group_by: &GroupBy,
    parent_timing: &Timing,
    receivers: &[&str],
    errors: &mut Vec<String>,
) -> Route {
    let matchers = matchers(&config.matches, &config.match_re, path, "", errors);
    check_receivers(
        &config.receivers,
        receivers,
        &format!("{path}.receivers"),
        errors,
    );
    let group_by = match &config.group_by {
        Some(names) => parse_group_by(names, &format!("{path}.group_by"), errors),
        None => parent_group_by.clone(),
    };
    let inherit = |own: Option<u64>, parent: Duration| own.map_or(parent, Duration::from_secs);
    let timing = Timing {
        group_wait: inherit(config.group_wait_s, parent_timing.group_wait),
        group_interval: inherit(config.group_interval_s, parent_timing.group_interval),
        repeat_interval: inherit(config.repeat_interval_s, parent_timing.repeat_interval),
    };
    check_timing(&timing, path, errors);
    if config.receivers.is_empty() && config.routes.is_empty() {
        errors.push(format!(
            "{path}: a route without receivers or child routes would drop what it matches"
        ));
    }
    let children = config
        .routes
        .iter()
        .enumerate()
        .map(|(index, child)| {
            build_route(
                child,
                &format!("{path}.routes[{index}]"),
                &group_by,
                &timing,
                receivers,
                errors,
            )
        })
        .collect();
    Route {
        id: path.trim_start_matches("respond.").to_owned(),
        matchers,
        receivers: config.receivers.clone(),
        group_by,
        timing,
        continue_matching: config.continue_matching,
        children,
    }
}

/// `env:NAME` resolved, or a plain value where plain values are allowed.
fn secret(
    value: &str,
    path: &str,
    plain_allowed: bool,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<String>,
) -> Option<Secret> {
    match value.strip_prefix("env:") {
        Some(name) => match env(name) {
            Some(resolved) if !resolved.is_empty() => Some(Secret(resolved)),
            _ => {
                errors.push(format!("{path}: env var {name} is not set"));
                None
            }
        },
        None if plain_allowed => Some(Secret(value.to_owned())),
        None => {
            errors.push(format!(
                "{path}: must be a reference like \"env:NAME\" (it is a credential), not an \
                 inline value"
            ));
            None
        }
    }
}

/// Whether `url` (resolved) is an http(s) URL with a host.
fn check_http_url(url: &Secret, path: &str, errors: &mut Vec<String>) {
    match url::Url::parse(url.expose()) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.has_host() => {}
        // The value may be a credential: never quote it.
        _ => errors.push(format!("{path}: not an http(s) URL")),
    }
}

fn validate_receiver(
    receiver: &ReceiverConfig,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<String>,
) -> Option<ReceiverKind> {
    match receiver {
        ReceiverConfig::Slack(config) => {
            let url = secret(&config.url, &format!("{path}.url"), false, env, errors)?;
            check_http_url(&url, &format!("{path}.url"), errors);
            if !(config.max_per_second > 0.0 && config.max_per_second <= 100.0) {
                errors.push(format!("{path}.max_per_second: between 0 and 100"));
                return None;
            }
            Some(ReceiverKind::Slack {
                url,
                min_interval: Duration::from_secs_f64(1.0 / config.max_per_second),
            })
        }
        ReceiverConfig::Webhook(config) => {
            let url = secret(&config.url, &format!("{path}.url"), true, env, errors)?;
            check_http_url(&url, &format!("{path}.url"), errors);
            let bearer_token = match &config.bearer_token {
                Some(token) => Some(secret(
                    token,
                    &format!("{path}.bearer_token"),
                    false,
                    env,
                    errors,
                )?),
                None => None,
            };
            Some(ReceiverKind::Webhook {
                url,
                bearer_token,
                max_alerts: config.max_alerts,
            })
        }
        ReceiverConfig::Email(config) => {
            match url::Url::parse(&config.smtp) {
                Ok(smtp) if matches!(smtp.scheme(), "smtp" | "smtps") && smtp.has_host() => {}
                _ => errors.push(format!(
                    "{path}.smtp: {:?} is not smtp://host:port or smtps://host:port",
                    config.smtp
                )),
            }
            if config.to.is_empty() {
                errors.push(format!("{path}.to: name at least one address"));
            }
            for (field, address) in std::iter::once(("from".to_owned(), &config.from)).chain(
                config
                    .to
                    .iter()
                    .enumerate()
                    .map(|(index, to)| (format!("to[{index}]"), to)),
            ) {
                if !is_mail_address(address) {
                    errors.push(format!(
                        "{path}.{field}: {address:?} is not an email address"
                    ));
                }
            }
            let password = match &config.password {
                Some(password) => Some(secret(
                    password,
                    &format!("{path}.password"),
                    false,
                    env,
                    errors,
                )?),
                None => None,
            };
            if password.is_some() != config.username.is_some() {
                errors.push(format!("{path}: username and password go together"));
            }
            Some(ReceiverKind::Email(config.clone(), password))
        }
        ReceiverConfig::Syslog(config) => {
            match url::Url::parse(&config.address) {
                Ok(address)
                    if matches!(address.scheme(), "udp" | "tcp" | "tls")
                        && address.has_host()
                        && address.port().is_some() => {}
                _ => errors.push(format!(
                    "{path}.address: {:?} is not udp://, tcp:// or tls://host:port",
                    config.address
                )),
            }
            if !matches!(config.format.as_str(), "cef" | "rfc5424-json") {
                errors.push(format!(
                    "{path}.format: {:?} is not cef or rfc5424-json",
                    config.format
                ));
            }
            Some(ReceiverKind::Syslog(config.clone()))
        }
        ReceiverConfig::SplunkHec(config) => {
            let token = secret(&config.token, &format!("{path}.token"), false, env, errors)?;
            check_http_url(&Secret(config.url.clone()), &format!("{path}.url"), errors);
            if !matches!(config.format.as_str(), "warden" | "ocsf") {
                errors.push(format!(
                    "{path}.format: {:?} is not warden or ocsf",
                    config.format
                ));
            }
            Some(ReceiverKind::SplunkHec(config.clone(), token))
        }
        ReceiverConfig::Ocsf(config) => {
            let url = secret(&config.url, &format!("{path}.url"), true, env, errors)?;
            match url::Url::parse(url.expose()) {
                Ok(parsed) if parsed.scheme() == "file" => {}
                _ => check_http_url(&url, &format!("{path}.url"), errors),
            }
            Some(ReceiverKind::Ocsf { url })
        }
    }
}

/// A plausible address: one `@`, something on both sides, no spaces or angle brackets.
fn is_mail_address(address: &str) -> bool {
    address.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty()
            && domain.contains('.')
            && !domain.contains('@')
            && !address.contains(|c: char| c.is_whitespace() || c == '<' || c == '>')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> RespondConfig {
        RespondConfig::from_toml(text).expect("parses")
    }

    fn env(name: &str) -> Option<String> {
        (name == "SLACK_WEBHOOK_URL").then(|| "https://hooks.slack.test/services/T/B/secret".into())
    }

    #[test]
    fn the_contract_example_validates_with_alertmanager_defaults() {
        let config = parse(
            r#"
            [respond]
            default_receivers = ["bridge"]
            [[respond.receivers]]
            name = "sec-slack"
            kind = "slack"
            url = "env:SLACK_WEBHOOK_URL"
            send_resolved = true
            [[respond.receivers]]
            name = "bridge"
            kind = "webhook"
            url = "http://127.0.0.1:9000/hook"
            [[respond.routes]]
            match = { severity = "critical" }
            receivers = ["sec-slack", "bridge"]
            group_by = ["detector", "subject"]
            continue = false
            "#,
        );
        let settings = config.validate(&env).expect("valid");
        assert_eq!(settings.receivers.len(), 2);
        assert!(settings.receivers[0].send_resolved);
        assert!(
            settings.receivers[1].send_resolved,
            "webhooks default to true"
        );
        let root = settings.routes.root();
        assert_eq!(root.timing.group_wait, Duration::from_secs(30));
        assert_eq!(root.timing.group_interval, Duration::from_secs(300));
        assert_eq!(root.timing.repeat_interval, Duration::from_secs(14_400));
        assert!(
            !format!("{settings:?}").contains("secret"),
            "no secret in Debug"
        );
    }

    #[test]
    fn every_problem_is_named_by_its_key() {
        let config = parse(
            r#"
            [respond]
            group_interval_s = 0
            default_receivers = ["nobody"]
            [[respond.receivers]]
            name = "slack"
            kind = "slack"
            url = "https://hooks.slack.test/inline-secret"
            [[respond.receivers]]
            name = "slack"
            kind = "webhook"
            url = "env:UNSET"
            [[respond.routes]]
            match = { colour = "red" }
            match_re = { detector = "(" }
            receivers = ["pager"]
            [[respond.inhibit_rules]]
            source_match = { severity = "critical" }
            equal = ["size"]
            "#,
        );
        let errors = config.validate(&env).expect_err("invalid");
        let expected = [
            "respond.receivers[0].url: must be a reference",
            "respond.receivers[1].name: \"slack\" names another receiver too",
            "respond.receivers[1].url: env var UNSET is not set",
            "respond.group_interval_s: between 1",
            "respond.default_receivers[0]: no receiver named \"nobody\"",
            "respond.routes[0].match.colour: unknown label",
            "respond.routes[0].match_re.detector: \"(\" is not a regular expression",
            "respond.routes[0].receivers[0]: no receiver named \"pager\"",
            "respond.inhibit_rules[0]: target_match",
            "respond.inhibit_rules[0].equal[0]: unknown label \"size\"",
        ];
        for needle in expected {
            assert!(
                errors.iter().any(|error| error.contains(needle)),
                "missing {needle:?} in {errors:#?}"
            );
        }
        assert!(
            !errors.iter().any(|error| error.contains("inline-secret")),
            "a credential is never quoted: {errors:#?}"
        );
    }

    #[test]
    fn an_unknown_key_in_a_receiver_is_refused() {
        let err = RespondConfig::from_toml(
            r##"
            [[respond.receivers]]
            name = "s"
            kind = "slack"
            url = "env:X"
            chanel = "#sec"
            "##,
        )
        .expect_err("refused");
        assert!(err.contains("chanel"), "{err}");
    }
}
