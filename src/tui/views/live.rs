//! The live panel for the selected route: request rate, 5xx and 4xx ratios, p50/p95/p99
//! with sparklines from the sample's history, stable against canary, and the verdict. A
//! dead metrics source is an error on this panel, never a frozen screen.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Wrap};

use crate::domain::metrics::{HistoryPoint, MetricsFeed, RouteMetrics, Signal, Signals, Verdict};
use crate::tui::app::EnvState;
use crate::tui::theme::Theme;

const SPARKS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// A sparkline of the last `width` points, scaled to their maximum; gaps are blank.
pub fn sparkline(values: &[Option<f64>], width: usize) -> String {
    let tail = &values[values.len().saturating_sub(width)..];
    let max = tail.iter().flatten().copied().fold(0.0_f64, f64::max);
    tail.iter()
        .map(|v| match v {
            None => ' ',
            Some(_) if max <= 0.0 => SPARKS[0],
            Some(v) => {
                let i = ((v / max) * 7.0).round().clamp(0.0, 7.0) as usize;
                SPARKS[i]
            }
        })
        .collect()
}

pub fn rate_text(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}/s")
    } else {
        format!("{v:.1}/s")
    }
}

pub fn ratio_text(v: f64) -> String {
    format!("{:.2}%", v * 100.0)
}

pub fn latency_text(secs: f64) -> String {
    let ms = secs * 1000.0;
    if ms >= 1000.0 {
        format!("{:.2}s", secs)
    } else if ms >= 10.0 {
        format!("{ms:.0}ms")
    } else {
        format!("{ms:.1}ms")
    }
}

/// The symbol a 5xx ratio earns, so it reads without colour (and on a selected row): `✗`
/// above 1%, `!` above 0.1% (as the upstreams panel marks health), none below.
pub fn error_mark(ratio: f64) -> Option<&'static str> {
    if ratio > 0.01 {
        Some("✗")
    } else if ratio > 0.001 {
        Some("!")
    } else {
        None
    }
}

/// A 5xx ratio with its mark: `✗ 18.00%`, `! 0.40%`, `0.05%`.
pub fn error_text(ratio: f64) -> String {
    match error_mark(ratio) {
        Some(m) => format!("{m} {}", ratio_text(ratio)),
        None => ratio_text(ratio),
    }
}

/// The colour a 5xx ratio earns: above 1% bad, above 0.1% a warning.
pub fn error_style(ratio: f64, theme: &Theme) -> Style {
    if ratio > 0.01 {
        theme.bad
    } else if ratio > 0.001 {
        theme.warn
    } else {
        theme.ok
    }
}

/// A signal as text and style: the value, or why there is none.
fn signal<'a>(s: &Signal, fmt: fn(f64) -> String, style: Style, theme: &Theme) -> Span<'a> {
    match s {
        Signal::Value { value } => Span::styled(fmt(*value), style),
        Signal::NoData { .. } => Span::styled("–", theme.dim),
        Signal::Missing { .. } => Span::styled("n/a", theme.dim),
        Signal::Error { .. } => Span::styled("err", theme.bad),
    }
}

fn row<'a>(
    label: &'a str,
    s: &Signal,
    fmt: fn(f64) -> String,
    style: Style,
    series: Vec<Option<f64>>,
    width: usize,
    theme: &Theme,
) -> Line<'a> {
    let value = signal(s, fmt, style, theme);
    let pad = 9usize.saturating_sub(value.content.chars().count());
    let spark_w = width.saturating_sub(6 + 9 + 1);
    Line::from(vec![
        Span::styled(format!("{label:<6}"), theme.dim),
        value,
        Span::raw(" ".repeat(pad + 1)),
        Span::styled(sparkline(&series, spark_w), theme.accent),
    ])
}

fn verdict_line<'a>(r: &RouteMetrics, theme: &Theme) -> Line<'a> {
    let Some(c) = &r.comparison else {
        return Line::from(Span::styled(
            "verdict: one side only (no stable/canary pair)",
            theme.dim,
        ));
    };
    match &c.verdict {
        Verdict::Pass => Line::from(vec![
            Span::styled("✓ canary ok ", theme.ok),
            Span::styled(format!("{} vs {}", c.canary, c.baseline), theme.dim),
        ]),
        Verdict::Fail { reasons } => Line::from(vec![
            Span::styled("✗ canary worse: ", theme.bad),
            Span::styled(reasons.join("; "), theme.base),
        ]),
        Verdict::NotEnoughData { reason } => Line::from(vec![
            Span::styled("… not enough data: ", theme.warn),
            Span::styled(reason.clone(), theme.dim),
        ]),
    }
}

