//! Scenarios: realistic event streams for rehearsing the detectors (`warden simulate`) and
//! for testing them.
//!
//! Every scenario is the traffic of a small production service: three clients (a web app, a
//! mobile app, a batch job), each with its own key, addresses and country, calling two
//! targets with a daily rhythm (quiet at 04:00 UTC, busiest at 16:00), realistic prices and
//! the odd upstream hiccup. Each call leaves the proxy's three events (`policy_decision`,
//! `request`, `response`). An incident scenario runs that traffic for a warm-up (so baselines
//! and token histories exist), then adds its incident for 15 minutes, then 10 quiet minutes.
//! The stream is deterministic for a seed.
//!
//! Each scenario states the alerts it must raise: detector, subject, lowest severity, and how
//! long after the incident starts (event time) the alert may come at the latest. The benign
//! day must raise none.

use std::fmt;

use chrono::{DateTime, TimeDelta, Timelike, Utc};
use warden_ingest::alert::{Alert, AlertStatus, Severity};
use warden_ingest::event::{DecisionInfo, RequestInfo, ResponseInfo, RouteInfo};
use warden_ingest::event_row::EventRow;
use warden_ingest::{AuditEvent, EventKind, RequestId, TokenId};

use crate::engine::Engine;

/// How long the normal traffic runs before an incident.
pub const WARM_UP: TimeDelta = TimeDelta::minutes(130);
/// How long an incident lasts.
pub const INCIDENT: TimeDelta = TimeDelta::minutes(15);
/// Normal traffic after the incident.
pub const COOL_DOWN: TimeDelta = TimeDelta::minutes(10);

/// A scenario to rehearse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scenario {
    /// 24 hours of normal traffic.
    BenignDay,
    /// The batch job loops on an expensive model: cost burn.
    RunawayCost,
    /// The web app sends 20 times its usual traffic.
    TrafficSpike,
    /// The mobile app resends one request twice a second.
    RetryLoop,
    /// One address tries hundreds of made-up keys.
    BruteForce,
    /// The web app's key is used from another country.
    TokenTheft,
    /// The big model turns most calls away with 503s.
    CapacityExhaustion,
}

