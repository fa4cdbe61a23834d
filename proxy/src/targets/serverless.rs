//! What is particular to the HF serverless API (`hf-serverless` targets, the HF router):
//! models are addressed by name, below `models/{model}` for the task API and pass-through,
//! and by `model` in the body of the OpenAI-compatible chat.

use crate::config::Target;

/// The path prefix of the model's task API on the router: `models/{model}`.
pub(crate) fn model_path(target: &Target) -> String {
    format!("models/{}", target.public_name())
}
