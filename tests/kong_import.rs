//! Kong declarative import: the realistic fixture round-trips through the native config
//! loader, and an imported config served by the real binary (secrets loaded the documented
//! way, `set -a; . FILE`) admits and refuses the same callers Kong did.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{client, free_port, upstream};
use signalbox::cli::import_kong::{render, run_import_to};
use signalbox::gateway::config::kong::{KongImport, import};
use signalbox::gateway::config::{RateLimitKey, SecretRef, parse_str, validate};

const FIXTURE: &str = "tests/fixtures/kong/kong.yaml";
const BIN: &str = env!("CARGO_BIN_EXE_signalbox");

fn fixture() -> KongImport {
    let text = std::fs::read_to_string(FIXTURE).unwrap();
    import(&text).unwrap_or_else(|e| panic!("{FIXTURE}: {e}"))
}

#[test]
fn fixture_round_trips_through_the_native_loader() {
    let imported = fixture();
    let yaml = render(&imported.config, Path::new(FIXTURE)).unwrap();
    let reparsed = parse_str(&yaml, "imported.yaml").unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    assert_eq!(reparsed, imported.config, "YAML:\n{yaml}");
    assert!(validate(&reparsed).is_empty());

    let c = &imported.config;
    let names: Vec<&str> = c.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["users-api", "users-health", "orders", "catalog"]);
    let route = |n: &str| c.routes.iter().find(|r| r.name == n).unwrap();

    // Service timeouts and retries.
    let users = &c.upstreams["users"];
    assert_eq!(users.targets, ["10.0.0.11:8080"]);
    assert_eq!(
        (users.connect_timeout.0, users.timeout.0, users.retries),
        (Duration::from_secs(2), Duration::from_secs(5), 2)
    );
    // A weighted Kong upstream: one pool per weight, split 2x100 : 1x50 = 4 : 1.
    assert_eq!(
        route("orders").split,
        BTreeMap::from([
            ("orders-w100".to_string(), 4),
            ("orders-w50".to_string(), 1)
        ])
    );
    assert_eq!(c.upstreams["orders-w50"].targets, ["10.0.0.23:8080"]);
    assert_eq!(
        c.upstreams["orders-w100"].health.as_ref().unwrap().path,
        "/healthz"
    );

    // Service plugins on both routes; the acl became an allow list.
    for r in ["users-api", "users-health"] {
        let ka = route(r).plugins.key_auth.clone().unwrap();
        assert_eq!(
            (ka.header.as_str(), ka.hide_credentials),
            ("X-API-Key", true)
        );
        assert_eq!(ka.allow, ["alice", "carol.ops"]);
        let rl = route(r).plugins.rate_limit.clone().unwrap();
        assert_eq!((rl.per_minute, rl.by), (Some(300), RateLimitKey::Consumer));
    }
    assert_eq!(route("users-health").exact_paths, ["/api/users/healthz"]);
    assert!(route("users-api").preserve_host && !route("users-api").strip_prefix);
    let jwt = route("orders").plugins.jwt.clone().unwrap();
    assert_eq!(
        jwt.secret,
        Some(SecretRef::Env("KONG_JWT_SECRET_BOB_1".into()))
    );
    assert_eq!(route("orders").plugins.max_body.unwrap().0, 2 << 20);
    assert_eq!(
        route("catalog").plugins.rate_limit.clone().unwrap().burst,
        Some(20)
    );
    // Global plugins that hold on every route are defaults.
    assert!(c.defaults.cors.as_ref().unwrap().credentials);
    assert_eq!(
        c.defaults.request_headers.as_ref().unwrap().add["x-gateway"],
        "signalbox"
    );

    let secret_names: Vec<&str> = imported.secrets.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        secret_names,
        [
            "KONG_JWT_SECRET_BOB_1",
            "KONG_KEY_ALICE_1",
            "KONG_KEY_ALICE_2",
            "KONG_KEY_BOB_1",
            "KONG_KEY_CAROL_OPS_1"
        ]
    );
    for (name, value) in &imported.secrets {
        assert!(
            !yaml.contains(value.expose()),
            "{name} leaked into the YAML"
        );
        for w in &imported.warnings {
            assert!(!w.contains(value.expose()), "{name} leaked into: {w}");
        }
    }

    // Everything that did not carry over is named.
    for want in [
        "route \"catalog-admin\" left out: plugin basic-auth",
        "route \"reports-db\" left out",
        "policy \"redis\" becomes local",
        "paths[1] is a regular expression",
        "wildcard host *.example.org",
        "path /v2 is not prepended",
        "proxy-cache",
        "prometheus",
        "for consumer \"carol.ops\": signalbox plugins apply to every caller",
        "second=20, hour=10000",
        "each weight becomes its own upstream",
        "signalbox serves plain HTTP only",
    ] {
        assert!(
            imported.warnings.iter().any(|w| w.contains(want)),
            "no warning about {want:?}:\n{:#?}",
            imported.warnings
        );
    }
}

#[test]
fn fixture_as_json_gives_the_same_config() {
    let text = std::fs::read_to_string(FIXTURE).unwrap();
    let doc: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    let json = serde_json::to_string_pretty(&doc).unwrap();
    assert_eq!(import(&json).unwrap().config, fixture().config);
}

