//! The responder (`warden respond`): alerts from `warden.alerts` to the people and systems
//! that must hear of them — Slack, email, SIEMs, webhooks — with Prometheus Alertmanager's
//! semantics, which operators already know.
//!
//! - [`config`]: `[respond]`, validated: receivers, the routing tree, inhibition rules.
//! - [`labels`]: what routes, inhibition rules and silences match on.
//! - [`route`]: the routing tree and group keys.
//! - [`dispatch`]: groups, timers, inhibition, silences and the notification log — pure
//!   state on the caller's clock.
//! - [`silence`]: silences, shared through a compacted topic.
//! - [`notify`]: one folder per receiver, behind the `Notifier` trait.
//! - [`retry`]: the deliveries' retry policy.
//! - [`worker`]: the role's loop: consumer group, durable state, delivery tasks.

pub mod config;
pub mod dispatch;
pub mod labels;
pub mod notify;
pub mod retry;
pub mod route;
pub mod silence;
pub mod worker;

pub use config::{RespondConfig, RespondSettings};
pub use dispatch::{Dispatcher, Notification};
pub use worker::Responder;
