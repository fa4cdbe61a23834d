//! The one place a streamed answer's bytes for the client are written.
//!
//! Translators do not write bytes: they hand the writer typed pieces — an event carrying
//! generated text (and where in it the text is), an event without (a role announcement, the
//! usage chunk, an error), the end of the stream, or, for pass-through, the upstream's bytes
//! untouched. Policies on the output (the guardrails that redact streamed text) take their
//! place here, between the translators and the client, whatever the target kind.

use bytes::Bytes;
use serde_json::Value;

/// Where an event's generated text is, in each of its `choices`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TextField {
    /// A chat chunk's `delta.content`.
    ChatDelta,
    /// A text completion chunk's `text`.
    CompletionText,
}

/// The client's side of a stream: collects what one upstream read produced, as SSE bytes.
#[derive(Debug, Default)]
pub(crate) struct ClientWriter {
    out: Vec<u8>,
}

impl ClientWriter {
    /// An event carrying generated text in `field` of its choices.
    pub(crate) fn generated(&mut self, event: &Value, _field: TextField) {
        self.write_event(event);
    }

    /// An event without generated text: sent as it is.
    pub(crate) fn event(&mut self, event: &Value) {
        self.write_event(event);
    }

    /// OpenAI's stream terminator, `data: [DONE]`.
    pub(crate) fn done(&mut self) {
        self.out.extend_from_slice(b"data: [DONE]\n\n");
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
        self.out.extend_from_slice(b"data: ");
        // Writing a `Value` to a Vec cannot fail.
        let _ = serde_json::to_writer(&mut self.out, event);
        self.out.extend_from_slice(b"\n\n");
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

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
