//! Maps a field path such as `routes[1].split.green` to where it is written in the YAML
//! text, so a semantic error found after parsing still points at a line and column.

use std::collections::HashMap;

use serde_saphyr::granit_parser::{Event, Parser};

/// 1-based (line, column) of every node, keyed by its field path. For a mapping entry the
/// position is that of its key, which is what a person looks for.
pub fn locate_paths(yaml: &str) -> HashMap<String, (usize, usize)> {
    enum Frame {
        Map {
            path: String,
            key: Option<(String, (usize, usize))>,
        },
        Seq {
            path: String,
            idx: usize,
        },
    }

    fn join_key(parent: &str, key: &str) -> String {
        if parent.is_empty() {
            key.to_string()
        } else {
            format!("{parent}.{key}")
        }
    }

    // Where the next value node lives, or None when the node is a mapping key.
    fn value_slot(stack: &[Frame], here: (usize, usize)) -> Option<(String, (usize, usize))> {
        match stack.last() {
            None => Some((String::new(), here)),
            Some(Frame::Map { key: None, .. }) => None,
            Some(Frame::Map {
                path,
                key: Some((k, pos)),
            }) => Some((join_key(path, k), *pos)),
            Some(Frame::Seq { path, idx }) => Some((format!("{path}[{idx}]"), here)),
        }
    }

    fn finish_value(stack: &mut [Frame]) {
        match stack.last_mut() {
            Some(Frame::Map { key, .. }) => *key = None,
            Some(Frame::Seq { idx, .. }) => *idx += 1,
            None => {}
        }
    }

    let mut out = HashMap::new();
    let mut stack: Vec<Frame> = Vec::new();
    for item in Parser::new_from_str(yaml) {
        let Ok((event, span)) = item else { break };
        let here = (span.start.line(), span.start.col() + 1);
        match event {
            Event::Scalar(value, ..) => match value_slot(&stack, here) {
                None => {
                    if let Some(Frame::Map { key, .. }) = stack.last_mut() {
                        *key = Some((value.into_owned(), here));
                    }
                }
                Some((path, pos)) => {
                    out.insert(path, pos);
                    finish_value(&mut stack);
                }
            },
            Event::Alias(..) => {
                if let Some((path, pos)) = value_slot(&stack, here) {
                    out.insert(path, pos);
                    finish_value(&mut stack);
                } else if let Some(Frame::Map { key, .. }) = stack.last_mut() {
                    *key = Some(("*".into(), here));
                }
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                let is_map = matches!(event, Event::MappingStart(..));
                // A collection used as a mapping key is exotic; give it a placeholder name.
                let path = match value_slot(&stack, here) {
                    Some((path, pos)) => {
                        out.insert(path.clone(), pos);
                        path
                    }
                    None => "?".into(),
                };
                stack.push(if is_map {
                    Frame::Map { path, key: None }
                } else {
                    Frame::Seq { path, idx: 0 }
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                let popped = stack.pop();
                let was_key = matches!(popped, Some(Frame::Map { ref path, .. } | Frame::Seq { ref path, .. }) if path == "?");
                if was_key {
                    if let Some(Frame::Map { key, .. }) = stack.last_mut() {
                        *key = Some(("?".into(), here));
                    }
                } else {
                    finish_value(&mut stack);
                }
            }
            _ => {}
        }
    }
    out
}

/// The position of `path`, or of its nearest ancestor that was written down (a missing
/// field is reported where its parent is).
pub fn position_of(map: &HashMap<String, (usize, usize)>, path: &str) -> (usize, usize) {
    let mut p = path.to_string();
    loop {
        if let Some(pos) = map.get(&p) {
            return *pos;
        }
        match p.rfind(['.', '[']) {
            Some(i) => p.truncate(i),
            None => return map.get("").copied().unwrap_or((1, 1)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
listen: 127.0.0.1:8080
upstreams:
  blue: { targets: [127.0.0.1:9001] }
routes:
  - name: users
    split:
      blue: 100
      green: 0
";

    #[test]
    fn finds_keys_and_indexes() {
        let m = locate_paths(DOC);
        assert_eq!(m["listen"], (1, 1));
        assert_eq!(m["upstreams.blue"], (3, 3));
        assert_eq!(m["upstreams.blue.targets[0]"], (3, 21));
        assert_eq!(m["routes[0]"], (5, 5));
        assert_eq!(m["routes[0].name"], (5, 5));
        assert_eq!(m["routes[0].split.green"], (8, 7));
    }

    #[test]
    fn missing_path_falls_back_to_parent() {
        let m = locate_paths(DOC);
        assert_eq!(position_of(&m, "routes[0].split.red"), (6, 5));
        assert_eq!(position_of(&m, "nothing.here"), (1, 1));
    }
}
