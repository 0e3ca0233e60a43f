//! A fake Kubernetes API server for tests: real HTTP on 127.0.0.1, real JSON, spoken to by
//! the real `kube` client through a generated kubeconfig. No Kubernetes API server can be
//! installed on the machines these tests run on; this is the next best thing.
//!
//! It serves, for Deployments, ReplicaSets, Services, ConfigMaps, Secrets and Gateway API
//! HTTPRoutes in any namespace:
//! - GET one object, LIST (label and field selectors, `limit`/`continue` pagination, the
//!   list's `resourceVersion`), WATCH (`?watch=true`: newline-delimited JSON events from a
//!   resourceVersion, BOOKMARKs when asked, `timeoutSeconds`, and a 410 Expired ERROR event
//!   for a resourceVersion older than the last compaction);
//! - PATCH as JSON merge patch (RFC 7386) and strategic merge patch for maps (with the
//!   `$patch: replace|delete` directives; a strategic patch carrying a list is refused, as
//!   the fake does not know the merge keys, and custom resources refuse strategic merge
//!   patches as the real server does), PUT (update);
//! - optimistic concurrency: a write whose `metadata.resourceVersion` is not the stored one
//!   gets a 409 Conflict Status;
//! - 403 Forbidden Status objects for any verb/resource the test forbids;
//! - an outage: 500 for every request while it lasts.
//!
//! Tests mutate stored objects (as another user or a controller would), drop every open
//! watch, compact the history, and read back what was stored and which requests came in.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

/// A resource kind the fake serves.
#[derive(Clone, Copy, Debug)]
struct Kind {
    plural: &'static str,
    /// URL prefix: `/api/v1` or `/apis/GROUP/VERSION`.
    prefix: &'static str,
    api_version: &'static str,
    kind: &'static str,
    /// Built-in kinds support strategic merge patch; custom resources do not.
    builtin: bool,
}

const KINDS: &[Kind] = &[
    Kind {
        plural: "deployments",
        prefix: "/apis/apps/v1",
        api_version: "apps/v1",
        kind: "Deployment",
        builtin: true,
    },
    Kind {
        plural: "replicasets",
        prefix: "/apis/apps/v1",
        api_version: "apps/v1",
        kind: "ReplicaSet",
        builtin: true,
    },
    Kind {
        plural: "services",
        prefix: "/api/v1",
        api_version: "v1",
        kind: "Service",
        builtin: true,
    },
    Kind {
        plural: "configmaps",
        prefix: "/api/v1",
        api_version: "v1",
        kind: "ConfigMap",
        builtin: true,
    },
    Kind {
        plural: "secrets",
        prefix: "/api/v1",
        api_version: "v1",
        kind: "Secret",
        builtin: true,
    },
    Kind {
        plural: "httproutes",
        prefix: "/apis/gateway.networking.k8s.io/v1",
        api_version: "gateway.networking.k8s.io/v1",
        kind: "HTTPRoute",
        builtin: false,
    },
];

fn kind_of(plural: &str) -> Option<Kind> {
    KINDS.iter().copied().find(|k| k.plural == plural)
}

#[derive(Clone, Debug)]
struct Event {
    rv: u64,
    plural: &'static str,
    namespace: String,
    kind: &'static str,
    object: Value,
}

#[derive(Default)]
struct Store {
    rv: u64,
    /// (plural, namespace, name) → object.
    objects: BTreeMap<(String, String, String), Value>,
    log: Vec<Event>,
    /// Watches from a resourceVersion below this get 410 Expired.
    compacted: u64,
    forbidden: Vec<(String, String)>,
    /// Every request answers 500 (etcd timing out). Not 503: the kube client retries 503s
    /// itself for minutes, which would hide the outage from the watcher.
    unavailable: bool,
    requests: Vec<String>,
    uid: u64,
}

struct Shared {
    store: Mutex<Store>,
    events: broadcast::Sender<Event>,
    drops: watch::Sender<u64>,
    user: String,
}

pub struct FakeKube {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn status(code: u16, reason: &str, message: String, details: Option<Value>) -> Value {
    let mut s = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code,
    });
    if let Some(d) = details {
        s["details"] = d;
    }
    s
}

