//! Route matching: exact paths, then path prefixes on segment boundaries (longest first),
//! with optional host and header conditions, then the method.

use std::borrow::Cow;
use std::collections::HashMap;

use http::{HeaderMap, HeaderName, HeaderValue, Method};

/// The match conditions of one route, compiled.
pub struct RouteMatch {
    pub methods: Vec<Method>,
    /// Lower-case host names without port; empty means any.
    pub hosts: Vec<String>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl RouteMatch {
    fn conditions_hold(&self, host: Option<&str>, headers: &HeaderMap) -> bool {
        (self.hosts.is_empty() || host.is_some_and(|h| self.hosts.iter().any(|x| x == h)))
            && self
                .headers
                .iter()
                .all(|(n, v)| headers.get_all(n).iter().any(|x| x == v))
    }

    fn allows(&self, m: &Method) -> bool {
        self.methods.is_empty() || self.methods.contains(m)
    }
}

/// Indexes for finding routes by path. `T` is the compiled route.
pub struct Router<T> {
    routes: Vec<(RouteMatch, T)>,
    exact: HashMap<String, Vec<usize>>,
    /// (prefix, route index), longest prefix first, config order among equals.
    prefixes: Vec<(String, usize)>,
    /// Whether any route matches on host; if none does, requests skip reading it.
    matches_hosts: bool,
}

pub enum Found<'a, T> {
    /// The route, and the length of the prefix it matched (for `strip_prefix`).
    Route(&'a T, usize),
    /// Some route has this path, but none takes this method.
    MethodNotAllowed(Vec<Method>),
    NotFound,
}

/// Does `prefix` match `path` on a segment boundary? `/api/users` matches `/api/users`
/// and `/api/users/7`, never `/api/usersX`.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    path.starts_with(prefix)
        && (path.len() == prefix.len()
            || prefix.ends_with('/')
            || path.as_bytes()[prefix.len()] == b'/')
}

impl<T> Router<T> {
    /// `paths` and `exact` are each route's prefix and exact paths, in config order.
    pub fn new(routes: Vec<(RouteMatch, Vec<String>, Vec<String>, T)>) -> Self {
        let mut exact: HashMap<String, Vec<usize>> = HashMap::new();
        let mut prefixes = Vec::new();
        let mut compiled = Vec::with_capacity(routes.len());
        for (i, (mut m, paths, exacts, t)) in routes.into_iter().enumerate() {
            // HEAD is served wherever GET is (RFC 9110, 9.3.2), and `Allow` says so.
            if let Some(g) = m.methods.iter().position(|x| *x == Method::GET)
                && !m.methods.contains(&Method::HEAD)
            {
                m.methods.insert(g + 1, Method::HEAD);
            }
            for p in exacts {
                exact.entry(p).or_default().push(i);
            }
            for p in paths {
                prefixes.push((p, i));
            }
            compiled.push((m, t));
        }
        // Stable sort keeps config order among prefixes of equal length.
        prefixes.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        Self {
            matches_hosts: compiled.iter().any(|(m, _)| !m.hosts.is_empty()),
            routes: compiled,
            exact,
            prefixes,
        }
    }

    /// Whether any route has a host condition (so [`Router::find`] needs the host).
    pub fn matches_hosts(&self) -> bool {
        self.matches_hosts
    }

    pub fn routes(&self) -> impl Iterator<Item = &T> {
        self.routes.iter().map(|(_, t)| t)
    }

