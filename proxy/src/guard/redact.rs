//! Redaction with typed placeholders, for whole texts and for streamed answers.
//!
//! [`Placeholders`] lives for one call: the same value gets the same placeholder in the
//! request and in the answer (`[EMAIL_ADDRESS_1]` each time), a new value the next number,
//! and it can put the values back into what the upstream wrote (the caller's own data, which
//! the upstream never saw). It keeps the values in memory for that call only; what leaves it
//! for logs and events is the entity types and counts.
//!
//! [`StreamRedactor`] redacts an answer as it streams, never sending a byte of a value before
//! the whole value has been seen: it holds back only the tail that could still be part of one
//! (the word being written, and the words before it that a multi-word value — a grouped card
//! number, an IBAN, a name — could span; a private key block until its end), so text that
//! cannot be PII goes out at once, and what is held is bounded.

use std::collections::{BTreeMap, HashMap};

use super::pii::{Entity, Finding, LONGEST_VALUE, PRIVATE_KEY_START, PiiDetector, is_given_name};

/// How much already-sent text a stream keeps to judge what comes next (a name after "Dr. ",
/// a number's boundary): never re-sent, only looked at.
const CONTEXT: usize = 64;
/// The most of a private key block a stream holds before it sends the block's placeholder
/// and drops the rest of it.
const MAX_HELD: usize = 16 * 1024;

/// One call's placeholders.
#[derive(Debug, Default, Clone)]
pub struct Placeholders {
    by_value: HashMap<(Entity, String), usize>,
    /// Per entity: the values in placeholder order (index 0 is `_1`).
    values: BTreeMap<Entity, Vec<String>>,
    /// How many values were replaced, per entity (every occurrence counts).
    pub counts: BTreeMap<Entity, usize>,
}

impl Placeholders {
    /// The placeholder of `value`, numbered the first time it is seen.
    pub fn placeholder(&mut self, entity: Entity, value: &str) -> String {
        *self.counts.entry(entity).or_default() += 1;
        let key = (entity, value.to_owned());
        let number = match self.by_value.get(&key) {
            Some(number) => *number,
            None => {
                let values = self.values.entry(entity).or_default();
                values.push(value.to_owned());
                let number = values.len();
                self.by_value.insert(key, number);
                number
            }
        };
        format!("[{entity}_{number}]")
    }

    /// `text` with `findings` (sorted, not overlapping, from `text`) replaced.
    pub fn replace(&mut self, text: &str, findings: &[Finding]) -> String {
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for finding in findings {
            out.push_str(&text[at..finding.start]);
            out.push_str(&self.placeholder(finding.entity, &text[finding.start..finding.end]));
            at = finding.end;
        }
        out.push_str(&text[at..]);
        out
    }

    /// `text` with every entity `detector` finds replaced.
    pub fn redact(&mut self, detector: &PiiDetector, text: &str) -> String {
        let findings = detector.find(text);
        if findings.is_empty() {
            return text.to_owned();
        }
        self.replace(text, &findings)
    }

    /// `text` with this call's placeholders put back to their values.
    pub fn restore(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(open) = rest.find('[') {
            out.push_str(&rest[..open]);
            let candidate = &rest[open..];
            match self.parse_placeholder(candidate) {
                Some((value, length)) => {
                    out.push_str(value);
                    rest = &candidate[length..];
                }
                None => {
                    out.push('[');
                    rest = &candidate[1..];
                }
            }
        }
        out.push_str(rest);
        out
    }

    /// The value of the placeholder `text` starts with, and the placeholder's length.
    fn parse_placeholder(&self, text: &str) -> Option<(&str, usize)> {
        let window = &text[..floor_char(text, text.len().min(48))];
        let close = window.find(']')?;
        let inner = &text[1..close];
        let (name, number) = inner.rsplit_once('_')?;
        let entity = Entity::parse(name)?;
        let number: usize = number.parse().ok()?;
        let value = self.values.get(&entity)?.get(number.checked_sub(1)?)?;
        Some((value.as_str(), close + 1))
    }

