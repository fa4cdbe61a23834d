//! The embedded broker: librdkafka's in-process mock cluster on loopback.
//!
//! It speaks the Kafka protocol over TCP, so every Warden client uses its ordinary code path
//! against it. It keeps data in memory only: what it holds is gone when the process exits,
//! which is why `warden up` drains the archiver before stopping it.
//!
//! The mock cluster handle is not `Send`, so it lives on a thread of its own for its whole
//! life; [`EmbeddedBroker`] is the `Send` handle that stops that thread when dropped.

use std::sync::mpsc;
use std::thread;

use rdkafka::mocking::MockCluster;
use tracing::info;

use super::{KafkaConfig, KafkaSetupError};

/// Number of mock brokers: one is enough on loopback and keeps startup instant.
const NUM_MOCK_BROKERS: i32 = 1;

/// A running embedded broker; stops when dropped.
#[derive(Debug)]
pub struct EmbeddedBroker {
    bootstrap_servers: String,
    /// Dropping the sender wakes the owning thread, which then drops the mock cluster.
    stop: Option<mpsc::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl EmbeddedBroker {
    /// Starts the mock cluster and creates the configured topics on it.
    pub fn start(config: &KafkaConfig) -> Result<Self, KafkaSetupError> {
        let (ready_tx, ready_rx) = mpsc::channel::<Result<String, String>>();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let topics: Vec<(String, i32)> = config
            .topics
            .with_partitions(config.partitions)
            .map(|(name, partitions)| (name.to_owned(), partitions))
            .to_vec();
        let thread = thread::Builder::new()
            .name("embedded-broker".into())
            .spawn(move || {
                let cluster = match MockCluster::new(NUM_MOCK_BROKERS) {
                    Ok(cluster) => cluster,
                    Err(err) => {
                        let _ = ready_tx.send(Err(err.to_string()));
                        return;
                    }
                };
                for (topic, partitions) in &topics {
                    if let Err(err) = cluster.create_topic(topic, *partitions, 1) {
                        let _ = ready_tx.send(Err(format!("topic {topic}: {err}")));
                        return;
                    }
                }
                let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
                // Block until the handle is dropped (the sender goes away).
                let _ = stop_rx.recv();
                drop(cluster);
            })
            .map_err(|err| KafkaSetupError::Embedded(err.to_string()))?;
        let bootstrap_servers = ready_rx
            .recv()
            .map_err(|_| KafkaSetupError::Embedded("broker thread exited".into()))?
            .map_err(KafkaSetupError::Embedded)?;
        info!(
            %bootstrap_servers,
            "embedded broker started (in memory: set [kafka].brokers for durability)"
        );
        Ok(Self {
            bootstrap_servers,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap_servers
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
