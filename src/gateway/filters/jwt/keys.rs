//! Verification keys: reading them from PEM and JWKS text, and finding the one for a token.
//! Pure: no I/O happens here.

use std::collections::HashMap;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind};
use serde::Deserialize;

/// The algorithms the gateway verifies. Everything else (`none` included) is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Alg {
    HS256,
    RS256,
    ES256,
}

impl Alg {
    pub const ALL: [Alg; 3] = [Alg::HS256, Alg::RS256, Alg::ES256];

    pub fn parse(s: &str) -> Option<Alg> {
        Alg::ALL.into_iter().find(|a| a.as_str() == s)
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Alg::HS256 => "HS256",
            Alg::RS256 => "RS256",
            Alg::ES256 => "ES256",
        }
    }

    pub const fn index(self) -> usize {
        self as usize
    }

    pub const fn to_jwt(self) -> Algorithm {
        match self {
            Alg::HS256 => Algorithm::HS256,
            Alg::RS256 => Algorithm::RS256,
            Alg::ES256 => Algorithm::ES256,
        }
    }

    pub fn from_jwt(a: Algorithm) -> Option<Alg> {
        match a {
            Algorithm::HS256 => Some(Alg::HS256),
            Algorithm::RS256 => Some(Alg::RS256),
            Algorithm::ES256 => Some(Alg::ES256),
            _ => None,
        }
    }
}

/// A public key and the one algorithm it may verify.
pub struct VerifyKey {
    pub alg: Alg,
    pub key: DecodingKey,
}

/// RFC 7518 §3.3 asks for 2048 bits; the `rsa` crate refuses moduli above 4096 bits when
/// verifying, so such a key would fail every request instead of failing at load time.
const MIN_RSA_BITS: usize = 2048;
const MAX_RSA_BITS: usize = 4096;

/// A public key from a PEM file: RSA (for RS256) or EC P-256 (for ES256).
pub fn key_from_pem(pem: &[u8]) -> Result<VerifyKey, String> {
    let text = std::str::from_utf8(pem).map_err(|_| "is not a PEM text file".to_string())?;
    if text.contains("PRIVATE KEY-----") {
        return Err(
            "holds a private key; give the public key (openssl pkey -in KEY -pubout)".into(),
        );
    }
    if text.contains("CERTIFICATE-----") {
        return Err(
            "holds a certificate; give its public key (openssl x509 -in CERT -pubkey -noout)"
                .into(),
        );
    }
    if let Ok(k) = DecodingKey::from_rsa_pem(pem) {
        return Ok(VerifyKey {
            alg: Alg::RS256,
            key: checked_rsa(&k)?,
        });
    }
    if let Ok(k) = DecodingKey::from_ec_pem(pem) {
        return Ok(VerifyKey {
            alg: Alg::ES256,
            key: checked_ec(k)?,
        });
    }
    Err("is not a PEM RSA or EC public key (expected -----BEGIN PUBLIC KEY-----)".into())
}

/// Normalises an RSA key to (n, e) form, which also proves a DER key parses.
fn checked_rsa(k: &DecodingKey) -> Result<DecodingKey, String> {
    let (n, e) = match k.kind() {
        DecodingKeyKind::RsaModulusExponent { n, e } => (n.clone(), e.clone()),
        DecodingKeyKind::SecretOrDer(_) => {
            let jwk = Jwk::from_decoding_key(k, None)
                .map_err(|_| "is not a valid RSA public key".to_string())?;
            let AlgorithmParameters::RSA(p) = jwk.algorithm else {
                return Err("is not a valid RSA public key".into());
            };
            let k = DecodingKey::from_rsa_components(&p.n, &p.e)
                .map_err(|_| "is not a valid RSA public key".to_string())?;
            return checked_rsa(&k);
        }
    };
    let bits = bit_len(&n);
    if bits < MIN_RSA_BITS {
        return Err(format!(
            "is a {bits}-bit RSA key; RS256 needs at least {MIN_RSA_BITS} bits"
        ));
    }
    if bits > MAX_RSA_BITS {
        return Err(format!(
            "is a {bits}-bit RSA key; at most {MAX_RSA_BITS} bits are supported"
        ));
    }
    let e_val = be_u64(&e).ok_or_else(|| "has an invalid RSA exponent".to_string())?;
    if e_val < 3 || e_val.is_multiple_of(2) || e_val > (1 << 33) - 1 {
        return Err("has an invalid RSA exponent".into());
    }
    Ok(DecodingKey::from_rsa_raw_components(&n, &e))
}