fn reply(code: u16, body: Value) -> Response {
    let mut r = (
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        body.to_string(),
    )
        .into_response();
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    r
}

/// A parsed label selector term.
enum Term {
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// Splits on commas outside parentheses.
fn split_terms(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur);
    out.into_iter()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect()
}

fn parse_selector(s: &str) -> Result<Vec<Term>, String> {
    let mut terms = Vec::new();
    for t in split_terms(s) {
        let set = |rest: &str| -> Vec<String> {
            rest.trim()
                .trim_start_matches('(')
                .trim_end_matches(')')
                .split(',')
                .map(|v| v.trim().to_string())
                .collect()
        };
        if let Some(k) = t.strip_prefix('!') {
            terms.push(Term::NotExists(k.trim().to_string()));
        } else if let Some((k, v)) = t.split_once("!=") {
            terms.push(Term::Ne(k.trim().into(), v.trim().into()));
        } else if let Some((k, v)) = t.split_once("==").or_else(|| t.split_once('=')) {
            terms.push(Term::Eq(k.trim().into(), v.trim().into()));
        } else if let Some((k, rest)) = t.split_once(" notin ") {
            terms.push(Term::NotIn(k.trim().into(), set(rest)));
        } else if let Some((k, rest)) = t.split_once(" in ") {
            terms.push(Term::In(k.trim().into(), set(rest)));
        } else if t
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
        {
            terms.push(Term::Exists(t));
        } else {
            return Err(format!("unable to parse requirement: {t:?}"));
        }
    }
    Ok(terms)
}

fn matches(terms: &[Term], labels: &Map<String, Value>) -> bool {
    let get = |k: &str| labels.get(k).and_then(Value::as_str);
    terms.iter().all(|t| match t {
        Term::Eq(k, v) => get(k) == Some(v),
        Term::Ne(k, v) => get(k) != Some(v),
        Term::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
        Term::NotIn(k, vs) => get(k).is_none_or(|x| !vs.iter().any(|v| v == x)),
        Term::Exists(k) => get(k).is_some(),
        Term::NotExists(k) => get(k).is_none(),
    })
}

/// Label and field selectors of a request.
struct Filter {
    labels: Vec<Term>,
    fields: Vec<(String, String)>,
}

impl Filter {
    fn from_query(q: &BTreeMap<String, String>) -> Result<Self, String> {
        let labels = parse_selector(q.get("labelSelector").map_or("", String::as_str))?;
        let mut fields = Vec::new();
        for t in split_terms(q.get("fieldSelector").map_or("", String::as_str)) {
            let (k, v) = t
                .split_once("==")
                .or_else(|| t.split_once('='))
                .ok_or_else(|| format!("invalid field selector {t:?}"))?;
            if k != "metadata.name" && k != "metadata.namespace" {
                return Err(format!("field label not supported: {k}"));
            }
            fields.push((k.to_string(), v.to_string()));
        }
        Ok(Self { labels, fields })
    }

    fn accepts(&self, obj: &Value) -> bool {
        let empty = Map::new();
        let labels = obj["metadata"]["labels"].as_object().unwrap_or(&empty);
        matches(&self.labels, labels)
            && self.fields.iter().all(|(k, v)| {
                let field = k.trim_start_matches("metadata.");
                obj["metadata"][field].as_str() == Some(v)
            })
    }
}

fn query(uri: &Uri) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for pair in uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.insert(decode(k), decode(v));
    }
    out
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            let t = target.as_object_mut().expect("made an object above");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// Strategic merge patch, for maps: merged like a merge patch, with `$patch: replace`
/// (the map replaces what is there) and `$patch: delete` (the map goes). Lists need the
/// schema's merge keys, which the fake does not have: they are refused.
fn strategic_patch(target: &mut Value, patch: &Value) -> Result<(), String> {
    match patch {
        Value::Object(p) => {
            match p.get("$patch").and_then(Value::as_str) {
                Some("replace") => {
                    let mut m = p.clone();
                    m.remove("$patch");
                    *target = Value::Object(m);
                    return Ok(());
                }
                Some("delete") => {
                    *target = Value::Null;
                    return Ok(());
                }
                Some(other) => return Err(format!("unknown patch directive {other:?}")),
                None => {}
            }
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            let t = target.as_object_mut().expect("made an object above");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                    continue;
                }
                let slot = t.entry(k.clone()).or_insert(Value::Null);
                strategic_patch(slot, v)?;
                if slot.is_null() {
                    t.remove(k);
                }
            }
            Ok(())
        }
        Value::Array(_) => Err(
            "the fake API server's strategic merge patch handles maps only; this patch has a list"
                .into(),
        ),
        other => {
            *target = other.clone();
            Ok(())
        }
    }
}

