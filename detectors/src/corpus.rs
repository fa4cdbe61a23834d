//! The benign corpus: four days of a varied, realistic service, to hold the detectors to
//! "a warning means something", and the same days with incidents injected, to measure their
//! precision (alerts that correspond to an incident / all alerts).
//!
//! Much more varied than [`crate::scenario`]'s benign day, and built independently of the
//! detectors' windows:
//!
//! - clients in three time zones (Paris, New York, Tokyo), each with its own daily shape:
//!   quiet nights at 2–3 % of the daytime peak, a morning ramp over two hours, a lunch dip,
//!   closing time and an evening tail; weekends at a fraction of weekdays. The days span the
//!   US switch to daylight saving time (Sunday 14 March 2027), so New York's day moves an hour
//!   against UTC mid-corpus;
//! - mixed-price models per client (a cheap 8B model and a ten times dearer 70B one), so a
//!   client's cost per call is bimodal;
//! - uptime probes (`GET /v1/models` every 30 s);
//! - SDK retries: a failed call (a transient upstream 503) is sent again, identical, after
//!   0.5 s and 1 s; and once a day a one-minute upstream blip fails a fifth of the 70B's
//!   calls, each retried;
//! - a cold start: a scaled-to-zero evaluation target is called once a day and answers
//!   `upstream_loading` for its first minute while the SDK retries every 10 s;
//! - streamed and non-streamed calls, with realistic latencies and times to first token.
//!
//! The stream is deterministic for a seed.

use chrono::{DateTime, Datelike, TimeDelta, TimeZone, Timelike, Utc, Weekday};
use chrono_tz::Tz;
use warden_ingest::AuditEvent;
use warden_ingest::alert::{Alert, AlertStatus, Severity};
use warden_ingest::event::{RequestInfo, ResponseInfo, RouteInfo};

use crate::DetectConfig;
use crate::scenario::{Arrivals, Caller, SplitMix64, allowed_call, refused_call};

/// The proxy the corpus's events come from.
const PROXY_ID: &str = "proxy-corpus";

/// How many days the corpus covers.
pub const DAYS: i64 = 4;

/// The corpus starts at midnight UTC on Friday 12 March 2027.
pub fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2027, 3, 12, 0, 0, 0)
        .single()
        .unwrap_or_default()
}

/// The detect settings a deployment serving this corpus would have: the cost budget follows
/// the main office (New York, with its daylight saving time), sized for the service.
pub fn detect_config() -> DetectConfig {
    let mut config = DetectConfig::default();
    config.cost_burn.timezone = "America/New_York".to_owned();
    config.cost_burn.business_hours = "08:00-19:00".to_owned();
    config.cost_burn.business_hours_usd_per_hour = 60.0;
    config.cost_burn.off_hours_usd_per_hour = 25.0;
    config
}

/// A daily shape: the share of its peak a client calls at, by local hour on a weekday.
#[derive(Debug, Clone, Copy)]
enum Shape {
    /// Office hours: ramp from 07:00 to 09:00, lunch dip 12:00–13:30, closing 17:30–19:00.
    Office,
    /// A consumer app: busiest 19:00–23:00, moderate by day, near silent at night.
    Evening,
}

impl Shape {
    fn share(self, local: DateTime<Tz>) -> f64 {
        let hour = f64::from(local.hour()) + f64::from(local.minute()) / 60.0;
        let weekend = matches!(local.weekday(), Weekday::Sat | Weekday::Sun);
        let ramp = |from: f64, to: f64, low: f64, high: f64| {
            low + (high - low) * ((hour - from) / (to - from)).clamp(0.0, 1.0)
        };
        let share = match self {
            Self::Office => match hour {
                h if h < 7.0 => 0.03,
                h if h < 9.0 => ramp(7.0, 9.0, 0.03, 1.0),
                h if h < 12.0 => 1.0,
                h if h < 12.5 => ramp(12.0, 12.5, 1.0, 0.6),
                h if h < 13.0 => 0.6,
                h if h < 13.5 => ramp(13.0, 13.5, 0.6, 1.0),
                h if h < 17.5 => 1.0,
                h if h < 19.0 => ramp(17.5, 19.0, 1.0, 0.12),
                _ => ramp(19.0, 24.0, 0.12, 0.03),
            },
            Self::Evening => match hour {
                h if h < 1.0 => ramp(0.0, 1.0, 0.35, 0.04),
                h if h < 6.0 => 0.02,
                h if h < 9.0 => ramp(6.0, 9.0, 0.02, 0.4),
                h if h < 18.0 => 0.4,
                h if h < 19.5 => ramp(18.0, 19.5, 0.4, 1.0),
                h if h < 23.0 => 1.0,
                _ => ramp(23.0, 24.0, 1.0, 0.35),
            },
        };
        match (self, weekend) {
            (Self::Office, true) => share * 0.15,
            (Self::Evening, true) => share * 1.2,
            _ => share,
        }
    }
}

