//! Member `pii`: the PII guardrail on what a caller sends. Every text a request carries —
//! each message's content (a string, or its text parts), the arguments of tool calls fed
//! back, a completions `prompt`, an embeddings `input` — is searched; what is found is
//! replaced with typed placeholders (`redact`), refuses the call with a 400 `pii_detected`
//! naming the entity types and counts (`block`), or is only recorded (`log`). The decision
//! (`policy = "pii"`) records entity types and counts, never a value; and the captured
//! request content is the redacted one.
//!
//! With `responses = true` (the default) the answer is guarded too: under `redact` with the
//! request's placeholders (the same value keeps its number) — a whole answer's choices
//! before it is sent, a streamed one through the stream writer's
//! [`OutputGuard`](crate::stream::OutputGuard), which sends no part of a value before the
//! whole of it has been seen; under `block` an answer holding a value ends — a whole one as
//! a 400 `pii_detected`, a stream with an error chunk of that code, before any of the value
//! is sent. The answer's outcome is its own decision (`answer: ENTITY:count`), and what the
//! audit captures of the answer is what the client got — except that with `restore = true`
//! the caller's own values are put back where the answer repeats their placeholders (the
//! audit keeps the placeholders).

use serde_json::{Map, Value};

use crate::audit::CallAudit;
use crate::config::{PiiAction, PiiSettings};
use crate::error::ProxyError;
use crate::guard::pii::PiiDetector;
use crate::guard::redact::Placeholders;
use crate::policy::texts::{Texts, visit_texts};

/// The configured `pii` member.
#[derive(Debug)]
pub(crate) struct PiiPolicy {
    action: PiiAction,
    /// Guard the answer too (`responses = true`, `action` redact or block).
    answers: bool,
    restore: bool,
    detector: PiiDetector,
    pub(crate) fail_closed: bool,
}

impl PiiPolicy {
    pub(crate) fn new(settings: &PiiSettings) -> Self {
        Self {
            action: settings.action,
            answers: settings.responses && settings.action != PiiAction::Log,
            restore: settings.restore,
            detector: PiiDetector::new(&settings.entities),
            fail_closed: settings.fail_closed,
        }
    }

    /// Applies the member to `request`; `Ok(true)` when it redacted something.
    pub(crate) fn guard_request(
        &self,
        call: &mut CallAudit,
        request: &mut Map<String, Value>,
    ) -> Result<bool, ProxyError> {
        let mut placeholders = Placeholders::default();
        let redact = self.action == PiiAction::Redact;
        visit_texts(request, Texts::All, &mut |text| {
            let findings = self.detector.find(text);
            if findings.is_empty() {
                return;
            }
            let redacted = placeholders.replace(text, &findings);
            if redact {
                *text = redacted;
            }
        });
        let summary = placeholders.summary();
        let found = !placeholders.is_empty();
        if self.answers {
            // The answer goes on with the request's numbering: `[EMAIL_ADDRESS_1]` is the same
            // address in both.
            call.output_guard.get_or_insert_default().with_pii(
                self.detector.clone(),
                placeholders,
                self.action == PiiAction::Block,
                self.restore,
            );
        }
        if !found {
            return Ok(false);
        }
        match self.action {
            PiiAction::Redact => {
                call.decided("pii", "redact", Some(&summary));
                Ok(true)
            }
            PiiAction::Log => {
                call.decided("pii", "log", Some(&summary));
                Ok(false)
            }
            PiiAction::Block => {
                call.decided("pii", "deny", Some(&summary));
                Err(ProxyError::PiiDetected(summary))
            }
        }
    }
}