impl Scenario {
    pub const ALL: [Scenario; 7] = [
        Self::BenignDay,
        Self::RunawayCost,
        Self::TrafficSpike,
        Self::RetryLoop,
        Self::BruteForce,
        Self::TokenTheft,
        Self::CapacityExhaustion,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::BenignDay => "benign-day",
            Self::RunawayCost => "runaway-cost",
            Self::TrafficSpike => "traffic-spike",
            Self::RetryLoop => "retry-loop",
            Self::BruteForce => "brute-force",
            Self::TokenTheft => "token-theft",
            Self::CapacityExhaustion => "capacity-exhaustion",
        }
    }

    /// The scenario called `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|scenario| scenario.name() == name)
    }

    /// The alerts the scenario must raise.
    pub fn expected(self) -> Vec<Expected> {
        let expect = |detector, subject, severity, within_s| Expected {
            detector,
            subject,
            severity,
            within: TimeDelta::seconds(within_s),
        };
        match self {
            Self::BenignDay => Vec::new(),
            Self::RunawayCost => vec![
                expect("cost_burn", "global", Severity::Warning, 180),
                expect("cost_burn", "global", Severity::Critical, 600),
            ],
            Self::TrafficSpike => vec![
                expect("traffic_spike", "client:app-web", Severity::Warning, 120),
                expect("traffic_spike", "global", Severity::Warning, 240),
            ],
            Self::RetryLoop => vec![
                expect("retry_loop", "client:app-mobile", Severity::Warning, 30),
                expect("retry_loop", "client:app-mobile", Severity::Critical, 60),
            ],
            Self::BruteForce => vec![
                expect("token_stuffing", "ip:203.0.113.66", Severity::Critical, 15),
                expect(
                    "auth_brute_force",
                    "ip:203.0.113.66",
                    Severity::Critical,
                    60,
                ),
            ],
            Self::TokenTheft => vec![
                expect(
                    "geo_new_country",
                    "token:tk_web_5f2a",
                    Severity::Critical,
                    15,
                ),
                expect(
                    "geo_multi_country",
                    "token:tk_web_5f2a",
                    Severity::Critical,
                    15,
                ),
            ],
            Self::CapacityExhaustion => vec![expect(
                "capacity_503",
                "target:llama-70b",
                Severity::Critical,
                180,
            )],
        }
    }

    /// The scenario's events from `start`, in time order.
    pub fn events(self, start: DateTime<Utc>, seed: u64) -> Vec<AuditEvent> {
        let mut traffic = Traffic::new(seed);
        let incident = start + WARM_UP;
        let end = incident + INCIDENT;
        if self == Self::CapacityExhaustion {
            traffic.capacity_failing = Some((incident, end));
        }
        let normal_until = match self {
            Self::BenignDay => start + TimeDelta::hours(24),
            _ => end + COOL_DOWN,
        };
        traffic.normal(start, normal_until);
        match self {
            Self::BenignDay => {}
            Self::RunawayCost => {
                // The batch job in a loop on the 70B model: 8 calls a second, $0.012 each.
                traffic.burst(incident, end, 8.0, |t, at| {
                    t.call(
                        at,
                        &CLIENTS[2],
                        &TARGETS[1],
                        Outcome::Ok { cost_scale: 10.0 },
                    )
                });
            }
            Self::TrafficSpike => {
                traffic.burst(incident, end, 14.0, |t, at| {
                    t.call(
                        at,
                        &CLIENTS[0],
                        &TARGETS[0],
                        Outcome::Ok { cost_scale: 1.0 },
                    )
                });
            }
            Self::RetryLoop => {
                traffic.burst(incident, end, 2.0, |t, at| {
                    t.call(at, &CLIENTS[1], &TARGETS[0], Outcome::Repeat);
                });
            }
            Self::BruteForce => {
                traffic.burst(incident, end, 3.0, |t, at| t.denied(at, "203.0.113.66"));
            }
            Self::TokenTheft => {
                let thief = Client {
                    ips: &["198.51.100.23"],
                    country: "RU",
                    ..CLIENTS[0]
                };
                traffic.burst(incident, end, 0.5, |t, at| {
                    t.call(at, &thief, &TARGETS[0], Outcome::Ok { cost_scale: 1.0 })
                });
            }
            Self::CapacityExhaustion => {
                // Turned away, the clients retry: more calls to the failing model.
                traffic.burst(incident, end, 0.5, |t, at| {
                    let client = CLIENTS[t.pick(CLIENTS.map(|c| c.share))];
                    t.call(at, &client, &TARGETS[1], Outcome::Ok { cost_scale: 1.0 });
                });
            }
        }
        traffic.events.sort_by_key(|event| event.ts);
        traffic.events
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An alert a scenario must raise.
#[derive(Debug, Clone, PartialEq)]
pub struct Expected {
    pub detector: &'static str,
    pub subject: &'static str,
    /// At least this severity.
    pub severity: Severity,
    /// At the latest this long after the incident starts (event time).
    pub within: TimeDelta,
}

impl Expected {
    /// Whether `alert` is this one, in time for an incident starting at `incident`.
    pub fn is_met_by(&self, alert: &Alert, incident: DateTime<Utc>) -> bool {
        alert.status == AlertStatus::Firing
            && alert.detector == self.detector
            && alert.subject.to_string() == self.subject
            && alert.severity >= self.severity
            && alert.ts <= incident + self.within
    }
}

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} within {}s",
            self.detector,
            self.subject,
            self.severity.as_str(),
            self.within.num_seconds()
        )
    }
}

