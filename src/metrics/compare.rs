//! Stable (baseline) against canary, the way Kayenta judges a canary: a statistical test
//! says whether the canary is worse, and an effect-size threshold says whether it is
//! worse by enough to matter. Both must hold for a failure.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::domain::metrics::{Comparison, ErrorRatioTest, LatencyTest, RoleSource, Verdict};

use super::quantile::quantile_of;

/// Thresholds for the stable vs canary verdict (the `[compare]` table of a metrics source).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CompareConfig {
    /// Requests each side needs in the window before any verdict but `NotEnoughData`.
    pub min_requests_per_side: u64,
    /// Significance level of both one-sided tests.
    pub alpha: f64,
    /// The canary's 5xx ratio may exceed the baseline's by this much (absolute, 0.01 is
    /// one percentage point) before a significant difference fails it.
    pub max_error_ratio_increase: f64,
    /// The canary's p95 may be this many times the baseline's before a significant
    /// difference fails it.
    pub max_p95_ratio: f64,
}

impl Default for CompareConfig {
    fn default() -> Self {
        Self {
            min_requests_per_side: 200,
            alpha: 0.05,
            max_error_ratio_increase: 0.01,
            max_p95_ratio: 1.25,
        }
    }
}

impl CompareConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.min_requests_per_side == 0 {
            return Err("compare.min_requests_per_side must be at least 1".into());
        }
        if !(self.alpha > 0.0 && self.alpha < 1.0) {
            return Err(format!(
                "compare.alpha must be between 0 and 1, got {}",
                self.alpha
            ));
        }
        if !(self.max_error_ratio_increase >= 0.0 && self.max_error_ratio_increase <= 1.0) {
            return Err(format!(
                "compare.max_error_ratio_increase must be between 0 and 1, got {}",
                self.max_error_ratio_increase
            ));
        }
        if !(self.max_p95_ratio >= 1.0 && self.max_p95_ratio.is_finite()) {
            return Err(format!(
                "compare.max_p95_ratio must be at least 1, got {}",
                self.max_p95_ratio
            ));
        }
        Ok(())
    }
}

/// Which upstream of a route is the baseline and which the canary, as the route's split
/// or header canary says. Routes not listed get roles by traffic.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanaryRoles(pub BTreeMap<String, RolePair>);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolePair {
    pub baseline: String,
    pub canary: String,
}

impl CanaryRoles {
    pub fn set(
        &mut self,
        route: impl Into<String>,
        baseline: impl Into<String>,
        canary: impl Into<String>,
    ) {
        self.0.insert(
            route.into(),
            RolePair {
                baseline: baseline.into(),
                canary: canary.into(),
            },
        );
    }

    /// Baseline and canary for a route with these upstreams and request counts. Configured
    /// roles win; otherwise the busiest upstream is the baseline and the next the canary
    /// (ties by name). Requests that reached no upstream (`""`) are never a side.
    pub fn choose(
        &self,
        route: &str,
        upstreams: &[(&str, f64)],
    ) -> Option<(String, String, RoleSource)> {
        if let Some(p) = self.0.get(route) {
            return Some((p.baseline.clone(), p.canary.clone(), RoleSource::Configured));
        }
        let mut named: Vec<(&str, f64)> = upstreams
            .iter()
            .copied()
            .filter(|(u, _)| !u.is_empty())
            .collect();
        if named.len() < 2 {
            return None;
        }
        named.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        Some((
            named[0].0.to_owned(),
            named[1].0.to_owned(),
            RoleSource::ByTraffic,
        ))
    }
}

/// What one side of the comparison measured over the window.
#[derive(Clone, Copy, Debug, Default)]
pub struct Side<'a> {
    pub upstream: &'a str,
    /// Requests in the window; `None` when unknown (e.g. the query failed).
    pub requests: Option<f64>,
    /// 5xx responses in the window.
    pub errors_5xx: Option<f64>,
    pub p95: Option<f64>,
    /// Cumulative latency bucket increases over the window, `(upper_bound, count)`,
    /// ending with `+Inf`.
    pub buckets: Option<&'a [(f64, f64)]>,
}

/// Requests each side needs before a 5xx regression can fail a comparison that is short of
/// `min_requests_per_side`, and how much stricter than `alpha` its test must then be.
const EARLY_MIN_REQUESTS: f64 = 20.0;
const EARLY_ALPHA_DIVISOR: f64 = 100.0;