impl Shared {
    fn record(
        &self,
        s: &mut Store,
        plural: &'static str,
        ns: &str,
        kind: &'static str,
        object: Value,
    ) {
        let ev = Event {
            rv: s.rv,
            plural,
            namespace: ns.to_string(),
            kind,
            object,
        };
        s.log.push(ev.clone());
        let _ = self.events.send(ev);
    }

    /// Stores an object with a new resourceVersion, as a create or an update.
    fn put(&self, s: &mut Store, k: Kind, ns: &str, mut obj: Value) -> Value {
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let key = (k.plural.to_string(), ns.to_string(), name);
        s.rv += 1;
        let old = s.objects.get(&key).cloned();
        obj["apiVersion"] = json!(k.api_version);
        obj["kind"] = json!(k.kind);
        obj["metadata"]["namespace"] = json!(ns);
        obj["metadata"]["resourceVersion"] = json!(s.rv.to_string());
        match &old {
            Some(o) => {
                obj["metadata"]["uid"] = o["metadata"]["uid"].clone();
                obj["metadata"]["creationTimestamp"] = o["metadata"]["creationTimestamp"].clone();
                let generation = o["metadata"]["generation"].as_i64().unwrap_or(1);
                obj["metadata"]["generation"] = json!(if o.get("spec") != obj.get("spec") {
                    generation + 1
                } else {
                    generation
                });
            }
            None => {
                if obj["metadata"]["uid"].is_null() {
                    s.uid += 1;
                    obj["metadata"]["uid"] =
                        json!(format!("00000000-0000-4000-8000-{:012}", s.uid));
                }
                if obj["metadata"]["creationTimestamp"].is_null() {
                    obj["metadata"]["creationTimestamp"] = json!("2026-11-21T12:00:00Z");
                }
                if obj["metadata"]["generation"].is_null() {
                    obj["metadata"]["generation"] = json!(1);
                }
            }
        }
        s.objects.insert(key, obj.clone());
        let kind = if old.is_some() { "MODIFIED" } else { "ADDED" };
        self.record(s, k.plural, ns, kind, obj.clone());
        obj
    }
}