/// Runs `events` through `engine`, then moves its watermark past the last event; returns
/// every alert published.
pub fn rehearse(engine: &mut Engine, events: &[AuditEvent]) -> Vec<Alert> {
    let mut alerts = Vec::new();
    for event in events {
        alerts.extend(engine.take(&EventRow::from(event)));
    }
    if let Some(last) = events.last() {
        alerts.extend(engine.advance_to(last.ts + TimeDelta::minutes(1)));
    }
    alerts
}

/// One client of the simulated service.
#[derive(Debug, Clone, Copy)]
struct Client {
    name: &'static str,
    token: &'static str,
    ips: &'static [&'static str],
    country: &'static str,
    /// Its share of the service's calls.
    share: f64,
}

const CLIENTS: [Client; 3] = [
    Client {
        name: "app-web",
        token: "tk_web_5f2a",
        ips: &["192.0.2.10", "192.0.2.11", "192.0.2.12"],
        country: "US",
        share: 0.5,
    },
    Client {
        name: "app-mobile",
        token: "tk_mob_91c4",
        ips: &["192.0.2.40", "192.0.2.41"],
        country: "US",
        share: 0.3,
    },
    Client {
        name: "app-batch",
        token: "tk_bat_07e1",
        ips: &["198.18.0.5"],
        country: "IE",
        share: 0.2,
    },
];

/// A target with its price per call.
#[derive(Debug, Clone, Copy)]
struct Target {
    id: &'static str,
    model: &'static str,
    usd_per_call: f64,
    /// Its share of the calls.
    share: f64,
}

const TARGETS: [Target; 2] = [
    Target {
        id: "llama-8b",
        model: "meta-llama/Llama-3.1-8B-Instruct",
        usd_per_call: 0.0004,
        share: 0.7,
    },
    Target {
        id: "llama-70b",
        model: "meta-llama/Llama-3.1-70B-Instruct",
        usd_per_call: 0.0012,
        share: 0.3,
    },
];

/// Calls per second of the whole service at its busiest.
const PEAK_CALLS_PER_SECOND: f64 = 1.5;

#[derive(Debug, Clone, Copy)]
enum Outcome {
    Ok {
        cost_scale: f64,
    },
    /// The same request again (a client stuck retrying).
    Repeat,
}

/// Generates calls.
struct Traffic {
    random: SplitMix64,
    events: Vec<AuditEvent>,
    /// While set, the 70B target refuses most calls with capacity 503s.
    capacity_failing: Option<(DateTime<Utc>, DateTime<Utc>)>,
}

impl Arrivals for Traffic {
    fn random(&mut self) -> &mut SplitMix64 {
        &mut self.random
    }
}

impl Traffic {
    fn new(seed: u64) -> Self {
        Self {
            random: SplitMix64(seed),
            events: Vec::new(),
            capacity_failing: None,
        }
    }

    /// The service's calls per second at `at`: lowest at 04:00 UTC, highest at 16:00.
    fn rate(at: DateTime<Utc>) -> f64 {
        let hour = f64::from(at.hour()) + f64::from(at.minute()) / 60.0;
        let phase = (hour - 4.0) / 24.0 * std::f64::consts::TAU;
        PEAK_CALLS_PER_SECOND * (0.25 + 0.75 * (1.0 - phase.cos()) / 2.0)
    }

    /// Normal traffic from `from` to `to`.
    fn normal(&mut self, from: DateTime<Utc>, to: DateTime<Utc>) {
        let mut at = from;
        loop {
            at += self.gap(Self::rate(at));
            if at >= to {
                break;
            }
            let client = CLIENTS[self.pick(CLIENTS.map(|c| c.share))];
            let target = TARGETS[self.pick(TARGETS.map(|t| t.share))];
            self.call(at, &client, &target, Outcome::Ok { cost_scale: 1.0 });
        }
    }

    /// An index drawn by weight.
    fn pick<const N: usize>(&mut self, weights: [f64; N]) -> usize {
        let mut left = self.random.unit() * weights.iter().sum::<f64>();
        for (index, weight) in weights.iter().enumerate() {
            if left < *weight {
                return index;
            }
            left -= weight;
        }
        N - 1
    }

