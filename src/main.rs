//! `warden`: the one binary. Parses the command line, loads and validates the config, and
//! wires the roles (proxy, archive, detect, sql) together; the roles themselves live in the
//! workspace crates.

mod config;
mod control;
mod incident;
mod keys;
mod replay;
mod report;
mod roles;
mod silence;
mod simulate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

use warden_detectors::scenario::Scenario;

use crate::config::WardenConfig;

#[derive(Debug, Parser)]
#[command(
    name = "warden",
    version,
    about = "Inline audit proxy and anomaly-detection pipeline for Hugging Face inference"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args)]
struct ConfigArg {
    /// Config file [default: $WARDEN_CONFIG, then ./warden.toml, then built-in defaults]
    #[arg(long, env = "WARDEN_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// All roles in one process; embedded broker unless [kafka].brokers is set.
    Up(ConfigArg),
    /// The HTTP proxy only.
    Proxy(ConfigArg),
    /// The archiver only (warden.events → Parquet); `archive prune` applies retention.
    #[command(args_conflicts_with_subcommands = true)]
    Archive {
        #[command(flatten)]
        config: ConfigArg,
        #[command(subcommand)]
        action: Option<ArchiveAction>,
    },
    /// The responder only: alerts routed, grouped and delivered to the configured receivers
    /// (Slack, email, SIEMs, webhooks), and the runbooks carried out.
    Respond(ConfigArg),
    /// The detectors only; with --replay, a backtest over the archive instead.
    Detect {
        #[command(flatten)]
        config: ConfigArg,
        /// Run the detectors over the archived events of --from..--to and print the alerts
        /// that would have fired (nothing is published).
        #[arg(long, requires = "from")]
        replay: bool,
        /// Start of the replay: YYYY-MM-DD, YYYY-MM-DDTHH or RFC 3339 (UTC).
        #[arg(long, value_parser = parse_since, requires = "replay")]
        from: Option<chrono::DateTime<chrono::Utc>>,
        /// End of the replay (exclusive) [default: now].
        #[arg(long, value_parser = parse_since, requires = "replay")]
        to: Option<chrono::DateTime<chrono::Utc>>,
        /// Print each alert as one JSON object per line.
        #[arg(long, requires = "replay")]
        json: bool,
    },
    /// Check the archive against its manifest and hourly digests: missing, altered or
    /// unlisted objects, breaks in a hash chain, digests that no longer match it, and pruning
    /// beyond retention are named; exits non-zero if there are any.
    Verify {
        #[command(flatten)]
        config: ConfigArg,
        /// Only objects of this hour and later: YYYY-MM-DD, YYYY-MM-DDTHH or RFC 3339.
        #[arg(long, value_parser = parse_since)]
        since: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// Rehearse the detectors on a realistic scenario: by default in this process, printing
    /// the alerts raised and checking them against the scenario's; with --produce, publish
    /// the events to [kafka].brokers for the running workers.
    Simulate {
        #[command(flatten)]
        config: ConfigArg,
        /// benign-day, runaway-cost, traffic-spike, retry-loop, brute-force, token-theft or
        /// capacity-exhaustion.
        #[arg(value_parser = parse_scenario)]
        scenario: Scenario,
        /// Seed of the random traffic (the same seed gives the same events).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// When the scenario starts (RFC 3339) [default: so that it ends a minute ago].
        #[arg(long, value_parser = parse_since)]
        start: Option<chrono::DateTime<chrono::Utc>>,
        /// Publish the events to warden.events instead of running the detectors here.
        #[arg(long)]
        produce: bool,
    },
    /// Client keys: `keys new NAME` makes one and prints the config entry that admits it.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Operator actions every proxy replica applies live (through warden.control), and
    /// `control list`, what is in force.
    Control {
        #[command(subcommand)]
        action: ControlCommand,
    },
    /// Silences: alerts matching every --match are recorded, not delivered, for a while.
    Silence {
        #[command(subcommand)]
        action: SilenceCommand,
    },
    /// Incidents the runbooks opened: their timelines, approvals and undo.
    Incident {
        #[command(subcommand)]
        action: IncidentCommand,
    },
    /// Query the archive with SQL (tables: events, alerts, actions, notifications, incidents).
    Sql {
        #[command(flatten)]
        config: ConfigArg,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// The query, e.g. "SELECT request_id, kind, response.status FROM events" (or
        /// --saved NAME). The `calls` view holds one row per call.
        #[arg(required_unless_present = "saved", conflicts_with = "saved")]
        query: Option<String>,
        /// A saved investigation: top-sources, token-activity, burn-by-hour,
        /// auth-failures-by-ip, retry-loops, incident-timeline.
        #[arg(long)]
        saved: Option<String>,
        /// With --saved: from when (1h, 30m, 7d ago; or YYYY-MM-DD, YYYY-MM-DDTHH, RFC 3339)
        /// [default: 24h].
        #[arg(long, value_parser = parse_when, requires = "saved")]
        since: Option<chrono::DateTime<chrono::Utc>>,
        /// With --saved: until when (exclusive) [default: now].
        #[arg(long, value_parser = parse_when, requires = "saved")]
        until: Option<chrono::DateTime<chrono::Utc>>,
        /// With --saved: a parameter, KEY=VALUE (e.g. token=tok_…, limit=50).
        #[arg(long = "param", value_parser = parse_param, requires = "saved")]
        params: Vec<(String, String)>,
    },
}

/// Who an access action is about: a whole client, or one token (by its id in events).
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
struct AccessSubject {
    /// Every key of this client.
    #[arg(long)]
    client: Option<String>,
    /// One token, by its `token_id` (as events and alerts show it).
    #[arg(long)]
    token_id: Option<String>,
}

impl AccessSubject {
    fn subject(&self) -> warden_ingest::alert::Subject {
        use warden_ingest::alert::Subject;
        match (&self.client, &self.token_id) {
            (Some(client), _) => Subject::Client(client.clone()),
            (None, Some(token)) => Subject::Token(token.clone()),
            (None, None) => unreachable!("clap requires one"),
        }
    }
}

/// Why and who, required on every operator action.
#[derive(Debug, clap::Args)]
struct Attribution {
    /// Why, in one line (kept in the actions table).
    #[arg(long)]
    reason: String,
    /// Who decides (recorded as `operator:NAME`).
    #[arg(long)]
    by: String,
}

#[derive(Debug, Subcommand)]
enum IncidentCommand {
    /// One line per incident, its id first, newest first.
    List(ConfigArg),
    /// An incident's timeline: alerts, reports, each step and its outcome, notifications,
    /// approvals, undo.
    Show {
        #[command(flatten)]
        config: ConfigArg,
        id: String,
    },
    /// Let the steps that wait for approval (infrastructure changes, a critical client's
    /// revocation) run.
    Approve {
        #[command(flatten)]
        config: ConfigArg,
        id: String,
        /// Who approves (recorded as `operator:NAME`).
        #[arg(long)]
        by: String,
    },
    /// Restore the scaling the incident changed and lift the limits it set.
    Undo {
        #[command(flatten)]
        config: ConfigArg,
        id: String,
        /// Who asks (recorded as `operator:NAME`).
        #[arg(long)]
        by: String,
    },
}

#[derive(Debug, Subcommand)]
enum SilenceCommand {
    /// Silence the alerts that match every --match (detector=, severity=, subject=,
    /// subject_kind=, environment=, runbook=, dedup_key=; also !=, =~ regex, !~).
    Add {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long = "match", required = true)]
        matchers: Vec<String>,
        /// How long: 30m, 2h, 1d.
        #[arg(long = "for", value_parser = control::parse_duration)]
        duration: chrono::TimeDelta,
        #[arg(long)]
        comment: String,
        #[arg(long)]
        by: String,
    },
    /// The silences that have not ended.
    List(ConfigArg),
    /// End a silence now.
    Expire {
        #[command(flatten)]
        config: ConfigArg,
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum ControlCommand {
    /// Refuse a client's keys, or one token, on every replica (401 revoked_api_key).
    Revoke {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        who: AccessSubject,
        #[command(flatten)]
        attribution: Attribution,
    },
    /// Undo a revocation.
    Restore {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        who: AccessSubject,
        #[command(flatten)]
        attribution: Attribution,
    },
    /// An emergency rate limit on a subject (global, target:ID, client:NAME, token:ID,
    /// ip:ADDRESS, country:CC), for a while (429 emergency_rate_limit beyond it).
    Limit {
        #[command(flatten)]
        config: ConfigArg,
        /// KIND:VALUE, or global.
        #[arg(long, value_parser = parse_subject)]
        subject: warden_ingest::alert::Subject,
        #[arg(long)]
        requests_per_minute: u64,
        #[arg(long)]
        tokens_per_minute: Option<u64>,
        /// How long it holds: 30m, 2h, 1d.
        #[arg(long = "for", value_parser = control::parse_duration)]
        duration: chrono::TimeDelta,
        #[command(flatten)]
        attribution: Attribution,
    },
    /// Lift an emergency rate limit before it expires.
    Lift {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long, value_parser = parse_subject)]
        subject: warden_ingest::alert::Subject,
        #[command(flatten)]
        attribution: Attribution,
    },
    /// Stop sending calls to a target (its fallbacks serve them, else 503 target_disabled).
    Disable {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        target: String,
        #[command(flatten)]
        attribution: Attribution,
    },
    /// Send calls to a disabled target again.
    Enable {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        target: String,
        #[command(flatten)]
        attribution: Attribution,
    },
    /// Give a configured client one more key on every replica (rotation without editing
    /// configs): a new key is made and printed once, unless --key-sha256 names one.
    AddKey {
        #[command(flatten)]
        config: ConfigArg,
        /// The client, as `[[proxy.clients]]` names it.
        #[arg(long)]
        client: String,
        /// The SHA-256 (hex) of a key made elsewhere.
        #[arg(long)]
        key_sha256: Option<String>,
        /// Its last day (2027-03-01) or instant (RFC 3339); afterwards 401 expired_api_key.
        #[arg(long, value_parser = parse_not_after)]
        not_after: Option<chrono::DateTime<chrono::Utc>>,
        #[command(flatten)]
        attribution: Attribution,
    },
    /// Take back a key `add-key` gave.
    RemoveKey {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        client: String,
        #[arg(long)]
        key_sha256: String,
        #[command(flatten)]
        attribution: Attribution,
    },
    /// One line per action in force.
    List(ConfigArg),
}

