//! `[proxy]` configuration: parsed as written ([`ProxyConfig`]), then validated into the
//! runtime form ([`ProxySettings`]) with every secret resolved and no "filled in later" field.
//!
//! Validation does no IO but opening the GeoIP database, if one is named; it reads the
//! environment only through the [`Environment`] seam, so tests never touch the process
//! environment. It collects every problem, each prefixed with
//! the exact key path (`proxy.targets[2].token: ...`), before failing.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use url::Url;
use warden_ingest::geo::GeoIp;

use crate::client_address::{ClientLocator, parse_trusted_proxies};
use crate::fingerprint::Fingerprinter;
use crate::policy::budgets::{Budget, BudgetAction, BudgetPeriod, BudgetSubject};
use crate::policy::limits::{LimitSubject, RateLimit, Window};
use crate::targets::template::{
    BUILTIN_TEMPLATES, ChatTemplate, DEFAULT_CHAT_ROLES, DEFAULT_TEMPLATE_FUEL,
    SpecialTokensInContent, TemplateGuards,
};

/// Raw `[proxy]` section as written in TOML.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Where `/metrics` (and the operator's routes) are served: loopback by default, never
    /// on `listen`.
    #[serde(default = "default_admin_listen")]
    pub admin_listen: String,
    /// Serve open mode (no `[[proxy.clients]]`) on a non-loopback `listen`. Without it, open
    /// mode is refused there: anyone who can reach the port would spend the operator's token.
    #[serde(default)]
    pub allow_open: bool,
    /// The secret that keys token ids and prompt hashes in events, as a reference
    /// (`env:WARDEN_FINGERPRINT_KEY`, at least 16 bytes). Every replica of a deployment needs
    /// the same one. Unset, `warden` keeps a generated one in `fingerprint_key_file`.
    #[serde(default)]
    pub fingerprint_key: Option<String>,
    /// Where the generated fingerprint secret is kept when `fingerprint_key` is unset.
    #[serde(default = "default_fingerprint_key_file")]
    pub fingerprint_key_file: PathBuf,
    /// Where the proxy keeps what `warden.control` put in force (revocations, emergency
    /// limits, disabled targets), so a restart while Kafka is down still applies it.
    #[serde(default = "default_control_state_file")]
    pub control_state_file: PathBuf,
    /// Names this replica in events; defaults to the host name.
    #[serde(default)]
    pub proxy_id: Option<String>,
    /// Deployment environment stamped on events (`prod`, `staging`, ...).
    #[serde(default)]
    pub environment: Option<String>,
    /// Largest request body accepted, in bytes (413 above).
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    #[serde(default)]
    pub targets: Vec<TargetConfig>,
    #[serde(default)]
    pub clients: Vec<ClientConfig>,
    /// The policy chain: its members, in order.
    #[serde(default)]
    pub policies: PoliciesConfig,
    /// Requests and tokens per second, minute, hour, day, by subject (member `rate_limit`).
    #[serde(default)]
    pub rate_limits: Vec<RateLimitConfig>,
    /// Routing rules (member `router`).
    #[serde(default)]
    pub router: RouterConfig,
    /// Spend caps in USD per client, team or department (member `budget`).
    #[serde(default)]
    pub budgets: Vec<BudgetConfig>,
    /// HF-native pass-through (off unless configured).
    #[serde(default)]
    pub passthrough: Option<PassthroughConfig>,
    /// Reverse proxies (CIDR networks or addresses) whose `X-Forwarded-For` is believed.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// A MaxMind GeoIP2/GeoLite2 database: callers' countries are recorded on their events.
    #[serde(default)]
    pub geoip_database: Option<PathBuf>,
    /// Longest wait for a new connection's first request headers, in seconds.
    #[serde(default = "default_header_read_timeout_s")]
    pub header_read_timeout_s: f64,
    /// Longest a kept-alive connection may sit idle, up to the next request's complete
    /// headers, in seconds.
    #[serde(default = "default_keep_alive_timeout_s")]
    pub keep_alive_timeout_s: f64,
    /// Longest wait for a whole request body, in seconds (408 above).
    #[serde(default = "default_body_read_timeout_s")]
    pub body_read_timeout_s: f64,
    /// Most client connections open at once; one more is answered 503 and closed.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Most calls in flight at once (streams count until they end); one more gets a 503.
    #[serde(default = "default_max_in_flight_calls")]
    pub max_in_flight_calls: usize,
    /// How long a stopping proxy lets calls in flight finish before closing them, in seconds.
    #[serde(default = "default_shutdown_timeout_s")]
    pub shutdown_timeout_s: f64,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            admin_listen: default_admin_listen(),
            allow_open: false,
            fingerprint_key: None,
            fingerprint_key_file: default_fingerprint_key_file(),
            control_state_file: default_control_state_file(),
            proxy_id: None,
            environment: None,
            max_body_bytes: default_max_body_bytes(),
            targets: Vec::new(),
            clients: Vec::new(),
            policies: PoliciesConfig::default(),
            rate_limits: Vec::new(),
            router: RouterConfig::default(),
            budgets: Vec::new(),
            passthrough: None,
            trusted_proxies: Vec::new(),
            geoip_database: None,
            header_read_timeout_s: default_header_read_timeout_s(),
            keep_alive_timeout_s: default_keep_alive_timeout_s(),
            body_read_timeout_s: default_body_read_timeout_s(),
            max_connections: default_max_connections(),
            max_in_flight_calls: default_max_in_flight_calls(),
            shutdown_timeout_s: default_shutdown_timeout_s(),
        }
    }
}

fn default_header_read_timeout_s() -> f64 {
    10.0
}

fn default_keep_alive_timeout_s() -> f64 {
    60.0
}

fn default_body_read_timeout_s() -> f64 {
    30.0
}

/// Well above what 2 cores serve (the proxy holds 10,000 slow streams at once), well below
/// what would exhaust memory.
fn default_max_connections() -> usize {
    16_384
}

fn default_max_in_flight_calls() -> usize {
    12_288
}

fn default_shutdown_timeout_s() -> f64 {
    30.0
}

/// `[proxy.passthrough]`: requests in Hugging Face's own formats (`/generate`,
/// `/generate_stream`, `POST /` with `{inputs, parameters}`, feature-extraction, ...) sent to
/// `{prefix}/{target id}/{path}` are forwarded unchanged to the target and audited like every
/// other call.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PassthroughConfig {
    /// Path prefix, e.g. `/hf`.
    pub prefix: String,
    /// Forward the caller's own `Authorization` header (its HF token) instead of the target's
    /// token: the transparent-proxy deployment. Warden's client key then travels in
    /// `X-Warden-Key`.
    #[serde(default)]
    pub forward_client_authorization: bool,
}

fn default_listen() -> String {
    "127.0.0.1:8080".to_owned()
}

fn default_control_state_file() -> PathBuf {
    PathBuf::from("./warden-data/control-state.json")
}

fn default_fingerprint_key_file() -> PathBuf {
    PathBuf::from("./warden-data/fingerprint.key")
}

fn default_admin_listen() -> String {
    "127.0.0.1:9090".to_owned()
}

fn default_max_body_bytes() -> usize {
    4 * 1024 * 1024
}

fn default_timeout_s() -> f64 {
    120.0
}

/// The kind of Hugging Face API a target speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TargetKind {
    /// TGI's native `/generate` and `/generate_stream`.
    Tgi,
    /// TGI's OpenAI-compatible Messages API (`/v1/chat/completions`).
    TgiMessages,
    /// The HF router / serverless Inference API.
    HfServerless,
}

impl TargetKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tgi => "tgi",
            Self::TgiMessages => "tgi-messages",
            Self::HfServerless => "hf-serverless",
        }
    }
}