impl FakeKube {
    /// An empty API server on an ephemeral loopback port.
    pub async fn start() -> FakeKube {
        let (events, _) = broadcast::channel(1024);
        let (drops, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            store: Mutex::new(Store {
                rv: 1000,
                ..Default::default()
            }),
            events,
            drops,
            user: "system:serviceaccount:ops:signalbox".into(),
        });
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeKube { addr, shared, task }
    }

    /// An API server holding every fixture list in tests/fixtures/k8s, in `namespace`.
    pub async fn with_fixtures(namespace: &str) -> FakeKube {
        let f = Self::start().await;
        for k in KINDS {
            let path = format!(
                "{}/tests/fixtures/k8s/{}.json",
                env!("CARGO_MANIFEST_DIR"),
                k.plural
            );
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            let list: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
            for item in list["items"].as_array().cloned().unwrap_or_default() {
                f.insert(k.plural, namespace, item);
            }
        }
        f
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig (YAML) with one context, `fake`, pointing here.
    pub fn kubeconfig_yaml(&self, namespace: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: fake\nclusters:\n- name: fake\n  cluster:\n    server: {}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: signalbox\n    namespace: {namespace}\nusers:\n- name: signalbox\n  user:\n    token: fake-token\n",
            self.url()
        )
    }

    pub fn kubeconfig(&self, namespace: &str) -> kube::config::Kubeconfig {
        kube::config::Kubeconfig::from_yaml(&self.kubeconfig_yaml(namespace))
            .expect("kubeconfig parses")
    }

    pub fn insert(&self, plural: &str, ns: &str, obj: Value) -> Value {
        let k = kind_of(plural).unwrap_or_else(|| panic!("the fake does not serve {plural}"));
        let mut s = self.shared.store.lock().unwrap();
        self.shared.put(&mut s, k, ns, obj)
    }

    pub fn get(&self, plural: &str, ns: &str, name: &str) -> Option<Value> {
        let s = self.shared.store.lock().unwrap();
        s.objects
            .get(&(plural.to_string(), ns.to_string(), name.to_string()))
            .cloned()
    }

    /// Changes a stored object as another client would: new resourceVersion, a MODIFIED event.
    pub fn mutate(&self, plural: &str, ns: &str, name: &str, f: impl FnOnce(&mut Value)) -> Value {
        let k = kind_of(plural).unwrap_or_else(|| panic!("the fake does not serve {plural}"));
        let mut s = self.shared.store.lock().unwrap();
        let mut obj = s
            .objects
            .get(&(plural.to_string(), ns.to_string(), name.to_string()))
            .cloned()
            .unwrap_or_else(|| panic!("no {plural} {ns}/{name}"));
        f(&mut obj);
        self.shared.put(&mut s, k, ns, obj)
    }

    pub fn delete(&self, plural: &str, ns: &str, name: &str) {
        let k = kind_of(plural).unwrap_or_else(|| panic!("the fake does not serve {plural}"));
        let mut s = self.shared.store.lock().unwrap();
        if let Some(mut obj) =
            s.objects
                .remove(&(plural.to_string(), ns.to_string(), name.to_string()))
        {
            s.rv += 1;
            obj["metadata"]["resourceVersion"] = json!(s.rv.to_string());
            self.shared.record(&mut s, k.plural, ns, "DELETED", obj);
        }
    }

    /// Every later `verb` (get, list, watch, patch, update) on `plural` answers 403.
    pub fn forbid(&self, verb: &str, plural: &str) {
        self.shared
            .store
            .lock()
            .unwrap()
            .forbidden
            .push((verb.into(), plural.into()));
    }

    /// While set, every request answers 500 as an API server whose etcd is gone; with
    /// [`Self::drop_watches`] it takes the open watches away too.
    pub fn set_unavailable(&self, down: bool) {
        self.shared.store.lock().unwrap().unavailable = down;
    }

    pub fn allow_all(&self) {
        self.shared.store.lock().unwrap().forbidden.clear();
    }

    /// Ends every open watch stream (as an API server restart or a load balancer would).
    pub fn drop_watches(&self) {
        self.shared.drops.send_modify(|g| *g += 1);
    }

    /// Forgets the history: a watch from any resourceVersion up to now gets 410 Expired.
    pub fn compact(&self) {
        let mut s = self.shared.store.lock().unwrap();
        s.compacted = s.rv + 1;
        s.log.clear();
    }

    pub fn resource_version(&self) -> u64 {
        self.shared.store.lock().unwrap().rv
    }

    /// `METHOD /path?query` of every request so far.
    pub fn requests(&self) -> Vec<String> {
        self.shared.store.lock().unwrap().requests.clone()
    }
}

/// `/api/v1/namespaces/NS/PLURAL[/NAME]` or `/apis/GROUP/VERSION/namespaces/NS/PLURAL[/NAME]`.
fn route(path: &str) -> Option<(Kind, String, Option<String>)> {
    for k in KINDS {
        let Some(rest) = path
            .strip_prefix(k.prefix)
            .and_then(|r| r.strip_prefix("/namespaces/"))
        else {
            continue;
        };
        let mut parts = rest.split('/');
        let ns = parts.next()?.to_string();
        if parts.next()? != k.plural {
            continue;
        }
        let name = parts.next().map(str::to_string);
        if parts.next().is_some() {
            return None;
        }
        return Some((*k, ns, name));
    }
    None
}

