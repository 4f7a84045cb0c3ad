//! Charts drawn by gemba: one metric over a window, several nodes or
//! processes overlaid, change events as labelled vertical markers (a band
//! when the event lasted). The SVG is the drawing; the PNG is the same
//! SVG rasterized by resvg, for mail and exports. No script, no external
//! resource: a chart works offline and in a mail client.
//!
//! Structure, for anyone styling or testing it: `<g class="axes">` holds
//! `<g class="x-tick">` and `<g class="y-tick">` (a line and a label
//! each); every series is `<path class="series" data-label=...>`; every
//! marker is `<g class="marker" data-kind=... data-at=...>` with a line
//! (or a `rect` band) and a `text` label; the legend is `<g
//! class="legend">`.
//!
//! Why one file: the drawing (axes, lines, markers, legend) and the
//! request that gathers its series and events make one chart; the SVG is
//! only read here.

use std::fmt::Write;

/// One line on a chart.
#[derive(Clone, Debug)]
pub struct Line {
    pub label: String,
    /// (unix seconds, value), oldest first.
    pub points: Vec<(u64, f64)>,
}

/// A change event on a chart.
#[derive(Clone, Debug)]
pub struct Marker {
    pub at_ms: u64,
    pub end_ms: Option<u64>,
    pub kind: String,
    pub label: String,
}

#[derive(Clone, Debug)]
pub struct Chart {
    pub title: String,
    /// The metric's name; `_bytes` metrics get binary units.
    pub metric: String,
    pub since_ms: u64,
    pub until_ms: u64,
    pub width: u32,
    pub height: u32,
    pub lines: Vec<Line>,
    pub markers: Vec<Marker>,
}

/// Line colours, distinguishable and readable on white.
const PALETTE: &[&str] = &[
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2",
    "#7f7f7f", "#bcbd22",
];

fn marker_colour(kind: &str) -> &'static str {
    match kind {
        "deploy" => "#6f42c1",
        "escalation" => "#d62728",
        "puppet" | "chef" => "#b87a00",
        "git" => "#1a7f37",
        _ => "#57606a",
    }
}

/// Escapes text for SVG content and attributes.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c if c.is_control() => o.push(' '),
            c => o.push(c),
        }
    }
    o
}

fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut c: String = s.chars().take(max - 1).collect();
        c.push('…');
        c
    }
}

/// A value as a short label: 1.5k, 20M; bytes as KiB, MiB, GiB.
pub fn short(v: f64, bytes: bool) -> String {
    let (base, units): (f64, &[&str]) = if bytes {
        (1024.0, &["B", "KiB", "MiB", "GiB", "TiB"])
    } else {
        (1000.0, &["", "k", "M", "G", "T"])
    };
    let mut x = v;
    let mut i = 0;
    while x.abs() >= base && i + 1 < units.len() {
        x /= base;
        i += 1;
    }
    let digits = if x.fract().abs() < 1e-9 || x.abs() >= 100.0 {
        0
    } else if x.abs() >= 10.0 {
        1
    } else {
        2
    };
    let mut s = format!("{x:.digits$}");
    if s.contains('.') {
        s = s.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    format!("{s}{}", units[i])
}

/// Tick values from `lo` to `hi`: steps of 1, 2 or 5 × 10^n, about
/// `want` of them.
fn nice_ticks(lo: f64, hi: f64, want: usize) -> Vec<f64> {
    let span = (hi - lo).max(1e-12);
    let raw = span / want.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| span / s <= want as f64)
        .unwrap_or(10.0 * mag);
    let mut out = Vec::new();
    let mut t = (lo / step).ceil() * step;
    while t <= hi + step * 1e-9 && out.len() < 50 {
        out.push(if t.abs() < step * 1e-9 { 0.0 } else { t });
        t += step;
    }
    out
}

/// Value ticks for the axis: round in the unit labels are printed in
/// (bytes: 1, 2, 5 × KiB, MiB, GiB ...).
fn value_ticks(lo: f64, hi: f64, bytes: bool) -> Vec<f64> {
    if !bytes {
        return nice_ticks(lo, hi, 5);
    }
    let mut unit = 1.0;
    while hi.abs().max(lo.abs()) / unit >= 1024.0 && unit < 1024f64.powi(4) {
        unit *= 1024.0;
    }
    nice_ticks(lo / unit, hi / unit, 5)
        .into_iter()
        .map(|t| t * unit)
        .collect()
}