/// Judges the canary against the baseline.
pub fn compare(
    baseline: &Side,
    canary: &Side,
    roles: RoleSource,
    cfg: &CompareConfig,
) -> Comparison {
    let mut fails = Vec::new();
    // A 5xx regression proven even on little traffic, which need not wait for the rest.
    let mut overwhelming = false;
    // The first reason some part could not be judged.
    let mut missing: Option<String> = None;
    let (b, c) = (baseline.upstream, canary.upstream);
    let min = cfg.min_requests_per_side as f64;

    let too_few = match (baseline.requests, canary.requests) {
        (Some(nb), Some(nc)) if nb >= min && nc >= min => None,
        (Some(nb), Some(nc)) => Some(format!(
            "{b} had {nb:.0} {} and {c} {nc:.0} in the window; each side needs {min:.0}",
            if nb.round() == 1.0 {
                "request"
            } else {
                "requests"
            }
        )),
        _ => Some(format!("request counts for {b} or {c} are unavailable")),
    };

    let errors = match (
        baseline.requests,
        baseline.errors_5xx,
        canary.requests,
        canary.errors_5xx,
    ) {
        (Some(nb), Some(xb), Some(nc), Some(xc)) if nb > 0.0 && nc > 0.0 => {
            let t = two_proportion_test(xb, nb, xc, nc);
            let test = ErrorRatioTest {
                baseline_ratio: xb / nb,
                canary_ratio: xc / nc,
                increase: xc / nc - xb / nb,
                z: t.z,
                p_value: t.p_value,
            };
            if test.increase > cfg.max_error_ratio_increase && test.p_value < cfg.alpha {
                overwhelming = nb >= EARLY_MIN_REQUESTS
                    && nc >= EARLY_MIN_REQUESTS
                    && test.p_value < cfg.alpha / EARLY_ALPHA_DIVISOR;
                fails.push(format!(
                    "5xx ratio {:.2}% on {c} vs {:.2}% on {b} (+{:.2} points, allowed +{:.2}; p={:.4})",
                    test.canary_ratio * 100.0,
                    test.baseline_ratio * 100.0,
                    test.increase * 100.0,
                    cfg.max_error_ratio_increase * 100.0,
                    test.p_value
                ));
            }
            Some(test)
        }
        (Some(_), Some(_), Some(_), Some(_)) => {
            missing.get_or_insert(format!("{b} or {c} had no requests in the window"));
            None
        }
        _ => {
            missing.get_or_insert(format!("5xx counts for {b} or {c} are unavailable"));
            None
        }
    };

    let p95_ratio = match (baseline.p95, canary.p95) {
        (Some(pb), Some(pc)) if pb > 0.0 => Some(pc / pb),
        _ => None,
    };
    let mw = match (baseline.buckets, canary.buckets) {
        (Some(bb), Some(cb)) => aligned_counts(bb, cb).and_then(|(x, y)| mann_whitney(&x, &y)),
        _ => None,
    };
    let obs = |s: &Side| s.buckets.and_then(|b| b.last()).map_or(0.0, |l| l.1);
    let latency = LatencyTest {
        baseline_p95: baseline.p95,
        canary_p95: canary.p95,
        p95_ratio,
        baseline_observations: obs(baseline),
        canary_observations: obs(canary),
        u: mw.map(|m| m.u),
        z: mw.map(|m| m.z),
        p_value: mw.map(|m| m.p_value),
    };
    match (p95_ratio, mw) {
        (Some(ratio), Some(m)) => {
            if latency.baseline_observations < min || latency.canary_observations < min {
                missing.get_or_insert(format!(
                    "latency: {b} had {:.0} observations and {c} {:.0}; each side needs {min:.0}",
                    latency.baseline_observations, latency.canary_observations
                ));
            } else if ratio > cfg.max_p95_ratio && m.p_value < cfg.alpha {
                fails.push(format!(
                    "p95 {} on {c} vs {} on {b} ({ratio:.2}x, allowed {:.2}x; p={:.4})",
                    fmt_secs(canary.p95),
                    fmt_secs(baseline.p95),
                    cfg.max_p95_ratio,
                    m.p_value
                ));
            }
        }
        (None, _) => {
            missing.get_or_insert(format!("p95 of {b} or {c} is unavailable"));
        }
        (_, None) => {
            missing.get_or_insert(format!(
                "latency buckets of {b} and {c} are unavailable or do not line up"
            ));
        }
    }

    // Too little traffic outranks everything — a few requests prove nothing either way —
    // except a 5xx regression so clear that a fraction of the data proves it: a canary that
    // fails every request should not be "not enough data" for 200 requests.
    // A clear regression outranks data missing elsewhere.
    let verdict = match (too_few, missing) {
        (Some(_), _) if overwhelming => Verdict::Fail { reasons: fails },
        (Some(reason), _) => Verdict::NotEnoughData { reason },
        _ if !fails.is_empty() => Verdict::Fail { reasons: fails },
        (None, Some(reason)) => Verdict::NotEnoughData { reason },
        (None, None) => Verdict::Pass,
    };
    Comparison {
        baseline: b.to_owned(),
        canary: c.to_owned(),
        roles,
        baseline_requests: baseline.requests.unwrap_or(0.0),
        canary_requests: canary.requests.unwrap_or(0.0),
        errors,
        latency: Some(latency),
        verdict,
    }
}

