//! The Arrow form of [`AuditEvent`]: the schema of the archive's `events` table and the
//! conversions between rows and record batches.
//!
//! The schema mirrors the JSON wire form field for field (nested parts become Arrow structs), so
//! a column path in SQL (`response.status`) is the same as the JSON path in a Kafka message.
//! Conversions go through `arrow-json`'s serde support, which keeps one source of truth for
//! field names (the serde derive in [`crate::event`]); the round-trip test below fails if the
//! schema and the structs ever drift apart.

use std::sync::{Arc, LazyLock};

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use arrow::json::{ReaderBuilder, WriterBuilder, writer::LineDelimited};

use crate::event::AuditEvent;

fn utf8(name: &str) -> Field {
    Field::new(name, DataType::Utf8, true)
}

fn int64(name: &str) -> Field {
    Field::new(name, DataType::Int64, true)
}

fn float64(name: &str) -> Field {
    Field::new(name, DataType::Float64, true)
}

fn structure(name: &str, fields: Vec<Field>) -> Field {
    Field::new(name, DataType::Struct(Fields::from(fields)), true)
}

static EVENT_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("event_id", DataType::Utf8, false),
        Field::new("schema_version", DataType::Int32, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("request_id", DataType::Utf8, false),
        Field::new("proxy_id", DataType::Utf8, false),
        utf8("environment"),
        structure(
            "client",
            vec![
                utf8("ip"),
                utf8("country"),
                utf8("token_id"),
                utf8("name"),
                utf8("user_agent"),
            ],
        ),
        structure(
            "route",
            vec![
                utf8("endpoint"),
                utf8("target_id"),
                utf8("model"),
                Field::new("stream", DataType::Boolean, true),
            ],
        ),
        structure(
            "request",
            vec![
                int64("bytes"),
                utf8("prompt_hash"),
                int64("input_tokens"),
                utf8("content"),
            ],
        ),
        structure(
            "response",
            vec![
                Field::new("status", DataType::Int32, true),
                float64("latency_ms"),
                float64("ttft_ms"),
                int64("output_tokens"),
                utf8("finish_reason"),
                float64("cost_usd"),
                utf8("error_type"),
                utf8("content"),
            ],
        ),
        structure(
            "decision",
            vec![utf8("policy"), utf8("outcome"), utf8("reason")],
        ),
    ]))
});

/// The Arrow schema of the archive's `events` table (schema_version 1).
pub fn event_schema() -> SchemaRef {
    EVENT_SCHEMA.clone()
}

/// Encodes events as one record batch with [`event_schema`].
pub fn events_to_batch(events: &[AuditEvent]) -> Result<RecordBatch, ArrowError> {
    let schema = event_schema();
    let mut decoder = ReaderBuilder::new(schema.clone())
        .with_batch_size(events.len().max(1))
        .build_decoder()?;
    decoder.serialize(events)?;
    Ok(decoder
        .flush()?
        .unwrap_or_else(|| RecordBatch::new_empty(schema)))
}

/// Decodes a record batch of the `events` table back into events.
pub fn batch_to_events(batch: &RecordBatch) -> Result<Vec<AuditEvent>, ArrowError> {
    let mut lines = Vec::new();
    {
        let mut writer = WriterBuilder::new().build::<_, LineDelimited>(&mut lines);
        writer.write(batch)?;
        writer.finish()?;
    }
    lines
        .split(|byte| *byte == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| {
            serde_json::from_slice(line).map_err(|err| ArrowError::JsonError(err.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{
        ClientInfo, DecisionInfo, EventKind, RequestId, RequestInfo, ResponseInfo, RouteInfo,
        TokenId,
    };

    fn full_event() -> AuditEvent {
        let mut event = AuditEvent::new(EventKind::Response, RequestId::new(), "proxy-a");
        event.environment = Some("prod".into());
        event.client = ClientInfo {
            ip: Some("203.0.113.7".into()),
            country: Some("DE".into()),
            token_id: Some(TokenId("tok_0123456789ab".into())),
            name: Some("app-prod".into()),
            user_agent: Some("OpenAI/Python 3.51.0".into()),
        };
        event.route = Some(RouteInfo {
            endpoint: "/v1/chat/completions".into(),
            target_id: Some("llama-8b".into()),
            model: Some("meta-llama/Meta-Llama-3.1-8B-Instruct".into()),
            stream: true,
        });
        event.request = Some(RequestInfo {
            bytes: 1234,
            prompt_hash: Some("ab".repeat(32)),
            input_tokens: Some(17),
            content: Some("{\"messages\":[]}".into()),
        });
        event.response = Some(ResponseInfo {
            status: 200,
            latency_ms: Some(12.25),
            ttft_ms: Some(3.5),
            output_tokens: Some(42),
            finish_reason: Some("stop".into()),
            cost_usd: Some(0.000_125),
            error_type: None,
            content: Some("hello".into()),
        });
        event.decision = Some(DecisionInfo {
            policy: "auth".into(),
            outcome: "allow".into(),
            reason: None,
        });
        event
    }

    fn sparse_event() -> AuditEvent {
        AuditEvent::new(EventKind::Request, RequestId::new(), "proxy-b")
    }

    #[test]
    fn json_to_struct_to_arrow_to_parquet_to_struct_round_trips() {
        let events = vec![full_event(), sparse_event(), full_event()];
        // JSON on the wire first: the archive only ever sees decoded wire payloads.
        let decoded: Vec<AuditEvent> = events
            .iter()
            .map(|e| AuditEvent::from_json(&e.to_json()).expect("wire decode"))
            .collect();
        assert_eq!(decoded, events);

        let batch = events_to_batch(&decoded).expect("to arrow");
        assert_eq!(batch.num_rows(), 3);
        assert_eq!(batch.schema(), event_schema());

        let mut file = Vec::new();
        let mut writer = parquet::arrow::ArrowWriter::try_new(&mut file, batch.schema(), None)
            .expect("parquet writer");
        writer.write(&batch).expect("write");
        writer.close().expect("close");

        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            bytes::Bytes::from(file),
        )
        .expect("parquet reader")
        .build()
        .expect("build");
        let mut back = Vec::new();
        for batch in reader {
            back.extend(batch_to_events(&batch.expect("batch")).expect("to events"));
        }
        assert_eq!(back, events);
    }

    #[test]
    fn empty_input_gives_an_empty_batch() {
        let batch = events_to_batch(&[]).expect("empty");
        assert_eq!(batch.num_rows(), 0);
        assert!(batch_to_events(&batch).expect("decode").is_empty());
    }
}
