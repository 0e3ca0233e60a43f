//! OpenFeature's flagd evaluator test kit (flagd-testbed), run unchanged against signalbox's
//! flag evaluator.
//!
//! Where the test kit lives (first match wins):
//! 1. `$SIGNALBOX_SHARED_DIR/conformance/flagd-testbed/evaluator`, when the variable is set;
//! 2. `$CARGO_MANIFEST_DIR/../shared/conformance/flagd-testbed/evaluator`, where CI clones
//!    `shared/` beside the repository;
//! 3. `/work/shared/conformance/flagd-testbed/evaluator`, the development machines' copy.
//!
//! A missing test kit, a scenario that fails, or a step with no definition here fails the run.
//! Scenarios tagged `@fractional-v1` are skipped, with a message: they pin flagd's legacy
//! float bucketing, and signalbox implements only the current (v2) integer bucketing, which the
//! `@fractional-v2` scenarios check.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use cucumber::gherkin::{self, GherkinEnv};
use cucumber::{World, given, then, when};
use serde_json::{Map, Value};
use signalbox::flags::{ErrorCode, Evaluation, FlagStore, FlagValue, Reason};

const KIT: &str = "conformance/flagd-testbed/evaluator";
const SKIPPED_TAG: &str = "fractional-v1";

static STORE: OnceLock<FlagStore> = OnceLock::new();
static SKIPPED: AtomicUsize = AtomicUsize::new(0);

fn kit_dir() -> Result<PathBuf, String> {
    if let Some(shared) = std::env::var_os("SIGNALBOX_SHARED_DIR") {
        let dir = Path::new(&shared).join(KIT);
        return if dir.is_dir() {
            Ok(dir)
        } else {
            Err(format!(
                "SIGNALBOX_SHARED_DIR is set, but {} does not exist",
                dir.display()
            ))
        };
    }
    let candidates = [
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared")
            .join(KIT),
        Path::new("/work/shared").join(KIT),
    ];
    candidates
        .iter()
        .find(|dir| dir.is_dir())
        .cloned()
        .ok_or_else(|| {
            let tried: Vec<String> = candidates.iter().map(|d| d.display().to_string()).collect();
            format!(
                "flagd test kit not found (tried {}); set SIGNALBOX_SHARED_DIR",
                tried.join(", ")
            )
        })
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Boolean,
    String,
    Integer,
    Float,
    Object,
}

/// What a typed evaluation produced, with the value back as JSON for comparison.
#[derive(Debug)]
struct Resolved {
    value: Value,
    reason: Reason,
    error_code: Option<ErrorCode>,
    metadata: Map<String, Value>,
}

impl<T: Into<Value>> From<Evaluation<T>> for Resolved {
    fn from(e: Evaluation<T>) -> Self {
        Resolved {
            value: e.value.into(),
            reason: e.reason,
            error_code: e.error_code,
            metadata: e.metadata,
        }
    }
}

#[derive(Debug, Default, World)]
struct Evaluator {
    store: Option<&'static FlagStore>,
    flag: Option<(Kind, String, String)>,
    context: Map<String, Value>,
    resolved: Option<Resolved>,
}

impl Evaluator {
    fn resolved(&self) -> &Resolved {
        self.resolved.as_ref().expect("the flag was not evaluated")
    }

    fn kind(&self) -> Kind {
        self.flag.as_ref().expect("no flag given").0
    }
}

/// Test-kit cells write JSON quotes as `\"`.
fn parse_json(text: &str) -> Value {
    serde_json::from_str(&text.replace("\\\"", "\""))
        .unwrap_or_else(|e| panic!("not JSON: {text}: {e}"))
}

/// A step's literal as the flag's type.
fn typed_literal(kind: Kind, text: &str) -> Value {
    fn parse<T: std::str::FromStr<Err: std::fmt::Display>>(kind: Kind, text: &str) -> T {
        text.parse()
            .unwrap_or_else(|e| panic!("{text:?} is not a {kind:?}: {e}"))
    }
    match kind {
        Kind::Boolean => Value::Bool(parse(kind, text)),
        Kind::String => Value::String(text.to_owned()),
        Kind::Integer => Value::from(parse::<i64>(kind, text)),
        Kind::Float => Value::from(parse::<f64>(kind, text)),
        Kind::Object => parse_json(text),
    }
}

fn kind_named(name: &str) -> Kind {
    match name {
        "Boolean" => Kind::Boolean,
        "String" => Kind::String,
        "Integer" => Kind::Integer,
        "Float" => Kind::Float,
        "Object" => Kind::Object,
        other => panic!("unknown type {other}"),
    }
}

