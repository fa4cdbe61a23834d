//! Member `rate_limit`: requests and tokens per second, minute, hour and day, by client,
//! token, IP, target, environment or globally (`[[proxy.rate_limits]]`).
//!
//! # Algorithm
//!
//! Each window of each subject is a GCRA cell (the generic cell rate algorithm, as in
//! `governor` and redis-cell): one "theoretical arrival time" per cell. A limit of `N` per
//! period `P` emits a unit every `T = P / N`; a cost of `n` moves the arrival time on by
//! `n·T`, and is allowed while that stays within `P` of now — so a subject may spend all `N`
//! at once, then regains one unit every `T`. A cell whose arrival time has passed holds no
//! state worth keeping: it is dropped, and a subject not heard from for a period costs
//! nothing.
//!
//! # Tokens: reserve, then settle
//!
//! A token limit is charged at admission with an estimate — the prompt's estimate plus the
//! call's `max_tokens` (or the limit's `default_max_tokens`) — so concurrent calls cannot
//! overshoot it (each takes its share before it runs); when the call ends (answered,
//! streamed, failed or aborted) the charge is corrected to the real usage the response
//! event records ([`TokenHold::settle`]). A call whose usage is unknown keeps its estimate.
//!
//! # What is limited where
//!
//! Limits are per replica: with `N` replicas behind a balancer, each allows the configured
//! rate, so a fleet-wide limit `L` is configured as `L / N` on each. Emergency limits set
//! through `warden.control` reach every replica.
//!
//! The state is bounded: at most `max_subjects` subjects per limit (IPs and token ids come
//! from outside); past that, the cells nearest to empty are forgotten first (which frees
//! those subjects' limits: counted, never a refusal of a newcomer).

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

/// A subject kind a limit applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitSubject {
    Client,
    Token,
    Ip,
    Target,
    Environment,
    Global,
}

impl LimitSubject {
    pub const NAMES: &'static str = "client | token | ip | target | environment | global";

    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "client" => Self::Client,
            "token" => Self::Token,
            "ip" => Self::Ip,
            "target" => Self::Target,
            "environment" => Self::Environment,
            "global" => Self::Global,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Token => "token",
            Self::Ip => "ip",
            Self::Target => "target",
            Self::Environment => "environment",
            Self::Global => "global",
        }
    }
}

/// One window of a limit: at most `limit` units per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub period: Duration,
    pub limit: u64,
}

impl Window {
    /// The time one unit takes to come back, in nanoseconds (at least 1).
    fn emission_ns(self) -> u64 {
        (duration_ns(self.period) / self.limit.max(1)).max(1)
    }
}

/// A validated `[[proxy.rate_limits]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    pub subject: LimitSubject,
    /// Only this subject (`match`); `None`: every subject of the kind, each its own cells.
    pub matches: Option<String>,
    pub requests: Vec<Window>,
    pub tokens: Vec<Window>,
    /// Reserved for a call that names no `max_tokens`.
    pub default_max_tokens: u64,
    /// Most subjects kept (see the module doc).
    pub max_subjects: usize,
}

/// Who and what a call is, as far as limits go.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct CallSubjects<'a> {
    pub client: Option<&'a str>,
    pub token: Option<&'a str>,
    pub ip: Option<&'a str>,
    pub target: Option<&'a str>,
    pub environment: Option<&'a str>,
}

impl<'a> CallSubjects<'a> {
    fn value(&self, subject: LimitSubject) -> Option<&'a str> {
        match subject {
            LimitSubject::Client => self.client,
            LimitSubject::Token => self.token,
            LimitSubject::Ip => self.ip,
            LimitSubject::Target => self.target,
            LimitSubject::Environment => self.environment,
            LimitSubject::Global => Some(""),
        }
    }
}

/// The most constraining window of one kind (requests or tokens) after a decision: what the
/// `x-ratelimit-*` headers report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Quota {
    pub limit: u64,
    pub remaining: u64,
    /// Until the window is whole again.
    pub reset: Duration,
}