/// One `[[proxy.targets]]` entry as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    pub id: String,
    pub kind: TargetKind,
    pub base_url: String,
    /// The model name clients put in `"model"` (the target's `id` works too).
    #[serde(default)]
    pub model: Option<String>,
    /// Upstream token, as a secret reference: `env:NAME`.
    #[serde(default)]
    pub token: Option<String>,
    /// Whole-request upstream timeout (streams included), in seconds.
    #[serde(default = "default_timeout_s")]
    pub timeout_s: f64,
    /// Longest wait for a TCP + TLS connection to the upstream, in seconds.
    #[serde(default = "default_connect_timeout_s")]
    pub connect_timeout_s: f64,
    /// Longest wait for a streamed answer's first token (its headers, then its first
    /// event), in seconds. A non-streamed answer arrives whole, so `timeout_s` bounds it.
    #[serde(default = "default_first_token_timeout_s")]
    pub first_token_timeout_s: f64,
    /// A LoRA adapter served by the TGI target: sent as `model` to the Messages API and as
    /// `parameters.adapter_id` to `/generate`.
    #[serde(default)]
    pub adapter_id: Option<String>,
    /// `tgi` targets: a built-in chat template by model family (see `BUILTIN_TEMPLATES`).
    #[serde(default)]
    pub chat_template: Option<String>,
    /// `tgi` targets: a Jinja chat template, e.g. the model's `tokenizer_config.json` one.
    #[serde(default)]
    pub chat_template_jinja: Option<String>,
    /// `bos_token` / `eos_token` for `chat_template_jinja`.
    #[serde(default)]
    pub bos_token: Option<String>,
    #[serde(default)]
    pub eos_token: Option<String>,
    /// `tgi` targets: the message roles the template renders (others get a 400). Default:
    /// system, user, assistant.
    #[serde(default)]
    pub chat_roles: Option<Vec<String>>,
    /// `tgi` targets with `chat_template_jinja`: the model's control tokens (besides its
    /// bos and eos tokens), e.g. `["<|im_start|>", "<|im_end|>"]`. Built-in templates know
    /// their own.
    #[serde(default)]
    pub chat_special_tokens: Vec<String>,
    /// `tgi` targets: what happens to those control tokens in what callers write: `strip`
    /// (default), `reject` (400) or `allow`.
    #[serde(default)]
    pub special_tokens_in_content: SpecialTokensInContent,
    /// `tgi` targets: most template instructions one render may run (a 400 above).
    #[serde(default = "default_chat_template_fuel")]
    pub chat_template_fuel: u64,
    /// The target's `MAX_STOP_SEQUENCES`: requests with more `stop` sequences get a 400.
    #[serde(default = "default_max_stop_sequences")]
    pub max_stop_sequences: usize,
    /// How long a call may wait and retry while the target answers 503 (a cold model or a
    /// scaled-to-zero endpoint starting). 0 disables the retries.
    #[serde(default = "default_cold_start_timeout_s")]
    pub cold_start_timeout_s: f64,
    /// What calls to this target cost, for `cost_usd` in response events.
    #[serde(default)]
    pub pricing: Option<Pricing>,
    /// How much of prompts and answers the audit events keep.
    #[serde(default)]
    pub capture: CapturePolicy,
    /// Longest captured content per event, in bytes (cut at a character boundary).
    #[serde(default = "default_capture_max_bytes")]
    pub capture_max_bytes: usize,
    /// Organisations a pass-through caller may bill through `X-HF-Bill-To` (`"*"`: any).
    /// Empty, the default: the header is dropped, so callers cannot bill the operator's
    /// token to an organisation of their choosing.
    #[serde(default)]
    pub allow_bill_to: Vec<String>,
    /// Largest non-streamed answer read from the upstream, in bytes (a 502 above).
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: usize,
    /// Largest event (or line) of a streamed answer, in bytes: what a stream may hold at once.
    /// Above it the stream ends with an error event.
    #[serde(default = "default_max_stream_event_bytes")]
    pub max_stream_event_bytes: usize,
    /// Targets tried in order when this one fails (connect failure, timeout, 5xx, a cold
    /// start past `cold_start_timeout_s`, its circuit open); a stream only before its first
    /// byte reached the client.
    #[serde(default)]
    pub fallback: Vec<String>,
    /// The target's circuit breaker.
    #[serde(default)]
    pub breaker: BreakerConfig,
    /// The Hugging Face Inference Endpoint behind this target (`namespace/name`): what the
    /// runaway-cost runbook scales through `[hf_api]`.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The floor a runbook never scales the endpoint below (0 allows scale-to-zero).
    #[serde(default = "default_min_replicas")]
    pub min_replicas: u32,
    /// This target's own settings for policies of the chain (applied once routing chose it).
    #[serde(default)]
    pub policies: PolicyOverrides,
}

fn default_min_replicas() -> u32 {
    1
}

/// `[proxy.targets.breaker]`: opens after `failures` failed calls within `window_s`, stays
/// open `open_s`, then lets one probe call through (half-open): its success closes it, its
/// failure opens it again. `failures = 0` turns it off.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    #[serde(default = "default_breaker_failures")]
    pub failures: u32,
    #[serde(default = "default_breaker_window_s")]
    pub window_s: f64,
    #[serde(default = "default_breaker_open_s")]
    pub open_s: f64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failures: default_breaker_failures(),
            window_s: default_breaker_window_s(),
            open_s: default_breaker_open_s(),
        }
    }
}

fn default_breaker_failures() -> u32 {
    5
}

fn default_breaker_window_s() -> f64 {
    30.0
}

fn default_breaker_open_s() -> f64 {
    30.0
}

/// Embedding batches are the largest honest answers: 2,048 vectors of 1,024 floats as JSON
/// come to about 20 MB.
fn default_max_response_bytes() -> usize {
    32 * 1024 * 1024
}

/// TGI's final event (with `details`) is the largest; top-n token details stay well below.
fn default_max_stream_event_bytes() -> usize {
    1024 * 1024
}

fn default_chat_template_fuel() -> u64 {
    DEFAULT_TEMPLATE_FUEL
}

fn default_cold_start_timeout_s() -> f64 {
    30.0
}

fn default_connect_timeout_s() -> f64 {
    10.0
}

fn default_first_token_timeout_s() -> f64 {
    60.0
}

/// TGI's default `MAX_STOP_SEQUENCES`.
fn default_max_stop_sequences() -> usize {
    4
}

fn default_capture_max_bytes() -> usize {
    16 * 1024
}

/// How much content a target's audit events keep.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CapturePolicy {
    /// No content (the default: prompts may hold personal data).
    #[default]
    None,
    /// The SHA-256 of the content: proves what was sent without keeping it.
    Hash,
    /// The content itself, up to `capture_max_bytes`.
    Full,
}

/// `[proxy.targets.pricing]`: token prices (serverless, router providers) and/or a price per
/// second of upstream time (dedicated endpoints). Any part may be left out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Pricing {
    /// USD per 1,000 input (prompt) tokens.
    pub input_per_1k_tokens: f64,
    /// USD per 1,000 output (generated) tokens.
    pub output_per_1k_tokens: f64,
    /// USD per second the upstream spent on the call.
    pub per_upstream_second: f64,
}

impl Pricing {
    /// The cost of one call.
    pub fn cost_usd(&self, input_tokens: u64, output_tokens: u64, upstream_seconds: f64) -> f64 {
        self.input_per_1k_tokens * input_tokens as f64 / 1000.0
            + self.output_per_1k_tokens * output_tokens as f64 / 1000.0
            + self.per_upstream_second * upstream_seconds
    }
}

/// One `[[proxy.clients]]` entry as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    pub name: String,
    /// Hex SHA-256 of the client's API key (`warden keys new NAME` makes a key and prints
    /// it), or a reference to one: `env:NAME`. One key; `keys` lists several.
    #[serde(default)]
    pub key_sha256: Option<String>,
    /// The client's keys, for rotation with overlap: each a `key_sha256` (as above) and an
    /// optional last day of validity, `not_after` (`2027-03-01`, or an RFC 3339 instant).
    #[serde(default)]
    pub keys: Vec<ClientKeyConfig>,
    /// The client's role, for router rules (`when_role`).
    #[serde(default)]
    pub role: Option<String>,
    /// Labels budgets group clients by.
    #[serde(default)]
    pub team: Option<String>,
    #[serde(default)]
    pub department: Option<String>,
    /// The client's environment (`dev`, `staging`, `prod`, ...), stamped on its events
    /// instead of the proxy's.
    #[serde(default)]
    pub environment: Option<String>,
    /// Target ids the client may call; empty means every target. Others get a 403.
    #[serde(default)]
    pub allowed_targets: Vec<String>,
    /// The `[[respond.receivers]]` entry that reaches the client's owner (the
    /// token-compromise runbook tells them how to rotate the key).
    #[serde(default)]
    pub owner_receiver: Option<String>,
    /// Never revoked by a runbook without `warden incident approve`.
    #[serde(default)]
    pub critical: bool,
    /// This client's own settings for policies of the chain.
    #[serde(default)]
    pub policies: PolicyOverrides,
}

/// One key of a client, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientKeyConfig {
    pub key_sha256: String,
    #[serde(default)]
    pub not_after: Option<String>,
}

/// `[proxy.policies]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoliciesConfig {
    /// The members, in order: `auth` first, then `rate_limit`, `router` and `budget` (after
    /// the router: it prices the call on its target) in any order that makes sense (a
    /// per-target limit needs the router before `rate_limit`), and the guardrails
    /// `injection`, `pii` and `content`.
    #[serde(default = "default_chain")]
    pub chain: Vec<String>,
    /// `[proxy.policies.pii]`: used when `pii` is in the chain (its defaults otherwise).
    #[serde(default)]
    pub pii: Option<PiiPolicyConfig>,
    /// `[proxy.policies.injection]`: used when `injection` is in the chain.
    #[serde(default)]
    pub injection: Option<InjectionPolicyConfig>,
    /// `[proxy.policies.content]`: used when `content` is in the chain.
    #[serde(default)]
    pub content: Option<ContentPolicyConfig>,
}

impl Default for PoliciesConfig {
    fn default() -> Self {
        Self {
            chain: default_chain(),
            pii: None,
            injection: None,
            content: None,
        }
    }
}

/// `[proxy.policies.pii]` as written.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PiiPolicyConfig {
    /// `redact` (typed placeholders), `block` (400 `pii_detected`) or `log` (the decision
    /// only).
    pub action: String,
    /// The entities looked for (every one when empty).
    pub entities: Vec<String>,
    /// Answers too, whole and streamed (redacted, or under `block` ended).
    pub responses: bool,
    /// Under `redact`, put the caller's own values back where the answer repeats their
    /// placeholders (`[EMAIL_ADDRESS_1]`): the upstream never sees them, the caller gets
    /// an answer about its own data. Off by default: the audit then holds the placeholders,
    /// the caller the values.
    pub restore: bool,
    /// `block` or `allow`: what a guardrail failure does to the call.
    pub on_error: String,
}

