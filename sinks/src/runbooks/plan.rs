//! From an alert to a plan: what each step of the runbook will act on, decided once, when
//! the incident opens, and recorded with it (so a restarted engine carries out the same
//! plan, not a new one computed from a changed world).

use warden_ingest::alert::{Alert, Subject};

use super::config::{Mode, RunbookKind, RunbookSettings, Step};
use super::incident::{Plan, PlannedAction};

/// A proxy target as the runbooks see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunbookTarget {
    pub id: String,
    /// The Inference Endpoint behind it (`namespace/name`), if any.
    pub endpoint: Option<String>,
    /// The floor a runbook never scales below.
    pub min_replicas: u32,
}

/// A proxy client as the runbooks see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunbookClient {
    pub name: String,
    /// The responder receiver that reaches the client's owner.
    pub owner_receiver: Option<String>,
    /// Never revoked without approval.
    pub critical: bool,
}

/// What the plan is computed from besides the alert.
#[derive(Debug, Clone, Copy)]
pub struct PlanInputs<'a> {
    pub targets: &'a [RunbookTarget],
    pub clients: &'a [RunbookClient],
    /// The client the alert's token belongs to, when the archive knows.
    pub token_client: Option<&'a str>,
}

/// The plan of `runbook` for `alert`, in `mode`.
pub fn plan(runbook: &RunbookSettings, mode: Mode, alert: &Alert, inputs: PlanInputs) -> Plan {
    let mut actions = Vec::new();
    for &step in &runbook.steps {
        match runbook.kind {
            RunbookKind::RunawayCost => runaway_step(runbook, step, alert, inputs, &mut actions),
            RunbookKind::TokenCompromise => token_step(step, alert, inputs, &mut actions),
        }
    }
    for action in &mut actions {
        let infrastructure = action.step().is_some_and(Step::changes_infrastructure);
        action.needs_approval |= mode == Mode::Approve && infrastructure;
    }
    Plan { actions }
}

fn runaway_step(
    runbook: &RunbookSettings,
    step: Step,
    alert: &Alert,
    inputs: PlanInputs,
    actions: &mut Vec<PlannedAction>,
) {
    let subject = alert.subject.to_string();
    match step {
        Step::BurnRate => actions.push(PlannedAction::new(
            step,
            &subject,
            format!(
                "attach the burn rate: {} {} against {} ({})",
                alert.observed, alert.unit, alert.threshold, alert.summary
            ),
        )),
        Step::TopSources => actions.push(PlannedAction::new(
            step,
            &subject,
            "report the top sources: the alert's live window and the archive's last hour",
        )),
        Step::DisableAutoscaling | Step::ScaleDown => {
            let targets = affected_targets(alert, inputs.targets);
            if targets.is_empty() {
                let mut action = PlannedAction::new(
                    step,
                    "no-endpoint",
                    "no target behind this alert has an `endpoint`: nothing to scale",
                );
                action.needs_approval = false;
                actions.push(action);
            }
            for target in targets {
                let endpoint = target.endpoint.clone().unwrap_or_default();
                let on = format!("target:{}", target.id);
                let detail = if step == Step::DisableAutoscaling {
                    format!(
                        "pin {endpoint} (target {}) at the replicas running now",
                        target.id
                    )
                } else {
                    format!(
                        "scale {endpoint} (target {}) to {} replica(s), its floor",
                        target.id, target.min_replicas
                    )
                };
                let mut action = PlannedAction::new(step, &on, detail);
                action.target = Some(target.id.clone());
                action.endpoint = Some(endpoint);
                action.floor = Some(target.min_replicas);
                if step == Step::ScaleDown {
                    action.replicas = Some(target.min_replicas);
                }
                actions.push(action);
            }
        }
        Step::EmergencyRateLimit => {
            let limit = runbook.emergency_requests_per_minute;
            for source in limit_subjects(runbook, alert, inputs.targets) {
                let on = source.to_string();
                let mut action = PlannedAction::new(
                    step,
                    &on,
                    format!(
                        "limit {on} to {limit} requests/minute for {} minutes",
                        runbook.emergency_for.num_minutes()
                    ),
                );
                action.subject = Some(on);
                action.limit_per_minute = Some(limit);
                actions.push(action);
            }
        }
        Step::Incident => actions.push(PlannedAction::new(
            step,
            &subject,
            "record the incident with the SQL to continue the root cause analysis",
        )),
        _ => {}
    }
}