impl Quota {
    /// Keeps the one with less remaining.
    fn tighter(self, other: Option<Self>) -> Self {
        match other {
            Some(other) if other.remaining < self.remaining => other,
            _ => self,
        }
    }
}

/// What limits said about a call, for its headers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quotas {
    pub(crate) requests: Option<Quota>,
    pub(crate) tokens: Option<Quota>,
}

impl Quotas {
    /// OpenAI's `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`, for the kinds a
    /// limit applied to.
    pub(crate) fn write_headers(&self, headers: &mut axum::http::HeaderMap) {
        use axum::http::{HeaderName, HeaderValue};
        const NAMES: [[&str; 3]; 2] = [
            [
                "x-ratelimit-limit-requests",
                "x-ratelimit-remaining-requests",
                "x-ratelimit-reset-requests",
            ],
            [
                "x-ratelimit-limit-tokens",
                "x-ratelimit-remaining-tokens",
                "x-ratelimit-reset-tokens",
            ],
        ];
        for (names, quota) in NAMES.iter().zip([self.requests, self.tokens]) {
            let Some(quota) = quota else {
                continue;
            };
            headers.insert(
                HeaderName::from_static(names[0]),
                HeaderValue::from(quota.limit),
            );
            headers.insert(
                HeaderName::from_static(names[1]),
                HeaderValue::from(quota.remaining),
            );
            if let Ok(reset) = HeaderValue::try_from(go_duration(quota.reset)) {
                headers.insert(HeaderName::from_static(names[2]), reset);
            }
        }
    }
}

/// A refused call.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Throttled {
    /// Which limit refused, for the decision and the message: `client:app-prod requests per minute`.
    pub reason: String,
    /// When a retry can pass; `None` when it never can (a reservation larger than the limit).
    pub retry_after: Option<Duration>,
    pub quotas: Quotas,
}

/// A call's token reservations, corrected to its real usage when it ends.
#[derive(Debug)]
pub(crate) struct TokenHold {
    limiter: Arc<Limiter>,
    prompt_estimate: u64,
    /// (limit index, subject, tokens reserved) of each reservation.
    cells: Vec<(usize, String, u64)>,
}

impl TokenHold {
    /// Settles on a call's recorded usage: its input (the prompt estimate where the upstream
    /// did not say) and output. A call whose output is unknown (it broke off before the
    /// usage was told) keeps its reservation.
    pub(crate) fn settle_usage(self, input: Option<u64>, output: Option<u64>) {
        if let Some(output) = output {
            let used = input.unwrap_or(self.prompt_estimate).saturating_add(output);
            self.settle(used);
        }
    }

    /// Corrects each reservation to `used` tokens (refunding or charging the difference).
    pub(crate) fn settle(self, used: u64) {
        let now = self.limiter.now_ns();
        for (index, subject, reserved) in &self.cells {
            if *reserved != used {
                self.limiter.limits[*index].adjust_tokens(subject, *reserved, used, now);
            }
        }
    }
}

/// Every configured limit and its cells.
#[derive(Debug)]
pub(crate) struct Limiter {
    limits: Vec<LimitCells>,
    epoch: Instant,
}

/// How many locks each limit's subjects are spread over.
const SHARDS: usize = 16;

#[derive(Debug)]
struct LimitCells {
    limit: RateLimit,
    shards: Vec<Mutex<HashMap<String, Cells>>>,
    hasher: RandomState,
}

/// Most windows of one kind a limit has: one per period (second, minute, hour, day).
const MAX_WINDOWS: usize = 4;

/// One subject's arrival times: one per request window, one per token window (in the
/// order of the limit's windows; the rest unused). Copied, never allocated, per call.
#[derive(Debug, Clone, Copy, Default)]
struct Cells {
    requests: [u64; MAX_WINDOWS],
    tokens: [u64; MAX_WINDOWS],
}

impl Cells {
    /// Whether nothing is owed in any window (the subject is as if never seen).
    fn is_empty(&self, now: u64) -> bool {
        self.requests
            .iter()
            .chain(&self.tokens)
            .all(|tat| *tat <= now)
    }