impl Default for PiiPolicyConfig {
    fn default() -> Self {
        Self {
            action: "redact".to_owned(),
            entities: Vec::new(),
            responses: true,
            restore: false,
            on_error: "block".to_owned(),
        }
    }
}

/// `[proxy.policies.injection]` as written.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct InjectionPolicyConfig {
    /// `block` (400 `prompt_injection`) or `log` (the decision only).
    pub action: String,
    /// The score (0–1) from which a text is an injection.
    pub threshold: f64,
    /// Tool outputs fed back in messages are read too (indirect injection).
    pub tool_outputs: bool,
    /// `block` or `allow`: what a guardrail failure does to the call.
    pub on_error: String,
}

impl Default for InjectionPolicyConfig {
    fn default() -> Self {
        Self {
            action: "block".to_owned(),
            threshold: 0.5,
            tool_outputs: true,
            on_error: "block".to_owned(),
        }
    }
}

/// `[proxy.policies.content]` as written.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContentPolicyConfig {
    /// The categories looked for (every one when empty).
    pub categories: Vec<String>,
    /// `block` (400 `content_policy_violation`; a stream ends with an error chunk) or `log`.
    pub action: String,
    /// A category's own action over `action` (`actions = { toxicity = "log" }`).
    pub actions: std::collections::BTreeMap<String, String>,
    /// Answers too, whole and streamed.
    pub responses: bool,
    /// `block` or `allow`: what a guardrail failure does to the call.
    pub on_error: String,
}

impl Default for ContentPolicyConfig {
    fn default() -> Self {
        Self {
            categories: Vec::new(),
            action: "block".to_owned(),
            actions: std::collections::BTreeMap::new(),
            responses: true,
            on_error: "block".to_owned(),
        }
    }
}

/// `[proxy.targets.policies]` / `[proxy.clients.policies]`: a target's or a client's own
/// settings for a guardrail of the chain: any keys of its `[proxy.policies.<name>]` section,
/// over those.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyOverrides {
    #[serde(default)]
    pub pii: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    pub injection: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    pub content: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A guardrail's validated settings for the chain, and targets' and clients' own (a
/// client's win; a target's apply once routing chose it).
#[derive(Debug, Clone)]
pub struct Scoped<S> {
    /// `None` when the guardrail is not in the chain.
    pub chain: Option<S>,
    pub targets: std::collections::HashMap<String, S>,
    pub clients: std::collections::HashMap<String, S>,
}

impl<S> Default for Scoped<S> {
    fn default() -> Self {
        Self {
            chain: None,
            targets: std::collections::HashMap::new(),
            clients: std::collections::HashMap::new(),
        }
    }
}

impl<S> Scoped<S> {
    /// Each setting made into what uses it.
    pub fn map<T>(&self, mut make: impl FnMut(&S) -> T) -> Scoped<T> {
        Scoped {
            chain: self.chain.as_ref().map(&mut make),
            targets: self
                .targets
                .iter()
                .map(|(id, settings)| (id.clone(), make(settings)))
                .collect(),
            clients: self
                .clients
                .iter()
                .map(|(name, settings)| (name.clone(), make(settings)))
                .collect(),
        }
    }

    /// What applies to a call from `client` served (so far) by `target`.
    pub fn for_call(&self, client: Option<&str>, target: Option<&str>) -> Option<&S> {
        client
            .and_then(|name| self.clients.get(name))
            .or_else(|| target.and_then(|id| self.targets.get(id)))
            .or(self.chain.as_ref())
    }
}

/// A guardrail's `[proxy.policies.<name>]` section.
trait GuardrailSection: Default + Clone + Serialize + serde::de::DeserializeOwned {
    type Settings;
    const NAME: &'static str;
    const MEMBER: ChainMember;
    fn validate(&self, key: &str, errors: &mut Vec<String>) -> Option<Self::Settings>;
}

/// `base` with the keys a target or client sets for itself.
fn overridden<C: GuardrailSection>(
    base: &C,
    own: &serde_json::Map<String, serde_json::Value>,
    key: &str,
    errors: &mut Vec<String>,
) -> Option<C> {
    let mut merged = match serde_json::to_value(base) {
        Ok(serde_json::Value::Object(merged)) => merged,
        _ => unreachable!("a section serializes to a table"),
    };
    merged.extend(own.iter().map(|(k, v)| (k.clone(), v.clone())));
    serde_json::from_value(serde_json::Value::Object(merged))
        .map_err(|err| errors.push(format!("{key}: {err}")))
        .ok()
}

/// Validates a guardrail's section and every target's and client's own settings of it.
fn validate_scoped<C: GuardrailSection>(
    section: Option<&C>,
    own: impl Fn(&PolicyOverrides) -> Option<&serde_json::Map<String, serde_json::Value>>,
    targets: &[TargetConfig],
    clients: &[ClientConfig],
    chain: &[ChainMember],
    errors: &mut Vec<String>,
) -> Scoped<C::Settings> {
    let Some(at) = chain.iter().position(|member| *member == C::MEMBER) else {
        return Scoped::default();
    };
    let name = C::NAME;
    let base = section.cloned().unwrap_or_default();
    let mut scoped = Scoped {
        chain: base.validate(&format!("proxy.policies.{name}"), errors),
        ..Scoped::default()
    };
    for (index, target) in targets.iter().enumerate() {
        if let Some(own) = own(&target.policies) {
            let key = format!("proxy.targets[{index}].policies.{name}");
            if let Some(settings) =
                overridden(&base, own, &key, errors).and_then(|c| c.validate(&key, errors))
            {
                scoped.targets.insert(target.id.clone(), settings);
            }
        }
    }
    for (index, client) in clients.iter().enumerate() {
        if let Some(own) = own(&client.policies) {
            let key = format!("proxy.clients[{index}].policies.{name}");
            if let Some(settings) =
                overridden(&base, own, &key, errors).and_then(|c| c.validate(&key, errors))
            {
                scoped.clients.insert(client.name.clone(), settings);
            }
        }
    }
    let router_at = chain.iter().position(|m| *m == ChainMember::Router);
    if !scoped.targets.is_empty() && Some(at) < router_at {
        errors.push(format!(
            "proxy.policies.chain: a target's policies.{name} applies once routing chose the \
             target: put \"router\" before \"{name}\""
        ));
    }
    scoped
}

/// `block` → true, `allow` → false.
fn fail_closed(on_error: &str, key: &str, errors: &mut Vec<String>) -> bool {
    match on_error {
        "block" => true,
        "allow" => false,
        other => {
            errors.push(format!("{key}.on_error: {other:?} is not block or allow"));
            true
        }
    }
}

/// What the `pii` member does with what it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PiiAction {
    Redact,
    Block,
    Log,
}

/// `[proxy.policies.pii]`, validated.
#[derive(Debug, Clone)]
pub struct PiiSettings {
    pub action: PiiAction,
    pub entities: Vec<crate::guard::pii::Entity>,
    pub responses: bool,
    pub restore: bool,
    /// `on_error = "block"`.
    pub fail_closed: bool,
}

impl GuardrailSection for PiiPolicyConfig {
    type Settings = PiiSettings;
    const NAME: &'static str = "pii";
    const MEMBER: ChainMember = ChainMember::Pii;

