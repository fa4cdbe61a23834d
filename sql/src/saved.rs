//! Saved investigations: the queries an incident's first minutes need, by name
//! (`warden sql --saved top-sources --since 1h`), each over a time range that prunes the
//! hive partitions (`dt`) and then filters on event time, and a few parameters
//! (`--param token=tok_…`, `--param limit=20`) quoted as SQL literals, never pasted raw.
//!
//! The `calls` view (one row per call: its request, its response and its decisions joined
//! by `request_id`) is registered with every session, so ad-hoc questions need no
//! self-joins.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

/// A time range: `since` inclusive, `until` exclusive (open: up to now and beyond).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    pub since: DateTime<Utc>,
    pub until: Option<DateTime<Utc>>,
}

impl TimeRange {
    /// The predicate on a table of the archive: its day partitions first (pruned without
    /// reading a file), then the exact instants.
    pub fn predicate(&self) -> String {
        let mut predicate = format!(
            "dt >= '{}' AND ts >= TIMESTAMP '{}'",
            self.since.format("%Y-%m-%d"),
            self.since.format("%Y-%m-%dT%H:%M:%S%.6fZ")
        );
        if let Some(until) = self.until {
            predicate.push_str(&format!(
                " AND dt <= '{}' AND ts < TIMESTAMP '{}'",
                until.format("%Y-%m-%d"),
                until.format("%Y-%m-%dT%H:%M:%S%.6fZ")
            ));
        }
        predicate
    }
}

/// What a parameter holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ParamKind {
    /// Quoted as a string literal.
    Text,
    /// A whole number from 1 to 100,000.
    Count,
}

/// A parameter of a saved query, with its default if it has one.
#[derive(Debug, Clone, Copy)]
struct Param {
    name: &'static str,
    kind: ParamKind,
    default: Option<&'static str>,
    about: &'static str,
}

/// One saved query.
#[derive(Debug, Clone, Copy)]
pub struct SavedQuery {
    pub name: &'static str,
    pub about: &'static str,
    params: &'static [Param],
    /// `{range}` becomes the time range's predicate; `{NAME}` a parameter's literal.
    template: &'static str,
}

const LIMIT: Param = Param {
    name: "limit",
    kind: ParamKind::Count,
    default: Some("20"),
    about: "rows at most",
};

