//! The one table of keys. Dispatch, the help overlay and the hint bar all read it, so a key
//! cannot work without being documented, or be documented without working.

/// A key as the cockpit sees it (converted from the terminal's events in `run`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
    CanaryUp,
    CanaryDown,
    Flip,
    Rollback,
    Rollforward,
}

pub struct Binding {
    pub keys: &'static [Key],
    /// How the key is written in the help overlay and hint bar.
    pub label: &'static str,
    pub action: KeyAction,
    /// Short name for the hint bar.
    pub name: &'static str,
    pub description: &'static str,
    /// Changes an environment; removed in read-only mode.
    pub mutating: bool,
    /// Shown in the hint bar (the rest only in the help overlay).
    pub hint: bool,
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

pub const KEYMAP: &[Binding] = &[
    Binding {
        keys: DIGITS,
        label: "1-9",
        action: KeyAction::EnvByNumber,
        name: "env",
        description: "switch to environment N",
        mutating: false,
        hint: true,
    },
    Binding {
        keys: &[Key::Tab, Key::Right, Key::Char('l')],
        label: "Tab/l",
        action: KeyAction::NextEnv,
        name: "next env",
        description: "next environment",
        mutating: false,
        hint: false,
    },
    Binding {
        keys: &[Key::BackTab, Key::Left, Key::Char('h')],
        label: "S-Tab/h",
        action: KeyAction::PrevEnv,
        name: "prev env",
        description: "previous environment",
        mutating: false,
        hint: false,
    },
    Binding {
        keys: &[Key::Char('j'), Key::Down],
        label: "j/↓",
        action: KeyAction::Down,
        name: "down",
        description: "select the next route",
        mutating: false,
        hint: false,
    },
    Binding {
        keys: &[Key::Char('k'), Key::Up],
        label: "k/↑",
        action: KeyAction::Up,
        name: "up",
        description: "select the previous route",
        mutating: false,
        hint: false,
    },
    Binding {
        keys: &[Key::Char('+'), Key::Char('=')],
        label: "+",
        action: KeyAction::CanaryUp,
        name: "canary+",
        description: "raise the selected route's canary by the env's step",
        mutating: true,
        hint: true,
    },
    Binding {
        keys: &[Key::Char('-')],
        label: "-",
        action: KeyAction::CanaryDown,
        name: "canary-",
        description: "lower the selected route's canary by the env's step",
        mutating: true,
        hint: true,
    },
    Binding {
        keys: &[Key::Char('f')],
        label: "f",
        action: KeyAction::Flip,
        name: "flip",
        description: "flip the selected route to its other side",
        mutating: true,
        hint: true,
    },
    Binding {
        keys: &[Key::Char('r')],
        label: "r",
        action: KeyAction::Rollback,
        name: "rollback",
        description: "roll the environment back to the previous revision",
        mutating: true,
        hint: true,
    },
    Binding {
        keys: &[Key::Char('R')],
        label: "R",
        action: KeyAction::Rollforward,
        name: "rollfwd",
        description: "roll forward (undo the last rollback)",
        mutating: true,
        hint: false,
    },
    Binding {
        keys: &[Key::Char('?')],
        label: "?",
        action: KeyAction::Help,
        name: "help",
        description: "show or hide this help",
        mutating: false,
        hint: true,
    },
    Binding {
        keys: &[Key::Char('q'), Key::Interrupt],
        label: "q",
        action: KeyAction::Quit,
        name: "quit",
        description: "quit",
        mutating: false,
        hint: true,
    },
];

/// The binding a key triggers, if any (read-only filtering is the caller's).
pub fn lookup(key: Key) -> Option<&'static Binding> {
    KEYMAP.iter().find(|b| b.keys.contains(&key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_key_is_bound_twice() {
        let mut seen = Vec::new();
        for b in KEYMAP {
            for k in b.keys {
                assert!(!seen.contains(k), "{k:?} bound twice");
                seen.push(*k);
            }
        }
    }

    #[test]
    fn lookup_finds_the_documented_key() {
        assert_eq!(
            lookup(Key::Char('f')).map(|b| b.action),
            Some(KeyAction::Flip)
        );
        assert_eq!(
            lookup(Key::Char('7')).map(|b| b.action),
            Some(KeyAction::EnvByNumber)
        );
        assert!(lookup(Key::Char('z')).is_none());
    }
}
