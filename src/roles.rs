//! Wiring of the roles: what each subcommand starts, and the shutdown order that keeps every
//! accepted event: stop taking calls → flush the publisher into Kafka → let the archiver drain
//! the topic and write its last files → stop the broker.

use std::io::Write;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use warden_detectors::run_detect_worker;
use warden_ingest::kafka::{EmbeddedBroker, KafkaCluster, KafkaEventPublisher};
use warden_ingest::layout::{ARCHIVE_TABLES, ArchiveUrl};
use warden_ingest::{AuditStats, event_channel_with};
use warden_proxy::ProxyState;
use warden_proxy::control::ControlPlane;
use warden_sinks::archive::{Archiver, ParquetArchive, ShutdownMode, Table, retention};
use warden_sinks::respond::Responder;
use warden_sinks::runbooks::{RunbookClient, RunbookEngine, RunbookInputs, RunbookTarget};
use warden_sql::{ArchiveSession, OutputFormat};

use crate::config::ValidatedConfig;

/// `warden up`: every role in one process. The proxy serves at once; the workers join
/// their consumer groups as soon as Kafka answers.
pub async fn up(config: ValidatedConfig) -> anyhow::Result<()> {
    let embedded = start_embedded_broker(&config)?;
    let cluster = KafkaCluster::new(&config.kafka, embedded.as_ref());
    let workers = CancellationToken::new();
    let worker_tasks = tokio::spawn(run_workers(
        cluster.clone(),
        config.clone(),
        workers.clone(),
    ));
    let proxy = RunningProxy::start(&config, &cluster).await?;
    info!("warden is up: proxy serving; archive and detect start once kafka answers");

    let proxy_result = proxy.run_until_signal().await;
    workers.cancel();
    let archived = worker_tasks.await.context("worker tasks")??;
    info!(events = archived, "warden stopped");
    drop(embedded);
    proxy_result
}

