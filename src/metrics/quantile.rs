//! `histogram_quantile` over classic (cumulative `le`) buckets, exactly as Prometheus
//! computes it (promql/quantile.go, `bucketQuantile`), so a panel fed by a direct scrape
//! shows the same p95 as a Grafana panel over the same buckets.

/// A cumulative bucket: observations `<= upper_bound`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bucket {
    pub upper_bound: f64,
    pub count: f64,
}

/// The `q`-quantile of cumulative buckets, Prometheus's way:
///
/// - `q` NaN gives NaN; `q < 0` gives -Inf; `q > 1` gives +Inf.
/// - The highest bucket must be `+Inf`, else NaN. Buckets with the same bound are merged.
/// - Counts that decrease with the bound are first corrected for float noise (relative
///   1e-12) and then forced monotonic (each count raised to the running maximum).
/// - Fewer than two buckets, or zero observations, give NaN.
/// - The value is interpolated linearly inside the bucket that holds rank `q * total`;
///   the lowest bucket starts at 0 (or, if its bound is `<= 0`, that bound is returned);
///   a rank in the `+Inf` bucket returns the upper bound of the bucket below it.
///
/// `buckets` is sorted in place.
pub fn bucket_quantile(q: f64, buckets: &mut Vec<Bucket>) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    if buckets.is_empty() {
        return f64::NAN;
    }
    buckets.sort_by(|a, b| a.upper_bound.total_cmp(&b.upper_bound));
    if buckets[buckets.len() - 1].upper_bound != f64::INFINITY {
        return f64::NAN;
    }
    coalesce(buckets);
    correct_precision_errors(buckets, 1e-12);
    ensure_monotonic(buckets);
    if buckets.len() < 2 {
        return f64::NAN;
    }
    let observations = buckets[buckets.len() - 1].count;
    if observations == 0.0 {
        return f64::NAN;
    }
    let mut rank = q * observations;
    // First bucket (excluding +Inf) whose cumulative count reaches the rank.
    let last = buckets.len() - 1;
    let b = buckets[..last].partition_point(|bk| bk.count < rank);
    if b == last {
        return buckets[last - 1].upper_bound;
    }
    if b == 0 && buckets[0].upper_bound <= 0.0 {
        return buckets[0].upper_bound;
    }
    let bucket_end = buckets[b].upper_bound;
    let mut count = buckets[b].count;
    let mut bucket_start = 0.0;
    if b > 0 {
        bucket_start = buckets[b - 1].upper_bound;
        count -= buckets[b - 1].count;
        rank -= buckets[b - 1].count;
    }
    bucket_start + (bucket_end - bucket_start) * (rank / count)
}

/// Convenience for `(upper_bound, cumulative_count)` pairs; does not modify them.
pub fn quantile_of(q: f64, buckets: &[(f64, f64)]) -> f64 {
    let mut v: Vec<Bucket> = buckets
        .iter()
        .map(|&(upper_bound, count)| Bucket { upper_bound, count })
        .collect();
    bucket_quantile(q, &mut v)
}

fn coalesce(buckets: &mut Vec<Bucket>) {
    buckets.dedup_by(|next, kept| {
        if next.upper_bound == kept.upper_bound {
            kept.count += next.count;
            true
        } else {
            false
        }
    });
}

fn correct_precision_errors(buckets: &mut [Bucket], tolerance: f64) {
    let mut prev = buckets[0].count;
    for b in buckets.iter_mut().skip(1) {
        let delta = (b.count - prev).abs();
        if delta == 0.0 {
            continue;
        }
        if delta / b.count <= tolerance {
            b.count = prev;
        } else {
            prev = b.count;
        }
    }
}

