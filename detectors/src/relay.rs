//! What the keyed stage passes on to the shared stage through `warden.detect.shared`.
//!
//! One record is a **batch**: events of one source partition of `warden.events`, in the order
//! they were read, each with its offset there, in a compact binary form of its [`EventRow`].
//! Passing events on one record each cost more than detecting on them (a produce, a fetch, a
//! copy and a second JSON decoding per event: BENCHMARKS.md); a batch costs one of each per
//! few hundred events, and its rows decode without a parser.
//!
//! The rows leave out the prompt and completion content: no detector reads them, and the
//! shared topic is no place for a second copy of them. Everything else of the event is kept.
//!
//! A batch also says whether its source partition was **caught up** when it was cut (the
//! keyed stage had read to its end): the shared stage's [event-time frontier](crate::frontier)
//! waits for source partitions still catching up, and not for those that are simply quiet.
//!
//! Each row says its length and starts with its event time, so a stage reads the time of an
//! event without decoding the rest: an event ahead of the stage's clock is held as it came
//! and decoded once, when it is counted.
//!
//! # Format (version 3)
//!
//! Integers are LEB128 varints (signed ones zigzag-encoded), floats 8 bytes little-endian.
//!
//! ```text
//! batch  := "WDR" 0x03  partition:zigzag  flags:u8 (bit 0: caught up)  event*
//! event  := offset_delta:varint (from the previous offset; the first from -1)
//!           row_length:varint  row
//! row    := ts_seconds:zigzag  ts_nanos  event_id:16 bytes  schema_version  kind:u8
//!           request_id:str  proxy_id:str  environment:str?
//!           client: ip:str? country:str? token_id:str? name:str? user_agent:str?
//!           route?    := endpoint:str  target_id:str?  model:str?  stream:u8
//!           request?  := bytes  prompt_hash:str?  input_tokens:u64?
//!           response? := status  latency_ms:f64?  ttft_ms:f64?  output_tokens:u64?
//!                        finish_reason:str?  cost_usd:f64?  error_type:str?
//!           decision? := policy:str  outcome:str  reason:str?
//!           occurrences:u64?
//! str    := length:varint  UTF-8 bytes       str? := 0 | (length + 1):varint  bytes
//! x?     := 0x00 | 0x01 x                    (an optional number or part)
//! ```
//!
//! A worker reads only its own version: while workers of two versions run side by side (an
//! upgrade), batches of the other version are skipped and counted as undecodable, so the
//! shared stage misses their events (the archive has them all the same).

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use uuid::Uuid;
use warden_ingest::event::{EventId, EventKind};
use warden_ingest::event_row::{
    ClientRow, DecisionRow, EventRow, RequestRow, ResponseRow, RouteRow, Text,
};

const MAGIC: &[u8; 4] = b"WDR\x03";
const CAUGHT_UP: u8 = 1;

/// Why a passed-on record could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelayError {
    #[error("not a batch of passed-on events (format version 3)")]
    NotABatch,
    #[error("batch ends inside an event")]
    Truncated,
    #[error("batch holds a string that is not UTF-8")]
    NotUtf8,
    #[error("batch holds an unknown event kind {0}")]
    UnknownKind(u8),
    #[error("batch holds an out-of-range number")]
    OutOfRange,
    #[error("batch holds a row longer than its fields")]
    LeftOver,
}

/// A batch being filled with the events of one source partition.
#[derive(Debug, Clone)]
pub struct BatchWriter {
    partition: i32,
    buffer: Vec<u8>,
    /// Where the flags byte is in `buffer`.
    flags_at: usize,
    previous_offset: i64,
    events: usize,
    /// A row being encoded (before its length is known).
    row: Vec<u8>,
}

impl BatchWriter {
    pub fn new(partition: i32) -> Self {
        let mut writer = Self {
            partition,
            buffer: Vec::new(),
            flags_at: 0,
            previous_offset: -1,
            events: 0,
            row: Vec::new(),
        };
        writer.start();
        writer
    }

    fn start(&mut self) {
        self.buffer.clear();
        self.buffer.extend_from_slice(MAGIC);
        put_signed(&mut self.buffer, i64::from(self.partition));
        self.flags_at = self.buffer.len();
        self.buffer.push(0);
        self.previous_offset = -1;
        self.events = 0;
    }

    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// Events in the batch so far.
    pub fn len(&self) -> usize {
        self.events
    }