/// The archive and detect workers of `warden up`; returns how many events were archived.
async fn run_workers(
    cluster: KafkaCluster,
    config: ValidatedConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<u64> {
    tokio::select! {
        () = cluster.wait_until_ready() => {}
        () = shutdown.cancelled() => return Ok(0),
    }
    let archiver = Archiver::new(&cluster, &config.archive).context("starting the archiver")?;
    let (archived, detected, responded) = tokio::join!(
        archiver.run(shutdown.clone(), ShutdownMode::DrainTopic),
        run_detect_worker(&cluster, &config.detect, shutdown.clone()),
        run_responder(&cluster, &config, shutdown.clone()),
    );
    detected.context("starting detect")?;
    responded.context("starting respond")?;
    Ok(archived.rows(Table::Events))
}

/// `warden proxy`: the HTTP front door and its event publisher. It starts whether or not
/// Kafka answers: until it does, events wait in the disk spool.
pub async fn proxy(config: ValidatedConfig) -> anyhow::Result<()> {
    let embedded = start_embedded_broker(&config)?;
    if embedded.is_some() {
        warn!(
            "the proxy role alone on the embedded broker keeps events in this process only; \
             set [kafka].brokers, or use `warden up`"
        );
    }
    let cluster = KafkaCluster::new(&config.kafka, embedded.as_ref());
    let result = RunningProxy::start(&config, &cluster)
        .await?
        .run_until_signal()
        .await;
    drop(embedded);
    result
}

/// `warden archive`: one member of the archive consumer group.
pub async fn archive(config: ValidatedConfig) -> anyhow::Result<()> {
    let Some(cluster) = connect_external(&config).await? else {
        return Ok(());
    };
    let shutdown = CancellationToken::new();
    let archiver = Archiver::new(&cluster, &config.archive).context("starting the archiver")?;
    let task = tokio::spawn(archiver.run(shutdown.clone(), ShutdownMode::FlushPending));
    shutdown_signal().await;
    shutdown.cancel();
    task.await.context("archiver task")?;
    Ok(())
}

/// `warden archive prune`: lists (dry run) or removes the day partitions past retention.
pub async fn prune(config: &ValidatedConfig, apply: bool) -> anyhow::Result<()> {
    let url = ArchiveUrl::parse(&config.archive.url).map_err(anyhow::Error::msg)?;
    let archive = ParquetArchive::open(&url, &config.archive.s3)?;
    let retention_days = config.archive.retention_days;
    let plan = retention::plan_prune(
        archive.store(),
        ARCHIVE_TABLES,
        retention_days,
        chrono::Utc::now().date_naive(),
    )
    .await?;
    let mut stdout = std::io::stdout().lock();
    let verb = if apply { "removing" } else { "would remove" };
    for partition in &plan.expired {
        writeln!(
            stdout,
            "{verb} {}/ ({} objects, {} bytes)",
            partition.prefix, partition.num_objects, partition.bytes
        )?;
    }
    let objects: usize = plan.expired.iter().map(|p| p.num_objects).sum();
    let summary = format!(
        "retention {retention_days} days: {} day partitions before {}, {objects} objects",
        plan.expired.len(),
        plan.removed_before
    );
    if apply {
        let deleted = retention::apply_prune(archive.store(), &plan).await?;
        writeln!(stdout, "{summary}: {deleted} objects removed")?;
    } else {
        writeln!(
            stdout,
            "{summary}: dry run, nothing removed (--apply removes them)"
        )?;
    }
    stdout.flush()?;
    Ok(())
}

/// `warden detect`: one member of the detect consumer group.
pub async fn detect(config: ValidatedConfig) -> anyhow::Result<()> {
    let Some(cluster) = connect_external(&config).await? else {
        return Ok(());
    };
    let shutdown = CancellationToken::new();
    let mut worker = {
        let (cluster, detect, shutdown) =
            (cluster.clone(), config.detect.clone(), shutdown.clone());
        tokio::spawn(async move { run_detect_worker(&cluster, &detect, shutdown).await })
    };
    tokio::select! {
        () = shutdown_signal() => shutdown.cancel(),
        finished = &mut worker => {
            finished.context("detect task")?.context("starting detect")?;
            return Ok(());
        }
    }
    worker
        .await
        .context("detect task")?
        .context("starting detect")?;
    Ok(())
}

/// The respond role: the responder (unless `[respond].enabled = false`, or no receiver is
/// configured: nobody to tell) and the runbook engine (unless `[runbooks].enabled = false`),
/// side by side.
async fn run_responder(
    cluster: &KafkaCluster,
    config: &ValidatedConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let notify = async {
        if !config.respond.enabled {
            return Ok(());
        }
        if config.respond.receivers.is_empty() {
            info!("no [[respond.receivers]]: alerts are archived, nobody is notified");
            return Ok(());
        }
        Responder::new(cluster, config.respond.clone())
            .run(shutdown.clone())
            .await
            .map_err(anyhow::Error::from)
    };
    let act = async {
        if !config.runbooks.enabled {
            return Ok(());
        }
        runbook_engine(cluster, config)
            .run(shutdown.clone())
            .await
            .map_err(anyhow::Error::from)
    };
    let (notified, acted) = tokio::join!(notify, act);
    notified.context("the responder")?;
    acted.context("the runbook engine")
}

/// The runbook engine, given the proxy's targets and clients, `[hf_api]`, the responder's
/// receivers and the archive's reports.
fn runbook_engine(cluster: &KafkaCluster, config: &ValidatedConfig) -> RunbookEngine {
    let targets: Vec<RunbookTarget> = config
        .proxy
        .targets
        .iter()
        .map(|target| RunbookTarget {
            id: target.id.clone(),
            endpoint: target.endpoint.clone(),
            min_replicas: target.min_replicas,
        })
        .collect();
    if config.hf_api.is_none() && targets.iter().any(|target| target.endpoint.is_some()) {
        warn!(
            "targets name Inference Endpoints but [hf_api] has no token: the runaway-cost \
             runbook cannot scale them (its scaling steps are skipped)"
        );
    }
    let inputs = RunbookInputs {
        targets,
        clients: config
            .proxy
            .clients
            .iter()
            .map(|client| RunbookClient {
                name: client.name.clone(),
                owner_receiver: client.owner_receiver.clone(),
                critical: client.critical,
            })
            .collect(),
        hf_api: config.hf_api.clone(),
        receivers: config.respond.receivers.clone(),
        reports: Some(Arc::new(crate::incident::SqlReports::new(config))),
    };
    RunbookEngine::new(cluster, config.runbooks.clone(), inputs)
}

/// `warden respond`: alerts to the configured receivers, and the runbooks.
pub async fn respond(config: ValidatedConfig) -> anyhow::Result<()> {
    anyhow::ensure!(
        !config.respond.receivers.is_empty() || config.runbooks.enabled,
        "respond.receivers: configure at least one receiver to deliver alerts to (or enable \
         [runbooks])"
    );
    let Some(cluster) = connect_external(&config).await? else {
        return Ok(());
    };
    cluster
        .ensure_topics()
        .await
        .context("creating the responder's topics")?;
    let shutdown = CancellationToken::new();
    let mut worker = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move { run_responder(&cluster, &config, shutdown).await })
    };
    tokio::select! {
        () = shutdown_signal() => shutdown.cancel(),
        finished = &mut worker => {
            finished.context("respond task")??;
            return Ok(());
        }
    }
    worker.await.context("respond task")??;
    Ok(())
}