/// One client of the corpus.
#[derive(Debug, Clone, Copy)]
struct Client {
    name: &'static str,
    token: &'static str,
    /// Addresses it calls from (chosen at random per call).
    ips: &'static [&'static str],
    country: &'static str,
    timezone: Tz,
    shape: Shape,
    /// Calls per second at its peak.
    peak_per_second: f64,
    /// The share of its calls on the dear 70B model.
    dear_share: f64,
    /// The share of its calls that stream.
    stream_share: f64,
}

const CLIENTS: [Client; 3] = [
    Client {
        name: "eu-web",
        token: "tk_euweb_41d0",
        ips: &["203.0.113.10", "203.0.113.11", "203.0.113.12"],
        country: "FR",
        timezone: chrono_tz::Europe::Paris,
        shape: Shape::Office,
        peak_per_second: 1.0,
        dear_share: 0.15,
        stream_share: 0.6,
    },
    Client {
        name: "us-web",
        token: "tk_usweb_88a2",
        ips: &["198.51.100.20", "198.51.100.21"],
        country: "US",
        timezone: chrono_tz::America::New_York,
        shape: Shape::Office,
        peak_per_second: 0.8,
        dear_share: 0.3,
        stream_share: 0.5,
    },
    Client {
        name: "jp-mobile",
        token: "tk_jpmob_17f3",
        ips: &[
            "192.0.2.50",
            "192.0.2.51",
            "192.0.2.52",
            "192.0.2.53",
            "192.0.2.54",
            "192.0.2.55",
            "192.0.2.56",
            "192.0.2.57",
        ],
        country: "JP",
        timezone: chrono_tz::Asia::Tokyo,
        shape: Shape::Evening,
        peak_per_second: 0.6,
        dear_share: 0.0,
        stream_share: 0.9,
    },
];

/// The uptime monitors: one key each, one region each.
const PROBES: [(&str, &str, &str, &str); 2] = [
    ("uptime-us", "tk_probe_us", "198.51.100.99", "US"),
    ("uptime-eu", "tk_probe_eu", "203.0.113.99", "DE"),
];

/// A model with its price per call of average size.
#[derive(Debug, Clone, Copy)]
struct Model {
    target: &'static str,
    model: &'static str,
    usd_per_call: f64,
}

const CHEAP: Model = Model {
    target: "llama-8b",
    model: "meta-llama/Llama-3.1-8B-Instruct",
    usd_per_call: 0.0006,
};
const DEAR: Model = Model {
    target: "llama-70b",
    model: "meta-llama/Llama-3.1-70B-Instruct",
    usd_per_call: 0.006,
};
/// Scaled to zero between uses: its first calls meet a cold start.
const EVAL: Model = Model {
    target: "llama-70b-eval",
    model: "meta-llama/Llama-3.1-70B-Instruct",
    usd_per_call: 0.006,
};

/// How a call ends.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Answer {
    Ok,
    /// A transient upstream 503.
    Unavailable,
    /// The model is loading (a cold start).
    Loading,
}

/// An incident injected into the corpus.
#[derive(Debug, Clone)]
pub struct Incident {
    pub name: &'static str,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// The detectors whose alerts correspond to it, and the subjects they may name.
    pub related: Vec<(&'static str, &'static str)>,
    /// Of those, the alerts that must come (detector, subject), at the latest `within`
    /// after `from`.
    pub required: Vec<(&'static str, &'static str)>,
    pub within: TimeDelta,
}

