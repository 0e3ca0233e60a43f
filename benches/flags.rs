//! Flag evaluation cost: a static flag, and a targeting rule with `fractional`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use signalbox::flags::FlagStore;

const FLAGS: &str = r#"{
  "flags": {
    "static-flag": {
      "state": "ENABLED",
      "variants": {"on": true, "off": false},
      "defaultVariant": "on"
    },
    "rollout": {
      "state": "ENABLED",
      "variants": {"new": "checkout-v2", "old": "checkout-v1"},
      "defaultVariant": "old",
      "targeting": {
        "if": [
          {"ends_with": [{"var": "email"}, "@example.com"]},
          "new",
          {"fractional": [
            {"cat": [{"var": "$flagd.flagKey"}, {"var": "targetingKey"}]},
            ["new", 10],
            ["old", 90]
          ]}
        ]
      }
    }
  }
}"#;

fn flags(c: &mut Criterion) {
    let store = FlagStore::from_json(FLAGS).expect("valid flags");
    let ctx = json!({
        "targetingKey": "6f1c2d9e-7a41-4c8e-9a57-0f6e2b1d3c44",
        "email": "someone@customer.org",
        "country": "NL",
        "plan": "pro"
    });
    c.bench_function("static flag", |b| {
        b.iter(|| store.evaluate(black_box("static-flag"), black_box(&ctx)))
    });
    c.bench_function("targeting with fractional", |b| {
        b.iter(|| store.evaluate(black_box("rollout"), black_box(&ctx)))
    });
    c.bench_function("typed boolean, static", |b| {
        b.iter(|| store.resolve(black_box("static-flag"), black_box(&ctx), false))
    });
}

criterion_group!(benches, flags);
criterion_main!(benches);