    /// Finds the most specific route for a request. With `any_method` the method is not
    /// checked (CORS preflights are answered for a route whatever methods it takes).
    pub fn find(
        &self,
        method: &Method,
        host: Option<&str>,
        path: &str,
        headers: &HeaderMap,
        any_method: bool,
    ) -> Found<'_, T> {
        let mut allowed: Vec<Method> = Vec::new();
        let mut path_matched = false;
        let exact = self
            .exact
            .get(path)
            .into_iter()
            .flatten()
            .map(|i| (*i, path.len()));
        let prefix = self
            .prefixes
            .iter()
            .filter(|(p, _)| prefix_matches(p, path))
            .map(|(p, i)| (*i, p.len()));
        for (i, len) in exact.chain(prefix) {
            let (m, t) = &self.routes[i];
            if !m.conditions_hold(host, headers) {
                continue;
            }
            if any_method || m.allows(method) {
                return Found::Route(t, len);
            }
            path_matched = true;
            for x in &m.methods {
                if !allowed.contains(x) {
                    allowed.push(x.clone());
                }
            }
        }
        if path_matched {
            Found::MethodNotAllowed(allowed)
        } else {
            Found::NotFound
        }
    }
}

/// The host a request is for, lower-cased and without port: from the URI (HTTP/2) or the
/// Host header (HTTP/1.1). Borrowed in the usual case, so routing allocates nothing.
pub fn request_host<'a>(uri: &'a http::Uri, headers: &'a HeaderMap) -> Option<Cow<'a, str>> {
    let raw = uri
        .host()
        .or_else(|| headers.get(http::header::HOST)?.to_str().ok())?;
    let host: Cow<'a, str> = if raw.starts_with('[') {
        match raw.find(']') {
            Some(end) => Cow::Borrowed(&raw[..=end]),
            None => Cow::Owned(format!("{raw}]")),
        }
    } else {
        Cow::Borrowed(raw.split(':').next()?)
    };
    Some(if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        host
    })
}