/// Only uncompressed P-256 points on the curve pass; anything else would fail every request.
fn checked_ec(k: DecodingKey) -> Result<DecodingKey, String> {
    match k.try_get_as_bytes() {
        Ok(b) if b.len() == 65 && b[0] == 4 => {}
        _ => return Err("is not an EC P-256 key (ES256 needs curve P-256)".into()),
    }
    // The verifier factory parses the point; an empty signature then just fails to verify.
    match jsonwebtoken::crypto::verify("", b"", &k, Algorithm::ES256) {
        Ok(_) => Ok(k),
        Err(_) => Err("is not a valid EC P-256 public key".into()),
    }
}

fn bit_len(n: &[u8]) -> usize {
    let n = match n.iter().position(|b| *b != 0) {
        Some(i) => &n[i..],
        None => return 0,
    };
    n.len() * 8 - n[0].leading_zeros() as usize
}

fn be_u64(b: &[u8]) -> Option<u64> {
    let b = &b[b.iter().position(|x| *x != 0)?..];
    if b.len() > 8 {
        return None;
    }
    Some(b.iter().fold(0u64, |acc, x| (acc << 8) | u64::from(*x)))
}

/// One JWK as a verification key, or why it cannot be one.
pub fn key_from_jwk(jwk: &Jwk) -> Result<VerifyKey, String> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return Err("is an encryption key (use: enc)".into());
    }
    let declared = match jwk.common.key_algorithm {
        None => None,
        Some(KeyAlgorithm::RS256) => Some(Alg::RS256),
        Some(KeyAlgorithm::ES256) => Some(Alg::ES256),
        Some(other) => return Err(format!("has algorithm {other:?}, which is not supported")),
    };
    let (alg, key) = match &jwk.algorithm {
        AlgorithmParameters::RSA(p) => {
            let k = DecodingKey::from_rsa_components(&p.n, &p.e)
                .map_err(|_| "has n or e that is not base64url".to_string())?;
            (Alg::RS256, checked_rsa(&k)?)
        }
        AlgorithmParameters::EllipticCurve(p) => {
            if p.curve != EllipticCurve::P256 {
                return Err(format!("is on curve {:?}; ES256 needs P-256", p.curve));
            }
            let k = DecodingKey::from_ec_components(&p.x, &p.y)
                .map_err(|_| "has x or y that is not base64url".to_string())?;
            (Alg::ES256, checked_ec(k)?)
        }
        AlgorithmParameters::OctetKey(_) => {
            return Err("is a symmetric (oct) key; give HS256 secrets as jwt.secret".into());
        }
        AlgorithmParameters::OctetKeyPair(_) => return Err("is an EdDSA key (unsupported)".into()),
        _ => return Err("has an unsupported key type".into()),
    };
    if declared.is_some_and(|d| d != alg) {
        return Err("declares an algorithm that does not fit its key type".into());
    }
    Ok(VerifyKey { alg, key })
}

/// Keys from one JWKS document.
#[derive(Default)]
pub struct KeySet {
    by_kid: HashMap<String, VerifyKey>,
    /// Keys without a `kid`: usable only by tokens without one, when no other key fits.
    anonymous: Vec<VerifyKey>,
}