fn fmt_secs(v: Option<f64>) -> String {
    match v {
        Some(s) if s < 1.0 => format!("{:.1}ms", s * 1000.0),
        Some(s) => format!("{s:.2}s"),
        None => "n/a".into(),
    }
}

/// A one-sided test statistic and its p-value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TestResult {
    pub z: f64,
    pub p_value: f64,
}

/// Two-proportion z-test with pooled variance, one-sided: H1 is "the canary's error
/// proportion is higher". `x` are error counts, `n` request counts (both > 0).
/// With no variance at all (no errors anywhere, or only errors) the proportions are
/// equal: z = 0.
pub fn two_proportion_test(x_base: f64, n_base: f64, x_canary: f64, n_canary: f64) -> TestResult {
    let p_base = x_base / n_base;
    let p_canary = x_canary / n_canary;
    let pooled = (x_base + x_canary) / (n_base + n_canary);
    let var = pooled * (1.0 - pooled) * (1.0 / n_base + 1.0 / n_canary);
    let z = if var > 0.0 {
        (p_canary - p_base) / var.sqrt()
    } else {
        0.0
    };
    TestResult {
        z,
        p_value: normal_sf(z),
    }
}

/// Mann–Whitney U result for the canary sample.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MannWhitney {
    pub u: f64,
    pub z: f64,
    pub p_value: f64,
}

/// Mann–Whitney U test from histogram bucket counts, one-sided: H1 is "canary latencies
/// tend to be larger".
///
/// `baseline` and `canary` are per-bucket (non-cumulative) counts over the same buckets,
/// in increasing order of bound. A histogram only knows which bucket a request fell in,
/// so all values in one bucket are treated as ties: they share the average rank of the
/// bucket, and the variance carries the tie correction
/// `σ² = n₁n₂/12 · ((N+1) − Σ(t³−t)/(N(N−1)))`. The normal approximation uses a
/// continuity correction of 0.5 (as scipy's `mannwhitneyu` does), which is sound at the
/// request counts the verdict requires. `U = Σ_i c_i · (B_{<i} + b_i/2)` counts pairs
/// where the canary is slower, ties counting half.
///
/// `None` when either side is empty. With every observation in one bucket the samples
/// cannot be told apart: z = 0 and p = 0.5.
pub fn mann_whitney(baseline: &[f64], canary: &[f64]) -> Option<MannWhitney> {
    if baseline.len() != canary.len() {
        return None;
    }
    let n1: f64 = baseline.iter().sum();
    let n2: f64 = canary.iter().sum();
    if !(n1 > 0.0 && n2 > 0.0) {
        return None;
    }
    let n = n1 + n2;
    let mut u = 0.0;
    let mut below = 0.0;
    let mut ties = 0.0;
    for (&b, &c) in baseline.iter().zip(canary) {
        u += c * (below + b / 2.0);
        below += b;
        let t = b + c;
        ties += t * t * t - t;
    }
    let mean = n1 * n2 / 2.0;
    let var = n1 * n2 / 12.0 * ((n + 1.0) - ties / (n * (n - 1.0)));
    let z = if var > 0.0 {
        (u - mean - 0.5) / var.sqrt()
    } else {
        0.0
    };
    Some(MannWhitney {
        u,
        z,
        p_value: normal_sf(z),
    })
}

