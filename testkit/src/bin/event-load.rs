//! `event-load`: load for the archiver benchmark (`scripts/bench-archive.sh`) on a real broker.
//!
//! - `event-load produce`: fills `warden.events` with realistic call trails.
//! - `event-load consume`: reads them back with a plain consumer that does nothing else: the
//!   benchmark's baseline, what reading the topic costs before any archiving work.
//! - `event-load wait-committed`: returns once a consumer group has committed every record of
//!   a topic (the detector benchmark's finish line, `scripts/bench-detect.sh`).
//! - `event-load latency`: live traffic stamped with the clock, with a brute-force burst from
//!   a fresh IP at a fixed interval; measures, for each burst, the time from sending the
//!   event that crossed the detector's threshold to receiving its alert on `warden.alerts`.
//!
//! The call trails are [`warden_testkit::load::call_trail`]'s: event times advance 1 ms per
//! call from `--start`, so a million events span about 5.5 minutes; pass an hour boundary in `--start` to exercise hour splitting.

use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use warden_ingest::event::DecisionInfo;
use warden_ingest::kafka::{KafkaCluster, KafkaConfig};
use warden_ingest::{AuditEvent, EventKind, RequestId};
use warden_testkit::load::call_trail;

#[derive(Debug, Parser)]
struct Args {
    /// Bootstrap servers of the broker.
    #[arg(long)]
    brokers: String,
    /// Events to produce or read.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Produce call trails (three events per call).
    Produce {
        /// Partitions of `warden.events` if it has to be created.
        #[arg(long, default_value_t = 2)]
        partitions: i32,
        /// Event time of the first call (RFC 3339).
        #[arg(long, default_value = "2026-11-20T09:58:00Z")]
        start: DateTime<Utc>,
    },
    /// Read `--events` records in consumer group `group`, from the earliest offset.
    Consume {
        #[arg(long, default_value = "bench-baseline")]
        group: String,
    },
    /// Wait until consumer group `group` has committed every record of `topic`.
    WaitCommitted {
        #[arg(long)]
        group: String,
        #[arg(long)]
        topic: String,
    },
    /// Produce live traffic with brute-force bursts and time their alerts.
    Latency(LatencyArgs),
}

#[derive(Debug, clap::Args)]
struct LatencyArgs {
    /// Background events per second (call trails, three events per call).
    #[arg(long, default_value_t = 3_000)]
    rate: u64,
    /// How long to run.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Milliseconds between bursts.
    #[arg(long, default_value_t = 500)]
    burst_every_ms: u64,
    /// Refused keys per burst; the alert follows the `threshold`-th.
    #[arg(long, default_value_t = 25)]
    burst_size: u64,
    /// `[detect.auth_failures].brute_force_failures` of the workers (default 20).
    #[arg(long, default_value_t = 20)]
    threshold: u64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let partitions = match args.action {
        Action::Produce { partitions, .. } => partitions,
        Action::Consume { .. } | Action::WaitCommitted { .. } | Action::Latency(_) => 1,
    };
    let config = KafkaConfig {
        brokers: args.brokers.clone(),
        partitions,
        replication_factor: 1,
        ..KafkaConfig::default()
    };
    let cluster = KafkaCluster::new(&config, None);
    cluster.wait_until_ready().await;
    match args.action {
        Action::Produce { start, .. } => produce(&cluster, args.events, start).await,
        Action::Consume { group } => consume(&cluster, args.events, &group),
        Action::WaitCommitted { group, topic } => wait_committed(&cluster, &group, &topic),
        Action::Latency(latency) => measure_latency(&cluster, &latency).await,
    }
}

