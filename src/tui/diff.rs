//! Before → after of one revision: what changed between two gateway configs (and their
//! flag documents), in words an operator reads at a glance. Pure: JSON in, lines out.
//! Lines start with `+ ` (added), `- ` (removed) or `~ ` (changed).

use serde_json::{Map, Value};

use super::views::text::count;

/// A revision as the diff reads it: `{"config": GatewayConfig, "flags": flagd doc}`.
pub fn revision_value(config: Value, flags: Option<Value>) -> Value {
    serde_json::json!({ "config": config, "flags": flags })
}

fn compact(v: &Value, max: usize) -> String {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Null => "none".into(),
        other => other.to_string(),
    };
    if s.chars().count() > max {
        let cut: String = s.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    } else {
        s
    }
}

/// `blue 100 / green 0` from a split object.
fn split_text(v: &Value) -> String {
    match v.as_object() {
        Some(m) => m
            .iter()
            .map(|(k, w)| format!("{k} {}", compact(w, 8)))
            .collect::<Vec<_>>()
            .join(" / "),
        None => compact(v, 40),
    }
}

fn by_name(v: Option<&Value>) -> Vec<(String, &Value)> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|r| (r["name"].as_str().unwrap_or("?").to_string(), r))
                .collect()
        })
        .unwrap_or_default()
}

fn fields_changed(before: &Value, after: &Value, skip: &[&str]) -> Vec<String> {
    let empty = Map::new();
    let b = before.as_object().unwrap_or(&empty);
    let a = after.as_object().unwrap_or(&empty);
    let mut keys: Vec<&String> = b.keys().chain(a.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| !skip.contains(&k.as_str()) && b.get(*k) != a.get(*k))
        .map(|k| {
            format!(
                "{k}: {} → {}",
                compact(b.get(k).unwrap_or(&Value::Null), 30),
                compact(a.get(k).unwrap_or(&Value::Null), 30)
            )
        })
        .collect()
}

fn routes(before: &Value, after: &Value, out: &mut Vec<String>) {
    let b = by_name(before.get("routes"));
    let a = by_name(after.get("routes"));
    for (name, r) in &a {
        match b.iter().find(|(n, _)| n == name) {
            None => out.push(format!("+ route {name}: {}", split_text(&r["split"]))),
            Some((_, old)) => {
                if old.get("split") != r.get("split") {
                    out.push(format!(
                        "~ route {name}: {} → {}",
                        split_text(&old["split"]),
                        split_text(&r["split"])
                    ));
                }
                for f in fields_changed(old, r, &["split", "name"]) {
                    out.push(format!("~ route {name} {f}"));
                }
            }
        }
    }
    for (name, _) in &b {
        if !a.iter().any(|(n, _)| n == name) {
            out.push(format!("- route {name}"));
        }
    }
}

fn keyed(before: Option<&Value>, after: Option<&Value>, what: &str, out: &mut Vec<String>) {
    let empty = Map::new();
    let b = before.and_then(Value::as_object).unwrap_or(&empty);
    let a = after.and_then(Value::as_object).unwrap_or(&empty);
    for (k, v) in a {
        match b.get(k) {
            None => out.push(format!("+ {what} {k}")),
            Some(old) if old != v => {
                let changes = fields_changed(old, v, &[]);
                if changes.is_empty() {
                    out.push(format!("~ {what} {k} changed"));
                }
                for c in changes {
                    out.push(format!("~ {what} {k} {c}"));
                }
            }
            Some(_) => {}
        }
    }
    for k in b.keys() {
        if !a.contains_key(k) {
            out.push(format!("- {what} {k}"));
        }
    }
}

/// What revision `after` changed relative to `before` (`None`: it is the first one).
pub fn revision_diff(before: Option<&Value>, after: &Value) -> Vec<String> {
    let cfg = &after["config"];
    let Some(before) = before else {
        return vec![format!(
            "+ first revision: {}, {}, {}",
            count(
                cfg["routes"].as_array().map_or(0, Vec::len),
                "route",
                "routes"
            ),
            count(
                cfg["upstreams"].as_object().map_or(0, Map::len),
                "upstream",
                "upstreams"
            ),
            count(
                after["flags"]["flags"].as_object().map_or(0, Map::len),
                "flag",
                "flags"
            ),
        )];
    };
    let old = &before["config"];
    let mut out = Vec::new();
    routes(old, cfg, &mut out);
    keyed(
        old.get("upstreams"),
        cfg.get("upstreams"),
        "upstream",
        &mut out,
    );
    keyed(
        before["flags"].get("flags"),
        after["flags"].get("flags"),
        "flag",
        &mut out,
    );
    for f in fields_changed(old, cfg, &["routes", "upstreams"]) {
        out.push(format!("~ {f}"));
    }
    if out.is_empty() {
        out.push("no change in routes, upstreams, flags or settings".into());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rev(users: (u32, u32), flag_state: &str, extra_route: bool) -> Value {
        let mut routes = vec![
            json!({"name": "users", "paths": ["/api/users"], "split": {"users-blue": users.0, "users-green": users.1}}),
        ];
        if extra_route {
            routes.push(
                json!({"name": "orders", "paths": ["/api/orders"], "split": {"orders-v1": 100}}),
            );
        }
        revision_value(
            json!({"listen": "127.0.0.1:8080", "routes": routes, "upstreams": {"users-blue": {"targets": ["a"]}, "users-green": {"targets": ["b"]}}}),
            Some(
                json!({"flags": {"new-ui": {"state": flag_state, "defaultVariant": "off", "variants": {"on": true, "off": false}}}}),
            ),
        )
    }

    #[test]
    fn a_flip_reads_as_before_and_after_weights() {
        let d = revision_diff(
            Some(&rev((100, 0), "ENABLED", false)),
            &rev((0, 100), "ENABLED", false),
        );
        assert_eq!(
            d,
            vec!["~ route users: users-blue 100 / users-green 0 → users-blue 0 / users-green 100"]
        );
    }

    #[test]
    fn routes_flags_and_settings_are_each_named() {
        let mut after = rev((100, 0), "DISABLED", true);
        after["config"]["listen"] = json!("127.0.0.1:9090");
        after["config"]["upstreams"]["users-green"]["targets"] = json!(["c"]);
        let d = revision_diff(Some(&rev((100, 0), "ENABLED", false)), &after);
        assert!(
            d.contains(&"+ route orders: orders-v1 100".to_string()),
            "{d:?}"
        );
        assert!(
            d.contains(&"~ flag new-ui state: ENABLED → DISABLED".to_string()),
            "{d:?}"
        );
        assert!(
            d.contains(&"~ upstream users-green targets: [\"b\"] → [\"c\"]".to_string()),
            "{d:?}"
        );
        assert!(
            d.contains(&"~ listen: 127.0.0.1:8080 → 127.0.0.1:9090".to_string()),
            "{d:?}"
        );
        let back = revision_diff(Some(&after), &rev((100, 0), "DISABLED", false));
        assert!(back.contains(&"- route orders".to_string()), "{back:?}");
    }

    #[test]
    fn first_and_unchanged_revisions_say_so() {
        let r = rev((100, 0), "ENABLED", true);
        assert_eq!(
            revision_diff(None, &r),
            vec!["+ first revision: 2 routes, 2 upstreams, 1 flag"]
        );
        assert_eq!(
            revision_diff(Some(&r), &r),
            vec!["no change in routes, upstreams, flags or settings"]
        );
    }
}
