//! The `jwt` filter core: checks a request's `Authorization: Bearer <token>`.
//!
//! A [`JwtVerifier`] is built once per config snapshot. Keys, `Validation`s and the allowed
//! algorithm set are fixed at construction; only a JWKS fetched from `jwks_url` changes later.
//! Keys are chosen by the token's `alg` *and* the key's type, so an HS256 token is only ever
//! checked against `jwt.secret` (never against an RSA public key used as an HMAC secret), and
//! `none` is never accepted. Key URLs inside tokens (`jku`, `x5u`, `jwk`) are ignored.

mod keys;
mod remote;

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;

use crate::gateway::config::{JwtConfig, SecretRef};
use crate::gateway::secrets;

use keys::{Alg, Found, KeySet, VerifyKey};
use remote::RemoteJwks;

/// Value of the `WWW-Authenticate` header on every JWT rejection.
pub const WWW_AUTHENTICATE: &str = "Bearer error=\"invalid_token\"";

/// Longer tokens are refused before any decoding work; real ones are a few hundred bytes.
const MAX_TOKEN_LEN: usize = 16 * 1024;
/// Clock skew is seconds or minutes; more would make `exp` meaningless.
const MAX_LEEWAY: Duration = Duration::from_secs(3600);
/// RFC 7518 §3.2: an HS256 key must be at least as long as the hash output.
pub const MIN_HMAC_SECRET: usize = 32;

/// A token that passed every check.
#[derive(Clone, Debug, PartialEq)]
pub struct Verified {
    /// The `consumer_claim` claim (a string, or a number as text), for rate limits and logs.
    pub consumer: Option<String>,
    /// All claims of the token, a JSON object.
    pub claims: Value,
}

/// Why a request was refused. The gateway answers 401 with [`JwtReject::to_json`] and
/// [`WWW_AUTHENTICATE`]. Messages never contain the token.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct JwtReject {
    pub code: RejectCode,
    pub message: Cow<'static, str>,
}

/// Short machine-readable reasons, stable for clients and dashboards.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RejectCode {
    MissingToken,
    MalformedToken,
    BadSignature,
    Expired,
    NotYetValid,
    WrongIssuer,
    WrongAudience,
    UnknownKey,
    AlgorithmNotAllowed,
}

impl RejectCode {
    pub const fn as_str(self) -> &'static str {
        match self {
            RejectCode::MissingToken => "missing_token",
            RejectCode::MalformedToken => "malformed_token",
            RejectCode::BadSignature => "bad_signature",
            RejectCode::Expired => "expired",
            RejectCode::NotYetValid => "not_yet_valid",
            RejectCode::WrongIssuer => "wrong_issuer",
            RejectCode::WrongAudience => "wrong_audience",
            RejectCode::UnknownKey => "unknown_key",
            RejectCode::AlgorithmNotAllowed => "algorithm_not_allowed",
        }
    }
}

impl fmt::Display for RejectCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl JwtReject {
    fn new(code: RejectCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// The 401 body: `{"error": "<code>", "message": "<message>"}`.
    pub fn to_json(&self) -> Value {
        serde_json::json!({ "error": self.code.as_str(), "message": self.message })
    }
}

use RejectCode as R;

/// Knobs for fetching `jwks_url`; the defaults suit production.
#[derive(Clone, Debug)]
pub struct JwksTuning {
    /// Whole-request timeout for one JWKS fetch.
    pub fetch_timeout: Duration,
    /// At most one fetch for an unknown `kid` per this interval; also the retry delay after a
    /// failed fetch and the floor of `jwks_cache`. Random `kid`s cannot hammer the key server.
    pub min_refetch_interval: Duration,
    /// Largest JWKS response accepted, in bytes.
    pub max_body: usize,
}

impl Default for JwksTuning {
    fn default() -> Self {
        Self {
            fetch_timeout: Duration::from_secs(5),
            min_refetch_interval: Duration::from_secs(10),
            max_body: 1024 * 1024,
        }
    }
}

/// Verifies bearer tokens for one `jwt` config. Cheap to clone and share across requests.
#[derive(Clone)]
pub struct JwtVerifier {
    inner: Arc<Inner>,
}

struct Inner {
    /// Allowed by config *and* served by some key source; indexed by [`Alg::index`].
    allowed: [bool; 3],
    validations: [Option<Validation>; 3],
    hmac: Option<DecodingKey>,
    pem: Option<VerifyKey>,
    file_keys: Option<KeySet>,
    remote: Option<Arc<RemoteJwks>>,
    consumer_claim: String,
}

impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        let allowed: Vec<&str> = Alg::ALL
            .into_iter()
            .filter(|a| i.allowed[a.index()])
            .map(Alg::as_str)
            .collect();
        f.debug_struct("JwtVerifier")
            .field("allowed", &allowed)
            .field("secret", &i.hmac.as_ref().map(|_| "***"))
            .field("public_key", &i.pem.as_ref().map(|k| k.alg))
            .field("jwks_file_keys", &i.file_keys.as_ref().map(KeySet::len))
            .field("jwks_url", &i.remote.is_some())
            .finish()
    }
}