#[given("an evaluator")]
fn an_evaluator(world: &mut Evaluator) {
    world.store = Some(STORE.get().expect("flags are loaded before the run"));
}

#[given(
    regex = r#"^an? (Boolean|String|Integer|Float|Object)-flag with key "(.*)" and a fallback value "(.*)"$"#
)]
fn a_flag(world: &mut Evaluator, kind: String, key: String, fallback: String) {
    world.flag = Some((kind_named(&kind), key, fallback));
}

#[given(regex = r#"^a context containing a key "(.*)", with type "(.*)" and with value "(.*)"$"#)]
fn context_key(world: &mut Evaluator, key: String, kind: String, value: String) {
    let value = typed_literal(kind_named(&kind), &value);
    world.context.insert(key, value);
}

#[given(
    regex = r#"^a context containing a nested property with outer key "(.*)" and inner key "(.*)", with value "(.*)"$"#
)]
fn context_nested(world: &mut Evaluator, outer: String, inner: String, value: String) {
    let mut nested = Map::new();
    nested.insert(inner, Value::String(value));
    world.context.insert(outer, Value::Object(nested));
}

#[given(regex = r#"^a context containing a targeting key with value "(.*)"$"#)]
fn context_targeting_key(world: &mut Evaluator, key: String) {
    world
        .context
        .insert("targetingKey".to_owned(), Value::String(key));
}

#[when("the flag was evaluated with details")]
fn evaluate(world: &mut Evaluator) {
    let store = world.store.expect("no evaluator");
    let (kind, key, fallback) = world.flag.clone().expect("no flag given");
    let ctx = Value::Object(world.context.clone());
    let default = typed_literal(kind, &fallback);
    fn run<T: FlagValue + Into<Value>>(s: &FlagStore, k: &str, c: &Value, d: T) -> Resolved {
        s.resolve(k, c, d).into()
    }
    world.resolved = Some(match kind {
        Kind::Boolean => run(store, &key, &ctx, bool::from_json(&default).unwrap()),
        Kind::String => run(store, &key, &ctx, String::from_json(&default).unwrap()),
        Kind::Integer => run(store, &key, &ctx, i64::from_json(&default).unwrap()),
        Kind::Float => run(store, &key, &ctx, f64::from_json(&default).unwrap()),
        Kind::Object => {
            let default = default.as_object().cloned().expect("object fallback");
            run(store, &key, &ctx, default)
        }
    });
}

#[then(regex = r#"^the resolved details value should be "(.*)"$"#)]
fn value_is(world: &mut Evaluator, expected: String) {
    let expected = typed_literal(world.kind(), &expected);
    assert_eq!(world.resolved().value, expected, "{:?}", world.resolved());
}

#[then(regex = r#"^the reason should be "(.*)"$"#)]
fn reason_is(world: &mut Evaluator, expected: String) {
    assert_eq!(
        world.resolved().reason.as_str(),
        expected,
        "{:?}",
        world.resolved()
    );
}

#[then(regex = r#"^the error-code should be "(.*)"$"#)]
fn error_code_is(world: &mut Evaluator, expected: String) {
    let actual = world.resolved().error_code.map_or("", ErrorCode::as_str);
    assert_eq!(actual, expected, "{:?}", world.resolved());
}

#[then("the resolved metadata should contain")]
fn metadata_contains(world: &mut Evaluator, step: &gherkin::Step) {
    let table = step.table.as_ref().expect("a metadata table");
    for row in table.rows.iter().skip(1) {
        let [key, kind, value] = &row[..] else {
            panic!("expected | key | metadata_type | value |, got {row:?}")
        };
        let expected = typed_literal(kind_named(kind), value);
        assert_eq!(
            world.resolved().metadata.get(key),
            Some(&expected),
            "metadata {key}: {:?}",
            world.resolved()
        );
    }
}

#[then("the resolved metadata is empty")]
fn metadata_empty(world: &mut Evaluator) {
    assert!(
        world.resolved().metadata.is_empty(),
        "{:?}",
        world.resolved()
    );
}

/// The official Gherkin grammar keeps a backslash that precedes anything other than `\`, `|`
/// or `n` in a table cell (the test kit writes `{\"a\": 1}`); the `gherkin` crate rejects it.
/// Escaping such backslashes gives the crate the same cell text the official parsers produce;
/// the files themselves are not touched.
fn official_cell_escapes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        if !line.trim_start().starts_with('|') {
            out.push_str(line);
            continue;
        }
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            out.push(c);
            if c == '\\' {
                match chars.peek() {
                    Some('\\' | '|' | 'n') => out.extend(chars.next()),
                    _ => out.push('\\'),
                }
            }
        }
    }
    out
}

