//! The admin API of a real gateway: tokens, optimistic concurrency, every endpoint, traffic
//! that really moves, exact rollbacks, restarts that resume, and the OpenAPI document.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{client, gateway, json, upstream};
use serde_json::json;
use signalbox::gateway::{GatewayOptions, RunningGateway};

const TOKEN: &str = "admin-token-5f0e1d";

fn config(blue: &str, green: &str, token_file: &std::path::Path) -> String {
    format!(
        "
admin: {{ token_file: {} }}
upstreams:
  blue: {{ targets: [{blue}] }}
  green: {{ targets: [{green}] }}
routes:
  - {{ name: users, paths: [/users], split: {{ blue: 100, green: 0 }} }}
  - {{ name: other, paths: [/other], split: {{ blue: 1 }} }}
",
        token_file.display()
    )
}

fn token_file() -> (tempfile::TempDir, std::path::PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("token");
    std::fs::write(&p, format!("{TOKEN}\n")).unwrap();
    (d, p)
}

async fn who(c: &reqwest::Client, url: &str) -> String {
    json(c.get(url).send().await.unwrap()).await["upstream"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn tokens_are_required_and_never_taken_from_the_query_string() {
    let (b, g) = (upstream("blue").await, upstream("green").await);
    let (_d, tf) = token_file();
    let gw = gateway(&config(&b.target(), &g.target(), &tf)).await;
    let c = client();
    let r = c.get(gw.admin_url("/admin/state")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(json(r).await["error"]["code"], "missing_token");
    let r = c
        .post(gw.admin_url("/admin/routes/users/flip"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(json(r).await["error"]["code"], "bad_token");
    let r = c
        .post(gw.admin_url(&format!("/admin/routes/users/flip?access_token={TOKEN}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(json(r).await["error"]["code"], "token_in_query");
    // Metrics and probes stay open.
    assert_eq!(
        c.get(gw.admin_url("/metrics"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.get(gw.admin_url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(who(&c, &gw.url("/users")).await, "blue", "nothing changed");
    gw.stop().await;
}

#[tokio::test]
async fn without_a_configured_token_changes_are_refused() {
    let (b, g) = (upstream("blue").await, upstream("green").await);
    let yaml = format!(
        "upstreams: {{ blue: {{ targets: [{}] }}, green: {{ targets: [{}] }} }}\nroutes: [ {{ name: users, paths: [/users], split: {{ blue: 1, green: 0 }} }} ]\n",
        b.target(),
        g.target()
    );
    let gw = gateway(&yaml).await;
    let c = client();
    assert_eq!(
        c.get(gw.admin_url("/admin/state"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let r = c
        .post(gw.admin_url("/admin/routes/users/flip"))
        .bearer_auth("anything")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(json(r).await["error"]["code"], "no_admin_token");
    gw.stop().await;
}

#[tokio::test]
async fn a_non_loopback_admin_listener_without_a_token_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("gw.yaml");
    std::fs::write(&cfg, "upstreams: { a: { targets: [127.0.0.1:1] } }\nroutes: [ { name: r, paths: [/], split: { a: 1 } } ]\n").unwrap();
    let err = RunningGateway::start(GatewayOptions {
        config: cfg,
        listen: Some("127.0.0.1:0".parse().unwrap()),
        admin_listen: Some("0.0.0.0:0".parse().unwrap()),
        ..Default::default()
    })
    .await
    .err()
    .expect("must refuse");
    assert!(err.to_string().contains("without a token"), "{err}");
}

#[tokio::test]
async fn split_flip_conflict_rollback_rollforward_and_config_replace() {
    let (b, g) = (upstream("blue").await, upstream("green").await);
    let (_d, tf) = token_file();
    let gw = gateway(&config(&b.target(), &g.target(), &tf)).await;
    let c = client();
    let admin = |p: &str| gw.admin_url(p);
    let state = json(
        c.get(admin("/admin/state"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(state["revision"], 1);
    assert_eq!(
        state["routes"][0]["split"],
        json!({"blue": 100, "green": 0})
    );
    let original_hash = state["config_hash"].clone();

    // Set weights with the right If-Match: traffic moves.
    let r = c
        .put(admin("/admin/routes/users/split"))
        .bearer_auth(TOKEN)
        .header("if-match", "\"1\"")
        .header("x-signalbox-actor", "alice@laptop")
        .json(&json!({"weights": {"blue": 0, "green": 100}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["etag"], "\"2\"");
    let v = json(r).await;
    assert_eq!(v["revision"]["number"], 2);
    assert_eq!(v["revision"]["actor"], "alice@laptop");
    assert_eq!(
        v["state"]["routes"][0]["split"],
        json!({"blue": 0, "green": 100})
    );
    for _ in 0..5 {
        assert_eq!(who(&c, &gw.url("/users")).await, "green");
    }

    // A stale If-Match is a conflict that names the current revision.
    let r = c
        .post(admin("/admin/routes/users/flip"))
        .bearer_auth(TOKEN)
        .header("if-match", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let v = json(r).await;
    assert_eq!(v["error"]["code"], "conflict");
    assert_eq!(v["error"]["current_revision"], 2);

    // Flip with no body goes to the other side of the pair.
    let r = c
        .post(admin("/admin/routes/users/flip"))
        .bearer_auth(TOKEN)
        .header("if-match", "2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        json(r).await["revision"]["description"],
        "flip users to blue"
    );
    assert_eq!(who(&c, &gw.url("/users")).await, "blue");
    let r = c
        .post(admin("/admin/routes/users/flip"))
        .bearer_auth(TOKEN)
        .json(&json!({"to": "green"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(who(&c, &gw.url("/users")).await, "green");

    // Unknown route and unknown upstream.
    let r = c
        .post(admin("/admin/routes/nope/flip"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = c
        .put(admin("/admin/routes/users/split"))
        .bearer_auth(TOKEN)
        .json(&json!({"weights": {"purple": 1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    // About the request, not a line of the config file it never touched.
    assert_eq!(
        json(r).await["error"]["message"],
        "routes[0].split.purple: unknown upstream \"purple\"; known: blue, green"
    );

    // Rollback (to the previous revision by default) restores its exact config.
    let r = c
        .post(admin("/admin/rollback"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v = json(r).await;
    assert_eq!(v["revision"]["number"], 5);
    assert_eq!(
        v["revision"]["change"],
        json!({"kind": "rollback", "to": 3, "from": 4})
    );
    assert_eq!(who(&c, &gw.url("/users")).await, "blue");
    let r3 = json(
        c.get(admin("/admin/revisions/3"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let r5 = json(
        c.get(admin("/admin/revisions/5"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r3["config"], r5["config"]);
    assert_eq!(r3["hash"], r5["hash"]);

    // Roll back to the very first revision, then forward again.
    let r = c
        .post(admin("/admin/rollback"))
        .bearer_auth(TOKEN)
        .json(&json!({"to": 1}))
        .send()
        .await
        .unwrap();
    let v = json(r).await;
    assert_eq!(v["state"]["config_hash"], original_hash);
    let r = c
        .post(admin("/admin/rollforward"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        json(r).await["revision"]["change"],
        json!({"kind": "rollforward", "to": 5, "from": 6})
    );
    let r = c
        .post(admin("/admin/rollforward"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422, "nothing left to roll forward");

    // A full config replacement: a bad one is refused with line and column.
    let bad = "upstreams: { blue: { targets: [127.0.0.1:1] } }\nroutes:\n  - { name: x, paths: [/x], split: { ghost: 1 } }\n";
    let r = c
        .post(admin("/admin/config"))
        .bearer_auth(TOKEN)
        .body(bad)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let v = json(r).await;
    assert_eq!(v["error"]["issues"][0]["path"], "routes[0].split.ghost");
    assert_eq!(v["error"]["issues"][0]["line"], 3);
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("<request>:3:"), "{message}");
    let good = std::fs::read_to_string(&gw.config_path)
        .unwrap()
        .replace("blue: 100, green: 0", "blue: 50, green: 50");
    let r = c
        .post(admin("/admin/config"))
        .bearer_auth(TOKEN)
        .body(good)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    let revs = json(
        c.get(admin("/admin/revisions"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let numbers: Vec<u64> = revs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["number"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, vec![8, 7, 6, 5, 4, 3, 2, 1]);
    gw.stop().await;
}

#[tokio::test]
async fn a_restart_resumes_the_last_revision_unless_told_to_reset() {
    let (b, g) = (upstream("blue").await, upstream("green").await);
    let (_d, tf) = token_file();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("gw.yaml");
    std::fs::write(&cfg, config(&b.target(), &g.target(), &tf)).unwrap();
    let opts = |reset| GatewayOptions {
        config: cfg.clone(),
        listen: Some("127.0.0.1:0".parse().unwrap()),
        admin_listen: Some("127.0.0.1:0".parse().unwrap()),
        state_dir: Some(dir.path().join("state")),
        watch_config: false,
        reset_to_file: reset,
    };
    let c = client();
    let gw = RunningGateway::start(opts(false)).await.unwrap();
    let r = c
        .post(format!("http://{}/admin/routes/users/flip", gw.admin_addr))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    gw.shutdown().await;

    let gw = RunningGateway::start(opts(false)).await.unwrap();
    assert_eq!(
        who(&c, &format!("http://{}/users", gw.addr)).await,
        "green",
        "resumed revision 2, not the file"
    );
    let s = json(
        c.get(format!("http://{}/admin/state", gw.admin_addr))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s["revision"], 2);
    gw.shutdown().await;

    let gw = RunningGateway::start(opts(true)).await.unwrap();
    assert_eq!(
        who(&c, &format!("http://{}/users", gw.addr)).await,
        "blue",
        "reset to the file"
    );
    let revs = json(
        c.get(format!("http://{}/admin/revisions", gw.admin_addr))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(revs[0]["number"], 3);
    assert_eq!(revs[0]["change"]["kind"], "reload");
    gw.shutdown().await;
}

#[tokio::test]
async fn the_openapi_document_matches_the_routes() {
    let (b, g) = (upstream("blue").await, upstream("green").await);
    let (_d, tf) = token_file();
    let gw = gateway(&config(&b.target(), &g.target(), &tf)).await;
    let c = client();
    let doc = json(
        c.get(gw.admin_url("/admin/openapi.json"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.insert((method.to_uppercase(), path.clone()));
        }
    }
    let expected: BTreeSet<(String, String)> = [
        ("GET", "/admin/state"),
        ("GET", "/admin/revisions"),
        ("GET", "/admin/revisions/{number}"),
        ("PUT", "/admin/routes/{route}/split"),
        ("POST", "/admin/routes/{route}/flip"),
        ("PUT", "/admin/flags/{key}"),
        ("POST", "/admin/rollback"),
        ("POST", "/admin/rollforward"),
        ("POST", "/admin/config"),
        ("GET", "/admin/openapi.json"),
    ]
    .iter()
    .map(|(m, p)| (m.to_string(), p.to_string()))
    .collect();
    assert_eq!(documented, expected);
    // Every documented operation is really served: no 404 or 405 from the router.
    for (method, path) in &documented {
        let url = gw.admin_url(
            &path
                .replace("{number}", "1")
                .replace("{route}", "users")
                .replace("{key}", "none"),
        );
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        // An If-Match that cannot match keeps the probes from changing anything.
        let r = c
            .request(m, url)
            .bearer_auth(TOKEN)
            .header("if-match", "999")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert!(
            r.status() != 405,
            "{method} {path} is documented but not routed"
        );
        if r.status() == 404 {
            let v: serde_json::Value = r.json().await.unwrap();
            assert_eq!(
                v["error"]["code"], "not_found",
                "{method} {path}: a 404 from the router, not the handler"
            );
        }
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    gw.stop().await;
}
