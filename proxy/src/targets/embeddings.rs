//! `POST /v1/embeddings` through Hugging Face's feature-extraction task
//! (`models/{model}/pipeline/feature-extraction` on the serverless API / router).
//!
//! OpenAI's `input` (a string or a list of strings) becomes `{"inputs": [...]}`; HF's answer
//! (a list of vectors, or one vector for a single input) becomes OpenAI's list of
//! `embedding` objects, as floats or, when asked (the OpenAI SDKs ask by default), as
//! base64 of little-endian `f32`s. HF returns no token counts, so usage reports 0 and the
//! audit records none. TGI servers do not embed: `tgi` and `tgi-messages` targets answer
//! with a clear 400.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value, json};
use warden_ingest::event::ResponseInfo;

use crate::answer::Answer;
use crate::config::{Target, TargetKind};
use crate::error::ProxyError;
use crate::openai::texts;
use crate::targets::serverless;
use crate::upstream::{Upstream, upstream_error};

/// Most inputs one call may embed.
const MAX_INPUTS_PER_CALL: usize = 2048;

/// How the client wants vectors encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Float,
    Base64,
}

/// Embeds the request's `input` with `target`.
pub(crate) async fn embed(
    upstream: &Upstream,
    target: &Target,
    requested_model: &str,
    request: &Map<String, Value>,
) -> Result<Answer, ProxyError> {
    if target.kind != TargetKind::HfServerless {
        return Err(ProxyError::Unsupported(format!(
            "the model '{requested_model}' is served by TGI, which does not compute embeddings; \
             use a model of an hf-serverless target"
        )));
    }
    let inputs = texts(request, "input", MAX_INPUTS_PER_CALL)?;
    let encoding = match request.get("encoding_format").and_then(Value::as_str) {
        None | Some("float") => Encoding::Float,
        Some("base64") => Encoding::Base64,
        Some(other) => {
            return Err(ProxyError::InvalidRequest(format!(
                "encoding_format must be float or base64, not {other:?}"
            )));
        }
    };
    if request.get("dimensions").is_some_and(|d| !d.is_null()) {
        return Err(ProxyError::Unsupported(
            "dimensions is not supported by Hugging Face feature extraction".to_owned(),
        ));
    }
    let num_inputs = inputs.len();
    let body = serde_json::to_vec(&json!({"inputs": inputs}))
        .map_err(|err| ProxyError::Internal(err.to_string()))?;
    let path = format!(
        "{}/pipeline/feature-extraction",
        serverless::model_path(target)
    );
    let reply = upstream.post_json(target, &path, body).await?;
    if !reply.status.is_success() {
        return Err(upstream_error(&reply));
    }
    let vectors = read_vectors(&reply.body, num_inputs)?;
    let data: Vec<Value> = vectors
        .into_iter()
        .enumerate()
        .map(|(index, vector)| {
            json!({"object": "embedding", "index": index, "embedding": encode(&vector, encoding)})
        })
        .collect();
    let answer = json!({
        "object": "list",
        "data": data,
        "model": requested_model,
        "usage": {"prompt_tokens": 0, "total_tokens": 0},
    });
    let body = serde_json::to_vec(&answer).map_err(|err| ProxyError::Internal(err.to_string()))?;
    Ok(Answer::json(
        body,
        reply.elapsed.as_secs_f64(),
        ResponseInfo {
            ttft_ms: Some(reply.time_to_headers.as_secs_f64() * 1000.0),
            ..ResponseInfo::default()
        },
    ))
}

/// HF's answer as one vector per input: `[[f32]]`, or `[f32]` for a single input. Token-level
/// answers (`[[[f32]]]`, a model without pooling) cannot be an OpenAI embedding.
fn read_vectors(body: &[u8], num_inputs: usize) -> Result<Vec<Vec<f64>>, ProxyError> {
    let invalid = |message: &str| ProxyError::UpstreamInvalid(message.to_owned());
    let value: Value = serde_json::from_slice(body)
        .map_err(|err| invalid(&format!("not a feature-extraction answer: {err}")))?;
    let Value::Array(items) = value else {
        return Err(invalid("a feature-extraction answer must be a list"));
    };
    let as_vector =
        |item: &Value| -> Option<Vec<f64>> { item.as_array()?.iter().map(Value::as_f64).collect() };
    let vectors = if items.first().is_some_and(Value::is_number) {
        vec![as_vector(&Value::Array(items))]
    } else {
        items.iter().map(as_vector).collect()
    };
    let vectors: Vec<Vec<f64>> = vectors.into_iter().collect::<Option<_>>().ok_or_else(|| {
        invalid(
            "the model returned token-level features, not one vector per input; \
             use a sentence-embedding model",
        )
    })?;
    if vectors.len() != num_inputs {
        return Err(invalid(&format!(
            "{} vectors for {num_inputs} inputs",
            vectors.len()
        )));
    }
    Ok(vectors)
}

fn encode(vector: &[f64], encoding: Encoding) -> Value {
    match encoding {
        Encoding::Float => json!(vector),
        Encoding::Base64 => {
            let bytes: Vec<u8> = vector
                .iter()
                .flat_map(|component| (*component as f32).to_le_bytes())
                .collect();
            Value::String(BASE64.encode(bytes))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hf_vector_shapes_are_one_vector_per_input() {
        assert_eq!(
            read_vectors(b"[[0.5, 1.0], [2.0, 3.0]]", 2).expect("batch"),
            vec![vec![0.5, 1.0], vec![2.0, 3.0]]
        );
        assert_eq!(
            read_vectors(b"[0.5, 1.0]", 1).expect("single"),
            vec![vec![0.5, 1.0]]
        );
        for (body, inputs) in [
            (&b"[[[0.5]]]"[..], 1),
            (b"[[0.5]]", 2),
            (b"{\"error\":1}", 1),
        ] {
            let err = read_vectors(body, inputs).expect_err("rejected");
            assert_eq!(err.status().as_u16(), 502);
        }
    }

    #[test]
    fn base64_is_little_endian_f32() {
        let Value::String(encoded) = encode(&[1.0, -2.5], Encoding::Base64) else {
            panic!("a string");
        };
        let bytes = BASE64.decode(encoded).expect("base64");
        assert_eq!(bytes.len(), 8);
        assert_eq!(
            f32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
            -2.5
        );
    }
}
