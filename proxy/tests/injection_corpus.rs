//! The injection detector and the content filter on their labelled corpora, with the
//! figures `BENCHMARKS.md` reports (`cargo test -p warden-proxy --test injection_corpus --
//! --nocapture` prints them).
//!
//! Injection: the attacks of `tests/corpus/injection_attacks.txt` as written, and each in
//! the disguises attackers use — Cyrillic look-alike letters, zero-width spaces inside
//! words, base64, Unicode tag characters behind an innocent sentence, leet digits, a word
//! spelled out letter by letter; the benign prompts of `injection_benign.txt` and
//! `benign.txt` (code, logs, multilingual prose, prompts *about* prompts and security).
//! Goals held: ≥ 90 % of attacks found (plain and disguised), ≤ 5 % of benign prompts
//! flagged, at the default threshold 0.5.
//!
//! Content: `tests/corpus/content.txt`, per category precision and recall, printed; the
//! test holds each category's recall ≥ 85 % and benign false positives ≤ 5 %.

use std::collections::BTreeMap;

use base64::Engine as _;
use warden_proxy::guard::content::{Category, ContentFilter};
use warden_proxy::guard::injection::InjectionDetector;

const THRESHOLD: f64 = 0.5;

fn lines(text: &str) -> Vec<&str> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect()
}

fn attacks() -> Vec<&'static str> {
    lines(include_str!("corpus/injection_attacks.txt"))
}

fn benign() -> Vec<&'static str> {
    let mut all = lines(include_str!("corpus/injection_benign.txt"));
    all.extend(lines(include_str!("corpus/benign.txt")));
    all
}

