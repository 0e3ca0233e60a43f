//! Text that must fit a number of terminal cells: cut with `…` (so a cut number is visibly
//! cut, never a different number) or word-wrapped. Widths are display cells, as ratatui
//! counts them (wide characters take two).

use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::text::{Line, Span};

const ELLIPSIS: &str = "…";

/// How many cells `s` takes.
pub fn width(s: &str) -> usize {
    Span::raw(s).width()
}

fn char_width(c: char) -> usize {
    width(c.encode_utf8(&mut [0; 4]))
}

/// The longest start of `s` that takes at most `max` cells.
fn prefix(s: &str, max: usize) -> &str {
    let mut used = 0;
    for (i, c) in s.char_indices() {
        used += char_width(c);
        if used > max {
            return &s[..i];
        }
    }
    s
}

/// `s` in at most `max` cells: whole, or cut and ending in `…`.
pub fn fit(s: &str, max: usize) -> String {
    if width(s) <= max {
        return s.to_string();
    }
    if max == 0 {
        return String::new();
    }
    format!("{}{ELLIPSIS}", prefix(s, max - 1))
}

/// A line in at most `max` cells: whole, or cut and ending in `…` (in the style of the
/// span it cut).
pub fn fit_line(line: Line<'_>, max: usize) -> Line<'_> {
    if line.width() <= max {
        return line;
    }
    let mut spans = Vec::new();
    let mut room = max;
    for span in line.spans {
        let w = span.width();
        if w < room {
            room -= w;
            spans.push(span);
            continue;
        }
        // This span reaches the edge (or would leave no room for the `…`).
        if room > 0 {
            let cut = fit(&span.content, room);
            let cut = if width(&cut) == room && !cut.ends_with(ELLIPSIS) {
                format!("{}{ELLIPSIS}", prefix(&cut, room - 1))
            } else {
                cut
            };
            spans.push(Span::styled(cut, span.style));
        }
        break;
    }
    Line::from(spans).style(line.style)
}

/// `s` word-wrapped into lines of at most `max` cells; a word longer than a line is
/// broken.
pub fn wrap(s: &str, max: usize) -> Vec<String> {
    let max = max.max(1);
    let mut lines = Vec::new();
    let mut cur = String::new();
    for word in s.split_whitespace() {
        let sep = usize::from(!cur.is_empty());
        if width(&cur) + sep + width(word) <= max {
            if sep == 1 {
                cur.push(' ');
            }
            cur.push_str(word);
            continue;
        }
        if !cur.is_empty() {
            lines.push(std::mem::take(&mut cur));
        }
        let mut rest = word;
        while width(rest) > max {
            let head = prefix(rest, max);
            // A character wider than the whole line still moves on.
            let head = if head.is_empty() {
                &rest[..rest.chars().next().map_or(0, char::len_utf8)]
            } else {
                head
            };
            lines.push(head.to_string());
            rest = &rest[head.len()..];
        }
        cur.push_str(rest);
    }
    if !cur.is_empty() || lines.is_empty() {
        lines.push(cur);
    }
    lines
}

/// `1 revision`, `2 revisions`: a count with its noun in the right number.
pub fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The widths a `Table` (spacing 1, the 2-cell `▶ ` highlight, no flex) gives `widths` in
/// a block `outer` cells wide with borders, so cells can be cut to fit with `…`.
pub fn table_widths(outer: u16, widths: &[Constraint]) -> Vec<u16> {
    let inner = outer.saturating_sub(2 + 2);
    Layout::horizontal(widths.iter().copied())
        .flex(Flex::Start)
        .spacing(1)
        .split(Rect::new(0, 0, inner, 1))
        .iter()
        .map(|r| r.width)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_cuts_with_an_ellipsis_by_cells() {
        assert_eq!(
            fit("users-blue 0 / users-green 100", 30),
            "users-blue 0 / users-green 100"
        );
        assert_eq!(
            fit("users-blue 0 / users-green 100", 28),
            "users-blue 0 / users-green …"
        );
        assert_eq!(fit("abc", 1), "…");
        assert_eq!(fit("abc", 0), "");
        // Wide characters count two cells.
        assert_eq!(fit("日本語です", 5), "日本…");
        assert_eq!(width(&fit("日本語です", 4)), 3);
    }

    #[test]
    fn fit_line_keeps_styles_and_ends_in_an_ellipsis() {
        use ratatui::style::Style;
        let bad = Style::default().fg(ratatui::style::Color::Red);
        let line = Line::from(vec![Span::raw("5xx "), Span::styled("18.00%", bad)]);
        let cut = fit_line(line.clone(), 8);
        assert_eq!(cut.to_string(), "5xx 18.…");
        assert_eq!(cut.spans[1].style, bad);
        assert_eq!(fit_line(line.clone(), 4).to_string(), "5xx…");
        assert_eq!(fit_line(line.clone(), 10).to_string(), "5xx 18.00%");
    }

    #[test]
    fn counts_agree_with_their_nouns() {
        assert_eq!(count(1, "revision", "revisions"), "1 revision");
        assert_eq!(count(0, "revision", "revisions"), "0 revisions");
        assert_eq!(count(2, "watch", "watches"), "2 watches");
    }

    #[test]
    fn wrap_breaks_at_spaces_and_splits_long_words() {
        assert_eq!(
            wrap("✗ conflict: stage moved from revision 3 to 4", 20),
            vec!["✗ conflict: stage", "moved from revision", "3 to 4"]
        );
        assert_eq!(
            wrap("/tmp/a/very/long/path", 8),
            vec!["/tmp/a/v", "ery/long", "/path"]
        );
        assert_eq!(wrap("", 8), vec![""]);
        for l in wrap("word 日本語日本語日本語 end", 5) {
            assert!(width(&l) <= 5, "{l}");
        }
    }
}
