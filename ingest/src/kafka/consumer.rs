//! The consumer helper: owned records out, offsets committed by hand after processing.
//!
//! Workers (archiver, detectors) process a batch, make its effect durable, and only then call
//! [`TopicConsumer::commit`]. A crash between the two replays the batch: at-least-once
//! delivery, made exactly-once by deterministic, idempotent writes downstream.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_core::Stream;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, MessageStream, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::{ClientConfig, ClientContext};
use rdkafka::{Message, Offset, TopicPartitionList};

use super::{KafkaCluster, KafkaSetupError};

/// One consumed message, owned so it can outlive the consumer's buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    /// Header names and values, in order (values absent for null headers).
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl ConsumedRecord {
    /// The value of the first header called `name`, if it has one.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        let (_, value) = self.headers.iter().find(|(key, _)| key == name)?;
        value.as_deref()
    }
}

/// The highest processed offset of each partition of each topic since the last commit.
#[derive(Debug, Default, Clone)]
pub struct PartitionOffsets {
    /// Per topic, per partition. A consumer reads a few topics and partitions, and marks an
    /// offset for every record: a scan of short lists beats hashing or a tree.
    highest: Vec<(String, Vec<(i32, i64)>)>,
}

impl PartitionOffsets {
    /// Marks `record` as processed.
    pub fn record(&mut self, record: &ConsumedRecord) {
        self.mark(&record.topic, record.partition, record.offset);
    }

    /// Marks everything up to `offset` of one partition as processed (without allocating
    /// once the topic is known: this runs for every record).
    pub fn mark(&mut self, topic: &str, partition: i32, offset: i64) {
        let at = match self.highest.iter().position(|(known, _)| known == topic) {
            Some(at) => at,
            None => {
                self.highest.push((topic.to_owned(), Vec::new()));
                self.highest.len() - 1
            }
        };
        let partitions = &mut self.highest[at].1;
        match partitions.iter_mut().find(|(known, _)| *known == partition) {
            Some((_, highest)) => *highest = (*highest).max(offset),
            None => partitions.push((partition, offset)),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.highest.is_empty()
    }

    pub fn clear(&mut self) {
        self.highest.clear();
    }

    /// The list to commit: Kafka's committed offset is the next one to read.
    fn to_commit_list(&self) -> Result<TopicPartitionList, KafkaError> {
        let mut list = TopicPartitionList::new();
        for (topic, partitions) in &self.highest {
            for &(partition, offset) in partitions {
                list.add_partition_offset(topic, partition, Offset::Offset(offset + 1))?;
            }
        }
        Ok(list)
    }
}

/// A record still in the consumer's buffer: read it in place (no copy), before the next
/// receive.
#[derive(Debug)]
pub struct BorrowedRecord<'a>(BorrowedMessage<'a>);

impl BorrowedRecord<'_> {
    pub fn topic(&self) -> &str {
        self.0.topic()
    }

    pub fn partition(&self) -> i32 {
        self.0.partition()
    }

    pub fn offset(&self) -> i64 {
        self.0.offset()
    }

    pub fn key(&self) -> Option<&[u8]> {
        self.0.key()
    }

    /// The value (empty for a null value).
    pub fn payload(&self) -> &[u8] {
        self.0.payload().unwrap_or_default()
    }
}

/// What [`Records`] yields.
#[derive(Debug)]
pub enum Received<'a> {
    Record(BorrowedRecord<'a>),
    /// The member has read everything `partition` holds, for now (only for a consumer made
    /// with [`TopicConsumer::subscribe_reporting_ends`]).
    End {
        partition: i32,
    },
}

/// A consumer's records (and partition ends) as one stream, for a loop that reads every
/// record in place, without copying it out of the consumer's buffer. One stream, not a
/// receive per record: each receive sets up and tears down a wake-up slot under a lock.
pub struct Records<'c> {
    stream: MessageStream<'c, AssignmentWatch>,
}

impl std::fmt::Debug for Records<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Records").finish_non_exhaustive()
    }
}

