//! Guardrails: what the proxy looks for in prompts and answers, locally and in well under a
//! millisecond.
//!
//! - [`pii`]: where personal and secret data is in a text (entities validated, not just
//!   pattern-matched).
//! - [`redact`]: typed, numbered placeholders for it (`[EMAIL_ADDRESS_1]`), stable within a
//!   call, and the streaming redactor that holds back just enough of an answer that a value
//!   split across chunks is redacted before any of it is sent.
//! - [`injection`]: how much a text reads like a prompt injection, from scored heuristics.
//! - [`content`]: hate speech, harassment, toxicity, self-harm and sexual content, from
//!   shipped lexicons.
//! - [`normalize`]: the text the last two read — case, width, look-alikes, invisible
//!   characters and spelled-out words undone.

pub mod content;
pub mod injection;
pub mod normalize;
pub mod pii;
pub mod redact;
