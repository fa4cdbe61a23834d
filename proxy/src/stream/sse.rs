//! An incremental Server-Sent Events parser: bytes in, in whatever pieces the network
//! delivers them, complete events' `data` out.
//!
//! Follows the SSE spec where upstreams differ: lines end in `\n`, `\r\n` or `\r`; an event
//! ends at a blank line; several `data:` lines join with `\n`; one space after the colon is
//! dropped; comments (`:keep-alive`) and other fields (`event:`, `id:`, `retry:`) are ignored.
//! Text is only decoded once a line is complete, so a UTF-8 character split across network
//! chunks survives.
//!
//! Upstreams are not trusted: each byte is looked at once (a chunk is scanned, never the
//! bytes kept from earlier chunks), and what is held between chunks — the unfinished line
//! plus the event's data so far — never exceeds `max_event_bytes`. Past it, [`SseParser::push`]
//! fails with [`EventTooLarge`] and the stream is to be ended.

/// An upstream event (or line) longer than the parser's bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the upstream sent a stream event larger than {limit} bytes")]
pub(crate) struct EventTooLarge {
    pub(crate) limit: usize,
}

/// Parser state between chunks.
#[derive(Debug)]
pub(crate) struct SseParser {
    /// The start of a line whose end has not arrived; never holds a line end.
    partial_line: Vec<u8>,
    /// The last chunk ended in `\r`: a `\n` starting the next one belongs to that line end.
    after_cr: bool,
    /// `data` of the event being read, lines joined with `\n`.
    data: String,
    /// Whether the event being read has a `data` line (an empty one counts).
    has_data: bool,
    max_event_bytes: usize,
}

/// Bound used where none is configured (tests, and re-parsing Warden's own output).
pub(crate) const DEFAULT_MAX_EVENT_BYTES: usize = 1024 * 1024;

impl Default for SseParser {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_EVENT_BYTES)
    }
}

impl SseParser {
    pub(crate) fn new(max_event_bytes: usize) -> Self {
        Self {
            partial_line: Vec::new(),
            after_cr: false,
            data: String::new(),
            has_data: false,
            max_event_bytes,
        }
    }

    /// Feeds `bytes`; returns the data of every event completed by them.
    pub(crate) fn push(&mut self, mut bytes: &[u8]) -> Result<Vec<String>, EventTooLarge> {
        let mut events = Vec::new();
        if self.after_cr {
            self.after_cr = false;
            if let Some(rest) = bytes.strip_prefix(b"\n") {
                bytes = rest;
            }
        }
        while let Some(end) = bytes.iter().position(|&b| b == b'\n' || b == b'\r') {
            let (line, terminator) = (&bytes[..end], bytes[end]);
            let mut next = end + 1;
            if terminator == b'\r' {
                match bytes.get(next) {
                    Some(b'\n') => next += 1,
                    None => self.after_cr = true,
                    Some(_) => {}
                }
            }
            if self.partial_line.is_empty() {
                self.take_line(line, &mut events)?;
            } else {
                self.hold(line)?;
                let whole = std::mem::take(&mut self.partial_line);
                self.take_line(&whole, &mut events)?;
                // Keep a small allocation for the next split line; let a large one go, so a
                // stream that once had a long line does not hold its size.
                if whole.capacity() <= 4096 {
                    self.partial_line = whole;
                    self.partial_line.clear();
                }
            }
            bytes = &bytes[next..];
        }
        self.hold(bytes)?;
        Ok(events)
    }

    /// Ends the stream: an event not closed by a blank line is still delivered.
    pub(crate) fn finish(&mut self) -> Result<Option<String>, EventTooLarge> {
        let mut events = Vec::new();
        if !self.partial_line.is_empty() {
            let line = std::mem::take(&mut self.partial_line);
            self.take_line(&line, &mut events)?;
        }
        self.take_line(b"", &mut events)?;
        Ok(events.pop())
    }

    /// Keeps the start of an unfinished line, within the bound.
    fn hold(&mut self, bytes: &[u8]) -> Result<(), EventTooLarge> {
        if bytes.is_empty() {
            return Ok(());
        }
        if self.data.len() + self.partial_line.len() + bytes.len() > self.max_event_bytes {
            return Err(self.too_large());
        }
        self.partial_line.extend_from_slice(bytes);
        Ok(())
    }

    fn too_large(&mut self) -> EventTooLarge {
        // Nothing more is parsed after a failure; let go of what was held.
        self.partial_line = Vec::new();
        self.data = String::new();
        EventTooLarge {
            limit: self.max_event_bytes,
        }
    }