impl<'c> Records<'c> {
    /// Waits for the next record, or partition end.
    pub async fn next(&mut self) -> Result<Received<'c>, KafkaError> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    /// The next record or partition end if one is there already; `None` if it would have
    /// to be waited for.
    pub fn ready(&mut self) -> Option<Result<Received<'c>, KafkaError>> {
        match self.poll_next(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(received) => Some(received),
            Poll::Pending => None,
        }
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Result<Received<'c>, KafkaError>> {
        Pin::new(&mut self.stream).poll_next(cx).map(|item| {
            // rdkafka's message streams never end.
            match item.unwrap_or(Err(KafkaError::Canceled)) {
                Ok(message) => Ok(Received::Record(BorrowedRecord(message))),
                Err(KafkaError::PartitionEOF(partition)) => Ok(Received::End { partition }),
                Err(err) => Err(err),
            }
        })
    }
}

/// Counts the group's assignments of partitions to this member, so a worker whose state
/// depends on which partitions it reads can notice a rebalance, and logs every assignment
/// and revocation (info): who reads what is the first question after a crash.
#[derive(Debug, Default)]
pub struct AssignmentWatch {
    group_id: String,
    assignments: AtomicU64,
}

impl ClientContext for AssignmentWatch {}

/// `topic-partition` names, comma-separated, for a log line.
fn partition_names(partitions: &TopicPartitionList) -> String {
    partitions
        .elements()
        .iter()
        .map(|element| format!("{}-{}", element.topic(), element.partition()))
        .collect::<Vec<_>>()
        .join(",")
}

impl ConsumerContext for AssignmentWatch {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(partitions) => {
                self.assignments.fetch_add(1, Ordering::SeqCst);
                tracing::info!(
                    group = %self.group_id,
                    partitions = %partition_names(partitions),
                    "partitions assigned"
                );
            }
            Rebalance::Revoke(partitions) => tracing::info!(
                group = %self.group_id,
                partitions = %partition_names(partitions),
                "partitions revoked"
            ),
            Rebalance::Error(err) => {
                tracing::warn!(group = %self.group_id, error = %err, "rebalance failed");
            }
        }
    }
}

/// Where a member re-reads one assigned partition from, to rebuild state over its recent
/// past (see [`TopicConsumer::rewind_assignment`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewoundPartition {
    pub topic: String,
    pub partition: i32,
    /// The first offset read again.
    pub from: i64,
    /// The group's committed offset: records before it were processed by some member
    /// already, records from it on are new.
    pub committed: i64,
}

/// A consumer-group member subscribed to some topics, with manual commits.
#[derive(Clone)]
pub struct TopicConsumer {
    consumer: Arc<StreamConsumer<AssignmentWatch>>,
}

impl std::fmt::Debug for TopicConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopicConsumer").finish_non_exhaustive()
    }
}

impl TopicConsumer {
    /// Joins `group_id` and subscribes to `topics`.
    pub fn subscribe(
        cluster: &KafkaCluster,
        group_id: &str,
        topics: &[&str],
    ) -> Result<Self, KafkaSetupError> {
        Self::subscribe_with(cluster.consumer_config(group_id), topics)
    }

    fn subscribe_with(config: ClientConfig, topics: &[&str]) -> Result<Self, KafkaSetupError> {
        let watch = AssignmentWatch {
            group_id: config.get("group.id").unwrap_or_default().to_owned(),
            assignments: AtomicU64::new(0),
        };
        let consumer: StreamConsumer<AssignmentWatch> = config.create_with_context(watch)?;
        consumer.subscribe(topics)?;
        Ok(Self {
            consumer: Arc::new(consumer),
        })
    }

    /// Joins `group_id` and subscribes to `topics` like [`subscribe`](Self::subscribe), and
    /// its [`records`](Self::records) also report each time a partition has been read to its
    /// end.
    pub fn subscribe_reporting_ends(
        cluster: &KafkaCluster,
        group_id: &str,
        topics: &[&str],
    ) -> Result<Self, KafkaSetupError> {
        let mut config = cluster.consumer_config(group_id);
        config.set("enable.partition.eof", "true");
        Self::subscribe_with(config, topics)
    }

