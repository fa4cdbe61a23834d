//! The content filter: hate speech, harassment, toxicity, self-harm and sexual content, found
//! with lexicons shipped in the binary (`guard/lexicons/*.txt`) — no model, no network.
//!
//! Each lexicon line is a rule: an id, a weight and a pattern over [normalized](super::normalize)
//! text (so `F U C K`, `fսck` and `sh1t` read as what they spell). A category is found when
//! the weights of its matched rules combine (`1 − Π(1 − weight)`) to
//! [`CATEGORY_THRESHOLD`]: a slur or a threat alone, mild swearing never alone. All rules of
//! all categories are one automaton, so a text is read once whatever is enabled. A finding
//! names its category, score and rule ids (`toxicity.insult`), never the words matched.

use std::fmt;
use std::sync::LazyLock;

use regex::RegexSet;

use super::injection::ascii_boundaries;
use super::normalize::normalize;

/// A content category.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    HateSpeech,
    Harassment,
    Toxicity,
    SelfHarm,
    Sexual,
}

impl Category {
    pub const ALL: [Category; 5] = [
        Self::HateSpeech,
        Self::Harassment,
        Self::Toxicity,
        Self::SelfHarm,
        Self::Sexual,
    ];

    /// The name in config and decisions.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HateSpeech => "hate_speech",
            Self::Harassment => "harassment",
            Self::Toxicity => "toxicity",
            Self::SelfHarm => "self_harm",
            Self::Sexual => "sexual",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|category| category.as_str() == text)
    }

    fn lexicon(self) -> &'static str {
        match self {
            Self::HateSpeech => include_str!("lexicons/hate_speech.txt"),
            Self::Harassment => include_str!("lexicons/harassment.txt"),
            Self::Toxicity => include_str!("lexicons/toxicity.txt"),
            Self::SelfHarm => include_str!("lexicons/self_harm.txt"),
            Self::Sexual => include_str!("lexicons/sexual.txt"),
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The combined weight at which a category is found.
pub const CATEGORY_THRESHOLD: f64 = 0.5;

/// The groups of people hate speech targets, for `{group}` in the lexicons.
const GROUPS: &str = r"(?:jews?|muslim|moslem|christian|hindu|sikh|immigrant|migrant|refugee|foreigner|arab|african|mexican|asian|black|gay|lesbian|homosexual|jews|jewish people|muslims|moslems|christians|catholics|hindus|sikhs|buddhists|atheists|blacks|black people|whites|white people|asians|asian people|chinese people|chinese|japanese people|koreans|indians|pakistanis|arabs|africans|mexicans|latinos|latinas|hispanics|immigrants|migrants|refugees|foreigners|gypsies|roma|gays|gay people|lesbians|homosexuals|bisexuals|trans people|transgender people|transgenders|women|females|men|disabled people|the disabled|autistic people|jews and muslims)";

/// What dehumanizes a group, for `{dehumanizing}`.
const DEHUMANIZING: &str = r"(?:animals|vermin|subhuman|sub-human|parasites|cockroaches|rats|savages|apes|monkeys|a disease|a cancer|a plague|a virus|filth|scum|trash|garbage|inferior|not human|less than human|an infestation|pigs|dogs|insects|leeches)";

/// One lexicon rule.
#[derive(Debug, Clone)]
struct Rule {
    category: Category,
    /// `category.rule`, as decisions name it.
    id: String,
    /// `None` for an exception: a benign phrase that clears the category for a text.
    weight: Option<f64>,
}

struct Lexicons {
    rules: Vec<Rule>,
    set: RegexSet,
}

/// Parses the lexicons shipped with the binary (checked by a test: every line is a rule).
fn parse_lexicons() -> Result<Lexicons, String> {
    let mut rules = Vec::new();
    let mut patterns = Vec::new();
    for category in Category::ALL {
        for (number, line) in category.lexicon().lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut fields = line.splitn(3, ' ');
            let (Some(name), Some(weight), Some(pattern)) =
                (fields.next(), fields.next(), fields.next())
            else {
                return Err(format!(
                    "{category}.txt line {}: not `id weight pattern`",
                    number + 1
                ));
            };
            let weight: Option<f64> = match weight {
                "except" => None,
                weight => Some(weight.parse().map_err(|_| {
                    format!("{category}.txt line {}: weight {weight:?}", number + 1)
                })?),
            };
            let pattern = pattern
                .replace("{group}", GROUPS)
                .replace("{dehumanizing}", DEHUMANIZING);
            patterns.push(ascii_boundaries(&format!(r"\b(?:{pattern})\b")));
            rules.push(Rule {
                category,
                id: format!("{category}.{name}"),
                weight,
            });
        }
    }
    let set = RegexSet::new(&patterns).map_err(|err| format!("a lexicon pattern: {err}"))?;
    Ok(Lexicons { rules, set })
}

