//! Property-based fuzzing of every parser that reads input a user or a remote server
//! controls. Each target starts from real, valid documents and applies random mutations
//! (deleted ranges, inserted syntax tokens, duplicated lines, truncation, bit flips),
//! so most cases get past the first byte and into the parser's depths. The property:
//! the parser answers `Ok` or a clear error, never panics, and config errors point at a
//! line inside the input.
//!
//! CI runs `FUZZ_CASES` (default 256) cases per target; run longer by hand with e.g.
//! `FUZZ_CASES=20000 cargo test --release --test fuzz` (see RELIABILITY.md). proptest
//! shrinks a failure to a minimal input and prints it.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// Tokens that mean something to YAML, JSON, TOML or the Prometheus text format.
const TOKENS: &[&str] = &[
    ":",
    ": ",
    "- ",
    "{",
    "}",
    "[",
    "]",
    "\n",
    "  ",
    "\t",
    "\"",
    "'",
    ",",
    "#",
    "&a ",
    "*a",
    "<<: *a",
    "!!binary ",
    "!tag ",
    "~",
    "null",
    "true",
    "1e999",
    "-1",
    "4294967296",
    "18446744073709551616",
    "0x1F",
    "NaN",
    "+Inf",
    "-Inf",
    "%",
    "\\",
    "\\u0000",
    "é",
    "\u{feff}",
    "\u{0}",
    "{}",
    "[]",
    "---\n",
    "...\n",
    "|\n",
    ">\n",
    "=",
    "\"\"\"",
    "le=\"",
    "# TYPE x histogram\n",
    "# HELP ",
    "_bucket{",
    "_sum ",
    "_count ",
    " 1 ",
    "{{",
    "}}",
    "$ref",
    "$evaluators",
    "fractional",
    "0ms",
    "1MiB",
    "99999999999999999999s",
    "/",
    "//",
    "/../",
    "%2e%2e",
];

#[derive(Clone, Debug)]
enum Mutation {
    Delete { at: usize, len: usize },
    Insert { at: usize, token: usize },
    DuplicateLine { at: usize },
    Truncate { at: usize },
    FlipBit { at: usize, bit: u8 },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1usize..40).prop_map(|(at, len)| Mutation::Delete { at, len }),
        (any::<usize>(), 0..TOKENS.len()).prop_map(|(at, token)| Mutation::Insert { at, token }),
        any::<usize>().prop_map(|at| Mutation::DuplicateLine { at }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit { at, bit }),
    ]
}

fn apply(seed: &str, muts: &[Mutation]) -> String {
    let mut b = seed.as_bytes().to_vec();
    for m in muts {
        let n = b.len().max(1);
        match *m {
            Mutation::Delete { at, len } => {
                let at = at % n;
                let end = (at + len).min(b.len());
                if at < end {
                    b.drain(at..end);
                }
            }
            Mutation::Insert { at, token } => {
                let at = at % (b.len() + 1);
                b.splice(at..at, TOKENS[token].bytes());
            }
            Mutation::DuplicateLine { at } => {
                let at = at % n;
                let start = b[..at.min(b.len())]
                    .iter()
                    .rposition(|&c| c == b'\n')
                    .map_or(0, |i| i + 1);
                let end = b[start..]
                    .iter()
                    .position(|&c| c == b'\n')
                    .map_or(b.len(), |i| start + i + 1);
                let line = b[start..end].to_vec();
                b.splice(start..start, line);
            }
            Mutation::Truncate { at } => b.truncate(at % n),
            Mutation::FlipBit { at, bit } => {
                if !b.is_empty() {
                    let i = at % b.len();
                    b[i] ^= 1 << bit;
                }
            }
        }
    }
    String::from_utf8_lossy(&b).into_owned()
}

