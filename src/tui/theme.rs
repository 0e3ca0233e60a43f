//! Colours, from TOML files: the built-in ones in `themes/` (compiled in), the user's own in
//! `$XDG_CONFIG_HOME/signalbox/themes/`, or any file by path. Every meaning colour carries
//! is also carried by a symbol or a word, so the monochrome theme (and `NO_COLOR`) loses
//! nothing.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use ratatui::style::{Color, Modifier, Style};
use serde::Deserialize;

#[derive(Clone, Debug, PartialEq)]
pub struct Theme {
    pub name: String,
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

/// The built-in themes, as shipped in `themes/`.
pub const BUILTIN: &[(&str, &str)] = &[
    ("dark", include_str!("../../themes/dark.toml")),
    ("light", include_str!("../../themes/light.toml")),
    (
        "high-contrast",
        include_str!("../../themes/high-contrast.toml"),
    ),
    ("monochrome", include_str!("../../themes/monochrome.toml")),
];

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StyleSpec {
    fg: Option<String>,
    bg: Option<String>,
    #[serde(default)]
    bold: bool,
    #[serde(default)]
    dim: bool,
    #[serde(default)]
    italic: bool,
    #[serde(default)]
    underlined: bool,
    #[serde(default)]
    reversed: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ThemeFile {
    name: String,
    base: StyleSpec,
    dim: StyleSpec,
    title: StyleSpec,
    accent: StyleSpec,
    ok: StyleSpec,
    warn: StyleSpec,
    bad: StyleSpec,
    selected: StyleSpec,
    tab_active: StyleSpec,
    badge: StyleSpec,
    bar_canary: StyleSpec,
    bar_stable: StyleSpec,
}

fn colour(field: &str, s: &str) -> Result<Color, String> {
    Color::from_str(s).map_err(|_| {
        format!("{field}: {s:?} is not a colour (a name such as \"red\" or \"darkgray\", or \"#rrggbb\")")
    })
}

impl StyleSpec {
    fn style(&self, field: &str) -> Result<Style, String> {
        let mut st = Style::default();
        if let Some(c) = &self.fg {
            st = st.fg(colour(&format!("{field}.fg"), c)?);
        }
        if let Some(c) = &self.bg {
            st = st.bg(colour(&format!("{field}.bg"), c)?);
        }
        for (on, m) in [
            (self.bold, Modifier::BOLD),
            (self.dim, Modifier::DIM),
            (self.italic, Modifier::ITALIC),
            (self.underlined, Modifier::UNDERLINED),
            (self.reversed, Modifier::REVERSED),
        ] {
            if on {
                st = st.add_modifier(m);
            }
        }
        Ok(st)
    }
}

impl Theme {
    pub fn dark() -> Self {
        Self {
            name: "dark".into(),
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
            name: "monochrome".into(),
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

    /// Parses a theme file's text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, String> {
        let f: ThemeFile = toml::from_str(text).map_err(|e| format!("theme {origin}: {e}"))?;
        let err = |e: String| format!("theme {origin}: {e}");
        Ok(Self {
            name: f.name,
            base: f.base.style("base").map_err(err)?,
            dim: f.dim.style("dim").map_err(err)?,
            title: f.title.style("title").map_err(err)?,
            accent: f.accent.style("accent").map_err(err)?,
            ok: f.ok.style("ok").map_err(err)?,
            warn: f.warn.style("warn").map_err(err)?,
            bad: f.bad.style("bad").map_err(err)?,
            selected: f.selected.style("selected").map_err(err)?,
            tab_active: f.tab_active.style("tab_active").map_err(err)?,
            badge: f.badge.style("badge").map_err(err)?,
            bar_canary: f.bar_canary.style("bar_canary").map_err(err)?,
            bar_stable: f.bar_stable.style("bar_stable").map_err(err)?,
        })
    }

    pub fn load_file(path: &Path) -> Result<Self, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("theme {}: {e}", path.display()))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// The theme to use: monochrome whenever `no_color` (the `NO_COLOR` convention); else
    /// `name` as a path (when it has a `/` or ends in `.toml`), a theme in `user_dir`, or a
    /// built-in one; default dark.
    pub fn select(
        name: Option<&str>,
        no_color: bool,
        user_dir: Option<&Path>,
    ) -> Result<Self, String> {
        if no_color {
            return Ok(Self::monochrome());
        }
        let name = match name.unwrap_or("dark") {
            "default" => "dark",
            "mono" | "none" => "monochrome",
            n => n,
        };
        if name.contains('/') || name.ends_with(".toml") {
            return Self::load_file(Path::new(name));
        }
        if let Some(dir) = user_dir {
            let p = dir.join(format!("{name}.toml"));
            if p.is_file() {
                return Self::load_file(&p);
            }
        }
        match BUILTIN.iter().find(|(n, _)| *n == name) {
            Some((n, text)) => Self::parse(text, &format!("{n} (built in)")),
            None => {
                let known: Vec<&str> = BUILTIN.iter().map(|(n, _)| *n).collect();
                Err(format!(
                    "unknown theme {name:?}; built-in themes: {}; or give a path to a .toml file{}",
                    known.join(", "),
                    user_dir
                        .map(|d| format!(", or put {name}.toml in {}", d.display()))
                        .unwrap_or_default()
                ))
            }
        }
    }
}

/// `$XDG_CONFIG_HOME/signalbox/themes` (or `~/.config/signalbox/themes`).
pub fn user_theme_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .map(|b| b.join("signalbox").join("themes"))
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
        assert_eq!(
            Theme::select(Some("dark"), true, None),
            Ok(Theme::monochrome())
        );
        assert_eq!(Theme::select(None, false, None), Ok(Theme::dark()));
        let e = Theme::select(Some("solarized"), false, None).unwrap_err();
        assert!(e.contains("dark, light, high-contrast, monochrome"), "{e}");
    }

    #[test]
    fn the_shipped_files_are_the_built_in_themes() {
        for (name, _) in BUILTIN {
            let t = Theme::select(Some(name), false, None).unwrap();
            assert_eq!(t.name, *name);
        }
        assert_eq!(
            Theme::select(Some("dark"), false, None).unwrap(),
            Theme::dark()
        );
        assert_eq!(
            Theme::select(Some("monochrome"), false, None).unwrap(),
            Theme::monochrome()
        );
        let light = Theme::select(Some("light"), false, None).unwrap();
        assert_eq!(light.bad.fg, Some(Color::Rgb(0xcf, 0x22, 0x2e)));
    }

    #[test]
    fn user_themes_and_paths_load_and_bad_colours_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let text =
            include_str!("../../themes/dark.toml").replace("name = \"dark\"", "name = \"mine\"");
        std::fs::write(dir.path().join("mine.toml"), &text).unwrap();
        let t = Theme::select(Some("mine"), false, Some(dir.path())).unwrap();
        assert_eq!(t.name, "mine");
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, text.replace("\"cyan\"", "\"cyanish\"")).unwrap();
        let e = Theme::select(path.to_str(), false, None).unwrap_err();
        assert!(e.contains("accent.fg: \"cyanish\" is not a colour"), "{e}");
        let e = Theme::select(Some("/no/such/theme.toml"), false, None).unwrap_err();
        assert!(e.contains("/no/such/theme.toml"), "{e}");
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
