//! The PII detector's precision and recall on a labelled corpus: values of every entity,
//! generated in the formats people write them (valid check digits computed, not copied) and
//! put in sentences of several languages; and benign text of every shape — the lines of
//! `tests/corpus/benign.txt` (code, logs, SQL, prices, multilingual prose) and generated
//! look-alikes (dates, times, versions, order ids, prices, hashes, coordinates). Prints the
//! per-entity figures (`cargo test -p warden-proxy --test pii_corpus -- --nocapture`) and
//! holds the goals: structured entities found ≥ 99 %, benign samples with a false positive
//! ≤ 0.5 %.

use std::collections::BTreeMap;

use warden_proxy::guard::pii::{Entity, PiiDetector};

/// A small deterministic generator (SplitMix64).
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn digits(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from(b'0' + self.below(10) as u8))
            .collect()
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }

    fn letters(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from(b'a' + self.below(26) as u8))
            .collect()
    }
}

fn luhn_digit(body: &str) -> char {
    let mut sum = 0;
    for (index, c) in body.chars().rev().enumerate() {
        let mut value = c.to_digit(10).expect("digit");
        if index % 2 == 0 {
            value *= 2;
            if value > 9 {
                value -= 9;
            }
        }
        sum += value;
    }
    char::from_digit((10 - sum % 10) % 10, 10).expect("digit")
}

fn group(digits: &str, sizes: &[usize], separator: &str) -> String {
    let mut parts = Vec::new();
    let mut at = 0;
    for size in sizes {
        parts.push(&digits[at..at + size]);
        at += size;
    }
    parts.join(separator)
}

fn card(random: &mut Random) -> String {
    let (prefix, length, sizes): (&str, usize, &[usize]) = match random.below(4) {
        0 => ("4", 16, &[4, 4, 4, 4]),
        1 => (
            random.pick(&["51", "52", "53", "54", "55"]),
            16,
            &[4, 4, 4, 4],
        ),
        2 => (random.pick(&["34", "37"]), 15, &[4, 6, 5]),
        _ => ("6011", 16, &[4, 4, 4, 4]),
    };
    let body = format!("{prefix}{}", random.digits(length - prefix.len() - 1));
    let number = format!("{body}{}", luhn_digit(&body));
    match random.below(3) {
        0 => number,
        1 => group(&number, sizes, " "),
        _ => group(&number, sizes, "-"),
    }
}