    fn validate(&self, key: &str, errors: &mut Vec<String>) -> Option<PiiSettings> {
        let before = errors.len();
        let action = match self.action.as_str() {
            "redact" => PiiAction::Redact,
            "block" => PiiAction::Block,
            "log" => PiiAction::Log,
            other => {
                errors.push(format!(
                    "{key}.action: {other:?} is not one of redact, block, log"
                ));
                PiiAction::Block
            }
        };
        let mut entities = Vec::new();
        for (index, name) in self.entities.iter().enumerate() {
            match crate::guard::pii::Entity::parse(name) {
                Some(entity) => entities.push(entity),
                None => errors.push(format!(
                    "{key}.entities[{index}]: unknown entity {name:?} (known: {})",
                    crate::guard::pii::Entity::ALL
                        .iter()
                        .map(|entity| entity.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            }
        }
        if entities.is_empty() {
            entities = crate::guard::pii::Entity::ALL.to_vec();
        }
        let fail_closed = fail_closed(&self.on_error, key, errors);
        if self.restore && (action != PiiAction::Redact || !self.responses) {
            errors.push(format!(
                "{key}.restore: placeholders are restored in answers, so it needs \
                 action = \"redact\" and responses = true"
            ));
        }
        (errors.len() == before).then_some(PiiSettings {
            action,
            entities,
            responses: self.responses,
            restore: self.restore,
            fail_closed,
        })
    }
}

/// What a guardrail that judges (and does not rewrite) does with what it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardAction {
    /// A 400 (a stream: an error chunk).
    Block,
    /// The decision only.
    Log,
}

fn guard_action(action: &str, key: &str, errors: &mut Vec<String>) -> GuardAction {
    match action {
        "block" => GuardAction::Block,
        "log" => GuardAction::Log,
        other => {
            errors.push(format!("{key}: {other:?} is not block or log"));
            GuardAction::Block
        }
    }
}

/// `[proxy.policies.injection]`, validated.
#[derive(Debug, Clone)]
pub struct InjectionSettings {
    pub action: GuardAction,
    pub threshold: f64,
    pub tool_outputs: bool,
    pub fail_closed: bool,
}

impl GuardrailSection for InjectionPolicyConfig {
    type Settings = InjectionSettings;
    const NAME: &'static str = "injection";
    const MEMBER: ChainMember = ChainMember::Injection;

    fn validate(&self, key: &str, errors: &mut Vec<String>) -> Option<InjectionSettings> {
        let before = errors.len();
        let action = guard_action(&self.action, &format!("{key}.action"), errors);
        if !(self.threshold > 0.0 && self.threshold <= 1.0) {
            errors.push(format!(
                "{key}.threshold: {} is not in (0, 1]",
                self.threshold
            ));
        }
        let fail_closed = fail_closed(&self.on_error, key, errors);
        (errors.len() == before).then_some(InjectionSettings {
            action,
            threshold: self.threshold,
            tool_outputs: self.tool_outputs,
            fail_closed,
        })
    }
}

/// The action of `category` among a content policy's `(category, action)` pairs (block for
/// one not listed: it is not looked for anyway).
pub fn content_action(
    actions: &[(crate::guard::content::Category, GuardAction)],
    category: crate::guard::content::Category,
) -> GuardAction {
    actions
        .iter()
        .find(|(listed, _)| *listed == category)
        .map_or(GuardAction::Block, |(_, action)| *action)
}

/// `[proxy.policies.content]`, validated.
#[derive(Debug, Clone)]
pub struct ContentSettings {
    /// The categories looked for, each with its action.
    pub categories: Vec<(crate::guard::content::Category, GuardAction)>,
    pub responses: bool,
    pub fail_closed: bool,
}

impl GuardrailSection for ContentPolicyConfig {
    type Settings = ContentSettings;
    const NAME: &'static str = "content";
    const MEMBER: ChainMember = ChainMember::Content;

    fn validate(&self, key: &str, errors: &mut Vec<String>) -> Option<ContentSettings> {
        use crate::guard::content::Category;
        let before = errors.len();
        let known = || {
            Category::ALL
                .iter()
                .map(|category| category.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let action = guard_action(&self.action, &format!("{key}.action"), errors);
        let mut categories = Vec::new();
        for (index, name) in self.categories.iter().enumerate() {
            match Category::parse(name) {
                Some(category) => categories.push(category),
                None => errors.push(format!(
                    "{key}.categories[{index}]: unknown category {name:?} (known: {})",
                    known()
                )),
            }
        }
        if categories.is_empty() {
            categories = Category::ALL.to_vec();
        }
        let mut actions: Vec<(Category, GuardAction)> = categories
            .iter()
            .map(|category| (*category, action))
            .collect();
        for (name, own) in &self.actions {
            let own = guard_action(own, &format!("{key}.actions.{name}"), errors);
            match actions
                .iter_mut()
                .find(|(category, _)| category.as_str() == name)
            {
                Some((_, action)) => *action = own,
                None => errors.push(format!(
                    "{key}.actions.{name}: not one of the categories looked for ({})",
                    categories
                        .iter()
                        .map(|category| category.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            }
        }
        let fail_closed = fail_closed(&self.on_error, key, errors);
        (errors.len() == before).then_some(ContentSettings {
            categories: actions,
            responses: self.responses,
            fail_closed,
        })
    }
}

fn default_chain() -> Vec<String> {
    ["auth", "rate_limit", "router", "budget"]
        .map(str::to_owned)
        .to_vec()
}

/// One `[[proxy.budgets]]` entry as written: exactly one of `client`, `team`,
/// `department`; at least one cap.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    #[serde(default)]
    pub client: Option<String>,
    #[serde(default)]
    pub team: Option<String>,
    #[serde(default)]
    pub department: Option<String>,
    #[serde(default)]
    pub usd_per_hour: Option<f64>,
    #[serde(default)]
    pub usd_per_day: Option<f64>,
    #[serde(default)]
    pub usd_per_month: Option<f64>,
    /// `deny` (429 `insufficient_quota`) or `alert_only`.
    #[serde(default = "default_budget_action")]
    pub action: String,
}

fn default_budget_action() -> String {
    "deny".to_owned()
}

/// `[proxy.router]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterConfig {
    /// Tried in order; the first that matches serves the call, whatever `model` it named.
    /// Without a match, `model` picks the target.
    #[serde(default)]
    pub rules: Vec<RouteRuleConfig>,
}

/// One router rule as written: every `when_*` it has must hold (or it is the `default`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteRuleConfig {
    /// The client's `role`.
    #[serde(default)]
    pub when_role: Option<String>,
    /// The call's environment (the client's, else the proxy's).
    #[serde(default)]
    pub when_environment: Option<String>,
    /// The `model` the client named (an alias).
    #[serde(default)]
    pub when_model: Option<String>,
    /// A request header and its value: `{ name = "x-tier", value = "batch" }`.
    #[serde(default)]
    pub when_header: Option<HeaderMatchConfig>,
    /// Matches every call (the last rule).
    #[serde(default)]
    pub default: bool,
    pub target: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatchConfig {
    pub name: String,
    pub value: String,
}

/// A validated router rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRule {
    pub when_role: Option<String>,
    pub when_environment: Option<String>,
    pub when_model: Option<String>,
    /// Lower-cased header name, and the value.
    pub when_header: Option<(axum::http::HeaderName, String)>,
    pub default: bool,
    pub target: String,
}

impl RouteRule {
    /// How the rule reads in a decision's reason: `when_role = "production"`.
    pub fn describe(&self) -> String {
        let mut conditions = Vec::new();
        if let Some(role) = &self.when_role {
            conditions.push(format!("when_role = {role:?}"));
        }
        if let Some(environment) = &self.when_environment {
            conditions.push(format!("when_environment = {environment:?}"));
        }
        if let Some(model) = &self.when_model {
            conditions.push(format!("when_model = {model:?}"));
        }
        if let Some((name, value)) = &self.when_header {
            conditions.push(format!("when_header {name}: {value:?}"));
        }
        if self.default {
            conditions.push("default".to_owned());
        }
        conditions.join(", ")
    }
}

/// One `[[proxy.rate_limits]]` entry as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// `client | token | ip | target | environment | global`.
    pub subject: String,
    /// Only this subject; omitted: every subject of that kind, each its own bucket.
    #[serde(default, rename = "match")]
    pub matches: Option<String>,
    #[serde(default)]
    pub requests_per_second: Option<u64>,
    #[serde(default)]
    pub requests_per_minute: Option<u64>,
    #[serde(default)]
    pub requests_per_hour: Option<u64>,
    #[serde(default)]
    pub requests_per_day: Option<u64>,
    #[serde(default)]
    pub tokens_per_second: Option<u64>,
    #[serde(default)]
    pub tokens_per_minute: Option<u64>,
    #[serde(default)]
    pub tokens_per_hour: Option<u64>,
    #[serde(default)]
    pub tokens_per_day: Option<u64>,
    /// Tokens reserved for the output of a call that names no `max_tokens`.
    #[serde(default = "default_max_tokens_reserved")]
    pub default_max_tokens: u64,
    /// Most subjects whose state is kept (IPs and token ids come from outside).
    #[serde(default = "default_max_limited_subjects")]
    pub max_subjects: usize,
}

fn default_max_tokens_reserved() -> u64 {
    crate::policy::limits::DEFAULT_MAX_TOKENS
}

fn default_max_limited_subjects() -> usize {
    100_000
}

/// A secret value: never printed, never serialized.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Where secret references are resolved from.
pub trait Environment {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnvironment;

impl Environment for ProcessEnvironment {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Environment for HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// A validated upstream target.
#[derive(Debug, Clone)]
pub struct Target {
    pub id: String,
    pub kind: TargetKind,
    /// Always ends with `/`, so joining a relative path keeps any base path.
    pub base_url: Url,
    pub model: Option<String>,
    pub token: Option<Secret>,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub first_token_timeout: Duration,
    pub cold_start_timeout: Duration,
    pub adapter_id: Option<String>,
    /// Set for `tgi` targets: renders chat messages into a prompt.
    pub chat_template: Option<Arc<ChatTemplate>>,
    pub max_stop_sequences: usize,
    pub pricing: Option<Pricing>,
    pub capture: CapturePolicy,
    pub capture_max_bytes: usize,
    pub allow_bill_to: Vec<String>,
    pub max_response_bytes: usize,
    pub max_stream_event_bytes: usize,
    /// Target ids tried in order when this one fails.
    pub fallback: Vec<String>,
    pub breaker: BreakerSettings,
    /// The Inference Endpoint behind it (`namespace/name`), for the runbooks.
    pub endpoint: Option<String>,
    /// The floor a runbook never scales the endpoint below.
    pub min_replicas: u32,
}

/// A validated [`BreakerConfig`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerSettings {
    /// 0: no breaker.
    pub failures: u32,
    pub window: Duration,
    pub open: Duration,
}

impl Target {
    /// Whether a caller may name `organisation` in `X-HF-Bill-To`.
    pub fn allows_bill_to(&self, organisation: &str) -> bool {
        self.allow_bill_to
            .iter()
            .any(|allowed| allowed == "*" || allowed == organisation)
    }

    /// Whether a client's `"model"` selects this target.
    pub fn serves(&self, requested_model: &str) -> bool {
        self.id == requested_model || self.model.as_deref() == Some(requested_model)
    }

    /// The name clients see in `/v1/models`.
    pub fn public_name(&self) -> &str {
        self.model.as_deref().unwrap_or(&self.id)
    }
}

/// A validated client: its keys and labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientKey {
    pub name: String,
    pub keys: Vec<KeyDigest>,
    pub role: Option<String>,
    pub team: Option<String>,
    pub department: Option<String>,
    pub environment: Option<String>,
    /// Empty means every target.
    pub allowed_targets: Vec<String>,
    pub owner_receiver: Option<String>,
    pub critical: bool,
}

/// One key of a client: the SHA-256 of the key, and the instant after which it is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyDigest {
    pub sha256: [u8; 32],
    pub not_after: Option<DateTime<Utc>>,
}

impl ClientKey {
    pub fn may_call(&self, target_id: &str) -> bool {
        self.allowed_targets.is_empty() || self.allowed_targets.iter().any(|id| id == target_id)
    }
}

/// The validated chain: the members after `auth`, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainMember {
    RateLimit,
    Router,
    Budget,
    /// The guardrails: prompt injection, PII, content.
    Injection,
    Pii,
    Content,
}

/// The guardrails' validated settings.
#[derive(Debug, Clone, Default)]
pub struct Guardrails {
    pub pii: Scoped<PiiSettings>,
    pub injection: Scoped<InjectionSettings>,
    pub content: Scoped<ContentSettings>,
}

/// Validated pass-through settings.
#[derive(Debug, Clone)]
pub struct Passthrough {
    /// Starts with `/`, never ends with one.
    pub prefix: String,
    pub forward_client_authorization: bool,
}

/// What bounds the server side: every duration and count a client could stretch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ServerLimits {
    pub header_read_timeout: Duration,
    pub keep_alive_timeout: Duration,
    pub body_read_timeout: Duration,
    pub max_connections: usize,
    pub max_in_flight_calls: usize,
    pub shutdown_timeout: Duration,
}

