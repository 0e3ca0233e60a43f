//! Counter increases between scrapes, and a sliding window of them.

use std::collections::VecDeque;
use std::ops::AddAssign;
use std::time::Duration;

/// How much a counter grew between two scrapes.
///
/// A counter that went down was reset (the gateway restarted), and, as in Prometheus's
/// `rate()`, its whole new value counts as the increase since the reset. A series absent
/// from the previous scrape counts from zero: the gateway creates label sets on first
/// use (a route's first 5xx), so everything it shows arrived since then.
pub fn counter_increase(prev: Option<f64>, cur: f64) -> f64 {
    match prev {
        Some(p) if cur >= p => cur - p,
        _ => cur,
    }
}

/// Increments over consecutive scrape intervals, dropping intervals that start before
/// `now - span`. The newest interval is always kept, so a slow scrape still yields rates.
#[derive(Clone, Debug)]
pub struct Window<T> {
    span: Duration,
    intervals: VecDeque<Interval<T>>,
}

#[derive(Clone, Debug)]
struct Interval<T> {
    start: Duration,
    end: Duration,
    data: T,
}

impl<T> Window<T> {
    pub fn new(span: Duration) -> Self {
        Self {
            span,
            intervals: VecDeque::new(),
        }
    }

    /// Adds the increments seen between `start` and `end` (monotonic times).
    pub fn push(&mut self, start: Duration, end: Duration, data: T) {
        self.intervals.push_back(Interval { start, end, data });
        let horizon = end.saturating_sub(self.span);
        while self.intervals.len() > 1 && self.intervals.front().is_some_and(|i| i.start < horizon)
        {
            self.intervals.pop_front();
        }
    }

    pub fn is_empty(&self) -> bool {
        self.intervals.is_empty()
    }

    /// Seconds from the start of the oldest interval to the end of the newest.
    pub fn covered_secs(&self) -> f64 {
        match (self.intervals.front(), self.intervals.back()) {
            (Some(first), Some(last)) => last.end.saturating_sub(first.start).as_secs_f64(),
            _ => 0.0,
        }
    }

    pub fn clear(&mut self) {
        self.intervals.clear();
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.intervals.iter().map(|i| &i.data)
    }

    /// The newest interval's data.
    pub fn last(&self) -> Option<&T> {
        self.intervals.back().map(|i| &i.data)
    }
}

impl<T: Default + for<'a> AddAssign<&'a T>> Window<T> {
    /// All increments in the window added up.
    pub fn total(&self) -> T {
        let mut sum = T::default();
        for i in &self.intervals {
            sum += &i.data;
        }
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_increase_handles_resets_and_new_series() {
        assert_eq!(counter_increase(Some(10.0), 15.0), 5.0);
        assert_eq!(counter_increase(Some(10.0), 10.0), 0.0);
        // Reset: the gateway restarted and has served 3 requests since.
        assert_eq!(counter_increase(Some(1000.0), 3.0), 3.0);
        // Reset to zero.
        assert_eq!(counter_increase(Some(1000.0), 0.0), 0.0);
        // New series.
        assert_eq!(counter_increase(None, 2.0), 2.0);
    }

    #[derive(Default, Debug, PartialEq)]
    struct N(f64);
    impl AddAssign<&N> for N {
        fn add_assign(&mut self, o: &N) {
            self.0 += o.0;
        }
    }

    #[test]
    fn window_drops_old_intervals_and_sums_the_rest() {
        let s = Duration::from_secs;
        let mut w = Window::new(s(10));
        assert_eq!(w.total(), N(0.0));
        assert_eq!(w.covered_secs(), 0.0);
        for t in 0..15 {
            w.push(s(t), s(t + 1), N(1.0));
        }
        // Ends at 15; intervals starting at 5..=14 remain.
        assert_eq!(w.total(), N(10.0));
        assert_eq!(w.covered_secs(), 10.0);
        // One long gap (failed scrapes) replaces everything but stays.
        w.push(s(15), s(60), N(4.0));
        assert_eq!(w.total(), N(4.0));
        assert_eq!(w.covered_secs(), 45.0);
    }
}