fn cases() -> u32 {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

/// Runs `check` on mutations of each seed; panics (with proptest's minimal input) on the
/// first failure.
fn fuzz(name: &str, seeds: &[String], check: impl Fn(&str) -> Result<(), String>) {
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (0..seeds.len(), prop::collection::vec(mutation(), 1..8));
    let result = runner.run(&strategy, |(seed, muts)| {
        let input = apply(&seeds[seed], &muts);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&input)));
        match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(TestCaseError::fail(format!("{e}\ninput:\n{input}"))),
            Err(_) => Err(TestCaseError::fail(format!("panicked on input:\n{input}"))),
        }
    });
    if let Err(e) = result {
        panic!("fuzz target {name}: {e}");
    }
    eprintln!("FUZZ {name}: {} cases, no failure", cases());
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn gateway_config_parser() {
    let seeds = vec![
        read("examples/gateway.yaml"),
        read("examples/gateway-local.yaml"),
    ];
    fuzz(
        "gateway-config",
        &seeds,
        |text| match signalbox::gateway::config::parse_str(text, "fuzz.yaml") {
            Ok(_) => Ok(()),
            Err(e) => {
                let lines = text.lines().count().max(1) + 1;
                for issue in &e.0 {
                    if issue.message.trim().is_empty() {
                        return Err(format!("an issue without a message: {issue:?}"));
                    }
                    if issue.line == 0 || issue.line > lines {
                        return Err(format!(
                            "issue at line {} of a {lines}-line input: {issue:?}",
                            issue.line
                        ));
                    }
                }
                if e.0.is_empty() {
                    return Err("an error with no issue in it".into());
                }
                Ok(())
            }
        },
    );
}

#[test]
fn kong_importer() {
    let seeds = vec![read("tests/fixtures/kong/kong.yaml")];
    fuzz(
        "kong-import",
        &seeds,
        |text| match signalbox::gateway::config::kong::import(text) {
            Ok(_) => Ok(()),
            Err(e) if e.to_string().trim().is_empty() => Err("an empty error".into()),
            Err(_) => Ok(()),
        },
    );
}

#[test]
fn flag_file_loader() {
    let seeds = vec![
        read("../shared/conformance/flagd-testbed/evaluator/flags/testkit-flags.json"),
        r#"{"flags": {"a": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off", "targeting": {"fractional": [{"cat": [{"var": "targetingKey"}, "x"]}, ["on", 50], ["off", 50]]}}}}"#.to_string(),
    ];
    fuzz("flag-file", &seeds, |text| {
        let strict = signalbox::flags::FlagStore::from_json(text);
        let lenient = signalbox::flags::FlagStore::from_json_lenient(text);
        if strict.is_ok() && lenient.is_err() {
            return Err("the lenient loader refused what the strict one took".into());
        }
        // Whatever loads must evaluate without panicking.
        if let Ok(store) = lenient {
            let ctx = serde_json::json!({"targetingKey": "user-1", "email": "a@b.c"});
            for key in store.keys().map(str::to_string).collect::<Vec<_>>() {
                let _ = store.evaluate(&key, &ctx);
            }
        }
        Ok(())
    });
}

#[test]
fn exposition_parser() {
    let seeds = vec![
        read("tests/fixtures/metrics/gateway.prom"),
        "# HELP x_total A counter.\n# TYPE x_total counter\nx_total{a=\"b\",c=\"d\\\"e\"} 12 1700000000000\n# TYPE h histogram\nh_bucket{le=\"0.1\"} 1\nh_bucket{le=\"+Inf\"} 3\nh_sum 0.5\nh_count 3\n".to_string(),
    ];
    fuzz("exposition", &seeds, |text| {
        let _ = signalbox::metrics::exposition::parse(text);
        Ok(())
    });
}

#[test]
fn runbook_parser() {
    let seeds = vec![
        read("examples/runbooks/blue-green.yaml"),
        read("examples/runbooks/canary.yaml"),
        read("examples/runbooks/flag-rollout.yaml"),
    ];
    fuzz("runbook", &seeds, |text| {
        match signalbox::walk::runbook::parse_str(text, "fuzz.yaml") {
            Ok(rb) => {
                // A runbook that parses expands and titles its steps without trouble.
                for s in rb.expand("stage") {
                    let _ = s.step.title(&rb.route);
                }
                Ok(())
            }
            Err(e) => {
                let lines = text.lines().count().max(1) + 1;
                if e.0.is_empty() {
                    return Err("an error with no issue in it".into());
                }
                for issue in &e.0 {
                    if issue.message.trim().is_empty() || issue.line == 0 || issue.line > lines {
                        return Err(format!("a bad issue for a {lines}-line input: {issue:?}"));
                    }
                }
                Ok(())
            }
        }
    });
}

