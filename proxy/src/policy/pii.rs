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
//! audit captures of the answer is what the client got.

use serde_json::{Map, Value};

use crate::audit::CallAudit;
use crate::config::{PiiAction, PiiSettings};
use crate::error::ProxyError;
use crate::guard::pii::PiiDetector;
use crate::guard::redact::Placeholders;

/// The configured `pii` member.
#[derive(Debug)]
pub(crate) struct PiiPolicy {
    action: PiiAction,
    /// Guard the answer too (`responses = true`, `action` redact or block).
    answers: bool,
    detector: PiiDetector,
}

impl PiiPolicy {
    pub(crate) fn new(settings: &PiiSettings) -> Self {
        Self {
            action: settings.action,
            answers: settings.responses && settings.action != PiiAction::Log,
            detector: PiiDetector::new(&settings.entities),
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
        visit_texts(request, &mut |text| {
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
            let detector = self.detector.clone();
            call.output_guard = Some(Box::new(if self.action == PiiAction::Block {
                crate::stream::OutputGuard::blocking(detector, placeholders)
            } else {
                crate::stream::OutputGuard::new(detector, placeholders)
            }));
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

/// Calls `each` on every text of an OpenAI request a model reads.
fn visit_texts(request: &mut Map<String, Value>, each: &mut dyn FnMut(&mut String)) {
    if let Some(Value::Array(messages)) = request.get_mut("messages") {
        for message in messages.iter_mut() {
            let Value::Object(message) = message else {
                continue;
            };
            match message.get_mut("content") {
                Some(Value::String(text)) => each(text),
                Some(Value::Array(parts)) => {
                    for part in parts.iter_mut() {
                        if let Some(Value::String(text)) = part.get_mut("text") {
                            each(text);
                        }
                    }
                }
                _ => {}
            }
            if let Some(Value::Array(calls)) = message.get_mut("tool_calls") {
                for tool_call in calls.iter_mut() {
                    if let Some(Value::String(arguments)) = tool_call
                        .get_mut("function")
                        .and_then(|function| function.get_mut("arguments"))
                    {
                        each(arguments);
                    }
                }
            }
        }
    }
    for key in ["prompt", "input"] {
        match request.get_mut(key) {
            Some(Value::String(text)) => each(text),
            Some(Value::Array(items)) => {
                for item in items.iter_mut() {
                    if let Value::String(text) = item {
                        each(text);
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn texts(request: &mut Map<String, Value>) -> Vec<String> {
        let mut seen = Vec::new();
        visit_texts(request, &mut |text| seen.push(text.clone()));
        seen
    }

    #[test]
    fn every_text_a_model_reads_is_visited() {
        let Value::Object(mut request) = json!({
            "model": "m",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [
                    {"type": "text", "text": "mail a@example.com"},
                    {"type": "image_url", "image_url": {"url": "https://example.com/x.png"}}
                ]},
                {"role": "assistant", "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"to\":\"b@example.com\"}"}}
                ]},
                {"role": "tool", "tool_call_id": "c1", "content": "sent"}
            ],
            "prompt": ["p1", "p2"],
            "input": "embed me"
        }) else {
            unreachable!("an object")
        };
        assert_eq!(
            texts(&mut request),
            [
                "be brief",
                "mail a@example.com",
                "{\"to\":\"b@example.com\"}",
                "sent",
                "p1",
                "p2",
                "embed me"
            ]
        );
    }
}
