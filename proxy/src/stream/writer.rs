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

use crate::config::{GuardAction, content_action};
use crate::error::ProxyError;
use crate::guard::content::{Category, ContentFilter, Finding};
use crate::guard::pii::{Entity, PiiDetector};
use crate::guard::redact::{PlaceholderRestorer, Placeholders, StreamRedactor};

/// Where an event's generated text is, in each of its `choices`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TextField {
    /// A chat chunk's `delta.content`.
    ChatDelta,
    /// A text completion chunk's `text`.
    CompletionText,
}

/// The answer side of the guardrails. Each choice's generated text goes through, in order:
/// the `pii` redactor ([`StreamRedactor`], with the call's placeholders: the request's
/// numbering goes on), the `content` filter (which holds back the word being written, so a
/// blocked term is seen whole before any of it is sent), and — for the caller only, after
/// the audit captured the redacted text — the restorer of the caller's own values.
#[derive(Debug, Default)]
pub(crate) struct OutputGuard {
    pii: Option<PiiOutput>,
    content: Option<ContentOutput>,
    /// The request's placeholders, when the caller gets its own values back.
    restore: Option<Placeholders>,
    /// Per choice index.
    choices: BTreeMap<u64, ChoiceGuard>,
    /// The last text event as sent: the frame (its text emptied) for what is flushed at the
    /// end.
    frame: Option<(Value, TextField)>,
    /// The redacted text sent since the last take (what the audit captures).
    sent: String,
    /// A blocking guardrail ended the answer: nothing more is sent.
    blocked: Option<Blocked>,
}

/// The `pii` stage.
#[derive(Debug)]
struct PiiOutput {
    detector: PiiDetector,
    placeholders: Placeholders,
    /// Counts the request's redaction left, to tell the answer's own.
    request_counts: BTreeMap<Entity, usize>,
    /// `action = "block"`: the first value found in the answer ends it instead.
    block: bool,
}

impl PiiOutput {
    /// What the answer's redaction replaced (beyond the request's), `ENTITY:count,…`.
    fn answer_summary(&self) -> Option<String> {
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

    /// Under `block`, whether the answer held a value: what blocks it.
    fn blocks(&self) -> Option<Blocked> {
        if !self.block {
            return None;
        }
        self.answer_summary().map(Blocked::Pii)
    }
}

/// The `content` stage.
#[derive(Debug)]
struct ContentOutput {
    filter: ContentFilter,
    actions: Vec<(Category, GuardAction)>,
    /// Categories found under `log`, for the decision.
    logged: BTreeMap<Category, Finding>,
}

impl ContentOutput {
    /// Checks `text`: a category under `block` blocks the answer, one under `log` is noted.
    fn check(&mut self, text: &str) -> Option<Blocked> {
        for finding in self.filter.find(text) {
            match content_action(&self.actions, finding.category) {
                GuardAction::Block => return Some(Blocked::Content(finding)),
                GuardAction::Log => {
                    self.logged.entry(finding.category).or_insert(finding);
                }
            }
        }
        None
    }
}

/// What ended an answer.
#[derive(Debug, Clone)]
pub(crate) enum Blocked {
    /// `pii` under `block`: the entity types and counts.
    Pii(String),
    /// `content` under `block`: the category found.
    Content(Finding),
}

impl Blocked {
    /// The error the caller gets: a whole answer's status and body, a stream's error chunk.
    pub(crate) fn error(&self) -> ProxyError {
        match self {
            Self::Pii(summary) => ProxyError::PiiDetected(summary.clone()),
            Self::Content(finding) => ProxyError::ContentPolicy(finding.category.to_string()),
        }
    }
}

/// One choice's state in each stage.
#[derive(Debug, Default)]
struct ChoiceGuard {
    redactor: Option<StreamRedactor>,
    content: Option<ContentTail>,
    restorer: Option<PlaceholderRestorer>,
}

/// How much already-checked text the content stage reads again with the next piece, so a
/// phrase split across pieces is matched.
const CONTENT_WINDOW: usize = 256;
/// The longest word the content stage holds back waiting for its end.
const CONTENT_HOLD: usize = 64;

/// A choice's text in the content stage: the word being written is held until it ends.
#[derive(Debug, Default)]
struct ContentTail {
    held: String,
    /// The end of what was checked and sent, read again before the next piece.
    window: String,
}

impl ContentTail {
    /// Takes `text`; returns what passed the check and may be sent now.
    fn push(
        &mut self,
        text: &str,
        finished: bool,
        content: &mut ContentOutput,
    ) -> Result<String, Blocked> {
        self.held.push_str(text);
        let mut cut = if finished {
            self.held.len()
        } else {
            self.held
                .char_indices()
                .rev()
                .find(|(_, c)| !c.is_alphanumeric() && *c != '\'')
                .map_or(0, |(at, c)| at + c.len_utf8())
        };
        if self.held.len() - cut > CONTENT_HOLD {
            cut = self.held.len();
        }
        if cut == 0 {
            return Ok(String::new());
        }
        let ready: String = self.held.drain(..cut).collect();
        self.window.push_str(&ready);
        if let Some(blocked) = content.check(&self.window) {
            return Err(blocked);
        }
        if self.window.len() > CONTENT_WINDOW {
            let mut from = self.window.len() - CONTENT_WINDOW;
            while !self.window.is_char_boundary(from) {
                from += 1;
            }
            self.window.drain(..from);
        }
        Ok(ready)
    }
}

impl OutputGuard {
    /// Adds the `pii` stage: the answer redacted with `placeholders` (the request's), or
    /// under `block` ended at its first value; with `restore`, the caller's own values put
    /// back for the caller.
    pub(crate) fn with_pii(
        &mut self,
        detector: PiiDetector,
        placeholders: Placeholders,
        block: bool,
        restore: bool,
    ) {
        if restore && !placeholders.is_empty() {
            self.restore = Some(placeholders.clone());
        }
        self.pii = Some(PiiOutput {
            request_counts: placeholders.counts.clone(),
            detector,
            placeholders,
            block,
        });
    }