async fn handle(
    State(sh): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let down = {
        let mut s = sh.store.lock().unwrap();
        s.requests.push(format!("{method} {uri}"));
        s.unavailable
    };
    if down {
        return reply(
            500,
            status(
                500,
                "InternalError",
                "etcdserver: request timed out (test outage: the API server is unavailable)".into(),
                None,
            ),
        );
    }
    let Some((k, ns, name)) = route(uri.path()) else {
        return reply(
            404,
            status(
                404,
                "NotFound",
                "the server could not find the requested resource".into(),
                None,
            ),
        );
    };
    let q = query(&uri);
    let verb = match (&method, &name) {
        (&Method::GET, Some(_)) => "get",
        (&Method::GET, None) if q.get("watch").is_some_and(|w| w == "true" || w == "1") => "watch",
        (&Method::GET, None) => "list",
        (&Method::PATCH, Some(_)) => "patch",
        (&Method::PUT, Some(_)) => "update",
        _ => {
            return reply(
                405,
                status(
                    405,
                    "MethodNotAllowed",
                    format!("{method} is not supported by the fake API server here"),
                    None,
                ),
            );
        }
    };
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer fake-token") {
        return reply(
            401,
            status(401, "Unauthorized", "Unauthorized".into(), None),
        );
    }
    let forbidden = sh
        .store
        .lock()
        .unwrap()
        .forbidden
        .iter()
        .any(|(v, p)| v == verb && p == k.plural);
    if forbidden {
        let group = k
            .api_version
            .rsplit_once('/')
            .map_or("", |(g, _)| if g.contains('.') { g } else { "apps" });
        let group = if k.prefix == "/api/v1" { "" } else { group };
        let subject = match &name {
            Some(n) => format!("{} {n:?} is forbidden", k.plural),
            None => format!("{} is forbidden", k.plural),
        };
        let msg = format!(
            "{subject}: User {:?} cannot {verb} resource {:?} in API group {group:?} in the namespace {ns:?}",
            sh.user, k.plural
        );
        return reply(
            403,
            status(
                403,
                "Forbidden",
                msg,
                Some(json!({"name": name.clone().unwrap_or_default(), "kind": k.plural})),
            ),
        );
    }
    match verb {
        "get" => get(&sh, k, &ns, name.as_deref().unwrap_or_default()),
        "list" => list(&sh, k, &ns, &q),
        "watch" => watch_stream(sh.clone(), k, ns, q),
        "patch" => patch(
            &sh,
            k,
            &ns,
            name.as_deref().unwrap_or_default(),
            &headers,
            &body,
        ),
        _ => update(&sh, k, &ns, name.as_deref().unwrap_or_default(), &body),
    }
}

fn not_found(k: Kind, name: &str) -> Response {
    reply(
        404,
        status(
            404,
            "NotFound",
            format!(
                "{}.{} {name:?} not found",
                k.plural,
                k.api_version.split('/').next().unwrap_or("")
            ),
            Some(json!({"name": name, "kind": k.plural})),
        ),
    )
}

fn get(sh: &Shared, k: Kind, ns: &str, name: &str) -> Response {
    let s = sh.store.lock().unwrap();
    match s
        .objects
        .get(&(k.plural.to_string(), ns.to_string(), name.to_string()))
    {
        Some(o) => reply(200, o.clone()),
        None => not_found(k, name),
    }
}

