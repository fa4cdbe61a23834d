//! The one place a streamed answer's bytes for the client are written.
//!
//! Translators do not write bytes: they hand the writer typed pieces — an event carrying
//! generated text (and where in it the text is), an event without (a role announcement, the
//! usage chunk, an error), the end of the stream, or, for pass-through, the upstream's bytes
//! untouched. Policies on the output (the guardrails that redact streamed text) take their
//! place here, between the translators and the client, whatever the target kind.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde_json::Value;

use crate::guard::pii::{Entity, PiiDetector};
use crate::guard::redact::{Placeholders, StreamRedactor};

/// Where an event's generated text is, in each of its `choices`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TextField {
    /// A chat chunk's `delta.content`.
    ChatDelta,
    /// A text completion chunk's `text`.
    CompletionText,
}

/// The output side of the `pii` guardrail: each choice's text through a
/// [`StreamRedactor`], with the call's placeholders (the request's numbering goes on).
#[derive(Debug)]
pub(crate) struct OutputGuard {
    detector: PiiDetector,
    placeholders: Placeholders,
    /// Per choice index.
    redactors: BTreeMap<u64, StreamRedactor>,
    /// The last text event as sent: the frame (its text emptied) for what is flushed at the
    /// end.
    frame: Option<(Value, TextField)>,
    /// Counts the request's redaction left, to tell the answer's own.
    request_counts: BTreeMap<Entity, usize>,
    /// The redacted text sent since the last take (what the audit captures).
    sent: String,
    /// `action = "block"`: the first value found in the answer ends it instead.
    block: bool,
    /// A value was found and the answer is blocked: nothing more is sent.
    blocked: bool,
}

impl OutputGuard {
    pub(crate) fn new(detector: PiiDetector, placeholders: Placeholders) -> Self {
        Self {
            request_counts: placeholders.counts.clone(),
            detector,
            placeholders,
            redactors: BTreeMap::new(),
            frame: None,
            sent: String::new(),
            block: false,
            blocked: false,
        }
    }

    /// The guard of `action = "block"`: an answer that holds a value is ended (a stream
    /// with an error chunk, a whole answer with a 400) before any of it is sent.
    pub(crate) fn blocking(detector: PiiDetector, placeholders: Placeholders) -> Self {
        Self {
            block: true,
            ..Self::new(detector, placeholders)
        }
    }

    /// Whether the answer held a value and a blocking guard ended it.
    pub(crate) fn is_blocked(&self) -> bool {
        self.blocked
    }

    /// Whether the answer's redaction replaced anything (beyond the request's).
    fn found_in_answer(&self) -> bool {
        self.placeholders
            .counts
            .iter()
            .any(|(entity, count)| *count > self.request_counts.get(entity).copied().unwrap_or(0))
    }

    /// What the answer's redaction replaced, `ENTITY:count,…`, if anything.
    pub(crate) fn answer_summary(&self) -> Option<String> {
        let parts: Vec<String> = self
            .placeholders
            .counts
            .iter()
            .filter_map(|(entity, count)| {
                let before = self.request_counts.get(entity).copied().unwrap_or(0);
                (*count > before).then(|| format!("{entity}:{}", count - before))
            })
            .collect();
        (!parts.is_empty()).then(|| parts.join(","))
    }

    /// A whole (non-streamed) answer's body with each choice's text redacted; the redacted
    /// texts, for the capture. `None` when the body is not a JSON answer with choices.
    pub(crate) fn redact_answer(&mut self, body: &[u8]) -> Option<(Vec<u8>, String)> {
        let mut answer: Value = serde_json::from_slice(body).ok()?;
        let choices = answer.get_mut("choices")?.as_array_mut()?;
        let mut texts = Vec::new();
        for choice in choices.iter_mut() {
            let slot = match choice.get_mut("message") {
                Some(message) => message.get_mut("content"),
                None => choice.get_mut("text"),
            };
            if let Some(Value::String(text)) = slot {
                *text = self.placeholders.redact(&self.detector, text);
                texts.push(text.clone());
            }
        }
        if self.block && self.found_in_answer() {
            self.blocked = true;
        }
        Some((serde_json::to_vec(&answer).ok()?, texts.join("\n")))
    }

