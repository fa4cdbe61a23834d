//! The fast path of [`EventRow::from_json`]: a reader of events in the exact form
//! [`AuditEvent::to_json`](crate::AuditEvent::to_json) writes them — fields in declaration
//! order, no whitespace, `null` for absent parts — which is every event a Warden proxy
//! publishes.
//!
//! serde_json took 1.5 µs per event (BENCHMARKS.md), the largest share of a detect worker's
//! time: it matches every key by name, goes through a visitor per field and parses the
//! timestamp with a general RFC 3339 parser. Here each key is a literal compared in place
//! and each value is read by the one rule its field has.
//!
//! Anything else — another field order, whitespace, unknown fields, a timestamp with an
//! offset — makes [`decode`] return `None`, and the caller decodes with serde_json, so both
//! accept exactly the same payloads. The property tests hold the fast path to the event it
//! was written from, and to serde_json on damaged payloads. A field added to the event makes
//! every payload take the slow path until it is added here too; a test fails until then.

use std::borrow::Cow;

use chrono::{DateTime, NaiveDate, Utc};
use uuid::Uuid;

use super::{ClientRow, DecisionRow, EventRow, RequestRow, ResponseRow, RouteRow, Text};
use crate::event::{EventId, EventKind};

/// The event in `text`, if `text` is in the canonical form.
pub(super) fn decode(text: &str) -> Option<EventRow<'_>> {
    let mut at = Cursor { text, at: 0 };
    at.literal(r#"{"event_id":"#)?;
    let event_id = EventId(at.uuid()?);
    at.literal(r#","schema_version":"#)?;
    let schema_version = u32::try_from(at.unsigned()?).ok()?;
    at.literal(r#","kind":"#)?;
    let kind = at.kind()?;
    at.literal(r#","ts":"#)?;
    let ts = at.timestamp()?;
    at.literal(r#","request_id":"#)?;
    let request_id = at.text()?;
    at.literal(r#","proxy_id":"#)?;
    let proxy_id = at.text()?;
    at.literal(r#","environment":"#)?;
    let environment = at.optional(Cursor::text)?;
    at.literal(r#","client":"#)?;
    let client = at.client()?;
    at.literal(r#","route":"#)?;
    let route = at.optional(Cursor::route)?;
    at.literal(r#","request":"#)?;
    let request = at.optional(Cursor::request)?;
    at.literal(r#","response":"#)?;
    let response = at.optional(Cursor::response)?;
    at.literal(r#","decision":"#)?;
    let decision = at.optional(Cursor::decision)?;
    at.literal("}")?;
    at.end()?;
    Some(EventRow {
        event_id,
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
        // Written only on summaries, which therefore take the serde path.
        occurrences: None,
    })
}

/// A position in the payload. Every method reads one value and moves past it, or returns
/// `None` (not canonical: the caller gives up).
struct Cursor<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Cursor<'a> {
    fn rest(&self) -> &'a [u8] {
        &self.text.as_bytes()[self.at..]
    }

    fn literal(&mut self, expected: &str) -> Option<()> {
        self.rest().starts_with(expected.as_bytes()).then(|| {
            self.at += expected.len();
        })
    }

    fn end(&self) -> Option<()> {
        (self.at == self.text.len()).then_some(())
    }

    /// `null` (`Some(None)`), or a value read by `read`.
    fn optional<T>(&mut self, read: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
        if self.literal("null").is_some() {
            Some(None)
        } else {
            read(self).map(Some)
        }
    }

    /// A string: borrowed when it has no escapes, else unescaped by serde_json.
    fn text(&mut self) -> Option<Text<'a>> {
        self.literal("\"")?;
        let start = self.at;
        let bytes = self.text.as_bytes();
        let mut end = start;
        let mut escaped = false;
        loop {
            end += bytes.get(end..).map_or(0, plain_run);
            match *bytes.get(end)? {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    end += 2;
                }
                // Control characters must be escaped in JSON: serde_json reports the error.
                0..0x20 => return None,
                _ => end += 1,
            }
        }
        self.at = end + 1;
        if escaped {
            let quoted = self.text.get(start - 1..=end)?;
            serde_json::from_str::<String>(quoted)
                .ok()
                .map(|text| Text(Cow::Owned(text)))
        } else {
            // Quotes are ASCII, so both ends are character boundaries.
            self.text.get(start..end).map(Text::from)
        }
    }

    fn uuid(&mut self) -> Option<Uuid> {
        match self.text()?.0 {
            Cow::Borrowed(text) => Uuid::try_parse(text).ok(),
            Cow::Owned(_) => None,
        }
    }

    fn kind(&mut self) -> Option<EventKind> {
        let text = self.text()?;
        [
            EventKind::Request,
            EventKind::Response,
            EventKind::PolicyDecision,
            EventKind::Action,
        ]
        .into_iter()
        .find(|kind| kind.as_str() == &*text)
    }

    /// A UTC timestamp as chrono writes it: `YYYY-MM-DDTHH:MM:SS`, then a fraction of one
    /// to nine digits or none, then `Z`.
    fn timestamp(&mut self) -> Option<DateTime<Utc>> {
        self.literal("\"")?;
        let bytes = self.rest();
        let digits = |range: std::ops::Range<usize>| -> Option<u32> {
            bytes.get(range)?.iter().try_fold(0_u32, |value, &byte| {
                byte.is_ascii_digit()
                    .then(|| value * 10 + u32::from(byte - b'0'))
            })
        };
        let separators = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
        if separators
            .iter()
            .any(|&(at, byte)| bytes.get(at) != Some(&byte))
        {
            return None;
        }
        let year = i32::try_from(digits(0..4)?).ok()?;
        let (month, day) = (digits(5..7)?, digits(8..10)?);
        let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
        let mut length = 19;
        let mut nanos = 0;
        if bytes.get(length) == Some(&b'.') {
            let fraction = bytes[length + 1..]
                .iter()
                .take_while(|byte| byte.is_ascii_digit())
                .count();
            if !(1..=9).contains(&fraction) {
                return None;
            }
            nanos = digits(length + 1..length + 1 + fraction)? * 10_u32.pow(9 - fraction as u32);
            length += 1 + fraction;
        }
        if bytes.get(length..length + 2) != Some(b"Z\"") {
            return None;
        }
        self.at += length + 2;
        // A leap second (second 60) is left to chrono's own parser.
        let time = NaiveDate::from_ymd_opt(year, month, day)?
            .and_hms_nano_opt(hour, minute, second, nanos)?;
        (second < 60).then(|| time.and_utc())
    }

    /// A JSON number that is a non-negative integer without leading zeros.
    fn unsigned(&mut self) -> Option<u64> {
        let bytes = self.rest();
        let length = bytes
            .iter()
            .take_while(|byte| byte.is_ascii_digit())
            .count();
        if length == 0 || (length > 1 && bytes[0] == b'0') {
            return None;
        }
        if matches!(bytes.get(length), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        let value = bytes[..length].iter().try_fold(0_u64, |value, &byte| {
            value.checked_mul(10)?.checked_add(u64::from(byte - b'0'))
        })?;
        self.at += length;
        Some(value)
    }

    /// A JSON number read as `f64` (correctly rounded, as `f64::from_str` does).
    fn float(&mut self) -> Option<f64> {
        let bytes = self.rest();
        let length = json_number_length(bytes)?;
        let value: f64 = self.text.get(self.at..self.at + length)?.parse().ok()?;
        // serde_json refuses a number out of `f64`'s range: left to it to say so.
        if !value.is_finite() {
            return None;
        }
        self.at += length;
        Some(value)
    }

    fn boolean(&mut self) -> Option<bool> {
        if self.literal("true").is_some() {
            Some(true)
        } else {
            self.literal("false").map(|()| false)
        }
    }

    fn client(&mut self) -> Option<ClientRow<'a>> {
        self.literal(r#"{"ip":"#)?;
        let ip = self.optional(Self::text)?;
        self.literal(r#","country":"#)?;
        let country = self.optional(Self::text)?;
        self.literal(r#","token_id":"#)?;
        let token_id = self.optional(Self::text)?;
        self.literal(r#","name":"#)?;
        let name = self.optional(Self::text)?;
        self.literal(r#","user_agent":"#)?;
        let user_agent = self.optional(Self::text)?;
        self.literal("}")?;
        Some(ClientRow {
            ip,
            country,
            token_id,
            name,
            user_agent,
        })
    }

    fn route(&mut self) -> Option<RouteRow<'a>> {
        self.literal(r#"{"endpoint":"#)?;
        let endpoint = self.text()?;
        self.literal(r#","target_id":"#)?;
        let target_id = self.optional(Self::text)?;
        self.literal(r#","model":"#)?;
        let model = self.optional(Self::text)?;
        self.literal(r#","stream":"#)?;
        let stream = self.boolean()?;
        self.literal("}")?;
        Some(RouteRow {
            endpoint,
            target_id,
            model,
            stream,
        })
    }

    fn request(&mut self) -> Option<RequestRow<'a>> {
        self.literal(r#"{"bytes":"#)?;
        let bytes = self.unsigned()?;
        self.literal(r#","prompt_hash":"#)?;
        let prompt_hash = self.optional(Self::text)?;
        self.literal(r#","input_tokens":"#)?;
        let input_tokens = self.optional(Self::unsigned)?;
        self.literal(r#","content":"#)?;
        let content = self.optional(Self::text)?;
        self.literal("}")?;
        Some(RequestRow {
            bytes,
            prompt_hash,
            input_tokens,
            content,
        })
    }

    fn response(&mut self) -> Option<ResponseRow<'a>> {
        self.literal(r#"{"status":"#)?;
        let status = u16::try_from(self.unsigned()?).ok()?;
        self.literal(r#","latency_ms":"#)?;
        let latency_ms = self.optional(Self::float)?;
        self.literal(r#","ttft_ms":"#)?;
        let ttft_ms = self.optional(Self::float)?;
        self.literal(r#","output_tokens":"#)?;
        let output_tokens = self.optional(Self::unsigned)?;
        self.literal(r#","finish_reason":"#)?;
        let finish_reason = self.optional(Self::text)?;
        self.literal(r#","cost_usd":"#)?;
        let cost_usd = self.optional(Self::float)?;
        self.literal(r#","error_type":"#)?;
        let error_type = self.optional(Self::text)?;
        self.literal(r#","content":"#)?;
        let content = self.optional(Self::text)?;
        self.literal("}")?;
        Some(ResponseRow {
            status,
            latency_ms,
            ttft_ms,
            output_tokens,
            finish_reason,
            cost_usd,
            error_type,
            content,
            // Written only when the call went to a fallback: such payloads take serde's path.
            attempts: Vec::new(),
        })
    }

    fn decision(&mut self) -> Option<DecisionRow<'a>> {
        self.literal(r#"{"policy":"#)?;
        let policy = self.text()?;
        self.literal(r#","outcome":"#)?;
        let outcome = self.text()?;
        self.literal(r#","reason":"#)?;
        let reason = self.optional(Self::text)?;
        self.literal("}")?;
        Some(DecisionRow {
            policy,
            outcome,
            reason,
        })
    }
}

/// The length of the JSON number `bytes` starts with: `-? (0 | [1-9][0-9]*) (. [0-9]+)?
/// ([eE] [+-]? [0-9]+)?`.
/// How many bytes at the start of `bytes` are plain string content: up to the first quote,
/// backslash or control character (or the end). Eight bytes at a time: strings are most of
/// an event, and a byte at a time was the largest part of reading one.
fn plain_run(bytes: &[u8]) -> usize {
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    const HIGH: u64 = u64::from_le_bytes([0x80; 8]);
    /// The high bit of each byte of `word` below `limit` (at most 0x80). A byte can be
    /// marked wrongly only above one marked rightly, so the lowest mark is exact.
    const fn below(word: u64, limit: u8) -> u64 {
        word.wrapping_sub(ONES * limit as u64) & !word & HIGH
    }
    let mut chunks = bytes.chunks_exact(8);
    let mut plain = 0;
    for chunk in &mut chunks {
        let Ok(chunk) = <[u8; 8]>::try_from(chunk) else {
            break;
        };
        let word = u64::from_le_bytes(chunk);
        let marks = below(word ^ (ONES * u64::from(b'"')), 1)
            | below(word ^ (ONES * u64::from(b'\\')), 1)
            | below(word, 0x20);
        if marks != 0 {
            return plain + (marks.trailing_zeros() / 8) as usize;
        }
        plain += 8;
    }
    let rest = chunks.remainder();
    plain
        + rest
            .iter()
            .position(|&byte| byte == b'"' || byte == b'\\' || byte < 0x20)
            .unwrap_or(rest.len())
}

fn json_number_length(bytes: &[u8]) -> Option<usize> {
    let digits_from = |at: usize| {
        bytes[at.min(bytes.len())..]
            .iter()
            .take_while(|byte| byte.is_ascii_digit())
            .count()
    };
    let mut at = usize::from(bytes.first() == Some(&b'-'));
    let integer = digits_from(at);
    if integer == 0 || (integer > 1 && bytes[at] == b'0') {
        return None;
    }
    at += integer;
    if bytes.get(at) == Some(&b'.') {
        let fraction = digits_from(at + 1);
        if fraction == 0 {
            return None;
        }
        at += 1 + fraction;
    }
    if matches!(bytes.get(at), Some(b'e' | b'E')) {
        at += 1;
        if matches!(bytes.get(at), Some(b'+' | b'-')) {
            at += 1;
        }
        let exponent = digits_from(at);
        if exponent == 0 {
            return None;
        }
        at += exponent;
    }
    Some(at)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::AuditEvent;
    use crate::event::{
        ClientInfo, DecisionInfo, RequestId, RequestInfo, ResponseInfo, RouteInfo, TokenId,
    };

    proptest! {
        #[test]
        fn plain_runs_end_at_the_first_quote_backslash_or_control_character(
            bytes in proptest::collection::vec(
                prop_oneof![Just(b'"'), Just(b'\\'), 0u8..0x20, 0x20u8..=0xff],
                0..40,
            ),
        ) {
            let expected = bytes
                .iter()
                .position(|&byte| byte == b'"' || byte == b'\\' || byte < 0x20)
                .unwrap_or(bytes.len());
            prop_assert_eq!(plain_run(&bytes), expected);
        }
    }

    /// Strings with what JSON must escape: quotes, backslashes, control characters, and
    /// characters beyond ASCII.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z0-9_./-]{0,12}",
            proptest::collection::vec(
                prop_oneof![
                    Just('"'),
                    Just('\\'),
                    Just('\n'),
                    Just('\u{1}'),
                    Just('é'),
                    Just('😀'),
                    Just('a')
                ],
                0..8
            )
            .prop_map(|chars| chars.into_iter().collect()),
        ]
    }

    fn finite() -> impl Strategy<Value = f64> {
        prop_oneof![
            any::<f64>().prop_filter("finite", |value| value.is_finite()),
            0.0..10_000.0,
            Just(0.000_000_2),
        ]
    }

    prop_compose! {
        fn event()(
            kind in prop_oneof![
                Just(EventKind::Request), Just(EventKind::Response),
                Just(EventKind::PolicyDecision), Just(EventKind::Action)
            ],
            seconds in -62_000_000_000_i64..250_000_000_000,
            nanos in prop_oneof![Just(0_u32), 0..1_000_000_000_u32, (0..1_000_000_u32).prop_map(|us| us * 1_000)],
            strings in proptest::collection::vec(text(), 8),
            optional in proptest::collection::vec(proptest::option::of(text()), 14),
            numbers in proptest::collection::vec(proptest::option::of(any::<u64>()), 2),
            floats in proptest::collection::vec(proptest::option::of(finite()), 3),
            parts in proptest::collection::vec(any::<bool>(), 4),
            status in any::<u16>(),
            bytes in any::<u64>(),
            version in any::<u32>(),
        ) -> AuditEvent {
            let mut event = AuditEvent::new(kind, RequestId(strings[0].clone()), strings[1].clone());
            event.schema_version = version;
            event.ts = DateTime::from_timestamp(seconds, nanos).unwrap_or_default();
            event.environment = optional[0].clone();
            event.client = ClientInfo {
                ip: optional[1].clone(),
                country: optional[2].clone(),
                token_id: optional[3].clone().map(TokenId),
                name: optional[4].clone(),
                user_agent: optional[5].clone(),
            };
            event.route = parts[0].then(|| RouteInfo {
                endpoint: strings[2].clone(),
                target_id: optional[6].clone(),
                model: optional[7].clone(),
                stream: parts[3],
            });
            event.request = parts[1].then(|| RequestInfo {
                bytes,
                prompt_hash: optional[8].clone(),
                input_tokens: numbers[0],
                content: optional[9].clone(),
            });
            event.response = parts[2].then(|| ResponseInfo {
                status,
                latency_ms: floats[0],
                ttft_ms: floats[1],
                output_tokens: numbers[1],
                finish_reason: optional[10].clone(),
                cost_usd: floats[2],
                error_type: optional[11].clone(),
                content: optional[12].clone(),
                attempts: Vec::new(),
            });
            event.decision = parts[3].then(|| DecisionInfo {
                policy: strings[3].clone(),
                outcome: strings[4].clone(),
                reason: optional[13].clone(),
            });
            event
        }
    }

    fn serde_row(text: &str) -> Option<EventRow<'_>> {
        serde_json::from_str(text).ok()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        #[test]
        fn every_written_event_takes_the_fast_path_and_reads_back_the_same(event in event()) {
            let payload = String::from_utf8(event.to_json()).expect("json is utf-8");
            prop_assert_eq!(decode(&payload), Some(EventRow::from(&event)));
        }

        #[test]
        fn a_damaged_payload_is_read_as_serde_json_reads_it_or_left_to_it(
            event in event(),
            cut in any::<prop::sample::Index>(),
            replacement in prop_oneof![
                Just(None), Just(Some(b' ')), Just(Some(b'"')), Just(Some(b'\\')),
                Just(Some(b'0')), Just(Some(b'-')), Just(Some(b'e')), Just(Some(b'.')),
                Just(Some(b'}')), Just(Some(b'n')), Just(Some(b'1')), Just(Some(b':')),
            ],
        ) {
            let mut payload = event.to_json();
            let at = cut.index(payload.len());
            match replacement {
                None => payload.truncate(at),
                Some(byte) => payload[at] = byte,
            }
            if let Ok(text) = std::str::from_utf8(&payload)
                && let Some(fast) = decode(text)
            {
                prop_assert_eq!(Some(fast), serde_row(text));
            }
        }
    }

    #[test]
    fn other_layouts_are_left_to_serde_json() {
        let event = AuditEvent::new(EventKind::Request, RequestId("r".into()), "p");
        let canonical = String::from_utf8(event.to_json()).expect("utf-8");
        assert!(decode(&canonical).is_some());
        let pretty = serde_json::to_string_pretty(&event).expect("json");
        let with_offset = canonical.replacen('Z', "+00:00", 1);
        let with_unknown_field = canonical.replacen('{', r#"{"future":1,"#, 1);
        let trailing_space = format!("{canonical} ");
        for other in [pretty, with_offset, with_unknown_field, trailing_space] {
            assert!(decode(&other).is_none(), "{other}");
            assert!(serde_row(&other).is_some(), "{other}");
        }
    }

    #[test]
    fn numbers_follow_json_grammar() {
        for (number, length) in [
            ("0", Some(1)),
            ("-0.5e+3,", Some(7)),
            ("12.25}", Some(5)),
            ("1E9", Some(3)),
            ("01", None),
            ("1.", None),
            (".5", None),
            ("1e", None),
            ("-", None),
        ] {
            assert_eq!(json_number_length(number.as_bytes()), length, "{number}");
        }
    }
}