    pub fn is_empty(&self) -> bool {
        self.events == 0
    }

    /// Appends the event read at `offset` (offsets only grow within a batch); returns its
    /// row as encoded ([`decode_row`] reads it back).
    pub fn push(&mut self, offset: i64, row: &EventRow<'_>) -> &[u8] {
        let delta = offset.saturating_sub(self.previous_offset).max(1);
        put_unsigned(&mut self.buffer, delta.unsigned_abs());
        self.previous_offset = self.previous_offset.saturating_add(delta);
        self.row.clear();
        put_row(&mut self.row, row);
        put_unsigned(&mut self.buffer, self.row.len() as u64);
        let start = self.buffer.len();
        self.buffer.extend_from_slice(&self.row);
        self.events += 1;
        &self.buffer[start..]
    }

    /// The batch as a record payload, `caught_up` if its partition was read to its end; the
    /// writer starts a new, empty batch.
    pub fn finish(&mut self, caught_up: bool) -> Vec<u8> {
        self.buffer[self.flags_at] = if caught_up { CAUGHT_UP } else { 0 };
        let payload = std::mem::take(&mut self.buffer);
        self.start();
        payload
    }
}

/// A received batch: its header, then its events in order.
#[derive(Debug, Clone)]
pub struct Batch<'a> {
    /// The source partition of `warden.events`.
    pub partition: i32,
    /// The keyed stage had read the source partition to its end when it cut this batch.
    pub caught_up: bool,
    reader: Reader<'a>,
    previous_offset: i64,
}

impl<'a> Batch<'a> {
    pub fn parse(payload: &'a [u8]) -> Result<Self, RelayError> {
        let rest = payload.strip_prefix(MAGIC).ok_or(RelayError::NotABatch)?;
        let mut reader = Reader { rest };
        let partition = i32::try_from(reader.signed()?).map_err(|_| RelayError::OutOfRange)?;
        let flags = reader.byte()?;
        Ok(Self {
            partition,
            caught_up: flags & CAUGHT_UP != 0,
            reader,
            previous_offset: -1,
        })
    }
}

/// One event of a [`Batch`], not decoded yet but for its time.
#[derive(Debug, Clone, Copy)]
pub struct BatchEvent<'a> {
    /// Its offset in the source partition.
    pub offset: i64,
    pub ts: DateTime<Utc>,
    /// The row as encoded in the batch ([`decode_row`] reads it).
    pub encoded: &'a [u8],
}

impl<'a> Iterator for Batch<'a> {
    /// The next event. After an error the batch ends.
    type Item = Result<BatchEvent<'a>, RelayError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.reader.rest.is_empty() {
            return None;
        }
        let event = (|| {
            let delta =
                i64::try_from(self.reader.unsigned()?).map_err(|_| RelayError::OutOfRange)?;
            let offset = self
                .previous_offset
                .checked_add(delta)
                .ok_or(RelayError::OutOfRange)?;
            let length = self.reader.small()?;
            let encoded = self.reader.take(length)?;
            self.previous_offset = offset;
            Ok(BatchEvent {
                offset,
                ts: row_time(encoded)?,
                encoded,
            })
        })();
        if event.is_err() {
            self.reader.rest = &[];
        }
        Some(event)
    }
}

/// One event's row alone, in the batch format's row encoding (what a stage holds while the
/// event is ahead of its clock: [`crate::frontier::AheadBuffer`]).
pub fn encode_row(row: &EventRow<'_>) -> Vec<u8> {
    let mut buffer = Vec::with_capacity(256);
    put_row(&mut buffer, row);
    buffer
}

/// A row encoded by [`encode_row`] (or of a [`BatchEvent`]), read to its end.
pub fn decode_row(bytes: &[u8]) -> Result<EventRow<'_>, RelayError> {
    let mut reader = Reader { rest: bytes };
    let row = reader.row()?;
    if !reader.rest.is_empty() {
        return Err(RelayError::LeftOver);
    }
    Ok(row)
}

/// The event time of an encoded row, read without decoding the rest.
pub fn row_time(bytes: &[u8]) -> Result<DateTime<Utc>, RelayError> {
    Reader { rest: bytes }.time()
}

fn put_unsigned(buffer: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        buffer.push((value as u8) | 0x80);
        value >>= 7;
    }
    buffer.push(value as u8);
}

fn put_signed(buffer: &mut Vec<u8>, value: i64) {
    put_unsigned(buffer, ((value << 1) ^ (value >> 63)) as u64);
}