impl ControlCommand {
    fn config(&self) -> &ConfigArg {
        match self {
            Self::Revoke { config, .. }
            | Self::Restore { config, .. }
            | Self::Limit { config, .. }
            | Self::Lift { config, .. }
            | Self::Disable { config, .. }
            | Self::Enable { config, .. }
            | Self::AddKey { config, .. }
            | Self::RemoveKey { config, .. }
            | Self::List(config) => config,
        }
    }

    /// The action to publish; `None` for `list`.
    fn operator_action(self) -> Option<control::OperatorAction> {
        use warden_ingest::action::ActionKind;
        use warden_ingest::alert::Subject;
        let plain = |action, subject, attribution: Attribution| control::OperatorAction {
            action,
            subject,
            reason: attribution.reason,
            by: attribution.by,
            requests_per_minute: None,
            tokens_per_minute: None,
            duration: None,
            expires_at: None,
            key: None,
        };
        Some(match self {
            Self::Revoke {
                who, attribution, ..
            } => plain(ActionKind::RevokeToken, who.subject(), attribution),
            Self::Restore {
                who, attribution, ..
            } => plain(ActionKind::RestoreToken, who.subject(), attribution),
            Self::Limit {
                subject,
                requests_per_minute,
                tokens_per_minute,
                duration,
                attribution,
                ..
            } => control::OperatorAction {
                requests_per_minute: Some(requests_per_minute),
                tokens_per_minute,
                duration: Some(duration),
                ..plain(ActionKind::EmergencyRateLimit, subject, attribution)
            },
            Self::Lift {
                subject,
                attribution,
                ..
            } => plain(ActionKind::LiftRateLimit, subject, attribution),
            Self::Disable {
                target,
                attribution,
                ..
            } => plain(
                ActionKind::DisableTarget,
                Subject::Target(target),
                attribution,
            ),
            Self::Enable {
                target,
                attribution,
                ..
            } => plain(
                ActionKind::EnableTarget,
                Subject::Target(target),
                attribution,
            ),
            Self::AddKey {
                client,
                key_sha256,
                not_after,
                attribution,
                ..
            } => control::OperatorAction {
                key: Some(match key_sha256 {
                    Some(digest) => control::KeyToAdd::Given(digest),
                    None => control::KeyToAdd::New,
                }),
                expires_at: not_after,
                ..plain(ActionKind::AddKey, Subject::Client(client), attribution)
            },
            Self::RemoveKey {
                client,
                key_sha256,
                attribution,
                ..
            } => control::OperatorAction {
                key: Some(control::KeyToAdd::Given(key_sha256)),
                ..plain(ActionKind::RemoveKey, Subject::Client(client), attribution)
            },
            Self::List(_) => return None,
        })
    }
}

