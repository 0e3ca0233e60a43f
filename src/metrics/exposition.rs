//! Prometheus / OpenMetrics text exposition, parsed into a compact, validated form.
//!
//! Lines are tokenised by `prometheus_parse::LineInfo`. Its whole-document parser is not
//! used because it silently skips lines and values it cannot read, and its label parser
//! splits on every `,` and `=`, even inside quoted values; a panel fed from that would
//! show wrong numbers without saying so. Here every sample line must tokenise, carry a
//! float value and well-formed quoted labels, or the whole text is rejected with the line
//! number. A consequence of the tokeniser: metric names with `:` (recording-rule names)
//! and label values containing `}` are reported as malformed lines; signalbox's gateway
//! emits neither.

use std::collections::HashMap;
use std::fmt;

use prometheus_parse::{LineInfo, SampleType};

/// The type a `# TYPE` line declared for a metric family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
    Summary,
    Untyped,
}

/// A label set, sorted by name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Labels(Vec<(String, String)>);

impl Labels {
    pub fn new(mut pairs: Vec<(String, String)>) -> Self {
        pairs.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Self(pairs)
    }

    /// The value of a label; a label that is absent reads as `""`, as in PromQL.
    pub fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }

    pub fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(k, _)| k == name)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl fmt::Display for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{k}={v:?}")?;
        }
        f.write_str("}")
    }
}

/// One sample line.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub labels: Labels,
    pub value: f64,
    /// 1-based line number in the text, for error messages.
    pub line: u32,
}

/// A parsed exposition: samples grouped by sample name (`foo_total`, `foo_bucket`, ...).
#[derive(Clone, Debug, Default)]
pub struct Exposition {
    kinds: HashMap<String, MetricKind>,
    samples: HashMap<String, Vec<Sample>>,
}

/// Why an exposition could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}: `{text}`")]
pub struct ExpositionError {
    pub line: u32,
    pub message: String,
    /// The offending line, shortened.
    pub text: String,
}

impl Exposition {
    /// Samples with this exact name, e.g. `signalbox_requests_total`.
    pub fn samples(&self, name: &str) -> &[Sample] {
        self.samples.get(name).map_or(&[], Vec::as_slice)
    }

    /// The declared kind of the family a sample name belongs to.
    pub fn kind_of(&self, sample_name: &str) -> MetricKind {
        family_kind(&self.kinds, sample_name)
    }

    /// True when the text declared the family or carried any sample of it.
    pub fn has_family(&self, family: &str) -> bool {
        self.kinds.contains_key(family)
            || SUFFIXES
                .iter()
                .chain(std::iter::once(&""))
                .any(|s| self.samples.contains_key(&format!("{family}{s}")))
    }

    pub fn series_count(&self) -> usize {
        self.samples.values().map(Vec::len).sum()
    }
}

const SUFFIXES: [&str; 7] = [
    "_total", "_bucket", "_sum", "_count", "_created", "_gcount", "_gsum",
];

fn family_kind(kinds: &HashMap<String, MetricKind>, sample_name: &str) -> MetricKind {
    if let Some(k) = kinds.get(sample_name) {
        return *k;
    }
    for s in SUFFIXES {
        if let Some(family) = sample_name.strip_suffix(s)
            && let Some(k) = kinds.get(family)
        {
            return *k;
        }
    }
    MetricKind::Untyped
}

