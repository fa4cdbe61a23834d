//! Event-time counts in fixed buckets: the window maths every counting detector shares.
//!
//! Time is cut into buckets of [`BUCKET_SECONDS`] aligned to the Unix epoch, so every worker
//! cuts the same buckets from the same events whatever order or worker they arrive in. A
//! [`BucketCounts`] keeps the recent buckets of one key (a target, a client, the whole
//! service) in a ring; a window is a run of consecutive buckets.

use std::collections::VecDeque;

use chrono::{DateTime, Utc};

/// Width of one bucket. Windows are multiples of it, and it bounds how early a finding can be
/// made: a detector looks at a bucket once the watermark has passed its end.
pub const BUCKET_SECONDS: i64 = 10;

/// The bucket holding `ts`: seconds since the epoch divided by [`BUCKET_SECONDS`], rounded
/// down (also before 1970).
pub fn bucket_of(ts: DateTime<Utc>) -> i64 {
    ts.timestamp().div_euclid(BUCKET_SECONDS)
}

/// The time at which bucket `bucket` starts.
pub fn bucket_start(bucket: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(bucket * BUCKET_SECONDS, 0).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// How far a key's buckets may reach beyond its capacity, for events counted ahead of the
/// evaluations (a partition read ahead of another while catching up): a day.
const MAX_AHEAD_BUCKETS: usize = 86_400 / BUCKET_SECONDS as usize;

/// Counts per bucket of one key: the `capacity` buckets up to the newest one an evaluation
/// has needed (its *horizon*), and any counted beyond it.
///
/// Events can be counted ahead of the evaluations (see [`crate::frontier`]), so what is kept
/// follows the evaluations, not the newest event: [`advance_to`](Self::advance_to) moves the
/// horizon and forgets the buckets that fell out behind it; [`add`](Self::add) refuses only a
/// bucket already forgotten (or one more than a day beyond the capacity).
#[derive(Debug, Clone)]
pub struct BucketCounts(Counts<1>);

impl BucketCounts {
    pub fn new(capacity: usize) -> Self {
        Self(Counts::new(capacity))
    }

    /// Adds `amount` to `bucket`. Returns false, counting nothing, if the bucket is older
    /// than the kept history (the caller counts it as too late), or so far from the others
    /// that keeping both would take more than a day beyond the capacity.
    pub fn add(&mut self, bucket: i64, amount: u64) -> bool {
        self.0.add(bucket, [amount])
    }

    /// See [`Counts::advance_to`].
    pub fn advance_to(&mut self, bucket: i64) {
        self.0.advance_to(bucket);
    }

    /// The total of buckets `from..to` (end excluded); buckets not kept count as zero.
    pub fn sum(&self, from: i64, to: i64) -> u64 {
        self.0.sum(from, to)[0]
    }

    /// The total of every kept bucket.
    pub fn total(&self) -> u64 {
        self.0.total()[0]
    }

    /// The oldest bucket kept, if any.
    pub fn first_bucket(&self) -> Option<i64> {
        self.0.first_bucket()
    }
}

/// [`BucketCounts`] of `N` measures of one key at once (one ring, one index per event).
#[derive(Debug, Clone)]
pub struct Counts<const N: usize> {
    /// Counts of bucket `first + i` at index `i`.
    counts: VecDeque<[u64; N]>,
    first: i64,
    capacity: usize,
    /// The sums of `counts`, kept as they change.
    total: [u64; N],
    /// The newest bucket an evaluation needed, if any yet.
    horizon: Option<i64>,
}

impl<const N: usize> Counts<N> {
    pub fn new(capacity: usize) -> Self {
        Self {
            counts: VecDeque::with_capacity(capacity),
            first: 0,
            capacity: capacity.max(1),
            total: [0; N],
            horizon: None,
        }
    }

    fn last(&self) -> i64 {
        self.first + self.counts.len() as i64 - 1
    }

    /// Adds `amounts` to `bucket`; see [`BucketCounts::add`].
    pub fn add(&mut self, bucket: i64, amounts: [u64; N]) -> bool {
        // Most events fall in the newest bucket, which is always within the kept history.
        if !self.counts.is_empty() && bucket == self.last() {
            let newest = self.counts.back_mut().expect("not empty");
            for ((count, total), amount) in newest.iter_mut().zip(&mut self.total).zip(amounts) {
                *count = count.saturating_add(amount);
                *total = total.saturating_add(amount);
            }
            return true;
        }
        if self
            .horizon
            .is_some_and(|horizon| bucket <= horizon - self.capacity as i64)
        {
            return false;
        }
        if self.counts.is_empty() {
            self.first = bucket;
            self.counts.push_back([0; N]);
        }
        let (from, to) = (bucket.min(self.first), bucket.max(self.last()));
        let span = u128::try_from(to - from).unwrap_or(u128::MAX) + 1;
        if span > (self.capacity + MAX_AHEAD_BUCKETS) as u128 {
            return false;
        }
        for _ in bucket..self.first {
            self.counts.push_front([0; N]);
        }
        self.first = from;
        for _ in self.last()..bucket {
            self.counts.push_back([0; N]);
        }
        let index = usize::try_from(bucket - self.first).unwrap_or(0);
        // Amounts come from upstream-supplied numbers (token counts, costs): saturate.
        for (measure, amount) in amounts.into_iter().enumerate() {
            self.counts[index][measure] = self.counts[index][measure].saturating_add(amount);
            self.total[measure] = self.total[measure].saturating_add(amount);
        }
        true
    }

    /// An evaluation needs the windows up to `bucket`: makes it the horizon (it only moves
    /// forward) and forgets the buckets more than the capacity behind it. Buckets counted
    /// beyond it are kept.
    pub fn advance_to(&mut self, bucket: i64) {
        let horizon = self.horizon.map_or(bucket, |horizon| horizon.max(bucket));
        self.horizon = Some(horizon);
        let keep_from = horizon - self.capacity as i64 + 1;
        if self.counts.is_empty() || self.last() < keep_from {
            self.counts.clear();
            self.counts.push_back([0; N]);
            self.first = horizon;
            self.total = [0; N];
            return;
        }
        while self.first < keep_from {
            let dropped = self.counts.pop_front().unwrap_or([0; N]);
            for (total, count) in self.total.iter_mut().zip(dropped) {
                *total = total.saturating_sub(count);
            }
            self.first += 1;
        }
    }

    /// The totals of buckets `from..to` (end excluded); buckets not kept count as zero.
    pub fn sum(&self, from: i64, to: i64) -> [u64; N] {
        let index = |bucket: i64| {
            usize::try_from(bucket.saturating_sub(self.first).max(0))
                .unwrap_or(usize::MAX)
                .min(self.counts.len())
        };
        let (from, to) = (index(from), index(to));
        let mut sums = [0; N];
        if from >= to {
            return sums;
        }
        for counts in self.counts.range(from..to) {
            for (sum, count) in sums.iter_mut().zip(counts) {
                *sum = sum.saturating_add(*count);
            }
        }
        sums
    }

    /// The totals of every kept bucket.
    pub fn total(&self) -> [u64; N] {
        self.total
    }

    /// The oldest bucket kept, if any.
    pub fn first_bucket(&self) -> Option<i64> {
        (!self.counts.is_empty()).then_some(self.first)
    }
}

/// The median of `values` (the mean of the middle two for an even count); `None` if empty.
/// A robust baseline: one earlier spike or outage does not move it.
pub fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[middle]
    } else {
        (values[middle - 1] + values[middle]) / 2.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_aligned_to_the_epoch_also_before_it() {
        let at = |s: i64| DateTime::from_timestamp(s, 0).expect("time");
        assert_eq!(bucket_of(at(0)), 0);
        assert_eq!(bucket_of(at(9)), 0);
        assert_eq!(bucket_of(at(10)), 1);
        assert_eq!(bucket_of(at(-1)), -1);
        assert_eq!(bucket_start(bucket_of(at(1_234_567))), at(1_234_560));
    }

    #[test]
    fn counts_sum_over_windows_and_forget_what_falls_out() {
        let mut counts = BucketCounts::new(5);
        assert!(counts.add(100, 1));
        assert!(counts.add(102, 2));
        assert!(counts.add(101, 4));
        assert_eq!(counts.sum(100, 103), 7);
        assert_eq!(counts.sum(101, 102), 4);
        counts.advance_to(106);
        assert_eq!(counts.first_bucket(), Some(102));
        assert_eq!(counts.sum(0, 200), 2, "buckets 100 and 101 fell out");
        assert_eq!(counts.total(), 2);
        assert!(!counts.add(101, 1), "older than the history: too late");
        assert!(counts.add(104, 1), "still kept");
        counts.advance_to(1_000);
        assert_eq!(counts.sum(0, 2_000), 0);
        assert_eq!(counts.total(), 0);
    }

    #[test]
    fn buckets_ahead_of_the_evaluations_keep_what_is_behind() {
        let mut counts = BucketCounts::new(10);
        counts.advance_to(50);
        assert!(counts.add(50, 1));
        // A partition read ahead: an hour past the capacity.
        assert!(counts.add(400, 5));
        // The other partition, behind: still within the capacity of the horizon.
        assert!(counts.add(45, 3));
        assert_eq!(counts.sum(41, 51), 4);
        assert!(!counts.add(40, 1), "behind the horizon's capacity");
        counts.advance_to(60);
        assert_eq!(counts.sum(0, 500), 5, "50 and 45 fell out, 400 is kept");
        assert_eq!(counts.total(), 5);
        assert!(
            !counts.add(400 + 10 + MAX_AHEAD_BUCKETS as i64, 1),
            "more than a day beyond"
        );
    }

    #[test]
    fn the_median_ignores_one_outlier() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![10.0, 12.0, 11.0, 10_000.0, 9.0]), Some(11.0));
        assert_eq!(median(vec![4.0, 2.0]), Some(3.0));
    }
}