fn parse_not_after(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    use chrono::SubsecRound;
    warden_proxy::config::parse_not_after(text).map(|instant| instant.trunc_subsecs(6))
}

fn parse_subject(text: &str) -> Result<warden_ingest::alert::Subject, String> {
    text.parse()
}

#[derive(Debug, Subcommand)]
enum ArchiveAction {
    /// Remove the day partitions older than [archive].retention_days. Dry run (lists what
    /// would go) unless --apply is given.
    Prune {
        #[command(flatten)]
        config: ConfigArg,
        /// Delete them.
        #[arg(long)]
        apply: bool,
    },
}

#[derive(Debug, Subcommand)]
enum KeysAction {
    /// Make a key for a client: printed once, with the `[[proxy.clients]]` entry (its
    /// SHA-256) to add to warden.toml.
    New {
        /// The client's name, as events will show it.
        name: String,
    },
    /// Make the archivers' digest signing key pair: the private seed for
    /// `[archive].signing_key` (an env var on the archivers) and the public key for
    /// `[archive].verify_keys`.
    Signing,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Csv,
    Json,
}

impl From<Format> for warden_sql::OutputFormat {
    fn from(format: Format) -> Self {
        match format {
            Format::Table => Self::Table,
            Format::Csv => Self::Csv,
            Format::Json => Self::Json,
        }
    }
}