/// The proxy's runtime settings.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    /// Keys token ids and prompt hashes. From `fingerprint_key` when configured; otherwise an
    /// ephemeral one, which the binary replaces with the one in `fingerprint_key_file`.
    pub fingerprinter: Fingerprinter,
    /// Whether `fingerprinter` came from `fingerprint_key`.
    pub fingerprint_key_configured: bool,
    pub fingerprint_key_file: PathBuf,
    pub control_state_file: PathBuf,
    pub server: ServerLimits,
    pub proxy_id: String,
    pub environment: Option<String>,
    pub max_body_bytes: usize,
    pub targets: Vec<Target>,
    /// Empty means open mode: every caller is let through (a loud warning at startup).
    pub clients: Vec<ClientKey>,
    /// The chain's members after `auth` (always first), in order.
    pub chain: Vec<ChainMember>,
    /// The guardrails' settings (each one's `chain` is `None` when it is not in the chain).
    pub guardrails: Guardrails,
    pub rate_limits: Vec<RateLimit>,
    pub router_rules: Vec<RouteRule>,
    pub budgets: Vec<Budget>,
    pub passthrough: Option<Passthrough>,
    /// Resolves callers' addresses and countries.
    pub client_locator: ClientLocator,
}

impl ProxyConfig {
    /// Validates into [`ProxySettings`], or returns every problem found.
    pub fn validate(&self, env: &dyn Environment) -> Result<ProxySettings, Vec<String>> {
        let mut errors = Vec::new();
        let listen = self
            .listen
            .parse::<SocketAddr>()
            .map_err(|err| errors.push(format!("proxy.listen: {:?}: {err}", self.listen)))
            .ok();
        let admin_listen = self
            .admin_listen
            .parse::<SocketAddr>()
            .map_err(|err| {
                errors.push(format!(
                    "proxy.admin_listen: {:?}: {err}",
                    self.admin_listen
                ))
            })
            .ok();
        if let Some(listen) = listen
            && self.clients.is_empty()
            && !listen.ip().is_loopback()
            && !self.allow_open
        {
            errors.push(format!(
                "proxy.allow_open: no [[proxy.clients]] are configured (open mode) and \
                 proxy.listen {listen} is not a loopback address; add client keys \
                 (`warden keys new NAME`) or set allow_open = true"
            ));
        }
        // Port 0 (any free port) on both is fine: they get different ones.
        if let Some(listen) = listen
            && admin_listen == Some(listen)
            && listen.port() != 0
        {
            errors.push("proxy.admin_listen: must differ from proxy.listen".to_owned());
        }
        if self.max_body_bytes == 0 {
            errors.push("proxy.max_body_bytes: must be at least 1".to_owned());
        }
        for (key, seconds) in [
            ("header_read_timeout_s", self.header_read_timeout_s),
            ("keep_alive_timeout_s", self.keep_alive_timeout_s),
            ("body_read_timeout_s", self.body_read_timeout_s),
            ("shutdown_timeout_s", self.shutdown_timeout_s),
        ] {
            if !(seconds > 0.0 && seconds <= 3600.0) {
                errors.push(format!("proxy.{key}: must be in (0, 3600]"));
            }
        }
        for (key, count) in [
            ("max_connections", self.max_connections),
            ("max_in_flight_calls", self.max_in_flight_calls),
        ] {
            if !(1..=1_000_000).contains(&count) {
                errors.push(format!("proxy.{key}: must be between 1 and 1000000"));
            }
        }

        let fingerprinter = self.fingerprint_key.as_deref().and_then(|reference| {
            let secret = resolve_secret(reference, "proxy.fingerprint_key", env, &mut errors)?;
            Fingerprinter::keyed(secret.expose().as_bytes())
                .map_err(|err| errors.push(format!("proxy.fingerprint_key: {err}")))
                .ok()
        });

        let mut targets = Vec::new();
        for (index, target) in self.targets.iter().enumerate() {
            let path = format!("proxy.targets[{index}]");
            if let Some(target) = validate_target(target, &path, env, &mut errors) {
                targets.push(target);
            }
        }
        for (index, target) in self.targets.iter().enumerate() {
            let names = [Some(&target.id), target.model.as_ref()];
            for earlier in &self.targets[..index] {
                if names.into_iter().flatten().any(|name| {
                    earlier.id == *name || earlier.model.as_deref() == Some(name.as_str())
                }) {
                    errors.push(format!(
                        "proxy.targets[{index}]: id or model {:?} is already used by target {:?}",
                        target.model.as_deref().unwrap_or(&target.id),
                        earlier.id
                    ));
                }
            }
        }

        let mut clients = Vec::new();
        for (index, client) in self.clients.iter().enumerate() {
            let path = format!("proxy.clients[{index}]");
            if client.name.trim().is_empty() {
                errors.push(format!("{path}.name: must not be empty"));
            }
            for (position, target_id) in client.allowed_targets.iter().enumerate() {
                if !self.targets.iter().any(|target| target.id == *target_id) {
                    errors.push(format!(
                        "{path}.allowed_targets[{position}]: no target has id {target_id:?}"
                    ));
                }
            }
            let mut written: Vec<(String, Option<&str>, String)> = Vec::new();
            if let Some(key_sha256) = &client.key_sha256 {
                written.push((key_sha256.clone(), None, format!("{path}.key_sha256")));
            }
            for (position, key) in client.keys.iter().enumerate() {
                let key_path = format!("{path}.keys[{position}]");
                written.push((
                    key.key_sha256.clone(),
                    key.not_after.as_deref(),
                    format!("{key_path}.key_sha256"),
                ));
            }
            if written.is_empty() {
                errors.push(format!("{path}: needs key_sha256 or keys"));
                continue;
            }
            let mut keys = Vec::new();
            for (key_sha256, not_after, key_path) in written {
                // A reference keeps the hash out of a config file shipped with a deployment.
                let key_sha256 = match key_sha256.strip_prefix("env:") {
                    Some(name) => match env.var(name) {
                        Some(value) => value,
                        None => {
                            errors.push(format!("{key_path}: env var {name} is not set"));
                            continue;
                        }
                    },
                    None => key_sha256,
                };
                let Some(sha256) = parse_sha256_hex(&key_sha256) else {
                    errors.push(format!(
                        "{key_path}: must be 64 hex characters (sha256 of the key)"
                    ));
                    continue;
                };
                let not_after = match not_after.map(parse_not_after) {
                    None => None,
                    Some(Ok(instant)) => Some(instant),
                    Some(Err(problem)) => {
                        let not_after_path = key_path.replace(".key_sha256", ".not_after");
                        errors.push(format!("{not_after_path}: {problem}"));
                        continue;
                    }
                };
                keys.push(KeyDigest { sha256, not_after });
            }
            clients.push(ClientKey {
                name: client.name.clone(),
                keys,
                role: client.role.clone(),
                team: client.team.clone(),
                department: client.department.clone(),
                environment: client.environment.clone(),
                allowed_targets: client.allowed_targets.clone(),
                owner_receiver: client.owner_receiver.clone(),
                critical: client.critical,
            });
        }
        for (index, client) in self.clients.iter().enumerate() {
            if self.clients[..index]
                .iter()
                .any(|earlier| earlier.name == client.name)
            {
                errors.push(format!(
                    "proxy.clients[{index}].name: {:?} is already used by another client",
                    client.name
                ));
            }
        }

        let rate_limits = validate_rate_limits(&self.rate_limits, &mut errors);
        let router_rules = validate_router(&self.router, &self.targets, &mut errors);
        validate_fallbacks(&self.targets, &mut errors);
        let budgets = validate_budgets(&self.budgets, &self.clients, &mut errors);
        let chain = validate_chain(&self.policies.chain, &rate_limits, &budgets, &mut errors);
        let guardrails = Guardrails {
            pii: validate_scoped(
                self.policies.pii.as_ref(),
                |own| own.pii.as_ref(),
                &self.targets,
                &self.clients,
                &chain,
                &mut errors,
            ),
            injection: validate_scoped(
                self.policies.injection.as_ref(),
                |own| own.injection.as_ref(),
                &self.targets,
                &self.clients,
                &chain,
                &mut errors,
            ),
            content: validate_scoped(
                self.policies.content.as_ref(),
                |own| own.content.as_ref(),
                &self.targets,
                &self.clients,
                &chain,
                &mut errors,
            ),
        };

        let passthrough = self
            .passthrough
            .as_ref()
            .and_then(|passthrough| validate_passthrough(passthrough, &mut errors));

        let trusted_proxies = parse_trusted_proxies(&self.trusted_proxies)
            .map_err(|problems| errors.extend(problems))
            .unwrap_or_default();
        let geoip = self.geoip_database.as_ref().and_then(|path| {
            GeoIp::open(path)
                .map_err(|err| errors.push(format!("proxy.geoip_database: {err}")))
                .ok()
        });

        match (listen, admin_listen, errors.is_empty()) {
            (Some(listen), Some(admin_listen), true) => Ok(ProxySettings {
                listen,
                admin_listen,
                fingerprint_key_configured: fingerprinter.is_some(),
                fingerprinter: fingerprinter.unwrap_or_else(Fingerprinter::ephemeral),
                fingerprint_key_file: self.fingerprint_key_file.clone(),
                control_state_file: self.control_state_file.clone(),
                server: ServerLimits {
                    header_read_timeout: Duration::from_secs_f64(self.header_read_timeout_s),
                    keep_alive_timeout: Duration::from_secs_f64(self.keep_alive_timeout_s),
                    body_read_timeout: Duration::from_secs_f64(self.body_read_timeout_s),
                    max_connections: self.max_connections,
                    max_in_flight_calls: self.max_in_flight_calls,
                    shutdown_timeout: Duration::from_secs_f64(self.shutdown_timeout_s),
                },
                proxy_id: self.proxy_id.clone().unwrap_or_else(default_proxy_id),
                environment: self.environment.clone(),
                max_body_bytes: self.max_body_bytes,
                targets,
                clients,
                chain,
                guardrails,
                rate_limits,
                router_rules,
                budgets,
                passthrough,
                client_locator: ClientLocator::new(trusted_proxies, geoip.map(Arc::new)),
            }),
            _ => Err(errors),
        }
    }
}

