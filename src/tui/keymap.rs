//! The one table of keys and commands. Dispatch, the help overlay, the hint bar and the
//! command palette all read it, so a key cannot work without being documented, or be
//! documented without working. The cockpit TOML's `[keys]` table rebinds actions by name.

use std::collections::BTreeMap;

/// A key as the cockpit sees it (converted from the terminal's events in `run`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Key {
    Char(char),
    Enter,
    Esc,
    Up,
    Down,
    Left,
    Right,
    Tab,
    BackTab,
    Backspace,
    /// Ctrl-C.
    Interrupt,
}

impl Key {
    /// Parses a key as written in the `[keys]` table: one character (`"+"`, `"t"`), or a
    /// name (`enter`, `esc`, `up`, `down`, `left`, `right`, `tab`, `backtab`, `backspace`,
    /// `space`, `ctrl-c`).
    pub fn parse(s: &str) -> Result<Key, String> {
        let mut chars = s.chars();
        if let (Some(c), None) = (chars.next(), chars.next()) {
            return Ok(Key::Char(c));
        }
        Ok(match s.to_ascii_lowercase().as_str() {
            "enter" | "return" => Key::Enter,
            "esc" | "escape" => Key::Esc,
            "up" => Key::Up,
            "down" => Key::Down,
            "left" => Key::Left,
            "right" => Key::Right,
            "tab" => Key::Tab,
            "backtab" | "shift-tab" => Key::BackTab,
            "backspace" => Key::Backspace,
            "space" => Key::Char(' '),
            "ctrl-c" => Key::Interrupt,
            _ => {
                return Err(format!(
                    "{s:?} is not a key (write one character, or enter, esc, up, down, left, right, tab, backtab, backspace, space, ctrl-c)"
                ));
            }
        })
    }

    /// How the help overlay writes the key.
    pub fn label(self) -> String {
        match self {
            Key::Char(' ') => "Space".into(),
            Key::Char(c) => c.to_string(),
            Key::Enter => "Enter".into(),
            Key::Esc => "Esc".into(),
            Key::Up => "↑".into(),
            Key::Down => "↓".into(),
            Key::Left => "←".into(),
            Key::Right => "→".into(),
            Key::Tab => "Tab".into(),
            Key::BackTab => "S-Tab".into(),
            Key::Backspace => "Bksp".into(),
            Key::Interrupt => "C-c".into(),
        }
    }
}

/// The screens of the cockpit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    /// One environment: routes, upstreams, live panels.
    Overview,
    /// Every environment side by side.
    Environments,
    /// Revisions of one environment with the diff of the selected one.
    History,
    /// Feature flags of one environment.
    Flags,
    /// The walkthrough (runbook) being stepped through, beside its environment's live panel.
    Walk,
}

impl View {
    pub const ALL: [View; 5] = [
        View::Overview,
        View::Environments,
        View::History,
        View::Flags,
        View::Walk,
    ];

    pub fn name(self) -> &'static str {
        match self {
            View::Overview => "overview",
            View::Environments => "envs",
            View::History => "history",
            View::Flags => "flags",
            View::Walk => "walk",
        }
    }

    pub fn parse(s: &str) -> Option<View> {
        match s {
            "overview" | "o" => Some(View::Overview),
            "envs" | "environments" | "all" => Some(View::Environments),
            "history" | "revisions" => Some(View::History),
            "flags" => Some(View::Flags),
            "walk" | "walkthrough" => Some(View::Walk),
            _ => None,
        }
    }
}

/// What a key does on the main screen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyAction {
    Quit,
    Help,
    EnvByNumber,
    NextEnv,
    PrevEnv,
    Down,
    Up,
    Overview,
    Environments,
    History,
    Flags,
    Palette,
    Filter,
    CanaryUp,
    CanaryDown,
    SetWeight,
    Flip,
    ToggleFlag,
    /// The previous revision; in History, the selected one.
    Rollback,
    Rollforward,
    Fault,
    ClearFault,
    WalkView,
    /// Approve the pause the walkthrough waits at (or accept an inconclusive analysis).
    WalkContinue,
    /// Skip the step the walkthrough stopped at, with a typed reason.
    WalkSkip,
    /// Run the step the walkthrough stopped at again.
    WalkRetry,
    /// Stop the walkthrough and roll it back by its rollback policy.
    WalkAbort,
}

/// Where a binding is offered in the hint bar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every view.
    All,
    /// Views with routes (overview and the side-by-side view).
    Routes,
    History,
    Flags,
    /// Only with a sandbox behind the cockpit.
    Sandbox,
    /// Every view but the walkthrough's (manual rollbacks would fight the walk's engine).
    Manual,
    /// The walkthrough view.
    Walk,
}

