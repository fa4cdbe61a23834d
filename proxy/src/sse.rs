//! An incremental Server-Sent Events parser: bytes in, in whatever pieces the network
//! delivers them, complete events' `data` out.
//!
//! Follows the SSE spec where upstreams differ: lines end in `\n`, `\r\n` or `\r`; an event
//! ends at a blank line; several `data:` lines join with `\n`; one space after the colon is
//! dropped; comments (`:keep-alive`) and other fields (`event:`, `id:`, `retry:`) are ignored.
//! Text is only decoded once a line is complete, so a UTF-8 character split across network
//! chunks survives.

/// Parser state between chunks.
#[derive(Debug, Default)]
pub(crate) struct SseParser {
    /// Bytes not yet forming a complete line.
    pending: Vec<u8>,
    /// `data` lines of the event being read.
    data_lines: Vec<String>,
}

impl SseParser {
    /// Feeds `bytes`; returns the data of every event completed by them.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.pending.extend_from_slice(bytes);
        let mut events = Vec::new();
        let mut start = 0;
        let mut index = 0;
        while index < self.pending.len() {
            let byte = self.pending[index];
            if byte == b'\n' || byte == b'\r' {
                // A trailing '\r' may be the first half of "\r\n": wait for the next byte.
                if byte == b'\r' && index + 1 == self.pending.len() {
                    break;
                }
                let line = String::from_utf8_lossy(&self.pending[start..index]).into_owned();
                self.take_line(&line, &mut events);
                if byte == b'\r' && self.pending[index + 1] == b'\n' {
                    index += 1;
                }
                start = index + 1;
            }
            index += 1;
        }
        self.pending.drain(..start);
        events
    }

    /// Ends the stream: an event not closed by a blank line is still delivered.
    pub(crate) fn finish(&mut self) -> Option<String> {
        let mut events = Vec::new();
        if !self.pending.is_empty() {
            let line = String::from_utf8_lossy(&std::mem::take(&mut self.pending)).into_owned();
            let line = line.strip_suffix('\r').unwrap_or(&line).to_owned();
            self.take_line(&line, &mut events);
        }
        self.take_line("", &mut events);
        events.pop()
    }

    fn take_line(&mut self, line: &str, events: &mut Vec<String>) {
        if line.is_empty() {
            if !self.data_lines.is_empty() {
                events.push(self.data_lines.join("\n"));
                self.data_lines.clear();
            }
            return;
        }
        if let Some(value) = line.strip_prefix("data") {
            match value.strip_prefix(':') {
                Some(value) => {
                    let value = value.strip_prefix(' ').unwrap_or(value);
                    self.data_lines.push(value.to_owned());
                }
                // A bare "data" line is a data line with an empty value.
                None if value.is_empty() => self.data_lines.push(String::new()),
                None => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn parse_all(chunks: &[&[u8]]) -> Vec<String> {
        let mut parser = SseParser::default();
        let mut events: Vec<String> = chunks.iter().flat_map(|c| parser.push(c)).collect();
        events.extend(parser.finish());
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
    }

    #[test]
    fn cr_split_from_lf_across_chunks_is_one_line_end() {
        assert_eq!(parse_all(&[b"data: x\r", b"\n\r", b"\n"]), ["x"]);
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
    }
}
