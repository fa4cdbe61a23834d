//! Alert → first action latency through the runbook engine: alerts published to
//! `warden.alerts` (the embedded broker, or the brokers in `$WARDEN_BENCH_BROKERS`, e.g. a
//! tansu), each opening an incident in `auto` mode, until the runbook's first change is on
//! `warden.control`:
//!
//! - token compromise: the `revoke_token` (its first step);
//! - runaway cost: the `freeze_autoscaling`, after the burn-rate and top-sources steps and
//!   a `GET` and a `PUT` to the HF Endpoints API emulator on loopback (changes settle at once).
//!
//! 40 alerts of each, 4 a second; prints p50/p90/p99/max per runbook. No archive reports
//! (a report runs after the first action in both runbooks' orders except top sources, whose
//! archive part is bounded by its own timeout; here there is no archive).
//!
//! `cargo bench -p warden-sinks --bench runbook_latency`

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio_util::sync::CancellationToken;
use warden_ingest::action::ControlAction;
use warden_ingest::alert::{Alert, Severity, SourceShare, Subject};
use warden_ingest::kafka::{
    AlertPublisher, EmbeddedBroker, KafkaCluster, KafkaConfig, TopicReader,
};
use warden_ingest::table_record::TableRecord;
use warden_sinks::runbooks::hf_api::HfApiConfig;
use warden_sinks::runbooks::{
    RunbookClient, RunbookEngine, RunbookInputs, RunbookTarget, RunbooksConfig,
};
use warden_testkit::hf_endpoints::{EmulatedEndpoint, HfEndpointsEmulator};

const RATE_PER_SECOND: u64 = 4;
const ALERTS_PER_RUNBOOK: u64 = 40;

type Arrivals = Arc<Mutex<HashMap<String, Instant>>>;

fn token_alert(index: u64) -> Alert {
    let now = Utc::now();
    let mut alert = Alert::firing(
        "geo_new_country",
        Severity::Critical,
        Subject::Token(format!("tok_bench_{index}")),
        (now, now),
    );
    alert.runbook = Some("token_compromise".to_owned());
    alert.with_derived_id()
}

fn runaway_alert(index: u64) -> Alert {
    let now = Utc::now();
    let mut alert = Alert::firing("cost_burn", Severity::Critical, Subject::Global, (now, now))
        .in_environment(Some(&format!("env-{index}")));
    alert.evidence.top_sources = vec![SourceShare {
        source: "client:batch".to_owned(),
        value: 120.0,
    }];
    alert.runbook = Some("runaway_cost".to_owned());
    alert.with_derived_id()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

/// Records when the first action about each alert (by dedup key) reaches `warden.control`.
async fn follow_control(cluster: KafkaCluster, arrivals: Arrivals) {
    let reader = TopicReader::from_beginning(&cluster, &cluster.topics().control)
        .await
        .expect("control reader");
    while let Ok(record) = reader.recv().await {
        if let Ok(action) = ControlAction::decode(&record.payload)
            && let Some(key) = action.alert_dedup_key
        {
            arrivals
                .lock()
                .expect("lock")
                .entry(key)
                .or_insert_with(Instant::now);
        }
    }
}

#[tokio::main]
async fn main() {
    let external = std::env::var("WARDEN_BENCH_BROKERS").ok();
    let kafka = KafkaConfig {
        brokers: external.clone().unwrap_or_else(|| "embedded".to_owned()),
        partitions: 1,
        replication_factor: 1,
        ..KafkaConfig::default()
    };
    let embedded = match &external {
        None => Some(EmbeddedBroker::start(&kafka).expect("embedded broker")),
        Some(_) => None,
    };
    let cluster = KafkaCluster::new(&kafka, embedded.as_ref());
    cluster.wait_until_ready().await;
    cluster.ensure_topics().await.expect("topics");

    let token = "hf_bench_management_token";
    let hf = HfEndpointsEmulator::start(
        token,
        vec![EmulatedEndpoint::running("bench", "llama", 1, 4)],
        Duration::ZERO,
    )
    .await
    .expect("hf emulator");
    let hf_api = HfApiConfig {
        base_url: hf.base_url(),
        token: Some("env:HF_API_TOKEN".to_owned()),
        timeout_s: 10,
    }
    .validate(&|name| (name == "HF_API_TOKEN").then(|| token.to_owned()))
    .expect("valid")
    .expect("a token");
    let runbooks: RunbooksConfig = toml::from_str(
        r#"
        max_actions_per_hour = 10000
        [runaway_cost]
        mode = "auto"
        [token_compromise]
        mode = "auto"
        "#,
    )
    .expect("parses");
    let inputs = RunbookInputs {
        targets: vec![RunbookTarget {
            id: "llama".to_owned(),
            endpoint: Some("bench/llama".to_owned()),
            min_replicas: 1,
        }],
        clients: vec![RunbookClient {
            name: "batch".to_owned(),
            owner_receiver: None,
            critical: false,
        }],
        hf_api: Some(hf_api),
        receivers: Vec::new(),
        reports: None,
    };
    let shutdown = CancellationToken::new();
    let engine = RunbookEngine::new(&cluster, runbooks.validate().expect("valid"), inputs);
    tokio::spawn(engine.run(shutdown.clone()));
    let arrivals: Arrivals = Arc::default();
    tokio::spawn(follow_control(cluster.clone(), Arc::clone(&arrivals)));

    let publisher = AlertPublisher::new(&cluster).expect("publisher");
    // Warm up: the first alert waits for the group assignment and the incidents' read.
    let warmup = token_alert(u64::MAX);
    publisher.publish(&warmup).await.expect("published");
    let started = Instant::now();
    while !arrivals
        .lock()
        .expect("lock")
        .contains_key(&warmup.dedup_key)
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the engine never acted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let broker = external.map_or("embedded".to_owned(), |brokers| {
        format!("external {brokers}")
    });
    let spacing = Duration::from_micros(1_000_000 / RATE_PER_SECOND);
    for (runbook, make) in [
        (
            "token_compromise (revoke_token)",
            token_alert as fn(u64) -> Alert,
        ),
        ("runaway_cost (freeze_autoscaling)", runaway_alert),
    ] {
        let mut sent = HashMap::new();
        let begin = tokio::time::Instant::now();
        for index in 0..ALERTS_PER_RUNBOOK {
            tokio::time::sleep_until(begin + spacing * index as u32).await;
            let alert = make(index);
            sent.insert(alert.dedup_key.clone(), Instant::now());
            publisher.publish(&alert).await.expect("published");
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let all_in = {
                let arrived = arrivals.lock().expect("lock");
                sent.keys().all(|key| arrived.contains_key(key))
            };
            if all_in {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let arrived = arrivals.lock().expect("lock").clone();
        let mut latencies: Vec<Duration> = sent
            .iter()
            .filter_map(|(key, at)| arrived.get(key).map(|then| then.duration_since(*at)))
            .collect();
        latencies.sort();
        println!(
            "alert -> first action, {runbook} ({broker} broker, {RATE_PER_SECOND}/s): {} of \
             {ALERTS_PER_RUNBOOK} acted on, p50 {:?} p90 {:?} p99 {:?} max {:?}",
            latencies.len(),
            percentile(&latencies, 0.50),
            percentile(&latencies, 0.90),
            percentile(&latencies, 0.99),
            latencies.last().copied().unwrap_or_default(),
        );
    }
    shutdown.cancel();
}