impl JwtVerifier {
    /// Builds the verifier: reads the secret and key files (relative paths go through
    /// `resolve_path`), then fetches `jwks_url` once. Errors name the field and the file, never
    /// a secret. A JWKS server that is down is not an error: it is retried as tokens arrive.
    ///
    /// Files are read when this is called; the returned future is `Send` and only fetches.
    pub fn new(
        cfg: &JwtConfig,
        resolve_path: &dyn Fn(&Path) -> PathBuf,
    ) -> impl Future<Output = Result<Self, String>> + Send + use<> {
        Self::with_tuning(cfg, resolve_path, JwksTuning::default())
    }

    /// [`JwtVerifier::new`] with explicit JWKS fetch settings.
    pub fn with_tuning(
        cfg: &JwtConfig,
        resolve_path: &dyn Fn(&Path) -> PathBuf,
        tuning: JwksTuning,
    ) -> impl Future<Output = Result<Self, String>> + Send + use<> {
        let inner = build(cfg, resolve_path, tuning);
        async move {
            let inner = inner?;
            if let Some(r) = &inner.remote {
                r.initial_fetch().await;
            }
            Ok(JwtVerifier {
                inner: Arc::new(inner),
            })
        }
    }

    /// Builds without waiting for the first JWKS fetch, so a config snapshot can be compiled
    /// synchronously. The fetch starts in the background when a tokio runtime is running;
    /// otherwise the first token that needs a key fetches it.
    pub fn build_now(
        cfg: &JwtConfig,
        resolve_path: &dyn Fn(&Path) -> PathBuf,
    ) -> Result<Self, String> {
        let v = JwtVerifier {
            inner: Arc::new(build(cfg, resolve_path, JwksTuning::default())?),
        };
        if v.inner.remote.is_some()
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            let bg = v.clone();
            handle.spawn(async move {
                if let Some(r) = &bg.inner.remote {
                    r.initial_fetch().await;
                }
            });
        }
        Ok(v)
    }

    /// Checks the raw `Authorization` header value. Only awaits when the token names a key we
    /// do not have and `jwks_url` is set.
    pub async fn verify(&self, authorization: Option<&str>) -> Result<Verified, JwtReject> {
        let token = bearer_token(authorization)?;
        let (alg, kid) = read_header(token)?;
        let i = &*self.inner;
        if !i.allowed[alg.index()] {
            return Err(JwtReject::new(
                R::AlgorithmNotAllowed,
                format!("{} tokens are not accepted here", alg.as_str()),
            ));
        }
        if alg == Alg::HS256 {
            let Some(key) = &i.hmac else {
                return Err(unknown_key());
            };
            return self.decode(token, key, alg);
        }
        if let Some(r) = &i.remote {
            r.refresh_if_due();
        }
        {
            let remote = i.remote.as_ref().map(|r| r.keys());
            match self.find_key(kid.as_deref(), alg, remote.as_deref()) {
                Lookup::Key(k) => return self.decode(token, k, alg),
                Lookup::Missing if i.remote.is_some() => {}
                other => return Err(other.reject()),
            }
        }
        let Some(r) = &i.remote else {
            return Err(unknown_key());
        };
        r.refresh_for_unknown_key().await;
        // Look again even when rate-limited: another request's fetch may have brought the key.
        let remote = r.keys();
        match self.find_key(kid.as_deref(), alg, Some(&remote)) {
            Lookup::Key(k) => self.decode(token, k, alg),
            other => Err(other.reject()),
        }
    }

    fn find_key<'a>(
        &'a self,
        kid: Option<&str>,
        alg: Alg,
        remote: Option<&'a KeySet>,
    ) -> Lookup<'a> {
        let i = &*self.inner;
        let pem = i.pem.as_ref().filter(|p| p.alg == alg).map(|p| &p.key);
        let sets = || i.file_keys.iter().chain(remote);
        match kid {
            Some(kid) => {
                for set in sets() {
                    match set.by_kid(kid, alg) {
                        Found::Key(k) => return Lookup::Key(k),
                        Found::WrongAlg => return Lookup::WrongAlg,
                        Found::Missing => {}
                    }
                }
                // A single configured PEM key serves whatever `kid` the issuer labels it with.
                pem.map_or(Lookup::Missing, Lookup::Key)
            }
            None => {
                if let Some(k) = pem {
                    return Lookup::Key(k);
                }
                let mut fits = sets().flat_map(|s| s.with_alg(alg));
                match (fits.next(), fits.next()) {
                    (Some(k), None) => Lookup::Key(k),
                    (Some(_), Some(_)) => Lookup::Ambiguous,
                    (None, _) => Lookup::Missing,
                }
            }
        }
    }

    fn decode(&self, token: &str, key: &DecodingKey, alg: Alg) -> Result<Verified, JwtReject> {
        let Some(validation) = &self.inner.validations[alg.index()] else {
            return Err(JwtReject::new(
                R::AlgorithmNotAllowed,
                format!("{} tokens are not accepted here", alg.as_str()),
            ));
        };
        let data =
            jsonwebtoken::decode::<Value>(token, key, validation).map_err(|e| reject_for(&e))?;
        if !data.claims.is_object() {
            return Err(JwtReject::new(
                R::MalformedToken,
                "token claims are not a JSON object",
            ));
        }
        let consumer = match data.claims.get(&self.inner.consumer_claim) {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        Ok(Verified {
            consumer,
            claims: data.claims,
        })
    }
}