fn iban(random: &mut Random) -> String {
    let (country, length) = [
        ("DE", 22),
        ("GB", 22),
        ("FR", 27),
        ("NL", 18),
        ("ES", 24),
        ("IT", 27),
    ][random.below(6) as usize];
    let bban = match country {
        "GB" => format!("{}{}", random.letters(4).to_uppercase(), random.digits(14)),
        "NL" => format!("{}{}", random.letters(4).to_uppercase(), random.digits(10)),
        "IT" => format!("{}{}", random.letters(1).to_uppercase(), random.digits(22)),
        _ => random.digits(length - 4),
    };
    // Check digits: 98 - (bban + country + "00") mod 97.
    let rearranged = format!("{bban}{country}00");
    let mut remainder = 0u64;
    for c in rearranged.chars() {
        let value = c.to_digit(36).expect("alphanumeric") as u64;
        remainder = if value >= 10 {
            (remainder * 100 + value) % 97
        } else {
            (remainder * 10 + value) % 97
        };
    }
    let compact = format!("{country}{:02}{bban}", 98 - remainder);
    if random.below(2) == 0 {
        compact
    } else {
        compact
            .as_bytes()
            .chunks(4)
            .map(|chunk| std::str::from_utf8(chunk).expect("ascii"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn phone(random: &mut Random) -> String {
    match random.below(7) {
        0 => format!("+44 20 {} {}", random.digits(4), random.digits(4)),
        1 => format!(
            "+1 ({}) {}-{}",
            200 + random.below(700),
            200 + random.below(700),
            random.digits(4)
        ),
        2 => format!("+49 30 {}", random.digits(8)),
        3 => format!(
            "+33 1 {} {} {} {}",
            random.digits(2),
            random.digits(2),
            random.digits(2),
            random.digits(2)
        ),
        4 => format!("+81 3-{}-{}", random.digits(4), random.digits(4)),
        5 => format!(
            "({}) {}-{}",
            200 + random.below(700),
            200 + random.below(700),
            random.digits(4)
        ),
        _ => format!(
            "{}-{}-{}",
            200 + random.below(700),
            200 + random.below(700),
            random.digits(4)
        ),
    }
}

fn email(random: &mut Random) -> String {
    let local = match random.below(3) {
        0 => random.letters(6),
        1 => format!("{}.{}", random.letters(4), random.letters(7)),
        _ => format!(
            "{}+{}{}",
            random.letters(5),
            random.letters(3),
            random.digits(2)
        ),
    };
    let domain = random.pick(&[
        "example.com",
        "mail.example.org",
        "corp.example.co.uk",
        "example.de",
        "uni-example.edu",
    ]);
    format!("{local}@{domain}")
}

fn ssn(random: &mut Random) -> String {
    let area = 1 + random.below(665);
    let group = 1 + random.below(99);
    let serial = 1 + random.below(9999);
    format!("{area:03}-{group:02}-{serial:04}")
}

fn ip(random: &mut Random) -> String {
    if random.below(3) == 0 {
        let groups: Vec<String> = (0..8)
            .map(|_| format!("{:x}", random.below(65536)))
            .collect();
        match random.below(2) {
            0 => groups.join(":"),
            _ => format!("2001:db8::{}:{}", groups[0], groups[1]),
        }
    } else {
        format!(
            "{}.{}.{}.{}",
            1 + random.below(222),
            random.below(256),
            random.below(256),
            1 + random.below(254)
        )
    }
}

fn secret(random: &mut Random) -> String {
    let alnum = |random: &mut Random, n: usize| -> String {
        const SET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        (0..n)
            .map(|_| char::from(SET[random.below(SET.len() as u64) as usize]))
            .collect()
    };
    match random.below(5) {
        0 => format!("hf_{}", alnum(random, 34)),
        1 => format!("sk-proj-{}", alnum(random, 48)),
        2 => format!("AKIA{}", alnum(random, 16).to_uppercase()),
        3 => format!("ghp_{}", alnum(random, 36)),
        _ => format!(
            "eyJ{}.eyJ{}.{}",
            alnum(random, 20),
            alnum(random, 40),
            alnum(random, 43)
        ),
    }
}

/// Makes one value of an entity.
type Generator = fn(&mut Random) -> String;

const TEMPLATES: &[&str] = &[
    "Please contact me at {} tomorrow.",
    "My details: {}, thanks!",
    "Bitte überweisen Sie an {} bis Freitag.",
    "Mi dato es {} y lo necesito hoy.",
    "Voici l'information demandée : {}.",
    "The customer wrote: \"{}\" in the ticket.",
    "{}",
    "log line 2026-12-02T10:00:00Z user={} action=login",
    "Here is the value you asked for - {} - keep it safe.",
];

#[test]
fn precision_and_recall_on_the_labelled_corpus() {
    let detector = PiiDetector::default();
    let mut random = Random(0x5eed_2026_1202);
    let generators: [(Entity, Generator); 7] = [
        (Entity::EmailAddress, email),
        (Entity::PhoneNumber, phone),
        (Entity::CreditCard, card),
        (Entity::Iban, iban),
        (Entity::UsSsn, ssn),
        (Entity::IpAddress, ip),
        (Entity::Secret, secret),
    ];
    let mut found: BTreeMap<Entity, (usize, usize)> = BTreeMap::new();
    let mut misses = Vec::new();
    for (entity, generate) in generators {
        for _ in 0..400 {
            let value = generate(&mut random);
            let template = random.pick(TEMPLATES);
            let text = template.replacen("{}", &value, 1);
            let at = text.find(&value).expect("inserted");
            let hit = detector.find(&text).iter().any(|finding| {
                finding.entity == entity && finding.start == at && finding.end == at + value.len()
            });
            let counts = found.entry(entity).or_default();
            counts.1 += 1;
            if hit {
                counts.0 += 1;
            } else if misses.len() < 20 {
                misses.push(format!("{entity}: {text}"));
            }
        }
    }
    // Benign: the corpus lines, and generated look-alikes.
    let mut benign: Vec<String> = include_str!("corpus/benign.txt")
        .lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
        .map(str::to_owned)
        .collect();
    for _ in 0..2_000 {
        let sample = match random.below(10) {
            0 => format!(
                "on {}-{:02}-{:02} at {:02}:{:02}:{:02}",
                2000 + random.below(30),
                1 + random.below(12),
                1 + random.below(28),
                random.below(24),
                random.below(60),
                random.below(60)
            ),
            1 => format!(
                "version {}.{}.{} released",
                random.below(20),
                random.below(50),
                random.below(100)
            ),
            2 => {
                let length = 8 + random.below(8) as usize;
                format!("order id {} shipped", random.digits(length))
            }
            3 => format!(
                "total ${}.{:02} for {} items",
                random.below(100_000),
                random.below(100),
                random.below(500)
            ),
            4 => format!("commit {:016x}{:016x}", random.next(), random.next()),
            5 => format!(
                "at {}.{:04}, {}.{:04}",
                random.below(90),
                random.below(10_000),
                random.below(180),
                random.below(10_000)
            ),
            6 => format!(
                "took {} ms, {} µs, {} ns",
                random.below(100_000),
                random.below(1000),
                random.below(1000)
            ),
            7 => format!(
                "ticket {}-{}",
                random.letters(4).to_uppercase(),
                random.digits(5)
            ),
            8 => format!(
                "the range {}-{} and ratio {}:{}",
                random.below(1000),
                random.below(1000),
                random.below(20),
                random.below(20)
            ),
            _ => format!(
                "port {} on host web-{}.internal",
                random.below(65536),
                random.below(100)
            ),
        };
        benign.push(sample);
    }
    let mut false_positives = Vec::new();
    for sample in &benign {
        let findings = detector.find(sample);
        if !findings.is_empty() {
            false_positives.push(format!(
                "{sample:?}: {:?}",
                findings
                    .iter()
                    .map(|f| (f.entity, &sample[f.start..f.end]))
                    .collect::<Vec<_>>()
            ));
        }
    }
    println!("entity          found / total   recall");
    let mut all = (0, 0);
    for (entity, (hit, total)) in &found {
        println!(
            "{:<15} {hit:>5} / {total:<5}   {:.2} %",
            entity.as_str(),
            100.0 * *hit as f64 / *total as f64
        );
        all.0 += hit;
        all.1 += total;
    }
    let fp_rate = 100.0 * false_positives.len() as f64 / benign.len() as f64;
    println!(
        "benign samples with a false positive: {} / {} ({fp_rate:.2} %)",
        false_positives.len(),
        benign.len()
    );
    for line in false_positives.iter().take(20) {
        println!("  FP {line}");
    }
    for line in &misses {
        println!("  missed {line}");
    }
    let recall = 100.0 * all.0 as f64 / all.1 as f64;
    assert!(
        recall >= 99.0,
        "structured recall {recall:.2} %: {misses:#?}"
    );
    assert!(
        fp_rate <= 0.5,
        "false positives {fp_rate:.2} %: {false_positives:#?}"
    );
}

/// Names are a gazetteer and context rules, not a model: measured, and reported as they are.
#[test]
fn person_names_are_found_as_measured() {
    let detector = PiiDetector::default();
    let known = [
        "Maria", "James", "Aisha", "Hiroshi", "Olga", "Pedro", "Fatima", "Lukas",
    ];
    let unknown = [
        "Siobhan",
        "Aarav",
        "Thandiwe",
        "Bartholomew",
        "Oluwaseun",
        "Kaito",
    ];
    let surnames = [
        "Garcia",
        "Okonkwo",
        "Nakamura",
        "Kowalski",
        "Lindqvist",
        "Haddad",
    ];
    let templates = [
        ("Yesterday {first} {last} called about the invoice.", true),
        ("Contact person: {first} {last}", true),
        ("Please forward this to Dr. {last} before noon.", true),
        ("My name is {first} and I need help.", true),
        ("{first} said the build is green.", false),
    ];
    let (mut hits, mut total) = (0, 0);
    let mut missed = Vec::new();
    for first in known.iter().chain(&unknown) {
        for last in &surnames {
            for (template, _) in &templates {
                let text = template.replace("{first}", first).replace("{last}", last);
                let expected: &str = if template.contains("{first} {last}") {
                    &text[text.find(first).expect("first")
                        ..text.find(last).expect("last") + last.len()]
                } else if template.contains("Dr.") {
                    last
                } else {
                    first
                };
                total += 1;
                let found = detector.find(&text).iter().any(|finding| {
                    finding.entity == Entity::Person
                        && text[finding.start..finding.end] == *expected
                });
                if found {
                    hits += 1;
                } else if missed.len() < 8 {
                    missed.push(text);
                }
            }
        }
    }
    let recall = 100.0 * hits as f64 / total as f64;
    println!("PERSON recall: {hits} / {total} ({recall:.1} %); e.g. missed: {missed:#?}");
    // A regression guard, not a goal: given names in the gazetteer with a surname, and any
    // name after a title or an introducing phrase, are found.
    assert!(recall >= 55.0, "{recall:.1} %");
}