    /// Passes `event` through the guard: each choice's text redacted as far as it may be
    /// sent, into the guard's frame (one copy of the event per chunk).
    fn pass(&mut self, event: &Value, field: TextField) -> Passed {
        let has_choices = event
            .get("choices")
            .and_then(Value::as_array)
            .is_some_and(|choices| !choices.is_empty());
        if !has_choices {
            // A usage chunk (or another without text): as it is, and not a frame for text.
            return Passed::AsItIs;
        }
        let mut frame = event.clone();
        let mut worth_sending = false;
        if let Some(Value::Array(choices)) = frame.get_mut("choices") {
            for choice in choices.iter_mut() {
                let index = choice.get("index").and_then(Value::as_u64).unwrap_or(0);
                let finished = choice
                    .get("finish_reason")
                    .is_some_and(|reason| !reason.is_null());
                let text = field
                    .get_mut(choice)
                    .map(std::mem::take)
                    .unwrap_or_default();
                let redactor = self
                    .redactors
                    .entry(index)
                    .or_insert_with(|| StreamRedactor::new(self.detector.clone()));
                let mut sent = redactor.push(&text, &mut self.placeholders);
                if finished {
                    sent.push_str(&redactor.finish(&mut self.placeholders));
                }
                if self.block && self.found_in_answer() {
                    self.blocked = true;
                    return Passed::Blocked;
                }
                worth_sending |= !sent.is_empty() || finished || has_more_than_text(choice, field);
                self.sent.push_str(&sent);
                field.set(choice, sent);
            }
        }
        self.frame = Some((frame, field));
        if worth_sending {
            Passed::Frame
        } else {
            Passed::Nothing
        }
    }

    /// What every choice still holds, as events in the last event's frame.
    fn flush(&mut self) -> Vec<Value> {
        let Some((mut template, field)) = self.frame.clone() else {
            return Vec::new();
        };
        if let Some(Value::Array(choices)) = template.get_mut("choices") {
            for choice in choices.iter_mut() {
                if let Some(slot) = field.get_mut(choice) {
                    slot.clear();
                }
                if let Some(reason) = choice.get_mut("finish_reason") {
                    *reason = Value::Null;
                }
            }
        }
        if self.blocked {
            return Vec::new();
        }
        let placeholders = &mut self.placeholders;
        let rests: Vec<(u64, String)> = self
            .redactors
            .iter_mut()
            .map(|(index, redactor)| (*index, redactor.finish(placeholders)))
            .filter(|(_, rest)| !rest.is_empty())
            .collect();
        if self.block && self.found_in_answer() {
            self.blocked = true;
            return Vec::new();
        }
        let mut events = Vec::new();
        for (index, rest) in rests {
            self.sent.push_str(&rest);
            let mut event = template.clone();
            if let Some(Value::Array(choices)) = event.get_mut("choices") {
                choices.retain(|choice| {
                    choice.get("index").and_then(Value::as_u64).unwrap_or(0) == index
                });
                if let Some(slot) = choices.first_mut().and_then(|choice| field.get_mut(choice)) {
                    *slot = rest;
                }
            }
            events.push(event);
        }
        events
    }
}

/// What the guard made of an event.
enum Passed {
    /// No text in it: send the event as it came.
    AsItIs,
    /// Send the guard's frame (the event with its text redacted).
    Frame,
    /// Nothing to send yet (its text is held back).
    Nothing,
    /// A blocking guard found a value: the answer ends with an error chunk.
    Blocked,
}

/// One SSE event, `data: <json>`.
fn write_sse(out: &mut Vec<u8>, event: &Value) {
    out.extend_from_slice(b"data: ");
    // Writing a `Value` to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, event);
    out.extend_from_slice(b"\n\n");
}