impl Scope {
    pub fn offered(self, view: View, sandbox: bool) -> bool {
        match self {
            Scope::All => true,
            Scope::Manual => view != View::Walk,
            Scope::Walk => view == View::Walk,
            Scope::Routes => matches!(view, View::Overview | View::Environments),
            Scope::History => view == View::History,
            Scope::Flags => view == View::Flags,
            Scope::Sandbox => sandbox && matches!(view, View::Overview | View::Environments),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    pub keys: Vec<Key>,
    /// How the key is written in the help overlay and hint bar.
    pub label: String,
    pub action: KeyAction,
    /// The action's name: the `[keys]` table entry and the palette command.
    pub name: &'static str,
    /// Short name for the hint bar.
    pub hint_name: &'static str,
    pub description: &'static str,
    /// Changes an environment; removed in read-only mode.
    pub mutating: bool,
    /// Shown in the hint bar (the rest only in the help overlay).
    pub hint: bool,
    pub scope: Scope,
}

struct Preset {
    action: KeyAction,
    name: &'static str,
    keys: &'static [Key],
    label: &'static str,
    hint_name: &'static str,
    description: &'static str,
    mutating: bool,
    hint: bool,
    scope: Scope,
}

const DIGITS: &[Key] = &[
    Key::Char('1'),
    Key::Char('2'),
    Key::Char('3'),
    Key::Char('4'),
    Key::Char('5'),
    Key::Char('6'),
    Key::Char('7'),
    Key::Char('8'),
    Key::Char('9'),
];

macro_rules! b {
    ($a:ident, $name:literal, $keys:expr, $label:literal, $hint_name:literal, $desc:literal, $mutating:literal, $hint:literal, $scope:ident) => {
        Preset {
            action: KeyAction::$a,
            name: $name,
            keys: $keys,
            label: $label,
            hint_name: $hint_name,
            description: $desc,
            mutating: $mutating,
            hint: $hint,
            scope: Scope::$scope,
        }
    };
}

#[rustfmt::skip]
const DEFAULTS: &[Preset] = &[
    b!(EnvByNumber, "env_by_number", DIGITS, "1-9", "env", "switch to environment N", false, true, All),
    b!(NextEnv, "next_env", &[Key::Tab, Key::Right, Key::Char('l')], "Tab/l", "next env", "next environment", false, false, All),
    b!(PrevEnv, "prev_env", &[Key::BackTab, Key::Left, Key::Char('h')], "S-Tab/h", "prev env", "previous environment", false, false, All),
    b!(Down, "down", &[Key::Char('j'), Key::Down], "j/↓", "down", "select the next row", false, false, All),
    b!(Up, "up", &[Key::Char('k'), Key::Up], "k/↑", "up", "select the previous row", false, false, All),
    b!(Overview, "overview", &[Key::Char('o')], "o", "overview", "view: one environment's routes, upstreams and live panels", false, false, All),
    b!(Environments, "environments", &[Key::Char('a')], "a", "all envs", "view: every environment side by side", false, false, All),
    b!(History, "history", &[Key::Char('H')], "H", "history", "view: revisions and the diff of the selected one", false, false, All),
    b!(Flags, "flags", &[Key::Char('F')], "F", "flags", "view: feature flags", false, false, All),
    b!(Palette, "palette", &[Key::Char(':')], ":", "cmd", "command palette (Tab completes)", false, true, All),
    b!(Filter, "filter", &[Key::Char('/')], "/", "filter", "filter the list (Esc clears)", false, false, All),
    b!(CanaryUp, "canary_up", &[Key::Char('+'), Key::Char('=')], "+", "canary+", "raise the selected route's canary by the env's step", true, true, Routes),
    b!(CanaryDown, "canary_down", &[Key::Char('-')], "-", "canary-", "lower the selected route's canary by the env's step", true, true, Routes),
    b!(SetWeight, "set_weight", &[Key::Char('w')], "w", "weight", "set the selected route's exact canary weight", true, false, Routes),
    b!(Flip, "flip", &[Key::Char('f')], "f", "flip", "flip the selected route to its other side", true, true, Routes),
    b!(ToggleFlag, "toggle_flag", &[Key::Char('t')], "t", "toggle", "turn the selected flag on or off", true, true, Flags),
    b!(WalkView, "walk_view", &[Key::Char('W')], "W", "walk", "view: the walkthrough (start one with :walk PATH)", false, false, All),
    b!(Rollback, "rollback", &[Key::Char('r')], "r", "rollback", "roll back (in History: to the selected revision)", true, true, Manual),
    b!(Rollforward, "rollforward", &[Key::Char('R')], "R", "rollfwd", "roll forward (undo the last rollback)", true, false, Manual),
    b!(Fault, "fault", &[Key::Char('x')], "x", "fault", "sandbox: inject a fault into the selected route's idle side", true, false, Sandbox),
    b!(ClearFault, "clear_fault", &[Key::Char('X')], "X", "clear fault", "sandbox: clear faults of the selected route's upstreams", true, false, Sandbox),
    b!(WalkContinue, "walk_continue", &[Key::Char('c')], "c", "continue", "walkthrough: approve the pause (or accept an inconclusive analysis) and go on", true, true, Walk),
    b!(WalkSkip, "walk_skip", &[Key::Char('s')], "s", "skip", "walkthrough: skip the step it stopped at (asks for a reason, which is audited)", true, true, Walk),
    b!(WalkRetry, "walk_retry", &[Key::Char('e')], "e", "retry", "walkthrough: run the step it stopped at again", true, true, Walk),
    b!(WalkAbort, "walk_abort", &[Key::Char('A')], "A", "abort", "walkthrough: stop and roll back by the runbook's rollback policy (asks first)", true, true, Walk),
    b!(Help, "help", &[Key::Char('?')], "?", "help", "show or hide this help", false, true, All),
    b!(Quit, "quit", &[Key::Char('q'), Key::Interrupt], "q", "quit", "quit", false, true, All),
];

/// The keymap in force: the defaults with the config's overrides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keymap {
    pub bindings: Vec<Binding>,
    /// Problems with the `[keys]` table; each bad entry was skipped.
    pub warnings: Vec<String>,
}

impl Default for Keymap {
    fn default() -> Self {
        Self {
            bindings: DEFAULTS
                .iter()
                .map(|d| Binding {
                    keys: d.keys.to_vec(),
                    label: d.label.to_string(),
                    action: d.action,
                    name: d.name,
                    hint_name: d.hint_name,
                    description: d.description,
                    mutating: d.mutating,
                    hint: d.hint,
                    scope: d.scope,
                })
                .collect(),
            warnings: Vec::new(),
        }
    }
}

pub use crate::control::envfile::KeySpec;

impl Keymap {
    /// The defaults with `overrides` (action name → keys) applied. A bad entry (unknown
    /// action, unparsable key, a key another action already has) is skipped, never fatal:
    /// that action keeps its default keys and the problem lands in `warnings`, so one typo
    /// in the config cannot lock an on-call engineer out of the cockpit.
    pub fn with_overrides(overrides: &BTreeMap<String, KeySpec>) -> Self {
        let mut map = Self::default();
        let mut warnings = Vec::new();
        let mut applied: Vec<&'static str> = Vec::new();
        for (name, spec) in overrides {
            if name == "env_by_number" {
                warnings.push(
                    "keys.env_by_number: the digits 1-9 cannot be rebound (ignored)".to_string(),
                );
                continue;
            }
            let Some(b) = map.bindings.iter_mut().find(|b| b.name == name) else {
                let known: Vec<&str> = DEFAULTS
                    .iter()
                    .map(|d| d.name)
                    .filter(|n| *n != "env_by_number")
                    .collect();
                warnings.push(format!(
                    "keys.{name}: no such action, ignored (known: {})",
                    known.join(", ")
                ));
                continue;
            };
            let texts = match spec {
                KeySpec::One(s) => vec![s.clone()],
                KeySpec::Many(v) => v.clone(),
            };
            if texts.is_empty() {
                warnings.push(format!(
                    "keys.{name}: give at least one key (default {} kept)",
                    b.label
                ));
                continue;
            }
            let parsed: Result<Vec<Key>, String> = texts.iter().map(|t| Key::parse(t)).collect();
            match parsed {
                Ok(keys) => {
                    b.label = keys.iter().map(|k| k.label()).collect::<Vec<_>>().join("/");
                    b.keys = keys;
                    applied.push(b.name);
                }
                Err(e) => warnings.push(format!("keys.{name}: {e} (default {} kept)", b.label)),
            }
        }
        // Conflicts: revert an override that takes a key already held (the later one when
        // both sides were overridden). Defaults never conflict, so this ends.
        loop {
            let mut owner: BTreeMap<Key, usize> = BTreeMap::new();
            let mut clash = None;
            'scan: for (i, b) in map.bindings.iter().enumerate() {
                for k in &b.keys {
                    if let Some(&j) = owner.get(k)
                        && j != i
                    {
                        clash = Some((j, i, *k));
                        break 'scan;
                    }
                    owner.insert(*k, i);
                }
            }
            let Some((first, second, key)) = clash else {
                break;
            };
            let overridden = |i: usize| applied.contains(&map.bindings[i].name);
            let (loser, other) = if overridden(second) {
                (second, first)
            } else {
                (first, second)
            };
            let name = map.bindings[loser].name;
            let Some(d) = DEFAULTS.iter().find(|d| d.name == name) else {
                break;
            };
            warnings.push(format!(
                "keys.{name}: {} is already bound to {}, ignored (default {} kept)",
                key.label(),
                map.bindings[other].name,
                d.label
            ));
            let b = &mut map.bindings[loser];
            b.keys = d.keys.to_vec();
            b.label = d.label.to_string();
            applied.retain(|n| *n != name);
        }
        map.warnings = warnings;
        map
    }

