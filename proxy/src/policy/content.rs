//! Member `content`: the content filter (hate speech, harassment, toxicity, self-harm,
//! sexual) on every text of a request and, with `responses = true`, on the answer — a whole
//! one before it is sent, a streamed one through the stream writer's
//! [`OutputGuard`](crate::stream::OutputGuard), which ends it with an error chunk when a
//! blocked category appears. A category under `block` refuses the call with a 400
//! `content_policy_violation` naming the category; one under `log` is only recorded. The
//! decision (`policy = "content"`) records the category, its score and the rule ids, never
//! the words.

use serde_json::{Map, Value};

use crate::audit::CallAudit;
use crate::config::{ContentSettings, GuardAction, content_action};
use crate::error::ProxyError;
use crate::guard::content::{Category, ContentFilter, Finding};
use crate::guard::normalize::NormalizedTexts;
use crate::policy::texts::{Texts, visit_texts};

/// The configured `content` member.
#[derive(Debug)]
pub(crate) struct ContentPolicy {
    actions: Vec<(Category, GuardAction)>,
    answers: bool,
    filter: ContentFilter,
    pub(crate) fail_closed: bool,
}

impl ContentPolicy {
    pub(crate) fn new(settings: &ContentSettings) -> Self {
        let categories: Vec<Category> = settings.categories.iter().map(|(c, _)| *c).collect();
        Self {
            actions: settings.categories.clone(),
            answers: settings.responses,
            filter: ContentFilter::new(&categories),
            fail_closed: settings.fail_closed,
        }
    }

    /// Applies the member to `request`.
    pub(crate) fn guard_request(
        &self,
        call: &mut CallAudit,
        request: &mut Map<String, Value>,
        normalized: &mut NormalizedTexts,
    ) -> Result<(), ProxyError> {
        let mut found: Vec<Finding> = Vec::new();
        visit_texts(request, Texts::All, &mut |text| {
            for finding in self.filter.find_normalized(&normalized.get(text).text) {
                match found.iter_mut().find(|f| f.category == finding.category) {
                    Some(known) if known.score >= finding.score => {}
                    Some(known) => *known = finding,
                    None => found.push(finding),
                }
            }
        });
        if self.answers {
            call.output_guard
                .get_or_insert_default()
                .with_content(self.filter.clone(), self.actions.clone());
        }
        let mut blocked = None;
        for finding in &found {
            let reason = finding.describe();
            match content_action(&self.actions, finding.category) {
                GuardAction::Log => call.decided("content", "log", Some(&reason)),
                GuardAction::Block => {
                    call.decided("content", "deny", Some(&reason));
                    blocked.get_or_insert(finding.category);
                }
            }
        }
        match blocked {
            Some(category) => Err(ProxyError::ContentPolicy(category.to_string())),
            None => Ok(()),
        }
    }
}