    /// Every record from here on, as one stream.
    pub fn records(&self) -> Records<'_> {
        Records {
            stream: self.consumer.stream(),
        }
    }

    /// Waits for the next record.
    pub async fn recv(&self) -> Result<ConsumedRecord, KafkaError> {
        let message = self.consumer.recv().await?;
        Ok(ConsumedRecord {
            topic: message.topic().to_owned(),
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
            headers: message
                .headers()
                .map(|headers| {
                    headers
                        .iter()
                        .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                        .collect()
                })
                .unwrap_or_default(),
        })
    }

    /// How many records of the assigned partitions this member has yet to read, or `None`
    /// while it has no assignment (e.g. still joining the group).
    pub async fn remaining(&self) -> Result<Option<i64>, KafkaError> {
        const TIMEOUT: Duration = Duration::from_secs(5);
        let consumer = self.consumer.clone();
        tokio::task::spawn_blocking(move || {
            let assignment = consumer.assignment()?;
            if assignment.count() == 0 {
                return Ok(None);
            }
            let positions = consumer.position()?;
            let mut committed = None;
            let mut remaining = 0;
            for element in positions.elements() {
                let (low, high) =
                    consumer.fetch_watermarks(element.topic(), element.partition(), TIMEOUT)?;
                // Nothing read yet in this partition: reading starts at the committed offset,
                // or at the beginning for a new group.
                let next = match element.offset() {
                    Offset::Offset(offset) => offset,
                    _ => {
                        let committed = match &committed {
                            Some(list) => list,
                            None => committed
                                .insert(consumer.committed_offsets(assignment.clone(), TIMEOUT)?),
                        };
                        match committed
                            .find_partition(element.topic(), element.partition())
                            .map(|e| e.offset())
                        {
                            Some(Offset::Offset(offset)) => offset,
                            _ => low,
                        }
                    }
                };
                remaining += (high - next).max(0);
            }
            Ok(Some(remaining))
        })
        .await
        .map_err(|_| KafkaError::Canceled)?
    }

    /// The partitions `topic` has (asked of the cluster, on a blocking thread).
    pub async fn partitions_of(&self, topic: &str) -> Result<Vec<i32>, KafkaError> {
        const TIMEOUT: Duration = Duration::from_secs(5);
        let consumer = self.consumer.clone();
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            let metadata = consumer.fetch_metadata(Some(&topic), TIMEOUT)?;
            Ok(metadata
                .topics()
                .iter()
                .filter(|found| found.name() == topic)
                .flat_map(|found| found.partitions().iter().map(|p| p.id()))
                .collect())
        })
        .await
        .map_err(|_| KafkaError::Canceled)?
    }

    /// True while the group has `partition` of `topic` assigned to this member. Asked on a
    /// blocking thread: librdkafka answers it from its group thread.
    pub async fn is_assigned(&self, topic: &str, partition: i32) -> bool {
        let consumer = self.consumer.clone();
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            consumer
                .assignment()
                .is_ok_and(|list| list.find_partition(&topic, partition).is_some())
        })
        .await
        .unwrap_or(false)
    }

    /// The partitions the group has assigned to this member, as (topic, partition). Asked on
    /// a blocking thread, like [`Self::is_assigned`].
    pub async fn assigned_partitions(&self) -> Vec<(String, i32)> {
        let consumer = self.consumer.clone();
        tokio::task::spawn_blocking(move || {
            consumer
                .assignment()
                .map(|list| {
                    list.elements()
                        .iter()
                        .map(|element| (element.topic().to_owned(), element.partition()))
                        .collect()
                })
                .unwrap_or_default()
        })
        .await
        .unwrap_or_default()
    }

    /// Makes this member read `partition` of `topic` again from `offset` (if it still has
    /// it): records it had read past are delivered again.
    pub async fn rewind(&self, topic: &str, partition: i32, offset: i64) -> Result<(), KafkaError> {
        const TIMEOUT: Duration = Duration::from_secs(5);
        let consumer = self.consumer.clone();
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            consumer.seek(&topic, partition, Offset::Offset(offset), TIMEOUT)
        })
        .await
        .map_err(|_| KafkaError::Canceled)?
    }

    /// How many times the group has assigned partitions to this member: a change means a
    /// rebalance happened (it is counted before the first record of the new assignment is
    /// received).
    pub fn assignments(&self) -> u64 {
        self.consumer.context().assignments.load(Ordering::SeqCst)
    }

    /// Seeks every assigned partition back to its first record stamped at or after `since`
    /// (Kafka's record timestamps), or to the committed offset if that is earlier, and says
    /// where each one now starts and where the group's committed offset is. A partition the
    /// group never committed is read from where its reset policy would start (no record of it
    /// counts as processed). Only the partitions actually rewound are listed. Runs on a
    /// blocking thread.
    pub async fn rewind_assignment(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<RewoundPartition>, KafkaError> {
        const TIMEOUT: Duration = Duration::from_secs(10);
        let consumer = self.consumer.clone();
        tokio::task::spawn_blocking(move || {
            let assignment = consumer.assignment()?;
            if assignment.count() == 0 {
                return Ok(Vec::new());
            }
            let committed = consumer.committed_offsets(assignment.clone(), TIMEOUT)?;
            let by_time = consumer.offsets_for_timestamp(since.timestamp_millis(), TIMEOUT)?;
            let mut rewound = Vec::new();
            for element in assignment.elements() {
                let (topic, partition) = (element.topic(), element.partition());
                let (low, high) = consumer.fetch_watermarks(topic, partition, TIMEOUT)?;
                let offset_in = |list: &TopicPartitionList| match list
                    .find_partition(topic, partition)
                    .map(|e| e.offset())
                {
                    Some(Offset::Offset(offset)) => Some(offset),
                    _ => None,
                };
                // No record since `since`: nothing to re-read before the end.
                let first_recent = offset_in(&by_time).unwrap_or(high).clamp(low, high);
                let (from, committed) = match offset_in(&committed) {
                    Some(committed) => (first_recent.min(committed), committed),
                    // A new group reads from the start (auto.offset.reset = earliest), all new.
                    None => (low, low),
                };
                // A partition that cannot be rewound (librdkafka refuses a seek before its
                // fetcher started) is read on from where it is, and left out of the answer.
                if let Err(err) = consumer.seek(topic, partition, Offset::Offset(from), TIMEOUT) {
                    tracing::warn!(topic, partition, error = %err, "could not rewind");
                    continue;
                }
                rewound.push(RewoundPartition {
                    topic: topic.to_owned(),
                    partition,
                    from,
                    committed,
                });
            }
            Ok(rewound)
        })
        .await
        .map_err(|_| KafkaError::Canceled)?
    }

    /// Commits `offsets` synchronously (on a blocking thread): when this returns `Ok`, the
    /// group will not see those records again.
    pub async fn commit(&self, offsets: &PartitionOffsets) -> Result<(), KafkaError> {
        if offsets.is_empty() {
            return Ok(());
        }
        let list = offsets.to_commit_list()?;
        let consumer = self.consumer.clone();
        tokio::task::spawn_blocking(move || consumer.commit(&list, CommitMode::Sync))
            .await
            .map_err(|_| KafkaError::Canceled)?
    }
}