impl Incident {
    /// Whether `alert` is about this incident: a related detector and subject, while it
    /// lasts or within half an hour after.
    pub fn explains(&self, alert: &Alert) -> bool {
        let subject = alert.subject.to_string();
        alert.ts >= self.from
            && alert.ts <= self.to + TimeDelta::minutes(30)
            && self
                .related
                .iter()
                .any(|(detector, related)| *detector == alert.detector && *related == subject)
    }
}

/// The benign corpus, in time order.
pub fn benign(seed: u64) -> Vec<AuditEvent> {
    let mut corpus = Corpus::new(seed);
    corpus.normal();
    corpus.finish()
}

/// The corpus with six incidents injected, in time order, and the incidents.
pub fn with_incidents(seed: u64) -> (Vec<AuditEvent>, Vec<Incident>) {
    let mut corpus = Corpus::new(seed);
    let day = |days: i64, hours: i64| start() + TimeDelta::days(days) + TimeDelta::hours(hours);
    let minutes = TimeDelta::minutes;
    let mut incidents = Vec::new();
    // Monday afternoon in Paris: the 70B endpoint turns most calls away (the normal traffic
    // meets it, and retries).
    let (failing_from, failing_to) = (day(3, 14), day(3, 14) + minutes(15));
    corpus.capacity_failing = Some((failing_from, failing_to));
    corpus.normal();

    // Tokyo's lunchtime (03:00 UTC): the mobile app sends 15 times its rate.
    let (from, to) = (day(1, 3), day(1, 3) + minutes(15));
    let mobile = CLIENTS[2];
    corpus.burst(from, to, 5.0, |c, at| c.call(at, &mobile, CHEAP, false));
    incidents.push(Incident {
        name: "traffic spike",
        from,
        to,
        related: vec![
            ("traffic_spike", "client:jp-mobile"),
            ("traffic_spike", "global"),
            ("traffic_spike", "target:llama-8b"),
            ("single_source", "client:jp-mobile"),
        ],
        required: vec![("traffic_spike", "client:jp-mobile")],
        within: minutes(3),
    });

    // New York's afternoon: a job loops on the dear model.
    let (from, to) = (day(2, 18), day(2, 18) + minutes(20));
    let us = CLIENTS[1];
    corpus.burst(from, to, 4.0, |c, at| c.call(at, &us, DEAR, false));
    incidents.push(Incident {
        name: "runaway cost",
        from,
        to,
        related: vec![
            ("cost_burn", "global"),
            ("traffic_spike", "client:us-web"),
            ("traffic_spike", "target:llama-70b"),
            ("traffic_spike", "global"),
            ("cost_per_request", "client:us-web"),
            ("single_source", "client:us-web"),
        ],
        required: vec![("cost_burn", "global")],
        within: minutes(5),
    });

    // Paris, mid-morning: the web app resends one request twice a second.
    let (from, to) = (day(3, 9), day(3, 9) + minutes(10));
    let eu = CLIENTS[0];
    let stuck = format!("{:064x}", 0x57ac_u64);
    corpus.burst(from, to, 2.0, |c, at| {
        c.call_with(at, &eu, CHEAP, false, Some(&stuck), Answer::Ok);
    });
    incidents.push(Incident {
        name: "retry loop",
        from,
        to,
        related: vec![("retry_loop", "client:eu-web")],
        required: vec![("retry_loop", "client:eu-web")],
        within: minutes(1),
    });

    // A Saturday night: one address tries made-up keys.
    let (from, to) = (day(1, 22), day(1, 22) + minutes(10));
    corpus.burst(from, to, 3.0, |c, at| c.denied(at, "198.18.0.66"));
    incidents.push(Incident {
        name: "brute force",
        from,
        to,
        related: vec![
            ("auth_brute_force", "ip:198.18.0.66"),
            ("token_stuffing", "ip:198.18.0.66"),
            // Refused calls are traffic too: at night the flood is ten times the rest.
            ("traffic_spike", "global"),
        ],
        required: vec![("auth_brute_force", "ip:198.18.0.66")],
        within: minutes(1),
    });

    let (from, to) = (failing_from, failing_to);
    incidents.push(Incident {
        name: "capacity exhaustion",
        from,
        to,
        related: vec![
            ("capacity_503", "target:llama-70b"),
            // Its error mix against its own baseline: the same incident, seen as drift.
            ("response_drift", "target:llama-70b"),
            ("retry_amplification", "client:eu-web"),
            ("retry_amplification", "client:us-web"),
        ],
        required: vec![("capacity_503", "target:llama-70b")],
        within: minutes(3),
    });

    // Sunday, Europe's morning: the US web key is used from another country.
    let (from, to) = (day(2, 6), day(2, 6) + minutes(15));
    let thief = Client {
        ips: &["192.0.2.200"],
        country: "RU",
        ..CLIENTS[1]
    };
    corpus.burst(from, to, 0.3, |c, at| c.call(at, &thief, CHEAP, false));
    incidents.push(Incident {
        name: "token theft",
        from,
        to,
        related: vec![
            ("geo_new_country", "token:tk_usweb_88a2"),
            ("geo_multi_country", "token:tk_usweb_88a2"),
            // The thief's calls on top of a quiet Sunday night.
            ("traffic_spike", "client:us-web"),
        ],
        required: vec![("geo_new_country", "token:tk_usweb_88a2")],
        within: minutes(1),
    });
    (corpus.finish(), incidents)
}