async fn produce(cluster: &KafkaCluster, events: u64, start: DateTime<Utc>) -> anyhow::Result<()> {
    cluster.ensure_topics().await.context("creating topics")?;
    let topic = cluster.topics().events.clone();
    let producer: ThreadedProducer<DefaultProducerContext> = cluster
        .producer_config()
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .create()
        .context("producer")?;

    let started = Instant::now();
    let mut produced = 0u64;
    let mut bytes = 0u64;
    'calls: for call in 0.. {
        for event in call_trail(call, start) {
            if produced == events {
                break 'calls;
            }
            let payload = event.to_json();
            bytes += payload.len() as u64;
            let key = event.partition_key().to_owned();
            let mut record = BaseRecord::to(&topic).key(&key).payload(&payload);
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err((err, _)) => return Err(err).context("producing"),
                }
            }
            produced += 1;
        }
    }
    producer
        .flush(Duration::from_secs(300))
        .context("flushing to the broker")?;
    let seconds = started.elapsed().as_secs_f64();
    println!("{{\"events\": {produced}, \"json_bytes\": {bytes}, \"seconds\": {seconds:.2}}}");
    Ok(())
}

fn consume(cluster: &KafkaCluster, events: u64, group: &str) -> anyhow::Result<()> {
    let consumer: BaseConsumer = cluster
        .consumer_config(group)
        .create()
        .context("consumer")?;
    consumer
        .subscribe(&[&cluster.topics().events])
        .context("subscribing")?;
    let mut read = 0u64;
    let mut bytes = 0u64;
    let mut first_at = None;
    while read < events {
        match consumer.poll(Duration::from_secs(1)) {
            Some(Ok(message)) => {
                first_at.get_or_insert_with(Instant::now);
                bytes += message.payload_len() as u64;
                read += 1;
            }
            Some(Err(err)) => return Err(err).context("consuming"),
            None => {}
        }
    }
    let seconds = first_at.map_or(0.0, |at| at.elapsed().as_secs_f64());
    println!("{{\"events\": {read}, \"json_bytes\": {bytes}, \"seconds\": {seconds:.2}}}");
    Ok(())
}

