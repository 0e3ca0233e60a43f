//! `key_auth`: an API key in a header identifies a consumer.
//!
//! Keys are looked up by their SHA-256, so the table never holds a key in the clear for
//! longer than compile time and the lookup's timing says nothing useful about a key.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use http::{HeaderMap, HeaderName, StatusCode};
use sha2::{Digest, Sha256};

use super::Reject;
use crate::gateway::config::{Consumer, KeyAuth};
use crate::gateway::secrets;

/// Every consumer key of one config, by digest.
#[derive(Default)]
pub struct KeyTable(HashMap<[u8; 32], Arc<str>>);

impl KeyTable {
    /// Resolves every key reference; a missing variable or file rejects the whole config.
    pub fn build(consumers: &[Consumer]) -> Result<Self, (String, String)> {
        let mut map = HashMap::new();
        for (i, c) in consumers.iter().enumerate() {
            let name: Arc<str> = c.name.as_str().into();
            for (j, r) in c.keys.iter().enumerate() {
                let secret =
                    secrets::resolve(r).map_err(|e| (format!("consumers[{i}].keys[{j}]"), e))?;
                let digest: [u8; 32] = Sha256::digest(secret.expose().as_bytes()).into();
                if let Some(other) = map.insert(digest, name.clone())
                    && other != name
                {
                    return Err((
                        format!("consumers[{i}].keys[{j}]"),
                        format!("this key is also a key of consumer {other:?}"),
                    ));
                }
            }
        }
        Ok(Self(map))
    }
}

pub struct KeyAuthFilter {
    header: HeaderName,
    hide: bool,
    allow: Option<HashSet<Arc<str>>>,
    keys: Arc<KeyTable>,
}

/// Who a valid key belongs to, and a stable hash of the key for rate limits and stickiness.
#[derive(Debug)]
pub struct Authenticated {
    pub consumer: Arc<str>,
    pub key_hash: u64,
}

impl KeyAuthFilter {
    pub fn new(cfg: &KeyAuth, keys: Arc<KeyTable>) -> Result<Self, String> {
        Ok(Self {
            header: HeaderName::from_bytes(cfg.header.as_bytes())
                .map_err(|_| format!("{:?} is not a valid header name", cfg.header))?,
            hide: cfg.hide_credentials,
            allow: (!cfg.allow.is_empty())
                .then(|| cfg.allow.iter().map(|a| Arc::from(a.as_str())).collect()),
            keys,
        })
    }

    pub fn check(&self, headers: &mut HeaderMap) -> Result<Authenticated, Reject> {
        let Some(key) = headers.get(&self.header) else {
            return Err(unauthorized(
                "missing_api_key",
                format!("send an API key in the {} header", self.header),
            ));
        };
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let Some(consumer) = self.keys.0.get(&digest) else {
            return Err(unauthorized("invalid_api_key", "the API key is not valid"));
        };
        if let Some(allow) = &self.allow
            && !allow.contains(consumer)
        {
            return Err(Reject::new(
                StatusCode::FORBIDDEN,
                "consumer_not_allowed",
                "this consumer may not call this route",
            ));
        }
        if self.hide {
            headers.remove(&self.header);
        }
        Ok(Authenticated {
            consumer: consumer.clone(),
            key_hash: u64::from_le_bytes(digest[..8].try_into().expect("8 bytes")),
        })
    }
}

fn unauthorized(code: &'static str, msg: impl Into<std::borrow::Cow<'static, str>>) -> Reject {
    let mut r = Reject::new(StatusCode::UNAUTHORIZED, code, msg);
    r.headers.insert(
        http::header::WWW_AUTHENTICATE,
        http::HeaderValue::from_static("ApiKey"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::config::SecretRef;

    fn filter(allow: Vec<String>) -> KeyAuthFilter {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::fs::write(&a, "key-a\n").unwrap();
        std::fs::write(&b, "key-b").unwrap();
        let consumers = vec![
            Consumer {
                name: "alice".into(),
                keys: vec![SecretRef::File(a)],
                key: None,
            },
            Consumer {
                name: "bob".into(),
                keys: vec![SecretRef::File(b)],
                key: None,
            },
        ];
        let table = Arc::new(KeyTable::build(&consumers).unwrap());
        let cfg = KeyAuth {
            header: "X-API-Key".into(),
            hide_credentials: true,
            allow,
        };
        KeyAuthFilter::new(&cfg, table).unwrap()
    }

    #[test]
    fn valid_key_names_consumer_and_is_hidden() {
        let f = filter(vec![]);
        let mut h = HeaderMap::new();
        h.insert("x-api-key", "key-a".parse().unwrap());
        let who = f.check(&mut h).unwrap();
        assert_eq!(&*who.consumer, "alice");
        assert!(h.get("x-api-key").is_none());
    }

    #[test]
    fn missing_invalid_and_not_allowed() {
        let f = filter(vec!["alice".into()]);
        assert_eq!(f.check(&mut HeaderMap::new()).unwrap_err().status, 401);
        let mut h = HeaderMap::new();
        h.insert("x-api-key", "nope".parse().unwrap());
        let e = f.check(&mut h).unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (401, "invalid_api_key"));
        let mut h = HeaderMap::new();
        h.insert("x-api-key", "key-b".parse().unwrap());
        assert_eq!(f.check(&mut h).unwrap_err().status, 403);
    }
}