/// Every saved query.
pub const SAVED_QUERIES: &[SavedQuery] = &[
    SavedQuery {
        name: "top-sources",
        about: "who spends and calls most: clients, tokens, IPs, countries, with a sample call",
        params: &[LIMIT],
        template: "SELECT client.name AS client, client.token_id AS token_id, client.ip AS ip, \
                   client.country AS country, sum(coalesce(occurrences, 1)) AS calls, \
                   sum(response.cost_usd) AS spend_usd, sum(response.output_tokens) AS output_tokens, \
                   min(request_id) AS sample_request_id \
                   FROM events WHERE kind = 'response' AND {range} \
                   GROUP BY client.name, client.token_id, client.ip, client.country \
                   ORDER BY spend_usd DESC NULLS LAST, calls DESC LIMIT {limit}",
    },
    SavedQuery {
        name: "token-activity",
        about: "one token's calls by hour, IP, country and target, first and last seen, spend",
        params: &[Param {
            name: "token",
            kind: ParamKind::Text,
            default: None,
            about: "the token id (tok_…) as events show it",
        }],
        template: "SELECT date_trunc('hour', ts) AS hour_start, client.ip AS ip, \
                   client.country AS country, route.target_id AS target, \
                   sum(coalesce(occurrences, 1)) AS calls, sum(response.cost_usd) AS spend_usd, \
                   min(ts) AS first_seen, max(ts) AS last_seen \
                   FROM events WHERE client.token_id = {token} AND kind = 'response' \
                   AND {range} \
                   GROUP BY date_trunc('hour', ts), client.ip, client.country, route.target_id \
                   ORDER BY hour_start, calls DESC",
    },
    SavedQuery {
        name: "burn-by-hour",
        about: "spend and calls per hour, environment and target",
        params: &[],
        template: "SELECT date_trunc('hour', ts) AS hour_start, environment, \
                   route.target_id AS target, sum(response.cost_usd) AS spend_usd, \
                   sum(coalesce(occurrences, 1)) AS calls \
                   FROM events WHERE kind = 'response' AND {range} \
                   GROUP BY date_trunc('hour', ts), environment, route.target_id \
                   ORDER BY hour_start, spend_usd DESC NULLS LAST",
    },
    SavedQuery {
        name: "auth-failures-by-ip",
        about: "refused keys by IP: how many, how many distinct tokens tried, when",
        params: &[LIMIT],
        template: "SELECT client.ip AS ip, client.country AS country, \
                   sum(coalesce(occurrences, 1)) AS failures, \
                   count(DISTINCT client.token_id) AS distinct_tokens, \
                   min(ts) AS first_seen, max(ts) AS last_seen \
                   FROM events WHERE kind = 'policy_decision' AND decision.policy = 'auth' \
                   AND decision.outcome = 'deny' AND {range} \
                   GROUP BY client.ip, client.country ORDER BY failures DESC LIMIT {limit}",
    },
    SavedQuery {
        name: "retry-loops",
        about: "the same prompt sent again and again by one caller",
        params: &[
            Param {
                name: "min_repeats",
                kind: ParamKind::Count,
                default: Some("5"),
                about: "repeats that make a loop",
            },
            LIMIT,
        ],
        template: "SELECT client.name AS client, client.token_id AS token_id, \
                   request.prompt_hash AS prompt_hash, count(*) AS repeats, \
                   min(ts) AS first_seen, max(ts) AS last_seen \
                   FROM events WHERE kind = 'request' AND request.prompt_hash IS NOT NULL \
                   AND {range} \
                   GROUP BY client.name, client.token_id, request.prompt_hash \
                   HAVING count(*) >= {min_repeats} ORDER BY repeats DESC LIMIT {limit}",
    },
    SavedQuery {
        name: "incident-timeline",
        about: "an incident's entries, the actions it took, its alerts and notifications, in order",
        params: &[Param {
            name: "incident",
            kind: ParamKind::Text,
            default: None,
            about: "the incident id (inc-…) as `warden incident list` shows it",
        }],
        template: "SELECT ts, 'incident' AS source, kind AS what, coalesce(step, '') AS item, \
                   coalesce(outcome, '') AS outcome, detail \
                   FROM incidents WHERE incident_id = {incident} AND {range} \
                   UNION ALL SELECT ts, 'action', action, subject, actor, reason \
                   FROM actions WHERE incident_id = {incident} AND {range} \
                   UNION ALL SELECT ts, 'alert', status, detector || ' ' || subject, severity, summary \
                   FROM alerts WHERE (dedup_key = 'runbook/' || {incident} OR dedup_key IN \
                   (SELECT alert_dedup_key FROM incidents WHERE incident_id = {incident} \
                   AND {range})) AND {range} \
                   UNION ALL SELECT ts, 'notification', outcome, receiver, status, \
                   coalesce(error, '') FROM notifications \
                   WHERE array_has(dedup_keys, 'runbook/' || {incident}) AND {range} \
                   ORDER BY ts",
    },
];

/// The `calls` view: a call's request, response and decisions in one row.
pub const CALLS_VIEW: &str = "CREATE VIEW calls AS \
    SELECT q.request_id, q.ts, q.dt, q.hour, q.environment, q.proxy_id, \
    q.client.name AS client, q.client.token_id AS token_id, q.client.ip AS ip, \
    q.client.country AS country, q.route.endpoint AS endpoint, q.route.target_id AS target, \
    q.route.model AS model, q.route.stream AS stream, q.request.input_tokens AS input_tokens, \
    r.response.status AS status, r.response.latency_ms AS latency_ms, \
    r.response.ttft_ms AS ttft_ms, r.response.output_tokens AS output_tokens, \
    r.response.cost_usd AS cost_usd, r.response.error_type AS error_type, \
    r.response.finish_reason AS finish_reason, d.decisions \
    FROM (SELECT * FROM events WHERE kind = 'request') q \
    LEFT JOIN (SELECT * FROM events WHERE kind = 'response') r ON q.request_id = r.request_id \
    LEFT JOIN (SELECT request_id, string_agg(decision.policy || ':' || decision.outcome, ', ') \
    AS decisions FROM events WHERE kind = 'policy_decision' GROUP BY request_id) d \
    ON q.request_id = d.request_id";

/// The saved query called `name`.
pub fn find(name: &str) -> Result<&'static SavedQuery, String> {
    SAVED_QUERIES
        .iter()
        .find(|query| query.name == name)
        .ok_or_else(|| {
            let names: Vec<&str> = SAVED_QUERIES.iter().map(|query| query.name).collect();
            format!("no saved query {name:?} (one of {})", names.join(", "))
        })
}

