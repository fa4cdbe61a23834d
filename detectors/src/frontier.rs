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
//! the frontier is the newest event time of any.
//!
//! Two exceptions keep a stalled input from stopping the clock and a momentary end from
//! releasing it too early:
//! - an input that has neither delivered nor reported its end for [`STALL_AFTER`] no longer
//!   holds the frontier (a partition whose leader is gone, a keyed worker that died
//!   mid-catch-up); it holds again when it delivers;
//! - an input whose end is in the past (its newest event more than [`LIVE_LAG`] older than
//!   the wall clock) still holds for [`END_GRACE`]: a stream of past events being published
//!   right now (`warden simulate --produce`, a re-published backlog) reaches its end every
//!   time the consumer overtakes the producer, and its next events are as old as the last.
//!   A live input's end is its end.
//!
//! Events more than [`AHEAD_SLACK`] ahead of the frontier are held in an [`AheadBuffer`]
//! and fed to the engine, in event-time order, as the frontier reaches them: detectors that
//! remember when something was last seen (a token's countries, the keys tried from an IP)
//! would otherwise judge a window with events from after its end. The buffer holds at most
//! [`MAX_AHEAD_BYTES`]; beyond that its oldest events are counted ahead of the clock, which
//! the [window maths](crate::buckets) allow.

use std::collections::BTreeMap;

use hashbrown::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use warden_ingest::alert::Alert;
use warden_ingest::event_row::EventRow;

use crate::engine::Engine;
use crate::relay;

/// An input silent this long (wall time) stops holding the frontier.
pub const STALL_AFTER: Duration = Duration::from_secs(10);
/// How long an input at the end of past events still holds the frontier.
pub const END_GRACE: Duration = Duration::from_secs(2);
/// An input whose newest event is at most this much older than the wall clock is live.
pub const LIVE_LAG: TimeDelta = TimeDelta::minutes(1);

#[derive(Debug, Clone, Copy)]
struct InputProgress {
    /// The newest event time read from the input, if any yet.
    newest: Option<DateTime<Utc>>,
    /// Read to its end since its last event.
    at_end: bool,
    /// At its end, with a newest event older than [`LIVE_LAG`] then.
    ended_in_the_past: bool,
    /// When the input last delivered or reported its end.
    heard: Instant,
    /// Until when the frontier waits for this input, if at all (follows from the above).
    holds_until: Option<Instant>,
}

impl InputProgress {
    fn new(newest: Option<DateTime<Utc>>, now: Instant) -> Self {
        let mut progress = Self {
            newest,
            at_end: false,
            ended_in_the_past: false,
            heard: now,
            holds_until: None,
        };
        progress.heard_at(now);
        progress
    }

    /// The input delivered or reported its end at `now` (after `at_end` and
    /// `ended_in_the_past` are set).
    fn heard_at(&mut self, now: Instant) {
        self.heard = now;
        self.holds_until = if self.at_end {
            self.ended_in_the_past.then(|| now + END_GRACE)
        } else {
            Some(now + STALL_AFTER)
        };
    }

