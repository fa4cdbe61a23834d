//! Runbooks: the incident procedures of seed 000 carried out, safely. So far:
//!
//! - [`hf_api`]: the Hugging Face Inference Endpoints management API — read an endpoint,
//!   pin or change its scaling, pause and resume it, and wait until a change has settled.

pub mod hf_api;
