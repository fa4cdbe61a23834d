//! Member `budget`: spend caps in USD per client, team or department (`[[proxy.budgets]]`),
//! per calendar hour, day or month (UTC), settled with each response's `cost_usd`.
//!
//! A call is admitted while its budgets have something left, counting what calls still in
//! flight have reserved: at admission each reserves its estimated cost (the target's
//! prices on the prompt estimate and the call's `max_tokens`), and when its response event
//! goes out the reservation is replaced by its real cost. So concurrent calls cannot run a
//! budget past its cap by more than about one call. At the cap, `action = "deny"` refuses
//! with 429 `insufficient_quota`; `alert_only` lets the call through and records an `alert`
//! decision (and a warning once per budget and window).
//!
//! Calls to a target without `pricing` cost nothing here. Like rate limits, spend is counted
//! per replica: on `N` replicas, set each a cap of `total / N`.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Datelike, Utc};
use tracing::warn;

/// Whom a budget caps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BudgetSubject {
    Client(String),
    Team(String),
    Department(String),
}

impl BudgetSubject {
    fn describe(&self) -> String {
        match self {
            Self::Client(name) => format!("client {name}"),
            Self::Team(team) => format!("team {team}"),
            Self::Department(department) => format!("department {department}"),
        }
    }
}

/// A budget's calendar window (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetPeriod {
    Hour,
    Day,
    Month,
}

impl BudgetPeriod {
    /// Which window `at` falls in: windows of a period are numbered in order.
    fn window(self, at: DateTime<Utc>) -> i64 {
        match self {
            Self::Hour => at.timestamp().div_euclid(3_600),
            Self::Day => at.timestamp().div_euclid(86_400),
            Self::Month => i64::from(at.year()) * 12 + i64::from(at.month0()),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Hour => "hour",
            Self::Day => "day",
            Self::Month => "month",
        }
    }
}

/// What happens at the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetAction {
    Deny,
    AlertOnly,
}

/// A validated `[[proxy.budgets]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    pub subject: BudgetSubject,
    /// Each period's cap, in USD.
    pub caps: Vec<(BudgetPeriod, f64)>,
    pub action: BudgetAction,
}

/// The labels of a call's client that budgets match on.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct BudgetLabels<'a> {
    pub client: Option<&'a str>,
    pub team: Option<&'a str>,
    pub department: Option<&'a str>,
}

impl Budget {
    fn applies_to(&self, labels: &BudgetLabels<'_>) -> bool {
        match &self.subject {
            BudgetSubject::Client(name) => labels.client == Some(name.as_str()),
            BudgetSubject::Team(team) => labels.team == Some(team.as_str()),
            BudgetSubject::Department(department) => labels.department == Some(department.as_str()),
        }
    }
}

const MICROS_PER_USD: f64 = 1_000_000.0;

/// Most budgets that may apply to one client (its own, its team's, its department's):
/// checked at start, so a call's list needs no allocation.
pub(crate) const MAX_BUDGETS_PER_CALL: usize = 8;

fn micros(usd: f64) -> u64 {
    if usd.is_finite() && usd > 0.0 {
        (usd * MICROS_PER_USD).round() as u64
    } else {
        0
    }
}

/// One cap's spend in its current window.
#[derive(Debug, Clone, Copy, Default)]
struct WindowSpend {
    window: i64,
    spent: u64,
    /// What calls in flight reserved.
    reserved: u64,
    /// The cap's warning for this window was logged.
    warned: bool,
}

#[derive(Debug)]
struct BudgetState {
    budget: Budget,
    /// One per cap, in `budget.caps` order.
    spend: Mutex<Vec<WindowSpend>>,
}

/// Every configured budget and its spend.
#[derive(Debug)]
pub(crate) struct Budgets {
    budgets: Vec<BudgetState>,
}

/// Why a call may not spend more.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct OverBudget {
    /// `team payments: 50.00 USD per day spent`.
    pub reason: String,
    pub action: BudgetAction,
}

