//! Events and evaluations for the detectors' unit tests.

use chrono::{DateTime, Utc};
use warden_ingest::alert::{Alert, Severity};
use warden_ingest::event::{ResponseInfo, RouteInfo};
use warden_ingest::event_row::EventRow;
use warden_ingest::{AuditEvent, EventKind, RequestId};

use crate::buckets::{BUCKET_SECONDS, bucket_start};
use crate::detector::Detector;
use crate::engine::Evaluation;

/// Event times in tests are seconds after this.
pub const START: i64 = 1_800_000_000;

/// The time `second` seconds after [`START`].
pub fn at(second: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(START + second, 0).expect("time")
}

/// An event of `kind` at `second` from `client` (by name) at `ip`, routed to target `llama`.
pub fn event(kind: EventKind, second: i64, client: &str, ip: &str) -> AuditEvent {
    let mut event = AuditEvent::new(kind, RequestId::new(), "p");
    event.ts = at(second);
    event.client.name = Some(client.into());
    event.client.ip = Some(ip.into());
    event.route = Some(RouteInfo {
        endpoint: "/v1/chat/completions".into(),
        target_id: Some("llama".into()),
        ..RouteInfo::default()
    });
    event
}

/// A `request` event.
pub fn request(second: i64, client: &str, ip: &str) -> AuditEvent {
    event(EventKind::Request, second, client, ip)
}

/// A `response` event with status 200 and its cost.
pub fn priced(second: i64, client: &str, cost_usd: f64) -> AuditEvent {
    let mut event = event(EventKind::Response, second, client, "10.0.0.1");
    event.response = Some(ResponseInfo {
        status: 200,
        cost_usd: Some(cost_usd),
        ..ResponseInfo::default()
    });
    event
}

pub fn feed(detector: &mut impl Detector, event: &AuditEvent) {
    detector.observe(&EventRow::from(event));
}

/// The closed evaluation at `second` (rounded down to its bucket).
pub fn closed_at(second: i64) -> Evaluation {
    let end = (START + second).div_euclid(BUCKET_SECONDS);
    Evaluation {
        end,
        closed: true,
        at: bucket_start(end),
    }
}

/// The early evaluation right after an event at `second`.
pub fn early_at(second: i64) -> Evaluation {
    Evaluation {
        end: (START + second).div_euclid(BUCKET_SECONDS) + 1,
        closed: false,
        at: at(second),
    }
}

/// Subject and severity of each alert.
pub fn findings(alerts: &[Alert]) -> Vec<(String, Severity)> {
    alerts
        .iter()
        .map(|a| (a.subject.to_string(), a.severity))
        .collect()
}