    /// The entity types and counts, for a decision (never the values).
    pub fn summary(&self) -> String {
        self.counts
            .iter()
            .map(|(entity, count)| format!("{entity}:{count}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }
}

/// The longest placeholder a restorer holds back while waiting for its `]`.
const LONGEST_PLACEHOLDER: usize = 48;

/// Puts a call's values back into a streamed answer where it repeats their placeholders,
/// holding back only a `[` not yet closed (a placeholder split across chunks).
#[derive(Debug)]
pub struct PlaceholderRestorer {
    /// The request's placeholders: only the caller's own values are put back (a value the
    /// answer itself held stays redacted).
    known: Placeholders,
    held: String,
}

impl PlaceholderRestorer {
    pub fn new(known: Placeholders) -> Self {
        Self {
            known,
            held: String::new(),
        }
    }

    /// `text` with the caller's values put back; a whole answer's.
    pub fn restore(&self, text: &str) -> String {
        self.known.restore(text)
    }

    /// The next piece of the answer; returns what may go to the caller now.
    pub fn push(&mut self, text: &str) -> String {
        self.held.push_str(text);
        let cut = match self.held.rfind('[') {
            Some(open)
                if self.held.len() - open < LONGEST_PLACEHOLDER
                    && self.held[open + 1..]
                        .bytes()
                        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_') =>
            {
                open
            }
            _ => self.held.len(),
        };
        let ready = self.known.restore(&self.held[..cut]);
        self.held.drain(..cut);
        ready
    }

    /// The end of the answer: what was held.
    pub fn finish(&mut self) -> String {
        let held = std::mem::take(&mut self.held);
        self.known.restore(&held)
    }
}

/// An answer's text, redacted as it streams.
#[derive(Debug)]
pub struct StreamRedactor {
    detector: PiiDetector,
    /// Received, not yet sent.
    pending: String,
    /// The last few bytes sent (as received), to judge boundaries and name contexts.
    context: String,
    /// Inside a private key block whose placeholder was sent: dropped until its end.
    swallowing_key: bool,
}

impl StreamRedactor {
    pub fn new(detector: PiiDetector) -> Self {
        Self {
            detector,
            pending: String::new(),
            context: String::new(),
            swallowing_key: false,
        }
    }

    /// Bytes received and not sent yet.
    pub fn held(&self) -> usize {
        self.pending.len()
    }

    /// Takes the next piece of the answer; returns what may be sent now (redacted).
    pub fn push(&mut self, delta: &str, placeholders: &mut Placeholders) -> String {
        let mut delta = delta;
        if self.swallowing_key {
            match find_key_end(delta) {
                Some(end) => {
                    self.swallowing_key = false;
                    delta = &delta[end..];
                }
                None => return String::new(),
            }
        }
        self.pending.push_str(delta);
        let mut boundary = hold_start(&self.pending);
        if let Some(key_start) = open_private_key(&self.pending) {
            boundary = boundary.min(key_start);
            if self.pending.len() - key_start > MAX_HELD {
                // A key block too long to hold: its placeholder now, the rest dropped.
                let before = self.pending[..key_start].to_owned();
                let mut out = self.emit_until(&before, before.len(), placeholders);
                out.push_str(&placeholders.placeholder(Entity::Secret, "private key block"));
                let tail = self.pending[key_start..].to_owned();
                self.pending.clear();
                self.context.clear();
                if let Some(end) = find_key_end(&tail) {
                    self.pending.push_str(&tail[end..]);
                } else {
                    self.swallowing_key = true;
                }
                return out;
            }
        }
        let pending = std::mem::take(&mut self.pending);
        self.emit_until(&pending, boundary, placeholders)
    }

    /// The end of the answer: everything held, redacted.
    pub fn finish(&mut self, placeholders: &mut Placeholders) -> String {
        let pending = std::mem::take(&mut self.pending);
        if self.swallowing_key {
            self.swallowing_key = false;
            return String::new();
        }
        self.emit_until(&pending, pending.len(), placeholders)
    }

    /// Sends `pending[..boundary]` (redacted), moving the boundary back to the start of a
    /// value it would cut; keeps the rest.
    fn emit_until(
        &mut self,
        pending: &str,
        boundary: usize,
        placeholders: &mut Placeholders,
    ) -> String {
        let offset = self.context.len();
        let mut window = String::with_capacity(offset + pending.len());
        window.push_str(&self.context);
        window.push_str(pending);
        let mut boundary = boundary;
        let mut findings = Vec::new();
        for finding in self.detector.find(&window) {
            if finding.end <= offset {
                continue;
            }
            // A value that began in text already sent: its unsent part is still redacted.
            let start = finding.start.max(offset) - offset;
            let end = finding.end - offset;
            if end <= boundary {
                findings.push(Finding {
                    entity: finding.entity,
                    start,
                    end,
                });
            } else if start < boundary {
                boundary = start;
            }
        }
        findings.retain(|finding| finding.end <= boundary);
        let sent = &pending[..boundary];
        let out = placeholders.replace(sent, &findings);
        self.pending.push_str(&pending[boundary..]);
        self.context.push_str(sent);
        if self.context.len() > CONTEXT {
            let cut = ceil_char(&self.context, self.context.len() - CONTEXT);
            self.context.drain(..cut);
        }
        out
    }
}

fn floor_char(text: &str, mut at: usize) -> usize {
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

fn ceil_char(text: &str, mut at: usize) -> usize {
    while !text.is_char_boundary(at) {
        at += 1;
    }
    at
}

/// Where an unfinished private key block starts, if the text holds one.
fn open_private_key(text: &str) -> Option<usize> {
    let start = text.rfind(PRIVATE_KEY_START)?;
    let rest = &text[start..];
    let header_end = rest
        .find("-----\n")
        .or_else(|| rest[11..].find("-----").map(|i| i + 11));
    // Only a private key's block is held; another PEM block (a certificate) is not PII.
    if let Some(end) = header_end
        && !rest[..end].contains("PRIVATE KEY")
    {
        return None;
    }
    (find_key_end(rest).is_none()).then_some(start)
}

/// The end of a private key block's END line in `text`, if there.
fn find_key_end(text: &str) -> Option<usize> {
    let end = text.find("-----END ")?;
    let marker = "PRIVATE KEY-----";
    let close = text[end..].find(marker)?;
    Some(end + close + marker.len())
}

/// Where the tail that could still be part of a value starts: the word being written, and
/// before it the words a multi-word value could span (number groups, an IBAN, capitalised
/// name words), at most [`LONGEST_VALUE`] back.
fn hold_start(text: &str) -> usize {
    let words = trailing_words(text);
    let Some(&(last_start, last_end)) = words.last() else {
        // Empty, or ending a line: no value goes on over a line break.
        return text.len();
    };
    let last_word = &text[last_start..last_end];
    // Followed by a space, the last word is complete: held only if a value could go on over
    // it (a number's next group, a surname after a given name or a title).
    if last_end < text.len() && !could_continue(last_word) {
        return text.len();
    }
    let kind = word_kind(last_word);
    let mut start = last_start;
    for &(word_start, word_end) in words.iter().rev().skip(1).take(6) {
        let gap = &text[word_end..start];
        if gap.len() > 2 {
            break;
        }
        let word = &text[word_start..word_end];
        let joins = match kind {
            WordKind::Number => word_kind(word) == WordKind::Number,
            WordKind::Capitalised => word_kind(word) == WordKind::Capitalised || is_title(word),
            WordKind::Other => false,
        };
        if !joins {
            break;
        }
        start = word_start;
    }
    start.max(ceil_char(text, text.len().saturating_sub(LONGEST_VALUE)))
}

/// Whether a complete word could be continued by the next one into a value: a number's
/// group, a given name (its surname may follow), a title.
fn could_continue(word: &str) -> bool {
    match word_kind(word) {
        WordKind::Number => true,
        WordKind::Capitalised => is_given_name(word.trim_end_matches([',', ';', ':'])),
        WordKind::Other => is_title(word),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WordKind {
    /// Digits with the separators numbers are written with (or an IBAN's groups).
    Number,
    /// A capitalised word (a name's part).
    Capitalised,
    Other,
}

fn word_kind(word: &str) -> WordKind {
    let trimmed = word.trim_end_matches([',', ';', ':']);
    if trimmed.bytes().any(|b| b.is_ascii_digit())
        && trimmed
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase() || b"+-().".contains(&b))
    {
        return WordKind::Number;
    }
    let mut chars = trimmed.chars();
    if chars.next().is_some_and(char::is_uppercase) && chars.all(|c| c.is_lowercase() || c == '-') {
        return WordKind::Capitalised;
    }
    WordKind::Other
}

/// Titles and words of the phrases that introduce a name.
fn is_title(word: &str) -> bool {
    matches!(
        word.trim_end_matches([',', ':', '.']),
        "Mr" | "Mrs"
            | "Ms"
            | "Mx"
            | "Dr"
            | "Prof"
            | "Sir"
            | "Madam"
            | "Herr"
            | "Frau"
            | "Mme"
            | "is"
            | "name"
            | "called"
            | "Name"
            | "Patient"
            | "patient"
    )
}

/// The byte ranges of the last words of `text` (at most 8), in order.
fn trailing_words(text: &str) -> Vec<(usize, usize)> {
    let mut words = Vec::new();
    let mut end = text.len();
    let bytes = text.as_bytes();
    while words.len() < 8 {
        // Skip spaces back to the end of a word.
        while end > 0 && (bytes[end - 1] == b' ' || bytes[end - 1] == b'\t') {
            end -= 1;
        }
        if end == 0 || bytes[end - 1] == b'\n' || bytes[end - 1] == b'\r' {
            break;
        }
        let mut start = end;
        while start > 0 && !matches!(bytes[start - 1], b' ' | b'\t' | b'\n' | b'\r') {
            start -= 1;
        }
        words.push((start, end));
        end = start;
    }
    words.reverse();
    words
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const SAMPLES: &[&str] = &[
        "Sure! Email jane.doe@example.com or call +44 20 7946 0958 before Friday.",
        "The card on file is 4111 1111 1111 1111, expiring 12/29.",
        "Transfer to DE89 3704 0044 0532 0130 00 today; SSN 123-45-6789 on the form.",
        "Ask Dr. Okonkwo, or Maria Garcia, who works from 203.0.113.7.",
        "Your key is hf_abcdefghijklmnopqrstuvwxyz0123456789 — rotate it.",
        "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\n-----END PRIVATE KEY-----\nthat was it",
        "Ünïcödé ✓ text with naïve café and jane@exämple.com? no: jane@example.org ✓",
        "No personal data here at all, just prose about rivers and mountains.",
    ];

    fn whole(text: &str) -> String {
        Placeholders::default().redact(&PiiDetector::default(), text)
    }

    fn streamed(chunks: &[&str]) -> String {
        let mut placeholders = Placeholders::default();
        let mut redactor = StreamRedactor::new(PiiDetector::default());
        let mut out = String::new();
        for chunk in chunks {
            out.push_str(&redactor.push(chunk, &mut placeholders));
        }
        out.push_str(&redactor.finish(&mut placeholders));
        out
    }

    /// `text` cut at `cuts` (byte offsets, moved to char boundaries).
    fn split<'t>(text: &'t str, cuts: &[usize]) -> Vec<&'t str> {
        let mut points: Vec<usize> = cuts
            .iter()
            .map(|cut| floor_char(text, cut % (text.len() + 1)))
            .collect();
        points.push(0);
        points.push(text.len());
        points.sort_unstable();
        points.dedup();
        points.windows(2).map(|w| &text[w[0]..w[1]]).collect()
    }

    #[test]
    fn placeholders_are_typed_numbered_and_stable_within_a_call() {
        let mut placeholders = Placeholders::default();
        let detector = PiiDetector::default();
        let first = placeholders.redact(&detector, "a@example.com, b@example.com, a@example.com");
        assert_eq!(
            first,
            "[EMAIL_ADDRESS_1], [EMAIL_ADDRESS_2], [EMAIL_ADDRESS_1]"
        );
        let again = placeholders.redact(&detector, "reply to b@example.com");
        assert_eq!(again, "reply to [EMAIL_ADDRESS_2]");
        assert_eq!(placeholders.summary(), "EMAIL_ADDRESS:4");
        assert_eq!(
            placeholders.restore("Dear [EMAIL_ADDRESS_2], [PERSON_9] [x]"),
            "Dear b@example.com, [PERSON_9] [x]"
        );
    }

    #[test]
    fn every_split_point_of_every_sample_redacts_as_the_whole_text_does() {
        for sample in SAMPLES {
            let expected = whole(sample);
            for cut in 0..=sample.len() {
                let chunks = split(sample, &[cut]);
                assert_eq!(streamed(&chunks), expected, "{sample:?} cut at {cut}");
            }
        }
    }

    #[test]
    fn prose_is_sent_at_once_and_a_value_in_progress_is_held() {
        let mut placeholders = Placeholders::default();
        let mut redactor = StreamRedactor::new(PiiDetector::default());
        assert_eq!(redactor.push("The river ", &mut placeholders), "The river ");
        assert_eq!(
            redactor.push("is wide. Mail ", &mut placeholders),
            "is wide. Mail "
        );
        assert_eq!(redactor.push("jane.doe@exa", &mut placeholders), "");
        assert_eq!(
            redactor.push("mple.com now", &mut placeholders),
            "[EMAIL_ADDRESS_1] "
        );
        assert_eq!(redactor.finish(&mut placeholders), "now");
    }

    #[test]
    fn only_the_callers_values_are_restored_even_when_split() {
        let detector = PiiDetector::default();
        let mut placeholders = Placeholders::default();
        let request = placeholders.redact(&detector, "mail jane.doe@example.com");
        assert_eq!(request, "mail [EMAIL_ADDRESS_1]");
        let mut restorer = PlaceholderRestorer::new(placeholders.clone());
        // The answer's own address is a new value: it stays a placeholder.
        let answer = placeholders.redact(&detector, "[EMAIL_ADDRESS_1] and bob@example.org");
        assert_eq!(answer, "[EMAIL_ADDRESS_1] and [EMAIL_ADDRESS_2]");
        let mut out = String::new();
        for piece in ["Sent to [EMAIL_", "ADDRESS_1], cc [EMAIL_ADDRESS_2", "] [x"] {
            out.push_str(&restorer.push(piece));
        }
        out.push_str(&restorer.finish());
        assert_eq!(out, "Sent to jane.doe@example.com, cc [EMAIL_ADDRESS_2] [x");
    }

    #[test]
    fn a_long_private_key_block_is_never_sent() {
        let mut placeholders = Placeholders::default();
        let mut redactor = StreamRedactor::new(PiiDetector::default());
        let mut out = redactor.push("key: -----BEGIN PRIVATE KEY-----\n", &mut placeholders);
        for _ in 0..200 {
            out.push_str(&redactor.push(
                "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\n",
                &mut placeholders,
            ));
            assert!(redactor.held() <= MAX_HELD + 128);
        }
        out.push_str(&redactor.push("-----END PRIVATE KEY-----\nbye", &mut placeholders));
        out.push_str(&redactor.finish(&mut placeholders));
        assert_eq!(out, "key: [SECRET_1]\nbye");
    }

    proptest! {
        #[test]
        fn any_split_redacts_before_any_part_is_sent(
            sample in 0..SAMPLES.len(),
            cuts in proptest::collection::vec(0usize..400, 0..12),
        ) {
            let text = SAMPLES[sample];
            let chunks = split(text, &cuts);
            let out = streamed(&chunks);
            prop_assert_eq!(&out, &whole(text));
            // Valid UTF-8 by construction (a String); and no value survives.
            for finding in PiiDetector::default().find(text) {
                prop_assert!(!out.contains(&text[finding.start..finding.end]));
            }
        }
    }
}