/// What a call reserved, replaced by its real cost when it ends.
#[derive(Debug)]
pub(crate) struct BudgetHold {
    budgets: Arc<Budgets>,
    /// (budget index, reserved micro-USD, the windows reserved in).
    reservations: Vec<(usize, u64, Vec<i64>)>,
}

impl BudgetHold {
    /// Replaces the reservations with the call's real cost (none known: nothing spent).
    pub(crate) fn settle(self, cost_usd: Option<f64>, at: DateTime<Utc>) {
        let cost = micros(cost_usd.unwrap_or(0.0));
        for (index, reserved, windows) in &self.reservations {
            let state = &self.budgets.budgets[*index];
            let mut spend = state.spend.lock().unwrap_or_else(|p| p.into_inner());
            for ((cap, window_spend), reserved_in) in
                state.budget.caps.iter().zip(spend.iter_mut()).zip(windows)
            {
                let window = cap.0.window(at);
                if window_spend.window == *reserved_in {
                    window_spend.reserved = window_spend.reserved.saturating_sub(*reserved);
                }
                roll(window_spend, window);
                window_spend.spent = window_spend.spent.saturating_add(cost);
            }
        }
    }
}

/// Starts a new window's spend when `window` is later than the one kept.
fn roll(spend: &mut WindowSpend, window: i64) {
    if window > spend.window {
        *spend = WindowSpend {
            window,
            ..WindowSpend::default()
        };
    }
}

/// What the budgets said about an admitted call.
#[derive(Debug, Default)]
pub(crate) struct BudgetGrant {
    pub hold: Option<BudgetHold>,
    /// Over an `alert_only` budget: the call goes through, recorded.
    pub alerts: Vec<String>,
}

impl Budgets {
    pub(crate) fn new(budgets: Vec<Budget>) -> Arc<Self> {
        Arc::new(Self {
            budgets: budgets
                .into_iter()
                .map(|budget| BudgetState {
                    spend: Mutex::new(vec![WindowSpend::default(); budget.caps.len()]),
                    budget,
                })
                .collect(),
        })
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.budgets.is_empty()
    }