/// Rejects paths that could reach a route they do not name: dot segments (plain or
/// percent-encoded), encoded slashes or backslashes, and control bytes.
pub fn path_is_safe(path: &str) -> bool {
    if !path.starts_with('/') || path.bytes().any(|b| b < 0x20 || b == 0x7f || b == b'\\') {
        return false;
    }
    if !path.contains('%') {
        // Nothing is encoded: only plain dot segments can be unsafe (the common case,
        // checked without allocating).
        return !path.split('/').any(|seg| seg == "." || seg == "..");
    }
    let lower = path.to_ascii_lowercase();
    if lower.contains("%2f") || lower.contains("%5c") || lower.contains("%00") {
        return false;
    }
    !lower.split('/').any(|seg| {
        let decoded = seg.replace("%2e", ".");
        decoded == "." || decoded == ".."
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(methods: &[&str]) -> RouteMatch {
        RouteMatch {
            methods: methods.iter().map(|s| s.parse().unwrap()).collect(),
            hosts: vec![],
            headers: vec![],
        }
    }

    fn router() -> Router<&'static str> {
        Router::new(vec![
            (m(&[]), vec!["/api".into()], vec![], "api"),
            (
                m(&["GET", "POST"]),
                vec!["/api/users".into()],
                vec![],
                "users",
            ),
            (m(&["GET"]), vec![], vec!["/api/users/me".into()], "me"),
            (
                RouteMatch {
                    methods: vec![],
                    hosts: vec!["beta.example.com".into()],
                    headers: vec![],
                },
                vec!["/beta".into()],
                vec![],
                "beta",
            ),
            (m(&["PUT"]), vec!["/only-put".into()], vec![], "put"),
        ])
    }

    fn find<'a>(r: &'a Router<&'static str>, method: &str, path: &str) -> Found<'a, &'static str> {
        r.find(
            &method.parse().unwrap(),
            Some("example.com"),
            path,
            &HeaderMap::new(),
            false,
        )
    }

    #[test]
    fn longest_prefix_and_exact_win() {
        let r = router();
        assert!(matches!(
            find(&r, "GET", "/api/users/7"),
            Found::Route(&"users", 10)
        ));
        assert!(matches!(
            find(&r, "GET", "/api/users"),
            Found::Route(&"users", 10)
        ));
        assert!(matches!(
            find(&r, "GET", "/api/users/me"),
            Found::Route(&"me", 13)
        ));
        assert!(matches!(
            find(&r, "GET", "/api/usersX"),
            Found::Route(&"api", 4)
        ));
        // The more specific route does not take DELETE, so the general one does.
        assert!(matches!(
            find(&r, "DELETE", "/api/users/7"),
            Found::Route(&"api", 4)
        ));
        assert!(matches!(find(&r, "GET", "/nothing"), Found::NotFound));
    }

    #[test]
    fn wrong_method_is_405_with_allowed_methods() {
        let r = router();
        match find(&r, "GET", "/only-put/x") {
            Found::MethodNotAllowed(a) => assert_eq!(a, vec![Method::PUT]),
            _ => panic!("expected 405"),
        }
        match find(&r, "HEAD", "/only-put/x") {
            Found::MethodNotAllowed(a) => assert_eq!(a, vec![Method::PUT]),
            _ => panic!("expected 405"),
        }
    }

    #[test]
    fn head_goes_wherever_get_does() {
        let r = router();
        assert!(matches!(
            find(&r, "HEAD", "/api/users/7"),
            Found::Route(&"users", 10)
        ));
        assert!(matches!(
            find(&r, "HEAD", "/api/users/me"),
            Found::Route(&"me", 13)
        ));
        let r = Router::new(vec![(
            m(&["GET", "POST"]),
            vec!["/orders".into()],
            vec![],
            "orders",
        )]);
        match find(&r, "DELETE", "/orders/7") {
            Found::MethodNotAllowed(a) => {
                assert_eq!(a, vec![Method::GET, Method::HEAD, Method::POST])
            }
            _ => panic!("expected 405"),
        }
    }

    #[test]
    fn host_condition() {
        let r = router();
        assert!(matches!(find(&r, "GET", "/beta"), Found::NotFound));
        assert!(matches!(
            r.find(
                &Method::GET,
                Some("beta.example.com"),
                "/beta",
                &HeaderMap::new(),
                false
            ),
            Found::Route(&"beta", 5)
        ));
    }

    #[test]
    fn unsafe_paths() {
        for p in [
            "/api/../admin",
            "/api/%2e%2e/admin",
            "/api/%2E./x",
            "/a%2fb",
            "/a\\b",
            "/./a",
            "x",
        ] {
            assert!(!path_is_safe(p), "{p}");
        }
        for p in [
            "/api/users",
            "/api/users/..hidden",
            "/a/b.c/d",
            "/",
            "/a/%2e%2ex",
            "/a%20b",
        ] {
            assert!(path_is_safe(p), "{p}");
        }
        for p in ["/a/..", "/a/.", "/%2E", "/a/%2e%2E/b", "/a%5cb", "/a%00"] {
            assert!(!path_is_safe(p), "{p}");
        }
    }

    #[test]
    fn host_parsing() {
        let mut h = HeaderMap::new();
        h.insert("host", "API.Example.com:8080".parse().unwrap());
        assert_eq!(
            request_host(&"/x".parse().unwrap(), &h).as_deref(),
            Some("api.example.com")
        );
        assert_eq!(
            request_host(&"http://[::1]:80/x".parse().unwrap(), &HeaderMap::new()).as_deref(),
            Some("[::1]")
        );
        let mut h = HeaderMap::new();
        h.insert("host", "api.example.com:8080".parse().unwrap());
        let uri: http::Uri = "/x".parse().unwrap();
        let host = request_host(&uri, &h);
        assert!(
            matches!(host, Some(Cow::Borrowed("api.example.com"))),
            "a lower-case host is borrowed, not copied"
        );
        h.insert("host", "[::1".parse().unwrap());
        assert_eq!(
            request_host(&"/x".parse().unwrap(), &h).as_deref(),
            Some("[::1]")
        );
        assert_eq!(
            request_host(&"/x".parse().unwrap(), &HeaderMap::new()),
            None
        );
    }
}
