//! Cost of one `JwtVerifier::verify` on the gateway's hot path, per algorithm.
//! Run: `cargo bench --bench jwt_verify`.

use std::hint::black_box;
use std::path::{Path, PathBuf};

use criterion::{Criterion, criterion_group, criterion_main};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use signalbox::gateway::config::JwtConfig;
use signalbox::gateway::filters::jwt::JwtVerifier;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jwt")
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(fixtures().join(name)).expect("fixture")
}

fn verify_bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let now = jsonwebtoken::get_current_timestamp();
    let claims = serde_json::json!({
        "sub": "alice", "iss": "https://idp.test", "aud": "api", "exp": now + 3600
    });
    let secret = String::from_utf8(read("hs256.secret")).expect("utf-8");
    let cases = [
        (
            "HS256",
            Algorithm::HS256,
            EncodingKey::from_secret(secret.trim_end().as_bytes()),
            serde_json::json!({"secret": {"file": "hs256.secret"}}),
        ),
        (
            "RS256",
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(&read("rsa-1.key.pem")).expect("rsa"),
            serde_json::json!({"jwks_file": "jwks.json"}),
        ),
        (
            "ES256",
            Algorithm::ES256,
            EncodingKey::from_ec_pem(&read("ec-1.key.pem")).expect("ec"),
            serde_json::json!({"jwks_file": "jwks.json"}),
        ),
    ];
    for (name, alg, key, mut cfg) in cases {
        cfg["issuer"] = "https://idp.test".into();
        cfg["audiences"] = serde_json::json!(["api"]);
        let cfg: JwtConfig = serde_json::from_value(cfg).expect("config");
        let v = rt
            .block_on(JwtVerifier::new(&cfg, &|p: &Path| fixtures().join(p)))
            .expect("verifier");
        let mut h = Header::new(alg);
        h.kid = Some(
            if alg == Algorithm::ES256 {
                "ec-1"
            } else {
                "rsa-1"
            }
            .into(),
        );
        let header = format!(
            "Bearer {}",
            jsonwebtoken::encode(&h, &claims, &key).expect("sign")
        );
        rt.block_on(v.verify(Some(&header))).expect("valid token");
        c.bench_function(&format!("verify {name}"), |b| {
            b.iter(|| rt.block_on(v.verify(black_box(Some(&header)))))
        });
    }
}

criterion_group!(benches, verify_bench);
criterion_main!(benches);