    /// The binding a key triggers, if any (read-only filtering is the caller's).
    pub fn lookup(&self, key: Key) -> Option<&Binding> {
        self.bindings.iter().find(|b| b.keys.contains(&key))
    }

    pub fn by_name(&self, name: &str) -> Option<&Binding> {
        self.bindings.iter().find(|b| b.name == name)
    }

    pub fn binding(&self, action: KeyAction) -> Option<&Binding> {
        self.bindings.iter().find(|b| b.action == action)
    }
}

/// A palette command that takes arguments (every binding is also a command, by name).
pub struct PaletteCommand {
    pub name: &'static str,
    pub usage: &'static str,
    pub description: &'static str,
    pub mutating: bool,
}

pub const COMMANDS: &[PaletteCommand] = &[
    PaletteCommand {
        name: "weight",
        usage: "weight ROUTE PERCENT",
        description: "set a route's canary to an exact percentage",
        mutating: true,
    },
    PaletteCommand {
        name: "flip",
        usage: "flip [ROUTE [UPSTREAM]]",
        description: "send all of a route's traffic to one side",
        mutating: true,
    },
    PaletteCommand {
        name: "flag",
        usage: "flag KEY on|off|VARIANT",
        description: "turn a flag on or off, or set its default variant",
        mutating: true,
    },
    PaletteCommand {
        name: "rollback",
        usage: "rollback [REVISION]",
        description: "roll back to the previous (or a given) revision",
        mutating: true,
    },
    PaletteCommand {
        name: "fault",
        usage: "fault UPSTREAM 5xx PERCENT | latency MS | down | clear",
        description: "sandbox: inject or clear a fault in an upstream's service (clear takes several)",
        mutating: true,
    },
    PaletteCommand {
        name: "walk",
        usage: "walk RUNBOOK [--env NAME] [--resume]",
        description: "step through a release runbook here (Tab completes paths)",
        mutating: true,
    },
    PaletteCommand {
        name: "env",
        usage: "env NAME",
        description: "switch environment",
        mutating: false,
    },
    PaletteCommand {
        name: "view",
        usage: "view overview|envs|history|flags|walk",
        description: "switch view",
        mutating: false,
    },
    PaletteCommand {
        name: "filter",
        usage: "filter [TEXT]",
        description: "filter the lists (no text clears)",
        mutating: false,
    },
];