/// How a key set answers a token's `kid` and `alg`.
pub enum Found<'a> {
    Key(&'a DecodingKey),
    /// The `kid` names a key of another type: alg confusion, or a broken issuer.
    WrongAlg,
    Missing,
}

impl KeySet {
    pub fn len(&self) -> usize {
        self.by_kid.len() + self.anonymous.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn by_kid(&self, kid: &str, alg: Alg) -> Found<'_> {
        match self.by_kid.get(kid) {
            Some(k) if k.alg == alg => Found::Key(&k.key),
            Some(_) => Found::WrongAlg,
            None => Found::Missing,
        }
    }

    /// Every key that could verify `alg`, for tokens that name no `kid`.
    pub fn with_alg(&self, alg: Alg) -> impl Iterator<Item = &DecodingKey> {
        self.by_kid
            .values()
            .chain(&self.anonymous)
            .filter(move |k| k.alg == alg)
            .map(|k| &k.key)
    }

    pub fn has_alg(&self, alg: Alg) -> bool {
        self.with_alg(alg).next().is_some()
    }
}

/// Parses a JWKS document. Keys that cannot be used are skipped, each with a reason, so one
/// odd key (an encryption key, an EdDSA key) does not take the others down.
pub fn parse_jwks(text: &[u8]) -> Result<(KeySet, Vec<String>), String> {
    #[derive(Deserialize)]
    struct Raw {
        keys: Vec<serde_json::Value>,
    }
    let raw: Raw =
        serde_json::from_slice(text).map_err(|e| format!("is not a JWKS document: {e}"))?;
    let mut set = KeySet::default();
    let mut skipped = Vec::new();
    for (i, v) in raw.keys.into_iter().enumerate() {
        let jwk: Jwk = match serde_json::from_value(v) {
            Ok(j) => j,
            Err(e) => {
                skipped.push(format!("key #{i} is not a JWK: {e}"));
                continue;
            }
        };
        let name = match &jwk.common.key_id {
            Some(kid) => format!("key #{i} (kid {kid:?})"),
            None => format!("key #{i}"),
        };
        let key = match key_from_jwk(&jwk) {
            Ok(k) => k,
            Err(why) => {
                skipped.push(format!("{name} {why}"));
                continue;
            }
        };
        match jwk.common.key_id {
            Some(kid) if set.by_kid.contains_key(&kid) => {
                skipped.push(format!("{name} repeats an earlier kid"));
            }
            Some(kid) => {
                set.by_kid.insert(kid, key);
            }
            None => set.anonymous.push(key),
        }
    }
    Ok((set, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/jwt")
            .join(name);
        std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    fn rsa_parts(k: &DecodingKey) -> (Vec<u8>, Vec<u8>) {
        match k.kind() {
            DecodingKeyKind::RsaModulusExponent { n, e } => (n.clone(), e.clone()),
            DecodingKeyKind::SecretOrDer(_) => panic!("expected (n, e)"),
        }
    }

    #[test]
    fn pem_keys_load_with_their_algorithm() {
        assert_eq!(
            key_from_pem(&fixture("rsa-1.pub.pem")).unwrap().alg,
            Alg::RS256
        );
        assert_eq!(
            key_from_pem(&fixture("ec-1.pub.pem")).unwrap().alg,
            Alg::ES256
        );
    }

    #[test]
    fn pem_refuses_private_weak_wrong_curve_and_garbage() {
        let err = |f: &str| key_from_pem(&fixture(f)).err().unwrap();
        assert!(err("rsa-1.key.pem").contains("private key"));
        assert!(err("ec-1.key.pem").contains("private key"));
        assert!(err("rsa-1024.pub.pem").contains("1024-bit"));
        assert!(err("ec-p384.pub.pem").contains("P-256"));
        assert!(key_from_pem(b"hello").err().unwrap().contains("not a PEM"));
        assert!(
            key_from_pem(&[0xff, 0xfe])
                .err()
                .unwrap()
                .contains("not a PEM")
        );
        let cert = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(key_from_pem(cert).err().unwrap().contains("certificate"));
    }

    #[test]
    fn committed_jwks_matches_the_pem_keys() {
        let (set, skipped) = parse_jwks(&fixture("jwks.json")).unwrap();
        assert!(skipped.is_empty(), "{skipped:?}");
        assert_eq!(set.len(), 2);
        let pem = key_from_pem(&fixture("rsa-1.pub.pem")).unwrap();
        let Found::Key(jwk) = set.by_kid("rsa-1", Alg::RS256) else {
            panic!("rsa-1 missing")
        };
        assert_eq!(rsa_parts(jwk), rsa_parts(&pem.key));
        let pem = key_from_pem(&fixture("ec-1.pub.pem")).unwrap();
        let Found::Key(jwk) = set.by_kid("ec-1", Alg::ES256) else {
            panic!("ec-1 missing")
        };
        assert_eq!(
            jwk.try_get_as_bytes().unwrap(),
            pem.key.try_get_as_bytes().unwrap()
        );
    }

    #[test]
    fn kid_of_another_type_is_wrong_alg() {
        let (set, _) = parse_jwks(&fixture("jwks.json")).unwrap();
        assert!(matches!(set.by_kid("rsa-1", Alg::ES256), Found::WrongAlg));
        assert!(matches!(set.by_kid("rsa-1", Alg::HS256), Found::WrongAlg));
        assert!(matches!(set.by_kid("nope", Alg::RS256), Found::Missing));
        assert_eq!(set.with_alg(Alg::ES256).count(), 1);
        assert!(!set.has_alg(Alg::HS256));
    }

    #[test]
    fn unusable_jwks_entries_are_skipped_with_reasons() {
        let good: serde_json::Value = serde_json::from_slice(&fixture("jwks.json")).unwrap();
        let rsa = good["keys"][0].clone();
        let mut enc = rsa.clone();
        enc["use"] = "enc".into();
        enc["kid"] = "enc-1".into();
        let mut rs384 = rsa.clone();
        rs384["alg"] = "RS384".into();
        rs384["kid"] = "rs384".into();
        let mut lying = rsa.clone();
        lying["alg"] = "ES256".into();
        lying["kid"] = "lying".into();
        let mut bad_n = rsa.clone();
        bad_n["n"] = "!!!".into();
        bad_n["kid"] = "bad-n".into();
        let doc = serde_json::json!({"keys": [
            rsa, enc, rs384, lying, bad_n, rsa.clone(),
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
            {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty": "EC", "crv": "P-384", "x": "AA", "y": "AA"},
            {"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA", "kid": "short"},
            {"kty": "weird"},
            17
        ]});
        let (set, skipped) = parse_jwks(doc.to_string().as_bytes()).unwrap();
        assert_eq!(set.len(), 1, "{skipped:?}");
        assert_eq!(skipped.len(), 11, "{skipped:?}");
        let all = skipped.join("\n");
        for needle in [
            "encryption",
            "RS384",
            "does not fit",
            "base64url",
            "repeats",
            "oct",
            "EdDSA",
            "P-256",
            "not a JWK",
        ] {
            assert!(all.contains(needle), "no {needle:?} in {all}");
        }
    }

    #[test]
    fn jwks_that_is_not_json_is_an_error() {
        assert!(parse_jwks(b"<html>").err().unwrap().contains("not a JWKS"));
        assert!(parse_jwks(b"{\"nokeys\": []}").is_err());
    }

    #[test]
    fn bit_length_ignores_leading_zeros() {
        assert_eq!(bit_len(&[0, 0, 1]), 1);
        assert_eq!(bit_len(&[0x80, 0]), 16);
        assert_eq!(bit_len(&[]), 0);
        assert_eq!(be_u64(&[0, 1, 0, 1]), Some(65537));
        assert_eq!(be_u64(&[1; 9]), None);
        assert_eq!(be_u64(&[0]), None);
    }
}