/// A key's `not_after`: a day (`2027-03-01`, valid to its end, UTC) or an RFC 3339 instant.
pub fn parse_not_after(value: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(day) = chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d") {
        let end = day
            .succ_opt()
            .and_then(|next| next.and_hms_opt(0, 0, 0))
            .ok_or_else(|| format!("{value:?} is out of range"))?;
        return Ok(end.and_utc() - chrono::TimeDelta::nanoseconds(1));
    }
    DateTime::parse_from_rfc3339(value)
        .map(|instant| instant.with_timezone(&Utc))
        .map_err(|_| format!("{value:?} is neither a day (2027-03-01) nor an RFC 3339 instant"))
}

/// Validates `[proxy.router].rules`: known targets, a condition or `default` each, the
/// default last.
fn validate_router(
    router: &RouterConfig,
    targets: &[TargetConfig],
    errors: &mut Vec<String>,
) -> Vec<RouteRule> {
    let mut rules = Vec::new();
    let count = router.rules.len();
    for (index, rule) in router.rules.iter().enumerate() {
        let path = format!("proxy.router.rules[{index}]");
        if !targets.iter().any(|target| target.id == rule.target) {
            errors.push(format!("{path}.target: no target has id {:?}", rule.target));
        }
        let has_condition = rule.when_role.is_some()
            || rule.when_environment.is_some()
            || rule.when_model.is_some()
            || rule.when_header.is_some();
        match (has_condition, rule.default) {
            (false, false) => errors.push(format!(
                "{path}: needs a condition (when_role, when_environment, when_model, \
                 when_header) or default = true"
            )),
            (true, true) => errors.push(format!(
                "{path}: a default rule has no conditions (it matches every call)"
            )),
            _ => {}
        }
        if rule.default && index + 1 != count {
            errors.push(format!(
                "{path}.default: the default rule must be the last (later rules would never match)"
            ));
        }
        let when_header = match &rule.when_header {
            None => None,
            Some(header) => {
                match axum::http::HeaderName::try_from(header.name.to_ascii_lowercase()) {
                    Ok(name) => Some((name, header.value.clone())),
                    Err(_) => {
                        errors.push(format!(
                            "{path}.when_header.name: {:?} is not a header name",
                            header.name
                        ));
                        None
                    }
                }
            }
        };
        rules.push(RouteRule {
            when_role: rule.when_role.clone(),
            when_environment: rule.when_environment.clone(),
            when_model: rule.when_model.clone(),
            when_header,
            default: rule.default,
            target: rule.target.clone(),
        });
    }
    rules
}

/// Validates each target's `fallback`: known targets, not itself, each once.
fn validate_fallbacks(targets: &[TargetConfig], errors: &mut Vec<String>) {
    for (index, target) in targets.iter().enumerate() {
        for (position, fallback) in target.fallback.iter().enumerate() {
            let path = format!("proxy.targets[{index}].fallback[{position}]");
            if *fallback == target.id {
                errors.push(format!("{path}: a target cannot fall back to itself"));
            } else if !targets.iter().any(|other| other.id == *fallback) {
                errors.push(format!("{path}: no target has id {fallback:?}"));
            } else if target.fallback[..position].contains(fallback) {
                errors.push(format!("{path}: {fallback:?} is listed twice"));
            }
        }
    }
}

/// Validates `[[proxy.rate_limits]]`.
fn validate_rate_limits(limits: &[RateLimitConfig], errors: &mut Vec<String>) -> Vec<RateLimit> {
    let mut valid = Vec::new();
    for (index, limit) in limits.iter().enumerate() {
        let path = format!("proxy.rate_limits[{index}]");
        let Some(subject) = LimitSubject::parse(&limit.subject) else {
            errors.push(format!(
                "{path}.subject: {:?} is not one of {}",
                limit.subject,
                LimitSubject::NAMES
            ));
            continue;
        };
        if subject == LimitSubject::Global && limit.matches.is_some() {
            errors.push(format!(
                "{path}.match: a global limit has no subject to match"
            ));
        }
        let windows = |counts: [(Option<u64>, &str, u64); 4], errors: &mut Vec<String>| {
            let mut windows = Vec::new();
            for (count, key, seconds) in counts {
                match count {
                    Some(0) => errors.push(format!("{path}.{key}: must be at least 1")),
                    Some(limit) => windows.push(Window {
                        period: Duration::from_secs(seconds),
                        limit,
                    }),
                    None => {}
                }
            }
            windows
        };
        let requests = windows(
            [
                (limit.requests_per_second, "requests_per_second", 1),
                (limit.requests_per_minute, "requests_per_minute", 60),
                (limit.requests_per_hour, "requests_per_hour", 3_600),
                (limit.requests_per_day, "requests_per_day", 86_400),
            ],
            errors,
        );
        let tokens = windows(
            [
                (limit.tokens_per_second, "tokens_per_second", 1),
                (limit.tokens_per_minute, "tokens_per_minute", 60),
                (limit.tokens_per_hour, "tokens_per_hour", 3_600),
                (limit.tokens_per_day, "tokens_per_day", 86_400),
            ],
            errors,
        );
        if requests.is_empty() && tokens.is_empty() {
            errors.push(format!(
                "{path}: set at least one of requests_per_{{second,minute,hour,day}} or \
                 tokens_per_{{second,minute,hour,day}}"
            ));
            continue;
        }
        if !(1..=10_000_000).contains(&limit.max_subjects) {
            errors.push(format!(
                "{path}.max_subjects: must be between 1 and 10000000"
            ));
        }
        valid.push(RateLimit {
            subject,
            matches: limit.matches.clone(),
            requests,
            tokens,
            default_max_tokens: limit.default_max_tokens,
            max_subjects: limit.max_subjects,
        });
    }
    valid
}