/// The alerts that count against precision: warnings and criticals as they fire (an
/// escalation or a reminder of an open alert is not a new alert).
pub fn raised(alerts: &[Alert]) -> Vec<&Alert> {
    let mut open = std::collections::HashSet::new();
    let mut raised = Vec::new();
    for alert in alerts {
        match alert.status {
            AlertStatus::Resolved => {
                open.remove(&alert.dedup_key);
            }
            AlertStatus::Firing if alert.severity >= Severity::Warning => {
                if open.insert(alert.dedup_key.clone()) {
                    raised.push(alert);
                }
            }
            AlertStatus::Firing => {}
        }
    }
    raised
}

/// Generates the corpus.
struct Corpus {
    random: SplitMix64,
    events: Vec<AuditEvent>,
    /// While set, the 70B target refuses most calls with capacity 503s.
    capacity_failing: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// The daily one-minute blip on the 70B target (a fifth of its calls fail).
    blips: Vec<(DateTime<Utc>, DateTime<Utc>)>,
}

impl Arrivals for Corpus {
    fn random(&mut self) -> &mut SplitMix64 {
        &mut self.random
    }
}

impl Corpus {
    fn new(seed: u64) -> Self {
        let blips = (0..DAYS)
            .map(|day| {
                let from = start() + TimeDelta::days(day) + TimeDelta::minutes(15 * 60 + 7 * day);
                (from, from + TimeDelta::minutes(1))
            })
            .collect();
        Self {
            random: SplitMix64(seed),
            events: Vec::new(),
            capacity_failing: None,
            blips,
        }
    }

    fn finish(mut self) -> Vec<AuditEvent> {
        self.events.sort_by_key(|event| event.ts);
        self.events
    }

    /// The benign traffic of every day: the clients, the probes, the daily cold start.
    fn normal(&mut self) {
        let end = start() + TimeDelta::days(DAYS);
        for client in CLIENTS {
            let mut at = start();
            loop {
                let rate = client.peak_per_second
                    * client
                        .shape
                        .share(at.with_timezone(&client.timezone))
                        .max(0.001);
                at += self.gap(rate);
                if at >= end {
                    break;
                }
                let model = if self.random.unit() < client.dear_share {
                    DEAR
                } else {
                    CHEAP
                };
                let stream = self.random.unit() < client.stream_share;
                self.call(at, &client, model, stream);
            }
        }
        for (index, (name, token, ip, country)) in PROBES.into_iter().enumerate() {
            let mut at = start() + TimeDelta::seconds(7 * index as i64);
            while at < end {
                self.probe(at, name, token, ip, country);
                at += TimeDelta::seconds(30);
            }
        }
        // Every day at 10:00 in New York, an evaluation run wakes the scaled-to-zero target:
        // a minute of `upstream_loading`, the SDK retrying every 10 s, then 30 calls.
        for day in 0..DAYS {
            // Midday UTC is the same date in New York.
            let local = (start() + TimeDelta::days(day) + TimeDelta::hours(12))
                .with_timezone(&chrono_tz::America::New_York)
                .date_naive()
                .and_hms_opt(10, 0, 0)
                .and_then(|t| t.and_local_timezone(chrono_tz::America::New_York).single());
            let Some(wake) = local.map(|t| t.with_timezone(&Utc)) else {
                continue;
            };
            let client = CLIENTS[1];
            for attempt in 0..7 {
                let at = wake + TimeDelta::seconds(10 * attempt);
                let answer = if attempt < 6 {
                    Answer::Loading
                } else {
                    Answer::Ok
                };
                let prompt = format!("{:064x}", 0xe7a1_u64 + day as u64);
                self.call_with(at, &client, EVAL, false, Some(&prompt), answer);
            }
            for i in 0..30 {
                let at = wake + TimeDelta::seconds(70 + 4 * i);
                self.call(at, &client, EVAL, false);
            }
        }
    }

