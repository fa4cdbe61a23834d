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
    /// Secrets (`sasl.password`, `ssl.key.password`, ...) are references: `env:NAME`.
    pub properties: BTreeMap<String, String>,
    /// This worker's stable identity in its consumer groups (Kafka static membership), or
    /// `$WARDEN_INSTANCE_ID`: a worker restarted with the same one takes its partitions back
    /// at once. Unset: dynamic membership. Two workers of one group must never share one
    /// (the newer fences the older out).
    pub instance_id: Option<String>,
    /// The secret properties, filled by [`KafkaConfig::resolve_secrets`]; never printed.
    #[serde(skip)]
    pub secret_properties: BTreeMap<String, SecretValue>,
}

/// librdkafka properties that hold secrets: only accepted as `env:` references.
const SECRET_PROPERTIES: &[&str] = &[
    "sasl.password",
    "sasl.oauthbearer.client.secret",
    "sasl.oauthbearer.config",
    "ssl.key.password",
    "ssl.key.pem",
    "ssl.keystore.password",
];

/// A resolved secret: `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(String);

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
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
            instance_id: None,
            secret_properties: BTreeMap::new(),
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
    /// Silences (compacted, by id), shared by every responder.
    pub silences: String,
    /// The responder's state (compacted): the alerts its groups hold and its notification
    /// log, so a restarted or new responder neither loses nor repeats a notification.
    pub respond_state: String,
    /// One audit record per notification (archived as the `notifications` table).
    pub notifications: String,
    /// Incident timelines: every entry the runbooks (and operators approving or undoing)
    /// write, keyed by incident (archived as the `incidents` table).
    pub incidents: String,
}

impl Default for TopicNames {
    fn default() -> Self {
        Self {
            events: "warden.events".to_owned(),
            alerts: "warden.alerts".to_owned(),
            control: "warden.control".to_owned(),
            dlq: "warden.dlq".to_owned(),
            detect_shared: "warden.detect.shared".to_owned(),
            silences: "warden.silences".to_owned(),
            respond_state: "warden.respond.state".to_owned(),
            notifications: "warden.notifications".to_owned(),
            incidents: "warden.incidents".to_owned(),
        }
    }
}

impl TopicNames {
    /// Every topic with its partition count, given the configured count for the others.
    /// Alerts are few and one responder dispatches them all (grouping spans conditions):
    /// one partition, which the responders' group gives to one member at a time.
    pub fn with_partitions(&self, partitions: i32) -> [(&str, i32); 9] {
        [
            (&self.events, partitions),
            (&self.alerts, 1),
            (&self.control, partitions),
            (&self.dlq, partitions),
            (&self.detect_shared, 1),
            (&self.silences, 1),
            (&self.respond_state, 1),
            (&self.notifications, partitions),
            (&self.incidents, partitions),
        ]
    }

    /// Whether `topic` holds state (the latest record per key), not a log: compacted.
    pub fn is_compacted(&self, topic: &str) -> bool {
        topic == self.control || topic == self.silences || topic == self.respond_state
    }
}

impl KafkaConfig {
    pub fn is_embedded(&self) -> bool {
        self.brokers.trim() == EMBEDDED_BROKERS
    }

    /// Resolves the `env:NAME` references among the properties through `lookup` (the
    /// environment seam) and keeps their values apart, out of `Debug` and errors. A secret
    /// property given inline, or a reference to an unset variable, is a problem named by key.
    pub fn resolve_secrets(&mut self, lookup: &dyn Fn(&str) -> Option<String>) -> Vec<String> {
        let mut errors = Vec::new();
        let keys: Vec<String> = self.properties.keys().cloned().collect();
        for key in keys {
            let Some(value) = self.properties.get(&key) else {
                continue;
            };
            let path = format!("kafka.properties.{key:?}");
            match value.strip_prefix("env:") {
                Some(name) => match lookup(name) {
                    Some(secret) if !secret.is_empty() => {
                        self.properties.remove(&key);
                        self.secret_properties.insert(key, SecretValue(secret));
                    }
                    _ => errors.push(format!("{path}: env var {name} is not set")),
                },
                None if SECRET_PROPERTIES.contains(&key.as_str()) => errors.push(format!(
                    "{path}: must be a reference like \"env:KAFKA_SASL_PASSWORD\", not an \
                     inline value"
                )),
                None => {}
            }
        }
        errors
    }

    /// Every librdkafka property to apply: the plain ones and the resolved secrets.
    pub(crate) fn all_properties(&self) -> impl Iterator<Item = (&str, &str)> {
        self.properties
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str()))
            .chain(
                self.secret_properties
                    .iter()
                    .map(|(key, value)| (key.as_str(), value.0.as_str())),
            )
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
        if let Some(id) = &self.instance_id {
            let valid = !id.is_empty()
                && id.len() <= 200
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
            if !valid {
                errors.push(format!(
                    "kafka.instance_id: {id:?} must be 1-200 letters, digits, '.', '_' or '-'"
                ));
            }
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
    fn secret_properties_are_references_resolved_apart_and_never_printed() {
        let mut config = KafkaConfig {
            brokers: "kafka:9092".into(),
            properties: BTreeMap::from([
                ("security.protocol".to_owned(), "SASL_SSL".to_owned()),
                ("sasl.username".to_owned(), "warden".to_owned()),
                (
                    "sasl.password".to_owned(),
                    "env:TEST_KAFKA_PASSWORD".to_owned(),
                ),
            ]),
            ..KafkaConfig::default()
        };
        let secret = "s3cr3t-made-up-for-this-test";
        let lookup = |name: &str| (name == "TEST_KAFKA_PASSWORD").then(|| secret.to_owned());
        assert!(config.resolve_secrets(&lookup).is_empty());
        let all: BTreeMap<&str, &str> = config.all_properties().collect();
        assert_eq!(all.get("sasl.password"), Some(&secret));
        assert_eq!(all.get("sasl.username"), Some(&"warden"));
        assert!(!format!("{config:?}").contains(secret));

        let mut inline = KafkaConfig {
            properties: BTreeMap::from([
                ("sasl.password".to_owned(), "hunter2".to_owned()),
                ("ssl.key.password".to_owned(), "env:UNSET".to_owned()),
            ]),
            ..KafkaConfig::default()
        };
        let errors = inline.resolve_secrets(&|_| None);
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors.iter().all(|e| !e.contains("hunter2")), "{errors:?}");
        assert!(errors[0].contains("sasl.password") && errors[0].contains("inline"));
        assert!(errors[1].contains("UNSET"));
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