/// Reads every partition of one topic from its beginning, outside any consumer group: every
/// reader sees every record. Each proxy replica reads the control topic this way, and
/// `warden control list` reads it to its end.
pub struct TopicReader {
    consumer: Arc<StreamConsumer>,
    topic: String,
    partitions: Vec<i32>,
}

impl std::fmt::Debug for TopicReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopicReader")
            .field("topic", &self.topic)
            .field("partitions", &self.partitions)
            .finish_non_exhaustive()
    }
}

impl TopicReader {
    /// Assigns every partition `topic` has now, from offset 0 (asks the cluster for them:
    /// fails while it does not answer).
    pub async fn from_beginning(cluster: &KafkaCluster, topic: &str) -> Result<Self, KafkaError> {
        const TIMEOUT: Duration = Duration::from_secs(5);
        let mut config = cluster.client_config();
        // librdkafka wants a group id even for a consumer that never joins its group.
        config
            .set(
                "group.id",
                format!("warden-reader-{}", uuid::Uuid::now_v7()),
            )
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("fetch.wait.max.ms", "100");
        let consumer: Arc<StreamConsumer> = Arc::new(config.create()?);
        let topic_name = topic.to_owned();
        let probe = consumer.clone();
        let partitions = tokio::task::spawn_blocking(move || {
            let metadata = probe.fetch_metadata(Some(&topic_name), TIMEOUT)?;
            let partitions: Vec<i32> = metadata
                .topics()
                .iter()
                .filter(|found| found.name() == topic_name && found.error().is_none())
                .flat_map(|found| found.partitions().iter().map(|p| p.id()))
                .collect();
            Ok::<_, KafkaError>(partitions)
        })
        .await
        .map_err(|_| KafkaError::Canceled)??;
        if partitions.is_empty() {
            return Err(KafkaError::MetadataFetch(
                rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition,
            ));
        }
        let mut assignment = TopicPartitionList::new();
        for partition in &partitions {
            assignment.add_partition_offset(topic, *partition, Offset::Beginning)?;
        }
        consumer.assign(&assignment)?;
        Ok(Self {
            consumer,
            topic: topic.to_owned(),
            partitions,
        })
    }

