//! `request_headers` / `response_headers`: remove, then set, then add.

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::gateway::config::HeaderTransform;

#[derive(Debug, Default)]
pub struct HeaderRules {
    remove: Vec<HeaderName>,
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
}

impl HeaderRules {
    pub fn compile(t: &HeaderTransform) -> Result<Self, String> {
        let name = |n: &str| {
            HeaderName::from_bytes(n.as_bytes())
                .map_err(|_| format!("{n:?} is not a valid header name"))
        };
        let value = |v: &str| {
            HeaderValue::from_str(v).map_err(|_| format!("{v:?} is not a valid header value"))
        };
        Ok(Self {
            remove: t.remove.iter().map(|n| name(n)).collect::<Result<_, _>>()?,
            set: t
                .set
                .iter()
                .map(|(n, v)| Ok((name(n)?, value(v)?)))
                .collect::<Result<_, String>>()?,
            add: t
                .add
                .iter()
                .map(|(n, v)| Ok((name(n)?, value(v)?)))
                .collect::<Result<_, String>>()?,
        })
    }

    pub fn apply(&self, h: &mut HeaderMap) {
        for n in &self.remove {
            h.remove(n);
        }
        for (n, v) in &self.set {
            h.insert(n.clone(), v.clone());
        }
        for (n, v) in &self.add {
            h.append(n.clone(), v.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remove_set_add() {
        let t = HeaderTransform {
            add: [("x-a".to_string(), "2".to_string())].into(),
            set: [("x-b".to_string(), "new".to_string())].into(),
            remove: vec!["x-c".into()],
        };
        let rules = HeaderRules::compile(&t).unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-a", HeaderValue::from_static("1"));
        h.insert("x-b", HeaderValue::from_static("old"));
        h.insert("x-c", HeaderValue::from_static("gone"));
        rules.apply(&mut h);
        assert_eq!(h.get_all("x-a").iter().count(), 2);
        assert_eq!(h["x-b"], "new");
        assert!(h.get("x-c").is_none());
    }
}
