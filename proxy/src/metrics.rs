//! Prometheus metrics of the proxy, served at `GET /metrics` (text exposition format).
//!
//! Names are constants; labels are low-cardinality only (endpoint, target id, status): never a
//! token id, a client ip or a model string a client can invent.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::TypedMetric;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use warden_ingest::EventEmitter;

use crate::policy::breaker::CircuitState;

const REQUESTS: &str = "warden_proxy_requests";
const UPSTREAM_LATENCY: &str = "warden_proxy_upstream_latency_seconds";
const ADDED_LATENCY: &str = "warden_proxy_added_latency_seconds";
const CALLS_REFUSED_UNAUDITED: &str = "warden_proxy_calls_refused_unaudited";
const REFUSED_OVERLOADED: &str = "warden_proxy_refused_overloaded";
const CONNECTIONS_OPEN: &str = "warden_proxy_connections_open";
const EVENTS_EMITTED: &str = "warden_events_emitted";
const EVENTS_DROPPED: &str = "warden_events_dropped";
const EVENTS_SHED: &str = "warden_events_shed";
const EVENTS_DELIVERED: &str = "warden_events_delivered";
const EVENTS_SPOOLED: &str = "warden_events_spooled";
const EVENTS_REPLAYED: &str = "warden_events_replayed";
const SPOOL_BYTES: &str = "warden_spool_bytes";
const SPOOLING: &str = "warden_spooling";
const CIRCUIT_STATE: &str = "warden_proxy_circuit_state";

/// Labels of a finished call.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    endpoint: String,
    /// The target id, or `none` when the call failed before routing.
    target: String,
    status: u16,
}

/// What was over its cap when a caller was turned away.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub(crate) enum OverloadedResource {
    /// `[proxy].max_connections`: the connection was answered 503 and closed.
    Connections,
    /// `[proxy].max_in_flight_calls`: the call was answered 503.
    Calls,
}