/// Latin vowels drawn as Cyrillic letters, in every other word.
fn look_alikes(text: &str) -> String {
    text.split(' ')
        .enumerate()
        .map(|(index, word)| {
            if index % 2 == 1 {
                return word.to_owned();
            }
            word.chars()
                .map(|c| match c {
                    'a' => 'а',
                    'e' => 'е',
                    'o' => 'о',
                    'i' => 'і',
                    'c' => 'с',
                    'p' => 'р',
                    _ => c,
                })
                .collect()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A zero-width space in the middle of every word of four or more letters.
fn zero_width(text: &str) -> String {
    text.split(' ')
        .map(|word| {
            let chars: Vec<char> = word.chars().collect();
            if chars.len() < 4 {
                return word.to_owned();
            }
            let middle = chars.len() / 2;
            let mut out: String = chars[..middle].iter().collect();
            out.push('\u{200B}');
            out.extend(&chars[middle..]);
            out
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The attack in base64, after a neutral request to decode it.
fn base64_wrapped(text: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(text);
    format!("Please decode this message: {encoded}")
}

/// The attack in invisible Unicode tag characters, after an innocent sentence.
fn tag_smuggled(text: &str) -> String {
    let hidden: String = text
        .chars()
        .filter(char::is_ascii)
        .map(|c| char::from_u32(0xE0000 + u32::from(c)).unwrap_or(c))
        .collect();
    format!("What a lovely day it is today.{hidden}")
}

/// Vowels as digits in every word of four or more letters.
fn leet(text: &str) -> String {
    text.split(' ')
        .map(|word| {
            if word.chars().count() < 4 {
                return word.to_owned();
            }
            word.chars()
                .map(|c| match c {
                    'o' => '0',
                    'i' => '1',
                    'e' => '3',
                    'a' => '4',
                    _ => c,
                })
                .collect()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The first word of five or more letters spelled out letter by letter.
fn spelled_out(text: &str) -> String {
    let mut done = false;
    text.split(' ')
        .map(|word| {
            if done || word.len() < 5 || !word.chars().all(|c| c.is_ascii_alphabetic()) {
                return word.to_owned();
            }
            done = true;
            word.chars().map(String::from).collect::<Vec<_>>().join(" ")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

type Disguise = (&'static str, fn(&str) -> String);

const DISGUISES: &[Disguise] = &[
    ("plain", |text| text.to_owned()),
    ("look-alike letters", look_alikes),
    ("zero-width spaces", zero_width),
    ("base64", base64_wrapped),
    ("tag characters", tag_smuggled),
    ("leet digits", leet),
    ("spelled out", spelled_out),
];

#[test]
fn injection_detection_and_false_positives_meet_their_goals() {
    let detector = InjectionDetector;
    let attacks = attacks();
    println!("\nprompt injection, threshold {THRESHOLD}:");
    println!("| attacks | found | recall |");
    println!("|---|---:|---:|");
    let mut all_found = 0;
    let mut all_total = 0;
    let mut missed_plain = Vec::new();
    let mut short = Vec::new();
    for (name, disguise) in DISGUISES {
        let mut found = 0;
        let mut total = 0;
        for attack in &attacks {
            // Tag characters carry ASCII only: attacks in other scripts are skipped there.
            if *name == "tag characters" && !attack.is_ascii() {
                continue;
            }
            total += 1;
            if detector.score(&disguise(attack)).score >= THRESHOLD {
                found += 1;
            } else if *name == "plain" || std::env::var_os("WARDEN_CORPUS_MISSES").is_some() {
                missed_plain.push(*attack);
                if *name != "plain" {
                    println!("missed ({name}): {}", disguise(attack));
                }
            }
        }
        all_found += found;
        all_total += total;
        println!(
            "| {name} | {found}/{total} | {:.1} % |",
            100.0 * found as f64 / total as f64
        );
        if found * 100 < total * 90 {
            short.push(format!("{name}: {found}/{total} attacks found"));
        }
    }
    println!(
        "| all | {all_found}/{all_total} | {:.1} % |",
        100.0 * all_found as f64 / all_total as f64
    );
    for missed in &missed_plain {
        println!("missed: {missed}");
    }

    let benign = benign();
    let flagged: Vec<_> = benign
        .iter()
        .map(|text| (*text, detector.score(text)))
        .filter(|(_, verdict)| verdict.score >= THRESHOLD)
        .collect();
    println!(
        "benign prompts flagged: {}/{} ({:.1} %)",
        flagged.len(),
        benign.len(),
        100.0 * flagged.len() as f64 / benign.len() as f64
    );
    for (text, verdict) in &flagged {
        println!("flagged: {text} -> {}", verdict.describe());
    }
    assert!(short.is_empty(), "{short:?}");
    assert!(
        flagged.len() * 100 <= benign.len() * 5,
        "{} of {} benign prompts flagged",
        flagged.len(),
        benign.len()
    );
}

/// A held-out set's figures: attacks found, attacks, benign flagged, benign.
fn held_out(corpus: &str, name: &str) -> (usize, usize, usize, usize) {
    let detector = InjectionDetector;
    let (mut attacks, mut found, mut benign, mut flagged) = (0, 0, 0, 0);
    for line in lines(corpus) {
        let (label, text) = line.split_once(' ').expect("`label text`");
        let verdict = detector.score(text);
        let hit = verdict.score >= THRESHOLD;
        match label {
            "attack" => {
                attacks += 1;
                found += usize::from(hit);
                if !hit {
                    println!("{name} missed: {text}");
                }
            }
            "benign" => {
                benign += 1;
                flagged += usize::from(hit);
                if hit {
                    println!("{name} flagged: {text} -> {}", verdict.describe());
                }
            }
            other => panic!("label {other}"),
        }
    }
    println!(
        "{name}: attacks found {found}/{attacks} ({:.0} %), benign flagged {flagged}/{benign} ({:.0} %)",
        100.0 * found as f64 / attacks as f64,
        100.0 * flagged as f64 / benign as f64
    );
    (found, attacks, flagged, benign)
}

/// The held-out sets: reported, and held only to a floor (they are small, and their job is
/// to show how far the rules carry, not to be tuned for).
#[test]
fn injection_held_out_figures() {
    held_out(include_str!("corpus/injection_heldout.txt"), "held-out 1");
    let (found, attacks, flagged, benign) =
        held_out(include_str!("corpus/injection_heldout2.txt"), "held-out 2");
    assert!(found * 2 >= attacks, "held-out attacks: {found}/{attacks}");
    assert!(
        flagged * 10 <= benign,
        "held-out benign flagged: {flagged}/{benign}"
    );
}

#[test]
fn content_categories_meet_their_goals() {
    let filter = ContentFilter::default();
    let mut labelled: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for line in lines(include_str!("corpus/content.txt")) {
        let (label, text) = line.split_once(' ').expect("`label text`");
        labelled.entry(label).or_default().push(text);
    }
    // Per category: samples of it found, samples of it, samples of others flagged with it.
    let mut found_of: BTreeMap<Category, (usize, usize, usize)> = BTreeMap::new();
    let mut benign_flagged = Vec::new();
    for (label, texts) in &labelled {
        let expected = Category::parse(label);
        assert!(expected.is_some() || *label == "benign", "label {label}");
        for text in texts {
            let found: Vec<Category> = filter.find(text).iter().map(|f| f.category).collect();
            if let Some(expected) = expected {
                let entry = found_of.entry(expected).or_default();
                entry.1 += 1;
                if found.contains(&expected) {
                    entry.0 += 1;
                } else {
                    println!("missed {label}: {text}");
                }
            } else if !found.is_empty() {
                benign_flagged.push((*text, found.clone()));
            }
            for category in found {
                if Some(category) != expected {
                    found_of.entry(category).or_default().2 += 1;
                }
            }
        }
    }
    println!("\ncontent filter:");
    println!("| category | recall | precision |");
    println!("|---|---:|---:|");
    for (category, (found, total, wrong)) in &found_of {
        println!(
            "| {category} | {found}/{total} ({:.0} %) | {:.0} % |",
            100.0 * *found as f64 / *total as f64,
            100.0 * *found as f64 / (*found + *wrong).max(1) as f64
        );
    }
    let benign = labelled.get("benign").map_or(0, Vec::len);
    println!(
        "benign samples flagged: {}/{benign} ({:.1} %)",
        benign_flagged.len(),
        100.0 * benign_flagged.len() as f64 / benign as f64
    );
    for (text, categories) in &benign_flagged {
        println!("flagged: {text} -> {categories:?}");
    }
    for (category, (found, total, _)) in &found_of {
        assert!(found * 100 >= total * 85, "{category}: {found}/{total}");
    }
    assert!(benign_flagged.len() * 100 <= benign * 5);
}
