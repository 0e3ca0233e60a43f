//! Weighted traffic splits.
//!
//! Unkeyed requests follow a precomputed smooth weighted round-robin schedule (nginx's
//! algorithm), so any window of `sum(weights)/gcd` requests hits the weights exactly and
//! the choice costs one atomic add. Sticky requests hash their key into the cumulative
//! weight ranges, so one client stays on one side and, when a canary grows, only the
//! clients in the moved range change sides.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Longest schedule we precompute; finer weights fall back to random choice.
const MAX_SCHEDULE: u64 = 10_000;

pub struct Split {
    /// Index into the route's upstream list, for each slot of the schedule.
    schedule: Box<[u16]>,
    next: AtomicUsize,
    /// Running totals of the weights, for keyed and random choice.
    cumulative: Box<[u64]>,
    total: u64,
}

impl Split {
    /// `weights[i]` is the weight of the route's upstream `i`. At least one must be > 0.
    pub fn new(weights: &[u32]) -> Self {
        let total: u64 = weights.iter().map(|w| u64::from(*w)).sum();
        let mut acc = 0;
        let cumulative = weights
            .iter()
            .map(|w| {
                acc += u64::from(*w);
                acc
            })
            .collect();
        let g = weights
            .iter()
            .filter(|w| **w > 0)
            .fold(0u64, |g, w| gcd(g, u64::from(*w)));
        let len = total.checked_div(g).unwrap_or(0);
        let schedule = if len > 0 && len <= MAX_SCHEDULE {
            swrr(
                &weights
                    .iter()
                    .map(|w| u64::from(*w) / g)
                    .collect::<Vec<_>>(),
                len as usize,
            )
        } else {
            Box::default()
        };
        Self {
            schedule,
            next: AtomicUsize::new(0),
            cumulative,
            total,
        }
    }

    /// The upstream index for a request; `key` makes the choice sticky.
    pub fn pick(&self, key: Option<u64>) -> usize {
        if let Some(k) = key {
            return self.by_point(k % self.total.max(1));
        }
        if !self.schedule.is_empty() {
            let n = self.next.fetch_add(1, Ordering::Relaxed);
            return usize::from(self.schedule[n % self.schedule.len()]);
        }
        self.by_point(fastrand::u64(0..self.total.max(1)))
    }

    fn by_point(&self, point: u64) -> usize {
        self.cumulative.iter().position(|c| point < *c).unwrap_or(0)
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Smooth weighted round robin: each step every entry gains its weight, the largest is
/// chosen and pays back the total. Spreads the minority evenly instead of in a burst.
fn swrr(weights: &[u64], len: usize) -> Box<[u16]> {
    let total: i64 = weights.iter().map(|w| *w as i64).sum();
    let mut current = vec![0i64; weights.len()];
    let mut out = Vec::with_capacity(len);
    for _ in 0..len {
        let mut best = 0;
        for (i, w) in weights.iter().enumerate() {
            current[i] += *w as i64;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        out.push(best as u16);
    }
    out.into_boxed_slice()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(s: &Split, n: usize, key: impl Fn(usize) -> Option<u64>) -> Vec<usize> {
        let mut c = vec![0; 3];
        for i in 0..n {
            c[s.pick(key(i))] += 1;
        }
        c
    }

    #[test]
    fn exact_over_any_full_window() {
        let s = Split::new(&[95, 5]);
        assert_eq!(counts(&s, 2000, |_| None)[..2], [1900, 100]);
        let s = Split::new(&[1, 2, 7]);
        assert_eq!(counts(&s, 1000, |_| None), [100, 200, 700]);
    }

    #[test]
    fn blue_green_is_all_or_nothing() {
        let s = Split::new(&[0, 100]);
        assert_eq!(counts(&s, 500, |_| None)[..2], [0, 500]);
        assert_eq!(counts(&s, 500, |i| Some(i as u64 * 7919))[..2], [0, 500]);
    }

    #[test]
    fn minority_is_spread_not_bunched() {
        let s = Split::new(&[90, 10]);
        let picks: Vec<usize> = (0..10).map(|_| s.pick(None)).collect();
        assert_eq!(picks.iter().filter(|p| **p == 1).count(), 1);
    }

    #[test]
    fn sticky_is_stable_and_proportional() {
        let s = Split::new(&[75, 25]);
        let key = 0xdead_beef_u64;
        let first = s.pick(Some(key));
        assert!((0..100).all(|_| s.pick(Some(key)) == first));
        let hashed = |i: usize| {
            use std::hash::{Hash, Hasher};
            let mut h = std::hash::DefaultHasher::new();
            i.hash(&mut h);
            Some(h.finish())
        };
        let c = counts(&s, 10_000, hashed);
        let share = c[1] as f64 / 10_000.0;
        assert!((share - 0.25).abs() < 0.02, "{share}");
    }

    #[test]
    fn odd_weights_fall_back_to_random_within_tolerance() {
        let s = Split::new(&[9_999, 10_007]);
        assert!(s.schedule.is_empty());
        let c = counts(&s, 20_000, |_| None);
        let share = c[0] as f64 / 20_000.0;
        assert!((share - 0.49975).abs() < 0.03, "{share}");
    }
}