/// Stable against canary, side by side: 5xx ratio and p95 of each.
fn sides_line<'a>(r: &RouteMetrics, theme: &Theme) -> Option<Line<'a>> {
    let c = r.comparison.as_ref()?;
    let mut spans = Vec::new();
    for (i, name) in [&c.baseline, &c.canary].into_iter().enumerate() {
        let u = r.upstream(name)?;
        if i > 0 {
            spans.push(Span::styled(" │ ", theme.dim));
        }
        let short = name
            .strip_prefix(&format!("{}-", r.route))
            .unwrap_or(name)
            .to_string();
        spans.push(Span::styled(format!("{short} "), theme.title));
        let e = &u.signals.error_ratio_5xx;
        let st = e.get().map_or(theme.dim, |v| error_style(v, theme));
        spans.push(signal(e, error_text, st, theme));
        spans.push(Span::styled(" p95 ", theme.dim));
        spans.push(signal(
            &u.signals.latency_p95,
            latency_text,
            theme.base,
            theme,
        ));
    }
    Some(Line::from(spans))
}

fn lines_for<'a>(
    signals: &Signals,
    history: &[HistoryPoint],
    width: usize,
    tall: bool,
    theme: &Theme,
) -> Vec<Line<'a>> {
    let series = |f: fn(&HistoryPoint) -> Option<f64>| history.iter().map(f).collect::<Vec<_>>();
    let e5 = signals.error_ratio_5xx.get();
    let e4 = signals.error_ratio_4xx.get();
    let mut lines = vec![
        row(
            "rate",
            &signals.request_rate,
            rate_text,
            theme.base,
            series(|p| p.request_rate),
            width,
            theme,
        ),
        row(
            "5xx",
            &signals.error_ratio_5xx,
            error_text,
            e5.map_or(theme.dim, |v| error_style(v, theme)),
            series(|p| p.error_ratio_5xx),
            width,
            theme,
        ),
        row(
            "4xx",
            &signals.error_ratio_4xx,
            ratio_text,
            e4.map_or(theme.dim, |_| theme.base),
            series(|p| p.error_ratio_4xx),
            width,
            theme,
        ),
    ];
    if tall {
        type Pick = fn(&HistoryPoint) -> Option<f64>;
        let quantiles: [(&str, &Signal, Pick); 3] = [
            ("p50", &signals.latency_p50, |p| p.latency_p50),
            ("p95", &signals.latency_p95, |p| p.latency_p95),
            ("p99", &signals.latency_p99, |p| p.latency_p99),
        ];
        for (label, s, f) in quantiles {
            lines.push(row(
                label,
                s,
                latency_text,
                theme.base,
                series(f),
                width,
                theme,
            ));
        }
    } else {
        lines.push(Line::from(vec![
            Span::styled("p50 ", theme.dim),
            signal(&signals.latency_p50, latency_text, theme.base, theme),
            Span::styled("  p95 ", theme.dim),
            signal(&signals.latency_p95, latency_text, theme.base, theme),
            Span::styled("  p99 ", theme.dim),
            signal(&signals.latency_p99, latency_text, theme.base, theme),
        ]));
    }
    lines
}

