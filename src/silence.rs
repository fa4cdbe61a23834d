//! `warden silence add|list|expire`: silences on the compacted `warden.silences` topic,
//! which every responder follows. A silenced alert is recorded (a `silenced` row in the
//! `notifications` table), not delivered.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use chrono::{SubsecRound, TimeDelta, Utc};
use warden_ingest::kafka::{DeliveringProducer, KafkaCluster, Outgoing, TopicReader};
use warden_sinks::respond::silence::{Silence, SilenceRecord};

use crate::config::ValidatedConfig;

const TIMEOUT: Duration = Duration::from_secs(15);

async fn cluster_of(config: &ValidatedConfig) -> anyhow::Result<KafkaCluster> {
    anyhow::ensure!(
        !config.kafka.is_embedded(),
        "warden silence publishes to the responders' broker: set [kafka].brokers (the \
         embedded broker lives inside one `warden up` process)"
    );
    let cluster = KafkaCluster::new(&config.kafka, None);
    tokio::time::timeout(TIMEOUT, cluster.wait_until_ready())
        .await
        .context("the broker did not answer")?;
    Ok(cluster)
}

async fn publish(cluster: &KafkaCluster, record: &SilenceRecord) -> anyhow::Result<()> {
    let producer = DeliveringProducer::from_config(&cluster.producer_config())
        .context("creating the producer")?;
    let payload = serde_json::to_vec(record).context("encoding the silence")?;
    let topic = &cluster.topics().silences;
    tokio::time::timeout(
        TIMEOUT,
        producer.deliver(
            Outgoing::new(topic, record.id.as_bytes(), &payload),
            TIMEOUT,
        ),
    )
    .await
    .context("the broker did not take the silence in time")?
    .context("publishing the silence")
}

/// Every silence on the topic, latest record per id.
async fn read_all(cluster: &KafkaCluster) -> anyhow::Result<BTreeMap<String, SilenceRecord>> {
    let reader = TopicReader::from_beginning(cluster, &cluster.topics().silences)
        .await
        .context("reading the silences topic")?;
    let mut silences = BTreeMap::new();
    for record in reader.read_to_end(TIMEOUT).await? {
        match serde_json::from_slice::<SilenceRecord>(&record.payload) {
            Ok(silence) => {
                silences.insert(silence.id.clone(), silence);
            }
            Err(err) => eprintln!("skipping an unreadable silence: {err}"),
        }
    }
    Ok(silences)
}

/// `silence add`: prints the new silence's id.
pub async fn add(
    config: &ValidatedConfig,
    matchers: Vec<String>,
    duration: TimeDelta,
    comment: String,
    by: String,
) -> anyhow::Result<()> {
    let starts_at = Utc::now().trunc_subsecs(6);
    let record = SilenceRecord {
        id: warden_ingest::EventId::new().0.to_string(),
        matchers,
        starts_at,
        ends_at: starts_at + duration,
        created_by: by.trim().to_owned(),
        comment: comment.trim().to_owned(),
    };
    // Refused here, not skipped by every responder later.
    Silence::new(record.clone()).map_err(|err| anyhow::anyhow!(err))?;
    let cluster = cluster_of(config).await?;
    publish(&cluster, &record).await?;
    println!(
        "silence {} added: {} until {}",
        record.id,
        record.matchers.join(" "),
        record.ends_at.to_rfc3339()
    );
    Ok(())
}

/// `silence list`: one line per silence that has not ended.
pub async fn list(config: &ValidatedConfig) -> anyhow::Result<()> {
    let cluster = cluster_of(config).await?;
    let now = Utc::now();
    let mut count = 0;
    for silence in read_all(&cluster).await?.values() {
        if silence.ends_at <= now {
            continue;
        }
        count += 1;
        println!(
            "{} {} from {} until {} by {} — {}",
            silence.id,
            silence.matchers.join(" "),
            silence.starts_at.to_rfc3339(),
            silence.ends_at.to_rfc3339(),
            silence.created_by,
            silence.comment
        );
    }
    if count == 0 {
        println!("no silences");
    }
    Ok(())
}

/// `silence expire ID`: ends it now.
pub async fn expire(config: &ValidatedConfig, id: &str) -> anyhow::Result<()> {
    let cluster = cluster_of(config).await?;
    let mut silence = read_all(&cluster)
        .await?
        .remove(id)
        .with_context(|| format!("no silence {id}"))?;
    let now = Utc::now().trunc_subsecs(6);
    anyhow::ensure!(silence.ends_at > now, "silence {id} has ended already");
    silence.ends_at = now.max(silence.starts_at + TimeDelta::microseconds(1));
    publish(&cluster, &silence).await?;
    println!("silence {id} expired");
    Ok(())
}