fn token_step(step: Step, alert: &Alert, inputs: PlanInputs, actions: &mut Vec<PlannedAction>) {
    let subject = alert.subject.to_string();
    let client_name = match &alert.subject {
        Subject::Client(name) => Some(name.as_str()),
        _ => inputs.token_client,
    };
    let client = client_name.and_then(|name| inputs.clients.iter().find(|c| c.name == name));
    match step {
        Step::Revoke => {
            let revocable = matches!(alert.subject, Subject::Token(_) | Subject::Client(_));
            let mut action = PlannedAction::new(
                step,
                &subject,
                if revocable {
                    format!("revoke {subject} on every proxy")
                } else {
                    format!("{subject} is not a token or a client: nothing to revoke")
                },
            );
            if revocable {
                action.subject = Some(subject.clone());
                // Guard rail: a client the operator marked critical is never revoked by a
                // program alone, nor is a token whose client nobody can tell while one is.
                let any_critical = inputs.clients.iter().any(|c| c.critical);
                action.needs_approval = match client_name {
                    Some(_) => client.is_some_and(|client| client.critical),
                    None => any_critical,
                };
                if action.needs_approval {
                    action.detail.push_str(
                        " (a critical client, or one that cannot be told apart from one: \
                         waits for approval)",
                    );
                }
            }
            actions.push(action);
        }
        Step::AccessReport => actions.push(PlannedAction::new(
            step,
            &subject,
            format!("report {subject}'s calls by IP, country, hour and target"),
        )),
        Step::NotifyOwner => {
            let receiver = client.and_then(|client| client.owner_receiver.clone());
            let mut action = PlannedAction::new(
                step,
                &subject,
                match (&receiver, client_name) {
                    (Some(receiver), Some(name)) => {
                        format!("tell {name}'s owner (receiver {receiver}) how to rotate the key")
                    }
                    (None, Some(name)) => {
                        format!("client {name} has no owner_receiver: nobody to tell")
                    }
                    _ => "tell the owner of the token's client (looked up in the archive when \
                          the step runs) how to rotate the key"
                        .to_owned(),
                },
            );
            action.receiver = receiver;
            action.subject = client_name.map(|name| format!("client:{name}"));
            actions.push(action);
        }
        Step::WatchRetries => actions.push(PlannedAction::new(
            step,
            &subject,
            "retries with the revoked key (the revoked_token detector) join this incident",
        )),
        _ => {}
    }
}

/// The targets a runaway is about: the alert's own target, else the targets its top
/// sources name, else every target with an endpoint.
fn affected_targets<'t>(alert: &Alert, targets: &'t [RunbookTarget]) -> Vec<&'t RunbookTarget> {
    let with_endpoint = |id: &str| {
        targets
            .iter()
            .find(|target| target.id == id && target.endpoint.is_some())
    };
    if let Subject::Target(id) = &alert.subject {
        return with_endpoint(id).into_iter().collect();
    }
    let named: Vec<&RunbookTarget> = alert
        .evidence
        .top_sources
        .iter()
        .filter_map(|share| share.source.strip_prefix("target:"))
        .filter_map(with_endpoint)
        .collect();
    if !named.is_empty() {
        return named;
    }
    targets
        .iter()
        .filter(|target| target.endpoint.is_some())
        .collect()
}