/// Parses Prometheus text format 0.0.4 or OpenMetrics 1.0 text.
pub fn parse(text: &str) -> Result<Exposition, ExpositionError> {
    let mut exp = Exposition::default();
    for (idx, raw) in text.lines().enumerate() {
        let line_no = u32::try_from(idx + 1).unwrap_or(u32::MAX);
        let err = |message: String| ExpositionError {
            line: line_no,
            message,
            text: shorten(raw),
        };
        // `name{} 1` is valid, but the tokeniser wants at least one character in braces.
        let owned;
        let line = match raw.find('{') {
            Some(i) if raw[i + 1..].starts_with('}') => {
                owned = format!("{}{}", &raw[..i], &raw[i + 2..]);
                owned.as_str()
            }
            _ => raw,
        };
        match LineInfo::parse(line) {
            LineInfo::Empty | LineInfo::Doc { .. } => {}
            LineInfo::Type {
                metric_name,
                metric_alias,
                sample_type,
            } => {
                // The tokeniser reports a histogram's family as `<name>_bucket` with the
                // plain name as alias; key kinds by the family name.
                let family = metric_alias.unwrap_or(metric_name);
                exp.kinds.insert(family, kind(sample_type));
            }
            LineInfo::Ignored => {
                if !line.trim_start().starts_with('#') {
                    return Err(err("not a valid sample line".into()));
                }
            }
            LineInfo::Sample {
                metric_name,
                labels,
                value,
                timestamp,
            } => {
                let number = parse_float(value)
                    .ok_or_else(|| err(format!("invalid sample value {value:?}")))?;
                let last = match timestamp {
                    // An OpenMetrics exemplar follows the value: `... 5 # {trace_id="x"} 1`.
                    Some("#") => None,
                    Some(ts) => {
                        if parse_float(ts).is_none_or(|t| !t.is_finite()) {
                            return Err(err(format!("invalid timestamp {ts:?}")));
                        }
                        Some(ts)
                    }
                    None => Some(value),
                };
                if let Some(last) = last {
                    let rest = rest_after(line, last).trim_start();
                    if !rest.is_empty() && !rest.starts_with('#') {
                        return Err(err(format!("unexpected text after the sample: {rest:?}")));
                    }
                }
                let labels = match labels {
                    Some(l) => parse_labels(l).map_err(err)?,
                    None => Labels::default(),
                };
                exp.samples
                    .entry(metric_name.to_owned())
                    .or_default()
                    .push(Sample {
                        labels,
                        value: number,
                        line: line_no,
                    });
            }
        }
    }
    Ok(exp)
}

fn kind(t: SampleType) -> MetricKind {
    match t {
        SampleType::Counter => MetricKind::Counter,
        SampleType::Gauge => MetricKind::Gauge,
        SampleType::Histogram => MetricKind::Histogram,
        SampleType::Summary => MetricKind::Summary,
        SampleType::Untyped => MetricKind::Untyped,
    }
}

/// The text after `token`, which must be a sub-slice of `line`.
fn rest_after<'a>(line: &'a str, token: &str) -> &'a str {
    let start = token.as_ptr() as usize;
    let base = line.as_ptr() as usize;
    match start.checked_sub(base) {
        Some(off) if off + token.len() <= line.len() => &line[off + token.len()..],
        _ => "",
    }
}

/// Go's float syntax as Prometheus writes it: `NaN`, `+Inf`, `-Inf`, decimals, exponents.
pub fn parse_float(s: &str) -> Option<f64> {
    match s {
        "NaN" | "nan" => Some(f64::NAN),
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        _ => {
            // Rust also accepts words like "infinity"; Prometheus does not.
            if s.bytes()
                .any(|b| b.is_ascii_alphabetic() && b != b'e' && b != b'E')
            {
                return None;
            }
            s.parse().ok()
        }
    }
}

/// `name="value",name2="value2"` with `\\`, `\"` and `\n` escapes and an optional
/// trailing comma.
fn parse_labels(s: &str) -> Result<Labels, String> {
    let mut pairs = Vec::with_capacity(4);
    let b = s.as_bytes();
    let mut i = 0;
    loop {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if i == b.len() {
            break;
        }
        let start = i;
        while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
            i += 1;
        }
        let name = &s[start..i];
        if name.is_empty() || name.as_bytes()[0].is_ascii_digit() {
            return Err(format!("invalid label name at {:?}", &s[start..]));
        }
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if i == b.len() || b[i] != b'=' {
            return Err(format!("expected `=` after label {name}"));
        }
        i += 1;
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if i == b.len() || b[i] != b'"' {
            return Err(format!("the value of label {name} must be quoted"));
        }
        i += 1;
        let mut value = String::new();
        let mut closed = false;
        let mut seg = i;
        while i < b.len() {
            match b[i] {
                b'"' => {
                    value.push_str(&s[seg..i]);
                    i += 1;
                    closed = true;
                    break;
                }
                b'\\' => {
                    value.push_str(&s[seg..i]);
                    match b.get(i + 1) {
                        Some(b'\\') => value.push('\\'),
                        Some(b'"') => value.push('"'),
                        Some(b'n') => value.push('\n'),
                        _ => return Err(format!("invalid escape in the value of label {name}")),
                    }
                    i += 2;
                    seg = i;
                }
                _ => i += 1,
            }
        }
        if !closed {
            return Err(format!("unterminated value of label {name}"));
        }
        if pairs.iter().any(|(k, _): &(String, String)| k == name) {
            return Err(format!("label {name} appears twice"));
        }
        pairs.push((name.to_owned(), value));
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if i == b.len() {
            break;
        }
        if b[i] != b',' {
            return Err(format!("expected `,` after the value of label {name}"));
        }
        i += 1;
    }
    Ok(Labels::new(pairs))
}

