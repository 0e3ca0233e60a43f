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
}

impl Histories {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            map: HashMap::new(),
            generation: 0,
        }
    }

    /// Appends a point and returns a copy of the history for the sample: a handle to the
    /// same points, which stay stored once (see [`History`]).
    pub fn push(&mut self, key: HistKey, p: HistoryPoint) -> History {
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
}