    /// A call with a made-up key from `ip`: refused.
    fn denied(&mut self, at: DateTime<Utc>, ip: &str) {
        let refused = refused_call(&mut self.random, at, ip, PROXY_ID);
        self.events.extend(refused);
    }

    /// One call, and the SDK's retries if it fails.
    fn call(&mut self, at: DateTime<Utc>, client: &Client, model: Model, stream: bool) {
        let failing = model.target == DEAR.target
            && self
                .capacity_failing
                .is_some_and(|(from, to)| from <= at && at < to);
        let blip = model.target == DEAR.target
            && self.blips.iter().any(|(from, to)| *from <= at && at < *to);
        let fails = (failing && self.random.unit() < 0.7)
            || (blip && self.random.unit() < 0.2)
            || self.random.unit() < 0.002;
        if !fails {
            self.call_with(at, client, model, stream, None, Answer::Ok);
            return;
        }
        // Failed: the SDK sends the same request again after 0.5 s and 1 s more.
        let prompt = format!("{:016x}{:048x}", self.random.next(), 0);
        self.call_with(
            at,
            client,
            model,
            stream,
            Some(&prompt),
            Answer::Unavailable,
        );
        let mut retry_at = at;
        for (attempt, backoff_ms) in [500, 1_000].into_iter().enumerate() {
            retry_at += TimeDelta::milliseconds(backoff_ms);
            let still_failing = (failing && self.random.unit() < 0.7)
                || (blip && attempt == 0 && self.random.unit() < 0.2);
            let answer = if still_failing {
                Answer::Unavailable
            } else {
                Answer::Ok
            };
            self.call_with(retry_at, client, model, stream, Some(&prompt), answer);
            if answer == Answer::Ok {
                break;
            }
        }
    }

    /// One authenticated call's three events.
    fn call_with(
        &mut self,
        at: DateTime<Utc>,
        client: &Client,
        model: Model,
        stream: bool,
        prompt_hash: Option<&str>,
        answer: Answer,
    ) {
        let ip = client.ips[self.random.below(client.ips.len())];
        let route = RouteInfo {
            endpoint: "/v1/chat/completions".to_owned(),
            target_id: Some(model.target.to_owned()),
            model: Some(model.model.to_owned()),
            stream,
        };
        let prompt_hash = prompt_hash.map_or_else(
            || format!("{:016x}{:048x}", self.random.next(), 0),
            str::to_owned,
        );
        let input_tokens = 150 + self.random.below(600) as u64;
        let output_tokens = 20 + self.random.below(400) as u64;
        let latency_ms = 250.0 + output_tokens as f64 * (8.0 + self.random.unit() * 12.0);
        let took = match answer {
            Answer::Ok => latency_ms,
            Answer::Unavailable | Answer::Loading => 30.0 + self.random.unit() * 40.0,
        };
        let done = at + TimeDelta::microseconds((took * 1_000.0) as i64);
        let caller = Caller {
            ip,
            country: client.country,
            token: client.token,
            name: client.name,
            user_agent: "OpenAI/Python 1.54.0",
        };
        let request = RequestInfo {
            bytes: input_tokens * 4,
            prompt_hash: Some(prompt_hash),
            input_tokens: Some(input_tokens),
            content: None,
        };
        let response = match answer {
            Answer::Ok => {
                let size = (input_tokens + output_tokens) as f64 / 500.0;
                ResponseInfo {
                    status: 200,
                    latency_ms: Some(took),
                    ttft_ms: stream.then(|| 120.0 + self.random.unit() * 300.0),
                    output_tokens: Some(output_tokens),
                    finish_reason: Some(if self.random.unit() < 0.04 {
                        "length".to_owned()
                    } else {
                        "stop".to_owned()
                    }),
                    cost_usd: Some(model.usd_per_call * size),
                    ..ResponseInfo::default()
                }
            }
            Answer::Unavailable | Answer::Loading => ResponseInfo {
                status: 503,
                latency_ms: Some(took),
                error_type: Some(
                    if answer == Answer::Loading {
                        "upstream_loading"
                    } else {
                        "upstream_unavailable"
                    }
                    .to_owned(),
                ),
                ..ResponseInfo::default()
            },
        };
        let trail = allowed_call(PROXY_ID, (at, done), &caller, route, request, response);
        self.events.extend(trail);
    }