fn list(sh: &Shared, k: Kind, ns: &str, q: &BTreeMap<String, String>) -> Response {
    let filter = match Filter::from_query(q) {
        Ok(f) => f,
        Err(e) => return reply(400, status(400, "BadRequest", e, None)),
    };
    let s = sh.store.lock().unwrap();
    let mut items: Vec<Value> = s
        .objects
        .iter()
        .filter(|((p, n, _), o)| p == k.plural && n == ns && filter.accepts(o))
        .map(|(_, o)| {
            let mut o = o.clone();
            // Lists of built-in kinds carry apiVersion/kind on the list, not on each item.
            if k.builtin
                && let Some(m) = o.as_object_mut()
            {
                m.remove("apiVersion");
                m.remove("kind");
            }
            o
        })
        .collect();
    let start: usize = match q.get("continue").filter(|c| !c.is_empty()) {
        Some(c) => match c.strip_prefix("offset-").and_then(|n| n.parse().ok()) {
            Some(n) => n,
            None => {
                return reply(
                    400,
                    status(
                        400,
                        "BadRequest",
                        format!("invalid continue token {c:?}"),
                        None,
                    ),
                );
            }
        },
        None => 0,
    };
    let limit = q
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0);
    let total = items.len();
    items = items.into_iter().skip(start).collect();
    let mut meta = json!({"resourceVersion": s.rv.to_string()});
    if let Some(l) = limit
        && items.len() > l
    {
        items.truncate(l);
        meta["continue"] = json!(format!("offset-{}", start + l));
        meta["remainingItemCount"] = json!(total - start - l);
    }
    reply(
        200,
        json!({"kind": format!("{}List", k.kind), "apiVersion": k.api_version, "metadata": meta, "items": items}),
    )
}

fn watch_stream(sh: Arc<Shared>, k: Kind, ns: String, q: BTreeMap<String, String>) -> Response {
    let filter = match Filter::from_query(&q) {
        Ok(f) => f,
        Err(e) => return reply(400, status(400, "BadRequest", e, None)),
    };
    let from: u64 = q
        .get("resourceVersion")
        .and_then(|r| r.parse().ok())
        .unwrap_or(0);
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|b| b == "true");
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(1800);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, Infallible>>(64);
    let mut live = sh.events.subscribe();
    let mut drops = sh.drops.subscribe();
    drops.mark_unchanged();
    // What to send first: everything now (from 0), the history after `from`, or 410.
    let (first, mut last, expired) = {
        let s = sh.store.lock().unwrap();
        if from == 0 {
            let now: Vec<Value> = s
                .objects
                .iter()
                .filter(|((p, n, _), o)| p == k.plural && *n == ns && filter.accepts(o))
                .map(|(_, o)| json!({"type": "ADDED", "object": o}))
                .collect();
            (now, s.rv, false)
        } else if from < s.compacted {
            (vec![], s.rv, true)
        } else {
            let evs = s
                .log
                .iter()
                .filter(|e| {
                    e.rv > from
                        && e.plural == k.plural
                        && e.namespace == ns
                        && filter.accepts(&e.object)
                })
                .map(|e| json!({"type": e.kind, "object": e.object}))
                .collect();
            (evs, s.rv, false)
        }
    };
    let compacted = sh.store.lock().unwrap().compacted;
    tokio::spawn(async move {
        let line = |v: Value| Ok::<_, Infallible>(Bytes::from(format!("{v}\n")));
        if expired {
            let msg = format!(
                "too old resource version: {from} ({})",
                compacted.saturating_sub(1)
            );
            let _ = tx
                .send(line(
                    json!({"type": "ERROR", "object": status(410, "Expired", msg, None)}),
                ))
                .await;
            return;
        }
        for ev in first {
            if tx.send(line(ev)).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::sleep(Duration::from_secs(timeout));
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            // A drop wins over a ready event, so a change made as the connection drops is
            // only seen through the resumed watch.
            tokio::select! {
                biased;
                _ = drops.changed() => return,
                _ = &mut deadline => return,
                _ = tick.tick(), if bookmarks => {
                    let bm = json!({"type": "BOOKMARK", "object": {"kind": k.kind, "apiVersion": k.api_version, "metadata": {"resourceVersion": last.to_string()}}});
                    if tx.send(line(bm)).await.is_err() { return; }
                }
                ev = live.recv() => match ev {
                    Ok(e) => {
                        if e.rv <= last || e.plural != k.plural || e.namespace != ns || !filter.accepts(&e.object) {
                            last = last.max(e.rv);
                            continue;
                        }
                        last = e.rv;
                        if tx.send(line(json!({"type": e.kind, "object": e.object}))).await.is_err() { return; }
                    }
                    // Fell behind the broadcast: end the watch so the client resumes or re-lists.
                    Err(_) => return,
                }
            }
        }
    });
    let stream = tokio_stream_from(rx);
    let mut r = Response::new(Body::from_stream(stream));
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    r
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Bytes, Infallible>>,
) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