    /// Adds the `content` stage.
    pub(crate) fn with_content(
        &mut self,
        filter: ContentFilter,
        actions: Vec<(Category, GuardAction)>,
    ) {
        self.content = Some(ContentOutput {
            filter,
            actions,
            logged: BTreeMap::new(),
        });
    }

    /// What ended the answer, if a blocking guardrail did.
    pub(crate) fn blocked(&self) -> Option<&Blocked> {
        self.blocked.as_ref()
    }

    /// The guardrails' decisions on the answer: `(policy, outcome, reason)`.
    pub(crate) fn decisions(&self) -> Vec<(&'static str, &'static str, String)> {
        let mut decisions = Vec::new();
        if let Some(summary) = self.pii.as_ref().and_then(PiiOutput::answer_summary) {
            let outcome = if matches!(self.blocked, Some(Blocked::Pii(_))) {
                "deny"
            } else {
                "redact"
            };
            decisions.push(("pii", outcome, format!("answer: {summary}")));
        }
        if let Some(Blocked::Content(finding)) = &self.blocked {
            decisions.push(("content", "deny", format!("answer: {}", finding.describe())));
        }
        if let Some(content) = &self.content {
            for finding in content.logged.values() {
                decisions.push(("content", "log", format!("answer: {}", finding.describe())));
            }
        }
        decisions
    }

    /// One choice's next piece of text through every stage: what the caller gets now, or
    /// `None` when a blocking guardrail ended the answer.
    fn through(&mut self, index: u64, text: &str, finished: bool) -> Option<String> {
        let Self {
            pii,
            content,
            restore,
            choices,
            sent,
            blocked,
            ..
        } = self;
        if blocked.is_some() {
            return None;
        }
        let choice = choices.entry(index).or_insert_with(|| ChoiceGuard {
            redactor: pii
                .as_ref()
                .map(|pii| StreamRedactor::new(pii.detector.clone())),
            content: content.as_ref().map(|_| ContentTail::default()),
            restorer: restore.clone().map(PlaceholderRestorer::new),
        });
        let mut text = match (pii.as_mut(), choice.redactor.as_mut()) {
            (Some(pii), Some(redactor)) => {
                let mut redacted = redactor.push(text, &mut pii.placeholders);
                if finished {
                    redacted.push_str(&redactor.finish(&mut pii.placeholders));
                }
                if let Some(found) = pii.blocks() {
                    *blocked = Some(found);
                    return None;
                }
                redacted
            }
            _ => text.to_owned(),
        };
        if let (Some(content), Some(tail)) = (content.as_mut(), choice.content.as_mut()) {
            match tail.push(&text, finished, content) {
                Ok(checked) => text = checked,
                Err(found) => {
                    *blocked = Some(found);
                    return None;
                }
            }
        }
        sent.push_str(&text);
        Some(match choice.restorer.as_mut() {
            Some(restorer) => {
                let mut restored = restorer.push(&text);
                if finished {
                    restored.push_str(&restorer.finish());
                }
                restored
            }
            None => text,
        })
    }

