//! The labels routes, inhibition rules and silences match on, read straight from an
//! [`Alert`] (no map is built per alert), and the matchers that test them.
//!
//! Label names are a closed set: `detector`, `severity`, `subject`, `subject_kind`,
//! `environment`, `runbook`, `dedup_key`. A label an alert does not carry (no environment, no
//! runbook) reads as the empty string, as in Alertmanager.

use std::fmt;

use regex::Regex;
use warden_ingest::alert::Alert;

/// A label of an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LabelName {
    Detector,
    Severity,
    Subject,
    SubjectKind,
    Environment,
    Runbook,
    DedupKey,
}

impl LabelName {
    pub const ALL: [Self; 7] = [
        Self::Detector,
        Self::Severity,
        Self::Subject,
        Self::SubjectKind,
        Self::Environment,
        Self::Runbook,
        Self::DedupKey,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Detector => "detector",
            Self::Severity => "severity",
            Self::Subject => "subject",
            Self::SubjectKind => "subject_kind",
            Self::Environment => "environment",
            Self::Runbook => "runbook",
            Self::DedupKey => "dedup_key",
        }
    }

    pub fn parse(name: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|label| label.as_str() == name)
            .ok_or_else(|| {
                let known: Vec<&str> = Self::ALL.iter().map(|label| label.as_str()).collect();
                format!("unknown label {name:?} (one of {})", known.join(", "))
            })
    }

    /// This label's value on `alert` (borrowed where the alert holds it as text).
    pub fn value(self, alert: &Alert) -> LabelValue<'_> {
        match self {
            Self::Detector => LabelValue::Borrowed(&alert.detector),
            Self::Severity => LabelValue::Borrowed(alert.severity.as_str()),
            Self::Subject => LabelValue::Subject(alert),
            Self::SubjectKind => LabelValue::Borrowed(alert.subject.kind()),
            Self::Environment => LabelValue::Borrowed(alert.environment.as_deref().unwrap_or("")),
            Self::Runbook => LabelValue::Borrowed(alert.runbook.as_deref().unwrap_or("")),
            Self::DedupKey => LabelValue::Borrowed(&alert.dedup_key),
        }
    }
}

impl fmt::Display for LabelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A label's value: text the alert holds, or its subject (written `kind:value`).
#[derive(Debug, Clone, Copy)]
pub enum LabelValue<'a> {
    Borrowed(&'a str),
    Subject(&'a Alert),
}

impl LabelValue<'_> {
    /// Whether the value equals `expected`, without building the subject's text.
    pub fn equals(&self, expected: &str) -> bool {
        match self {
            Self::Borrowed(value) => *value == expected,
            Self::Subject(alert) => subject_equals(alert, expected),
        }
    }

    pub fn to_text(&self) -> String {
        match self {
            Self::Borrowed(value) => (*value).to_owned(),
            Self::Subject(alert) => alert.subject.to_string(),
        }
    }
}

fn subject_equals(alert: &Alert, expected: &str) -> bool {
    use warden_ingest::alert::Subject;
    match &alert.subject {
        Subject::Global => expected == "global",
        Subject::Target(value)
        | Subject::Client(value)
        | Subject::Token(value)
        | Subject::Ip(value)
        | Subject::Country(value) => expected
            .split_once(':')
            .is_some_and(|(kind, rest)| kind == alert.subject.kind() && rest == value),
    }
}

/// One condition on a label: equality or an anchored regular expression, either negated.
#[derive(Debug, Clone)]
pub struct Matcher {
    pub label: LabelName,
    test: MatchTest,
    /// `!=` / `!~`: the alert matches when the test fails.
    negated: bool,
}

#[derive(Debug, Clone)]
enum MatchTest {
    Equal(String),
    /// Anchored at both ends, as Alertmanager's `=~`.
    Regex {
        source: String,
        regex: Regex,
    },
}

impl Matcher {
    pub fn equal(label: LabelName, value: impl Into<String>) -> Self {
        Self {
            label,
            test: MatchTest::Equal(value.into()),
            negated: false,
        }
    }