/// Validates `[[proxy.budgets]]`: one subject each, at least one positive cap, a known
/// action.
fn validate_budgets(
    budgets: &[BudgetConfig],
    clients: &[ClientConfig],
    errors: &mut Vec<String>,
) -> Vec<Budget> {
    let mut valid = Vec::new();
    for (index, budget) in budgets.iter().enumerate() {
        let path = format!("proxy.budgets[{index}]");
        let subject = match (&budget.client, &budget.team, &budget.department) {
            (Some(client), None, None) => {
                if !clients.iter().any(|c| c.name == *client) {
                    errors.push(format!("{path}.client: no client is named {client:?}"));
                }
                BudgetSubject::Client(client.clone())
            }
            (None, Some(team), None) => BudgetSubject::Team(team.clone()),
            (None, None, Some(department)) => BudgetSubject::Department(department.clone()),
            _ => {
                errors.push(format!(
                    "{path}: name exactly one of client, team or department"
                ));
                continue;
            }
        };
        let mut caps = Vec::new();
        for (period, key, usd) in [
            (BudgetPeriod::Hour, "usd_per_hour", budget.usd_per_hour),
            (BudgetPeriod::Day, "usd_per_day", budget.usd_per_day),
            (BudgetPeriod::Month, "usd_per_month", budget.usd_per_month),
        ] {
            match usd {
                Some(usd) if usd.is_finite() && usd > 0.0 => caps.push((period, usd)),
                Some(_) => errors.push(format!("{path}.{key}: must be a price above 0")),
                None => {}
            }
        }
        if caps.is_empty() {
            errors.push(format!(
                "{path}: set at least one of usd_per_hour, usd_per_day, usd_per_month"
            ));
            continue;
        }
        let action = match budget.action.as_str() {
            "deny" => BudgetAction::Deny,
            "alert_only" => BudgetAction::AlertOnly,
            other => {
                errors.push(format!(
                    "{path}.action: {other:?} is not deny or alert_only"
                ));
                continue;
            }
        };
        valid.push(Budget {
            subject,
            caps,
            action,
        });
    }
    for client in clients {
        let over = valid
            .iter()
            .filter(|budget| match &budget.subject {
                BudgetSubject::Client(name) => *name == client.name,
                BudgetSubject::Team(team) => client.team.as_ref() == Some(team),
                BudgetSubject::Department(department) => {
                    client.department.as_ref() == Some(department)
                }
            })
            .count();
        if over > crate::policy::budgets::MAX_BUDGETS_PER_CALL {
            errors.push(format!(
                "proxy.budgets: {over} budgets apply to client {:?}; at most {} may",
                client.name,
                crate::policy::budgets::MAX_BUDGETS_PER_CALL
            ));
        }
    }
    valid
}

/// Validates `[proxy.policies].chain`: `auth` first, each member once, the router present,
/// and the router before `rate_limit` when a limit is per target.
fn validate_chain(
    chain: &[String],
    rate_limits: &[RateLimit],
    budgets: &[Budget],
    errors: &mut Vec<String>,
) -> Vec<ChainMember> {
    const KEY: &str = "proxy.policies.chain";
    if chain.first().map(String::as_str) != Some("auth") {
        errors.push(format!(
            "{KEY}: must start with \"auth\" (callers are authenticated before anything else)"
        ));
    }
    let mut members = Vec::new();
    for (position, name) in chain.iter().enumerate().skip(1) {
        let member = match name.as_str() {
            "rate_limit" => ChainMember::RateLimit,
            "router" => ChainMember::Router,
            "budget" => ChainMember::Budget,
            "pii" => ChainMember::Pii,
            "injection" => ChainMember::Injection,
            "content" => ChainMember::Content,
            "auth" => {
                errors.push(format!("{KEY}[{position}]: \"auth\" comes once, first"));
                continue;
            }
            other => {
                errors.push(format!(
                    "{KEY}[{position}]: unknown member {other:?} (known: auth, rate_limit, router, budget, injection, pii, content)"
                ));
                continue;
            }
        };
        if members.contains(&member) {
            errors.push(format!("{KEY}[{position}]: {name:?} is listed twice"));
            continue;
        }
        members.push(member);
    }
    if !members.contains(&ChainMember::Router) {
        errors.push(format!(
            "{KEY}: needs \"router\" (it chooses each call's target)"
        ));
    }
    let limit_position = members.iter().position(|m| *m == ChainMember::RateLimit);
    let router_position = members.iter().position(|m| *m == ChainMember::Router);
    let budget_position = members.iter().position(|m| *m == ChainMember::Budget);
    if !budgets.is_empty() && budget_position.is_none() {
        errors.push(format!(
            "{KEY}: [[proxy.budgets]] are configured but \"budget\" is not in the chain"
        ));
    }
    if let (Some(budget), Some(router)) = (budget_position, router_position)
        && budget < router
    {
        errors.push(format!(
            "{KEY}: \"budget\" comes after \"router\" (it prices the call on its target)"
        ));
    }
    if !rate_limits.is_empty() && limit_position.is_none() {
        errors.push(format!(
            "{KEY}: [[proxy.rate_limits]] are configured but \"rate_limit\" is not in the chain"
        ));
    }
    if let (Some(limit), Some(router)) = (limit_position, router_position)
        && limit < router
        && rate_limits
            .iter()
            .any(|limit| limit.subject == LimitSubject::Target)
    {
        errors.push(format!(
            "{KEY}: a per-target rate limit needs \"router\" before \"rate_limit\" \
             (chain = [\"auth\", \"router\", \"rate_limit\"])"
        ));
    }
    members
}

fn validate_target(
    target: &TargetConfig,
    path: &str,
    env: &dyn Environment,
    errors: &mut Vec<String>,
) -> Option<Target> {
    let num_errors = errors.len();
    if target.id.trim().is_empty() {
        errors.push(format!("{path}.id: must not be empty"));
    }
    let chat_template = validate_chat_template(target, path, errors);
    let base_url = match Url::parse(&target.base_url) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => {
            let mut url = url;
            if !url.path().ends_with('/') {
                url.set_path(&format!("{}/", url.path()));
            }
            Some(url)
        }
        Ok(url) => {
            errors.push(format!(
                "{path}.base_url: scheme {:?} is not http or https",
                url.scheme()
            ));
            None
        }
        Err(err) => {
            errors.push(format!("{path}.base_url: {:?}: {err}", target.base_url));
            None
        }
    };
    if target.kind == TargetKind::HfServerless && target.model.is_none() {
        errors.push(format!(
            "{path}.model: required for hf-serverless targets (the Hub model id)"
        ));
    }
    let token = target
        .token
        .as_deref()
        .and_then(|reference| resolve_secret(reference, &format!("{path}.token"), env, errors));
    for (key, seconds) in [
        ("timeout_s", target.timeout_s),
        ("connect_timeout_s", target.connect_timeout_s),
        ("first_token_timeout_s", target.first_token_timeout_s),
    ] {
        if !(seconds > 0.0 && seconds <= 3600.0) {
            errors.push(format!("{path}.{key}: must be in (0, 3600]"));
        }
    }
    for (key, bytes) in [
        ("max_response_bytes", target.max_response_bytes),
        ("max_stream_event_bytes", target.max_stream_event_bytes),
    ] {
        if !(1024..=1 << 30).contains(&bytes) {
            errors.push(format!("{path}.{key}: must be between 1 KiB and 1 GiB"));
        }
    }
    if target.max_stop_sequences == 0 {
        errors.push(format!("{path}.max_stop_sequences: must be at least 1"));
    }
    if !(target.cold_start_timeout_s >= 0.0 && target.cold_start_timeout_s <= 3600.0) {
        errors.push(format!("{path}.cold_start_timeout_s: must be in [0, 3600]"));
    }
    for (key, seconds) in [
        ("window_s", target.breaker.window_s),
        ("open_s", target.breaker.open_s),
    ] {
        if !(seconds > 0.0 && seconds <= 86_400.0) {
            errors.push(format!("{path}.breaker.{key}: must be in (0, 86400]"));
        }
    }
    if let Some(endpoint) = &target.endpoint {
        let is_part = |part: &str| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        if !endpoint
            .split_once('/')
            .is_some_and(|(namespace, name)| is_part(namespace) && is_part(name))
        {
            errors.push(format!(
                "{path}.endpoint: {endpoint:?} is not an Inference Endpoint's namespace/name"
            ));
        }
    }
    if target.min_replicas > 1_000 {
        errors.push(format!("{path}.min_replicas: at most 1000"));
    }
    if let Some(pricing) = &target.pricing {
        for (key, price) in [
            ("input_per_1k_tokens", pricing.input_per_1k_tokens),
            ("output_per_1k_tokens", pricing.output_per_1k_tokens),
            ("per_upstream_second", pricing.per_upstream_second),
        ] {
            if !(price.is_finite() && price >= 0.0) {
                errors.push(format!("{path}.pricing.{key}: must be a price >= 0"));
            }
        }
    }
    if errors.len() > num_errors {
        return None;
    }
    Some(Target {
        id: target.id.clone(),
        kind: target.kind,
        base_url: base_url?,
        model: target.model.clone(),
        token,
        timeout: Duration::from_secs_f64(target.timeout_s),
        connect_timeout: Duration::from_secs_f64(target.connect_timeout_s),
        first_token_timeout: Duration::from_secs_f64(target.first_token_timeout_s),
        cold_start_timeout: Duration::from_secs_f64(target.cold_start_timeout_s),
        adapter_id: target.adapter_id.clone(),
        chat_template,
        max_stop_sequences: target.max_stop_sequences,
        pricing: target.pricing,
        capture: target.capture,
        capture_max_bytes: target.capture_max_bytes,
        allow_bill_to: target.allow_bill_to.clone(),
        max_response_bytes: target.max_response_bytes,
        max_stream_event_bytes: target.max_stream_event_bytes,
        fallback: target.fallback.clone(),
        breaker: BreakerSettings {
            failures: target.breaker.failures,
            window: Duration::from_secs_f64(target.breaker.window_s),
            open: Duration::from_secs_f64(target.breaker.open_s),
        },
        endpoint: target.endpoint.clone(),
        min_replicas: target.min_replicas,
    })
}