fn wait_committed(cluster: &KafkaCluster, group: &str, topic: &str) -> anyhow::Result<()> {
    let consumer: BaseConsumer = cluster
        .consumer_config(group)
        .create()
        .context("consumer")?;
    let timeout = Duration::from_secs(10);
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .context("metadata")?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    anyhow::ensure!(!partitions.is_empty(), "topic {topic} has no partitions");
    let mut end = 0;
    for &partition in &partitions {
        end += consumer
            .fetch_watermarks(topic, partition, timeout)
            .context("watermarks")?
            .1;
    }
    let mut wanted = rdkafka::TopicPartitionList::new();
    for &partition in &partitions {
        wanted.add_partition(topic, partition);
    }
    loop {
        let committed: i64 = consumer
            .committed_offsets(wanted.clone(), timeout)
            .context("committed offsets")?
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                rdkafka::Offset::Offset(offset) => Some(offset),
                _ => None,
            })
            .sum();
        if committed >= end {
            println!("{{\"committed\": {committed}, \"end\": {end}}}");
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One auth decision refusing a key from `ip`, stamped now.
fn refused_key(ip: &str) -> AuditEvent {
    let mut event = AuditEvent::new(EventKind::PolicyDecision, RequestId::new(), "proxy-bench-1");
    event.environment = Some("prod".to_owned());
    event.client.ip = Some(ip.to_owned());
    event.decision = Some(DecisionInfo {
        policy: "auth".to_owned(),
        outcome: "deny".to_owned(),
        reason: Some("invalid_api_key".to_owned()),
    });
    event
}

async fn measure_latency(cluster: &KafkaCluster, args: &LatencyArgs) -> anyhow::Result<()> {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    cluster.ensure_topics().await.context("creating topics")?;
    let topics = cluster.topics().clone();
    // Subscribed before the first burst; alerts are told apart by their fresh IPs.
    let consumer: BaseConsumer = cluster
        .consumer_config(&format!("bench-latency-{}", uuid::Uuid::new_v4()))
        .set("auto.offset.reset", "latest")
        // The instrument should not add to what it measures: ask for alerts every 10 ms.
        .set("fetch.wait.max.ms", "10")
        .create()
        .context("consumer")?;
    consumer
        .subscribe(&[&topics.alerts])
        .context("subscribing")?;
    while consumer.assignment().map(|a| a.count()).unwrap_or(0) == 0 {
        let _ = consumer.poll(Duration::from_millis(100));
    }
    // Burst IP → when its threshold-crossing event was sent.
    let crossings: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let running = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let receiver = {
        let (crossings, running) = (crossings.clone(), running.clone());
        std::thread::spawn(move || {
            let mut latencies = Vec::new();
            while running.load(std::sync::atomic::Ordering::Relaxed) {
                let Some(Ok(message)) = consumer.poll(Duration::from_millis(50)) else {
                    continue;
                };
                let received = Instant::now();
                let Some(alert) = message
                    .payload()
                    .and_then(|p| serde_json::from_slice::<serde_json::Value>(p).ok())
                else {
                    continue;
                };
                if alert["detector"] != "auth_brute_force" || alert["status"] != "firing" {
                    continue;
                }
                let ip = alert["subject"]
                    .as_str()
                    .unwrap_or("")
                    .trim_start_matches("ip:");
                if let Some(sent) = crossings.lock().expect("lock").remove(ip) {
                    latencies.push(received.duration_since(sent));
                }
            }
            latencies
        })
    };

    let producer: ThreadedProducer<DefaultProducerContext> =
        cluster.producer_config().create().context("producer")?;
    let send = |event: &AuditEvent| -> anyhow::Result<()> {
        let payload = event.to_json();
        let record = BaseRecord::to(&topics.events)
            .key(event.partition_key())
            .payload(&payload);
        producer
            .send(record)
            .map_err(|(err, _)| err)
            .context("producing")
    };
    let started = Instant::now();
    let tick = Duration::from_millis(10);
    let calls_per_tick = (args.rate / 3).div_ceil(100).max(1);
    let mut next_burst = started + Duration::from_secs(2);
    let (mut call, mut bursts) = (0u64, 0u64);
    while started.elapsed() < Duration::from_secs(args.seconds) {
        let tick_started = Instant::now();
        for _ in 0..calls_per_tick {
            for event in call_trail(call, Utc::now()) {
                send(&event)?;
            }
            call += 1;
        }
        if tick_started >= next_burst {
            let ip = format!("198.18.{}.{}", bursts / 250, bursts % 250 + 1);
            for n in 1..=args.burst_size {
                send(&refused_key(&ip))?;
                if n == args.threshold {
                    crossings
                        .lock()
                        .expect("lock")
                        .insert(ip.clone(), Instant::now());
                }
            }
            bursts += 1;
            next_burst += Duration::from_millis(args.burst_every_ms);
        }
        std::thread::sleep(tick.saturating_sub(tick_started.elapsed()));
    }
    producer
        .flush(Duration::from_secs(30))
        .context("flushing")?;
    // Alerts of the last bursts still on their way.
    std::thread::sleep(Duration::from_secs(5));
    running.store(false, std::sync::atomic::Ordering::Relaxed);
    let mut latencies = receiver
        .join()
        .map_err(|_| anyhow::anyhow!("receiver panicked"))?;
    latencies.sort();
    let missing = crossings.lock().expect("lock").len();
    let millis = |q: f64| -> f64 {
        if latencies.is_empty() {
            return f64::NAN;
        }
        let index = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[index].as_secs_f64() * 1_000.0
    };
    println!(
        "{{\"bursts\": {bursts}, \"alerts\": {}, \"missing\": {missing}, \"background_events\": {}, \
         \"p50_ms\": {:.0}, \"p90_ms\": {:.0}, \"p99_ms\": {:.0}, \"max_ms\": {:.0}}}",
        latencies.len(),
        call * 3,
        millis(0.5),
        millis(0.9),
        millis(0.99),
        millis(1.0)
    );
    Ok(())
}