/// `warden sql`: one query over the archive, printed to stdout.
pub async fn sql(
    config: &ValidatedConfig,
    query: &str,
    format: OutputFormat,
) -> anyhow::Result<()> {
    let session = ArchiveSession::open(&config.archive.url, &config.archive.s3)?
        .with_views()
        .await?;
    let result = session.query(query).await?;
    let mut stdout = std::io::stdout().lock();
    warden_sql::write_result(&result, format, &mut stdout)?;
    stdout.flush()?;
    Ok(())
}

/// `warden verify`: the archive checked against its manifest chains.
pub async fn verify(
    config: &ValidatedConfig,
    since: Option<chrono::DateTime<chrono::Utc>>,
) -> anyhow::Result<()> {
    let url = ArchiveUrl::parse(&config.archive.url).map_err(anyhow::Error::msg)?;
    let archive = ParquetArchive::open(&url, &config.archive.s3)?;
    let options = warden_sinks::archive::VerifyOptions {
        since,
        retention_days: Some(config.archive.retention_days),
        verifier: config.archive.verifier(),
        digest_grace: config.archive.digest_grace(),
        now: chrono::Utc::now(),
    };
    let report = warden_sinks::archive::verify(archive.store(), &options).await?;
    let mut stdout = std::io::stdout().lock();
    for problem in &report.problems {
        writeln!(stdout, "{problem}")?;
    }
    for note in &report.notes {
        writeln!(stdout, "NOTE      {note}")?;
    }
    writeln!(
        stdout,
        "{} chains, {} entries, {} digests, {} objects checked ({} rows): {}",
        report.num_chains,
        report.num_entries,
        report.num_digests,
        report.num_objects_checked,
        report.num_rows,
        if report.is_clean() {
            "OK".to_owned()
        } else {
            format!("{} problems", report.problems.len())
        }
    )?;
    stdout.flush()?;
    anyhow::ensure!(report.is_clean(), "the archive does not match its manifest");
    Ok(())
}

fn start_embedded_broker(config: &ValidatedConfig) -> anyhow::Result<Option<EmbeddedBroker>> {
    if !config.kafka.is_embedded() {
        return Ok(None);
    }
    Ok(Some(
        EmbeddedBroker::start(&config.kafka).context("starting the embedded broker")?,
    ))
}

/// Worker roles on their own read what other processes wrote: they need a real broker.
/// Waits until it answers; `None` if told to stop first.
async fn connect_external(config: &ValidatedConfig) -> anyhow::Result<Option<KafkaCluster>> {
    anyhow::ensure!(
        !config.kafka.is_embedded(),
        "this role reads what other processes wrote and needs a real broker: set \
         [kafka].brokers (or run everything in one process with `warden up`)"
    );
    let cluster = KafkaCluster::new(&config.kafka, None);
    tokio::select! {
        () = cluster.wait_until_ready() => Ok(Some(cluster)),
        () = shutdown_signal() => Ok(None),
    }
}

/// The proxy server and the publisher draining its events into Kafka.
struct RunningProxy {
    server: JoinHandle<std::io::Result<()>>,
    /// `/metrics` on `[proxy].admin_listen`; holds the state (and so the emitter) too.
    admin: JoinHandle<std::io::Result<()>>,
    /// Follows warden.control for as long as the proxy runs.
    follower: JoinHandle<()>,
    /// Reloads the clients from the config file on SIGHUP.
    reloader: Option<JoinHandle<()>>,
    publisher: JoinHandle<()>,
    audit_stats: Arc<AuditStats>,
    shutdown: CancellationToken,
}

