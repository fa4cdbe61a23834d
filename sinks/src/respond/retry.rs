//! The one retry policy of the responder's deliveries: capped exponential backoff with
//! jitter, a budget of attempts, and the service's own `Retry-After` honoured over it.

use std::time::Duration;

/// How a receiver's failed deliveries are tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// The pause after the first failure; it doubles after each.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl RetryPolicy {
    /// The pause after failed attempt `attempt` (1-based): the service's `retry_after` if it
    /// gave one (bounded by an hour), else the doubled backoff, capped, less up to a quarter
    /// at random so that receivers failing together do not retry together.
    pub fn pause(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(asked) = retry_after {
            return asked.min(Duration::from_secs(3_600));
        }
        let doubled = self
            .initial_backoff
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        let capped = doubled.min(self.max_backoff);
        let jitter = (uuid::Uuid::new_v4().as_u128() % 1_000) as f64 / 4_000.0;
        capped.mul_f64(1.0 - jitter)
    }

    /// Whether another attempt is in the budget after `attempt` failed.
    pub fn may_retry(&self, attempt: u32) -> bool {
        attempt < self.max_attempts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap_with_jitter_and_retry_after_wins() {
        let policy = RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(8),
        };
        for (attempt, full) in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)] {
            let pause = policy.pause(attempt, None).as_secs_f64();
            assert!(pause <= full && pause >= full * 0.75, "{attempt}: {pause}");
        }
        assert_eq!(
            policy.pause(1, Some(Duration::from_secs(30))),
            Duration::from_secs(30)
        );
        assert!(policy.may_retry(4));
        assert!(!policy.may_retry(5));
    }
}
