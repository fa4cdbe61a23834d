//! A circuit breaker per target: after `failures` failed calls within `window` the circuit
//! opens and calls skip the target (to its fallbacks, else a 503 `circuit_open`) for `open`;
//! then one probe call goes through (half-open): its success closes the circuit, its failure
//! opens it again. A probe that never reports (its caller went away) is replaced after
//! another `open`. States are in `/metrics` (`warden_proxy_circuit_state`).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Instant;

use tracing::{info, warn};

use crate::config::{BreakerSettings, Target};

/// A circuit's state, as `/metrics` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CircuitState {
    Closed = 0,
    Open = 1,
    HalfOpen = 2,
}

#[derive(Debug)]
enum State {
    /// Recent failures, oldest first (at most `failures` kept).
    Closed {
        failures: VecDeque<Instant>,
    },
    Open {
        until: Instant,
    },
    /// One probe is in flight since `probe_started`.
    HalfOpen {
        probe_started: Instant,
    },
}

#[derive(Debug)]
struct Breaker {
    settings: BreakerSettings,
    state: Mutex<State>,
}

/// The breakers of every target.
#[derive(Debug)]
pub(crate) struct Breakers {
    by_target: HashMap<String, Breaker>,
}

impl Breakers {
    pub(crate) fn new(targets: &[Target]) -> Self {
        let by_target = targets
            .iter()
            .filter(|target| target.breaker.failures > 0)
            .map(|target| {
                let breaker = Breaker {
                    settings: target.breaker,
                    state: Mutex::new(State::Closed {
                        failures: VecDeque::new(),
                    }),
                };
                (target.id.clone(), breaker)
            })
            .collect();
        Self { by_target }
    }

    /// Whether a call may go to `target` now (a half-open circuit lets this one through as
    /// its probe).
    pub(crate) fn allow(&self, target: &str) -> bool {
        let Some(breaker) = self.by_target.get(target) else {
            return true;
        };
        let now = Instant::now();
        let mut state = breaker.state.lock().unwrap_or_else(|p| p.into_inner());
        match *state {
            State::Closed { .. } => true,
            State::Open { until } if now >= until => {
                info!(target, "circuit half-open: one probe call goes through");
                *state = State::HalfOpen { probe_started: now };
                true
            }
            State::Open { .. } => false,
            State::HalfOpen { probe_started } if now - probe_started >= breaker.settings.open => {
                *state = State::HalfOpen { probe_started: now };
                true
            }
            State::HalfOpen { .. } => false,
        }
    }

    /// A call to `target` succeeded: a probing circuit closes, a closed one forgets its
    /// failures.
    pub(crate) fn succeeded(&self, target: &str) {
        let Some(breaker) = self.by_target.get(target) else {
            return;
        };
        let mut state = breaker.state.lock().unwrap_or_else(|p| p.into_inner());
        if matches!(*state, State::HalfOpen { .. }) {
            info!(target, "circuit closed: the probe call succeeded");
        }
        if !matches!(*state, State::Closed { ref failures } if failures.is_empty()) {
            *state = State::Closed {
                failures: VecDeque::new(),
            };
        }
    }

    /// A call to `target` failed (connect failure, timeout, 5xx, a cold start past its
    /// budget).
    pub(crate) fn failed(&self, target: &str) {
        let Some(breaker) = self.by_target.get(target) else {
            return;
        };
        let settings = breaker.settings;
        let now = Instant::now();
        let mut state = breaker.state.lock().unwrap_or_else(|p| p.into_inner());
        match &mut *state {
            State::Closed { failures } => {
                while failures
                    .front()
                    .is_some_and(|first| now - *first > settings.window)
                {
                    failures.pop_front();
                }
                failures.push_back(now);
                if failures.len() >= settings.failures as usize {
                    warn!(
                        target,
                        failures = failures.len(),
                        window_s = settings.window.as_secs_f64(),
                        open_s = settings.open.as_secs_f64(),
                        "circuit open: calls skip this target"
                    );
                    *state = State::Open {
                        until: now + settings.open,
                    };
                }
            }
            State::HalfOpen { .. } => {
                warn!(target, "circuit open again: the probe call failed");
                *state = State::Open {
                    until: now + settings.open,
                };
            }
            State::Open { .. } => {}
        }
    }

    /// Every breaker's state, for `/metrics`.
    pub(crate) fn states(&self) -> Vec<(String, CircuitState)> {
        let now = Instant::now();
        let mut states: Vec<(String, CircuitState)> = self
            .by_target
            .iter()
            .map(|(target, breaker)| {
                let state = breaker.state.lock().unwrap_or_else(|p| p.into_inner());
                let state = match *state {
                    State::Closed { .. } => CircuitState::Closed,
                    State::Open { until } if now >= until => CircuitState::HalfOpen,
                    State::Open { .. } => CircuitState::Open,
                    State::HalfOpen { .. } => CircuitState::HalfOpen,
                };
                (target.clone(), state)
            })
            .collect();
        states.sort_by(|a, b| a.0.cmp(&b.0));
        states
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn breakers(failures: u32, open: Duration) -> Breakers {
        let settings = BreakerSettings {
            failures,
            window: Duration::from_secs(30),
            open,
        };
        Breakers {
            by_target: HashMap::from([(
                "t".to_owned(),
                Breaker {
                    settings,
                    state: Mutex::new(State::Closed {
                        failures: VecDeque::new(),
                    }),
                },
            )]),
        }
    }

    #[test]
    fn opens_after_the_failures_then_probes_once_and_closes_on_success() {
        let breakers = breakers(3, Duration::from_millis(50));
        for _ in 0..2 {
            breakers.failed("t");
            assert!(breakers.allow("t"));
        }
        breakers.failed("t");
        assert!(!breakers.allow("t"), "open");
        assert_eq!(breakers.states()[0].1, CircuitState::Open);
        std::thread::sleep(Duration::from_millis(60));
        assert!(breakers.allow("t"), "the probe");
        assert!(!breakers.allow("t"), "only one probe at a time");
        breakers.succeeded("t");
        assert!(breakers.allow("t"));
        assert_eq!(breakers.states()[0].1, CircuitState::Closed);
    }

    #[test]
    fn a_failed_probe_opens_it_again_and_a_success_forgets_failures() {
        let breakers = breakers(2, Duration::from_millis(30));
        breakers.failed("t");
        breakers.succeeded("t");
        breakers.failed("t");
        assert!(breakers.allow("t"), "the success forgot the first failure");
        breakers.failed("t");
        assert!(!breakers.allow("t"));
        std::thread::sleep(Duration::from_millis(40));
        assert!(breakers.allow("t"));
        breakers.failed("t");
        assert!(!breakers.allow("t"), "open again");
        // Targets without a breaker are always allowed.
        assert!(breakers.allow("other"));
    }
}