fn parse_scenario(name: &str) -> Result<Scenario, String> {
    Scenario::from_name(name).ok_or_else(|| {
        let names: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
        format!("{name:?}: expected one of {}", names.join(", "))
    })
}

/// A saved query's `--since` / `--until`: a duration ago (`1h`, `30m`, `7d`), or an instant
/// as `--since` takes it.
fn parse_when(value: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    if value.ends_with(['s', 'm', 'h', 'd']) && value.starts_with(|c: char| c.is_ascii_digit()) {
        return control::parse_duration(value).map(|ago| chrono::Utc::now() - ago);
    }
    parse_since(value)
}

/// `KEY=VALUE`.
fn parse_param(value: &str) -> Result<(String, String), String> {
    value
        .split_once('=')
        .filter(|(key, _)| !key.trim().is_empty())
        .map(|(key, value)| (key.trim().to_owned(), value.to_owned()))
        .ok_or_else(|| format!("{value:?} is not KEY=VALUE"))
}

/// `--since`: a day, an hour, or an RFC 3339 instant, in UTC.
fn parse_since(value: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    use chrono::{NaiveDate, NaiveDateTime, TimeZone, Utc};
    if let Ok(instant) = chrono::DateTime::parse_from_rfc3339(value) {
        return Ok(instant.with_timezone(&Utc));
    }
    if let Ok(hour) = NaiveDateTime::parse_from_str(&format!("{value}:00:00"), "%Y-%m-%dT%H:%M:%S")
    {
        return Ok(Utc.from_utc_datetime(&hour));
    }
    NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .ok()
        .and_then(|day| day.and_hms_opt(0, 0, 0))
        .map(|midnight| Utc.from_utc_datetime(&midnight))
        .ok_or_else(|| format!("{value:?}: expected YYYY-MM-DD, YYYY-MM-DDTHH or RFC 3339"))
}