enum Lookup<'a> {
    Key(&'a DecodingKey),
    WrongAlg,
    Ambiguous,
    Missing,
}

impl Lookup<'_> {
    fn reject(&self) -> JwtReject {
        match self {
            Lookup::WrongAlg => JwtReject::new(
                R::AlgorithmNotAllowed,
                "the token's algorithm does not match the type of the key it names",
            ),
            Lookup::Ambiguous => JwtReject::new(
                R::UnknownKey,
                "the token names no key (kid) and several keys could have signed it",
            ),
            Lookup::Key(_) | Lookup::Missing => unknown_key(),
        }
    }
}

fn unknown_key() -> JwtReject {
    JwtReject::new(R::UnknownKey, "no key is known for this token")
}

/// The token from `Bearer <token>`, with only a cheap shape check.
fn bearer_token(header: Option<&str>) -> Result<&str, JwtReject> {
    let h = header.map(str::trim).unwrap_or_default();
    if h.is_empty() {
        return Err(JwtReject::new(R::MissingToken, "no Authorization header"));
    }
    let (scheme, rest) = h.split_once([' ', '\t']).unwrap_or((h, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(JwtReject::new(
            R::MissingToken,
            "the Authorization header does not use the Bearer scheme",
        ));
    }
    let token = rest.trim();
    if token.is_empty() {
        return Err(JwtReject::new(R::MissingToken, "the Bearer token is empty"));
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(JwtReject::new(R::MalformedToken, "the token is too long"));
    }
    match token.bytes().filter(|b| *b == b'.').count() {
        2 => Ok(token),
        4 => Err(JwtReject::new(
            R::MalformedToken,
            "encrypted tokens (JWE) are not supported",
        )),
        _ => Err(JwtReject::new(
            R::MalformedToken,
            "a JWT has three parts separated by dots",
        )),
    }
}

/// The token's algorithm and key id, from its (not yet trusted) header.
fn read_header(token: &str) -> Result<(Alg, Option<String>), JwtReject> {
    match jsonwebtoken::decode_header(token) {
        Ok(h) => match Alg::from_jwt(h.alg) {
            Some(a) => Ok((a, h.kid)),
            None => Err(alg_refused(&format!("{:?}", h.alg))),
        },
        // `alg` values jsonwebtoken does not know (`none` above all) fail as JSON errors.
        Err(e) if matches!(e.kind(), ErrorKind::Json(_)) => {
            #[derive(Deserialize)]
            struct Probe {
                alg: Option<Value>,
            }
            let seg = token.split('.').next().unwrap_or_default();
            let probe =
                jsonwebtoken::dangerous::insecure_decode_claims::<Probe>(format!("x.{seg}.x"));
            match probe {
                Ok(Probe {
                    alg: Some(Value::String(a)),
                }) if Alg::parse(&a).is_none() => Err(alg_refused(&a)),
                _ => Err(JwtReject::new(
                    R::MalformedToken,
                    "the token header is not a valid JWT header",
                )),
            }
        }
        Err(_) => Err(JwtReject::new(
            R::MalformedToken,
            "the token header is not base64url JSON",
        )),
    }
}

fn alg_refused(alg: &str) -> JwtReject {
    // The name comes from the request: only echo it when it looks like an algorithm name.
    let msg = if !alg.is_empty()
        && alg.len() <= 16
        && alg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        format!("algorithm {alg:?} is not allowed")
    } else {
        "the token's algorithm is not allowed".to_string()
    };
    JwtReject::new(R::AlgorithmNotAllowed, msg)
}

