//! Colours. Every meaning colour carries is also carried by a symbol or a word, so the
//! monochrome theme (and `NO_COLOR`) loses nothing.

use ratatui::style::{Color, Modifier, Style};

#[derive(Clone, Debug, PartialEq)]
pub struct Theme {
    pub name: &'static str,
    pub base: Style,
    pub dim: Style,
    pub title: Style,
    pub accent: Style,
    pub ok: Style,
    pub warn: Style,
    pub bad: Style,
    pub selected: Style,
    pub tab_active: Style,
    pub badge: Style,
    pub bar_canary: Style,
    pub bar_stable: Style,
}

impl Theme {
    pub fn dark() -> Self {
        Self {
            name: "dark",
            base: Style::default().fg(Color::Gray),
            dim: Style::default().fg(Color::DarkGray),
            title: Style::default()
                .fg(Color::White)
                .add_modifier(Modifier::BOLD),
            accent: Style::default().fg(Color::Cyan),
            ok: Style::default().fg(Color::Green),
            warn: Style::default().fg(Color::Yellow),
            bad: Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
            selected: Style::default()
                .bg(Color::DarkGray)
                .fg(Color::White)
                .add_modifier(Modifier::BOLD),
            tab_active: Style::default()
                .fg(Color::Black)
                .bg(Color::Cyan)
                .add_modifier(Modifier::BOLD),
            badge: Style::default()
                .fg(Color::Black)
                .bg(Color::Yellow)
                .add_modifier(Modifier::BOLD),
            bar_canary: Style::default().fg(Color::Magenta),
            bar_stable: Style::default().fg(Color::DarkGray),
        }
    }

    /// No colour at all: emphasis by bold, reverse and underline only.
    pub fn monochrome() -> Self {
        let plain = Style::default();
        Self {
            name: "monochrome",
            base: plain,
            dim: plain,
            title: plain.add_modifier(Modifier::BOLD),
            accent: plain.add_modifier(Modifier::BOLD),
            ok: plain,
            warn: plain.add_modifier(Modifier::BOLD),
            bad: plain.add_modifier(Modifier::BOLD),
            selected: plain.add_modifier(Modifier::REVERSED),
            tab_active: plain.add_modifier(Modifier::REVERSED | Modifier::BOLD),
            badge: plain.add_modifier(Modifier::REVERSED | Modifier::BOLD),
            bar_canary: plain,
            bar_stable: plain,
        }
    }

    /// The theme to use: monochrome whenever `no_color` (the `NO_COLOR` convention),
    /// else the named one (default dark).
    pub fn select(name: Option<&str>, no_color: bool) -> Result<Self, String> {
        if no_color {
            return Ok(Self::monochrome());
        }
        match name.unwrap_or("dark") {
            "dark" | "default" => Ok(Self::dark()),
            "monochrome" | "mono" | "none" => Ok(Self::monochrome()),
            other => Err(format!(
                "unknown theme {other:?}; known themes: dark, monochrome"
            )),
        }
    }
}

/// `NO_COLOR` counts when set to anything non-empty (no-color.org).
pub fn no_color_from_env() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_color_wins_and_unknown_names_are_errors() {
        assert_eq!(Theme::select(Some("dark"), true), Ok(Theme::monochrome()));
        assert_eq!(Theme::select(None, false), Ok(Theme::dark()));
        let e = Theme::select(Some("solarized"), false).unwrap_err();
        assert!(e.contains("dark, monochrome"), "{e}");
    }

    #[test]
    fn monochrome_has_no_colours() {
        let m = Theme::monochrome();
        for s in [
            m.base,
            m.dim,
            m.ok,
            m.warn,
            m.bad,
            m.selected,
            m.tab_active,
            m.badge,
        ] {
            assert_eq!(s.fg, None);
            assert_eq!(s.bg, None);
        }
    }
}
