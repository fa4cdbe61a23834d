//! Alert → notification latency through the whole responder: alerts published to
//! `warden.alerts` (the embedded broker, or the brokers in `$WARDEN_BENCH_BROKERS`, e.g. a
//! tansu), consumed, dispatched with `group_wait = 0` (so the figure is the latency beyond
//! `group_wait`), and POSTed to a webhook receiver on loopback, which timestamps each
//! arrival. 50 alerts a second for 10 s, each its own group; prints p50/p90/p99/max.
//!
//! `cargo bench -p warden-sinks --bench respond_latency`

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_util::sync::CancellationToken;
use warden_ingest::alert::{Alert, Severity, Subject};
use warden_ingest::kafka::{AlertPublisher, EmbeddedBroker, KafkaCluster, KafkaConfig};
use warden_sinks::respond::{RespondConfig, Responder};

const RATE_PER_SECOND: u64 = 50;
const SECONDS: u64 = 10;

type Arrivals = Arc<Mutex<HashMap<String, Instant>>>;

/// A minimal HTTP/1.1 server: reads each request (headers, then `content-length` bytes),
/// records when the alert it names arrived, answers 200.
async fn receiver(listener: tokio::net::TcpListener, arrivals: Arrivals) {
    loop {
        let Ok((mut socket, _)) = listener.accept().await else {
            return;
        };
        let arrivals = Arc::clone(&arrivals);
        tokio::spawn(async move {
            let mut buffer = Vec::new();
            let mut chunk = [0u8; 16 * 1024];
            loop {
                let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") else {
                    match socket.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                    }
                    continue;
                };
                let headers = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
                let length: usize = headers
                    .lines()
                    .find_map(|line| line.strip_prefix("content-length:"))
                    .and_then(|value| value.trim().parse().ok())
                    .unwrap_or(0);
                while buffer.len() < end + 4 + length {
                    match socket.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                    }
                }
                let body: serde_json::Value =
                    serde_json::from_slice(&buffer[end + 4..end + 4 + length]).unwrap_or_default();
                if let Some(key) = body["alerts"][0]["labels"]["dedup_key"].as_str() {
                    arrivals
                        .lock()
                        .expect("lock")
                        .entry(key.to_owned())
                        .or_insert_with(Instant::now);
                }
                buffer.drain(..end + 4 + length);
                if socket
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
    }
}

fn alert(key: &str) -> Alert {
    let now = Utc::now();
    let mut alert = Alert::firing("cost_burn", Severity::Critical, Subject::Global, (now, now));
    alert.dedup_key = key.to_owned();
    alert.with_derived_id()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

#[tokio::main]
async fn main() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let arrivals: Arrivals = Arc::default();
    tokio::spawn(receiver(listener, Arc::clone(&arrivals)));

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

    let text = format!(
        r#"
        [respond]
        group_wait_s = 0
        group_interval_s = 1
        group_by = ["..."]
        default_receivers = ["hook"]
        [[respond.receivers]]
        name = "hook"
        kind = "webhook"
        url = "http://{address}/hook"
        "#
    );
    let settings = RespondConfig::from_toml(&text)
        .expect("parses")
        .validate(&|_| None)
        .expect("valid");
    let shutdown = CancellationToken::new();
    let responder = Responder::new(&cluster, settings);
    tokio::spawn(responder.run(shutdown.clone()));

    let publisher = AlertPublisher::new(&cluster).expect("publisher");
    // Warm up: the first alert waits for the group assignment and the state rebuild.
    publisher
        .publish(&alert("warmup"))
        .await
        .expect("published");
    let started = Instant::now();
    while !arrivals.lock().expect("lock").contains_key("warmup") {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the responder never answered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let total = RATE_PER_SECOND * SECONDS;
    let spacing = Duration::from_micros(1_000_000 / RATE_PER_SECOND);
    let mut sent = HashMap::new();
    let begin = tokio::time::Instant::now();
    for index in 0..total {
        tokio::time::sleep_until(begin + spacing * index as u32).await;
        let key = format!("latency/{index}");
        sent.insert(key.clone(), Instant::now());
        publisher.publish(&alert(&key)).await.expect("published");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while arrivals.lock().expect("lock").len() < total as usize + 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shutdown.cancel();
    let arrivals = arrivals.lock().expect("lock").clone();
    let mut latencies: Vec<Duration> = sent
        .iter()
        .filter_map(|(key, at)| arrivals.get(key).map(|arrived| arrived.duration_since(*at)))
        .collect();
    latencies.sort();
    let broker = external.map_or("embedded".to_owned(), |brokers| {
        format!("external {brokers}")
    });
    println!(
        "alert -> notification ({broker} broker, {RATE_PER_SECOND}/s for {SECONDS} s, group_wait 0): \
         {} of {total} delivered, p50 {:?} p90 {:?} p99 {:?} max {:?}",
        latencies.len(),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.90),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or_default(),
    );
}
