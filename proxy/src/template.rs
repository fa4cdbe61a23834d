//! Chat templates: how a `tgi` target's chat messages become one prompt for TGI's native
//! `/generate`.
//!
//! A target names a built-in template for a common model family ([`BUILTIN_TEMPLATES`]) or
//! brings its own Jinja template, typically the `chat_template` from the model's
//! `tokenizer_config.json`. Templates are rendered the way `transformers` does it
//! (`trim_blocks`, `lstrip_blocks`, Python string methods such as `.strip()`, a
//! `raise_exception` function), with `messages`, `add_generation_prompt = true`,
//! `bos_token` and `eos_token` in scope. Templates are compiled at startup, so a broken one is
//! a configuration error, not a failed call.

use minijinja::{Environment, Error, ErrorKind, context};
use serde_json::{Map, Value};

use crate::error::ProxyError;

/// Built-in templates: (name, Jinja source, bos token, eos token).
pub const BUILTIN_TEMPLATES: &[(&str, &str, &str, &str)] = &[
    ("llama3", LLAMA3, "<|begin_of_text|>", "<|eot_id|>"),
    ("chatml", CHATML, "", "<|im_end|>"),
    ("mistral", MISTRAL, "<s>", "</s>"),
    ("gemma", GEMMA, "<bos>", "<eos>"),
    ("phi3", PHI3, "", "<|endoftext|>"),
    ("zephyr", ZEPHYR, "", "</s>"),
];

/// Llama 3 / 3.1 / 3.2 / 3.3 Instruct.
const LLAMA3: &str = "{{ bos_token }}{% for message in messages %}\
<|start_header_id|>{{ message.role }}<|end_header_id|>\n\n{{ message.content | trim }}<|eot_id|>\
{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}";

/// ChatML: Qwen, Yi, Hermes, SmolLM and many fine-tunes.
const CHATML: &str = "{% for message in messages %}\
<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n\
{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

/// Mistral / Mixtral Instruct: no system role, so a system message leads the first user turn.
const MISTRAL: &str = "{{ bos_token }}{% for message in messages %}\
{% if message.role == 'user' %}[INST] \
{% if loop.index0 == 1 and messages[0].role == 'system' %}{{ messages[0].content }}\n\n{% endif %}\
{{ message.content }} [/INST]\
{% elif message.role == 'assistant' %}{{ message.content }}{{ eos_token }}{% endif %}\
{% endfor %}";

/// Gemma / Gemma 2 / Gemma 3: `model` is the assistant role; no system role.
const GEMMA: &str = "{{ bos_token }}{% for message in messages %}{% if message.role != 'system' %}\
<start_of_turn>{{ 'model' if message.role == 'assistant' else 'user' }}\n\
{% if loop.index0 == 1 and messages[0].role == 'system' %}{{ messages[0].content }}\n\n{% endif %}\
{{ message.content | trim }}<end_of_turn>\n\
{% endif %}{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}";

/// Phi-3 / Phi-3.5 Instruct.
const PHI3: &str = "{% for message in messages %}\
<|{{ message.role }}|>\n{{ message.content }}<|end|>\n\
{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}";

/// Zephyr and other Hugging Face H4 models.
const ZEPHYR: &str = "{% for message in messages %}\
<|{{ message.role }}|>\n{{ message.content }}{{ eos_token }}\n\
{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}";

/// The name under which a target's template is compiled.
const TEMPLATE_NAME: &str = "chat";

/// A compiled chat template.
#[derive(Debug)]
pub struct ChatTemplate {
    environment: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

impl ChatTemplate {
    /// A built-in template by name.
    pub fn builtin(name: &str) -> Option<Result<Self, String>> {
        BUILTIN_TEMPLATES
            .iter()
            .find(|(builtin, ..)| *builtin == name)
            .map(|(_, source, bos, eos)| Self::compile(source, bos, eos))
    }

    /// Compiles a Jinja chat template.
    pub fn compile(source: &str, bos_token: &str, eos_token: &str) -> Result<Self, String> {
        let mut environment = Environment::new();
        environment.set_trim_blocks(true);
        environment.set_lstrip_blocks(true);
        environment
            .set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        environment.add_function("raise_exception", |message: String| -> Result<(), Error> {
            Err(Error::new(ErrorKind::InvalidOperation, message))
        });
        environment
            .add_template_owned(TEMPLATE_NAME, source.to_owned())
            .map_err(|err| err.to_string())?;
        Ok(Self {
            environment,
            bos_token: bos_token.to_owned(),
            eos_token: eos_token.to_owned(),
        })
    }

