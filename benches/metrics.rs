//! Parsing and aggregating a 10,000-series exposition, as the scrape source does on
//! every refresh. Target: well under 20 ms per scrape.

use std::hint::black_box;
use std::time::Duration;

use chrono::Utc;
use criterion::{Criterion, criterion_group, criterion_main};
use http::Method;
use signalbox::gateway::metrics::GatewayMetrics;
use signalbox::metrics::CanaryRoles;
use signalbox::metrics::CompareConfig;
use signalbox::metrics::exposition;
use signalbox::metrics::scrape::{ScrapeState, ScrapeTime};

/// 456 route/upstream pairs (two upstreams per route), each with 6 request series
/// (GET/POST × 2xx/4xx/5xx) and a 16-line latency histogram: 10,032 series, written by
/// the gateway's own encoder. Returns two consecutive scrapes.
fn expositions() -> (String, String, usize) {
    let m = GatewayMetrics::new();
    let pairs: Vec<_> = (0..456)
        .map(|i| m.pair(&format!("route-{:03}", i / 2), &format!("svc-{}", i % 2)))
        .collect();
    let record = |round: u64| {
        for (i, p) in pairs.iter().enumerate() {
            for k in 0..(20 + round) {
                let method = if k % 2 == 0 {
                    Method::GET
                } else {
                    Method::POST
                };
                // Both methods see every class: 10% 5xx, 10% 4xx.
                let status = match k % 20 {
                    0 | 1 => 503,
                    2 | 3 => 404,
                    _ => 200,
                };
                p.record(&method, status, 0.001 * ((k as usize * 7 + i) % 400) as f64);
            }
        }
    };
    record(0);
    let first = m.encode();
    record(1);
    let second = m.encode();
    let series = exposition::parse(&second).unwrap().series_count();
    (first, second, series)
}

fn bench(c: &mut Criterion) {
    let (first, second, series) = expositions();
    assert!(series >= 10_000, "only {series} series");
    eprintln!("exposition: {series} series, {} KiB", second.len() / 1024);

    // For comparison only: the tokeniser of prometheus-parse, which the parser uses for
    // `#` lines but not for samples (see metrics::exposition).
    c.bench_function(
        "baseline: prometheus-parse LineInfo over the same text",
        |b| {
            b.iter(|| {
                let mut n = 0usize;
                for l in second.lines() {
                    if let prometheus_parse::LineInfo::Sample { value, .. } =
                        prometheus_parse::LineInfo::parse(l)
                    {
                        n += value.len();
                    }
                }
                black_box(n)
            })
        },
    );

    c.bench_function("parse 10k-series exposition", |b| {
        b.iter(|| exposition::parse(black_box(&second)).unwrap())
    });

    // Steady state: a 30 s window of 2 s scrapes (15 intervals) already full, then one
    // more scrape parsed, diffed, windowed, aggregated into a sample with comparisons.
    let roles = CanaryRoles::default();
    let mut state = ScrapeState::new(
        "bench",
        "bench",
        Duration::from_secs(30),
        60,
        CompareConfig::default(),
    );
    let mut mono = Duration::ZERO;
    let mut texts = [&first, &second].into_iter().cycle();
    let mut next = move |state: &mut ScrapeState| {
        mono += Duration::from_secs(2);
        let at = ScrapeTime {
            wall: Utc::now(),
            mono,
        };
        state
            .ingest_text(texts.next().unwrap(), at, &roles)
            .unwrap()
    };
    for _ in 0..16 {
        next(&mut state);
    }
    let sample = next(&mut state);
    assert_eq!(sample.routes.len(), 228);
    assert!(sample.routes.iter().all(|r| r.comparison.is_some()));
    c.bench_function("parse + aggregate 10k-series scrape", |b| {
        b.iter(|| black_box(next(&mut state)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