/// A `tgi` target's chat template: exactly one of a built-in name or Jinja source. Other
/// kinds apply their server's own template, so setting one there is a mistake worth reporting.
fn validate_chat_template(
    target: &TargetConfig,
    path: &str,
    errors: &mut Vec<String>,
) -> Option<Arc<ChatTemplate>> {
    let builtin_names = || {
        BUILTIN_TEMPLATES
            .iter()
            .map(|builtin| builtin.name)
            .collect::<Vec<_>>()
            .join(", ")
    };
    if target.kind != TargetKind::Tgi {
        if target.chat_template.is_some()
            || target.chat_template_jinja.is_some()
            || target.chat_roles.is_some()
            || !target.chat_special_tokens.is_empty()
        {
            errors.push(format!(
                "{path}.chat_template: only \"tgi\" targets use a chat template; {} targets \
                 apply the server's own",
                target.kind.as_str()
            ));
        }
        return None;
    }
    let guards = TemplateGuards {
        roles: target.chat_roles.clone().unwrap_or_else(|| {
            DEFAULT_CHAT_ROLES
                .iter()
                .map(|role| (*role).to_owned())
                .collect()
        }),
        special_tokens: target.chat_special_tokens.clone(),
        on_special_tokens: target.special_tokens_in_content,
        fuel: target.chat_template_fuel,
    };
    if target.chat_template_fuel == 0 {
        errors.push(format!("{path}.chat_template_fuel: must be at least 1"));
    }
    let compiled = match (&target.chat_template, &target.chat_template_jinja) {
        (Some(name), None) => ChatTemplate::builtin(name, guards).unwrap_or_else(|| {
            Err(format!(
                "unknown built-in {name:?}; choose one of {} or set chat_template_jinja",
                builtin_names()
            ))
        }),
        (None, Some(source)) => ChatTemplate::compile(
            source,
            target.bos_token.as_deref().unwrap_or_default(),
            target.eos_token.as_deref().unwrap_or_default(),
            guards,
        ),
        (Some(_), Some(_)) => Err("set chat_template or chat_template_jinja, not both".to_owned()),
        (None, None) => Err(format!(
            "\"tgi\" targets need one: a built-in ({}) or chat_template_jinja",
            builtin_names()
        )),
    };
    compiled
        .map(Arc::new)
        .map_err(|err| errors.push(format!("{path}.chat_template: {err}")))
        .ok()
}

fn validate_passthrough(
    passthrough: &PassthroughConfig,
    errors: &mut Vec<String>,
) -> Option<Passthrough> {
    let prefix = passthrough.prefix.trim_end_matches('/');
    let valid = prefix.starts_with('/')
        && prefix.len() > 1
        && prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '-' | '_' | '.'))
        && !matches!(prefix, "/v1" | "/healthz" | "/metrics");
    if !valid {
        errors.push(format!(
            "proxy.passthrough.prefix: {:?} must be a path like \"/hf\" (letters, digits, \
             '-', '_', '.'), not one of Warden's own routes",
            passthrough.prefix
        ));
        return None;
    }
    Some(Passthrough {
        prefix: prefix.to_owned(),
        forward_client_authorization: passthrough.forward_client_authorization,
    })
}

/// Resolves a secret reference. Only references are accepted: an inline value in a config
/// file is exactly what this design exists to prevent.
fn resolve_secret(
    reference: &str,
    path: &str,
    env: &dyn Environment,
    errors: &mut Vec<String>,
) -> Option<Secret> {
    let Some(name) = reference.strip_prefix("env:") else {
        errors.push(format!(
            "{path}: must be a reference like \"env:HF_API_TOKEN\", not an inline value"
        ));
        return None;
    };
    match env.var(name) {
        Some(value) if !value.is_empty() => Some(Secret(value)),
        _ => {
            errors.push(format!("{path}: env var {name} is not set"));
            None
        }
    }
}

fn parse_sha256_hex(value: &str) -> Option<[u8; 32]> {
    let mut digest = [0u8; 32];
    hex::decode_to_slice(value.trim(), &mut digest).ok()?;
    Some(digest)
}

fn default_proxy_id() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "warden-proxy".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> ProxyConfig {
        #[derive(Deserialize)]
        struct Wrapper {
            proxy: ProxyConfig,
        }
        toml::from_str::<Wrapper>(toml_text).expect("parses").proxy
    }

    #[test]
    fn valid_config_resolves_secret_references() {
        let config = parse(
            r#"
            [proxy]
            listen = "127.0.0.1:0"
            [[proxy.targets]]
            id = "llama"
            kind = "tgi-messages"
            base_url = "http://127.0.0.1:3000/base"
            model = "meta-llama/Llama"
            token = "env:TEST_HF_TOKEN"
            [[proxy.clients]]
            name = "app"
            key_sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
            "#,
        );
        let env = HashMap::from([("TEST_HF_TOKEN".to_owned(), "hf_xxx".to_owned())]);
        let settings = config.validate(&env).expect("valid");
        let target = &settings.targets[0];
        assert_eq!(target.base_url.as_str(), "http://127.0.0.1:3000/base/");
        assert_eq!(target.token.as_ref().map(Secret::expose), Some("hf_xxx"));
        assert!(target.serves("llama") && target.serves("meta-llama/Llama"));
        assert_eq!(format!("{:?}", target.token), "Some(Secret(***))");
        assert_eq!(settings.clients[0].name, "app");
    }

    #[test]
    fn every_error_is_collected_with_its_path() {
        let config = parse(
            r#"
            [proxy]
            listen = "nowhere"
            [[proxy.targets]]
            id = "a"
            kind = "tgi-messages"
            base_url = "ftp://x"
            token = "hf_inline_secret"
            [[proxy.targets]]
            id = "b"
            kind = "hf-serverless"
            base_url = "https://router.huggingface.co"
            token = "env:MISSING_TOKEN"
            pricing = { output_per_1k_tokens = -1.0 }
            [[proxy.clients]]
            name = "app"
            key_sha256 = "not-hex"
            "#,
        );
        let errors = config.validate(&HashMap::new()).expect_err("invalid");
        let expected_prefixes = [
            "proxy.listen:",
            "proxy.targets[0].base_url: scheme \"ftp\"",
            "proxy.targets[0].token: must be a reference",
            "proxy.targets[1].model: required",
            "proxy.targets[1].token: env var MISSING_TOKEN is not set",
            "proxy.targets[1].pricing.output_per_1k_tokens: must be a price",
            "proxy.clients[0].key_sha256:",
        ];
        assert_eq!(errors.len(), expected_prefixes.len(), "{errors:#?}");
        for (error, prefix) in errors.iter().zip(expected_prefixes) {
            assert!(
                error.starts_with(prefix),
                "{error:?} should start with {prefix:?}"
            );
        }
        // The inline secret is never echoed back.
        assert!(!errors.iter().any(|e| e.contains("hf_inline_secret")));
    }

    #[test]
    fn pricing_adds_token_and_time_costs() {
        let pricing = Pricing {
            input_per_1k_tokens: 0.5,
            output_per_1k_tokens: 1.5,
            per_upstream_second: 0.001,
        };
        let cost = pricing.cost_usd(2000, 1000, 3.0);
        assert!((cost - (1.0 + 1.5 + 0.003)).abs() < 1e-12, "{cost}");
        assert_eq!(Pricing::default().cost_usd(10, 10, 10.0), 0.0);
    }

    #[test]
    fn open_mode_is_refused_off_loopback_unless_allowed() {
        let config = |listen: &str, allow_open: bool| {
            parse(&format!(
                "[proxy]\nlisten = \"{listen}\"\nallow_open = {allow_open}\n"
            ))
        };
        let errors = config("0.0.0.0:8080", false)
            .validate(&HashMap::new())
            .expect_err("open mode on every interface");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].starts_with("proxy.allow_open:"), "{errors:?}");
        assert!(
            config("0.0.0.0:8080", true)
                .validate(&HashMap::new())
                .is_ok()
        );
        assert!(
            config("127.0.0.1:8080", false)
                .validate(&HashMap::new())
                .is_ok()
        );
        assert!(
            config("[::1]:8080", false)
                .validate(&HashMap::new())
                .is_ok()
        );
        let with_client = parse(
            r#"
            [proxy]
            listen = "0.0.0.0:8080"
            [[proxy.clients]]
            name = "app"
            key_sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
            "#,
        );
        assert!(with_client.validate(&HashMap::new()).is_ok());
    }

    #[test]
    fn duplicate_model_names_are_rejected() {
        let config = parse(
            r#"
            [proxy]
            [[proxy.targets]]
            id = "a"
            kind = "tgi-messages"
            base_url = "http://127.0.0.1:1"
            model = "m"
            [[proxy.targets]]
            id = "m"
            kind = "tgi-messages"
            base_url = "http://127.0.0.1:2"
            "#,
        );
        let errors = config.validate(&HashMap::new()).expect_err("invalid");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].starts_with("proxy.targets[1]:"), "{errors:?}");
    }
}