    /// Renders OpenAI chat `messages` into the prompt the model expects next.
    pub(crate) fn render(&self, messages: &Value) -> Result<String, ProxyError> {
        let messages = text_messages(messages)?;
        let template = self
            .environment
            .get_template(TEMPLATE_NAME)
            .map_err(|err| ProxyError::Internal(err.to_string()))?;
        template
            .render(context! {
                messages => messages,
                add_generation_prompt => true,
                bos_token => self.bos_token,
                eos_token => self.eos_token,
            })
            .map_err(|err| {
                // `raise_exception` is how templates reject conversations they cannot encode.
                let detail = err.detail().unwrap_or("the chat template failed");
                ProxyError::InvalidRequest(format!("messages: {detail}"))
            })
    }
}

/// The messages with every `content` reduced to text: OpenAI allows a list of content
/// parts; only text parts can be rendered into a prompt.
fn text_messages(messages: &Value) -> Result<Vec<Map<String, Value>>, ProxyError> {
    let invalid = |message: &str| ProxyError::InvalidRequest(format!("messages: {message}"));
    let messages = messages
        .as_array()
        .filter(|messages| !messages.is_empty())
        .ok_or_else(|| invalid("must be a non-empty array of messages"))?;
    messages
        .iter()
        .enumerate()
        .map(|(index, message)| {
            let mut message = message
                .as_object()
                .cloned()
                .ok_or_else(|| invalid(&format!("[{index}] must be an object")))?;
            if !message.get("role").is_some_and(Value::is_string) {
                return Err(invalid(&format!("[{index}].role must be a string")));
            }
            let content = match message.remove("content") {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(text)) => text,
                Some(Value::Array(parts)) => {
                    let mut text = String::new();
                    for part in parts {
                        match (part.get("type").and_then(Value::as_str), part.get("text")) {
                            (Some("text"), Some(Value::String(part_text))) => {
                                text.push_str(part_text);
                            }
                            _ => {
                                return Err(invalid(&format!(
                                    "[{index}].content: only text parts can be sent to a \
                                     native TGI target"
                                )));
                            }
                        }
                    }
                    text
                }
                Some(_) => {
                    return Err(invalid(&format!(
                        "[{index}].content must be a string or a list of parts"
                    )));
                }
            };
            message.insert("content".to_owned(), Value::String(content));
            Ok(message)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn conversation() -> Value {
        json!([
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": " there"}]},
        ])
    }

    #[test]
    fn builtin_templates_render_the_family_formats() {
        let render = |name: &str| {
            ChatTemplate::builtin(name)
                .expect("known")
                .expect("compiles")
                .render(&conversation())
                .expect("renders")
        };
        assert_eq!(
            render("llama3"),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>\
             <|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>\
             <|start_header_id|>assistant<|end_header_id|>\n\n"
        );
        assert_eq!(
            render("chatml"),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n\
             <|im_start|>assistant\n"
        );
        assert_eq!(render("mistral"), "<s>[INST] Be brief.\n\nHi there [/INST]");
        assert_eq!(
            render("gemma"),
            "<bos><start_of_turn>user\nBe brief.\n\nHi there<end_of_turn>\n<start_of_turn>model\n"
        );
        assert_eq!(
            render("phi3"),
            "<|system|>\nBe brief.<|end|>\n<|user|>\nHi there<|end|>\n<|assistant|>\n"
        );
        assert!(render("zephyr").ends_with("<|user|>\nHi there</s>\n<|assistant|>\n"));
        assert!(ChatTemplate::builtin("nope").is_none());
    }

    #[test]
    fn hf_style_templates_get_python_methods_and_raise_exception() {
        let template = ChatTemplate::compile(
            "{% for m in messages %}{% if m.role not in ['user', 'assistant'] %}\
             {{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}\
             {{ m.role.upper() }}: {{ m.content.strip() }}\n{% endfor %}ASSISTANT:",
            "",
            "",
        )
        .expect("compiles");
        let prompt = template
            .render(&json!([{"role": "user", "content": "  hello  "}]))
            .expect("renders");
        assert_eq!(prompt, "USER: hello\nASSISTANT:");
        let err = template
            .render(&conversation())
            .expect_err("system rejected");
        assert_eq!(err.status().as_u16(), 400);
        assert!(err.to_string().contains("Only user and assistant"), "{err}");
    }

    #[test]
    fn broken_templates_and_unrenderable_messages_are_clear_errors() {
        assert!(ChatTemplate::compile("{% for m in messages %}", "", "").is_err());
        let template = ChatTemplate::builtin("chatml")
            .expect("known")
            .expect("compiles");
        for messages in [
            json!([]),
            json!("hi"),
            json!([{"content": "no role"}]),
            json!([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]),
        ] {
            let err = template.render(&messages).expect_err("rejected");
            assert_eq!(err.status().as_u16(), 400, "{messages}");
        }
    }
}
