//! The standalone `warden archive` role on a real broker (tansu): malformed records go to
//! `warden.dlq` with their reason and source coordinates, and the archiver keeps archiving.

use crate::support;

use std::time::{Duration, Instant};

use warden_ingest::kafka::{ConsumedRecord, KafkaCluster, TopicConsumer};
use warden_ingest::{AuditEvent, EventKind, RequestId};

use support::{WardenProcess, archive_setup, produce, sql_until};

#[tokio::test(flavor = "multi_thread")]
async fn malformed_records_are_dead_lettered_and_archiving_goes_on() {
    let setup = archive_setup(1, "flush_interval_s = 1").await;
    let cluster = &setup.cluster;
    let mut valid = AuditEvent::new(EventKind::Request, RequestId::new(), "proxy-x");
    valid.client.ip = Some("198.51.100.4".into());
    let mut future_version = AuditEvent::new(EventKind::Request, RequestId::new(), "proxy-x");
    future_version.schema_version = 99;
    let events = "warden.events";
    produce(
        cluster,
        &[
            (events, b"this is not json".to_vec()),
            (events, future_version.to_json()),
            (events, valid.to_json()),
        ],
    )
    .await;

    let config = &setup.config;
    let mut archiver = WardenProcess::start("archive", config);

    let rows = sql_until(config, "SELECT request_id, client.ip AS ip FROM events", 1).await;
    assert_eq!(rows.len(), 1, "{rows:?}\n{}", archiver.log());
    assert_eq!(rows[0]["request_id"], valid.request_id.as_str());
    assert_eq!(rows[0]["ip"], "198.51.100.4");

    let dead = read_topic(cluster, "warden.dlq", 2).await;
    assert_eq!(dead.len(), 2, "{}", archiver.log());
    assert_eq!(dead[0].payload, b"this is not json");
    assert_eq!(dead[1].payload, future_version.to_json());
    let header = |record: &ConsumedRecord, name: &str| {
        String::from_utf8_lossy(record.header(name).unwrap_or_default()).into_owned()
    };
    assert!(header(&dead[0], "warden-dlq-reason").contains("not a valid audit event"));
    assert_eq!(
        header(&dead[1], "warden-dlq-reason"),
        "unsupported schema_version 99"
    );
    assert_eq!(header(&dead[0], "warden-source-topic"), "warden.events");
    assert_eq!(header(&dead[0], "warden-source-offset"), "0");
    assert_eq!(header(&dead[1], "warden-source-offset"), "1");

    let status = archiver.interrupt().await;
    assert!(status.success(), "exit {status}:\n{}", archiver.log());
}

async fn read_topic(cluster: &KafkaCluster, topic: &str, count: usize) -> Vec<ConsumedRecord> {
    let group = format!("test-reader-{}", uuid::Uuid::new_v4());
    let consumer = TopicConsumer::subscribe(cluster, &group, &[topic]).expect("subscribe");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut records = Vec::new();
    while records.len() < count && Instant::now() < deadline {
        if let Ok(Ok(record)) = tokio::time::timeout(Duration::from_secs(5), consumer.recv()).await
        {
            records.push(record);
        }
    }
    records.sort_by_key(|record| record.offset);
    records
}
