//! Feature flags in a real gateway: route gating per cohort, flag headers, OFREP, flag
//! changes as revisions with rollback, evaluation metrics, and bad flag files refused.

mod common;

use common::{client, gateway, json, upstream};
use serde_json::json;

const TOKEN: &str = "flags-admin-token-77a1";

const FLAGS: &str = r##"{
  "$schema": "https://flagd.dev/schema/v0/flags.json",
  "metadata": {"team": "checkout"},
  "flags": {
    "new-checkout": {
      "state": "ENABLED",
      "variants": {"on": true, "off": false},
      "defaultVariant": "off",
      "targeting": {"if": [{"starts_with": [{"var": "targetingKey"}, "beta-"]}, "on", null]}
    },
    "banner-color": {
      "state": "ENABLED",
      "variants": {"red": "#f00", "blue": "#00f"},
      "defaultVariant": "blue"
    },
    "legacy-export": {
      "state": "DISABLED",
      "variants": {"on": true, "off": false},
      "defaultVariant": "on"
    }
  }
}"##;

async fn setup() -> (common::Upstream, common::Gateway) {
    let up = upstream("checkout").await;
    let dir = tempfile::tempdir().unwrap().keep();
    std::fs::write(dir.join("token"), TOKEN).unwrap();
    std::fs::write(dir.join("flags.json"), FLAGS).unwrap();
    let yaml = format!(
        "
admin: {{ token_file: {dir}/token }}
flags: {dir}/flags.json
upstreams:
  checkout: {{ targets: [{}] }}
routes:
  - name: checkout
    paths: [/checkout]
    split: {{ checkout: 1 }}
    flag: {{ key: new-checkout, targeting_key: X-User-Id, forward_headers: true }}
  - name: open
    paths: [/open]
    split: {{ checkout: 1 }}
",
        up.target(),
        dir = dir.display()
    );
    (up, gateway(&yaml).await)
}

#[tokio::test]
async fn a_gated_route_exists_only_for_its_cohort_and_carries_flag_headers() {
    let (up, gw) = setup().await;
    let c = client();
    let r = c
        .get(gw.url("/checkout"))
        .header("x-user-id", "alice")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(json(r).await["error"]["code"], "route_not_found");
    assert_eq!(up.hits(), 0);

    let r = c
        .get(gw.url("/checkout"))
        .header("x-user-id", "beta-42")
        .header("x-flag-banner-color", "spoofed")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v = json(r).await;
    assert_eq!(v["headers"]["x-flag-new-checkout"], "on");
    assert_eq!(
        v["headers"]["x-flag-banner-color"], "blue",
        "the client's own x-flag header is replaced"
    );
    assert!(
        v["headers"].get("x-flag-legacy-export").is_none(),
        "a disabled flag has no variant to forward"
    );

    let metrics = c
        .get(gw.admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .contains("signalbox_flag_evaluations_total{flag=\"new-checkout\",variant=\"on\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics
            .contains("signalbox_flag_evaluations_total{flag=\"new-checkout\",variant=\"off\"} 1"),
        "{metrics}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn ofrep_found_not_found_disabled_and_bulk() {
    let (_up, gw) = setup().await;
    let c = client();
    let r = c
        .post(gw.admin_url("/ofrep/v1/evaluate/flags/new-checkout"))
        .json(&json!({"context": {"targetingKey": "beta-7"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v = json(r).await;
    assert_eq!(
        (
            v["value"].clone(),
            v["variant"].clone(),
            v["reason"].clone()
        ),
        (json!(true), json!("on"), json!("TARGETING_MATCH"))
    );
    assert_eq!(v["metadata"]["team"], "checkout");

    let r = c
        .post(gw.admin_url("/ofrep/v1/evaluate/flags/nope"))
        .json(&json!({"context": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(json(r).await["errorCode"], "FLAG_NOT_FOUND");

    let r = c
        .post(gw.admin_url("/ofrep/v1/evaluate/flags/legacy-export"))
        .json(&json!({"context": {}}))
        .send()
        .await
        .unwrap();
    let v = json(r).await;
    assert_eq!(v["reason"], "DISABLED", "{v}");

    let r = c
        .post(gw.admin_url("/ofrep/v1/evaluate/flags/new-checkout"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    let r = c
        .post(gw.admin_url("/ofrep/v1/evaluate/flags"))
        .json(&json!({"context": {"targetingKey": "x"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let keys: Vec<String> = json(r).await["flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["key"].as_str().unwrap().to_string())
        .collect();
    assert!(
        keys.contains(&"banner-color".to_string()) && keys.contains(&"new-checkout".to_string()),
        "{keys:?}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_flag_toggle_is_a_revision_that_rollback_undoes() {
    let (_up, gw) = setup().await;
    let c = client();
    let state = json(
        c.get(gw.admin_url("/admin/state"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let nc = state["flags"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["key"] == "new-checkout")
        .unwrap()
        .clone();
    assert_eq!(
        (
            nc["state"].clone(),
            nc["default_variant"].clone(),
            nc["has_targeting"].clone()
        ),
        (json!("ENABLED"), json!("off"), json!(true))
    );
    let r = c
        .get(gw.url("/checkout"))
        .header("x-user-id", "alice")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    let r = c
        .put(gw.admin_url("/admin/flags/new-checkout"))
        .bearer_auth(TOKEN)
        .json(&json!({"defaultVariant": "on"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v = json(r).await;
    assert_eq!(v["revision"]["change"]["kind"], "set_flag");
    assert_eq!(
        c.get(gw.url("/checkout"))
            .header("x-user-id", "alice")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let r = c
        .put(gw.admin_url("/admin/flags/new-checkout"))
        .bearer_auth(TOKEN)
        .json(&json!({"defaultVariant": "purple"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let r = c
        .put(gw.admin_url("/admin/flags/ghost"))
        .bearer_auth(TOKEN)
        .json(&json!({"state": "DISABLED"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    let r = c
        .post(gw.admin_url("/admin/rollback"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        c.get(gw.url("/checkout"))
            .header("x-user-id", "alice")
            .send()
            .await
            .unwrap()
            .status(),
        404,
        "rollback restored the flag"
    );

    // A broken flag file on reload is refused; the flags in force stay.
    let flags_path = std::fs::read_to_string(&gw.config_path)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("flags: ").map(str::to_string))
        .unwrap();
    std::fs::write(&flags_path, r#"{"flags": {"new-checkout": {"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "missing"}}}"#).unwrap();
    let state = gw.running().state.clone();
    let err = match state.reload_from_file("test") {
        Ok(_) => panic!("a bad flag file was applied"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("new-checkout") && err.contains("missing"),
        "{err}"
    );
    assert_eq!(
        c.get(gw.url("/checkout"))
            .header("x-user-id", "beta-1")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    gw.stop().await;
}