/// Per-bucket counts of two cumulative histograms over the bucket bounds they share, so
/// that histograms with different layouts are compared at their common resolution.
fn aligned_counts(a: &[(f64, f64)], b: &[(f64, f64)]) -> Option<(Vec<f64>, Vec<f64>)> {
    let common: Vec<f64> = a
        .iter()
        .map(|x| x.0)
        .filter(|le| b.iter().any(|y| y.0 == *le))
        .collect();
    if common.last() != Some(&f64::INFINITY) {
        return None;
    }
    let at = |h: &[(f64, f64)], le: f64| h.iter().find(|x| x.0 == le).map_or(0.0, |x| x.1);
    let diff = |h: &[(f64, f64)]| {
        let mut prev = 0.0;
        common
            .iter()
            .map(|&le| {
                let cum: f64 = at(h, le);
                let d = (cum - prev).max(0.0);
                prev = prev.max(cum);
                d
            })
            .collect::<Vec<f64>>()
    };
    Some((diff(a), diff(b)))
}

/// The p95 of cumulative buckets, Prometheus's way; `None` without observations.
pub fn p95_of(buckets: &[(f64, f64)]) -> Option<f64> {
    let v = quantile_of(0.95, buckets);
    v.is_finite().then_some(v)
}

/// Upper tail of the standard normal distribution, P(Z > z).
pub fn normal_sf(z: f64) -> f64 {
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// Complementary error function, to about 1e-12 relative: below 2 as `1 - erf` with
/// erf's all-positive series `2/√π · e^(−x²) · Σ 2ⁿ x^(2n+1) / (2n+1)!!` (no
/// cancellation inside the sum), from 2 on by its continued fraction
/// `e^(−x²)/√π · 1/(x + ½/(x + 1/(x + (3/2)/(x + …))))`, which converges fast there.
fn erfc(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    if x < 0.0 {
        return 2.0 - erfc(-x);
    }
    let inv_sqrt_pi = std::f64::consts::FRAC_2_SQRT_PI / 2.0;
    if x < 2.0 {
        let mut sum = 0.0;
        let mut term = x;
        let mut n = 0.0;
        loop {
            sum += term;
            n += 1.0;
            term *= 2.0 * x * x / (2.0 * n + 1.0);
            if term <= 1e-17 * sum || n > 200.0 {
                break;
            }
        }
        return 1.0 - 2.0 * inv_sqrt_pi * (-x * x).exp() * sum;
    }
    let mut f = x;
    for k in (1..=100).rev() {
        f = x + (k as f64 / 2.0) / f;
    }
    (-x * x).exp() * inv_sqrt_pi / f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel_close(a: f64, b: f64, tol: f64) -> bool {
        ((a - b) / b).abs() < tol
    }

    #[test]
    fn normal_tail_matches_tables() {
        // Reference values: 0.5 * math.erfc(z / sqrt(2)) in double precision.
        let table = [
            (0.0, 0.5),
            (1.0, 0.15865525393145707),
            (1.96, 0.024997895148220435),
            (1.6448536269514722, 0.05),
            (3.0, 0.0013498980316300957),
            (-1.0, 0.8413447460685429),
            (-3.0, 0.9986501019683699),
            (5.0, 2.866515718791946e-07),
            (8.0, 6.220960574271819e-16),
        ];
        for (z, p) in table {
            assert!(
                rel_close(normal_sf(z), p, 1e-11),
                "sf({z}) = {} vs {p}",
                normal_sf(z)
            );
        }
    }

    #[test]
    fn two_proportion_test_by_hand() {
        // Baseline 10 errors / 1000, canary 15 / 500.
        // pooled p = 25/1500 = 0.0166667; se = sqrt(p(1-p)(1/1000 + 1/500)) = 0.00701189;
        // z = (0.03 - 0.01)/se = 2.852296; one-sided p = 1 - Φ(z) = 0.00217023.
        let t = two_proportion_test(10.0, 1000.0, 15.0, 500.0);
        assert!(rel_close(t.z, 2.8522961312491697, 1e-12));
        assert!(rel_close(t.p_value, 0.002170232216386888, 1e-11));
        // Reversed sides: the canary is better, z is negative, p large.
        let t = two_proportion_test(15.0, 500.0, 10.0, 1000.0);
        assert!(rel_close(t.z, -2.8522961312491697, 1e-12));
        assert!(t.p_value > 0.99);
        // No errors anywhere: no variance, no evidence.
        let t = two_proportion_test(0.0, 100.0, 0.0, 100.0);
        assert_eq!((t.z, t.p_value), (0.0, 0.5));
    }

    #[test]
    fn mann_whitney_with_bucket_ties_by_hand() {
        // Baseline 3 in bucket 0, 2 in bucket 1; canary 2 in bucket 1, 3 in bucket 2.
        // Ranks: bucket 0 holds ranks 1-3 (avg 2), bucket 1 ranks 4-7 (avg 5.5), bucket 2
        // ranks 8-10 (avg 9). R_canary = 2*5.5 + 3*9 = 38; U = 38 - 5*6/2 = 23.
        // Tie sizes 3,4,3: Σ(t³-t) = 24+60+24 = 108; σ² = 25/12 * (11 - 108/90) = 20.41667.
        // z = (23 - 12.5 - 0.5)/sqrt(20.41667) = 2.213133; p = 0.01344423.
        let m = mann_whitney(&[3.0, 2.0, 0.0], &[0.0, 2.0, 3.0]).unwrap();
        assert_eq!(m.u, 23.0);
        assert!(rel_close(m.z, 2.2131333406899527, 1e-12));
        assert!(rel_close(m.p_value, 0.013444227051872896, 1e-11));
    }

    #[test]
    fn mann_whitney_edge_cases() {
        assert!(mann_whitney(&[0.0, 0.0], &[1.0, 2.0]).is_none());
        assert!(mann_whitney(&[1.0], &[1.0, 2.0]).is_none());
        // All in one bucket: indistinguishable.
        let m = mann_whitney(&[0.0, 10.0, 0.0], &[0.0, 7.0, 0.0]).unwrap();
        assert_eq!((m.u, m.z, m.p_value), (35.0, 0.0, 0.5));
        // Identical distributions: U is its mean, z is -0.5/σ, p just above 0.5.
        let m = mann_whitney(&[5.0, 5.0], &[5.0, 5.0]).unwrap();
        assert_eq!(m.u, 50.0);
        assert!(m.p_value > 0.5 && m.p_value < 0.6);
    }

    #[test]
    fn aligned_counts_use_common_bounds() {
        let a = [(0.1, 2.0), (0.2, 5.0), (f64::INFINITY, 6.0)];
        let b = [(0.1, 1.0), (0.15, 1.0), (0.2, 3.0), (f64::INFINITY, 4.0)];
        let (x, y) = aligned_counts(&a, &b).unwrap();
        assert_eq!(x, vec![2.0, 3.0, 1.0]);
        assert_eq!(y, vec![1.0, 2.0, 1.0]);
        assert!(aligned_counts(&a, &[(0.1, 1.0)]).is_none());
    }

    fn hist(counts: &[f64]) -> Vec<(f64, f64)> {
        let bounds = [0.01, 0.05, 0.1, 0.5, f64::INFINITY];
        let mut cum = 0.0;
        bounds
            .iter()
            .zip(counts)
            .map(|(&le, &c)| {
                cum += c;
                (le, cum)
            })
            .collect()
    }

    fn side<'a>(name: &'a str, n: f64, errs: f64, h: &'a [(f64, f64)]) -> Side<'a> {
        Side {
            upstream: name,
            requests: Some(n),
            errors_5xx: Some(errs),
            p95: p95_of(h),
            buckets: Some(h),
        }
    }

    #[test]
    fn healthy_canary_passes() {
        let h = hist(&[400.0, 400.0, 150.0, 50.0, 0.0]);
        let c = hist(&[200.0, 200.0, 75.0, 25.0, 0.0]);
        let cmp = compare(
            &side("blue", 1000.0, 10.0, &h),
            &side("green", 500.0, 5.0, &c),
            RoleSource::ByTraffic,
            &CompareConfig::default(),
        );
        assert_eq!(cmp.verdict, Verdict::Pass);
        let e = cmp.errors.unwrap();
        assert_eq!((e.baseline_ratio, e.canary_ratio), (0.01, 0.01));
    }

    #[test]
    fn erroring_and_slow_canary_fails_with_both_reasons() {
        let h = hist(&[400.0, 400.0, 150.0, 50.0, 0.0]);
        let c = hist(&[20.0, 80.0, 200.0, 200.0, 0.0]);
        let cmp = compare(
            &side("blue", 1000.0, 10.0, &h),
            &side("green", 500.0, 50.0, &c),
            RoleSource::Configured,
            &CompareConfig::default(),
        );
        match &cmp.verdict {
            Verdict::Fail { reasons } => {
                assert_eq!(reasons.len(), 2, "{reasons:?}");
                assert!(reasons[0].starts_with("5xx ratio 10.00% on green vs 1.00% on blue"));
                assert!(reasons[1].starts_with("p95 "), "{reasons:?}");
            }
            v => panic!("expected a failure, got {v:?}"),
        }
    }

    #[test]
    fn small_significant_increase_within_allowance_passes() {
        // 1.0% vs 1.6%: significant at this volume, but under the allowed +1 point.
        let h = hist(&[40000.0, 40000.0, 15000.0, 5000.0, 0.0]);
        let cmp = compare(
            &side("blue", 100000.0, 1000.0, &h),
            &side("green", 100000.0, 1600.0, &h),
            RoleSource::ByTraffic,
            &CompareConfig::default(),
        );
        assert!(cmp.errors.as_ref().unwrap().p_value < 0.05);
        assert_eq!(cmp.verdict, Verdict::Pass);
    }

    #[test]
    fn too_few_requests_is_never_a_pass_and_only_an_overwhelming_regression_fails() {
        let h = hist(&[40.0, 40.0, 15.0, 5.0, 0.0]);
        let c = hist(&[0.0, 0.0, 0.0, 0.0, 100.0]);
        let judge = |n: f64, canary_errors: f64| {
            compare(
                &side("blue", n, 0.0, &h),
                &side("green", n, canary_errors, &c),
                RoleSource::ByTraffic,
                &CompareConfig::default(),
            )
            .verdict
        };
        // Every canary request failing, 100 a side: no need to wait for 200.
        match judge(100.0, 100.0) {
            Verdict::Fail { reasons } => {
                assert!(
                    reasons[0].starts_with("5xx ratio 100.00% on green"),
                    "{reasons:?}"
                )
            }
            v => panic!("expected Fail, got {v:?}"),
        }
        // 3 % against 0 % on 100 requests, or everything failing on 10: not proof yet.
        for (n, errors) in [(100.0, 3.0), (10.0, 10.0)] {
            match judge(n, errors) {
                Verdict::NotEnoughData { reason } => {
                    assert!(reason.contains("each side needs 200"), "{reason}")
                }
                v => panic!("{errors}/{n}: expected NotEnoughData, got {v:?}"),
            }
        }
    }

    #[test]
    fn missing_latency_data_is_not_a_pass() {
        let h = hist(&[400.0, 400.0, 150.0, 50.0, 0.0]);
        let mut b = side("blue", 1000.0, 10.0, &h);
        let mut c = side("green", 1000.0, 10.0, &h);
        b.buckets = None;
        c.buckets = None;
        let cmp = compare(&b, &c, RoleSource::ByTraffic, &CompareConfig::default());
        assert!(matches!(cmp.verdict, Verdict::NotEnoughData { .. }));
        // ...but a clear error regression still fails.
        c.errors_5xx = Some(200.0);
        let cmp = compare(&b, &c, RoleSource::ByTraffic, &CompareConfig::default());
        assert!(
            matches!(cmp.verdict, Verdict::Fail { .. }),
            "{:?}",
            cmp.verdict
        );
    }

    #[test]
    fn roles_by_config_or_traffic() {
        let mut roles = CanaryRoles::default();
        let ups = [("", 500.0), ("green", 10.0), ("blue", 90.0)];
        assert_eq!(
            roles.choose("users", &ups),
            Some(("blue".into(), "green".into(), RoleSource::ByTraffic))
        );
        roles.set("users", "green", "blue");
        assert_eq!(
            roles.choose("users", &ups),
            Some(("green".into(), "blue".into(), RoleSource::Configured))
        );
        assert_eq!(
            CanaryRoles::default().choose("x", &[("", 1.0), ("a", 2.0)]),
            None
        );
    }

    #[test]
    fn config_validation() {
        assert!(CompareConfig::default().validate().is_ok());
        let bad = CompareConfig {
            alpha: 1.5,
            ..CompareConfig::default()
        };
        assert!(bad.validate().unwrap_err().contains("alpha"));
    }
}
