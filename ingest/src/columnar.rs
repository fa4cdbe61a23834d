//! The Arrow form of [`AuditEvent`]: the schema of the archive's `events` table and the
//! conversions between rows and record batches.
//!
//! The schema mirrors the JSON wire form field for field (nested parts become Arrow structs), so
//! a column path in SQL (`response.status`) is the same as the JSON path in a Kafka message.
//! Rows become columns through [`EventBatchBuilder`] (the archiver's hot path); columns become
//! rows through `arrow-json`'s serde support. The serde derive in [`crate::event`] stays the
//! one source of truth for field names: the tests below fail if the schema, the builders and
//! the structs ever drift apart.

use std::sync::{Arc, LazyLock};

use arrow::array::builder::{ArrayBuilder, NullBufferBuilder};
use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int32Builder, Int64Builder, RecordBatch,
    StringBuilder, StructArray, TimestampMicrosecondBuilder,
};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;

use crate::event::AuditEvent;
use crate::event_row::{ClientRow, DecisionRow, EventRow, RequestRow, ResponseRow, RouteRow};

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
        // Added after the first release: files written before it lack the column, and the
        // archive's tables read it there as null (one occurrence).
        int64("occurrences"),
        // Added with fallback routing: a response's attempts, `; `-separated (null when the
        // call went to one target only, and in older files).
        utf8("upstream_attempts"),
    ]))
});

/// The Arrow schema of the archive's `events` table (schema_version 1).
pub fn event_schema() -> SchemaRef {
    EVENT_SCHEMA.clone()
}

/// Encodes events as one record batch with [`event_schema`].
pub fn events_to_batch(events: &[AuditEvent]) -> Result<RecordBatch, ArrowError> {
    let mut builder = EventBatchBuilder::default();
    for event in events {
        builder.append(&EventRow::from(event));
    }
    builder.finish()
}

/// Builds a record batch of the `events` table one event at a time.
///
/// This is the archiver's hot path: each event is appended to the columns as it is read (as
/// an [`EventRow`] borrowing the payload's strings), so a batch is held as compact columns
/// rather than as structs, and nothing is converted twice
/// (going through `arrow-json`'s serde support, struct → JSON tape → arrays, cost more than
/// the rest of archiving together). The test `hand_built_batches_equal_the_serde_path` keeps
/// these columns in step with the serde names.
#[derive(Debug, Default)]
pub struct EventBatchBuilder {
    event_id: StringBuilder,
    schema_version: Int32Builder,
    kind: StringBuilder,
    ts: TimestampMicrosecondBuilder,
    request_id: StringBuilder,
    proxy_id: StringBuilder,
    environment: StringBuilder,
    client: ClientColumns,
    route: RouteColumns,
    request: RequestColumns,
    response: ResponseColumns,
    decision: DecisionColumns,
    occurrences: Int64Builder,
    upstream_attempts: StringBuilder,
}

impl EventBatchBuilder {
    /// Events appended so far.
    pub fn len(&self) -> usize {
        self.ts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn append(&mut self, event: &EventRow<'_>) {
        let mut id_text = [0; uuid::fmt::Hyphenated::LENGTH];
        self.event_id
            .append_value(event.event_id.0.hyphenated().encode_lower(&mut id_text));
        self.schema_version
            .append_value(i32::try_from(event.schema_version).unwrap_or(i32::MAX));
        self.kind.append_value(event.kind.as_str());
        self.ts.append_value(event.ts.timestamp_micros());
        self.request_id.append_value(&event.request_id);
        self.proxy_id.append_value(&event.proxy_id);
        self.environment.append_option(event.environment.as_deref());
        self.client.append(&event.client);
        self.route.append(event.route.as_ref());
        self.request.append(event.request.as_ref());
        self.response.append(event.response.as_ref());
        self.decision.append(event.decision.as_ref());
        self.occurrences
            .append_option(event.occurrences.map(to_int64));
        let attempts = event
            .response
            .as_ref()
            .map(|response| &response.attempts)
            .filter(|attempts| !attempts.is_empty());
        self.upstream_attempts
            .append_option(attempts.map(|attempts| {
                attempts
                    .iter()
                    .map(|a| &**a)
                    .collect::<Vec<&str>>()
                    .join("; ")
            }));
    }

    /// The batch of everything appended; the builder is left empty.
    pub fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        let schema = event_schema();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.event_id.finish()),
            Arc::new(self.schema_version.finish()),
            Arc::new(self.kind.finish()),
            Arc::new(self.ts.finish().with_timezone("UTC")),
            Arc::new(self.request_id.finish()),
            Arc::new(self.proxy_id.finish()),
            Arc::new(self.environment.finish()),
            self.client.finish(&schema)?,
            self.route.finish(&schema)?,
            self.request.finish(&schema)?,
            self.response.finish(&schema)?,
            self.decision.finish(&schema)?,
            Arc::new(self.occurrences.finish()),
            Arc::new(self.upstream_attempts.finish()),
        ];
        RecordBatch::try_new(schema, columns)
    }
}