/// Whom the emergency limit applies to: the alert's own client or token, then its top
/// sources — clients and tokens before IPs (a client keeps its key when it changes address)
/// — else the affected targets.
fn limit_subjects(
    runbook: &RunbookSettings,
    alert: &Alert,
    targets: &[RunbookTarget],
) -> Vec<Subject> {
    let rank = |subject: &Subject| match subject {
        Subject::Client(_) => Some(0),
        Subject::Token(_) => Some(1),
        Subject::Ip(_) => Some(2),
        _ => None,
    };
    let mut candidates: Vec<Subject> = std::iter::once(alert.subject.clone())
        .filter(|subject| matches!(subject, Subject::Client(_) | Subject::Token(_)))
        .collect();
    let mut sources: Vec<(usize, Subject)> = alert
        .evidence
        .top_sources
        .iter()
        .filter_map(|share| share.source.parse::<Subject>().ok())
        .enumerate()
        .filter_map(|(order, subject)| rank(&subject).map(|rank| (rank * 1_000 + order, subject)))
        .collect();
    sources.sort_by_key(|(rank, _)| *rank);
    for (_, subject) in sources {
        if !candidates.contains(&subject) {
            candidates.push(subject);
        }
    }
    candidates.truncate(runbook.emergency_top_sources);
    if candidates.is_empty() && alert.subject != Subject::Global {
        candidates.push(alert.subject.clone());
    }
    if candidates.is_empty() {
        candidates.extend(
            affected_targets(alert, targets)
                .into_iter()
                .map(|target| Subject::Target(target.id.clone())),
        );
    }
    candidates
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use warden_ingest::alert::{Severity, SourceShare};

    use super::*;
    use crate::runbooks::config::RunbooksSettings;

    fn targets() -> Vec<RunbookTarget> {
        vec![
            RunbookTarget {
                id: "llama-70b".into(),
                endpoint: Some("my-org/llama-70b-prod".into()),
                min_replicas: 1,
            },
            RunbookTarget {
                id: "serverless".into(),
                endpoint: None,
                min_replicas: 0,
            },
        ]
    }

    fn runaway_alert() -> Alert {
        let now = Utc::now();
        let mut alert = Alert::firing("cost_burn", Severity::Critical, Subject::Global, (now, now));
        alert.evidence.top_sources = vec![
            SourceShare {
                source: "client:batch".into(),
                value: 700.0,
            },
            SourceShare {
                source: "client:web".into(),
                value: 20.0,
            },
        ];
        alert.runbook = Some("runaway_cost".into());
        alert
    }

    #[test]
    fn a_runaway_plan_scales_the_endpoints_and_limits_the_top_source() {
        let settings = RunbooksSettings::default();
        let runbook = settings.runbook(RunbookKind::RunawayCost).expect("runbook");
        let targets = targets();
        let inputs = PlanInputs {
            targets: &targets,
            clients: &[],
            token_client: None,
        };
        let plan = plan(runbook, Mode::Approve, &runaway_alert(), inputs);
        let keys: Vec<&str> = plan.actions.iter().map(|a| a.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "burn_rate/global",
                "top_sources/global",
                "disable_autoscaling/target:llama-70b",
                "scale_down/target:llama-70b",
                "emergency_rate_limit/client:batch",
                "incident/global",
            ]
        );
        let scale = &plan.actions[3];
        assert_eq!(scale.replicas, Some(1));
        assert!(scale.needs_approval, "infrastructure waits in approve mode");
        assert!(!plan.actions[4].needs_approval, "the limit does not");
    }

    #[test]
    fn the_emergency_limit_goes_to_the_client_before_its_address() {
        let settings = RunbooksSettings::default();
        let runbook = settings.runbook(RunbookKind::RunawayCost).expect("runbook");
        let now = Utc::now();
        let mut alert = Alert::firing(
            "single_source",
            Severity::Warning,
            Subject::Client("app-batch".into()),
            (now, now),
        );
        alert.evidence.top_sources = vec![SourceShare {
            source: "ip:198.18.0.5".into(),
            value: 800.0,
        }];
        let subjects = limit_subjects(runbook, &alert, &targets());
        assert_eq!(subjects, [Subject::Client("app-batch".into())]);
        alert.subject = Subject::Global;
        let subjects = limit_subjects(runbook, &alert, &targets());
        assert_eq!(subjects, [Subject::Ip("198.18.0.5".into())]);
    }

    #[test]
    fn revoking_a_critical_client_waits_for_approval_even_in_auto() {
        let settings = RunbooksSettings::default();
        let runbook = settings
            .runbook(RunbookKind::TokenCompromise)
            .expect("runbook");
        let now = Utc::now();
        let alert = Alert::firing(
            "geo_new_country",
            Severity::Critical,
            Subject::Token("tok_1".into()),
            (now, now),
        );
        let clients = vec![RunbookClient {
            name: "payments".into(),
            owner_receiver: Some("payments-team".into()),
            critical: true,
        }];
        let inputs = |token_client| PlanInputs {
            targets: &[],
            clients: &clients,
            token_client,
        };
        let known = plan(runbook, Mode::Auto, &alert, inputs(Some("payments")));
        assert!(known.actions[0].needs_approval);
        assert_eq!(known.actions[2].receiver.as_deref(), Some("payments-team"));
        let unknown = plan(runbook, Mode::Auto, &alert, inputs(None));
        assert!(unknown.actions[0].needs_approval, "cannot tell: be safe");
        let other = plan(runbook, Mode::Auto, &alert, inputs(Some("web")));
        assert!(!other.actions[0].needs_approval);
    }
}