fn feed_lines<'a>(
    feed: &MetricsFeed,
    route: Option<&str>,
    area: Rect,
    theme: &Theme,
) -> (String, Vec<Line<'a>>) {
    let width = usize::from(area.width.saturating_sub(2));
    let tall = area.height >= 12;
    let Some(sample) = &feed.latest else {
        return match &feed.error {
            Some(e) => (
                "live · unavailable".into(),
                vec![
                    Line::from(Span::styled("✖ metrics unavailable", theme.bad)),
                    Line::from(Span::styled(e.message.clone(), theme.base)),
                    Line::from(Span::styled(
                        format!(
                            "{} · {} in a row, retrying",
                            feed.source,
                            super::text::count(
                                e.consecutive_failures as usize,
                                "failure",
                                "failures"
                            )
                        ),
                        theme.dim,
                    )),
                ],
            ),
            None => (
                "live".into(),
                vec![Line::from(Span::styled(
                    format!("waiting for the first sample from {}", feed.source),
                    theme.dim,
                ))],
            ),
        };
    };
    let (title, signals, history, metrics) = match route.and_then(|r| sample.route(r)) {
        Some(r) => (
            format!("live: {}", r.route),
            &r.signals,
            r.history.points().collect::<Vec<_>>(),
            Some(r),
        ),
        None => (
            "live: all routes".to_string(),
            &sample.overall,
            sample.overall_history.points().collect(),
            None,
        ),
    };
    let mut lines = lines_for(signals, &history, width, tall, theme);
    if let Some(r) = metrics {
        if let Some(l) = sides_line(r, theme) {
            lines.push(l);
        }
        lines.push(verdict_line(r, theme));
    } else if let Some(r) = route {
        lines.push(Line::from(Span::styled(
            format!("no traffic recorded for {r} yet"),
            theme.dim,
        )));
    }
    if let Some(e) = &feed.error {
        lines.insert(
            0,
            Line::from(Span::styled(format!("✖ {}", e.message), theme.bad)),
        );
    }
    (title, lines)
}

pub fn draw(
    f: &mut Frame,
    area: Rect,
    env: &EnvState,
    filter: &str,
    now_title: &str,
    theme: &Theme,
) {
    let route = env.selected_route(filter).map(|r| r.name.clone());
    draw_route(f, area, env, route.as_deref(), now_title, theme);
}

/// The live panel for one named route (the walkthrough view shows its runbook's route).
pub fn draw_route(
    f: &mut Frame,
    area: Rect,
    env: &EnvState,
    route: Option<&str>,
    now_title: &str,
    theme: &Theme,
) {
    let (title, lines, border) = match &env.metrics {
        None => (
            "live".to_string(),
            vec![Line::from(Span::styled(
                "metrics: not connected yet",
                theme.dim,
            ))],
            theme.dim,
        ),
        Some(feed) => {
            let (mut title, lines) = feed_lines(feed, route, area, theme);
            let border = if feed.error.is_some() {
                theme.bad
            } else {
                theme.dim
            };
            if feed.latest.is_some() {
                title.push_str(now_title);
                if feed.is_stale() {
                    title.push_str(" · STALE");
                }
            }
            (title, lines, border)
        }
    };
    f.render_widget(
        Paragraph::new(lines)
            .block(
                Block::default()
                    .borders(Borders::ALL)
                    .border_style(border)
                    .title(Span::styled(format!(" {title} "), theme.title)),
            )
            .wrap(Wrap { trim: false }),
        area,
    );
}

/// ` · 2s old`: how old the sample is, for the panel title.
pub fn age_title(env: &EnvState, now: chrono::DateTime<chrono::Utc>) -> String {
    env.metrics
        .as_ref()
        .and_then(|f| f.age_secs(now))
        .map(|a| format!(" · {a:.0}s old"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparklines_scale_to_the_window_and_keep_gaps() {
        assert_eq!(
            sparkline(&[Some(0.0), Some(1.0), None, Some(2.0)], 10),
            "▁▅ █"
        );
        assert_eq!(sparkline(&[Some(1.0), Some(2.0), Some(4.0)], 2), "▅█");
        assert_eq!(sparkline(&[Some(0.0), Some(0.0)], 5), "▁▁");
        assert_eq!(sparkline(&[], 5), "");
    }

    #[test]
    fn numbers_read_like_an_operator_writes_them() {
        assert_eq!(rate_text(12.345), "12.3/s");
        assert_eq!(rate_text(1234.0), "1234/s");
        assert_eq!(ratio_text(0.0123), "1.23%");
        assert_eq!(error_text(0.18), "✗ 18.00%");
        assert_eq!(error_text(0.004), "! 0.40%");
        assert_eq!(error_text(0.001), "0.10%");
        assert_eq!(latency_text(0.0123), "12ms");
        assert_eq!(latency_text(0.0045), "4.5ms");
        assert_eq!(latency_text(1.5), "1.50s");
    }
}
