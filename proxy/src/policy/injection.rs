//! Member `injection`: the prompt-injection guardrail on what the caller and its tools
//! wrote — user messages, a completions prompt, and tool outputs fed back (indirect
//! injection) — never the operator's system prompt. Each text is scored by the
//! [detector](crate::guard::injection); the call's score is its worst text's. At the
//! threshold the call is refused with a 400 `prompt_injection` (`block`: it never reaches
//! the upstream) or only recorded (`log`). The decision (`policy = "injection"`) records the
//! score and the rule ids, never the text.

use serde_json::{Map, Value};

use crate::audit::CallAudit;
use crate::config::{GuardAction, InjectionSettings};
use crate::error::ProxyError;
use crate::guard::injection::{InjectionDetector, Verdict};
use crate::guard::normalize::NormalizedTexts;
use crate::policy::texts::{Texts, visit_texts};

/// The configured `injection` member.
#[derive(Debug)]
pub(crate) struct InjectionPolicy {
    action: GuardAction,
    threshold: f64,
    texts: Texts,
    detector: InjectionDetector,
    pub(crate) fail_closed: bool,
}

impl InjectionPolicy {
    pub(crate) fn new(settings: &InjectionSettings) -> Self {
        Self {
            action: settings.action,
            threshold: settings.threshold,
            texts: Texts::Untrusted {
                tool_outputs: settings.tool_outputs,
            },
            detector: InjectionDetector,
            fail_closed: settings.fail_closed,
        }
    }

    /// The worst-scoring text of `request`.
    fn worst(&self, request: &mut Map<String, Value>, normalized: &mut NormalizedTexts) -> Verdict {
        let mut worst = Verdict::default();
        visit_texts(request, self.texts, &mut |text| {
            let verdict = self.detector.score_normalized(text, normalized.get(text));
            if verdict.score > worst.score {
                worst = verdict;
            }
        });
        worst
    }

    /// Applies the member to `request`.
    pub(crate) fn guard_request(
        &self,
        call: &mut CallAudit,
        request: &mut Map<String, Value>,
        normalized: &mut NormalizedTexts,
    ) -> Result<(), ProxyError> {
        let verdict = self.worst(request, normalized);
        if verdict.score < self.threshold {
            return Ok(());
        }
        let reason = format!("{} (threshold {:.2})", verdict.describe(), self.threshold);
        match self.action {
            GuardAction::Log => {
                call.decided("injection", "log", Some(&reason));
                Ok(())
            }
            GuardAction::Block => {
                call.decided("injection", "deny", Some(&reason));
                Err(ProxyError::PromptInjection)
            }
        }
    }
}