    /// A regex matcher; the pattern must match the whole value.
    pub fn regex(label: LabelName, pattern: &str) -> Result<Self, String> {
        let regex = Regex::new(&format!("^(?:{pattern})$"))
            .map_err(|err| format!("{pattern:?} is not a regular expression: {err}"))?;
        Ok(Self {
            label,
            test: MatchTest::Regex {
                source: pattern.to_owned(),
                regex,
            },
            negated: false,
        })
    }

    /// A matcher as operators write it on a command line: `name=value`, `name!=value`,
    /// `name=~regex`, `name!~regex`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let operators = ["!=", "=~", "!~", "="];
        let (at, operator) = operators
            .iter()
            .filter_map(|operator| text.find(operator).map(|at| (at, *operator)))
            .min_by_key(|(at, operator)| (*at, usize::MAX - operator.len()))
            .ok_or_else(|| {
                format!("{text:?} is not name=value, name!=value, name=~regex or name!~regex")
            })?;
        let label = LabelName::parse(text[..at].trim())?;
        let value = text[at + operator.len()..].trim();
        let mut matcher = match operator {
            "=" | "!=" => Self::equal(label, value),
            _ => Self::regex(label, value)?,
        };
        matcher.negated = operator.starts_with('!');
        Ok(matcher)
    }

    pub fn matches(&self, alert: &Alert) -> bool {
        let value = self.label.value(alert);
        let hit = match &self.test {
            MatchTest::Equal(expected) => value.equals(expected),
            MatchTest::Regex { regex, .. } => match value {
                LabelValue::Borrowed(text) => regex.is_match(text),
                LabelValue::Subject(alert) => regex.is_match(&alert.subject.to_string()),
            },
        };
        hit != self.negated
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (operator, value) = match (&self.test, self.negated) {
            (MatchTest::Equal(value), false) => ("=", value),
            (MatchTest::Equal(value), true) => ("!=", value),
            (MatchTest::Regex { source, .. }, false) => ("=~", source),
            (MatchTest::Regex { source, .. }, true) => ("!~", source),
        };
        write!(f, "{}{operator}{value:?}", self.label)
    }
}

/// Every matcher must match (an empty set matches every alert).
#[derive(Debug, Clone, Default)]
pub struct Matchers(pub Vec<Matcher>);

impl Matchers {
    pub fn matches(&self, alert: &Alert) -> bool {
        self.0.iter().all(|matcher| matcher.matches(alert))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Matchers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (index, matcher) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{matcher}")?;
        }
        f.write_str("}")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use chrono::Utc;
    use warden_ingest::alert::{Severity, Subject};

    use super::*;

    pub(crate) fn alert(detector: &str, severity: Severity, subject: &str) -> Alert {
        let now = Utc::now();
        Alert::firing(
            detector,
            severity,
            subject.parse().expect("subject"),
            (now, now),
        )
    }

    #[test]
    fn labels_read_from_the_alert_and_missing_ones_are_empty() {
        let mut spike = alert("traffic_spike", Severity::Warning, "client:batch");
        assert!(LabelName::Subject.value(&spike).equals("client:batch"));
        assert!(!LabelName::Subject.value(&spike).equals("client:batc"));
        assert!(!LabelName::Subject.value(&spike).equals("ip:batch"));
        assert!(LabelName::SubjectKind.value(&spike).equals("client"));
        assert!(LabelName::Environment.value(&spike).equals(""));
        spike.subject = Subject::Global;
        assert!(LabelName::Subject.value(&spike).equals("global"));
    }

    #[test]
    fn matchers_parse_as_written_and_regexes_are_anchored() {
        let spike = alert("traffic_spike", Severity::Warning, "client:batch");
        let cases = [
            ("detector=traffic_spike", true),
            ("detector!=traffic_spike", false),
            ("detector=~traffic", false),
            ("detector=~traffic_.*", true),
            ("subject=~client:.*", true),
            ("severity!~crit.*", true),
            ("environment=", true),
        ];
        for (text, expected) in cases {
            let matcher = Matcher::parse(text).expect(text);
            assert_eq!(matcher.matches(&spike), expected, "{text} ({matcher})");
        }
        assert!(Matcher::parse("colour=red").is_err());
        assert!(Matcher::parse("detector").is_err());
        assert!(Matcher::parse("detector=~(").is_err());
    }
}