    /// A call with a made-up key from `ip`: refused.
    fn denied(&mut self, at: DateTime<Utc>, ip: &str) {
        let refused = refused_call(&mut self.random, at, ip, "proxy-sim");
        self.events.extend(refused);
    }

    /// One authenticated call: its three events.
    fn call(&mut self, at: DateTime<Utc>, client: &Client, target: &Target, outcome: Outcome) {
        let ip = client.ips[self.random.below(client.ips.len())];
        let route = RouteInfo {
            endpoint: "/v1/chat/completions".to_owned(),
            target_id: Some(target.id.to_owned()),
            model: Some(target.model.to_owned()),
            stream: false,
        };
        let capacity_503 = target.id == "llama-70b"
            && self
                .capacity_failing
                .is_some_and(|(from, to)| from <= at && at < to)
            && self.random.unit() < 0.7;
        let hiccup = self.random.unit() < 0.003;
        let prompt_hash = match outcome {
            Outcome::Repeat => format!("{:064x}", 0x5eed_u64),
            Outcome::Ok { .. } => format!("{:016x}{:048x}", self.random.next(), 0),
        };
        let input_tokens = 200 + self.random.below(400) as u64;
        let output_tokens = 50 + self.random.below(250) as u64;
        let latency_ms = 300.0 + self.random.unit() * 1_500.0;
        let cost_scale = match outcome {
            Outcome::Ok { cost_scale } => cost_scale,
            Outcome::Repeat => 1.0,
        };

        let done = at + TimeDelta::microseconds((latency_ms * 1_000.0) as i64);
        let user_agent = format!("{}/2.3", client.name);
        let caller = Caller {
            ip,
            country: client.country,
            token: client.token,
            name: client.name,
            user_agent: &user_agent,
        };
        let request = RequestInfo {
            bytes: input_tokens * 4,
            prompt_hash: Some(prompt_hash),
            input_tokens: Some(input_tokens),
            content: None,
        };
        let response = if capacity_503 || hiccup {
            ResponseInfo {
                status: 503,
                latency_ms: Some(40.0),
                error_type: Some("upstream_unavailable".to_owned()),
                ..ResponseInfo::default()
            }
        } else {
            let size = (input_tokens + output_tokens) as f64 / 500.0;
            ResponseInfo {
                status: 200,
                latency_ms: Some(latency_ms),
                ttft_ms: Some(latency_ms / 5.0),
                output_tokens: Some(output_tokens),
                finish_reason: Some("stop".to_owned()),
                cost_usd: Some(target.usd_per_call * size * cost_scale),
                ..ResponseInfo::default()
            }
        };
        let trail = allowed_call("proxy-sim", (at, done), &caller, route, request, response);
        self.events.extend(trail);
    }
}

/// A generator of calls arriving at random (a Poisson process).
pub(crate) trait Arrivals: Sized {
    fn random(&mut self) -> &mut SplitMix64;

    /// The wait before the next of calls arriving at random at `rate` a second.
    fn gap(&mut self, rate: f64) -> TimeDelta {
        let seconds = -(1.0 - self.random().unit()).ln() / rate;
        TimeDelta::microseconds((seconds * 1e6) as i64)
    }

    /// Calls made by `make` at `rate` a second from `from` to `to`.
    fn burst(
        &mut self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        rate: f64,
        mut make: impl FnMut(&mut Self, DateTime<Utc>),
    ) {
        let mut at = from;
        loop {
            at += self.gap(rate);
            if at >= to {
                break;
            }
            make(self, at);
        }
    }
}

/// Who made a simulated call, as its events name it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Caller<'a> {
    pub(crate) ip: &'a str,
    pub(crate) country: &'a str,
    pub(crate) token: &'a str,
    pub(crate) name: &'a str,
    pub(crate) user_agent: &'a str,
}