    fn take_line(&mut self, line: &[u8], events: &mut Vec<String>) -> Result<(), EventTooLarge> {
        if line.is_empty() {
            if self.has_data {
                events.push(std::mem::take(&mut self.data));
                self.has_data = false;
            }
            return Ok(());
        }
        let Some(value) = line.strip_prefix(b"data") else {
            return Ok(());
        };
        let value = match value.strip_prefix(b":") {
            Some(value) => value.strip_prefix(b" ").unwrap_or(value),
            // A bare "data" line is a data line with an empty value.
            None if value.is_empty() => value,
            None => return Ok(()),
        };
        let separator = usize::from(self.has_data);
        if self.data.len() + separator + value.len() > self.max_event_bytes {
            return Err(self.too_large());
        }
        if self.has_data {
            self.data.push('\n');
        }
        self.data.push_str(&String::from_utf8_lossy(value));
        self.has_data = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn parse_all(chunks: &[&[u8]]) -> Vec<String> {
        let mut parser = SseParser::default();
        let mut events: Vec<String> = chunks
            .iter()
            .flat_map(|c| parser.push(c).expect("within bounds"))
            .collect();
        events.extend(parser.finish().expect("within bounds"));
        events
    }

    #[test]
    fn parses_tgi_and_openai_streams_with_comments_and_crlf() {
        let stream = b": keep-alive\n\ndata: {\"a\":1}\n\nevent: x\r\ndata:{\"b\":2}\r\n\r\ndata: [DONE]\n\n";
        assert_eq!(parse_all(&[stream]), ["{\"a\":1}", "{\"b\":2}", "[DONE]"]);
    }

    #[test]
    fn joins_multi_line_data_and_delivers_an_unterminated_last_event() {
        assert_eq!(
            parse_all(&[b"data: one\ndata: two\n\ndata: tail"]),
            ["one\ntwo", "tail"]
        );
        assert_eq!(parse_all(&[b"data\n\n"]), [""]);
    }

    #[test]
    fn cr_split_from_lf_across_chunks_is_one_line_end() {
        assert_eq!(parse_all(&[b"data: x\r", b"\n\r", b"\n"]), ["x"]);
        assert_eq!(parse_all(&[b"data: x\r", b"\r"]), ["x"]);
    }

    #[test]
    fn a_line_or_event_past_the_bound_fails_and_releases_what_it_held() {
        let mut parser = SseParser::new(100);
        assert!(parser.push(b"data: ").expect("fine").is_empty());
        let endless = vec![b'x'; 60];
        assert!(parser.push(&endless).is_ok());
        assert_eq!(parser.push(&endless), Err(EventTooLarge { limit: 100 }));
        assert_eq!(parser.partial_line.capacity(), 0);

        // Many short data lines add up to one event too large.
        let mut parser = SseParser::new(100);
        let line = format!("data: {}\n", "y".repeat(30));
        assert!(parser.push(line.as_bytes()).is_ok());
        assert!(parser.push(line.as_bytes()).is_ok());
        assert!(parser.push(line.as_bytes()).is_ok());
        assert!(parser.push(line.as_bytes()).is_err());

        // Events under the bound pass, however many.
        let mut parser = SseParser::new(100);
        for _ in 0..1000 {
            assert_eq!(parser.push(line.as_bytes()).expect("fine").len(), 0);
            assert_eq!(parser.push(b"\n").expect("fine").len(), 1);
        }
    }

    #[test]
    fn a_long_line_in_small_pieces_is_read_in_linear_time() {
        // 8 MiB in 64-byte pieces: a rescan per piece would be ~10^12 steps.
        let mut parser = SseParser::new(16 * 1024 * 1024);
        assert!(parser.push(b"data: ").expect("fine").is_empty());
        let piece = [b'z'; 64];
        for _ in 0..(8 * 1024 * 1024 / 64) {
            assert!(parser.push(&piece).expect("fine").is_empty());
        }
        let events = parser.push(b"\n\n").expect("fine");
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].len(), 8 * 1024 * 1024);
    }

    proptest! {
        /// Whatever the chunk boundaries, the same events come out, multi-byte text intact.
        #[test]
        fn chunk_boundaries_never_change_or_lose_events(
            texts in proptest::collection::vec("[a-zé日本 {}\":,]{0,12}", 1..8),
            line_end in prop_oneof![Just("\n"), Just("\r\n"), Just("\r")],
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..10),
        ) {
            let mut stream = String::new();
            for text in &texts {
                stream.push_str(&format!(": comment{line_end}data: {text}{line_end}{line_end}"));
            }
            let bytes = stream.as_bytes();
            let mut positions: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
            positions.sort_unstable();
            let mut chunks = Vec::new();
            let mut previous = 0;
            for position in positions {
                chunks.push(&bytes[previous..position]);
                previous = position;
            }
            chunks.push(&bytes[previous..]);
            prop_assert_eq!(parse_all(&chunks), texts);
        }

        /// Arbitrary bytes in arbitrary pieces: no panic, and nothing held past the bound.
        #[test]
        fn arbitrary_input_never_panics_or_outgrows_the_bound(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..16),
            limit in 1usize..128,
        ) {
            let mut parser = SseParser::new(limit);
            for chunk in &chunks {
                match parser.push(chunk) {
                    Ok(events) => {
                        for event in events {
                            prop_assert!(event.len() <= limit * 3, "lossy decoding at most triples");
                        }
                        prop_assert!(parser.partial_line.len() + parser.data.len() <= limit * 3);
                    }
                    Err(_) => break,
                }
            }
        }
    }
}