fn put_str(buffer: &mut Vec<u8>, text: &str) {
    put_unsigned(buffer, text.len() as u64);
    buffer.extend_from_slice(text.as_bytes());
}

fn put_opt_str(buffer: &mut Vec<u8>, text: Option<&Text<'_>>) {
    match text {
        None => buffer.push(0),
        Some(text) => {
            put_unsigned(buffer, text.len() as u64 + 1);
            buffer.extend_from_slice(text.as_bytes());
        }
    }
}

fn put_opt_u64(buffer: &mut Vec<u8>, value: Option<u64>) {
    match value {
        None => buffer.push(0),
        Some(value) => {
            buffer.push(1);
            put_unsigned(buffer, value);
        }
    }
}

fn put_opt_f64(buffer: &mut Vec<u8>, value: Option<f64>) {
    match value {
        None => buffer.push(0),
        Some(value) => {
            buffer.push(1);
            buffer.extend_from_slice(&value.to_le_bytes());
        }
    }
}

fn kind_code(kind: EventKind) -> u8 {
    match kind {
        EventKind::Request => 0,
        EventKind::Response => 1,
        EventKind::PolicyDecision => 2,
        EventKind::Action => 3,
    }
}

fn put_row(buffer: &mut Vec<u8>, row: &EventRow<'_>) {
    put_signed(buffer, row.ts.timestamp());
    put_unsigned(buffer, u64::from(row.ts.timestamp_subsec_nanos()));
    buffer.extend_from_slice(row.event_id.0.as_bytes());
    put_unsigned(buffer, u64::from(row.schema_version));
    buffer.push(kind_code(row.kind));
    put_str(buffer, &row.request_id);
    put_str(buffer, &row.proxy_id);
    put_opt_str(buffer, row.environment.as_ref());
    let client = &row.client;
    for text in [
        &client.ip,
        &client.country,
        &client.token_id,
        &client.name,
        &client.user_agent,
    ] {
        put_opt_str(buffer, text.as_ref());
    }
    match &row.route {
        None => buffer.push(0),
        Some(route) => {
            buffer.push(1);
            put_str(buffer, &route.endpoint);
            put_opt_str(buffer, route.target_id.as_ref());
            put_opt_str(buffer, route.model.as_ref());
            buffer.push(u8::from(route.stream));
        }
    }
    match &row.request {
        None => buffer.push(0),
        Some(request) => {
            buffer.push(1);
            put_unsigned(buffer, request.bytes);
            put_opt_str(buffer, request.prompt_hash.as_ref());
            put_opt_u64(buffer, request.input_tokens);
        }
    }
    match &row.response {
        None => buffer.push(0),
        Some(response) => {
            buffer.push(1);
            put_unsigned(buffer, u64::from(response.status));
            put_opt_f64(buffer, response.latency_ms);
            put_opt_f64(buffer, response.ttft_ms);
            put_opt_u64(buffer, response.output_tokens);
            put_opt_str(buffer, response.finish_reason.as_ref());
            put_opt_f64(buffer, response.cost_usd);
            put_opt_str(buffer, response.error_type.as_ref());
        }
    }
    match &row.decision {
        None => buffer.push(0),
        Some(decision) => {
            buffer.push(1);
            put_str(buffer, &decision.policy);
            put_str(buffer, &decision.outcome);
            put_opt_str(buffer, decision.reason.as_ref());
        }
    }
    put_opt_u64(buffer, row.occurrences);
}