fn main() -> ExitCode {
    // Everything Warden writes (spool, local archive, digests, incident files) holds audit
    // data: files 0600, directories 0700, whatever umask the process was started with.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("WARDEN_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: starting the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    let config_arg = match &command {
        Command::Keys {
            action: KeysAction::New { name },
        } => return keys::print_new_key(name),
        Command::Keys {
            action: KeysAction::Signing,
        } => return keys::print_signing_key_pair(),
        Command::Up(arg) | Command::Proxy(arg) | Command::Respond(arg) => arg,
        Command::Archive {
            action: Some(ArchiveAction::Prune { config, .. }),
            ..
        }
        | Command::Archive { config, .. }
        | Command::Detect { config, .. }
        | Command::Sql { config, .. }
        | Command::Simulate { config, .. }
        | Command::Verify { config, .. } => config,
        Command::Control { action } => action.config(),
        Command::Silence { action } => match action {
            SilenceCommand::Add { config, .. }
            | SilenceCommand::List(config)
            | SilenceCommand::Expire { config, .. } => config,
        },
        Command::Incident { action } => match action {
            IncidentCommand::List(config)
            | IncidentCommand::Show { config, .. }
            | IncidentCommand::Approve { config, .. }
            | IncidentCommand::Undo { config, .. } => config,
        },
    };
    let (config, path) = WardenConfig::load(config_arg.config.as_deref())?;
    match &path {
        Some(path) => tracing::debug!(config = %path.display(), "config loaded"),
        None => tracing::info!("no config file; using built-in defaults"),
    }
    let mut config = config.validate(&warden_proxy::ProcessEnvironment)?;
    config.source = path;
    match command {
        Command::Keys { .. } => unreachable!("answered before the config is loaded"),
        Command::Control { action } => match action.operator_action() {
            Some(request) => control::publish(&config, request).await,
            None => control::list(&config).await,
        },
        Command::Silence { action } => match action {
            SilenceCommand::Add {
                matchers,
                duration,
                comment,
                by,
                ..
            } => silence::add(&config, matchers, duration, comment, by).await,
            SilenceCommand::List(_) => silence::list(&config).await,
            SilenceCommand::Expire { id, .. } => silence::expire(&config, &id).await,
        },
        Command::Incident { action } => match action {
            IncidentCommand::List(_) => incident::list(&config).await,
            IncidentCommand::Show { id, .. } => incident::show(&config, &id).await,
            IncidentCommand::Approve { id, by, .. } => {
                incident::request(
                    &config,
                    &id,
                    &by,
                    warden_ingest::incident::EntryKind::Approved,
                )
                .await
            }
            IncidentCommand::Undo { id, by, .. } => {
                incident::request(
                    &config,
                    &id,
                    &by,
                    warden_ingest::incident::EntryKind::UndoRequested,
                )
                .await
            }
        },
        Command::Up(_) => roles::up(config).await,
        Command::Proxy(_) => roles::proxy(config).await,
        Command::Respond(_) => roles::respond(config).await,
        Command::Archive { action: None, .. } => roles::archive(config).await,
        Command::Archive {
            action: Some(ArchiveAction::Prune { apply, .. }),
            ..
        } => roles::prune(&config, apply).await,
        Command::Detect {
            replay: true,
            from: Some(from),
            to,
            json,
            ..
        } => {
            let request = replay::ReplayRequest {
                from,
                to: to.unwrap_or_else(chrono::Utc::now),
                json,
            };
            replay::replay(&config, &request).await
        }
        Command::Detect { .. } => roles::detect(config).await,
        Command::Sql {
            format,
            query,
            saved,
            since,
            until,
            params,
            ..
        } => {
            let query = match (query, saved) {
                (Some(query), _) => query,
                (None, Some(name)) => {
                    let saved = warden_sql::saved::find(&name).map_err(anyhow::Error::msg)?;
                    let range = warden_sql::saved::TimeRange {
                        since: since
                            .unwrap_or_else(|| chrono::Utc::now() - chrono::TimeDelta::hours(24)),
                        until,
                    };
                    saved
                        .render(&range, &params.into_iter().collect())
                        .map_err(anyhow::Error::msg)?
                }
                (None, None) => anyhow::bail!("give a query or --saved NAME"),
            };
            roles::sql(&config, &query, format.into()).await
        }
        Command::Verify { since, .. } => roles::verify(&config, since).await,
        Command::Simulate {
            scenario,
            seed,
            start,
            produce,
            ..
        } => {
            let request = simulate::SimulateRequest {
                scenario,
                seed,
                start,
                produce,
            };
            if simulate::simulate(&config, &request).await? {
                Ok(())
            } else {
                anyhow::bail!("the detectors did not raise what {scenario} expects")
            }
        }
    }
}