impl OverloadedResource {
    fn label(self) -> &'static str {
        match self {
            Self::Connections => "connections",
            Self::Calls => "calls",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OverloadLabels {
    resource: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabels {
    target: String,
}

/// The proxy's metrics. Recording is lock-free per series after its first use.
#[derive(Debug)]
pub(crate) struct ProxyMetrics {
    registry: Registry,
    requests: Family<CallLabels, Counter>,
    upstream_latency: Family<TargetLabels, Histogram>,
    added_latency: Histogram,
    refused_unaudited: Counter,
    refused_overloaded: Family<OverloadLabels, Counter>,
    connections_open: Gauge,
    circuit_state: Family<TargetLabels, Gauge>,
}

impl ProxyMetrics {
    pub(crate) fn new(emitter: EventEmitter) -> Self {
        let mut registry = Registry::default();
        let requests = Family::<CallLabels, Counter>::default();
        registry.register(
            REQUESTS,
            "Calls answered, by endpoint, target and HTTP status",
            requests.clone(),
        );
        let upstream_latency = Family::<TargetLabels, Histogram>::new_with_constructor(|| {
            // 1 ms .. ~65 s
            Histogram::new(exponential_buckets(0.001, 2.0, 17))
        });
        registry.register(
            UPSTREAM_LATENCY,
            "Time the upstream took to answer a non-streamed call, by target",
            upstream_latency.clone(),
        );
        // 50 µs .. ~0.4 s: the proxy's own share of a call.
        let added_latency = Histogram::new(exponential_buckets(0.000_05, 2.0, 14));
        registry.register(
            ADDED_LATENCY,
            "Latency the proxy added to a non-streamed call (total minus upstream time)",
            added_latency.clone(),
        );
        let refused_unaudited = Counter::default();
        registry.register(
            CALLS_REFUSED_UNAUDITED,
            "Calls refused with 503 because the audit spool was full (on_spool_full = fail_closed)",
            refused_unaudited.clone(),
        );
        let refused_overloaded = Family::<OverloadLabels, Counter>::default();
        registry.register(
            REFUSED_OVERLOADED,
            "Connections and calls refused with 503 because their cap was reached",
            refused_overloaded.clone(),
        );
        let connections_open = Gauge::default();
        registry.register(
            CONNECTIONS_OPEN,
            "Client connections open now",
            connections_open.clone(),
        );
        let circuit_state = Family::<TargetLabels, Gauge>::default();
        registry.register(
            CIRCUIT_STATE,
            "Each target's circuit breaker: 0 closed, 1 open, 2 half-open",
            circuit_state.clone(),
        );
        registry.register_collector(Box::new(EmitterCollector { emitter }));
        Self {
            registry,
            requests,
            upstream_latency,
            added_latency,
            refused_unaudited,
            refused_overloaded,
            connections_open,
            circuit_state,
        }
    }

    /// Sets each target's circuit state (read at scrape time).
    pub(crate) fn set_circuit_states(&self, states: Vec<(String, CircuitState)>) {
        for (target, state) in states {
            self.circuit_state
                .get_or_create(&TargetLabels { target })
                .set(state as i64);
        }
    }

    pub(crate) fn refused_unaudited(&self) {
        self.refused_unaudited.inc();
    }

    pub(crate) fn refused_overloaded(&self, resource: OverloadedResource) {
        self.refused_overloaded
            .get_or_create(&OverloadLabels {
                resource: resource.label(),
            })
            .inc();
    }

    /// The gauge of open connections, for the server to move.
    pub(crate) fn connections_open(&self) -> &Gauge {
        &self.connections_open
    }

    /// Records one finished call. `upstream_seconds` is known for non-streamed calls that
    /// reached the upstream.
    pub(crate) fn record_call(
        &self,
        endpoint: &str,
        target: Option<&str>,
        status: u16,
        total_seconds: f64,
        upstream_seconds: Option<f64>,
    ) {
        let target = target.unwrap_or("none").to_owned();
        self.requests
            .get_or_create(&CallLabels {
                endpoint: endpoint.to_owned(),
                target: target.clone(),
                status,
            })
            .inc();
        if let Some(upstream_seconds) = upstream_seconds {
            self.upstream_latency
                .get_or_create(&TargetLabels { target })
                .observe(upstream_seconds);
            self.added_latency
                .observe((total_seconds - upstream_seconds).max(0.0));
        }
    }

    /// The text exposition of every metric.
    pub(crate) fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// Reads the emitter's counters at scrape time.
#[derive(Debug)]
struct EmitterCollector {
    emitter: EventEmitter,
}

impl Collector for EmitterCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = self.emitter.stats();
        for (name, help, value) in [
            (
                EVENTS_EMITTED,
                "Audit events accepted from calls",
                stats.num_emitted(),
            ),
            (
                EVENTS_DELIVERED,
                "Audit events Kafka acknowledged on the direct route",
                stats.num_delivered(),
            ),
            (
                EVENTS_SPOOLED,
                "Audit events written to the disk spool while Kafka was unreachable or slow",
                stats.num_spooled(),
            ),
            (
                EVENTS_REPLAYED,
                "Spooled audit events Kafka has since acknowledged",
                stats.num_replayed(),
            ),
            (
                EVENTS_DROPPED,
                "Audit events lost (on_spool_full = drop, or nowhere left to keep them)",
                stats.num_dropped(),
            ),
            (
                EVENTS_SHED,
                "Audit events of refused callers (bad keys) not kept while the pipeline was \
                 more than half full",
                stats.num_shed(),
            ),
        ] {
            let counter = ConstCounter::new(value);
            let metric = encoder.encode_descriptor(name, help, None, ConstCounter::<u64>::TYPE)?;
            counter.encode(metric)?;
        }
        for (name, help, value) in [
            (
                SPOOL_BYTES,
                "Bytes the audit spool holds on disk",
                stats.spool_bytes() as i64,
            ),
            (
                SPOOLING,
                "1 while audit events go to the disk spool instead of straight to Kafka",
                i64::from(stats.is_spooling()),
            ),
        ] {
            let gauge = ConstGauge::new(value);
            let metric = encoder.encode_descriptor(name, help, None, ConstGauge::<i64>::TYPE)?;
            gauge.encode(metric)?;
        }
        Ok(())
    }
}

/// Shared handle.
pub(crate) type SharedMetrics = Arc<ProxyMetrics>;