    /// The latest arrival time: when the subject is whole again.
    fn latest(&self) -> u64 {
        self.requests
            .iter()
            .chain(&self.tokens)
            .copied()
            .max()
            .unwrap_or(0)
    }
}

/// The GCRA test for `cost` units in `window` with arrival time `tat` at `now`: the new
/// arrival time if allowed, else how long until it would be (`None`: never).
fn gcra(window: Window, tat: u64, cost: u64, now: u64) -> Result<u64, Option<u64>> {
    let emission = window.emission_ns();
    let period = duration_ns(window.period);
    let increment = emission.saturating_mul(cost);
    if increment > period {
        return Err(None);
    }
    let new_tat = tat.max(now).saturating_add(increment);
    let ahead = new_tat - now;
    if ahead <= period {
        Ok(new_tat)
    } else {
        Err(Some(ahead - period))
    }
}

/// What remains of `window` with arrival time `tat` at `now`.
fn quota(window: Window, tat: u64, now: u64) -> Quota {
    let emission = window.emission_ns();
    let ahead = tat.saturating_sub(now);
    let used = ahead.div_ceil(emission);
    Quota {
        limit: window.limit,
        remaining: window.limit.saturating_sub(used),
        reset: Duration::from_nanos(ahead),
    }
}

fn duration_ns(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

impl LimitCells {
    fn shard(&self, subject: &str) -> &Mutex<HashMap<String, Cells>> {
        &self.shards[(self.hasher.hash_one(subject) as usize) % SHARDS]
    }

    /// Charges one request and `tokens` to `subject` if every window allows it.
    fn charge(&self, subject: &str, tokens: u64, now: u64) -> Result<Quotas, Throttled> {
        let limit = &self.limit;
        let mut cells_by_subject = self
            .shard(subject)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let current = cells_by_subject.get(subject).copied().unwrap_or_default();
        let mut next = current;
        let mut quotas = Quotas::default();
        // The first refusing window (what it limits), and when every refusing window would
        // allow its cost (`None`: one never will).
        let mut refusal: Option<(&'static str, Duration, Option<u64>)> = None;
        let kinds = [
            (
                &limit.requests,
                &current.requests,
                &mut next.requests,
                1,
                "requests",
            ),
            (
                &limit.tokens,
                &current.tokens,
                &mut next.tokens,
                tokens,
                "tokens",
            ),
        ];
        for (windows, tats, next_tats, cost, kind) in kinds {
            let mut tightest: Option<Quota> = None;
            for (index, window) in windows.iter().enumerate() {
                let tat = match gcra(*window, tats[index], cost, now) {
                    Ok(tat) => {
                        next_tats[index] = tat;
                        tat
                    }
                    Err(wait) => {
                        refusal = Some(match refusal {
                            None => (kind, window.period, wait),
                            Some((first, period, earlier)) => {
                                (first, period, earlier.zip(wait).map(|(a, b)| a.max(b)))
                            }
                        });
                        tats[index]
                    }
                };
                tightest = Some(quota(*window, tat, now).tighter(tightest));
            }
            match kind {
                "requests" => quotas.requests = tightest,
                _ => quotas.tokens = tightest,
            }
        }
        if let Some((kind, period, wait)) = refusal {
            let whom = match (&limit.subject, subject) {
                (LimitSubject::Global, _) => "global".to_owned(),
                (subject_kind, value) => format!("{}:{value}", subject_kind.as_str()),
            };
            return Err(Throttled {
                reason: format!("{whom} {kind} per {}", period_name(period)),
                retry_after: wait.map(Duration::from_nanos),
                quotas,
            });
        }
        match cells_by_subject.get_mut(subject) {
            Some(cells) => *cells = next,
            None => {
                if cells_by_subject.len() >= self.room() {
                    make_room(&mut cells_by_subject, now, self.room());
                }
                cells_by_subject.insert(subject.to_owned(), next);
            }
        }
        Ok(quotas)
    }

    /// Most subjects one shard keeps.
    fn room(&self) -> usize {
        self.limit.max_subjects.div_ceil(SHARDS).max(1)
    }

    /// Corrects a token reservation of `reserved` to `used`.
    fn adjust_tokens(&self, subject: &str, reserved: u64, used: u64, now: u64) {
        let mut cells_by_subject = self
            .shard(subject)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let Some(cells) = cells_by_subject.get_mut(subject) else {
            // Forgotten meanwhile: nothing is owed any more.
            return;
        };
        for (window, tat) in self.limit.tokens.iter().zip(&mut cells.tokens) {
            let emission = window.emission_ns();
            if used > reserved {
                let owed = emission.saturating_mul(used - reserved);
                *tat = (*tat).max(now).saturating_add(owed);
            } else {
                let refund = emission.saturating_mul(reserved - used);
                *tat = tat.saturating_sub(refund).max(now.min(*tat));
            }
        }
    }
}

/// Frees room in a full shard: drops every subject that owes nothing, and if that is not
/// enough, the eighth of them nearest to whole.
fn make_room(cells_by_subject: &mut HashMap<String, Cells>, now: u64, room: usize) {
    cells_by_subject.retain(|_, cells| !cells.is_empty(now));
    if cells_by_subject.len() < room {
        return;
    }
    let mut latest: Vec<u64> = cells_by_subject.values().map(Cells::latest).collect();
    let cut = latest.len() / 8;
    let (_, threshold, _) = latest.select_nth_unstable(cut);
    let threshold = *threshold;
    cells_by_subject.retain(|_, cells| cells.latest() > threshold);
    tracing::warn!(
        kept = cells_by_subject.len(),
        "rate limit state is full: the subjects nearest to their limits' reset were forgotten"
    );
}

fn period_name(period: Duration) -> &'static str {
    match period.as_secs() {
        1 => "second",
        60 => "minute",
        3_600 => "hour",
        86_400 => "day",
        _ => "period",
    }
}

/// What a call was granted: its headers' quotas, and its token reservation to settle.
#[derive(Debug, Default)]
pub(crate) struct Grant {
    pub quotas: Quotas,
    pub tokens: Option<TokenHold>,
}

impl Limiter {
    pub(crate) fn new(limits: Vec<RateLimit>) -> Arc<Self> {
        Arc::new(Self {
            limits: limits
                .into_iter()
                .map(|limit| LimitCells {
                    limit,
                    shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
                    hasher: RandomState::new(),
                })
                .collect(),
            epoch: Instant::now(),
        })
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.limits.is_empty()
    }

    fn now_ns(&self) -> u64 {
        duration_ns(self.epoch.elapsed())
    }

    /// Charges the call to every limit that applies to it: one request, and `tokens` (its
    /// estimate) where the limit counts tokens. All or nothing: a refusal undoes the
    /// charges already made.
    pub(crate) fn admit(
        self: &Arc<Self>,
        subjects: &CallSubjects<'_>,
        estimate: &TokenEstimate,
    ) -> Result<Grant, Throttled> {
        let now = self.now_ns();
        let mut grant = Grant::default();
        let mut charged: Vec<(usize, &str, u64)> = Vec::new();
        for (index, cells) in self.limits.iter().enumerate() {
            let limit = &cells.limit;
            let Some(value) = subjects.value(limit.subject) else {
                continue;
            };
            if limit.matches.as_deref().is_some_and(|only| only != value) {
                continue;
            }
            let tokens = if limit.tokens.is_empty() {
                0
            } else {
                estimate.total(limit.default_max_tokens)
            };
            match cells.charge(value, tokens, now) {
                Ok(quotas) => {
                    if let Some(requests) = quotas.requests {
                        grant.quotas.requests = Some(requests.tighter(grant.quotas.requests));
                    }
                    if let Some(tokens) = quotas.tokens {
                        grant.quotas.tokens = Some(tokens.tighter(grant.quotas.tokens));
                    }
                    charged.push((index, value, tokens));
                }
                Err(throttled) => {
                    for (index, subject, tokens) in charged {
                        self.limits[index].refund(subject, tokens, now);
                    }
                    return Err(throttled);
                }
            }
        }
        let token_cells: Vec<(usize, String, u64)> = charged
            .into_iter()
            .filter(|(index, _, _)| !self.limits[*index].limit.tokens.is_empty())
            .map(|(index, subject, tokens)| (index, subject.to_owned(), tokens))
            .collect();
        if !token_cells.is_empty() {
            grant.tokens = Some(TokenHold {
                limiter: Arc::clone(self),
                prompt_estimate: estimate.prompt,
                cells: token_cells,
            });
        }
        Ok(grant)
    }
}

impl LimitCells {
    /// Undoes one request and `tokens` charged at `now` (a later limit refused the call).
    fn refund(&self, subject: &str, tokens: u64, now: u64) {
        let mut cells_by_subject = self
            .shard(subject)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let Some(cells) = cells_by_subject.get_mut(subject) else {
            return;
        };
        let kinds = [
            (&self.limit.requests, &mut cells.requests, 1),
            (&self.limit.tokens, &mut cells.tokens, tokens),
        ];
        for (windows, tats, cost) in kinds {
            for (window, tat) in windows.iter().zip(tats.iter_mut()) {
                let refund = window.emission_ns().saturating_mul(cost);
                *tat = tat.saturating_sub(refund).max(now.min(*tat));
            }
        }
    }
}

/// A call's token estimate for reservations: its prompt, and the most it may generate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TokenEstimate {
    pub prompt: u64,
    /// `max_tokens` / `max_completion_tokens` / `max_new_tokens`, when the call names one.
    pub max_output: Option<u64>,
    /// Calls that generate nothing (embeddings).
    pub generates: bool,
}