/// The error chunk that ends a streamed answer a blocking guard stopped: OpenAI's error
/// shape, the same `code` as a blocked request, the entity types and counts only.
fn pii_error_chunk(summary: &str) -> Value {
    serde_json::json!({"error": {
        "message": format!("The answer holds personal or secret data this proxy does not forward ({summary})."),
        "type": "invalid_request_error",
        "param": null,
        "code": "pii_detected",
    }})
}

impl TextField {
    /// Puts `text` in the choice's text slot, making the slot if the event had none (a
    /// final chunk with an empty delta still carries what was held back).
    fn set(self, choice: &mut Value, text: String) {
        if let Some(slot) = self.get_mut(choice) {
            *slot = text;
            return;
        }
        if text.is_empty() {
            return;
        }
        match self {
            Self::ChatDelta => {
                if let Some(choice) = choice.as_object_mut() {
                    let delta = choice
                        .entry("delta")
                        .or_insert_with(|| Value::Object(serde_json::Map::new()));
                    if let Some(delta) = delta.as_object_mut() {
                        delta.insert("content".to_owned(), Value::String(text));
                    }
                }
            }
            Self::CompletionText => {
                if let Some(choice) = choice.as_object_mut() {
                    choice.insert("text".to_owned(), Value::String(text));
                }
            }
        }
    }

    fn get_mut(self, choice: &mut Value) -> Option<&mut String> {
        let slot = match self {
            Self::ChatDelta => choice.get_mut("delta")?.get_mut("content")?,
            Self::CompletionText => choice.get_mut("text")?,
        };
        match slot {
            Value::String(text) => Some(text),
            _ => None,
        }
    }
}

/// Whether a choice carries something besides its text (a role, tool calls, logprobs).
fn has_more_than_text(choice: &Value, field: TextField) -> bool {
    match field {
        TextField::ChatDelta => {
            choice
                .get("delta")
                .and_then(Value::as_object)
                .is_some_and(|delta| {
                    delta
                        .iter()
                        .any(|(key, value)| key != "content" && !value.is_null())
                })
        }
        TextField::CompletionText => false,
    }
}

/// The client's side of a stream: collects what the upstream's reads produced, as SSE bytes.
#[derive(Debug, Default)]
pub(crate) struct ClientWriter {
    out: Vec<u8>,
    guard: Option<Box<OutputGuard>>,
}

impl ClientWriter {
    /// A writer whose generated text goes through `guard`, if given.
    pub(crate) fn guarded(guard: Option<Box<OutputGuard>>) -> Self {
        Self {
            out: Vec::new(),
            guard,
        }
    }

    /// Whether a guardrail rewrites the generated text (the audit then captures what the
    /// writer sent, not what the upstream wrote).
    pub(crate) fn is_guarded(&self) -> bool {
        self.guard.is_some()
    }

    /// The redacted text sent since the last call.
    pub(crate) fn take_sent_text(&mut self) -> Option<String> {
        self.guard
            .as_mut()
            .map(|guard| std::mem::take(&mut guard.sent))
            .filter(|text| !text.is_empty())
    }

    /// Whether a blocking guard ended the answer (the stream must end now).
    pub(crate) fn is_blocked(&self) -> bool {
        self.guard.as_ref().is_some_and(|guard| guard.is_blocked())
    }

    /// What the guard redacted in the answer, for the call's decision.
    pub(crate) fn answer_summary(&self) -> Option<String> {
        self.guard.as_ref().and_then(|guard| guard.answer_summary())
    }

    /// An event carrying generated text in `field` of its choices.
    pub(crate) fn generated(&mut self, event: &Value, field: TextField) {
        match self.guard.as_mut() {
            None => self.write_event(event),
            Some(guard) if guard.blocked => {}
            Some(guard) => match guard.pass(event, field) {
                Passed::AsItIs => write_sse(&mut self.out, event),
                Passed::Frame => {
                    if let Some((frame, _)) = &guard.frame {
                        write_sse(&mut self.out, frame);
                    }
                }
                Passed::Nothing => {}
                Passed::Blocked => {
                    let summary = guard.answer_summary().unwrap_or_default();
                    write_sse(&mut self.out, &pii_error_chunk(&summary));
                }
            },
        }
    }