/// The three events of a call `caller` was let in for, as proxy `proxy_id` emits them in
/// environment `prod`: the auth decision and the request at `at`, the response at `done`.
pub(crate) fn allowed_call(
    proxy_id: &str,
    (at, done): (DateTime<Utc>, DateTime<Utc>),
    caller: &Caller<'_>,
    route: RouteInfo,
    request: RequestInfo,
    response: ResponseInfo,
) -> [AuditEvent; 3] {
    let request_id = RequestId::new();
    let [mut decision, mut asked, mut answered] = [
        (EventKind::PolicyDecision, at),
        (EventKind::Request, at),
        (EventKind::Response, done),
    ]
    .map(|(kind, ts)| {
        let mut event = AuditEvent::new(kind, request_id.clone(), proxy_id);
        event.ts = ts;
        event.environment = Some("prod".to_owned());
        event.client.ip = Some(caller.ip.to_owned());
        event.client.country = Some(caller.country.to_owned());
        event.client.token_id = Some(TokenId(caller.token.to_owned()));
        event.client.name = Some(caller.name.to_owned());
        event.client.user_agent = Some(caller.user_agent.to_owned());
        event.route = Some(route.clone());
        event
    });
    decision.decision = Some(DecisionInfo {
        policy: "auth".to_owned(),
        outcome: "allow".to_owned(),
        reason: None,
    });
    asked.request = Some(request);
    answered.response = Some(response);
    [decision, asked, answered]
}

/// The three events of a call from `ip` with a made-up key, refused, as proxy `proxy_id`
/// emits them in environment `prod`.
pub(crate) fn refused_call(
    random: &mut SplitMix64,
    at: DateTime<Utc>,
    ip: &str,
    proxy_id: &str,
) -> [AuditEvent; 3] {
    let request_id = RequestId::new();
    let token = TokenId(format!("tk_{:012x}", random.next() >> 16));
    let [mut decision, request, mut response] = [
        EventKind::PolicyDecision,
        EventKind::Request,
        EventKind::Response,
    ]
    .map(|kind| {
        let mut event = AuditEvent::new(kind, request_id.clone(), proxy_id);
        event.ts = at;
        event.environment = Some("prod".to_owned());
        event.client.ip = Some(ip.to_owned());
        event.client.country = Some("NL".to_owned());
        event.client.token_id = Some(token.clone());
        event.client.user_agent = Some("python-requests/2.31".to_owned());
        event.route = Some(RouteInfo {
            endpoint: "/v1/chat/completions".to_owned(),
            ..RouteInfo::default()
        });
        event
    });
    decision.decision = Some(DecisionInfo {
        policy: "auth".to_owned(),
        outcome: "deny".to_owned(),
        reason: Some("invalid_api_key".to_owned()),
    });
    response.response = Some(ResponseInfo {
        status: 401,
        error_type: Some("invalid_api_key".to_owned()),
        ..ResponseInfo::default()
    });
    [decision, request, response]
}

/// A small deterministic generator (SplitMix64): the same seed gives the same stream.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(pub(crate) u64);

