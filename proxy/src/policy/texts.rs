//! The texts of an OpenAI request a model reads, for the guardrails: each message's content
//! (a string, or its text parts), tool-call arguments fed back, a completions `prompt`, an
//! embeddings `input`.

use serde_json::{Map, Value};

/// Which of a request's texts a guardrail reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Texts {
    /// Every text (PII and content: whatever the upstream would see).
    All,
    /// What the caller and its tools wrote, where an injection comes from: user messages, a
    /// completions prompt, and (with `tool_outputs`) tool results fed back. Not the
    /// operator's system or developer messages, nor the assistant's own earlier turns.
    Untrusted { tool_outputs: bool },
}

impl Texts {
    fn reads_message(self, role: Option<&str>) -> bool {
        match self {
            Self::All => true,
            Self::Untrusted { tool_outputs } => match role {
                Some("user") | None => true,
                Some("tool" | "function") => tool_outputs,
                Some(_) => false,
            },
        }
    }
}

/// Calls `each` on every text of `request` that `which` reads.
pub(crate) fn visit_texts(
    request: &mut Map<String, Value>,
    which: Texts,
    each: &mut dyn FnMut(&mut String),
) {
    if let Some(Value::Array(messages)) = request.get_mut("messages") {
        for message in messages.iter_mut() {
            let Value::Object(message) = message else {
                continue;
            };
            if !which.reads_message(message.get("role").and_then(Value::as_str)) {
                continue;
            }
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
            if which != Texts::All {
                continue;
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
    let keys: &[&str] = match which {
        Texts::All => &["prompt", "input"],
        // An embeddings input is data to embed, not instructions to a model.
        Texts::Untrusted { .. } => &["prompt"],
    };
    for key in keys {
        match request.get_mut(*key) {
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

    fn texts(request: &Value, which: Texts) -> Vec<String> {
        let Value::Object(mut request) = request.clone() else {
            unreachable!("an object")
        };
        let mut seen = Vec::new();
        visit_texts(&mut request, which, &mut |text| seen.push(text.clone()));
        seen
    }

    fn request() -> Value {
        json!({
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
        })
    }

    #[test]
    fn every_text_a_model_reads_is_visited() {
        assert_eq!(
            texts(&request(), Texts::All),
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

    #[test]
    fn untrusted_texts_are_the_callers_and_its_tools() {
        assert_eq!(
            texts(&request(), Texts::Untrusted { tool_outputs: true }),
            ["mail a@example.com", "sent", "p1", "p2"]
        );
        assert_eq!(
            texts(
                &request(),
                Texts::Untrusted {
                    tool_outputs: false
                }
            ),
            ["mail a@example.com", "p1", "p2"]
        );
    }
}