/// A time step for the x axis: at most `want` ticks over `span_s`.
fn time_step(span_s: u64, want: u64) -> u64 {
    const STEPS: &[u64] = &[
        60, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800, 2_592_000,
    ];
    STEPS
        .iter()
        .copied()
        .find(|s| span_s / s <= want)
        .unwrap_or(2_592_000)
}

fn time_label(ms: u64, span_s: u64) -> String {
    let Ok(t) = jiff::Timestamp::from_millisecond(ms as i64) else {
        return String::new();
    };
    if span_s <= 86_400 {
        t.strftime("%H:%M").to_string()
    } else if span_s <= 7 * 86_400 {
        t.strftime("%m-%d %H:%M").to_string()
    } else {
        t.strftime("%m-%d").to_string()
    }
}

const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 34.0;
const BOTTOM: f64 = 40.0;
/// Widths of a character, generous for DejaVu Sans: the title (13 px,
/// bold) and the legend (11 px).
const TITLE_CHAR: f64 = 8.0;
const LEGEND_CHAR: f64 = 6.8;
/// Legend rows below the title at most; what does not fit is counted.
const LEGEND_ROWS: usize = 2;
/// Markers closer than this (px) are drawn as one group.
const MARKER_GAP: f64 = 12.0;

/// A box on the chart, in px from its top left corner.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Area {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
}

impl Area {
    /// Whether two boxes share any area.
    pub fn overlaps(&self, o: &Area) -> bool {
        self.x < o.x + o.w && o.x < self.x + self.w && self.y < o.y + o.h && o.y < self.y + self.h
    }
}

/// Where the parts of a chart go, worked out before drawing so that they
/// never collide at any size: the title (cut to the width), the legend
/// (beside the title when both fit, else in rows below it), the plot.
#[derive(Clone, Debug)]
pub struct Layout {
    pub title: Area,
    pub title_text: String,
    /// One box per legend entry drawn: the line it names (`None`: the
    /// "+n more" entry), its text.
    pub legend: Vec<(Area, Option<usize>, String)>,
    pub plot: Area,
}

impl Chart {
    /// The chart's layout at its size.
    pub fn layout(&self) -> Layout {
        let w = self.width.clamp(200, 4000) as f64;
        let h = self.height.clamp(120, 3000) as f64;
        let room = w - LEFT - RIGHT;
        let title_text = cut(&self.title, ((room / TITLE_CHAR) as usize).max(8));
        let title = Area {
            x: LEFT,
            y: 5.0,
            w: title_text.chars().count() as f64 * TITLE_CHAR,
            h: 18.0,
        };
        let entries: Vec<(usize, String)> = self
            .lines
            .iter()
            .enumerate()
            .map(|(i, l)| (i, cut(&l.label, 32)))
            .collect();
        let width_of = |t: &str| 16.0 + LEGEND_CHAR * t.chars().count() as f64;
        let total: f64 = entries.iter().map(|(_, t)| width_of(t) + 10.0).sum();
        let mut legend = Vec::new();
        let mut top = TOP;
        if total <= room - title.w - 16.0 {
            // Beside the title, right-aligned.
            let mut x = w - RIGHT - total + 10.0;
            for (i, t) in entries {
                let bw = width_of(&t);
                legend.push((
                    Area {
                        x,
                        y: 7.0,
                        w: bw,
                        h: 14.0,
                    },
                    Some(i),
                    t,
                ));
                x += bw + 10.0;
            }
        } else if !entries.is_empty() {
            // In rows under the title; what does not fit is counted in a
            // "+n more" entry at the end of the last row.
            let n = entries.len();
            let (mut x, mut row) = (LEFT, 0usize);
            for (i, t) in entries {
                let bw = width_of(&t);
                if x + bw > w - RIGHT && x > LEFT {
                    row += 1;
                    x = LEFT;
                }
                if row >= LEGEND_ROWS {
                    break;
                }
                let y = 26.0 + row as f64 * 15.0;
                legend.push((
                    Area {
                        x,
                        y,
                        w: bw,
                        h: 14.0,
                    },
                    Some(i),
                    t,
                ));
                x += bw + 10.0;
            }
            if legend.len() < n {
                loop {
                    let more = format!("+{} more", n - legend.len());
                    let mw = width_of(&more);
                    let (mx, my) = match legend.last() {
                        Some((a, ..)) => (a.x + a.w + 10.0, a.y),
                        None => (LEFT, 26.0),
                    };
                    if mx + mw <= w - RIGHT || legend.is_empty() {
                        legend.push((
                            Area {
                                x: mx,
                                y: my,
                                w: mw,
                                h: 14.0,
                            },
                            None,
                            more,
                        ));
                        break;
                    }
                    legend.pop();
                }
            }
            let rows = legend.iter().map(|(a, ..)| a.y).fold(0.0, f64::max);
            top = rows + 14.0 + 8.0;
        }
        Layout {
            title,
            title_text,
            legend,
            plot: Area {
                x: LEFT,
                y: top,
                w: room,
                h: (h - BOTTOM - top).max(20.0),
            },
        }
    }