/// The output reserved (and priced by budgets) for a call that names no `max_tokens`,
/// unless a limit says otherwise.
pub const DEFAULT_MAX_TOKENS: u64 = 1_024;

/// Most tokens a single estimate may stand for (a hostile `max_tokens` cannot overflow).
const MAX_ESTIMATE: u64 = 1 << 40;

impl TokenEstimate {
    /// The estimate of an OpenAI request body (chat, completions, embeddings) or a TGI one
    /// (`inputs`, `parameters.max_new_tokens`): about four bytes a token for the text, plus a
    /// few tokens a message for the chat format.
    pub(crate) fn of_request(request: &Map<String, Value>, generates: bool) -> Self {
        let mut chars: u64 = 0;
        let mut pieces: u64 = 0;
        // Bytes, not characters: constant time per piece whatever the prompt's size, and an
        // over-estimate for text outside ASCII (a reservation errs on the safe side).
        let mut count = |text: &str| {
            chars = chars.saturating_add(text.len() as u64);
            pieces += 1;
        };
        for field in ["prompt", "input", "inputs"] {
            visit_texts(request.get(field), &mut count);
        }
        if let Some(Value::Array(messages)) = request.get("messages") {
            for message in messages {
                visit_texts(message.get("content"), &mut count);
            }
        }
        let max_output = ["max_completion_tokens", "max_tokens"]
            .iter()
            .find_map(|field| request.get(*field).and_then(Value::as_u64))
            .or_else(|| {
                request
                    .get("parameters")
                    .and_then(|parameters| parameters.get("max_new_tokens"))
                    .and_then(Value::as_u64)
            });
        Self {
            prompt: chars.div_ceil(4).saturating_add(pieces.saturating_mul(4)),
            max_output,
            generates,
        }
    }

