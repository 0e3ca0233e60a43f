//! Unit tests for the verifier: every check and reject code for HS256, RS256 and ES256, and
//! the JWKS URL cache against a real HTTP server on 127.0.0.1.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Value, json};

use super::*;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jwt")
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixtures().join(name)).unwrap()
}

fn resolve(p: &Path) -> PathBuf {
    fixtures().join(p)
}

fn config(v: Value) -> JwtConfig {
    serde_json::from_value(v).unwrap()
}

async fn verifier(v: Value) -> JwtVerifier {
    JwtVerifier::new(&config(v), &resolve).await.unwrap()
}

async fn build_err(v: Value) -> String {
    JwtVerifier::new(&config(v), &resolve).await.unwrap_err()
}

fn now() -> i64 {
    jsonwebtoken::get_current_timestamp() as i64
}

/// What the tests sign with: a raw HMAC secret or a private key fixture.
#[derive(Clone)]
enum Signer {
    Hs(Vec<u8>),
    Rs(&'static str),
    Es(&'static str),
}

impl Signer {
    fn sign(&self, kid: Option<&str>, claims: &Value) -> String {
        let (alg, key) = match self {
            Signer::Hs(s) => (jsonwebtoken::Algorithm::HS256, EncodingKey::from_secret(s)),
            Signer::Rs(f) => (
                jsonwebtoken::Algorithm::RS256,
                EncodingKey::from_rsa_pem(&fixture(f)).unwrap(),
            ),
            Signer::Es(f) => (
                jsonwebtoken::Algorithm::ES256,
                EncodingKey::from_ec_pem(&fixture(f)).unwrap(),
            ),
        };
        let mut h = Header::new(alg);
        h.kid = kid.map(str::to_string);
        jsonwebtoken::encode(&h, claims, &key).unwrap()
    }
}

fn hs_secret() -> Vec<u8> {
    let s = String::from_utf8(fixture("hs256.secret")).unwrap();
    s.trim_end().as_bytes().to_vec()
}

fn b64url(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = c
            .iter()
            .enumerate()
            .fold(0u32, |a, (i, b)| a | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=c.len() {
            out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn good_claims() -> Value {
    json!({"sub": "alice", "iss": "https://idp.test", "aud": "api", "exp": now() + 600, "iat": now()})
}

fn with(mut c: Value, k: &str, v: Value) -> Value {
    c[k] = v;
    c
}

fn without(mut c: Value, k: &str) -> Value {
    c.as_object_mut().unwrap().remove(k);
    c
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

async fn accept(v: &JwtVerifier, token: &str) -> Verified {
    match v.verify(Some(&bearer(token))).await {
        Ok(ok) => ok,
        Err(e) => panic!("expected acceptance, got {e}"),
    }
}

/// Asserts the code, and that nothing of the token leaks into the message.
async fn reject_header(v: &JwtVerifier, header: Option<&str>, code: RejectCode) -> JwtReject {
    let e = match v.verify(header).await {
        Ok(ok) => panic!("expected {code}, got acceptance of {:?}", ok.claims),
        Err(e) => e,
    };
    assert_eq!(e.code, code, "{e}");
    let shown = format!("{e} {} {e:?}", e.to_json());
    if let Some(t) = header.and_then(|h| h.split_whitespace().nth(1)) {
        for part in t.split('.').filter(|p| p.len() >= 8) {
            assert!(!shown.contains(part), "message leaks the token: {shown}");
        }
    }
    e
}

async fn reject(v: &JwtVerifier, token: &str, code: RejectCode) -> JwtReject {
    reject_header(v, Some(&bearer(token)), code).await
}

fn base_cfg() -> Value {
    json!({"issuer": "https://idp.test", "audiences": ["api", "admin"], "leeway": "30s"})
}

fn cfg_with(extra: Value) -> Value {
    let mut c = base_cfg();
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

/// Every claim rule, for one algorithm: `good` is trusted by `v`, `other` is not.
async fn check_claim_rules(v: &JwtVerifier, good: &Signer, other: &Signer, kid: Option<&str>) {
    let t = now();
    let sign = |c: Value| good.sign(kid, &c);

    let ok = accept(v, &sign(good_claims())).await;
    assert_eq!(ok.consumer.as_deref(), Some("alice"));
    assert_eq!(ok.claims["iss"], "https://idp.test");

    reject(v, &other.sign(kid, &good_claims()), R::BadSignature).await;
    let token = sign(good_claims());
    let mut parts: Vec<&str> = token.split('.').collect();
    let forged = b64url(
        with(good_claims(), "sub", "mallory".into())
            .to_string()
            .as_bytes(),
    );
    parts[1] = &forged;
    reject(v, &parts.join("."), R::BadSignature).await;

    reject(
        v,
        &sign(with(good_claims(), "exp", (t - 100).into())),
        R::Expired,
    )
    .await;
    accept(v, &sign(with(good_claims(), "exp", (t - 10).into()))).await;
    reject(
        v,
        &sign(with(good_claims(), "nbf", (t + 100).into())),
        R::NotYetValid,
    )
    .await;
    accept(v, &sign(with(good_claims(), "nbf", (t + 10).into()))).await;
    reject(v, &sign(without(good_claims(), "exp")), R::MalformedToken).await;
    reject(
        v,
        &sign(with(good_claims(), "exp", "later".into())),
        R::MalformedToken,
    )
    .await;

    reject(
        v,
        &sign(with(good_claims(), "iss", "https://evil.test".into())),
        R::WrongIssuer,
    )
    .await;
    reject(v, &sign(without(good_claims(), "iss")), R::WrongIssuer).await;

    reject(
        v,
        &sign(with(good_claims(), "aud", "billing".into())),
        R::WrongAudience,
    )
    .await;
    reject(
        v,
        &sign(with(good_claims(), "aud", json!(["billing", "x"]))),
        R::WrongAudience,
    )
    .await;
    reject(v, &sign(without(good_claims(), "aud")), R::WrongAudience).await;
    accept(
        v,
        &sign(with(good_claims(), "aud", json!(["billing", "admin"]))),
    )
    .await;
}

#[tokio::test]
async fn hs256_checks_every_claim() {
    let v = verifier(cfg_with(
        json!({"algorithms": ["HS256"], "secret": {"file": "hs256.secret"}}),
    ))
    .await;
    let other = Signer::Hs(b"another-secret-that-is-long-enough-0123456789".to_vec());
    check_claim_rules(&v, &Signer::Hs(hs_secret()), &other, None).await;
}

#[tokio::test]
async fn rs256_checks_every_claim() {
    let v = verifier(cfg_with(json!({"public_key_file": "rsa-1.pub.pem"}))).await;
    let (good, other) = (Signer::Rs("rsa-1.key.pem"), Signer::Rs("rsa-2.key.pem"));
    check_claim_rules(&v, &good, &other, None).await;
    // A lone PEM key serves any kid the issuer puts on its tokens.
    check_claim_rules(&v, &good, &other, Some("2024-key")).await;
}

#[tokio::test]
async fn es256_checks_every_claim() {
    let v = verifier(cfg_with(json!({"public_key_file": "ec-1.pub.pem"}))).await;
    check_claim_rules(
        &v,
        &Signer::Es("ec-1.key.pem"),
        &Signer::Es("ec-2.key.pem"),
        None,
    )
    .await;
}

#[tokio::test]
async fn jwks_file_checks_every_claim_for_both_key_types() {
    let v = verifier(cfg_with(json!({"jwks_file": "jwks.json"}))).await;
    let (rs, es) = (Signer::Rs("rsa-1.key.pem"), Signer::Es("ec-1.key.pem"));
    check_claim_rules(&v, &rs, &Signer::Rs("rsa-2.key.pem"), Some("rsa-1")).await;
    check_claim_rules(&v, &es, &Signer::Es("ec-2.key.pem"), Some("ec-1")).await;
    // One key per type in the file: tokens without a kid still find theirs.
    accept(&v, &rs.sign(None, &good_claims())).await;
    accept(&v, &es.sign(None, &good_claims())).await;
}

#[tokio::test]
async fn unknown_kid_and_ambiguous_tokens_are_unknown_key() {
    let v = verifier(cfg_with(json!({"jwks_file": "jwks.json"}))).await;
    let rs = Signer::Rs("rsa-1.key.pem");
    reject(&v, &rs.sign(Some("rsa-9"), &good_claims()), R::UnknownKey).await;

    let dir = tempfile::tempdir().unwrap();
    let mut both: Value = serde_json::from_slice(&fixture("jwks.json")).unwrap();
    let two: Value = serde_json::from_slice(&fixture("jwks-2.json")).unwrap();
    both["keys"]
        .as_array_mut()
        .unwrap()
        .push(two["keys"][0].clone());
    let path = dir.path().join("both.json");
    std::fs::write(&path, both.to_string()).unwrap();
    let v = verifier(cfg_with(json!({"jwks_file": path}))).await;
    accept(
        &v,
        &Signer::Rs("rsa-2.key.pem").sign(Some("rsa-2"), &good_claims()),
    )
    .await;
    let e = reject(&v, &rs.sign(None, &good_claims()), R::UnknownKey).await;
    assert!(e.message.contains("several keys"), "{e}");
}

#[tokio::test]
async fn missing_and_malformed_tokens() {
    let v = verifier(cfg_with(
        json!({"algorithms": ["HS256"], "secret": {"file": "hs256.secret"}}),
    ))
    .await;
    let good = Signer::Hs(hs_secret()).sign(None, &good_claims());
    for h in [
        None,
        Some(""),
        Some("   "),
        Some("Basic YWxhZGRpbjpvcGVu"),
        Some("Bearer"),
        Some("Bearer   "),
    ] {
        reject_header(&v, h, R::MissingToken).await;
    }
    // The scheme is case-insensitive and extra blanks are fine.
    for h in [format!("bearer {good}"), format!("BEARER \t {good} ")] {
        v.verify(Some(&h)).await.unwrap();
    }
    for t in [
        "abc".to_string(),
        "a.b".to_string(),
        "a.b.c.d".to_string(),
        "!!!.e30.sig".to_string(),
        format!("{}.e30.sig", b64url(b"not json")),
        format!("{}.e30.sig", b64url(b"[1,2]")),
        format!("{}.{}", good, "x"),
        "x".repeat(MAX_TOKEN_LEN + 1),
    ] {
        reject(&v, &t, R::MalformedToken).await;
    }
    let e = reject(&v, "h.k.iv.ct.tag", R::MalformedToken).await;
    assert!(e.message.contains("JWE"));
    // Claims that are not an object, properly signed.
    let h = b64url(br#"{"alg":"HS256","typ":"JWT"}"#);
    let p = b64url(b"[1,2,3]");
    let sig = jsonwebtoken::crypto::sign(
        format!("{h}.{p}").as_bytes(),
        &EncodingKey::from_secret(&hs_secret()),
        jsonwebtoken::Algorithm::HS256,
    )
    .unwrap();
    reject(&v, &format!("{h}.{p}.{sig}"), R::MalformedToken).await;
}

#[tokio::test]
async fn none_and_foreign_algorithms_are_refused() {
    let v = verifier(cfg_with(
        json!({"secret": {"file": "hs256.secret"}, "jwks_file": "jwks.json"}),
    ))
    .await;
    let claims = b64url(good_claims().to_string().as_bytes());
    for alg in [
        "none", "None", "NONE", "HS512", "RS384", "PS256", "EdDSA", "ES256K",
    ] {
        let h = b64url(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#).as_bytes());
        let e = reject(&v, &format!("{h}.{claims}."), R::AlgorithmNotAllowed).await;
        assert!(e.message.contains(alg), "{e}");
        reject(&v, &format!("{h}.{claims}.c2ln"), R::AlgorithmNotAllowed).await;
    }
    // Odd alg values are refused without being echoed.
    let h = b64url(br#"{"alg":"<script>alert(1)</script>"}"#);
    let e = reject(&v, &format!("{h}.{claims}."), R::AlgorithmNotAllowed).await;
    assert!(!e.message.contains("script"));
    let h = b64url(br#"{"alg":7}"#);
    reject(&v, &format!("{h}.{claims}."), R::MalformedToken).await;
}

#[tokio::test]
async fn algorithm_confusion_is_refused() {
    let rsa_pub = fixture("rsa-1.pub.pem");
    let confused = Signer::Hs(rsa_pub.clone());
    // HS256 is in the default algorithm list, but no secret is set: no HMAC key exists at all.
    let v = verifier(cfg_with(json!({"public_key_file": "rsa-1.pub.pem"}))).await;
    reject(
        &v,
        &confused.sign(None, &good_claims()),
        R::AlgorithmNotAllowed,
    )
    .await;
    let v = verifier(cfg_with(json!({"jwks_file": "jwks.json"}))).await;
    reject(
        &v,
        &confused.sign(Some("rsa-1"), &good_claims()),
        R::AlgorithmNotAllowed,
    )
    .await;
    // With a secret too, HS256 tokens are checked against the secret only.
    let v = verifier(cfg_with(
        json!({"secret": {"file": "hs256.secret"}, "jwks_file": "jwks.json"}),
    ))
    .await;
    reject(
        &v,
        &confused.sign(Some("rsa-1"), &good_claims()),
        R::BadSignature,
    )
    .await;
    accept(
        &v,
        &Signer::Hs(hs_secret()).sign(Some("rsa-1"), &good_claims()),
    )
    .await;
    // An EC token naming an RSA key's kid.
    let e = reject(
        &v,
        &Signer::Es("ec-1.key.pem").sign(Some("rsa-1"), &good_claims()),
        R::AlgorithmNotAllowed,
    )
    .await;
    assert!(e.message.contains("does not match"), "{e}");
    // Algorithms left out of the config are refused even when a key could check them.
    let v = verifier(cfg_with(
        json!({"algorithms": ["RS256"], "jwks_file": "jwks.json"}),
    ))
    .await;
    reject(
        &v,
        &Signer::Es("ec-1.key.pem").sign(Some("ec-1"), &good_claims()),
        R::AlgorithmNotAllowed,
    )
    .await;
    accept(
        &v,
        &Signer::Rs("rsa-1.key.pem").sign(Some("rsa-1"), &good_claims()),
    )
    .await;
}

#[tokio::test]
async fn require_exp_false_admits_tokens_without_exp_but_still_checks_one_given() {
    let hs = Signer::Hs(hs_secret());
    let strict =
        verifier(json!({"algorithms": ["HS256"], "secret": {"file": "hs256.secret"}})).await;
    reject(
        &strict,
        &hs.sign(None, &without(good_claims(), "exp")),
        R::MalformedToken,
    )
    .await;

    let lax = verifier(
        json!({"algorithms": ["HS256"], "secret": {"file": "hs256.secret"},
        "require_exp": false}),
    )
    .await;
    accept(&lax, &hs.sign(None, &without(good_claims(), "exp"))).await;
    reject(
        &lax,
        &hs.sign(None, &with(good_claims(), "exp", (now() - 100).into())),
        R::Expired,
    )
    .await;
    reject(
        &lax,
        &hs.sign(None, &with(good_claims(), "nbf", (now() + 100).into())),
        R::NotYetValid,
    )
    .await;
}

#[tokio::test]
async fn issuer_and_audience_are_only_checked_when_configured() {
    let v = verifier(json!({"public_key_file": "ec-1.pub.pem"})).await;
    let es = Signer::Es("ec-1.key.pem");
    accept(
        &v,
        &es.sign(None, &with(good_claims(), "aud", "anything".into())),
    )
    .await;
    accept(
        &v,
        &es.sign(None, &without(without(good_claims(), "aud"), "iss")),
    )
    .await;
    // The default leeway is 30 s.
    reject(
        &v,
        &es.sign(None, &with(good_claims(), "exp", (now() - 100).into())),
        R::Expired,
    )
    .await;
    accept(
        &v,
        &es.sign(None, &with(good_claims(), "exp", (now() - 10).into())),
    )
    .await;
}

#[tokio::test]
async fn consumer_comes_from_the_configured_claim() {
    let v =
        verifier(json!({"public_key_file": "ec-1.pub.pem", "consumer_claim": "client_id"})).await;
    let es = Signer::Es("ec-1.key.pem");
    let ok = accept(
        &v,
        &es.sign(
            None,
            &with(good_claims(), "client_id", "billing-svc".into()),
        ),
    )
    .await;
    assert_eq!(ok.consumer.as_deref(), Some("billing-svc"));
    let ok = accept(
        &v,
        &es.sign(None, &with(good_claims(), "client_id", 42.into())),
    )
    .await;
    assert_eq!(ok.consumer.as_deref(), Some("42"));
    for odd in [json!(""), json!(["a"]), json!({"a": 1}), json!(null)] {
        let ok = accept(&v, &es.sign(None, &with(good_claims(), "client_id", odd))).await;
        assert_eq!(ok.consumer, None);
    }
    assert_eq!(
        accept(&v, &es.sign(None, &good_claims())).await.consumer,
        None
    );
}

#[tokio::test]
async fn construction_errors_name_field_and_file_but_no_secret() {
    let e = build_err(json!({"algorithms": ["none"], "public_key_file": "rsa-1.pub.pem"})).await;
    assert!(e.contains("jwt.algorithms[0]") && e.contains("none"), "{e}");
    let e = build_err(json!({"algorithms": [], "public_key_file": "rsa-1.pub.pem"})).await;
    assert!(e.contains("jwt.algorithms is empty"), "{e}");
    let e = build_err(json!({"secret": {"file": "no-such.secret"}})).await;
    assert!(
        e.contains("jwt.secret") && e.contains("no-such.secret"),
        "{e}"
    );
    let e = build_err(json!({"secret": {"env": "SIGNALBOX_TEST_JWT_UNSET_VAR"}})).await;
    assert!(e.contains("SIGNALBOX_TEST_JWT_UNSET_VAR"), "{e}");

    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short.secret");
    std::fs::write(&short, "hunter2-is-short\n").unwrap();
    let e = build_err(json!({"secret": {"file": short}})).await;
    assert!(
        e.contains("at least 32 bytes") && e.contains("short.secret"),
        "{e}"
    );
    assert!(!e.contains("hunter2"), "{e}");

    let e = build_err(json!({"algorithms": ["RS256"], "secret": {"file": "hs256.secret"}, "public_key_file": "rsa-1.pub.pem"})).await;
    assert!(e.contains("jwt.secret") && e.contains("HS256"), "{e}");
    assert!(!e.contains(std::str::from_utf8(&hs_secret()).unwrap()));
    let e = build_err(json!({"public_key_file": "missing.pem"})).await;
    assert!(
        e.contains("jwt.public_key_file") && e.contains("missing.pem"),
        "{e}"
    );
    let e = build_err(json!({"public_key_file": "rsa-1.key.pem"})).await;
    assert!(
        e.contains("rsa-1.key.pem") && e.contains("private key"),
        "{e}"
    );
    assert!(!e.contains("BEGIN"), "{e}");
    let e = build_err(json!({"public_key_file": "rsa-1024.pub.pem"})).await;
    assert!(e.contains("2048"), "{e}");
    let e = build_err(json!({"algorithms": ["ES256"], "public_key_file": "rsa-1.pub.pem"})).await;
    assert!(e.contains("RS256") && e.contains("jwt.algorithms"), "{e}");
    let e = build_err(json!({"algorithms": ["HS256"], "jwks_file": "jwks.json"})).await;
    assert!(e.contains("no key source"), "{e}");
    let e = build_err(json!({"jwks_file": "hs256.secret"})).await;
    assert!(
        e.contains("jwt.jwks_file") && e.contains("not a JWKS"),
        "{e}"
    );
    let empty = dir.path().join("empty.json");
    std::fs::write(&empty, r#"{"keys": [{"kty": "oct", "k": "AAAA"}]}"#).unwrap();
    let e = build_err(json!({"jwks_file": empty})).await;
    assert!(e.contains("no usable keys") && e.contains("oct"), "{e}");
    let e = build_err(json!({"jwks_url": "ftp://idp.test/jwks"})).await;
    assert!(e.contains("jwt.jwks_url"), "{e}");
    let e = build_err(json!({"public_key_file": "ec-1.pub.pem", "leeway": "2h"})).await;
    assert!(e.contains("jwt.leeway"), "{e}");
}

#[tokio::test]
async fn debug_output_hides_the_secret() {
    let v = verifier(json!({"secret": {"file": "hs256.secret"}, "jwks_file": "jwks.json"})).await;
    let d = format!("{v:?}");
    assert!(d.contains("***") && d.contains("HS256"), "{d}");
    assert!(
        !d.contains(std::str::from_utf8(&hs_secret()).unwrap()),
        "{d}"
    );
}

#[test]
fn reject_codes_and_body() {
    let all = [
        R::MissingToken,
        R::MalformedToken,
        R::BadSignature,
        R::Expired,
        R::NotYetValid,
        R::WrongIssuer,
        R::WrongAudience,
        R::UnknownKey,
        R::AlgorithmNotAllowed,
    ];
    let names: std::collections::BTreeSet<_> = all.iter().map(|c| c.as_str()).collect();
    assert_eq!(names.len(), all.len());
    let e = JwtReject::new(R::Expired, "the token has expired");
    assert_eq!(
        e.to_json(),
        json!({"error": "expired", "message": "the token has expired"})
    );
    assert_eq!(e.to_string(), "expired: the token has expired");
    assert_eq!(WWW_AUTHENTICATE, r#"Bearer error="invalid_token""#);
}

#[tokio::test]
async fn futures_are_send() {
    fn send<T: Send>(t: T) -> T {
        t
    }
    let cfg = config(json!({"public_key_file": "ec-1.pub.pem"}));
    let v = send(JwtVerifier::new(&cfg, &resolve)).await.unwrap();
    let h = bearer(&Signer::Es("ec-1.key.pem").sign(None, &good_claims()));
    send(v.verify(Some(&h))).await.unwrap();
    // Shared across tasks.
    let v2 = v.clone();
    tokio::spawn(async move { v2.verify(Some(&h)).await.map(|_| ()) })
        .await
        .unwrap()
        .unwrap();
}

// --- JWKS over HTTP -------------------------------------------------------------------------

/// A JWKS endpoint on 127.0.0.1 that counts requests. Dropping it stops the server.
struct JwksServer {
    url: String,
    st: Arc<SrvState>,
    task: tokio::task::JoinHandle<()>,
}

struct SrvState {
    body: std::sync::Mutex<String>,
    status: AtomicU16,
    delay_ms: AtomicU64,
    hits: AtomicUsize,
}

impl JwksServer {
    async fn start(body: &str) -> Self {
        let st = Arc::new(SrvState {
            body: std::sync::Mutex::new(body.to_string()),
            status: AtomicU16::new(200),
            delay_ms: AtomicU64::new(0),
            hits: AtomicUsize::new(0),
        });
        let s = Arc::clone(&st);
        let app = axum::Router::new().route(
            "/jwks",
            axum::routing::get(move || {
                let s = Arc::clone(&s);
                async move {
                    s.hits.fetch_add(1, Ordering::SeqCst);
                    let delay = s.delay_ms.load(Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                    let status = http::StatusCode::from_u16(s.status.load(Ordering::SeqCst))
                        .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
                    (status, s.body.lock().unwrap().clone())
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        JwksServer { url, st, task }
    }

    fn hits(&self) -> usize {
        self.st.hits.load(Ordering::SeqCst)
    }

    fn serve(&self, body: &[u8]) {
        *self.st.body.lock().unwrap() = String::from_utf8(body.to_vec()).unwrap();
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn fast() -> JwksTuning {
    JwksTuning {
        fetch_timeout: Duration::from_millis(500),
        min_refetch_interval: Duration::from_millis(400),
        max_body: 64 * 1024,
    }
}

async fn url_verifier(url: &str, cache: &str, tuning: JwksTuning) -> JwtVerifier {
    let cfg = config(cfg_with(json!({"jwks_url": url, "jwks_cache": cache})));
    JwtVerifier::with_tuning(&cfg, &resolve, tuning)
        .await
        .unwrap()
}

/// Polls until `f` holds, for at most 3 s.
async fn eventually(what: &str, f: impl Fn() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn jwks_url_is_cached_then_refreshed_when_due() {
    let srv = JwksServer::start(std::str::from_utf8(&fixture("jwks.json")).unwrap()).await;
    let v = url_verifier(&srv.url, "2s", fast()).await;
    assert_eq!(srv.hits(), 1, "one fetch at construction");
    let (rs, es) = (Signer::Rs("rsa-1.key.pem"), Signer::Es("ec-1.key.pem"));
    for _ in 0..10 {
        accept(&v, &rs.sign(Some("rsa-1"), &good_claims())).await;
        accept(&v, &es.sign(Some("ec-1"), &good_claims())).await;
    }
    assert_eq!(srv.hits(), 1, "known keys are served from the cache");

    tokio::time::sleep(Duration::from_millis(2100)).await;
    // Due: this request is answered from the cache and starts a background refresh.
    accept(&v, &rs.sign(Some("rsa-1"), &good_claims())).await;
    eventually("background refresh", || srv.hits() == 2).await;
    for _ in 0..5 {
        accept(&v, &rs.sign(Some("rsa-1"), &good_claims())).await;
    }
    assert_eq!(srv.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kid_refetches_once_for_a_burst() {
    let srv = JwksServer::start(std::str::from_utf8(&fixture("jwks.json")).unwrap()).await;
    let v = url_verifier(&srv.url, "5m", fast()).await;
    assert_eq!(srv.hits(), 1);
    // The issuer rotates to rsa-2; the fetch is slow so the burst piles up behind it.
    srv.serve(&fixture("jwks-2.json"));
    srv.st.delay_ms.store(300, Ordering::SeqCst);
    tokio::time::sleep(fast().min_refetch_interval).await;
    let token = Signer::Rs("rsa-2.key.pem").sign(Some("rsa-2"), &good_claims());
    let header = bearer(&token);
    let burst = (0..20).map(|_| {
        let v = v.clone();
        let h = header.clone();
        tokio::spawn(async move { v.verify(Some(&h)).await })
    });
    for r in futures::future::join_all(burst).await {
        let r = r.unwrap();
        assert!(r.is_ok(), "{r:?}");
    }
    assert_eq!(srv.hits(), 2, "20 concurrent unknown-kid tokens, one fetch");
    // The rotated-out key is gone with the new set.
    reject(
        &v,
        &Signer::Rs("rsa-1.key.pem").sign(Some("rsa-1"), &good_claims()),
        R::UnknownKey,
    )
    .await;
}

#[tokio::test]
async fn unknown_kid_refetch_is_rate_limited() {
    let srv = JwksServer::start(std::str::from_utf8(&fixture("jwks.json")).unwrap()).await;
    let tuning = fast();
    let rs = Signer::Rs("rsa-1.key.pem");
    let random0 = rs.sign(Some("random-0"), &good_claims());
    let v = url_verifier(&srv.url, "5m", tuning.clone()).await;
    // Right after the first fetch, a random kid does not cause another.
    reject(&v, &random0, R::UnknownKey).await;
    assert_eq!(srv.hits(), 1);
    let flood: Vec<String> = (1..=50)
        .map(|i| rs.sign(Some(&format!("random-{i}")), &good_claims()))
        .collect();
    tokio::time::sleep(tuning.min_refetch_interval).await;
    let start = Instant::now();
    for t in &flood {
        reject(&v, t, R::UnknownKey).await;
    }
    assert!(
        start.elapsed() < tuning.min_refetch_interval,
        "test too slow to prove anything"
    );
    assert_eq!(
        srv.hits(),
        2,
        "a flood of random kids causes one fetch per interval"
    );
    tokio::time::sleep(tuning.min_refetch_interval).await;
    reject(
        &v,
        &rs.sign(Some("random-51"), &good_claims()),
        R::UnknownKey,
    )
    .await;
    assert_eq!(srv.hits(), 3);
    // Known keys never wait on any of this.
    accept(&v, &rs.sign(Some("rsa-1"), &good_claims())).await;
    assert_eq!(srv.hits(), 3);
}

#[tokio::test]
async fn keys_survive_a_dead_or_broken_jwks_server() {
    let srv = JwksServer::start(std::str::from_utf8(&fixture("jwks.json")).unwrap()).await;
    let tuning = fast();
    let v = url_verifier(&srv.url, "1s", tuning.clone()).await;
    let rs = Signer::Rs("rsa-1.key.pem");
    let token = rs.sign(Some("rsa-1"), &good_claims());

    // Broken answers: an error status, a page that is not a JWKS, a JWKS without usable keys.
    let answers: [(u16, &[u8]); 3] = [
        (503, b"down for maintenance"),
        (200, b"<html>login</html>"),
        (200, br#"{"keys": [{"kty": "oct", "k": "AAAA"}]}"#),
    ];
    for (status, body) in answers {
        srv.st.status.store(status, Ordering::SeqCst);
        srv.serve(body);
        let before = srv.hits();
        tokio::time::sleep(Duration::from_millis(1100)).await;
        accept(&v, &token).await;
        eventually("refresh attempt", || srv.hits() == before + 1).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        accept(&v, &token).await;
    }

    // A server that hangs: the fetch times out and the unknown kid is refused in bounded time.
    srv.st.status.store(200, Ordering::SeqCst);
    srv.serve(&fixture("jwks-2.json"));
    srv.st.delay_ms.store(5_000, Ordering::SeqCst);
    tokio::time::sleep(tuning.min_refetch_interval).await;
    let start = Instant::now();
    reject(
        &v,
        &Signer::Rs("rsa-2.key.pem").sign(Some("rsa-2"), &good_claims()),
        R::UnknownKey,
    )
    .await;
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    accept(&v, &token).await;

    // A server that is gone: connection refused, old keys still verify.
    let url = srv.url.clone();
    drop(srv);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    accept(&v, &token).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    reject(&v, &rs.sign(Some("rsa-9"), &good_claims()), R::UnknownKey).await;
    accept(&v, &token).await;

    // Built while the server is down: construction succeeds, tokens are refused, not panics.
    let v = url_verifier(&url, "5m", tuning).await;
    reject(&v, &token, R::UnknownKey).await;
}

#[tokio::test]
async fn first_fetch_can_fail_and_a_later_token_recovers() {
    let srv = JwksServer::start("{}").await;
    srv.st.status.store(500, Ordering::SeqCst);
    let tuning = fast();
    let v = url_verifier(&srv.url, "5m", tuning.clone()).await;
    assert_eq!(srv.hits(), 1);
    let token = Signer::Es("ec-1.key.pem").sign(Some("ec-1"), &good_claims());
    reject(&v, &token, R::UnknownKey).await;
    srv.st.status.store(200, Ordering::SeqCst);
    srv.serve(&fixture("jwks.json"));
    tokio::time::sleep(tuning.min_refetch_interval).await;
    accept(&v, &token).await;
    assert_eq!(srv.hits(), 2);
}