    /// A whole (non-streamed) answer's body with each choice's text through every stage;
    /// the redacted texts, for the capture. `None` when the body is not a JSON answer with
    /// choices; a blocking guardrail's finding is then [`blocked`](Self::blocked).
    pub(crate) fn guard_answer(&mut self, body: &[u8]) -> Option<(Vec<u8>, String)> {
        let mut answer: Value = serde_json::from_slice(body).ok()?;
        let choices = answer.get_mut("choices")?.as_array_mut()?;
        let mut texts = Vec::new();
        for choice in choices.iter_mut() {
            let slot = match choice.get_mut("message") {
                Some(message) => message.get_mut("content"),
                None => choice.get_mut("text"),
            };
            if let Some(Value::String(text)) = slot {
                if let Some(pii) = self.pii.as_mut() {
                    *text = pii.placeholders.redact(&pii.detector, text);
                    if let Some(found) = pii.blocks() {
                        self.blocked = Some(found);
                    }
                }
                if let Some(content) = self.content.as_mut()
                    && self.blocked.is_none()
                    && let Some(found) = content.check(text)
                {
                    self.blocked = Some(found);
                }
                texts.push(text.clone());
                if let Some(known) = &self.restore {
                    *text = known.restore(text);
                }
            }
        }
        Some((serde_json::to_vec(&answer).ok()?, texts.join("\n")))
    }

    /// Passes `event` through the guard: each choice's text as far as it may be sent, into
    /// the guard's frame (one copy of the event per chunk).
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
                let Some(out) = self.through(index, &text, finished) else {
                    return Passed::Blocked;
                };
                worth_sending |= !out.is_empty() || finished || has_more_than_text(choice, field);
                field.set(choice, out);
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
        let indexes: Vec<u64> = self.choices.keys().copied().collect();
        let mut rests = Vec::new();
        for index in indexes {
            match self.through(index, "", true) {
                Some(rest) if !rest.is_empty() => rests.push((index, rest)),
                Some(_) => {}
                None => return Vec::new(),
            }
        }
        let mut events = Vec::new();
        for (index, rest) in rests {
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
    /// A blocking guardrail ended the answer: it ends with an error chunk.
    Blocked,
}

/// One SSE event, `data: <json>`.
fn write_sse(out: &mut Vec<u8>, event: &Value) {
    out.extend_from_slice(b"data: ");
    // Writing a `Value` to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, event);
    out.extend_from_slice(b"\n\n");
}

/// The error chunk that ends a streamed answer a blocking guardrail stopped: OpenAI's error
/// shape, the same `code` as a blocked request (what was found named by type, never shown).
fn error_chunk(blocked: &Blocked) -> Value {
    let error = blocked.error();
    serde_json::json!({"error": {
        "message": error.to_string(),
        "type": "invalid_request_error",
        "param": null,
        "code": error.code(),
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

    /// What ended the answer, if a blocking guardrail did (the stream must end now).
    pub(crate) fn blocked(&self) -> Option<&Blocked> {
        self.guard.as_ref().and_then(|guard| guard.blocked())
    }

    /// The guardrails' decisions on the answer: `(policy, outcome, reason)`.
    pub(crate) fn decisions(&self) -> Vec<(&'static str, &'static str, String)> {
        self.guard
            .as_ref()
            .map(|guard| guard.decisions())
            .unwrap_or_default()
    }

    /// An event carrying generated text in `field` of its choices.
    pub(crate) fn generated(&mut self, event: &Value, field: TextField) {
        match self.guard.as_mut() {
            None => self.write_event(event),
            Some(guard) if guard.blocked.is_some() => {}
            Some(guard) => match guard.pass(event, field) {
                Passed::AsItIs => write_sse(&mut self.out, event),
                Passed::Frame => {
                    if let Some((frame, _)) = &guard.frame {
                        write_sse(&mut self.out, frame);
                    }
                }
                Passed::Nothing => {}
                Passed::Blocked => {
                    if let Some(blocked) = &guard.blocked {
                        write_sse(&mut self.out, &error_chunk(blocked));
                    }
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
        if guard.blocked.is_some() {
            return;
        }
        let events = guard.flush();
        if let Some(blocked) = &guard.blocked {
            let chunk = error_chunk(blocked);
            self.write_event(&chunk);
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
        let mut guard = OutputGuard::default();
        guard.with_pii(
            PiiDetector::default(),
            Placeholders::default(),
            false,
            false,
        );
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
        let mut guard = OutputGuard::default();
        guard.with_pii(
            PiiDetector::default(),
            Placeholders::default(),
            false,
            false,
        );
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