    /// The output a call may generate, with the default reservation for one that names no
    /// maximum.
    pub(crate) fn output(&self) -> u64 {
        if self.generates {
            self.max_output
                .unwrap_or(DEFAULT_MAX_TOKENS)
                .min(MAX_ESTIMATE)
        } else {
            0
        }
    }

    /// The tokens to reserve, with `default_max_tokens` for a call that names no maximum.
    fn total(&self, default_max_tokens: u64) -> u64 {
        let output = if self.generates {
            self.max_output.unwrap_or(default_max_tokens)
        } else {
            0
        };
        self.prompt.saturating_add(output).min(MAX_ESTIMATE)
    }
}

/// Calls `visit` with every string in `value` (a string, a list of strings, or content
/// parts with `text`).
fn visit_texts(value: Option<&Value>, visit: &mut impl FnMut(&str)) {
    match value {
        Some(Value::String(text)) => visit(text),
        Some(Value::Array(items)) => {
            for item in items {
                match item {
                    Value::String(text) => visit(text),
                    Value::Object(part) => {
                        if let Some(Value::String(text)) = part.get("text") {
                            visit(text);
                        }
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
}

/// A duration as OpenAI's reset headers write it (Go's style): `1s`, `6m0s`, `1h2m3s`,
/// `250ms`.
pub(crate) fn go_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis < 1_000 {
        return format!("{millis}ms");
    }
    let seconds = duration.as_secs_f64();
    let (hours, rest) = ((seconds / 3_600.0).floor(), seconds % 3_600.0);
    let (minutes, seconds) = ((rest / 60.0).floor(), rest % 60.0);
    let seconds = format!("{seconds:.3}");
    let seconds = seconds.trim_end_matches('0').trim_end_matches('.');
    match (hours as u64, minutes as u64) {
        (0, 0) => format!("{seconds}s"),
        (0, minutes) => format!("{minutes}m{seconds}s"),
        (hours, minutes) => format!("{hours}h{minutes}m{seconds}s"),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn per_minute(requests: u64, tokens: Option<u64>) -> RateLimit {
        RateLimit {
            subject: LimitSubject::Client,
            matches: None,
            requests: vec![Window {
                period: Duration::from_secs(60),
                limit: requests,
            }],
            tokens: tokens
                .map(|limit| {
                    vec![Window {
                        period: Duration::from_secs(60),
                        limit,
                    }]
                })
                .unwrap_or_default(),
            default_max_tokens: 100,
            max_subjects: 1_000,
        }
    }

    fn app() -> CallSubjects<'static> {
        CallSubjects {
            client: Some("app"),
            ..CallSubjects::default()
        }
    }

    #[test]
    fn a_burst_up_to_the_limit_passes_then_the_next_waits_about_one_emission() {
        let limiter = Limiter::new(vec![per_minute(3, None)]);
        for remaining in [2, 1, 0] {
            let grant = limiter
                .admit(&app(), &TokenEstimate::default())
                .expect("within the limit");
            let quota = grant.quotas.requests.expect("limited");
            assert_eq!((quota.limit, quota.remaining), (3, remaining));
        }
        let throttled = limiter
            .admit(&app(), &TokenEstimate::default())
            .expect_err("over the limit");
        assert_eq!(throttled.reason, "client:app requests per minute");
        let wait = throttled.retry_after.expect("can retry");
        assert!(
            wait > Duration::from_secs(19) && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        // Another client has its own cells.
        let other = CallSubjects {
            client: Some("other"),
            ..CallSubjects::default()
        };
        assert!(limiter.admit(&other, &TokenEstimate::default()).is_ok());
    }

    #[test]
    fn a_match_limits_only_its_subject_and_a_missing_subject_is_not_limited() {
        let mut limit = per_minute(1, None);
        limit.matches = Some("batch".to_owned());
        let limiter = Limiter::new(vec![limit]);
        for _ in 0..5 {
            assert!(limiter.admit(&app(), &TokenEstimate::default()).is_ok());
            assert!(
                limiter
                    .admit(&CallSubjects::default(), &TokenEstimate::default())
                    .is_ok()
            );
        }
        let batch = CallSubjects {
            client: Some("batch"),
            ..CallSubjects::default()
        };
        assert!(limiter.admit(&batch, &TokenEstimate::default()).is_ok());
        assert!(limiter.admit(&batch, &TokenEstimate::default()).is_err());
    }

    #[test]
    fn tokens_are_reserved_then_settled_to_the_real_usage() {
        let limiter = Limiter::new(vec![per_minute(1_000, Some(1_000))]);
        let estimate = TokenEstimate {
            prompt: 100,
            max_output: Some(300),
            generates: true,
        };
        let grant = limiter.admit(&app(), &estimate).expect("admitted");
        assert_eq!(grant.quotas.tokens.expect("tokens").remaining, 600);
        grant.tokens.expect("hold").settle(150);
        let next = limiter.admit(&app(), &estimate).expect("admitted");
        // 150 used, 400 reserved by the second call.
        assert_eq!(next.quotas.tokens.expect("tokens").remaining, 450);
        // A call that used more than it reserved owes the difference.
        next.tokens.expect("hold").settle(900);
        let throttled = limiter.admit(&app(), &estimate).expect_err("over");
        assert_eq!(throttled.reason, "client:app tokens per minute");
    }

    #[test]
    fn a_refusal_by_a_later_limit_undoes_the_earlier_charges() {
        let mut global = per_minute(1, None);
        global.subject = LimitSubject::Global;
        let limiter = Limiter::new(vec![per_minute(2, None), global]);
        assert!(limiter.admit(&app(), &TokenEstimate::default()).is_ok());
        let refused = limiter
            .admit(&app(), &TokenEstimate::default())
            .expect_err("global limit");
        assert_eq!(refused.reason, "global requests per minute");
        // The client's own second request was given back: it still has one.
        let cells = &limiter.limits[0];
        let shard = cells.shard("app").lock().expect("lock");
        let quota = quota(
            cells.limit.requests[0],
            shard["app"].requests[0],
            limiter.now_ns(),
        );
        assert_eq!(quota.remaining, 1);
    }

    #[test]
    fn a_reservation_larger_than_the_limit_can_never_pass() {
        let limiter = Limiter::new(vec![per_minute(10, Some(500))]);
        let estimate = TokenEstimate {
            prompt: 10,
            max_output: Some(1_000),
            generates: true,
        };
        let throttled = limiter.admit(&app(), &estimate).expect_err("too large");
        assert_eq!(throttled.retry_after, None);
    }

    #[test]
    fn subjects_beyond_the_cap_forget_the_nearest_to_whole_first() {
        let mut limit = per_minute(10, None);
        limit.subject = LimitSubject::Ip;
        limit.max_subjects = SHARDS * 8;
        let limiter = Limiter::new(vec![limit]);
        for n in 0..10_000 {
            let ip = format!("203.0.113.{n}");
            let subjects = CallSubjects {
                ip: Some(&ip),
                ..CallSubjects::default()
            };
            assert!(limiter.admit(&subjects, &TokenEstimate::default()).is_ok());
        }
        let kept: usize = limiter.limits[0]
            .shards
            .iter()
            .map(|shard| shard.lock().expect("lock").len())
            .sum();
        assert!(kept <= SHARDS * 8, "{kept}");
    }

    #[test]
    fn estimates_count_every_text_and_the_output_maximum() {
        let chat = json!({"messages": [
            {"role": "system", "content": "12345678"},
            {"role": "user", "content": [{"type": "text", "text": "abcd"}]}
        ], "max_tokens": 50});
        let estimate = TokenEstimate::of_request(chat.as_object().expect("object"), true);
        assert_eq!(estimate.prompt, 3 + 8);
        assert_eq!(estimate.total(100), 61);
        let tgi = json!({"inputs": "abcdefgh", "parameters": {"max_new_tokens": 20}});
        let estimate = TokenEstimate::of_request(tgi.as_object().expect("object"), true);
        assert_eq!(estimate.total(100), 2 + 4 + 20);
        let embed = json!({"input": ["abcd", "efgh"], "max_tokens": u64::MAX});
        let estimate = TokenEstimate::of_request(embed.as_object().expect("object"), false);
        assert_eq!(estimate.total(100), 2 + 8);
        let hostile = json!({"prompt": "x", "max_tokens": u64::MAX});
        let estimate = TokenEstimate::of_request(hostile.as_object().expect("object"), true);
        assert_eq!(estimate.total(100), MAX_ESTIMATE);
    }

    #[test]
    fn reset_durations_are_written_as_openai_does() {
        assert_eq!(go_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(go_duration(Duration::from_secs(1)), "1s");
        assert_eq!(go_duration(Duration::from_millis(1_500)), "1.5s");
        assert_eq!(go_duration(Duration::from_secs(360)), "6m0s");
        assert_eq!(go_duration(Duration::from_secs(3_723)), "1h2m3s");
    }
}