fn ensure_monotonic(buckets: &mut [Bucket]) {
    let mut max = buckets[0].count;
    for b in buckets.iter_mut().skip(1) {
        if b.count > max {
            max = b.count;
        } else if b.count < max {
            b.count = max;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INF: f64 = f64::INFINITY;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    /// The gateway's buckets with 100 observations: 10 ≤5ms, 50 ≤10ms, 80 ≤25ms,
    /// 95 ≤50ms, 99 ≤100ms, 100 total.
    fn gateway_hist() -> Vec<(f64, f64)> {
        vec![
            (0.001, 0.0),
            (0.0025, 0.0),
            (0.005, 10.0),
            (0.01, 50.0),
            (0.025, 80.0),
            (0.05, 95.0),
            (0.1, 99.0),
            (0.25, 100.0),
            (0.5, 100.0),
            (1.0, 100.0),
            (2.5, 100.0),
            (5.0, 100.0),
            (10.0, 100.0),
            (INF, 100.0),
        ]
    }

    #[test]
    fn interpolates_within_the_bucket_like_prometheus() {
        let h = gateway_hist();
        // p50: rank 50 → first bucket with count ≥ 50 is le=0.01 (count 50), previous
        // le=0.005 with 10: 0.005 + (0.01-0.005) * (50-10)/(50-10) = 0.01.
        assert!(close(quantile_of(0.5, &h), 0.01));
        // p95: rank 95 → le=0.05 (95), prev le=0.025 (80): 0.025 + 0.025*(15/15) = 0.05.
        assert!(close(quantile_of(0.95, &h), 0.05));
        // p90: rank 90 → le=0.05, 0.025 + 0.025 * (90-80)/(95-80) = 0.0416666…
        assert!(close(quantile_of(0.9, &h), 0.025 + 0.025 * 10.0 / 15.0));
        // p99: rank 99 → le=0.1 (99), prev le=0.05 (95): 0.05 + 0.05 * 4/4 = 0.1.
        assert!(close(quantile_of(0.99, &h), 0.1));
        // p97: rank 97 → le=0.1: 0.05 + 0.05 * (97-95)/(99-95) = 0.075.
        assert!(close(quantile_of(0.97, &h), 0.075));
        // p5: rank 5 → le=0.005 (10); prev le=0.0025 (0): 0.0025 + 0.0025 * 5/10.
        assert!(close(quantile_of(0.05, &h), 0.00375));
        // q=0: rank 0 → the first bucket (count 0 ≥ 0), lower bound 0: 0 + 0.001*(0/0)
        // is NaN in Go as well.
        assert!(quantile_of(0.0, &h).is_nan());
        // q=1: rank 100 → le=0.25 (first with count ≥ 100): 0.1 + 0.15 * 1/1.
        assert!(close(quantile_of(1.0, &h), 0.25));
    }

    #[test]
    fn lowest_bucket_starts_at_zero() {
        let h = [(1.0, 4.0), (2.0, 8.0), (INF, 8.0)];
        // rank 2 of 8 in the first bucket: 0 + 1 * 2/4.
        assert!(close(quantile_of(0.25, &h), 0.5));
    }

    #[test]
    fn non_positive_lowest_bound_is_returned_as_is() {
        let h = [(-1.0, 4.0), (2.0, 8.0), (INF, 8.0)];
        assert_eq!(quantile_of(0.25, &h), -1.0);
    }

    #[test]
    fn rank_in_the_inf_bucket_returns_the_bound_below() {
        let h = [(0.1, 1.0), (0.5, 2.0), (INF, 10.0)];
        assert_eq!(quantile_of(0.9, &h), 0.5);
    }

    #[test]
    fn no_observations_or_no_inf_bucket_is_nan() {
        assert!(quantile_of(0.5, &[(0.1, 0.0), (INF, 0.0)]).is_nan());
        assert!(quantile_of(0.5, &[(0.1, 1.0), (0.2, 2.0)]).is_nan());
        assert!(quantile_of(0.5, &[(INF, 5.0)]).is_nan());
        assert!(quantile_of(0.5, &[]).is_nan());
    }

    #[test]
    fn out_of_range_q() {
        let h = gateway_hist();
        assert_eq!(quantile_of(-0.1, &h), f64::NEG_INFINITY);
        assert_eq!(quantile_of(1.1, &h), INF);
        assert!(quantile_of(f64::NAN, &h).is_nan());
    }

    #[test]
    fn unsorted_and_duplicate_bounds() {
        // Two series' buckets listed together merge per bound (coalesceBuckets):
        // le=1 → 2+2=4, le=2 → 3+3=6, +Inf → 4+4=8. p50: rank 4 → le=1: 0 + 1*4/4 = 1.
        let h = [
            (INF, 4.0),
            (2.0, 3.0),
            (1.0, 2.0),
            (1.0, 2.0),
            (2.0, 3.0),
            (INF, 4.0),
        ];
        assert!(close(quantile_of(0.5, &h), 1.0));
        // p75: rank 6 → le=2 (6): 1 + 1 * (6-4)/(6-4) = 2.
        assert!(close(quantile_of(0.75, &h), 2.0));
    }

    #[test]
    fn non_monotonic_counts_are_forced_up() {
        // le=2 has 3 < 5 (le=1): raised to 5. Total 10, p50: rank 5 → le=1 (5):
        // 0 + 1 * 5/5 = 1. p60: rank 6 → le=2 now 5 < 6 → le=3 (10): 2 + 1*(6-5)/(10-5).
        let h = [(1.0, 5.0), (2.0, 3.0), (3.0, 10.0), (INF, 10.0)];
        assert!(close(quantile_of(0.5, &h), 1.0));
        assert!(close(quantile_of(0.6, &h), 2.2));
    }

    #[test]
    fn float_noise_is_not_a_decrease() {
        // 10 vs 10 - 1e-14: within 1e-12 relative, treated as equal (no forced bump).
        let h = [(1.0, 10.0), (2.0, 10.0 - 1e-14), (INF, 20.0)];
        // rank 10 → le=1 → 0 + 1 * 10/10 = 1.
        assert!(close(quantile_of(0.5, &h), 1.0));
    }
}