fn conflict(k: Kind, name: &str) -> Response {
    reply(
        409,
        status(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {}.{} {name:?}: the object has been modified; please apply your changes to the latest version and try again",
                k.plural,
                k.api_version.split('/').next().unwrap_or("")
            ),
            Some(json!({"name": name, "kind": k.plural})),
        ),
    )
}

fn patch(
    sh: &Shared,
    k: Kind,
    ns: &str,
    name: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let p: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            return reply(
                400,
                status(
                    400,
                    "BadRequest",
                    format!("error decoding patch: {e}"),
                    None,
                ),
            );
        }
    };
    let mut s = sh.store.lock().unwrap();
    let Some(current) = s
        .objects
        .get(&(k.plural.to_string(), ns.to_string(), name.to_string()))
        .cloned()
    else {
        return not_found(k, name);
    };
    if let Some(rv) = p["metadata"]["resourceVersion"].as_str()
        && Some(rv) != current["metadata"]["resourceVersion"].as_str()
    {
        return conflict(k, name);
    }
    let mut obj = current.clone();
    match ct.split(';').next().unwrap_or("").trim() {
        "application/merge-patch+json" => merge_patch(&mut obj, &p),
        "application/strategic-merge-patch+json" if !k.builtin => {
            return reply(415, status(415, "UnsupportedMediaType", "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml".into(), None));
        }
        "application/strategic-merge-patch+json" => {
            if let Err(e) = strategic_patch(&mut obj, &p) {
                return reply(422, status(422, "Invalid", e, None));
            }
        }
        other => {
            return reply(
                415,
                status(
                    415,
                    "UnsupportedMediaType",
                    format!("the fake API server does not implement {other:?} patches"),
                    None,
                ),
            );
        }
    }
    if obj["metadata"]["name"] != current["metadata"]["name"] {
        return reply(
            422,
            status(
                422,
                "Invalid",
                "metadata.name: Invalid value: field is immutable".into(),
                None,
            ),
        );
    }
    reply(200, sh.put(&mut s, k, ns, obj))
}

fn update(sh: &Shared, k: Kind, ns: &str, name: &str, body: &Bytes) -> Response {
    let obj: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            return reply(
                400,
                status(400, "BadRequest", format!("error decoding body: {e}"), None),
            );
        }
    };
    if obj["metadata"]["name"].as_str() != Some(name) {
        return reply(
            400,
            status(
                400,
                "BadRequest",
                "the name of the object does not match the name on the URL".into(),
                None,
            ),
        );
    }
    let mut s = sh.store.lock().unwrap();
    let Some(current) = s
        .objects
        .get(&(k.plural.to_string(), ns.to_string(), name.to_string()))
        .cloned()
    else {
        return not_found(k, name);
    };
    if let Some(rv) = obj["metadata"]["resourceVersion"].as_str()
        && Some(rv) != current["metadata"]["resourceVersion"].as_str()
    {
        return conflict(k, name);
    }
    reply(200, sh.put(&mut s, k, ns, obj))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_and_patches() {
        let labels: Map<String, Value> =
            serde_json::from_value(json!({"app": "users", "version": "blue"})).unwrap();
        let t = |s: &str| matches(&parse_selector(s).unwrap(), &labels);
        assert!(t("app=users,version in (blue, green)"));
        assert!(t("app,!tier"));
        assert!(!t("version!=blue"));
        assert!(!t("version notin (blue)"));
        let mut o = json!({"a": {"b": 1, "c": [1, 2]}, "d": 1});
        merge_patch(&mut o, &json!({"a": {"c": [3]}, "d": null}));
        assert_eq!(o, json!({"a": {"b": 1, "c": [3]}}));
        let mut o = json!({"t": {"x": 1, "y": 2}});
        strategic_patch(&mut o, &json!({"t": {"$patch": "replace", "z": 3}})).unwrap();
        assert_eq!(o, json!({"t": {"z": 3}}));
        assert!(strategic_patch(&mut o, &json!({"t": {"l": [1]}})).is_err());
    }
}