    fn bytes(&self) -> bool {
        self.metric.ends_with("_bytes")
    }

    /// The value range drawn: the data's, from 0 when it never goes
    /// below, and never empty.
    fn range(&self) -> (f64, f64) {
        let mut lo = f64::INFINITY;
        let mut hi = f64::NEG_INFINITY;
        for l in &self.lines {
            for (_, v) in &l.points {
                lo = lo.min(*v);
                hi = hi.max(*v);
            }
        }
        if !lo.is_finite() {
            return (0.0, 1.0);
        }
        if lo >= 0.0 {
            lo = 0.0;
        }
        if hi - lo < 1e-9 {
            hi = lo + 1.0;
        }
        let ticks = value_ticks(lo, hi, self.bytes());
        let step = if ticks.len() > 1 {
            ticks[1] - ticks[0]
        } else {
            1.0
        };
        ((lo / step).floor() * step, (hi / step).ceil() * step)
    }

    /// The chart as an SVG document.
    pub fn svg(&self) -> String {
        let w = self.width.clamp(200, 4000) as f64;
        let h = self.height.clamp(120, 3000) as f64;
        let layout = self.layout();
        let (x0, x1) = (LEFT, w - RIGHT);
        let (y0, y1) = (layout.plot.y, layout.plot.y + layout.plot.h);
        let t0 = self.since_ms as f64;
        let t1 = (self.until_ms.max(self.since_ms + 1)) as f64;
        let x_of = |ms: f64| x0 + (ms - t0) / (t1 - t0) * (x1 - x0);
        let (lo, hi) = self.range();
        let y_of = |v: f64| y1 - (v - lo) / (hi - lo) * (y1 - y0);
        let bytes = self.bytes();
        let mut s = String::new();
        let _ = write!(
            s,
            r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="DejaVu Sans, Verdana, sans-serif" font-size="11"><rect width="{w}" height="{h}" fill="#ffffff"/><text class="title" x="{x0}" y="18" font-size="13" font-weight="bold" fill="#1f2328">{}</text>"##,
            esc(&layout.title_text)
        );
        // Axes: horizontal grid lines with value labels, time ticks.
        s.push_str(r#"<g class="axes">"#);
        for v in value_ticks(lo, hi, bytes) {
            let y = y_of(v);
            let _ = write!(
                s,
                r##"<g class="y-tick"><line x1="{x0}" x2="{x1}" y1="{y:.1}" y2="{y:.1}" stroke="#eaeef2"/><text x="{:.1}" y="{:.1}" text-anchor="end" fill="#57606a">{}</text></g>"##,
                x0 - 6.0,
                y + 4.0,
                esc(&short(v, bytes))
            );
        }
        let span_s = (self.until_ms.saturating_sub(self.since_ms)) / 1000;
        let step = time_step(span_s, ((x1 - x0) / 90.0).max(2.0) as u64);
        let mut tick = (self.since_ms / 1000).div_ceil(step) * step;
        while tick * 1000 <= self.until_ms {
            let x = x_of((tick * 1000) as f64);
            let _ = write!(
                s,
                r##"<g class="x-tick"><line x1="{x:.1}" x2="{x:.1}" y1="{y1}" y2="{:.1}" stroke="#57606a"/><text x="{x:.1}" y="{:.1}" text-anchor="middle" fill="#57606a">{}</text></g>"##,
                y1 + 4.0,
                y1 + 16.0,
                time_label(tick * 1000, span_s)
            );
            tick += step;
        }
        let _ = write!(
            s,
            r##"<line x1="{x0}" x2="{x1}" y1="{y1}" y2="{y1}" stroke="#57606a"/><line x1="{x0}" x2="{x0}" y1="{y0}" y2="{y1}" stroke="#57606a"/><text x="{x1}" y="{:.1}" text-anchor="end" fill="#57606a">UTC</text></g>"##,
            h - 6.0
        );
        // Markers behind the lines, in groups: markers closer than
        // MARKER_GAP px are one group, drawn once ("3 events") with every
        // one in its tooltip, so that they never print over each other.
        // Labels run down the plot and are cut to its height.
        let label_chars = (((y1 - y0) - 8.0) / 6.6).max(4.0) as usize;
        let shown: Vec<&Marker> = self
            .markers
            .iter()
            .filter(|m| m.at_ms <= self.until_ms && m.end_ms.unwrap_or(m.at_ms) >= self.since_ms)
            .collect();
        let mut groups: Vec<Vec<&Marker>> = Vec::new();
        let mut group_x = f64::NEG_INFINITY;
        for m in shown {
            let x = x_of(m.at_ms.max(self.since_ms) as f64);
            match groups.last_mut() {
                Some(g) if x - group_x < MARKER_GAP => g.push(m),
                _ => {
                    groups.push(vec![m]);
                    group_x = x;
                }
            }
        }
        for g in groups {
            let m = g[0];
            let colour = if g.iter().all(|o| o.kind == m.kind) {
                marker_colour(&m.kind)
            } else {
                marker_colour("")
            };
            let x = x_of(m.at_ms.max(self.since_ms) as f64);
            let tooltip: Vec<String> = g
                .iter()
                .map(|o| format!("{} {}", crate::event::format_ms(o.at_ms), o.label))
                .collect();
            let _ = write!(
                s,
                r#"<g class="marker" data-kind="{}" data-at="{}" data-count="{}"><title>{}</title>"#,
                esc(&m.kind),
                m.at_ms,
                g.len(),
                esc(&tooltip.join("\n"))
            );
            if let Some(end) = g
                .iter()
                .filter_map(|o| o.end_ms)
                .max()
                .filter(|e| *e > m.at_ms)
            {
                let xe = x_of(end.min(self.until_ms) as f64);
                let _ = write!(
                    s,
                    r#"<rect x="{x:.1}" y="{y0}" width="{:.1}" height="{:.1}" fill="{colour}" fill-opacity="0.12"/>"#,
                    (xe - x).max(1.0),
                    y1 - y0
                );
            }
            let label = if g.len() == 1 {
                m.label.clone()
            } else {
                format!("{} events", g.len())
            };
            // The label reads downwards just right of the line, on a
            // white halo so that lines under it do not hide it.
            let _ = write!(
                s,
                r##"<line x1="{x:.1}" x2="{x:.1}" y1="{y0}" y2="{y1}" stroke="{colour}" stroke-width="1.5" stroke-dasharray="4 3"/><text x="0" y="0" fill="{colour}" stroke="#ffffff" stroke-width="3" paint-order="stroke" transform="translate({:.1} {:.1}) rotate(90)">{}</text></g>"##,
                x + 3.0,
                y0 + 4.0,
                esc(&cut(&label, label_chars))
            );
        }
        // Lines: one point per pixel column at most (the column's mean),
        // broken where samples are missing.
        let columns = (x1 - x0).max(1.0) as usize;
        for (i, l) in self.lines.iter().enumerate() {
            let colour = PALETTE[i % PALETTE.len()];
            let mut d = String::new();
            let mut gap_s = typical_gap(&l.points) * 3;
            if gap_s == 0 {
                gap_s = u64::MAX;
            }
            let mut last_t: Option<u64> = None;
            let mut col: Option<(usize, f64, usize, u64)> = None;
            let emit = |d: &mut String, c: (usize, f64, usize, u64), pen_up: bool| {
                let x = x0 + (c.0 as f64 + 0.5) * (x1 - x0) / columns as f64;
                let y = y_of(c.1 / c.2 as f64);
                let _ = write!(d, "{}{x:.1} {y:.1}", if pen_up { "M" } else { " L" });
            };
            let mut pen_up = true;
            for &(t, v) in &l.points {
                let ms = t * 1000;
                if ms < self.since_ms || ms > self.until_ms || !v.is_finite() {
                    continue;
                }
                let c = (((ms as f64 - t0) / (t1 - t0)) * columns as f64) as usize;
                let c = c.min(columns - 1);
                let broken = last_t.is_some_and(|p| t.saturating_sub(p) > gap_s);
                match &mut col {
                    Some(cur) if cur.0 == c && !broken => {
                        cur.1 += v;
                        cur.2 += 1;
                    }
                    _ => {
                        if let Some(done) = col.take() {
                            emit(&mut d, done, pen_up);
                            pen_up = false;
                        }
                        if broken {
                            pen_up = true;
                        }
                        col = Some((c, v, 1, t));
                    }
                }
                last_t = Some(t);
            }
            if let Some(done) = col {
                emit(&mut d, done, pen_up);
            }
            let _ = write!(
                s,
                r#"<path class="series" data-label="{}" d="{d}" fill="none" stroke="{colour}" stroke-width="1.8" stroke-linejoin="round"/>"#,
                esc(&l.label)
            );
        }
        // Legend: where the layout put it.
        s.push_str(r#"<g class="legend">"#);
        for (a, i, label) in &layout.legend {
            let colour = match i {
                Some(i) => PALETTE[i % PALETTE.len()],
                None => "#57606a",
            };
            let _ = write!(
                s,
                r#"<rect x="{:.1}" y="{:.1}" width="10" height="10" fill="{colour}"/><text x="{:.1}" y="{:.1}" fill="{colour}">{}</text>"#,
                a.x,
                a.y + 2.0,
                a.x + 14.0,
                a.y + 11.0,
                esc(label)
            );
        }
        s.push_str("</g>");
        if self.lines.iter().all(|l| l.points.is_empty()) {
            let _ = write!(
                s,
                r##"<text class="empty" x="{:.1}" y="{:.1}" text-anchor="middle" fill="#57606a">no samples in this window</text>"##,
                (x0 + x1) / 2.0,
                (y0 + y1) / 2.0
            );
        }
        s.push_str("</svg>");
        s
    }

    /// The chart as a PNG (the SVG rasterized; text in the machine's
    /// fonts, DejaVu Sans where installed).
    pub fn png(&self) -> Result<Vec<u8>, String> {
        svg_to_png(&self.svg())
    }
}

/// The most common spacing of a series' samples, in seconds.
fn typical_gap(points: &[(u64, f64)]) -> u64 {
    let mut gaps: Vec<u64> = points
        .windows(2)
        .map(|w| w[1].0.saturating_sub(w[0].0))
        .filter(|g| *g > 0)
        .collect();
    if gaps.is_empty() {
        return 0;
    }
    gaps.sort_unstable();
    gaps[gaps.len() / 2]
}

fn fonts() -> std::sync::Arc<resvg::usvg::fontdb::Database> {
    static FONTS: std::sync::OnceLock<std::sync::Arc<resvg::usvg::fontdb::Database>> =
        std::sync::OnceLock::new();
    FONTS
        .get_or_init(|| {
            let mut system = resvg::usvg::fontdb::Database::new();
            system.load_system_fonts();
            // Charts use one family. Faces of the system database are read
            // from their files each time text is laid out; the chosen
            // family's files are read into memory once instead.
            let wanted = ["DejaVu Sans", "Verdana", "Liberation Sans", "Noto Sans"];
            let Some(family) = wanted.iter().find(|w| {
                system
                    .faces()
                    .any(|f| f.families.iter().any(|(n, _)| n == *w))
            }) else {
                return std::sync::Arc::new(system);
            };
            let mut db = resvg::usvg::fontdb::Database::new();
            let mut read = std::collections::HashSet::new();
            for f in system.faces() {
                if !f.families.iter().any(|(n, _)| n == family) {
                    continue;
                }
                if let resvg::usvg::fontdb::Source::File(path) = &f.source {
                    if read.insert(path.clone()) {
                        if let Ok(data) = std::fs::read(path) {
                            db.load_font_data(data);
                        }
                    }
                }
            }
            db.set_sans_serif_family(*family);
            std::sync::Arc::new(db)
        })
        .clone()
}

/// Time spent in each step of [`svg_to_png`] (parse and lay out text,
/// render, encode), for the benchmark.
pub fn png_steps(svg: &str) -> Result<[std::time::Duration; 3], String> {
    let t = std::time::Instant::now();
    let opt = resvg::usvg::Options {
        fontdb: fonts(),
        ..Default::default()
    };
    let tree = resvg::usvg::Tree::from_str(svg, &opt).map_err(|e| format!("bad SVG: {e}"))?;
    let parse = t.elapsed();
    let t = std::time::Instant::now();
    let size = tree.size().to_int_size();
    let mut pixmap = resvg::tiny_skia::Pixmap::new(size.width(), size.height())
        .ok_or("the chart has no size")?;
    resvg::render(
        &tree,
        resvg::tiny_skia::Transform::default(),
        &mut pixmap.as_mut(),
    );
    let render = t.elapsed();
    let t = std::time::Instant::now();
    pixmap
        .encode_png()
        .map_err(|e| format!("cannot encode PNG: {e}"))?;
    Ok([parse, render, t.elapsed()])
}

/// Rasterizes an SVG document gemba drew.
pub fn svg_to_png(svg: &str) -> Result<Vec<u8>, String> {
    let opt = resvg::usvg::Options {
        fontdb: fonts(),
        ..Default::default()
    };
    let tree = resvg::usvg::Tree::from_str(svg, &opt).map_err(|e| format!("bad SVG: {e}"))?;
    let size = tree.size().to_int_size();
    let mut pixmap = resvg::tiny_skia::Pixmap::new(size.width(), size.height())
        .ok_or("the chart has no size")?;
    resvg::render(
        &tree,
        resvg::tiny_skia::Transform::default(),
        &mut pixmap.as_mut(),
    );
    pixmap
        .encode_png()
        .map_err(|e| format!("cannot encode PNG: {e}"))
}

/// What a chart shows.
#[derive(Clone, Debug)]
pub struct Request {
    pub nodes: Vec<String>,
    pub processes: Vec<String>,
    pub metric: String,
    pub since_ms: u64,
    pub until_ms: u64,
    pub width: u32,
    pub height: u32,
    /// Event kinds drawn as markers; `None`: deploys, git pushes, notes
    /// and the escalation steps that ran (restarts and the like).
    pub events: Option<Vec<String>>,
    /// Only events with every one of these tags.
    pub tags: Vec<String>,
    /// Start the window where the data starts when it fills less than
    /// its last three quarters (a default window, not one a person chose).
    pub fit: bool,
}

/// The chart of `found` series (see `series::select`) with the change
/// events of the window as markers. Events tagged with a host show only
/// on charts that include that host.
/// A marker's label: what changed, without the scope an escalation's
/// event starts with (`node:nyc-1: `, gemba's own prefix; the chart says
/// which node it is about), so that the step fits.
fn marker_label(e: &gemba_store::EventRow) -> String {
    let scope = e.tags.iter().find_map(|t| t.strip_prefix("scope="));
    match scope {
        Some(sc) if e.kind == "escalation" => {
            let scope = sc.replacen('.', ":", 1);
            e.what
                .strip_prefix(&format!("{scope}: "))
                .unwrap_or(&e.what)
                .to_string()
        }
        _ => e.what.clone(),
    }
}

pub async fn build(
    t: &crate::TimelineHandle,
    mut r: Request,
    found: Vec<crate::series::Series>,
) -> Result<Chart, crate::TimelineError> {
    if r.fit {
        let first = found
            .iter()
            .filter_map(|s| s.points.first())
            .map(|p| p.t * 1000)
            .min();
        let span = r.until_ms.saturating_sub(r.since_ms);
        if let Some(f) = first.filter(|f| *f > r.since_ms + span / 4 && *f < r.until_ms) {
            // A little room before the first sample.
            let margin = (r.until_ms - f).div_ceil(20).max(60_000);
            r.since_ms = f.saturating_sub(margin).max(r.since_ms);
        }
    }
    let kinds = r.events.clone().unwrap_or_else(|| {
        ["deploy", "git", "note", "escalation"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    });
    let mut markers = Vec::new();
    for kind in &kinds {
        let mut tags = r.tags.clone();
        if kind == "escalation" && r.events.is_none() {
            tags.push("step=step-start".into());
        }
        let rows = t
            .filtered(gemba_store::EventFilter {
                since_ms: r.since_ms,
                until_ms: r.until_ms,
                tags,
                kind: Some(kind.clone()),
                limit: 200,
            })
            .await?;
        for e in rows {
            // An event belongs on the charts of the nodes its host tags
            // name; with no host, of the processes its service tags name;
            // with neither, on every chart.
            let hosts: Vec<&str> = e
                .tags
                .iter()
                .filter_map(|t| t.strip_prefix("host="))
                .collect();
            let services: Vec<&str> = e
                .tags
                .iter()
                .filter_map(|t| t.strip_prefix("service="))
                .collect();
            let ours = if !hosts.is_empty() {
                found.iter().any(|s| hosts.contains(&s.key.node.as_str()))
            } else if !services.is_empty() {
                found
                    .iter()
                    .any(|s| services.contains(&s.key.process.as_str()))
            } else {
                true
            };
            if !ours {
                continue;
            }
            markers.push(Marker {
                at_ms: e.at_ms,
                end_ms: e.end_ms,
                kind: e.kind.clone(),
                label: marker_label(&e),
            });
        }
    }
    markers.sort_by_key(|m| m.at_ms);
    markers.truncate(200);
    let distinct = |f: fn(&crate::series::Series) -> &String| {
        found
            .iter()
            .map(f)
            .collect::<std::collections::BTreeSet<_>>()
            .len()
            > 1
    };
    let several_nodes = distinct(|s| &s.key.node);
    let several_processes = distinct(|s| &s.key.process);
    let lines = found
        .iter()
        .map(|s| Line {
            label: match (several_nodes, several_processes) {
                _ if s.key.process == crate::sample::HOST && !several_processes => {
                    s.key.node.clone()
                }
                (true, true) | (false, false) => format!("{} {}", s.key.node, s.key.process),
                (true, false) => s.key.node.clone(),
                (false, true) => s.key.process.clone(),
            },
            points: s.points.iter().map(|p| (p.t, p.v)).collect(),
        })
        .collect();
    let what = match (r.processes.as_slice(), r.nodes.as_slice()) {
        ([p], [n]) if p == crate::sample::HOST => format!("{} on {n}", r.metric),
        ([p], [n]) => format!("{} of {p} on {n}", r.metric),
        ([p], _) => format!("{} of {p}", r.metric),
        (_, [n]) => format!("{} on {n}", r.metric),
        _ => r.metric.clone(),
    };
    Ok(Chart {
        title: format!(
            "{what} · {} → {}",
            crate::event::format_ms(r.since_ms),
            crate::event::format_ms(r.until_ms)
        ),
        metric: r.metric,
        since_ms: r.since_ms,
        until_ms: r.until_ms,
        width: r.width,
        height: r.height,
        lines,
        markers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_short() {
        assert_eq!(short(1500.0, false), "1.5k");
        assert_eq!(short(400.0, false), "400");
        assert_eq!(short(3.0 * 1024.0 * 1024.0, true), "3MiB");
        assert_eq!(short(0.25, false), "0.25");
    }

    #[test]
    fn ticks_are_round() {
        assert_eq!(
            nice_ticks(0.0, 500.0, 5),
            vec![0.0, 100.0, 200.0, 300.0, 400.0, 500.0]
        );
        let labels: Vec<String> = nice_ticks(0.0, 1.0, 5)
            .into_iter()
            .map(|v| short(v, false))
            .collect();
        assert_eq!(labels, ["0", "0.2", "0.4", "0.6", "0.8", "1"]);
    }
}