/// Every name the palette knows: the argument commands, then the bindings.
pub fn command_names(map: &Keymap) -> Vec<&'static str> {
    let mut names: Vec<&'static str> = COMMANDS.iter().map(|c| c.name).collect();
    for b in &map.bindings {
        if b.action != KeyAction::EnvByNumber && !names.contains(&b.name) {
            names.push(b.name);
        }
    }
    names
}

/// Completes `word` against `candidates`: the unique match, else the longest common prefix
/// of all matches (which may be `word` itself). `None` when nothing matches.
pub fn complete<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let matches: Vec<&str> = candidates
        .into_iter()
        .filter(|c| c.starts_with(word))
        .collect();
    let first = *matches.first()?;
    let mut prefix = first.to_string();
    for m in &matches[1..] {
        let common = prefix
            .chars()
            .zip(m.chars())
            .take_while(|(a, b)| a == b)
            .count();
        prefix = prefix.chars().take(common).collect();
    }
    if matches.len() == 1 {
        prefix.push(' ');
    }
    Some(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_key_is_bound_twice_by_default() {
        assert_eq!(Keymap::with_overrides(&BTreeMap::new()), Keymap::default());
    }

    #[test]
    fn lookup_finds_the_documented_key() {
        let m = Keymap::default();
        assert_eq!(
            m.lookup(Key::Char('f')).map(|b| b.action),
            Some(KeyAction::Flip)
        );
        assert_eq!(
            m.lookup(Key::Char('7')).map(|b| b.action),
            Some(KeyAction::EnvByNumber)
        );
        assert!(m.lookup(Key::Char('z')).is_none());
    }

    #[test]
    fn overrides_rebind_by_name_and_relabel() {
        let o: BTreeMap<String, KeySpec> = [
            ("flip".to_string(), KeySpec::One("b".into())),
            (
                "quit".to_string(),
                KeySpec::Many(vec!["Q".into(), "ctrl-c".into()]),
            ),
        ]
        .into();
        let m = Keymap::with_overrides(&o);
        assert!(m.warnings.is_empty(), "{:?}", m.warnings);
        assert_eq!(
            m.lookup(Key::Char('b')).map(|b| b.action),
            Some(KeyAction::Flip)
        );
        assert!(m.lookup(Key::Char('f')).is_none(), "the old key is free");
        assert!(m.lookup(Key::Char('q')).is_none());
        assert_eq!(m.by_name("quit").map(|b| b.label.as_str()), Some("Q/C-c"));
    }

    #[test]
    fn bad_entries_are_warned_about_and_the_good_ones_still_apply() {
        let o: BTreeMap<String, KeySpec> = [
            ("flip".to_string(), KeySpec::One("r".into())),
            ("fly".to_string(), KeySpec::One("y".into())),
            ("help".to_string(), KeySpec::One("f13".into())),
            ("quit".to_string(), KeySpec::One("Q".into())),
            ("env_by_number".to_string(), KeySpec::One("0".into())),
            ("filter".to_string(), KeySpec::Many(vec![])),
        ]
        .into();
        let m = Keymap::with_overrides(&o);
        let w = m.warnings.join("\n");
        assert_eq!(m.warnings.len(), 5, "{w}");
        assert!(
            w.contains("keys.flip: r is already bound to rollback"),
            "{w}"
        );
        assert!(w.contains("keys.fly: no such action"), "{w}");
        assert!(w.contains("\"f13\" is not a key"), "{w}");
        assert!(w.contains("keys.env_by_number"), "{w}");
        assert!(w.contains("keys.filter: give at least one key"), "{w}");
        // The valid override applies; the bad ones keep their defaults.
        assert_eq!(
            m.lookup(Key::Char('Q')).map(|b| b.action),
            Some(KeyAction::Quit)
        );
        assert!(m.lookup(Key::Char('q')).is_none());
        assert_eq!(
            m.lookup(Key::Char('f')).map(|b| b.action),
            Some(KeyAction::Flip)
        );
        assert_eq!(
            m.lookup(Key::Char('r')).map(|b| b.action),
            Some(KeyAction::Rollback)
        );
        assert_eq!(
            m.lookup(Key::Char('?')).map(|b| b.action),
            Some(KeyAction::Help)
        );
        assert_eq!(
            m.lookup(Key::Char('/')).map(|b| b.action),
            Some(KeyAction::Filter)
        );
    }

    #[test]
    fn a_swap_of_two_keys_is_no_conflict_and_a_clash_between_overrides_keeps_the_first() {
        let swap: BTreeMap<String, KeySpec> = [
            ("flip".to_string(), KeySpec::One("r".into())),
            ("rollback".to_string(), KeySpec::One("f".into())),
        ]
        .into();
        let m = Keymap::with_overrides(&swap);
        assert!(m.warnings.is_empty(), "{:?}", m.warnings);
        assert_eq!(
            m.lookup(Key::Char('r')).map(|b| b.action),
            Some(KeyAction::Flip)
        );
        let clash: BTreeMap<String, KeySpec> = [
            ("flip".to_string(), KeySpec::One("z".into())),
            ("toggle_flag".to_string(), KeySpec::One("z".into())),
        ]
        .into();
        let m = Keymap::with_overrides(&clash);
        assert_eq!(m.warnings.len(), 1, "{:?}", m.warnings);
        assert_eq!(
            m.lookup(Key::Char('z')).map(|b| b.action),
            Some(KeyAction::Flip)
        );
        assert_eq!(
            m.lookup(Key::Char('t')).map(|b| b.action),
            Some(KeyAction::ToggleFlag)
        );
    }

    #[test]
    fn completion_extends_to_the_common_prefix() {
        let names = ["rollback", "rollforward", "weight"];
        assert_eq!(complete("w", names), Some("weight ".into()));
        assert_eq!(complete("r", names), Some("roll".into()));
        assert_eq!(complete("z", names), None);
    }

    #[test]
    fn every_command_name_is_unique() {
        let names = command_names(&Keymap::default());
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len());
    }
}