impl SplitMix64 {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in 0..n.
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.unit() * n as f64) as usize % n.max(1)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use std::time::Instant;

    use super::*;
    use crate::DetectConfig;
    use crate::frontier::PacedEngine;

    fn start() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 2, 6, 0, 0)
            .single()
            .expect("time")
    }

    fn run(scenario: Scenario) -> (Vec<AuditEvent>, Vec<Alert>) {
        let events = scenario.events(start(), 7);
        let mut engine = DetectConfig::default().engine().expect("engine");
        let alerts = rehearse(&mut engine, &events);
        (events, alerts)
    }

    fn firing(alerts: &[Alert]) -> Vec<String> {
        alerts
            .iter()
            .filter(|a| a.status == AlertStatus::Firing)
            .map(|a| {
                format!(
                    "{} {} {} at {}",
                    a.detector,
                    a.subject,
                    a.severity.as_str(),
                    a.ts
                )
            })
            .collect()
    }

    #[test]
    fn the_benign_day_raises_nothing() {
        let (events, alerts) = run(Scenario::BenignDay);
        assert!(events.len() > 150_000, "{}", events.len());
        assert!(alerts.is_empty(), "{:#?}", firing(&alerts));
    }

    /// `scenario`'s expected alerts are among `alerts`, in time, and nothing fired before its
    /// incident.
    fn assert_found_in_time(scenario: Scenario, alerts: &[Alert]) {
        let incident = start() + WARM_UP;
        for expected in scenario.expected() {
            assert!(
                alerts
                    .iter()
                    .any(|alert| expected.is_met_by(alert, incident)),
                "{scenario}: expected {expected}; got {:#?}",
                firing(alerts)
            );
        }
        let before: Vec<_> = alerts.iter().filter(|a| a.ts < incident).collect();
        assert!(
            before.is_empty(),
            "{scenario}: alerts before the incident: {before:#?}"
        );
    }

    #[test]
    fn each_incident_raises_its_alerts_in_time() {
        for scenario in Scenario::ALL.into_iter().skip(1) {
            let (_, alerts) = run(scenario);
            assert_found_in_time(scenario, &alerts);
        }
    }

    /// `events` as a detect stage reads two partitions of them (by token) while catching up:
    /// in runs of `run` events of one partition, then of the other (librdkafka hands over a
    /// fetched chunk of a partition at a time: 1 MB, about 2,000 events).
    fn rehearse_in_runs(events: &[AuditEvent], run: usize) -> Vec<Alert> {
        let engine = DetectConfig::default().engine().expect("engine");
        let mut paced = PacedEngine::new(engine);
        let now = Instant::now();
        let on_first = |event: &&AuditEvent| {
            let key = event.partition_key().bytes().map(u32::from).sum::<u32>();
            key % 2 == 0
        };
        let (first, second): (Vec<&AuditEvent>, Vec<&AuditEvent>) =
            events.iter().partition(on_first);
        let mut runs = [first.chunks(run), second.chunks(run)];
        let mut alerts = Vec::new();
        for input in [0, 1] {
            paced.expect(input, now);
        }
        let mut ended = [false, false];
        while ended.contains(&false) {
            for (input, runs) in runs.iter_mut().enumerate() {
                match runs.next() {
                    Some(run) => {
                        for event in run {
                            paced.offer(&EventRow::from(*event), None, input as i32, now);
                            alerts.extend(paced.advance(now));
                        }
                    }
                    None if !ended[input] => {
                        ended[input] = true;
                        // Read to its end, live: it holds nothing back any more.
                        let wall = events.last().map_or_else(Utc::now, |event| event.ts);
                        paced.reached_end(input as i32, now, wall);
                        alerts.extend(paced.advance(now));
                    }
                    None => {}
                }
            }
        }
        if let Some(last) = events.last() {
            alerts.extend(
                paced
                    .engine_mut()
                    .advance_to(last.ts + TimeDelta::minutes(1)),
            );
        }
        assert_eq!(paced.engine().stats().late, 0);
        assert!(paced.held() > 0, "the runs put one partition ahead");
        alerts
    }

    #[test]
    fn each_incident_is_found_in_time_when_partitions_are_read_at_different_paces() {
        for scenario in Scenario::ALL {
            let alerts = rehearse_in_runs(&scenario.events(start(), 7), 2_000);
            assert_found_in_time(scenario, &alerts);
        }
    }

    #[test]
    fn a_seed_gives_the_same_stream() {
        let a = Scenario::RetryLoop.events(start(), 3);
        let b = Scenario::RetryLoop.events(start(), 3);
        let fingerprint = |events: &[AuditEvent]| -> Vec<_> {
            events
                .iter()
                .map(|e| (e.ts, e.kind, e.client.ip.clone()))
                .collect()
        };
        assert_eq!(fingerprint(&a), fingerprint(&b));
        assert_eq!(Scenario::from_name("retry-loop"), Some(Scenario::RetryLoop));
    }
}