/// The gateway binary, killed on drop even when an assertion fails.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn imported_config_serves_what_kong_served() {
    let up = upstream("users").await;
    let dir = tempfile::tempdir().unwrap();
    let kong = dir.path().join("kong.yaml");
    let tricky = "b0b's key \"with\" $HOME and `ticks`";
    std::fs::write(
        &kong,
        format!(
            r#"_format_version: "3.0"
services:
  - name: users
    url: http://{target}
    routes:
      - name: users
        paths: [/api/users]
        strip_path: false
      - name: admin
        paths: [/admin]
        plugins:
          - name: acl
            config: {{ allow: [staff] }}
    plugins:
      - name: key-auth
        config: {{ key_names: [X-API-Key], hide_credentials: true, key_in_query: false }}
      - name: rate-limiting
        config: {{ minute: 5, limit_by: consumer, policy: local }}
consumers:
  - username: alice
    keyauth_credentials: [{{ key: alice-k3y }}]
    acls: [{{ group: staff }}]
  - username: bob
    keyauth_credentials: [{{ key: '{tricky_yaml}' }}]
plugins:
  - name: request-transformer
    config: {{ append: {{ headers: ["X-Gateway:signalbox"] }} }}
"#,
            target = up.target(),
            tricky_yaml = tricky.replace('\'', "''"),
        ),
    )
    .unwrap();

    let secrets = dir.path().join("kong.env");
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = run_import_to(&kong, Some(&secrets), &mut out, &mut err).unwrap();
    let err = String::from_utf8(err).unwrap();
    assert_eq!(code, 0, "{err}");
    let yaml = String::from_utf8(out).unwrap();
    assert!(
        !yaml.contains("alice-k3y") && !yaml.contains("b0b"),
        "{yaml}"
    );
    let config = dir.path().join("out.yaml");
    std::fs::write(&config, &yaml).unwrap();

    let (port, admin) = (free_port(), free_port());
    let child = Command::new("sh")
        .arg("-c")
        .arg(r#"set -a; . "$1"; set +a; exec "$2" gateway --config "$3" --listen "$4" --admin-listen "$5""#)
        .arg("sh")
        .arg(&secrets)
        .arg(BIN)
        .arg(&config)
        .arg(format!("127.0.0.1:{port}"))
        .arg(format!("127.0.0.1:{admin}"))
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _gw = Proc(child);

    let c = client();
    let t = Instant::now();
    loop {
        let ready = c
            .get(format!("http://127.0.0.1:{admin}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200);
        if ready {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "gateway did not come up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let get = |path: &str, key: Option<&str>| {
        let mut req = c.get(format!("http://127.0.0.1:{port}{path}"));
        if let Some(k) = key {
            req = req.header("X-API-Key", k);
        }
        req.send()
    };
    let r = get("/api/users/7", Some("alice-k3y")).await.unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["path"], "/api/users/7");
    assert_eq!(body["headers"]["x-gateway"], "signalbox");
    assert!(
        body["headers"].get("x-api-key").is_none(),
        "the key was forwarded: {body}"
    );
    // The key with quotes, `$` and backticks survived the env file.
    assert_eq!(get("/api/users", Some(tricky)).await.unwrap().status(), 200);
    assert_eq!(get("/api/users", None).await.unwrap().status(), 401);
    assert_eq!(get("/api/users", Some("nope")).await.unwrap().status(), 401);
    // The acl: staff only.
    assert_eq!(
        get("/admin", Some("alice-k3y")).await.unwrap().status(),
        200
    );
    assert_eq!(get("/admin", Some(tricky)).await.unwrap().status(), 403);
    // minute: 5 per consumer and route: bob has used 1 of his 5 on /api/users.
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(
            get("/api/users", Some(tricky))
                .await
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, [200, 200, 200, 200, 429]);
    // alice has her own bucket.
    assert_eq!(
        get("/api/users", Some("alice-k3y")).await.unwrap().status(),
        200
    );
}

/// The hint printed after --secrets-out, run as printed in POSIX sh from where the import
/// ran: `. s2.env` would search PATH and fail.
#[test]
fn the_printed_load_hint_works_in_sh_for_a_bare_file_name() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("kong.yaml"),
        r#"_format_version: "3.0"
consumers:
  - username: alice
    keyauth_credentials: [{ key: alice-secret-key }]
services:
  - name: users
    url: http://127.0.0.1:9001
    routes: [{ name: users, paths: [/users] }]
    plugins: [{ name: key-auth, config: { key_names: [X-API-Key] } }]
"#,
    )
    .unwrap();
    let out = Command::new(BIN)
        .args([
            "config",
            "import-kong",
            "kong.yaml",
            "--secrets-out",
            "s2.env",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let hint = err
        .lines()
        .find_map(|l| l.split_once("load them with: ").map(|(_, h)| h.to_string()))
        .unwrap_or_else(|| panic!("no load hint: {err}"));
    let sh = Command::new("sh")
        .arg("-c")
        .arg(format!("{hint}; printf %s \"$KONG_KEY_ALICE_1\""))
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    assert!(
        sh.status.success(),
        "{hint}: {}",
        String::from_utf8_lossy(&sh.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&sh.stdout), "alice-secret-key");
}
