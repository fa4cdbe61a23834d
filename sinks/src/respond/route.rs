//! The routing tree (Alertmanager's): an alert walks down from the root; at each level the
//! first child that matches takes it (further siblings too when that child says
//! `continue`), and the deepest matching routes are where it goes. The root matches every
//! alert, so an alert no route takes lands on the root's receivers (`default_receivers`).
//!
//! Each matched route puts the alert in one of its groups: the alerts sharing the values of
//! the route's `group_by` labels.

use std::fmt::Write as _;
use std::time::Duration;

use warden_ingest::alert::Alert;

use super::labels::{LabelName, Matchers};

/// A route's timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How long a new group waits before its first notification (inhibitors may arrive).
    pub group_wait: Duration,
    /// How often a group is looked at again for what changed.
    pub group_interval: Duration,
    /// How long before an unchanged group is notified again.
    pub repeat_interval: Duration,
}

/// How a route groups its alerts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupBy {
    /// By the values of these labels (none: one group for every alert of the route).
    Labels(Vec<LabelName>),
    /// `["..."]`: every alert (dedup key) its own group.
    EveryAlert,
}

/// One route.
#[derive(Debug, Clone)]
pub struct Route {
    /// Where it is configured (`routes[0].routes[1]`; the root is `respond`): part of the
    /// key of its groups, so a config change that moves a route starts fresh groups.
    pub id: String,
    pub matchers: Matchers,
    pub receivers: Vec<String>,
    pub group_by: GroupBy,
    pub timing: Timing,
    pub continue_matching: bool,
    pub children: Vec<Route>,
}

impl Route {
    /// The key of the group `alert` joins on this route: the route and the grouping label
    /// values, e.g. `routes[0]{detector="cost_burn",subject="client:app"}`.
    pub fn group_key(&self, alert: &Alert) -> String {
        let mut key = String::with_capacity(self.id.len() + 64);
        key.push_str(&self.id);
        key.push('{');
        match &self.group_by {
            GroupBy::EveryAlert => {
                let _ = write!(key, "dedup_key={:?}", alert.dedup_key);
            }
            GroupBy::Labels(labels) => {
                for (index, label) in labels.iter().enumerate() {
                    if index > 0 {
                        key.push(',');
                    }
                    let _ = write!(key, "{label}={:?}", label.value(alert).to_text());
                }
            }
        }
        key.push('}');
        key
    }

    /// The grouping labels and their values for `alert` (for notifications' `groupLabels`).
    pub fn group_labels(&self, alert: &Alert) -> Vec<(LabelName, String)> {
        match &self.group_by {
            GroupBy::EveryAlert => vec![(LabelName::DedupKey, alert.dedup_key.clone())],
            GroupBy::Labels(labels) => labels
                .iter()
                .map(|label| (*label, label.value(alert).to_text()))
                .collect(),
        }
    }
}

/// The validated tree.
#[derive(Debug, Clone)]
pub struct RouteTree {
    root: Route,
}

impl RouteTree {
    pub fn new(root: Route) -> Self {
        Self { root }
    }

    pub fn root(&self) -> &Route {
        &self.root
    }

    /// The routes `alert` goes to, in tree order.
    pub fn matching<'r>(&'r self, alert: &Alert) -> Vec<&'r Route> {
        let mut matched = Vec::new();
        descend(&self.root, alert, &mut matched);
        matched
    }
}

/// Appends the routes under `route` (which matches `alert`) that take it: its matching
/// children's, else itself.
fn descend<'r>(route: &'r Route, alert: &Alert, matched: &mut Vec<&'r Route>) {
    let before = matched.len();
    for child in &route.children {
        if child.matchers.matches(alert) {
            descend(child, alert, matched);
            if !child.continue_matching {
                break;
            }
        }
    }
    if matched.len() == before {
        matched.push(route);
    }
}

#[cfg(test)]
mod tests {
    use warden_ingest::alert::Severity;

    use super::super::config::RespondConfig;
    use super::super::labels::tests::alert;
    use super::*;

    fn tree(routes: &str) -> RouteTree {
        let text = format!(
            r#"
            [respond]
            default_receivers = ["default"]
            [[respond.receivers]]
            name = "default"
            kind = "webhook"
            url = "http://127.0.0.1:1/default"
            [[respond.receivers]]
            name = "sec"
            kind = "webhook"
            url = "http://127.0.0.1:1/sec"
            [[respond.receivers]]
            name = "cost"
            kind = "webhook"
            url = "http://127.0.0.1:1/cost"
            {routes}
            "#
        );
        RespondConfig::from_toml(&text)
            .expect("parses")
            .validate(&|_| None)
            .expect("valid")
            .routes
    }

    fn receivers(tree: &RouteTree, detector: &str, severity: Severity) -> Vec<String> {
        tree.matching(&alert(detector, severity, "client:app"))
            .into_iter()
            .flat_map(|route| route.receivers.clone())
            .collect()
    }

    #[test]
    fn first_match_wins_unless_it_continues_and_unmatched_alerts_go_to_the_default() {
        let tree = tree(
            r#"
            [[respond.routes]]
            match = { severity = "critical" }
            receivers = ["sec"]
            continue = true
            [[respond.routes]]
            match_re = { detector = "cost_.*" }
            receivers = ["cost"]
            [[respond.routes]]
            match = { severity = "critical" }
            receivers = ["default"]
            "#,
        );
        assert_eq!(
            receivers(&tree, "cost_burn", Severity::Critical),
            ["sec", "cost"]
        );
        assert_eq!(
            receivers(&tree, "auth_failures", Severity::Critical),
            ["sec", "default"]
        );
        assert_eq!(receivers(&tree, "cost_burn", Severity::Warning), ["cost"]);
        assert_eq!(
            receivers(&tree, "traffic_spike", Severity::Info),
            ["default"]
        );
    }

    #[test]
    fn children_inherit_grouping_and_timers_and_the_deepest_match_takes_the_alert() {
        let tree = tree(
            r#"
            [[respond.routes]]
            match = { detector = "cost_burn" }
            receivers = ["cost"]
            group_by = ["detector"]
            group_wait_s = 5
            [[respond.routes.routes]]
            match = { severity = "critical" }
            receivers = ["sec"]
            "#,
        );
        let critical = alert("cost_burn", Severity::Critical, "client:app");
        let routes = tree.matching(&critical);
        assert_eq!(routes.len(), 1);
        assert_eq!(routes[0].receivers, ["sec"]);
        assert_eq!(routes[0].timing.group_wait, Duration::from_secs(5));
        assert_eq!(
            routes[0].group_key(&critical),
            "routes[0].routes[0]{detector=\"cost_burn\"}"
        );
        let warning = alert("cost_burn", Severity::Warning, "client:other");
        assert_eq!(tree.matching(&warning)[0].receivers, ["cost"]);
    }
}
