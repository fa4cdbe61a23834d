//! Runbooks: the incident procedures of seed 000 carried out, safely.
//!
//! - [`config`]: `[runbooks]` — modes (`dry_run` by default), steps, guard rails.
//! - [`plan`]: from an alert to the plan of what each step acts on.
//! - [`incident`]: an incident's state, folded from its timeline on `warden.incidents`.
//! - [`engine`]: the loop that opens incidents and carries their plans out.
//! - [`hf_api`]: the Hugging Face Inference Endpoints management API — read an endpoint,
//!   pin or change its scaling, pause and resume it, and wait until a change has settled.
//! - [`reports`]: the archive reports attached to incidents.

pub mod config;
pub mod engine;
pub mod hf_api;
pub mod incident;
pub mod plan;
pub mod reports;

pub use config::{RunbooksConfig, RunbooksSettings};
pub use engine::{RUNBOOK_DETECTOR, RunbookEngine, RunbookInputs};
pub use plan::{RunbookClient, RunbookTarget};