fn reject_for(e: &jsonwebtoken::errors::Error) -> JwtReject {
    let (code, msg): (RejectCode, Cow<'static, str>) = match e.kind() {
        ErrorKind::InvalidSignature => (R::BadSignature, "the token signature is not valid".into()),
        ErrorKind::ExpiredSignature => (R::Expired, "the token has expired".into()),
        ErrorKind::ImmatureSignature => (R::NotYetValid, "the token is not valid yet (nbf)".into()),
        ErrorKind::InvalidIssuer => (R::WrongIssuer, "the token issuer is not accepted".into()),
        ErrorKind::InvalidAudience => (
            R::WrongAudience,
            "the token audience is not accepted".into(),
        ),
        ErrorKind::MissingRequiredClaim(c) => match c.as_str() {
            "iss" => (R::WrongIssuer, "the token has no iss claim".into()),
            "aud" => (R::WrongAudience, "the token has no aud claim".into()),
            "exp" => (R::MalformedToken, "the token has no exp claim".into()),
            _ => (R::MalformedToken, "the token lacks a required claim".into()),
        },
        ErrorKind::InvalidClaimFormat(c) if c == "exp" || c == "nbf" => (
            R::MalformedToken,
            format!("the token's {c} claim is not a number").into(),
        ),
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => (
            R::AlgorithmNotAllowed,
            "the token's algorithm is not allowed".into(),
        ),
        ErrorKind::InvalidEcdsaKey | ErrorKind::InvalidRsaKey(_) | ErrorKind::InvalidKeyFormat => {
            // Keys are checked at load time; reaching this is a bug worth a log line.
            tracing::warn!(error = %e, "jwt: a loaded key could not be used");
            (
                R::UnknownKey,
                "the key for this token cannot be used".into(),
            )
        }
        _ => (
            R::MalformedToken,
            "the token is not a well-formed JWT".into(),
        ),
    };
    JwtReject::new(code, msg)
}