/// Reads a batch's bytes front to back; every read fails cleanly at the end.
#[derive(Debug, Clone)]
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], RelayError> {
        if self.rest.len() < len {
            return Err(RelayError::Truncated);
        }
        let (taken, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(taken)
    }

    fn byte(&mut self) -> Result<u8, RelayError> {
        Ok(self.take(1)?[0])
    }

    fn flag(&mut self) -> Result<bool, RelayError> {
        match self.byte()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(RelayError::OutOfRange),
        }
    }

    fn unsigned(&mut self) -> Result<u64, RelayError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.byte()?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(RelayError::OutOfRange)
    }

    fn signed(&mut self) -> Result<i64, RelayError> {
        let value = self.unsigned()?;
        Ok(((value >> 1) as i64) ^ -((value & 1) as i64))
    }

    fn small<T: TryFrom<u64>>(&mut self) -> Result<T, RelayError> {
        T::try_from(self.unsigned()?).map_err(|_| RelayError::OutOfRange)
    }

    fn text_of_len(&mut self, len: u64) -> Result<Text<'a>, RelayError> {
        let len = usize::try_from(len).map_err(|_| RelayError::OutOfRange)?;
        let bytes = self.take(len)?;
        let text = std::str::from_utf8(bytes).map_err(|_| RelayError::NotUtf8)?;
        Ok(Text(Cow::Borrowed(text)))
    }

    fn text(&mut self) -> Result<Text<'a>, RelayError> {
        let len = self.unsigned()?;
        self.text_of_len(len)
    }

    fn opt_text(&mut self) -> Result<Option<Text<'a>>, RelayError> {
        match self.unsigned()? {
            0 => Ok(None),
            len => self.text_of_len(len - 1).map(Some),
        }
    }

    fn opt_u64(&mut self) -> Result<Option<u64>, RelayError> {
        if self.flag()? {
            self.unsigned().map(Some)
        } else {
            Ok(None)
        }
    }

    fn opt_f64(&mut self) -> Result<Option<f64>, RelayError> {
        if self.flag()? {
            let bytes: [u8; 8] = self
                .take(8)?
                .try_into()
                .map_err(|_| RelayError::Truncated)?;
            Ok(Some(f64::from_le_bytes(bytes)))
        } else {
            Ok(None)
        }
    }

    fn time(&mut self) -> Result<DateTime<Utc>, RelayError> {
        let seconds = self.signed()?;
        let nanos = self.small()?;
        DateTime::from_timestamp(seconds, nanos).ok_or(RelayError::OutOfRange)
    }

    fn row(&mut self) -> Result<EventRow<'a>, RelayError> {
        let ts = self.time()?;
        let id: [u8; 16] = self
            .take(16)?
            .try_into()
            .map_err(|_| RelayError::Truncated)?;
        let schema_version = self.small()?;
        let kind = match self.byte()? {
            0 => EventKind::Request,
            1 => EventKind::Response,
            2 => EventKind::PolicyDecision,
            3 => EventKind::Action,
            other => return Err(RelayError::UnknownKind(other)),
        };
        let request_id = self.text()?;
        let proxy_id = self.text()?;
        let environment = self.opt_text()?;
        let client = ClientRow {
            ip: self.opt_text()?,
            country: self.opt_text()?,
            token_id: self.opt_text()?,
            name: self.opt_text()?,
            user_agent: self.opt_text()?,
        };
        let route = if self.flag()? {
            Some(RouteRow {
                endpoint: self.text()?,
                target_id: self.opt_text()?,
                model: self.opt_text()?,
                stream: self.flag()?,
            })
        } else {
            None
        };
        let request = if self.flag()? {
            Some(RequestRow {
                bytes: self.unsigned()?,
                prompt_hash: self.opt_text()?,
                input_tokens: self.opt_u64()?,
                content: None,
            })
        } else {
            None
        };
        let response = if self.flag()? {
            Some(ResponseRow {
                status: self.small()?,
                latency_ms: self.opt_f64()?,
                ttft_ms: self.opt_f64()?,
                output_tokens: self.opt_u64()?,
                finish_reason: self.opt_text()?,
                cost_usd: self.opt_f64()?,
                error_type: self.opt_text()?,
                // Neither content nor fallback attempts matter to a detector.
                content: None,
                attempts: Vec::new(),
            })
        } else {
            None
        };
        let decision = if self.flag()? {
            Some(DecisionRow {
                policy: self.text()?,
                outcome: self.text()?,
                reason: self.opt_text()?,
            })
        } else {
            None
        };
        let occurrences = self.opt_u64()?;
        Ok(EventRow {
            event_id: EventId(Uuid::from_bytes(id)),
            schema_version,
            kind,
            ts,
            request_id,
            proxy_id,
            environment,
            client,
            route,
            request,
            response,
            decision,
            occurrences,
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use warden_ingest::event::AuditEvent;

    use super::*;
    use crate::scenario::Scenario;

    /// `event`'s row as the shared stage gets it: without content.
    fn without_content(event: &AuditEvent) -> EventRow<'_> {
        let mut row = EventRow::from(event);
        if let Some(request) = &mut row.request {
            request.content = None;
        }
        if let Some(response) = &mut row.response {
            response.content = None;
        }
        row
    }

    /// A few hundred events of every scenario (generated once: whole scenarios are large).
    fn scenario_events() -> &'static [AuditEvent] {
        static EVENTS: std::sync::LazyLock<Vec<AuditEvent>> = std::sync::LazyLock::new(|| {
            let start = DateTime::from_timestamp(1_790_000_000, 0).expect("time");
            let mut events = Vec::new();
            for scenario in Scenario::ALL {
                events.extend(scenario.events(start, 7).into_iter().take(300));
            }
            events
        });
        &EVENTS
    }

    /// A batch of 20 scenario events at offsets 0..20.
    fn sample_batch() -> &'static [u8] {
        static BATCH: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
            let mut writer = BatchWriter::new(0);
            for (index, event) in scenario_events().iter().take(20).enumerate() {
                writer.push(index as i64, &EventRow::from(event));
            }
            writer.finish(false)
        });
        &BATCH
    }

    #[test]
    fn every_scenario_event_comes_back_as_its_row_without_content() {
        let events = scenario_events();
        let mut writer = BatchWriter::new(3);
        for (index, event) in events.iter().enumerate() {
            let encoded = writer.push(100 + 2 * index as i64, &EventRow::from(event));
            assert_eq!(decode_row(encoded).expect("row"), without_content(event));
        }
        assert_eq!(writer.len(), events.len());
        let payload = writer.finish(true);
        assert!(writer.is_empty(), "a new batch starts");
        let batch = Batch::parse(&payload).expect("batch");
        assert_eq!((batch.partition, batch.caught_up), (3, true));
        let read: Vec<_> = batch.collect::<Result<_, _>>().expect("events");
        assert_eq!(read.len(), events.len());
        for (index, (read, event)) in read.iter().zip(events).enumerate() {
            assert_eq!(read.offset, 100 + 2 * index as i64);
            assert_eq!(read.ts, event.ts);
            assert_eq!(
                decode_row(read.encoded).expect("row"),
                without_content(event)
            );
        }
    }

    #[test]
    fn the_writer_starts_over_after_each_batch() {
        let events = scenario_events();
        let mut writer = BatchWriter::new(-1);
        writer.push(7, &EventRow::from(&events[0]));
        let first = writer.finish(false);
        writer.push(8, &EventRow::from(&events[1]));
        let second = writer.finish(false);
        let read = |payload: &[u8]| -> Vec<i64> {
            let batch = Batch::parse(payload).expect("batch");
            assert_eq!((batch.partition, batch.caught_up), (-1, false));
            batch.map(|event| event.expect("event").offset).collect()
        };
        assert_eq!(read(&first), [7]);
        assert_eq!(read(&second), [8]);
        let empty = writer.finish(true);
        assert_eq!(Batch::parse(&empty).expect("batch").count(), 0);
    }

    #[test]
    fn a_row_alone_comes_back() {
        for event in scenario_events().iter().take(50) {
            let bytes = encode_row(&EventRow::from(event));
            assert_eq!(decode_row(&bytes).expect("row"), without_content(event));
        }
        assert_eq!(decode_row(&[1, 2, 3]).err(), Some(RelayError::Truncated));
        let mut longer = encode_row(&EventRow::from(&scenario_events()[0]));
        longer.push(0);
        assert_eq!(decode_row(&longer).err(), Some(RelayError::LeftOver));
    }

    #[test]
    fn what_is_not_a_batch_is_refused() {
        assert_eq!(
            Batch::parse(b"{\"json\":1}").err(),
            Some(RelayError::NotABatch)
        );
        assert_eq!(Batch::parse(b"WDR\x03").err(), Some(RelayError::Truncated));
        assert_eq!(
            Batch::parse(b"WDR\x02\x00\x00").err(),
            Some(RelayError::NotABatch)
        );
    }

    proptest! {
        /// Any truncation or corruption of a batch ends it with an error, never a panic, and
        /// never yields more events than were written.
        #[test]
        fn damaged_batches_fail_cleanly(
            cut in 0usize..4_000,
            flips in proptest::collection::vec((0usize..4_000, any::<u8>()), 0..4),
        ) {
            let mut payload = sample_batch().to_vec();
            for (at, value) in flips {
                let len = payload.len();
                payload[at % len] ^= value;
            }
            payload.truncate(cut.min(payload.len()));
            if let Ok(batch) = Batch::parse(&payload) {
                let mut events = 0;
                for event in batch.flatten() {
                    events += 1;
                    let _ = decode_row(event.encoded);
                }
                prop_assert!(events <= 20);
            }
        }
    }
}