    /// An uptime probe: `GET /v1/models` with the monitor's key.
    fn probe(&mut self, at: DateTime<Utc>, name: &str, token: &str, ip: &str, country: &str) {
        let caller = Caller {
            ip,
            country,
            token,
            name,
            user_agent: "uptime-monitor/3.1",
        };
        let route = RouteInfo {
            endpoint: "/v1/models".to_owned(),
            ..RouteInfo::default()
        };
        let answered = ResponseInfo {
            status: 200,
            latency_ms: Some(2.0),
            ..ResponseInfo::default()
        };
        let done = at + TimeDelta::milliseconds(2);
        let trail = allowed_call(
            PROXY_ID,
            (at, done),
            &caller,
            route,
            RequestInfo::default(),
            answered,
        );
        self.events.extend(trail);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::scenario::rehearse;

    fn describe(alerts: &[&Alert]) -> Vec<String> {
        alerts
            .iter()
            .map(|a| {
                format!(
                    "{} {} {} at {}: {}",
                    a.detector,
                    a.subject,
                    a.severity.as_str(),
                    a.ts,
                    a.summary
                )
            })
            .collect()
    }

    #[test]
    fn the_benign_corpus_raises_no_warning_or_critical() {
        let events = benign(11);
        assert!(events.len() > 500_000, "{}", events.len());
        let mut engine = detect_config().engine().expect("engine");
        let alerts = rehearse(&mut engine, &events);
        let raised = raised(&alerts);
        assert!(raised.is_empty(), "{:#?}", describe(&raised));
        // The daily cold start is told apart (info), not raised.
        assert!(
            alerts
                .iter()
                .any(|a| a.detector == "cold_start_503" && a.severity == Severity::Info),
            "the cold starts are seen"
        );
    }

    #[test]
    fn each_incident_is_found_in_time_once_and_nothing_else_is_raised() {
        let (events, incidents) = with_incidents(11);
        let mut engine = detect_config().engine().expect("engine");
        let alerts = rehearse(&mut engine, &events);
        let raised = raised(&alerts);
        let unexplained: Vec<&Alert> = raised
            .iter()
            .copied()
            .filter(|alert| !incidents.iter().any(|incident| incident.explains(alert)))
            .collect();
        assert!(unexplained.is_empty(), "{:#?}", describe(&unexplained));
        for incident in &incidents {
            for (detector, subject) in &incident.required {
                let found = raised.iter().any(|alert| {
                    alert.detector == *detector
                        && alert.subject.to_string() == *subject
                        && alert.ts >= incident.from
                        && alert.ts <= incident.from + incident.within
                });
                assert!(
                    found,
                    "{}: no {detector} {subject} in time; raised: {:#?}",
                    incident.name,
                    describe(&raised)
                );
            }
        }
        // At most one fire/resolve cycle per incident and alert.
        let mut cycles: BTreeMap<(&str, &str), usize> = BTreeMap::new();
        for alert in &raised {
            for incident in incidents.iter().filter(|i| i.explains(alert)) {
                *cycles
                    .entry((incident.name, alert.dedup_key.as_str()))
                    .or_default() += 1;
            }
        }
        let repeated: Vec<_> = cycles.iter().filter(|(_, n)| **n > 1).collect();
        assert!(repeated.is_empty(), "fired more than once: {repeated:?}");
    }
}
