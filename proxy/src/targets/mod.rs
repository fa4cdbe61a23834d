//! The target kinds and how each serves the OpenAI endpoints, dispatched once
//! ([`forward`]):
//!
//! - [`messages`]: TGI's Messages API (`tgi-messages`) and the HF router's OpenAI-compatible
//!   chat (`hf-serverless`): the request forwarded with the fixes each needs, answers
//!   normalized back;
//! - [`tgi`]: TGI's native `/generate` API (`tgi`; also completions on any kind), with the
//!   parameter mapping and the chat [`template`]s;
//! - [`serverless`]: what is particular to the HF serverless API (model paths);
//! - [`embeddings`]: `/v1/embeddings` through HF's feature-extraction task.

pub(crate) mod embeddings;
pub(crate) mod messages;
pub(crate) mod serverless;
pub mod template;
pub(crate) mod tgi;

use serde_json::{Map, Value};
use warden_ingest::RequestId;

use crate::answer::Answer;
use crate::audit::CallAudit;
use crate::config::{Target, TargetKind};
use crate::error::ProxyError;
use crate::openai::client_wants_usage;
use crate::stream::{StreamLimits, StreamTranslator, TranslatedStream};
use crate::upstream::Upstream;
use axum::response::Response;
use tgi::Generation;

/// The OpenAI endpoints Warden serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpenAiEndpoint {
    Chat,
    Completions,
    Embeddings,
}

impl OpenAiEndpoint {
    pub(crate) fn path(self) -> &'static str {
        match self {
            Self::Chat => "/v1/chat/completions",
            Self::Completions => "/v1/completions",
            Self::Embeddings => "/v1/embeddings",
        }
    }
}

/// An admitted OpenAI call: its parsed request, the model the client named and the target
/// the chain chose.
pub(crate) struct Admitted<'a> {
    pub(crate) request: Map<String, Value>,
    pub(crate) model: String,
    pub(crate) target: &'a Target,
    pub(crate) stream: bool,
}

/// What forwarding a call produced.
pub(crate) enum Outcome {
    Complete(Box<Answer>),
    /// Builds the streamed response once it is handed the call to audit.
    Stream(Box<dyn FnOnce(CallAudit) -> Response + Send>),
}

impl Outcome {
    fn complete(answer: Answer) -> Self {
        Self::Complete(Box::new(answer))
    }

    fn stream<T: StreamTranslator>(
        upstream: reqwest::Response,
        translator: T,
        limits: StreamLimits,
    ) -> Self {
        Self::Stream(Box::new(move |call| {
            TranslatedStream::new(upstream, call, translator, limits).into_response()
        }))
    }
}

/// Sends an admitted call to its target, the way the target's kind serves `endpoint`.
pub(crate) async fn forward(
    upstream: &Upstream,
    endpoint: OpenAiEndpoint,
    call: Admitted<'_>,
    request_id: &RequestId,
) -> Result<Outcome, ProxyError> {
    let Admitted {
        request,
        model,
        target,
        stream,
    } = call;
    let limits = StreamLimits::of(target);
    match (endpoint, target.kind) {
        (OpenAiEndpoint::Chat, TargetKind::TgiMessages | TargetKind::HfServerless) => {
            if stream {
                let (response, translator) =
                    messages::open_stream(upstream, target, &model, request, request_id).await?;
                Ok(Outcome::stream(response, translator, limits))
            } else {
                messages::complete(upstream, target, &model, request, request_id)
                    .await
                    .map(Outcome::complete)
            }
        }
        (OpenAiEndpoint::Chat | OpenAiEndpoint::Completions, _) => {
            let generation = if endpoint == OpenAiEndpoint::Chat {
                Generation::chat(&request, target, &model, request_id)?
            } else {
                Generation::completions(&request, target, &model, request_id)?
            };
            if stream {
                let (response, translator) = generation
                    .open_stream(upstream, target, client_wants_usage(&request))
                    .await?;
                Ok(Outcome::stream(response, translator, limits))
            } else {
                generation
                    .complete(upstream, target)
                    .await
                    .map(Outcome::complete)
            }
        }
        (OpenAiEndpoint::Embeddings, _) => embeddings::embed(upstream, target, &model, &request)
            .await
            .map(Outcome::complete),
    }
}