fn shorten(line: &str) -> String {
    const MAX: usize = 120;
    if line.len() <= MAX {
        return line.to_owned();
    }
    let mut end = MAX;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &line[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROM_CLIENT_TEXT: &str = r#"# HELP signalbox_requests Requests handled.
# TYPE signalbox_requests counter
signalbox_requests_total{route="users",upstream="users-blue",method="GET",status_class="2xx"} 10
signalbox_requests_total{route="",upstream="",method="GET",status_class="4xx"} 2
# HELP signalbox_request_duration_seconds Latency.
# TYPE signalbox_request_duration_seconds histogram
signalbox_request_duration_seconds_sum{route="users",upstream="users-blue"} 0.5
signalbox_request_duration_seconds_count{route="users",upstream="users-blue"} 10
signalbox_request_duration_seconds_bucket{le="0.1",route="users",upstream="users-blue"} 9
signalbox_request_duration_seconds_bucket{le="+Inf",route="users",upstream="users-blue"} 10 # {trace_id="abc"} 0.7
# TYPE signalbox_active_connections gauge
signalbox_active_connections 3
# EOF
"#;

    #[test]
    fn parses_prometheus_client_output() {
        let e = parse(PROM_CLIENT_TEXT).unwrap();
        let req = e.samples("signalbox_requests_total");
        assert_eq!(req.len(), 2);
        assert_eq!(req[0].labels.get("route"), "users");
        assert_eq!(req[0].value, 10.0);
        assert_eq!(req[1].labels.get("route"), "");
        assert_eq!(e.kind_of("signalbox_requests_total"), MetricKind::Counter);
        assert_eq!(
            e.kind_of("signalbox_request_duration_seconds_bucket"),
            MetricKind::Histogram
        );
        let b = e.samples("signalbox_request_duration_seconds_bucket");
        assert_eq!(b[1].labels.get("le"), "+Inf");
        assert_eq!(b[1].value, 10.0);
        assert_eq!(e.samples("signalbox_active_connections")[0].value, 3.0);
        assert!(e.has_family("signalbox_request_duration_seconds"));
        assert!(!e.has_family("signalbox_rate_limited"));
    }

    #[test]
    fn label_values_may_hold_commas_equals_and_escapes() {
        let e = parse(r#"m{a="x,y=z",b="q\"uo\\te\n"} 1"#).unwrap();
        let l = &e.samples("m")[0].labels;
        assert_eq!(l.get("a"), "x,y=z");
        assert_eq!(l.get("b"), "q\"uo\\te\n");
    }

    #[test]
    fn special_values_and_timestamps() {
        let e = parse("a NaN\nb +Inf 1700000000000\nc -Inf\nd 1.5e3\ne{} 2\n").unwrap();
        assert!(e.samples("a")[0].value.is_nan());
        assert_eq!(e.samples("b")[0].value, f64::INFINITY);
        assert_eq!(e.samples("c")[0].value, f64::NEG_INFINITY);
        assert_eq!(e.samples("d")[0].value, 1500.0);
        assert_eq!(e.samples("e")[0].value, 2.0);
    }

    #[test]
    fn malformed_text_is_a_clear_error_with_the_line() {
        let cases = [
            ("ok 1\nfoo wtf\n", 2, "invalid sample value"),
            ("foo{a=b} 1", 1, "must be quoted"),
            ("foo{a=\"b} 1", 1, "unterminated value"),
            ("foo{a=\"b\" c=\"d\"} 1", 1, "expected `,`"),
            ("foo{a=\"1\",a=\"2\"} 1", 1, "appears twice"),
            ("foo 1 notatime", 1, "invalid timestamp"),
            ("foo 1 2 3", 1, "unexpected text"),
            ("foo=2", 1, "not a valid sample line"),
            ("\n\n{x=\"1\"} 2", 3, "not a valid sample line"),
            ("foo infinity", 1, "invalid sample value"),
            ("foo{a=\"\\x\"} 1", 1, "invalid escape"),
        ];
        for (text, line, needle) in cases {
            let e = parse(text).expect_err(text);
            assert_eq!(e.line, line, "{text}: {e}");
            assert!(e.to_string().contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn comments_and_blank_lines_are_fine() {
        let e = parse("# just a comment\n\n# UNIT x seconds\nx 1\n# EOF\n").unwrap();
        assert_eq!(e.series_count(), 1);
    }

    #[test]
    fn long_lines_are_shortened_in_errors() {
        let line = format!("foo{{a=\"{}", "é".repeat(200));
        let e = parse(&line).unwrap_err();
        assert!(e.text.chars().count() < 80);
    }
}