/// The lean upstream client's reading of an answer (`gateway::h1`): the head, then the body
/// as its framing says, arriving whole or in two pieces. Beyond not panicking: a body never
/// yields more than its `Content-Length`, never an empty data frame, and decoding ends.
#[test]
fn upstream_answer_parser() {
    use bytes::BytesMut;
    use signalbox::gateway::h1::{Decoded, Framing, decode_body, read_answer};

    fn read(first: &[u8], rest: &[u8]) -> Result<(), String> {
        let mut buf = BytesMut::from(first);
        let mut pending = Some(rest);
        let answer = loop {
            match read_answer(&mut buf, &http::Method::GET) {
                Ok(Some(a)) => break a,
                Ok(None) => match pending.take() {
                    Some(r) => buf.extend_from_slice(r),
                    None => return Ok(()), // cut short: the caller reports it
                },
                Err(_) => return Ok(()), // a clear error
            }
        };
        let mut framing = answer.framing;
        let declared = match framing {
            Framing::Length(n) => Some(n),
            _ => None,
        };
        let mut got = 0u64;
        for _ in 0..100_000 {
            match decode_body(&mut buf, &mut framing) {
                Ok(Decoded::Frame(f)) => {
                    if let Some(d) = f.data_ref() {
                        if d.is_empty() {
                            return Err("an empty data frame".into());
                        }
                        got += d.len() as u64;
                    }
                }
                Ok(Decoded::End) | Err(_) => {
                    return match declared {
                        Some(n) if got > n => Err(format!("{got} bytes for a length of {n}")),
                        _ => Ok(()),
                    };
                }
                Ok(Decoded::NeedMore) => match pending.take() {
                    Some(r) => buf.extend_from_slice(r),
                    None if framing == Framing::UntilClose => framing = Framing::Done,
                    None => return Ok(()),
                },
            }
        }
        Err("decoding did not end".into())
    }

    let seeds = [
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-T: 1\r\n\r\n",
        "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\n",
        "HTTP/1.0 200 OK\r\nServer: x\r\n\r\nuntil the end",
        "HTTP/1.1 404 Not Found\r\nContent-Length: 2, 2\r\nConnection: close\r\n\r\nno",
        "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    ]
    .map(String::from);
    fuzz("upstream answer", &seeds, |text| {
        let b = text.as_bytes();
        for split in [b.len(), b.len() / 3, 2 * b.len() / 3] {
            let (first, rest) = b.split_at(split);
            read(first, rest)?;
        }
        Ok(())
    });
}

/// The gateway's own reading of a client's request head (`gateway::h1_server`): what it
/// serves itself must be HTTP/1.1 in origin form with no body, upgrade or expectation; what
/// it does not must reach hyper byte for byte; and a head arriving in two pieces must be
/// read as the whole one is.
#[test]
fn client_request_parser() {
    use bytes::BytesMut;
    use signalbox::gateway::h1_server::{Parsed, Scratch, read_request};

    const MAX: usize = 8192;
    fn outcome(buf: &mut BytesMut) -> Result<String, String> {
        let before = buf.clone();
        match read_request(buf, MAX, &mut Scratch::default()) {
            Parsed::Request(req, keep_alive) => {
                if req.version() != http::Version::HTTP_11 || !req.uri().path().starts_with('/') {
                    return Err(format!("served {req:?}"));
                }
                for h in ["content-length", "transfer-encoding", "upgrade", "expect"] {
                    if req.headers().contains_key(h) {
                        return Err(format!("served a request with {h}"));
                    }
                }
                if !before.ends_with(buf) || buf.len() >= before.len() {
                    return Err("the rest is not what followed the head".into());
                }
                Ok(format!("{req:?} {keep_alive} rest {:?}", &buf[..]))
            }
            p @ (Parsed::NeedMore | Parsed::HandOff) => {
                if *buf != before {
                    return Err(format!("{p:?} changed the buffer"));
                }
                Ok(format!("{p:?}"))
            }
        }
    }

    let seeds = [
        "GET /a/b?c=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\nX-Request-ID: r1\r\n\r\n",
        "HEAD / HTTP/1.1\r\nConnection: keep-alive, close\r\n\r\nGET /next HTTP/1.1\r\n\r\n",
        "POST /up HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\nhello",
        "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        "GET http://h/x HTTP/1.0\r\nExpect: 100-continue\r\n\r\n",
        "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    ]
    .map(String::from);
    fuzz("client request", &seeds, |text| {
        let b = text.as_bytes();
        let whole = outcome(&mut BytesMut::from(b))?;
        for split in [b.len() / 3, 2 * b.len() / 3] {
            let (first, rest) = b.split_at(split);
            let mut buf = BytesMut::from(first);
            let mut got = outcome(&mut buf)?;
            if got == "NeedMore" {
                buf.extend_from_slice(rest);
                got = outcome(&mut buf)?;
            } else {
                continue; // complete (or handed off) before the split: compared whole
            }
            if got != whole {
                return Err(format!("in two pieces: {got}\nwhole: {whole}"));
            }
        }
        Ok(())
    });
}
