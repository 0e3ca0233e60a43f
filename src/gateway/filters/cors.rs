//! `cors`: explicit origins only, preflights answered at the gateway.

use std::collections::HashSet;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode};

use super::Reject;
use crate::gateway::config::CorsConfig;

pub struct CorsFilter {
    any_origin: bool,
    origins: HashSet<String>,
    methods: Vec<Method>,
    allow_methods: HeaderValue,
    allow_headers: Option<HeaderValue>,
    expose_headers: Option<HeaderValue>,
    max_age: HeaderValue,
    credentials: bool,
}

fn join(v: &[String]) -> Result<HeaderValue, String> {
    HeaderValue::from_str(&v.join(", ")).map_err(|_| format!("{v:?} cannot be sent as a header"))
}

/// True for a CORS preflight: `OPTIONS` with `Origin` and `Access-Control-Request-Method`.
pub fn is_preflight(method: &Method, h: &HeaderMap) -> bool {
    method == Method::OPTIONS
        && h.contains_key(header::ORIGIN)
        && h.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

impl CorsFilter {
    pub fn new(c: &CorsConfig) -> Result<Self, String> {
        if c.credentials && c.origins.iter().any(|o| o == "*") {
            return Err("`*` origins together with credentials is not allowed".into());
        }
        let methods = c
            .methods
            .iter()
            .map(|m| Method::from_bytes(m.as_bytes()).map_err(|_| format!("{m:?} is not a method")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            any_origin: c.origins.iter().any(|o| o == "*"),
            origins: c
                .origins
                .iter()
                .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                .collect(),
            methods,
            allow_methods: join(&c.methods)?,
            allow_headers: (!c.headers.is_empty())
                .then(|| join(&c.headers))
                .transpose()?,
            expose_headers: (!c.expose_headers.is_empty())
                .then(|| join(&c.expose_headers))
                .transpose()?,
            max_age: HeaderValue::from(c.max_age.0.as_secs()),
            credentials: c.credentials,
        })
    }

    fn allowed(&self, origin: &HeaderValue) -> bool {
        self.any_origin
            || origin
                .to_str()
                .is_ok_and(|o| self.origins.contains(&o.to_ascii_lowercase()))
    }

    fn allow_origin_value(&self, origin: &HeaderValue) -> HeaderValue {
        if self.any_origin {
            HeaderValue::from_static("*")
        } else {
            origin.clone()
        }
    }

    /// Answers a preflight. Allowed: 204 with the CORS headers. Not allowed: 403 with no
    /// `Access-Control-Allow-Origin`, so the browser blocks the real request.
    pub fn preflight(&self, req: &HeaderMap) -> Result<HeaderMap, Reject> {
        let mut h = HeaderMap::new();
        h.append(
            header::VARY,
            HeaderValue::from_static(
                "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
            ),
        );
        let origin = req
            .get(header::ORIGIN)
            .cloned()
            .unwrap_or(HeaderValue::from_static(""));
        let method_ok = req
            .get(header::ACCESS_CONTROL_REQUEST_METHOD)
            .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
            .is_some_and(|m| self.methods.contains(&m));
        if !self.allowed(&origin) || !method_ok {
            let mut r = Reject::new(
                StatusCode::FORBIDDEN,
                "cors_rejected",
                "origin or method not allowed by this route's CORS policy",
            );
            *r.headers = h;
            return Err(r);
        }
        h.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            self.allow_origin_value(&origin),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            self.allow_methods.clone(),
        );
        if let Some(ah) = &self.allow_headers {
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, ah.clone());
        }
        h.insert(header::ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        if self.credentials {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        Ok(h)
    }

    /// Adds CORS headers to an actual response for an allowed origin.
    pub fn apply(&self, origin: Option<&HeaderValue>, resp: &mut HeaderMap) {
        // The upstream's own `Vary` stays; `Origin` is added once, beside it.
        if !resp.get_all(header::VARY).iter().any(varies_on_origin) {
            resp.append(header::VARY, HeaderValue::from_static("Origin"));
        }
        let Some(origin) = origin else { return };
        if !self.allowed(origin) {
            return;
        }
        resp.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            self.allow_origin_value(origin),
        );
        if self.credentials {
            resp.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if let Some(e) = &self.expose_headers {
            resp.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, e.clone());
        }
    }
}

/// Whether a `Vary` value already covers `Origin` (naming it, or `*`).
fn varies_on_origin(v: &HeaderValue) -> bool {
    v.to_str().unwrap_or_default().split(',').any(|t| {
        let t = t.trim();
        t == "*" || t.eq_ignore_ascii_case("origin")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::config::units::Dur;

    fn filter() -> CorsFilter {
        CorsFilter::new(&CorsConfig {
            origins: vec!["https://app.example.com".into()],
            methods: vec!["GET".into(), "POST".into()],
            headers: vec!["Content-Type".into()],
            expose_headers: vec![],
            max_age: Dur::secs(600),
            credentials: true,
        })
        .unwrap()
    }

    fn preflight_headers(origin: &str, method: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ORIGIN, origin.parse().unwrap());
        h.insert(
            header::ACCESS_CONTROL_REQUEST_METHOD,
            method.parse().unwrap(),
        );
        h
    }

    #[test]
    fn allowed_preflight() {
        let h = filter()
            .preflight(&preflight_headers("https://app.example.com", "POST"))
            .unwrap();
        assert_eq!(
            h[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://app.example.com"
        );
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_METHODS], "GET, POST");
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert_eq!(h[header::ACCESS_CONTROL_MAX_AGE], "600");
        assert!(h[header::VARY].to_str().unwrap().contains("Origin"));
    }

    #[test]
    fn disallowed_origin_or_method_gets_no_allow_origin() {
        for (o, m) in [
            ("https://evil.example", "GET"),
            ("https://app.example.com", "DELETE"),
        ] {
            let r = filter().preflight(&preflight_headers(o, m)).unwrap_err();
            assert_eq!(r.status, 403);
            assert!(r.headers.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
        }
        let mut resp = HeaderMap::new();
        filter().apply(Some(&"https://evil.example".parse().unwrap()), &mut resp);
        assert!(resp.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
        assert_eq!(resp[header::VARY], "Origin");
    }

    #[test]
    fn vary_names_origin_once_beside_the_upstreams() {
        let origin: HeaderValue = "https://app.example.com".parse().unwrap();
        for (upstream, want) in [
            (vec![], vec!["Origin"]),
            (vec!["Accept-Encoding"], vec!["Accept-Encoding", "Origin"]),
            (
                vec!["accept-encoding, origin"],
                vec!["accept-encoding, origin"],
            ),
            (vec!["Accept", "*"], vec!["Accept", "*"]),
        ] {
            let mut resp = HeaderMap::new();
            for v in &upstream {
                resp.append(header::VARY, v.parse().unwrap());
            }
            filter().apply(Some(&origin), &mut resp);
            assert_eq!(resp.get_all(header::VARY).iter().collect::<Vec<_>>(), want);
        }
    }

    #[test]
    fn wildcard_with_credentials_is_refused() {
        let mut c = CorsConfig {
            origins: vec!["*".into()],
            methods: vec![],
            headers: vec![],
            expose_headers: vec![],
            max_age: Dur::secs(1),
            credentials: true,
        };
        assert!(CorsFilter::new(&c).is_err());
        c.credentials = false;
        let f = CorsFilter::new(&c).unwrap();
        let mut resp = HeaderMap::new();
        f.apply(Some(&"https://x.example".parse().unwrap()), &mut resp);
        assert_eq!(resp[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    }
}
