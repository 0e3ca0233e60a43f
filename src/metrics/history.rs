//! Sparkline histories kept across samples, one per environment, route and upstream.

use std::collections::HashMap;

use crate::domain::metrics::{History, HistoryPoint};

use super::aggregate::Pair;

/// Whose history.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum HistKey {
    Overall,
    Route(String),
    Upstream(Pair),
}

/// Histories by key. Keys not touched in a sample are dropped after it, so routes that
/// disappear do not leak memory.
#[derive(Clone, Debug)]
pub struct Histories {
    capacity: usize,
    /// Each history with the sample generation that last touched it.
    map: HashMap<HistKey, (u64, History)>,
    generation: u64,
    /// Whether upstreams get histories; routes and the whole environment always do.
    upstreams: bool,
}

impl Histories {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            map: HashMap::new(),
            generation: 0,
            upstreams: true,
        }
    }

    /// Keeps (the default) or stops keeping upstream histories. The cockpit draws
    /// sparklines for routes and environments only, and at 1,000 upstreams per gateway
    /// their histories were two thirds of all; `ctl status --json` still has them.
    pub fn keep_upstreams(&mut self, keep: bool) {
        self.upstreams = keep;
        if !keep {
            self.map.retain(|k, _| !matches!(k, HistKey::Upstream(_)));
        }
    }

    pub fn keeps_upstreams(&self) -> bool {
        self.upstreams
    }

    fn kept(&self, key: &HistKey) -> bool {
        self.upstreams || !matches!(key, HistKey::Upstream(_))
    }

    /// Appends a point and returns a copy of the history for the sample: a handle to the
    /// same points, which stay stored once (see [`History`]).
    /// An upstream's history when upstreams are not kept is empty.
    pub fn push(&mut self, key: HistKey, p: HistoryPoint) -> History {
        if !self.kept(&key) {
            return History::with_capacity(self.capacity);
        }
        let (touched, h) = self
            .map
            .entry(key)
            .or_insert_with(|| (0, History::with_capacity(self.capacity)));
        *touched = self.generation;
        h.push(p);
        h.clone()
    }

    /// Seeds a history (from a range query) before live points arrive.
    pub fn seed(&mut self, key: HistKey, points: impl IntoIterator<Item = HistoryPoint>) {
        if !self.kept(&key) {
            return;
        }
        let (_, h) = self
            .map
            .entry(key)
            .or_insert_with(|| (0, History::with_capacity(self.capacity)));
        for p in points {
            h.push(p);
        }
    }

    /// Ends a sample: forgets every history that was not pushed to since the last call.
    pub fn finish(&mut self) {
        let current = self.generation;
        self.map.retain(|_, (touched, _)| *touched == current);
        self.generation += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::metrics::{Signal, Signals};
    use chrono::DateTime;

    #[test]
    fn untouched_histories_are_dropped() {
        let mut h = Histories::new(5);
        let p = |s| Signals::all(Signal::value(1.0)).point(DateTime::from_timestamp(s, 0).unwrap());
        h.push(HistKey::Route("a".into()), p(1));
        h.push(HistKey::Route("b".into()), p(1));
        h.finish();
        assert_eq!(h.push(HistKey::Route("a".into()), p(2)).len(), 2);
        h.finish();
        assert_eq!(h.push(HistKey::Route("b".into()), p(3)).len(), 1);
    }

    #[test]
    fn upstream_histories_can_be_left_out() {
        let mut h = Histories::new(5);
        let p = |s| Signals::all(Signal::value(1.0)).point(DateTime::from_timestamp(s, 0).unwrap());
        let up = || {
            HistKey::Upstream(Pair {
                route: "a".into(),
                upstream: "blue".into(),
            })
        };
        h.push(up(), p(1));
        h.finish();
        assert_eq!(h.push(up(), p(2)).len(), 2);
        h.keep_upstreams(false);
        assert!(!h.keeps_upstreams());
        assert_eq!(h.map.len(), 0, "existing upstream histories are dropped");
        assert!(h.push(up(), p(3)).is_empty());
        h.seed(up(), [p(4)]);
        assert_eq!(h.push(HistKey::Route("a".into()), p(3)).len(), 1);
        assert_eq!(h.push(HistKey::Overall, p(3)).len(), 1);
        assert_eq!(h.map.len(), 2);
    }
}
