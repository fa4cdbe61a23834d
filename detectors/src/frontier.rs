//! The event time a detect stage's input as a whole has reached, over inputs read at
//! different paces.
//!
//! A stage reads several inputs: the keyed stage its partitions of `warden.events`, the
//! shared stage the batches passed on from every source partition. While a backlog is being
//! caught up they are not read in step: librdkafka hands over a large run of one partition,
//! then of the next, so the newest event time seen jumps ahead with one input while another
//! is still far behind. Taken as the clock, that made 39 % of a two-partition backlog late
//! (BENCHMARKS.md), counted after its windows were judged.
//!
//! The **frontier** is therefore the newest event time of the input that is furthest behind,
//! among the inputs that are still catching up. An input that was read to its end (Kafka's
//! partition end, or a batch marked caught up) does not hold anyone back until it has
//! something new: a quiet partition must not stop the clock. When every input is at its end,
//! the frontier is the newest event time of any. An input that has neither delivered nor
//! reported its end for [`STALL_AFTER`] no longer holds the frontier either (a partition
//! whose leader is gone, a keyed worker that died mid-catch-up); it holds again when it
//! delivers.
//!
//! Events ahead of the frontier are counted at once; the engine judges their windows once
//! the frontier (minus the allowed lateness) has passed them.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

/// An input silent this long (wall time) stops holding the frontier.
pub const STALL_AFTER: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy)]
struct InputProgress {
    /// The newest event time read from the input, if any yet.
    newest: Option<DateTime<Utc>>,
    /// Read to its end since its last event.
    at_end: bool,
    /// When the input last delivered or reported its end.
    heard: Instant,
}

/// The progress of each input of one stage (by partition number).
#[derive(Debug, Clone, Default)]
pub struct Frontier {
    inputs: HashMap<i32, InputProgress>,
}

impl Frontier {
    /// Forgets every input (a new assignment).
    pub fn clear(&mut self) {
        self.inputs.clear();
    }

    /// `input` is to be read but has delivered nothing yet: it holds the frontier until it
    /// delivers or reports its end.
    pub fn expect(&mut self, input: i32, now: Instant) {
        self.inputs.insert(
            input,
            InputProgress {
                newest: None,
                at_end: false,
                heard: now,
            },
        );
    }

    /// An event stamped `ts` was read from `input`.
    pub fn saw(&mut self, input: i32, ts: DateTime<Utc>, now: Instant) {
        let progress = self.inputs.entry(input).or_insert(InputProgress {
            newest: Some(ts),
            at_end: false,
            heard: now,
        });
        if progress.newest.is_none_or(|newest| ts > newest) {
            progress.newest = Some(ts);
        }
        progress.at_end = false;
        progress.heard = now;
    }

    /// `input` was read to its end.
    pub fn reached_end(&mut self, input: i32, now: Instant) {
        if let Some(progress) = self.inputs.get_mut(&input) {
            progress.at_end = true;
            progress.heard = now;
        } else {
            self.inputs.insert(
                input,
                InputProgress {
                    newest: None,
                    at_end: true,
                    heard: now,
                },
            );
        }
    }

    /// Inputs still catching up (not at their end, not stalled).
    fn holding(&self, now: Instant) -> impl Iterator<Item = &InputProgress> {
        self.inputs.values().filter(move |progress| {
            !progress.at_end && now.saturating_duration_since(progress.heard) < STALL_AFTER
        })
    }

    /// Whether no input is catching up: the stage is live (or idle), and its clock may follow
    /// the wall clock when quiet.
    pub fn is_settled(&self, now: Instant) -> bool {
        self.holding(now).next().is_none()
    }

    /// The event time the input as a whole has reached, if it can tell yet (not while an
    /// input that holds it has delivered nothing).
    pub fn get(&self, now: Instant) -> Option<DateTime<Utc>> {
        let mut holding = self.holding(now).peekable();
        if holding.peek().is_none() {
            return self.inputs.values().filter_map(|p| p.newest).max();
        }
        holding.map(|progress| progress.newest).min().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_790_000_000 + seconds, 0).expect("time")
    }

    #[test]
    fn the_input_furthest_behind_sets_the_frontier_while_catching_up() {
        let now = Instant::now();
        let mut frontier = Frontier::default();
        frontier.expect(0, now);
        frontier.expect(1, now);
        frontier.saw(0, at(600), now);
        // Partition 1 has not delivered yet: no frontier at all.
        assert_eq!(frontier.get(now), None);
        frontier.saw(1, at(10), now);
        assert_eq!(frontier.get(now), Some(at(10)));
        frontier.saw(1, at(300), now);
        assert_eq!(frontier.get(now), Some(at(300)));
        assert!(!frontier.is_settled(now));
    }

    #[test]
    fn an_input_at_its_end_holds_nothing_until_it_delivers() {
        let now = Instant::now();
        let mut frontier = Frontier::default();
        frontier.saw(0, at(600), now);
        frontier.saw(1, at(10), now);
        frontier.reached_end(1, now);
        assert_eq!(frontier.get(now), Some(at(600)));
        frontier.reached_end(0, now);
        assert!(frontier.is_settled(now));
        assert_eq!(frontier.get(now), Some(at(600)), "the newest of all");
        // Partition 1 delivers again: it is behind, and holds again.
        frontier.saw(1, at(20), now);
        assert_eq!(frontier.get(now), Some(at(20)));
        // An empty partition that reports its end at once holds nothing.
        frontier.expect(2, now);
        frontier.reached_end(2, now);
        assert_eq!(frontier.get(now), Some(at(20)));
    }

    #[test]
    fn a_silent_input_stops_holding_after_a_while() {
        let start = Instant::now();
        let mut frontier = Frontier::default();
        frontier.saw(0, at(50), start);
        frontier.expect(1, start);
        assert_eq!(frontier.get(start), None);
        let later = start + STALL_AFTER;
        frontier.saw(0, at(60), later);
        assert_eq!(frontier.get(later), Some(at(60)));
    }
}