/// Everything but the first JWKS fetch: reads and checks keys, precomputes `Validation`s.
fn build(
    cfg: &JwtConfig,
    resolve_path: &dyn Fn(&Path) -> PathBuf,
    tuning: JwksTuning,
) -> Result<Inner, String> {
    let mut configured = [false; 3];
    if cfg.algorithms.is_empty() {
        return Err("jwt.algorithms is empty; list some of HS256, RS256, ES256".into());
    }
    for (i, a) in cfg.algorithms.iter().enumerate() {
        let alg = Alg::parse(a).ok_or_else(|| {
            format!("jwt.algorithms[{i}]: unsupported algorithm {a:?}; use HS256, RS256 or ES256")
        })?;
        configured[alg.index()] = true;
    }
    let on = |a: Alg| configured[a.index()];
    if cfg.leeway.0 > MAX_LEEWAY {
        return Err(format!(
            "jwt.leeway: {} is too long; clock skew allowance is at most 1h",
            cfg.leeway
        ));
    }

    let hmac = match &cfg.secret {
        None => None,
        Some(r) => {
            if !on(Alg::HS256) {
                return Err("jwt.secret is set but jwt.algorithms does not include HS256".into());
            }
            let r = match r {
                SecretRef::File(p) => SecretRef::File(resolve_path(p)),
                SecretRef::Env(_) | SecretRef::Inline => r.clone(),
            };
            let s = secrets::resolve(&r).map_err(|e| format!("jwt.secret: {e}"))?;
            if s.expose().len() < MIN_HMAC_SECRET {
                return Err(format!(
                    "jwt.secret ({}): HS256 needs a secret of at least {MIN_HMAC_SECRET} bytes",
                    describe_ref(&r)
                ));
            }
            Some(DecodingKey::from_secret(s.expose().as_bytes()))
        }
    };

    let pem = match &cfg.public_key_file {
        None => None,
        Some(p) => {
            let path = resolve_path(p);
            let field = format!("jwt.public_key_file {}", path.display());
            let bytes = std::fs::read(&path).map_err(|e| format!("{field}: cannot read: {e}"))?;
            let key = keys::key_from_pem(&bytes).map_err(|e| format!("{field} {e}"))?;
            if !on(key.alg) {
                return Err(format!(
                    "{field} is a key for {} but jwt.algorithms does not include it",
                    key.alg.as_str()
                ));
            }
            Some(key)
        }
    };

    let file_keys = match &cfg.jwks_file {
        None => None,
        Some(p) => {
            let path = resolve_path(p);
            let field = format!("jwt.jwks_file {}", path.display());
            let bytes = std::fs::read(&path).map_err(|e| format!("{field}: cannot read: {e}"))?;
            let (set, skipped) = keys::parse_jwks(&bytes).map_err(|e| format!("{field} {e}"))?;
            if set.is_empty() {
                return Err(format!(
                    "{field} has no usable keys: {}",
                    if skipped.is_empty() {
                        "it is empty".to_string()
                    } else {
                        skipped.join("; ")
                    }
                ));
            }
            for why in skipped {
                tracing::warn!("{field}: {why}; skipped");
            }
            Some(set)
        }
    };

    let remote = match &cfg.jwks_url {
        None => None,
        Some(u) => Some(Arc::new(
            RemoteJwks::new(u, cfg.jwks_cache.0, tuning)
                .map_err(|e| format!("jwt.jwks_url {e}"))?,
        )),
    };

    let mut allowed = [false; 3];
    for a in Alg::ALL {
        allowed[a.index()] = on(a)
            && match a {
                Alg::HS256 => hmac.is_some(),
                _ => {
                    pem.as_ref().is_some_and(|k| k.alg == a)
                        || file_keys.as_ref().is_some_and(|s| s.has_alg(a))
                        || remote.is_some()
                }
            };
    }
    if !allowed.contains(&true) {
        return Err(format!(
            "jwt: no key source serves the allowed algorithms ({}); give secret, \
             public_key_file, jwks_file or jwks_url to match",
            cfg.algorithms.join(", ")
        ));
    }

    let validations = Alg::ALL.map(|a| allowed[a.index()].then(|| validation(cfg, a)));
    Ok(Inner {
        allowed,
        validations,
        hmac,
        pem,
        file_keys,
        remote,
        consumer_claim: cfg.consumer_claim.clone(),
    })
}

fn validation(cfg: &JwtConfig, alg: Alg) -> Validation {
    // One algorithm per Validation: jsonwebtoken refuses a list mixing key families.
    let mut v = Validation::new(alg.to_jwt());
    v.leeway = cfg.leeway.0.as_secs();
    v.validate_exp = true;
    v.validate_nbf = true;
    let mut required = Vec::new();
    if cfg.require_exp {
        required.push("exp");
    }
    if let Some(iss) = &cfg.issuer {
        v.set_issuer(&[iss]);
        required.push("iss");
    }
    // jsonwebtoken refuses any token with `aud` when no audience is set; the config promises
    // `aud` is only checked when `audiences` is given.
    v.validate_aud = !cfg.audiences.is_empty();
    if v.validate_aud {
        v.set_audience(&cfg.audiences);
        required.push("aud");
    }
    v.set_required_spec_claims(&required);
    v
}

fn describe_ref(r: &SecretRef) -> String {
    match r {
        SecretRef::Env(n) => format!("environment variable {n}"),
        SecretRef::File(p) => format!("file {}", p.display()),
        SecretRef::Inline => "an inline value".into(),
    }
}

#[cfg(test)]
mod tests;
