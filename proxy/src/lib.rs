//! `warden-proxy`: the HTTP front door.
//!
//! Clients speak OpenAI's API; targets are Hugging Face services (TGI, the HF router). Each
//! call goes auth → parse → route → translate → upstream → translate back, and leaves an
//! audit trail (`request`, `policy_decision`, `response` events) through a non-blocking
//! [`warden_ingest::EventEmitter`]: the request path never waits on Kafka.
//!
//! - [`config`]: `[proxy]` settings, validated, secrets resolved through an env seam.
//! - [`app`]: routes, state and serving.
//! - `auth`, `chat`, `chat_stream` (+ `sse`), `upstream`, `audit`: the stages of a call.
//! - [`error`]: every failure and its OpenAI-shaped response.
//! - `metrics`: Prometheus metrics at `GET /metrics`.

pub mod app;
mod audit;
mod auth;
mod chat;
mod chat_stream;
pub mod config;
pub mod error;
mod metrics;
mod sse;
mod upstream;

pub use app::{ProxySetupError, ProxyState, REQUEST_ID_HEADER, router, serve};
pub use config::{Environment, ProcessEnvironment, ProxyConfig, ProxySettings};