    /// An event without generated text: sent as it is.
    pub(crate) fn event(&mut self, event: &Value) {
        self.write_event(event);
    }

    /// OpenAI's stream terminator, `data: [DONE]` (after what a guard still held).
    pub(crate) fn done(&mut self) {
        self.flush_guard();
        self.out.extend_from_slice(b"data: [DONE]\n\n");
    }

    /// What a guard still holds, sent now (the stream ends: nothing can complete it).
    pub(crate) fn flush_guard(&mut self) {
        let Some(guard) = self.guard.as_mut() else {
            return;
        };
        let events = guard.flush();
        if guard.blocked {
            let summary = guard.answer_summary().unwrap_or_default();
            self.write_event(&pii_error_chunk(&summary));
            return;
        }
        for event in events {
            self.write_event(&event);
        }
    }

    /// Bytes sent as they are: a pass-through stream's, or an event already in the
    /// upstream's own format.
    pub(crate) fn raw(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.out.is_empty()
    }

    /// What was written since the last take, without taking it.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.out
    }

    /// What was written since the last take.
    pub(crate) fn take(&mut self) -> Bytes {
        Bytes::from(std::mem::take(&mut self.out))
    }

    fn write_event(&mut self, event: &Value) {
        write_sse(&mut self.out, event);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_guarded_writer_holds_a_split_value_and_passes_usage_chunks() {
        let guard = OutputGuard::new(PiiDetector::default(), Placeholders::default());
        let mut writer = ClientWriter::guarded(Some(Box::new(guard)));
        let chunk = |text: &str| json!({"id": "c", "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]});
        writer.generated(&chunk("Mail jane.doe@exa"), TextField::ChatDelta);
        writer.generated(
            &json!({"id": "c", "choices": [], "usage": {"total_tokens": 9}}),
            TextField::ChatDelta,
        );
        writer.generated(&chunk("mple.com"), TextField::ChatDelta);
        writer.done();
        let sent = String::from_utf8(writer.take().to_vec()).expect("utf-8");
        assert!(!sent.contains("jane"), "{sent}");
        assert!(sent.contains("\"usage\":{\"total_tokens\":9}"), "{sent}");
        assert!(sent.contains("[EMAIL_ADDRESS_1]"), "{sent}");
        assert_eq!(
            writer.take_sent_text().as_deref(),
            Some("Mail [EMAIL_ADDRESS_1]")
        );
        assert!(sent.ends_with("data: [DONE]\n\n"), "{sent}");
    }

    #[test]
    fn what_was_held_goes_out_with_a_final_chunk_that_has_no_content() {
        let guard = OutputGuard::new(PiiDetector::default(), Placeholders::default());
        let mut writer = ClientWriter::guarded(Some(Box::new(guard)));
        writer.generated(
            &json!({"choices": [{"index": 0, "delta": {"content": "See you tonight"}, "finish_reason": null}]}),
            TextField::ChatDelta,
        );
        writer.generated(
            &json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
            TextField::ChatDelta,
        );
        let sent = String::from_utf8(writer.take().to_vec()).expect("utf-8");
        assert_eq!(writer.take_sent_text().as_deref(), Some("See you tonight"));
        assert!(sent.contains("\"content\":\"tonight\""), "{sent}");
        assert!(sent.contains("\"finish_reason\":\"stop\""), "{sent}");
    }

    #[test]
    fn events_are_written_as_sse_and_taken_once() {
        let mut writer = ClientWriter::default();
        assert!(writer.is_empty());
        writer.generated(
            &json!({"choices": [{"delta": {"content": "hi"}}]}),
            TextField::ChatDelta,
        );
        writer.event(&json!({"usage": {}}));
        writer.done();
        assert_eq!(
            writer.take(),
            "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n\
             data: {\"usage\":{}}\n\ndata: [DONE]\n\n"
        );
        assert!(writer.is_empty());
    }
}