/// Unsigned counts are stored as Int64 (what SQL engines handle best); a count past
/// `i64::MAX` cannot happen and would be stored as `i64::MAX`.
fn to_int64(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

/// A struct column of the schema's field `name` from its finished children.
fn struct_column(
    schema: &Schema,
    name: &str,
    children: Vec<ArrayRef>,
    nulls: Option<NullBuffer>,
) -> Result<ArrayRef, ArrowError> {
    let DataType::Struct(fields) = schema.field_with_name(name)?.data_type() else {
        return Err(ArrowError::SchemaError(format!("{name} is not a struct")));
    };
    Ok(Arc::new(StructArray::try_new(
        fields.clone(),
        children,
        nulls,
    )?))
}

/// Which rows have an optional part (`route`, `request`...): the validity of its struct column.
#[derive(Debug)]
struct Presence(NullBufferBuilder);

impl Default for Presence {
    fn default() -> Self {
        Self(NullBufferBuilder::new(0))
    }
}

impl Presence {
    fn append(&mut self, present: bool) {
        self.0.append(present);
    }

    fn finish(&mut self) -> Option<NullBuffer> {
        self.0.finish()
    }
}

#[derive(Debug, Default)]
struct ClientColumns {
    ip: StringBuilder,
    country: StringBuilder,
    token_id: StringBuilder,
    name: StringBuilder,
    user_agent: StringBuilder,
}

impl ClientColumns {
    fn append(&mut self, client: &ClientRow<'_>) {
        self.ip.append_option(client.ip.as_deref());
        self.country.append_option(client.country.as_deref());
        self.token_id.append_option(client.token_id.as_deref());
        self.name.append_option(client.name.as_deref());
        self.user_agent.append_option(client.user_agent.as_deref());
    }

    fn finish(&mut self, schema: &Schema) -> Result<ArrayRef, ArrowError> {
        let children: Vec<ArrayRef> = vec![
            Arc::new(self.ip.finish()),
            Arc::new(self.country.finish()),
            Arc::new(self.token_id.finish()),
            Arc::new(self.name.finish()),
            Arc::new(self.user_agent.finish()),
        ];
        struct_column(schema, "client", children, None)
    }
}

#[derive(Debug, Default)]
struct RouteColumns {
    present: Presence,
    endpoint: StringBuilder,
    target_id: StringBuilder,
    model: StringBuilder,
    stream: BooleanBuilder,
}

impl RouteColumns {
    fn append(&mut self, route: Option<&RouteRow<'_>>) {
        self.present.append(route.is_some());
        self.endpoint.append_option(route.map(|r| &r.endpoint[..]));
        self.target_id
            .append_option(route.and_then(|r| r.target_id.as_deref()));
        self.model
            .append_option(route.and_then(|r| r.model.as_deref()));
        self.stream.append_option(route.map(|r| r.stream));
    }

    fn finish(&mut self, schema: &Schema) -> Result<ArrayRef, ArrowError> {
        let children: Vec<ArrayRef> = vec![
            Arc::new(self.endpoint.finish()),
            Arc::new(self.target_id.finish()),
            Arc::new(self.model.finish()),
            Arc::new(self.stream.finish()),
        ];
        struct_column(schema, "route", children, self.present.finish())
    }
}

#[derive(Debug, Default)]
struct RequestColumns {
    present: Presence,
    bytes: Int64Builder,
    prompt_hash: StringBuilder,
    input_tokens: Int64Builder,
    content: StringBuilder,
}

impl RequestColumns {
    fn append(&mut self, request: Option<&RequestRow<'_>>) {
        self.present.append(request.is_some());
        self.bytes.append_option(request.map(|r| to_int64(r.bytes)));
        self.prompt_hash
            .append_option(request.and_then(|r| r.prompt_hash.as_deref()));
        self.input_tokens
            .append_option(request.and_then(|r| r.input_tokens).map(to_int64));
        self.content
            .append_option(request.and_then(|r| r.content.as_deref()));
    }

    fn finish(&mut self, schema: &Schema) -> Result<ArrayRef, ArrowError> {
        let children: Vec<ArrayRef> = vec![
            Arc::new(self.bytes.finish()),
            Arc::new(self.prompt_hash.finish()),
            Arc::new(self.input_tokens.finish()),
            Arc::new(self.content.finish()),
        ];
        struct_column(schema, "request", children, self.present.finish())
    }
}

#[derive(Debug, Default)]
struct ResponseColumns {
    present: Presence,
    status: Int32Builder,
    latency_ms: Float64Builder,
    ttft_ms: Float64Builder,
    output_tokens: Int64Builder,
    finish_reason: StringBuilder,
    cost_usd: Float64Builder,
    error_type: StringBuilder,
    content: StringBuilder,
}

impl ResponseColumns {
    fn append(&mut self, response: Option<&ResponseRow<'_>>) {
        self.present.append(response.is_some());
        self.status
            .append_option(response.map(|r| i32::from(r.status)));
        self.latency_ms
            .append_option(response.and_then(|r| r.latency_ms));
        self.ttft_ms.append_option(response.and_then(|r| r.ttft_ms));
        self.output_tokens
            .append_option(response.and_then(|r| r.output_tokens).map(to_int64));
        self.finish_reason
            .append_option(response.and_then(|r| r.finish_reason.as_deref()));
        self.cost_usd
            .append_option(response.and_then(|r| r.cost_usd));
        self.error_type
            .append_option(response.and_then(|r| r.error_type.as_deref()));
        self.content
            .append_option(response.and_then(|r| r.content.as_deref()));
    }

    fn finish(&mut self, schema: &Schema) -> Result<ArrayRef, ArrowError> {
        let children: Vec<ArrayRef> = vec![
            Arc::new(self.status.finish()),
            Arc::new(self.latency_ms.finish()),
            Arc::new(self.ttft_ms.finish()),
            Arc::new(self.output_tokens.finish()),
            Arc::new(self.finish_reason.finish()),
            Arc::new(self.cost_usd.finish()),
            Arc::new(self.error_type.finish()),
            Arc::new(self.content.finish()),
        ];
        struct_column(schema, "response", children, self.present.finish())
    }
}

#[derive(Debug, Default)]
struct DecisionColumns {
    present: Presence,
    policy: StringBuilder,
    outcome: StringBuilder,
    reason: StringBuilder,
}

impl DecisionColumns {
    fn append(&mut self, decision: Option<&DecisionRow<'_>>) {
        self.present.append(decision.is_some());
        self.policy.append_option(decision.map(|d| &d.policy[..]));
        self.outcome.append_option(decision.map(|d| &d.outcome[..]));
        self.reason
            .append_option(decision.and_then(|d| d.reason.as_deref()));
    }

    fn finish(&mut self, schema: &Schema) -> Result<ArrayRef, ArrowError> {
        let children: Vec<ArrayRef> = vec![
            Arc::new(self.policy.finish()),
            Arc::new(self.outcome.finish()),
            Arc::new(self.reason.finish()),
        ];
        struct_column(schema, "decision", children, self.present.finish())
    }
}

/// Decodes a record batch of the `events` table back into events.
pub fn batch_to_events(batch: &RecordBatch) -> Result<Vec<AuditEvent>, ArrowError> {
    crate::table_record::batch_to_records(batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventKind, RequestId};
    use crate::test_fixtures::full_event;

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

    /// The serde path the hand-built columns replaced: the reference they must equal.
    fn events_to_batch_through_serde(events: &[AuditEvent]) -> RecordBatch {
        let mut decoder = arrow::json::ReaderBuilder::new(event_schema())
            .with_batch_size(events.len())
            .build_decoder()
            .expect("decoder");
        decoder.serialize(events).expect("serialize");
        decoder.flush().expect("flush").expect("a batch")
    }

    #[test]
    fn hand_built_batches_equal_the_serde_path() {
        let mut partial = full_event();
        partial.route.as_mut().expect("route").target_id = None;
        partial.response = None;
        partial.client.country = None;
        let events = vec![full_event(), sparse_event(), partial, full_event()];
        assert_eq!(
            events_to_batch(&events).expect("hand built"),
            events_to_batch_through_serde(&events)
        );
    }

    #[test]
    fn empty_input_gives_an_empty_batch() {
        let batch = events_to_batch(&[]).expect("empty");
        assert_eq!(batch.num_rows(), 0);
        assert!(batch_to_events(&batch).expect("decode").is_empty());
    }
}
