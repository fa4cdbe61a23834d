//! `[kafka]` configuration: where the broker is, the topic names, and librdkafka overrides.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The `brokers` value that starts librdkafka's in-process mock cluster.
pub const EMBEDDED_BROKERS: &str = "embedded";

/// Raw `[kafka]` section as written in TOML.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// `"embedded"` or a comma-separated `host:port` list.
    pub brokers: String,
    pub topics: TopicNames,
    /// Partitions for topics Warden creates.
    pub partitions: i32,
    /// Replication factor for topics Warden creates; -1 uses the broker's default.
    pub replication_factor: i32,
    /// Producer compression (`lz4`, `zstd`, `gzip`, `snappy`, `none`).
    pub compression: String,
    /// Extra librdkafka properties applied to every client (e.g. `security.protocol`).
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: EMBEDDED_BROKERS.to_owned(),
            topics: TopicNames::default(),
            partitions: 6,
            replication_factor: -1,
            compression: "lz4".to_owned(),
            properties: BTreeMap::new(),
        }
    }
}

/// Names of the topics Warden reads and writes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopicNames {
    pub events: String,
    pub alerts: String,
    pub control: String,
    pub dlq: String,
    /// Events the detect workers pass on to the one worker that runs the detectors whose
    /// subjects are not the partition key (global, per target, client, IP, country): one
    /// partition, so the consumer group gives it to exactly one member.
    pub detect_shared: String,
}

impl Default for TopicNames {
    fn default() -> Self {
        Self {
            events: "warden.events".to_owned(),
            alerts: "warden.alerts".to_owned(),
            control: "warden.control".to_owned(),
            dlq: "warden.dlq".to_owned(),
            detect_shared: "warden.detect.shared".to_owned(),
        }
    }
}

impl TopicNames {
    /// Every topic with its partition count, given the configured count for the others.
    pub fn with_partitions(&self, partitions: i32) -> [(&str, i32); 5] {
        [
            (&self.events, partitions),
            (&self.alerts, partitions),
            (&self.control, partitions),
            (&self.dlq, partitions),
            (&self.detect_shared, 1),
        ]
    }
}

impl KafkaConfig {
    pub fn is_embedded(&self) -> bool {
        self.brokers.trim() == EMBEDDED_BROKERS
    }

    /// Checks the section without IO; returns one message per problem, each naming its key.
    pub fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if self.brokers.trim().is_empty() {
            errors.push("kafka.brokers: must be \"embedded\" or a host:port list".to_owned());
        } else if !self.is_embedded() {
            for broker in self.brokers.split(',') {
                let broker = broker.trim();
                let valid = broker
                    .rsplit_once(':')
                    .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
                if !valid {
                    errors.push(format!("kafka.brokers: {broker:?} is not host:port"));
                }
            }
        }
        if self.partitions < 1 {
            errors.push("kafka.partitions: must be at least 1".to_owned());
        }
        if self.replication_factor == 0 || self.replication_factor < -1 {
            errors.push("kafka.replication_factor: must be -1 (broker default) or >= 1".to_owned());
        }
        const CODECS: &[&str] = &["none", "gzip", "snappy", "lz4", "zstd"];
        if !CODECS.contains(&self.compression.as_str()) {
            errors.push(format!(
                "kafka.compression: {:?} is not one of {CODECS:?}",
                self.compression
            ));
        }
        for (name, topic) in [
            ("events", &self.topics.events),
            ("alerts", &self.topics.alerts),
            ("control", &self.topics.control),
            ("dlq", &self.topics.dlq),
        ] {
            if topic.is_empty() {
                errors.push(format!("kafka.topics.{name}: must not be empty"));
            }
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_embedded() {
        let config = KafkaConfig::default();
        assert!(config.is_embedded());
        assert!(config.validate().is_empty());
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let config = KafkaConfig {
            brokers: "good:9092,bad".into(),
            partitions: 0,
            compression: "brotli".into(),
            ..KafkaConfig::default()
        };
        let errors = config.validate();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[0].starts_with("kafka.brokers: \"bad\""));
        assert!(errors[1].starts_with("kafka.partitions"));
        assert!(errors[2].starts_with("kafka.compression"));
    }
}