/// cucumber's basic parser, plus [`official_cell_escapes`].
struct KitParser;

impl cucumber::Parser<PathBuf> for KitParser {
    type Cli = cucumber::cli::Empty;
    type Output =
        futures::stream::Iter<std::vec::IntoIter<cucumber::parser::Result<gherkin::Feature>>>;

    fn parse(self, dir: PathBuf, _: Self::Cli) -> Self::Output {
        use cucumber::feature::Ext as _;
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "feature"))
                    .collect()
            })
            .unwrap_or_default();
        paths.sort();
        let features = paths
            .into_iter()
            .map(|path| {
                let text = std::fs::read_to_string(&path).map_err(|source| {
                    gherkin::ParseFileError::Reading {
                        path: path.clone(),
                        source,
                    }
                })?;
                let mut feature =
                    gherkin::Feature::parse(official_cell_escapes(&text), GherkinEnv::default())
                        .map_err(|source| gherkin::ParseFileError::Parsing {
                            path: path.clone(),
                            error: None,
                            source,
                        })?;
                feature.path = Some(path);
                Ok(feature)
            })
            .map(
                |parsed: Result<gherkin::Feature, gherkin::ParseFileError>| {
                    parsed
                        .map_err(|e| cucumber::parser::Error::Parsing(e.into()))
                        .and_then(|f| f.expand_examples().map_err(Into::into))
                },
            )
            .collect::<Vec<_>>();
        futures::stream::iter(features)
    }
}

/// `cargo test NAME -- FLAGS` hands NAME and libtest's flags to every test binary. Like
/// libtest, run only if no name filter is given or one matches this test's name, and ignore the
/// flags (cucumber's own command line would reject them).
fn selected_by_cargo_test_filters() -> bool {
    const TAKES_VALUE: [&str; 6] = [
        "--skip",
        "--test-threads",
        "--color",
        "--format",
        "--logfile",
        "-Z",
    ];
    let mut filters = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if TAKES_VALUE.contains(&arg.as_str()) {
            args.next();
        } else if !arg.starts_with('-') {
            filters.push(arg);
        }
    }
    filters.is_empty()
        || filters
            .iter()
            .any(|f| "flagd_conformance".contains(f.as_str()))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if !selected_by_cargo_test_filters() {
        println!("flagd conformance: not selected by the test name filter");
        return;
    }
    let dir = kit_dir().unwrap_or_else(|e| {
        eprintln!("flagd conformance: {e}");
        std::process::exit(1);
    });
    let flags = dir.join("flags/testkit-flags.json");
    // Lenient, as flagd loads it: the kit has a flag whose $ref names no evaluator and expects
    // PARSE_ERROR when it is evaluated.
    let store = FlagStore::from_file_lenient(&flags).unwrap_or_else(|e| {
        eprintln!("flagd conformance: {e}");
        std::process::exit(1);
    });
    STORE.set(store).expect("loaded once");
    let features = dir.join("gherkin");
    let feature_count = std::fs::read_dir(&features)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "feature"))
                .count()
        })
        .unwrap_or(0);
    if feature_count == 0 {
        eprintln!(
            "flagd conformance: no .feature files in {}",
            features.display()
        );
        std::process::exit(1);
    }
    println!(
        "flagd conformance: {feature_count} feature files in {}",
        features.display()
    );

    let summary = Evaluator::cucumber::<PathBuf>()
        .with_parser(KitParser)
        .fail_on_skipped()
        .with_default_cli()
        .filter_run(features, |_, _, scenario| {
            let skip = scenario.tags.iter().any(|t| t == SKIPPED_TAG);
            if skip {
                SKIPPED.fetch_add(1, Ordering::Relaxed);
            }
            !skip
        })
        .await;
    let skipped = SKIPPED.load(Ordering::Relaxed);
    println!(
        "flagd conformance: skipped {skipped} scenarios tagged @{SKIPPED_TAG}: they check flagd's \
         legacy float bucketing; signalbox implements the current v2 integer bucketing \
         (checked by @fractional-v2)"
    );
    use cucumber::writer::Stats as _;
    let scenarios = summary.scenarios_stats();
    println!(
        "flagd conformance: scenarios: {} passed, {} failed, {} skipped (@{SKIPPED_TAG}); \
         {} parsing errors",
        scenarios.passed,
        scenarios.failed + scenarios.skipped,
        skipped,
        summary.parsing_errors()
    );
    if summary.execution_has_failed() {
        std::process::exit(1);
    }
}
