//! `warden-proxy`: the HTTP front door.
//!
//! Clients speak OpenAI's API; targets are Hugging Face services (TGI, the HF router). Each
//! call goes auth → parse → route → translate → upstream → translate back, and leaves an
//! audit trail (`request`, `policy_decision`, `response` events) through a non-blocking
//! [`warden_ingest::EventEmitter`]: the request path never waits on Kafka.
//!
//! - [`config`]: `[proxy]` settings, validated, secrets resolved through an env seam.
//! - [`app`]: routes and state; `server`: the listener and its bounds (timeouts, caps,
//!   graceful shutdown).
//! - `auth`, then per endpoint `chat` (OpenAI-compatible targets), `generation` (TGI's
//!   native API, with [`template`]), `embeddings`, `passthrough` (HF-native requests);
//!   `stream` (+ `sse`) for streamed answers, `answer` for complete ones; `upstream`, `audit`.
//! - [`error`]: every failure and its OpenAI-shaped response.
//! - `metrics`: Prometheus metrics at `GET /metrics`.

mod answer;
pub mod app;
mod audit;
#[doc(hidden)]
pub mod bench_support;
mod call;
pub mod client_address;
pub mod config;
pub mod control;
pub mod error;
pub mod fingerprint;
pub mod guard;
mod metrics;
mod openai;
mod passthrough;
mod policy;
mod server;
mod state;
mod stream;
mod targets;
mod upstream;

pub use app::{admin_router, router};
pub use call::REQUEST_ID_HEADER;
pub use config::{Environment, ProcessEnvironment, ProxyConfig, ProxySettings};
pub use policy::WARDEN_KEY_HEADER;
pub use server::{serve, serve_admin};
pub use state::{ProxySetupError, ProxyState};
pub use targets::template;