    /// Waits for the next record.
    pub async fn recv(&self) -> Result<ConsumedRecord, KafkaError> {
        let message = self.consumer.recv().await?;
        Ok(ConsumedRecord {
            topic: message.topic().to_owned(),
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
            headers: Vec::new(),
        })
    }

    /// Every record the topic holds now (read up to where [`ends`](Self::ends) said it
    /// ended when the call began), in each partition's order; fails when a record takes
    /// longer than `patience` to arrive.
    pub async fn read_to_end(&self, patience: Duration) -> Result<Vec<ConsumedRecord>, KafkaError> {
        let mut left: Vec<(i32, i64)> = self
            .ends()
            .await?
            .into_iter()
            .filter(|(_, end)| *end > 0)
            .collect();
        let mut records = Vec::new();
        while !left.is_empty() {
            let record = tokio::time::timeout(patience, self.recv())
                .await
                .map_err(|_| KafkaError::Canceled)??;
            left.retain(|(partition, end)| {
                !(*partition == record.partition && record.offset + 1 >= *end)
            });
            records.push(record);
        }
        Ok(records)
    }

    /// The offset each partition ends at now: a reader that has read up to them has seen
    /// every record written before the call.
    pub async fn ends(&self) -> Result<Vec<(i32, i64)>, KafkaError> {
        const TIMEOUT: Duration = Duration::from_secs(5);
        let consumer = self.consumer.clone();
        let (topic, partitions) = (self.topic.clone(), self.partitions.clone());
        tokio::task::spawn_blocking(move || {
            partitions
                .iter()
                .map(|partition| {
                    let (_, high) = consumer.fetch_watermarks(&topic, *partition, TIMEOUT)?;
                    Ok((*partition, high))
                })
                .collect()
        })
        .await
        .map_err(|_| KafkaError::Canceled)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(partition: i32, offset: i64) -> ConsumedRecord {
        ConsumedRecord {
            topic: "t".into(),
            partition,
            offset,
            key: None,
            payload: Vec::new(),
            headers: Vec::new(),
        }
    }

    #[test]
    fn commits_the_offset_after_the_highest_processed_one() {
        let mut offsets = PartitionOffsets::default();
        for (partition, offset) in [(0, 5), (0, 3), (1, 10), (0, 7)] {
            offsets.record(&record(partition, offset));
        }
        let list = offsets.to_commit_list().expect("list");
        let committed: Vec<(i32, Offset)> = list
            .elements()
            .iter()
            .map(|e| (e.partition(), e.offset()))
            .collect();
        assert_eq!(
            committed,
            vec![(0, Offset::Offset(8)), (1, Offset::Offset(11))]
        );
    }
}