    /// Checks every budget of the call's client at `now`, and reserves `estimate_usd` in
    /// those it passes. A `deny` budget at its cap refuses the call (undoing nothing: no
    /// reservation is made before every budget has been checked).
    pub(crate) fn admit(
        self: &Arc<Self>,
        labels: &BudgetLabels<'_>,
        estimate_usd: f64,
        now: DateTime<Utc>,
    ) -> Result<BudgetGrant, OverBudget> {
        // Most calls fall under one budget or two: no allocation for the list.
        let mut applicable = [0usize; MAX_BUDGETS_PER_CALL];
        let mut count = 0;
        for (index, state) in self.budgets.iter().enumerate() {
            if state.budget.applies_to(labels) && count < MAX_BUDGETS_PER_CALL {
                applicable[count] = index;
                count += 1;
            }
        }
        let applicable = &applicable[..count];
        if applicable.is_empty() {
            return Ok(BudgetGrant::default());
        }
        let mut alerts = Vec::new();
        for index in applicable {
            let state = &self.budgets[*index];
            let mut spend = state.spend.lock().unwrap_or_else(|p| p.into_inner());
            for ((period, cap), window_spend) in state.budget.caps.iter().zip(spend.iter_mut()) {
                roll(window_spend, period.window(now));
                let committed = window_spend.spent.saturating_add(window_spend.reserved);
                if committed < micros(*cap) {
                    continue;
                }
                let reason = format!(
                    "{}: {:.2} USD per {} reached",
                    state.budget.subject.describe(),
                    cap,
                    period.as_str()
                );
                if !window_spend.warned {
                    window_spend.warned = true;
                    warn!(budget = %reason, action = ?state.budget.action, "budget reached");
                }
                match state.budget.action {
                    BudgetAction::Deny => {
                        return Err(OverBudget {
                            reason,
                            action: BudgetAction::Deny,
                        });
                    }
                    BudgetAction::AlertOnly => alerts.push(reason),
                }
            }
        }
        let estimate = micros(estimate_usd);
        let mut reservations = Vec::new();
        for &index in applicable {
            let state = &self.budgets[index];
            let mut spend = state.spend.lock().unwrap_or_else(|p| p.into_inner());
            let mut windows = Vec::with_capacity(spend.len());
            for window_spend in spend.iter_mut() {
                window_spend.reserved = window_spend.reserved.saturating_add(estimate);
                windows.push(window_spend.window);
            }
            reservations.push((index, estimate, windows));
        }
        Ok(BudgetGrant {
            hold: Some(BudgetHold {
                budgets: Arc::clone(self),
                reservations,
            }),
            alerts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("instant")
            .with_timezone(&Utc)
    }

    fn payments(action: BudgetAction) -> Arc<Budgets> {
        Budgets::new(vec![Budget {
            subject: BudgetSubject::Team("payments".to_owned()),
            caps: vec![(BudgetPeriod::Day, 1.0)],
            action,
        }])
    }

    const TEAM: BudgetLabels<'static> = BudgetLabels {
        client: Some("app"),
        team: Some("payments"),
        department: None,
    };

    #[test]
    fn a_team_is_refused_once_its_day_is_spent_and_served_again_the_next_day() {
        let budgets = payments(BudgetAction::Deny);
        let noon = at("2026-12-02T12:00:00Z");
        for _ in 0..4 {
            let grant = budgets.admit(&TEAM, 0.10, noon).expect("within budget");
            grant.hold.expect("held").settle(Some(0.25), noon);
        }
        let refused = budgets.admit(&TEAM, 0.10, noon).expect_err("spent");
        assert_eq!(refused.reason, "team payments: 1.00 USD per day reached");
        // Other teams are not capped by it.
        let other = BudgetLabels {
            team: Some("search"),
            ..TEAM
        };
        assert!(budgets.admit(&other, 0.10, noon).is_ok());
        assert!(
            budgets
                .admit(&TEAM, 0.10, at("2026-12-03T00:00:01Z"))
                .is_ok()
        );
    }

    #[test]
    fn calls_in_flight_count_against_the_budget_by_their_reservation() {
        let budgets = payments(BudgetAction::Deny);
        let noon = at("2026-12-02T12:00:00Z");
        let holds: Vec<BudgetHold> = (0..4)
            .map(|_| {
                budgets
                    .admit(&TEAM, 0.25, noon)
                    .expect("admitted")
                    .hold
                    .expect("held")
            })
            .collect();
        assert!(
            budgets.admit(&TEAM, 0.25, noon).is_err(),
            "reserved in full"
        );
        // They cost less than reserved: the difference comes back.
        for hold in holds {
            hold.settle(Some(0.05), noon);
        }
        assert!(budgets.admit(&TEAM, 0.25, noon).is_ok());
    }

    #[test]
    fn an_alert_only_budget_lets_calls_through_and_says_so() {
        let budgets = payments(BudgetAction::AlertOnly);
        let noon = at("2026-12-02T12:00:00Z");
        budgets
            .admit(&TEAM, 0.0, noon)
            .expect("admitted")
            .hold
            .expect("held")
            .settle(Some(2.0), noon);
        let grant = budgets.admit(&TEAM, 0.0, noon).expect("let through");
        assert_eq!(grant.alerts, ["team payments: 1.00 USD per day reached"]);
    }

    #[test]
    fn months_roll_over_on_the_calendar() {
        assert_eq!(
            BudgetPeriod::Month.window(at("2026-12-31T23:59:59Z")) + 1,
            BudgetPeriod::Month.window(at("2027-01-01T00:00:00Z"))
        );
    }
}
