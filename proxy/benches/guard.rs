//! The PII guardrail on a 4 KB prompt (criterion, one thread): detection alone, and
//! detection with redaction into placeholders, on prose with a handful of values (an email,
//! a phone number, a card, an IBAN, an address, a name, a token) and on prose with none;
//! and the streaming redactor over the same text in 4-byte deltas (what an answer streamed a
//! token at a time costs).
//!
//! The injection detector and the content filter on the same prompts, and all three
//! guardrails together (the budget: ≤ 50 µs on a 4 KB prompt).
//!
//! `cargo bench -p warden-proxy --bench guard`

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use warden_proxy::guard::content::ContentFilter;
use warden_proxy::guard::injection::InjectionDetector;
use warden_proxy::guard::normalize::NormalizedTexts;
use warden_proxy::guard::pii::PiiDetector;
use warden_proxy::guard::redact::{Placeholders, StreamRedactor};

const PROSE: &str = "The quarterly report covers the migration of the billing service to the new \
    cluster, the on-call rotation, and the latency regressions seen after the last deploy. \
    Requests to the search endpoint now take 120 ms at the median and 480 ms at p99, up from \
    95 and 310; the cause is the cold cache after each rollout, fixed in build 2026.11.4. ";

const WITH_VALUES: &str = "Please contact Maria Garcia at maria.garcia@example.com or on \
    +34 912 345 678 about the refund to card 4111 1111 1111 1111 (IBAN DE89 3704 0044 0532 \
    0130 00); she connected from 203.0.113.7 with the key hf_abcdefghijklmnopqrstuvwxyz0123456789. ";

fn prompt(with_values: bool) -> String {
    let mut text = String::new();
    while text.len() < 4096 {
        text.push_str(PROSE);
        if with_values && text.len() < 3000 {
            text.push_str(WITH_VALUES);
        }
    }
    text.truncate(4096);
    while !text.is_char_boundary(text.len()) {
        text.pop();
    }
    text
}

fn bench(c: &mut Criterion) {
    let detector = PiiDetector::default();
    let injection = InjectionDetector;
    let content = ContentFilter::default();
    for (name, text) in [
        ("4KB with values", prompt(true)),
        ("4KB prose", prompt(false)),
    ] {
        c.bench_function(&format!("normalize, {name}"), |b| {
            b.iter(|| black_box(warden_proxy::guard::normalize::normalize(black_box(&text))))
        });
        let normalized = warden_proxy::guard::normalize::normalize(&text).text;
        c.bench_function(&format!("content lexicons only, {name}"), |b| {
            b.iter(|| black_box(content.find_normalized(black_box(&normalized))))
        });
        c.bench_function(&format!("injection score, {name}"), |b| {
            b.iter(|| black_box(injection.score(black_box(&text))))
        });
        c.bench_function(&format!("content find, {name}"), |b| {
            b.iter(|| black_box(content.find(black_box(&text))))
        });
        // As the chain runs them: injection on what the caller sent, pii, content on the
        // redacted text (normalized once when nothing was redacted, twice when something was).
        c.bench_function(&format!("injection + pii + content, {name}"), |b| {
            b.iter(|| {
                let mut normalized = NormalizedTexts::default();
                let sent = black_box(&text);
                black_box(injection.score_normalized(sent, normalized.get(sent)));
                let mut placeholders = Placeholders::default();
                let redacted = placeholders.redact(&detector, sent);
                black_box(content.find_normalized(&normalized.get(&redacted).text))
            })
        });
        c.bench_function(&format!("pii find, {name}"), |b| {
            b.iter(|| black_box(detector.find(black_box(&text))))
        });
        c.bench_function(&format!("pii redact, {name}"), |b| {
            b.iter(|| {
                let mut placeholders = Placeholders::default();
                black_box(placeholders.redact(&detector, black_box(&text)))
            })
        });
        c.bench_function(&format!("pii stream in 4-byte deltas, {name}"), |b| {
            let deltas: Vec<&str> = {
                let mut deltas = Vec::new();
                let mut start = 0;
                while start < text.len() {
                    let mut end = (start + 4).min(text.len());
                    while !text.is_char_boundary(end) {
                        end += 1;
                    }
                    deltas.push(&text[start..end]);
                    start = end;
                }
                deltas
            };
            b.iter(|| {
                let mut placeholders = Placeholders::default();
                let mut redactor = StreamRedactor::new(detector.clone());
                let mut sent = 0;
                for delta in &deltas {
                    sent += redactor.push(delta, &mut placeholders).len();
                }
                sent += redactor.finish(&mut placeholders).len();
                black_box(sent)
            })
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