    /// Whether the frontier waits for this input: an input catching up until it has been
    /// silent for [`STALL_AFTER`]; one at the end of past events for [`END_GRACE`].
    fn holds(&self, now: Instant) -> bool {
        self.holds_until.is_some_and(|until| now < until)
    }
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
        self.inputs.insert(input, InputProgress::new(None, now));
    }

    /// An event stamped `ts` was read from `input`.
    pub fn saw(&mut self, input: i32, ts: DateTime<Utc>, now: Instant) {
        let progress = self
            .inputs
            .entry(input)
            .or_insert_with(|| InputProgress::new(Some(ts), now));
        if progress.newest.is_none_or(|newest| ts > newest) {
            progress.newest = Some(ts);
        }
        // Most events come at the same reading of the clock as the one before.
        if progress.at_end || progress.heard != now {
            progress.at_end = false;
            progress.heard_at(now);
        }
    }

    /// `input` was read to its end, at wall time `wall`.
    pub fn reached_end(&mut self, input: i32, now: Instant, wall: DateTime<Utc>) {
        let progress = self
            .inputs
            .entry(input)
            .or_insert_with(|| InputProgress::new(None, now));
        progress.at_end = true;
        progress.ended_in_the_past = progress
            .newest
            .is_some_and(|newest| wall - newest > LIVE_LAG);
        progress.heard_at(now);
    }

    /// Inputs the frontier waits for.
    fn holding(&self, now: Instant) -> impl Iterator<Item = &InputProgress> {
        self.inputs
            .values()
            .filter(move |progress| progress.holds(now))
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

/// Events at most this far ahead of the frontier are counted at once (live traffic: the
/// inputs are within milliseconds of each other).
pub const AHEAD_SLACK: TimeDelta = TimeDelta::seconds(1);
/// The most an [`AheadBuffer`] holds (encoded rows).
pub const MAX_AHEAD_BYTES: usize = 64 << 20;

/// Events read ahead of the frontier, in the compact row form of [`crate::relay`], until the
/// frontier reaches them.
#[derive(Debug, Clone, Default)]
pub struct AheadBuffer {
    held: BTreeMap<(DateTime<Utc>, u64), Vec<u8>>,
    /// Tells apart events with the same time, keeping the order they came in.
    sequence: u64,
    bytes: usize,
}

impl AheadBuffer {
    pub fn hold(&mut self, ts: DateTime<Utc>, row: Vec<u8>) {
        self.bytes += row.len();
        self.sequence += 1;
        self.held.insert((ts, self.sequence), row);
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    pub fn clear(&mut self) {
        self.held.clear();
        self.bytes = 0;
    }

    /// Takes out, oldest first, the events stamped at or before `until`, and while the
    /// buffer holds more than [`MAX_AHEAD_BYTES`], the oldest of the others.
    pub fn release(&mut self, until: Option<DateTime<Utc>>) -> Vec<Vec<u8>> {
        let mut released = Vec::new();
        while let Some(entry) = self.held.first_entry() {
            let (ts, _) = *entry.key();
            if until.is_none_or(|until| ts > until) && self.bytes <= MAX_AHEAD_BYTES {
                break;
            }
            let row = entry.remove();
            self.bytes -= row.len();
            released.push(row);
        }
        released
    }
}

/// An engine fed by several inputs read at different paces: its clock is their
/// [`Frontier`], and events more than [`AHEAD_SLACK`] ahead of it wait in an
/// [`AheadBuffer`]. IO-free: the detect loop tells it what it reads, the scenario tests do the
/// same without Kafka.
#[derive(Debug, Clone)]
pub struct PacedEngine {
    engine: Engine,
    frontier: Frontier,
    ahead: AheadBuffer,
    held: u64,
    /// Held rows that could not be read back.
    undecodable: u64,
}

impl PacedEngine {
    pub fn new(engine: Engine) -> Self {
        Self {
            engine,
            frontier: Frontier::default(),
            ahead: AheadBuffer::default(),
            held: 0,
            undecodable: 0,
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// For moving the clock without any input (an idle live stream).
    pub fn engine_mut(&mut self) -> &mut Engine {
        &mut self.engine
    }

    /// Events held back so far because they were ahead of the frontier.
    pub fn held(&self) -> u64 {
        self.held
    }

    /// Held rows that could not be read back when the frontier reached them.
    pub fn undecodable(&self) -> u64 {
        self.undecodable
    }

    /// See [`Frontier::expect`].
    pub fn expect(&mut self, input: i32, now: Instant) {
        self.frontier.expect(input, now);
    }

    /// See [`Frontier::reached_end`].
    pub fn reached_end(&mut self, input: i32, now: Instant, wall: DateTime<Utc>) {
        self.frontier.reached_end(input, now, wall);
    }

    /// See [`Frontier::is_settled`].
    pub fn is_settled(&self, now: Instant) -> bool {
        self.frontier.is_settled(now)
    }

    /// Takes one event read from `input`: counts it, or holds it while it is ahead of the
    /// frontier. `encoded` is its row in [`relay`]'s encoding if the caller has it already
    /// (it is encoded here otherwise, only if held).
    pub fn offer(
        &mut self,
        event: &EventRow<'_>,
        encoded: Option<&[u8]>,
        input: i32,
        now: Instant,
    ) {
        self.frontier.saw(input, event.ts, now);
        if self.is_ahead(event.ts, now) {
            self.held += 1;
            let row = encoded.map_or_else(|| relay::encode_row(event), <[u8]>::to_vec);
            self.ahead.hold(event.ts, row);
        } else {
            self.engine.count(event);
        }
    }

    /// Takes one event read from `input` as a row in [`relay`]'s encoding, stamped `ts`:
    /// holds it as it is while it is ahead of the frontier, else decodes and counts it.
    pub fn offer_encoded(
        &mut self,
        ts: DateTime<Utc>,
        row: &[u8],
        input: i32,
        now: Instant,
    ) -> Result<(), relay::RelayError> {
        self.frontier.saw(input, ts, now);
        if self.is_ahead(ts, now) {
            self.held += 1;
            self.ahead.hold(ts, row.to_vec());
        } else {
            self.engine.count(&relay::decode_row(row)?);
        }
        Ok(())
    }

    /// Whether an event stamped `ts` is to be held: too far ahead of the frontier, or there
    /// is no frontier yet.
    fn is_ahead(&self, ts: DateTime<Utc>, now: Instant) -> bool {
        self.frontier
            .get(now)
            .is_none_or(|frontier| ts > frontier + AHEAD_SLACK)
    }

    /// Moves the engine's clock to the frontier, feeding it the held events the frontier
    /// reached on the way, in time order; returns the alerts that follow.
    pub fn advance(&mut self, now: Instant) -> Vec<Alert> {
        let frontier = self.frontier.get(now);
        let mut alerts = Vec::new();
        for row in self
            .ahead
            .release(frontier.map(|frontier| frontier + AHEAD_SLACK))
        {
            let Ok(event) = relay::decode_row(&row) else {
                // Only a row passed on damaged (`offer_encoded` holds rows as they came).
                self.undecodable += 1;
                continue;
            };
            self.engine.count(&event);
            if let Some(frontier) = frontier {
                alerts.extend(self.engine.reach(event.ts.min(frontier)));
            }
        }
        if let Some(frontier) = frontier {
            alerts.extend(self.engine.reach(frontier));
        }
        alerts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::at;

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
        // Live: the wall clock is just after the newest events.
        let wall = at(601);
        let mut frontier = Frontier::default();
        frontier.saw(0, at(600), now);
        frontier.saw(1, at(590), now);
        frontier.reached_end(1, now, wall);
        assert_eq!(frontier.get(now), Some(at(600)));
        frontier.reached_end(0, now, wall);
        assert!(frontier.is_settled(now));
        assert_eq!(frontier.get(now), Some(at(600)), "the newest of all");
        // Partition 1 delivers again: it is behind, and holds again.
        frontier.saw(1, at(595), now);
        assert_eq!(frontier.get(now), Some(at(595)));
        // An empty partition that reports its end at once holds nothing.
        frontier.expect(2, now);
        frontier.reached_end(2, now, wall);
        assert_eq!(frontier.get(now), Some(at(595)));
    }

    #[test]
    fn the_end_of_past_events_holds_a_little_while() {
        let start = Instant::now();
        let wall = at(7_200);
        let mut frontier = Frontier::default();
        frontier.saw(0, at(600), start);
        frontier.saw(1, at(10), start);
        // Partition 1 is at its end for now, but its events are two hours old: more may
        // follow at once (a scenario being published).
        frontier.reached_end(1, start, wall);
        assert_eq!(frontier.get(start), Some(at(10)));
        frontier.saw(1, at(20), start + END_GRACE / 2);
        assert_eq!(frontier.get(start + END_GRACE / 2), Some(at(20)));
        frontier.reached_end(1, start + END_GRACE / 2, wall);
        // Nothing more came: it is over.
        let later = start + END_GRACE * 2;
        assert_eq!(frontier.get(later), Some(at(600)));
    }

    #[test]
    fn held_events_come_out_in_time_order_once_reached() {
        let mut buffer = AheadBuffer::default();
        buffer.hold(at(30), vec![3]);
        buffer.hold(at(10), vec![1]);
        buffer.hold(at(30), vec![4]);
        buffer.hold(at(20), vec![2]);
        assert!(buffer.release(None).is_empty());
        assert_eq!(buffer.release(Some(at(20))), [vec![1], vec![2]]);
        assert_eq!(buffer.release(Some(at(60))), [vec![3], vec![4]]);
        assert!(buffer.is_empty());
        // Over its size, the oldest come out regardless.
        buffer.hold(at(50), vec![0; MAX_AHEAD_BYTES]);
        buffer.hold(at(40), vec![9]);
        assert_eq!(buffer.release(Some(at(0))), [vec![9]]);
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
