//! Guardrails: what the proxy looks for in prompts and answers, locally and in well under a
//! millisecond. So far:
//!
//! - [`pii`]: where personal and secret data is in a text (entities validated, not just
//!   pattern-matched).
//! - [`redact`]: typed, numbered placeholders for it (`[EMAIL_ADDRESS_1]`), stable within a
//!   call, and the streaming redactor that holds back just enough of an answer that a value
//!   split across chunks is redacted before any of it is sent.

pub mod pii;
pub mod redact;