#[cfg(test)]
mod properties {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn huge_amounts_saturate_instead_of_overflowing() {
        let mut counts = BucketCounts::new(4);
        assert!(counts.add(10, u64::MAX));
        assert!(counts.add(10, u64::MAX));
        assert!(counts.add(11, 5));
        assert_eq!(counts.sum(0, 20), u64::MAX);
        assert_eq!(counts.total(), u64::MAX);
        counts.advance_to(14);
        assert_eq!(counts.sum(0, 20), 5);
    }

    proptest! {
        /// Whatever order buckets arrive in and evaluations move on, a window's sum is the
        /// sum of what was added to its buckets not yet behind the horizon's capacity;
        /// `total` agrees, and only buckets behind it are refused.
        #[test]
        fn sums_match_a_plain_model(
            capacity in 1usize..40,
            steps in prop::collection::vec((0i64..120, 0u64..1_000), 1..200),
            from in 0i64..130,
            width in 0i64..60,
        ) {
            let mut counts = BucketCounts::new(capacity);
            let mut model: BTreeMap<i64, u64> = BTreeMap::new();
            let mut horizon: Option<i64> = None;
            for (bucket, amount) in steps {
                // An amount of 0 stands for an evaluation at `bucket`.
                if amount == 0 {
                    counts.advance_to(bucket);
                    let newest = horizon.map_or(bucket, |h| h.max(bucket));
                    horizon = Some(newest);
                    model.retain(|b, _| *b > newest - capacity as i64);
                } else if counts.add(bucket, amount) {
                    *model.entry(bucket).or_default() += amount;
                } else {
                    prop_assert!(horizon.is_some_and(|h| bucket <= h - capacity as i64));
                }
            }
            let expected: u64 = model.range(from..from + width).map(|(_, v)| v).sum();
            prop_assert_eq!(counts.sum(from, from + width), expected);
            prop_assert_eq!(counts.total(), model.values().sum::<u64>());
        }

        /// The median lies between the smallest and largest value and moves at most to a
        /// neighbouring value when one outlier is added.
        #[test]
        fn the_median_is_robust(values in prop::collection::vec(0u32..10_000, 3..50), outlier in 1_000_000u32..2_000_000) {
            let as_f64: Vec<f64> = values.iter().map(|v| f64::from(*v)).collect();
            let median_before = median(as_f64.clone()).expect("values");
            let (min, max) = (
                as_f64.iter().copied().fold(f64::MAX, f64::min),
                as_f64.iter().copied().fold(f64::MIN, f64::max),
            );
            prop_assert!(min <= median_before && median_before <= max);
            let mut with_outlier = as_f64;
            with_outlier.push(f64::from(outlier));
            let median_after = median(with_outlier).expect("values");
            prop_assert!(median_after <= max, "one outlier cannot pull the median past the old maximum");
        }
    }
}