impl RunningProxy {
    async fn start(config: &ValidatedConfig, cluster: &KafkaCluster) -> anyhow::Result<Self> {
        let (emitter, events) = event_channel_with(config.audit.channel_options());
        let audit_stats = events.stats_handle();
        let publisher = KafkaEventPublisher::spawn(cluster, events, &config.audit)
            .context("starting the event publisher")?;
        let mut settings = config.proxy.clone();
        settings.fingerprinter = crate::keys::deployment_fingerprinter(&settings)?;
        // The state owns the only emitter: when the server stops, the publisher's channel
        // closes and it flushes.
        // What warden.control put in force: from disk at once, then followed live.
        let control = ControlPlane::load(&settings.control_state_file);
        let follower = tokio::spawn(control.clone().follow(cluster.clone()));
        let state = ProxyState::with_control(settings, emitter, control)?;
        let listener = TcpListener::bind(config.proxy.listen)
            .await
            .with_context(|| format!("proxy.listen: cannot listen on {}", config.proxy.listen))?;
        let admin_listen = config.proxy.admin_listen;
        let admin_listener = TcpListener::bind(admin_listen)
            .await
            .with_context(|| format!("proxy.admin_listen: cannot listen on {admin_listen}"))?;
        let shutdown = CancellationToken::new();
        let admin = tokio::spawn(warden_proxy::serve_admin(
            admin_listener,
            state.clone(),
            shutdown.clone(),
        ));
        let reloader = config
            .source
            .clone()
            .map(|path| tokio::spawn(reload_clients_on_hangup(path, state.clone())));
        let server = tokio::spawn(warden_proxy::serve(listener, state, shutdown.clone()));
        Ok(Self {
            server,
            admin,
            follower,
            reloader,
            publisher,
            audit_stats,
            shutdown,
        })
    }

    /// Serves until Ctrl-C / SIGTERM (or the server fails), then stops taking calls, finishes
    /// the ones in flight, and flushes their events into Kafka.
    async fn run_until_signal(mut self) -> anyhow::Result<()> {
        let served = tokio::select! {
            () = shutdown_signal() => {
                info!("shutting down: finishing in-flight calls");
                self.shutdown.cancel();
                (&mut self.server).await
            }
            finished = &mut self.server => finished,
        };
        // The admin listener holds the emitter too: stop it before waiting for the flush.
        self.shutdown.cancel();
        self.follower.abort();
        if let Some(reloader) = &self.reloader {
            reloader.abort();
        }
        self.admin
            .await
            .context("admin task")?
            .context("admin server")?;
        self.publisher.await.context("event publisher task")?;
        let stats = &self.audit_stats;
        info!(
            emitted = stats.num_emitted(),
            delivered = stats.num_delivered(),
            spooled = stats.num_spooled(),
            replayed = stats.num_replayed(),
            dropped = stats.num_dropped(),
            "proxy stopped"
        );
        served.context("proxy task")?.context("proxy server")
    }
}

/// On each SIGHUP, reads the config file again and replaces the proxy's clients with its
/// `[[proxy.clients]]` (keys added, rotated out or expired, labels); a config that does not
/// validate is reported and changes nothing.
async fn reload_clients_on_hangup(path: std::path::PathBuf, state: Arc<ProxyState>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            warn!("cannot listen for SIGHUP: clients reload only on restart");
            return;
        };
        while hangups.recv().await.is_some() {
            let reloaded = crate::config::WardenConfig::load(Some(&path))
                .and_then(|(config, _)| config.validate(&warden_proxy::ProcessEnvironment))
                .map_err(|err| format!("{err:#}"))
                .and_then(|config| state.reload_clients(&config.proxy));
            match reloaded {
                Ok(clients) => info!(config = %path.display(), clients, "clients reloaded"),
                Err(err) => error!(
                    config = %path.display(),
                    error = %err,
                    "reloading the clients failed; the ones in use stay"
                ),
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (path, state);
    }
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