static LEXICONS: LazyLock<Lexicons> = LazyLock::new(|| {
    parse_lexicons().unwrap_or_else(|err| unreachable!("the shipped lexicons parse: {err}"))
});

/// A category found in a text.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub category: Category,
    pub score: f64,
    /// Its matched rules' ids.
    pub rules: Vec<String>,
}

impl Finding {
    /// `toxicity 0.88: toxicity.insult, toxicity.profanity` — for a decision.
    pub fn describe(&self) -> String {
        format!(
            "{} {:.2}: {}",
            self.category,
            self.score,
            self.rules.join(", ")
        )
    }
}

/// The content filter, for some categories.
#[derive(Debug, Clone)]
pub struct ContentFilter {
    categories: Vec<Category>,
}

impl Default for ContentFilter {
    fn default() -> Self {
        Self::new(&Category::ALL)
    }
}

impl ContentFilter {
    pub fn new(categories: &[Category]) -> Self {
        let _ = &*LEXICONS;
        Self {
            categories: categories.to_vec(),
        }
    }

    /// The categories found in `text`, in the order of [`Category::ALL`].
    pub fn find(&self, text: &str) -> Vec<Finding> {
        self.find_normalized(&normalize(text).text)
    }

    /// As [`find`](Self::find), on text already normalized.
    pub fn find_normalized(&self, normalized: &str) -> Vec<Finding> {
        let lexicons = &*LEXICONS;
        let mut findings: Vec<Finding> = Vec::new();
        let mut excepted: Vec<Category> = Vec::new();
        for index in lexicons.set.matches(normalized).iter() {
            let rule = &lexicons.rules[index];
            if !self.categories.contains(&rule.category) {
                continue;
            }
            let Some(weight) = rule.weight else {
                excepted.push(rule.category);
                continue;
            };
            let finding = match findings
                .iter_mut()
                .position(|f| f.category == rule.category)
            {
                Some(at) => &mut findings[at],
                None => {
                    findings.push(Finding {
                        category: rule.category,
                        score: 0.0,
                        rules: Vec::new(),
                    });
                    let last = findings.len() - 1;
                    &mut findings[last]
                }
            };
            finding.score = 1.0 - (1.0 - finding.score) * (1.0 - weight);
            finding.rules.push(rule.id.clone());
        }
        findings.retain(|finding| !excepted.contains(&finding.category));
        findings.retain(|finding| finding.score >= CATEGORY_THRESHOLD);
        findings.sort_by_key(|finding| finding.category);
        findings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn categories(text: &str) -> Vec<Category> {
        ContentFilter::default()
            .find(text)
            .into_iter()
            .map(|finding| finding.category)
            .collect()
    }

    #[test]
    fn the_shipped_lexicons_parse_and_compile() {
        let lexicons = parse_lexicons().expect("lexicons");
        assert!(lexicons.rules.len() >= 40, "{}", lexicons.rules.len());
        for category in Category::ALL {
            assert!(lexicons.rules.iter().any(|rule| rule.category == category));
        }
    }

    #[test]
    fn each_category_is_found() {
        assert_eq!(
            categories("All immigrants are vermin."),
            [Category::HateSpeech]
        );
        assert_eq!(categories("I know where you live."), [Category::Harassment]);
        assert_eq!(
            categories("Shut up, you complete idiot."),
            [Category::Toxicity]
        );
        assert_eq!(
            categories("What is the easiest way to kill myself?"),
            [Category::SelfHarm]
        );
        assert_eq!(
            categories("Write an erotic roleplay scene."),
            [Category::Sexual]
        );
    }

    #[test]
    fn obfuscation_does_not_hide_a_term() {
        assert_eq!(categories("y0u are a m0r0n"), [Category::Toxicity]);
        assert_eq!(categories("f u c k you"), [Category::Toxicity]);
    }

    #[test]
    fn mild_swearing_alone_is_not_toxic_and_ordinary_text_is_clean() {
        for benign in [
            "Holy shit, the build finally passed.",
            "Kill the process with SIGTERM, then kill -9 if it hangs.",
            "The suicide prevention hotline is open day and night.",
            "Sex education for teenagers should be evidence based.",
            "She graduated summa cum laude in 2019.",
            "Our cat is named Dick Whittington.",
            "Assassin's Creed is set in Renaissance Italy.",
            "The Scunthorpe problem is a classic in filtering.",
        ] {
            assert!(
                categories(benign).is_empty(),
                "{benign}: {:?}",
                categories(benign)
            );
        }
    }

    #[test]
    fn only_enabled_categories_are_reported() {
        let filter = ContentFilter::new(&[Category::SelfHarm]);
        assert!(filter.find("you stupid idiot").is_empty());
        assert_eq!(filter.find("i want to end my life").len(), 1);
    }
}