impl SavedQuery {
    /// The SQL for `range` and `params` (every parameter checked; unknown ones refused).
    pub fn render(
        &self,
        range: &TimeRange,
        params: &BTreeMap<String, String>,
    ) -> Result<String, String> {
        for name in params.keys() {
            if !self.params.iter().any(|param| param.name == name) {
                return Err(format!(
                    "{}: no parameter {name:?}{}",
                    self.name,
                    self.usage()
                ));
            }
        }
        let mut sql = self.template.replace("{range}", &range.predicate());
        for param in self.params {
            let value = params
                .get(param.name)
                .map(String::as_str)
                .or(param.default)
                .ok_or_else(|| {
                    format!(
                        "{}: needs --param {}=…{}",
                        self.name,
                        param.name,
                        self.usage()
                    )
                })?;
            let literal = match param.kind {
                ParamKind::Text => format!("'{}'", value.replace('\'', "''")),
                ParamKind::Count => match value.parse::<u32>() {
                    Ok(count) if (1..=100_000).contains(&count) => count.to_string(),
                    _ => {
                        return Err(format!(
                            "{}: {} must be a whole number from 1 to 100000",
                            self.name, param.name
                        ));
                    }
                },
            };
            sql = sql.replace(&format!("{{{}}}", param.name), &literal);
        }
        Ok(sql)
    }

    /// ` (parameters: token — the token id …)`, or nothing.
    fn usage(&self) -> String {
        if self.params.is_empty() {
            return String::new();
        }
        let list: Vec<String> = self
            .params
            .iter()
            .map(|param| match param.default {
                Some(default) => format!("{} — {} (default {default})", param.name, param.about),
                None => format!("{} — {}", param.name, param.about),
            })
            .collect();
        format!(" (parameters: {})", list.join("; "))
    }
}

/// A number as people read it: up to 12 significant digits, no exponent between 1e-12 and
/// 1e15 (`0.0000074`, not `7.3999999999999995e-6`), trailing zeros dropped.
pub fn readable_number(value: f64) -> String {
    if !value.is_finite() {
        return value.to_string();
    }
    if value == 0.0 {
        return "0".to_owned();
    }
    let magnitude = value.abs();
    if !(1e-12..1e15).contains(&magnitude) {
        return format!("{value:e}");
    }
    let digits_before = magnitude.log10().floor() as i32;
    let decimals = (11 - digits_before).clamp(0, 15) as usize;
    let text = format!("{value:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_print_as_people_read_them() {
        assert_eq!(readable_number(7.3999999999999995e-6), "0.0000074");
        assert_eq!(readable_number(412.5), "412.5");
        assert_eq!(readable_number(3.0), "3");
        assert_eq!(readable_number(0.1 + 0.2), "0.3");
        assert_eq!(readable_number(-0.00042), "-0.00042");
        assert_eq!(readable_number(0.0), "0");
    }

    #[test]
    fn parameters_are_checked_and_quoted_never_pasted() {
        let range = TimeRange {
            since: DateTime::parse_from_rfc3339("2026-12-01T10:00:00Z")
                .expect("instant")
                .with_timezone(&Utc),
            until: None,
        };
        let activity = find("token-activity").expect("saved");
        let hostile = BTreeMap::from([("token".to_owned(), "x' OR '1'='1".to_owned())]);
        let sql = activity.render(&range, &hostile).expect("rendered");
        assert!(
            sql.contains("client.token_id = 'x'' OR ''1''=''1'"),
            "{sql}"
        );
        assert!(
            sql.contains("dt >= '2026-12-01' AND ts >= TIMESTAMP '2026-12-01T10:00:00.000000Z'"),
            "{sql}"
        );
        let missing = activity
            .render(&range, &BTreeMap::new())
            .expect_err("needs a token");
        assert!(missing.contains("--param token"), "{missing}");
        let top = find("top-sources").expect("saved");
        let bad = BTreeMap::from([("limit".to_owned(), "1; DROP".to_owned())]);
        assert!(top.render(&range, &bad).is_err());
        let unknown = BTreeMap::from([("colour".to_owned(), "red".to_owned())]);
        assert!(
            top.render(&range, &unknown)
                .expect_err("unknown")
                .contains("no parameter")
        );
        assert!(find("nope").expect_err("unknown").contains("top-sources"));
    }
}
