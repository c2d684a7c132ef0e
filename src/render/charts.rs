//! The report's charts, drawn with plotters into SVG strings: line curves, horizontal bars with
//! error bars and a reference band, and the confusion-matrix heat map.
//!
//! plotters is built without font features, so text is laid out with its built-in estimate and
//! emitted as SVG `<text>` that the browser renders with its own sans-serif font.

use std::ops::Range;

use plotters::coord::Shift;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::error::{Error, Result};

/// The training series' colour (matplotlib's tab:blue).
pub const BLUE_C: RGBColor = RGBColor(31, 119, 180);
/// The validation series' colour (matplotlib's tab:orange).
pub const ORANGE_C: RGBColor = RGBColor(255, 127, 14);
/// A third series' colour (matplotlib's tab:green).
pub const GREEN_C: RGBColor = RGBColor(44, 160, 44);
/// Colours for one series per run or cell (matplotlib's tab10), in order; they repeat after ten.
pub const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];
const GRID: RGBColor = RGBColor(225, 228, 232);
const FONT: &str = "sans-serif";
// Font sizes in plotters' units; the SVG backend writes `size / 1.24` px.
const TITLE_PX: f64 = 21.0;
const LABEL_PX: f64 = 15.0;
const DESC_PX: f64 = 16.0;
const SMALL_PX: f64 = 14.0;

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
type DrawResult = std::result::Result<(), Box<dyn std::error::Error>>;

/// Draws into a fresh `width` x `height` SVG and returns its text.
fn render(
    title: &str,
    size: (u32, u32),
    draw: impl FnOnce(&Area<'_>) -> DrawResult,
) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        let drawn = root
            .fill(&WHITE)
            .map_err(Into::into)
            .and_then(|()| draw(&root))
            .and_then(|()| root.present().map_err(Into::into));
        drawn.map_err(|e| Error::invalid(format!("drawing the chart `{title}`: {e}")))?;
    }
    Ok(svg)
}

/// A linear `f64` axis whose ticks (and labels) are exactly the given points: whole epochs,
/// category centres. plotters' own `with_key_points` loses the formatter for `f64` axes.
struct Ticked {
    range: Range<f64>,
    ticks: Vec<f64>,
}

impl Ticked {
    fn new(range: Range<f64>, ticks: Vec<f64>) -> Ticked {
        Ticked { range, ticks }
    }
}

impl Ranged for Ticked {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let span = self.range.end - self.range.start;
        if span == 0.0 {
            return (limit.0 + limit.1) / 2;
        }
        let t = (value - self.range.start) / span;
        limit.0 + ((limit.1 - limit.0) as f64 * t).round() as i32
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> Range<f64> {
        self.range.clone()
    }
}

/// How a line chart's y axis is scaled and labelled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum YAxis {
    /// 0 (or a little below the smallest value) to 100%, labelled in percent.
    Fraction,
    /// 0 to the largest value, plain numbers.
    Linear,
    /// 0 to the largest value, in scientific notation (learning rates).
    Scientific,
}

/// One named curve.
pub struct Line {
    /// The legend's label.
    pub name: String,
    /// `(x, y)` points in order: the epoch and its value.
    pub points: Vec<(f64, f64)>,
    /// The line's colour.
    pub color: RGBColor,
}

/// A line chart over epochs. Non-finite points are dropped; `None` when nothing is left.
pub fn line_chart(
    title: &str,
    y_desc: &str,
    lines: &[Line],
    axis: YAxis,
) -> Result<Option<String>> {
    line_chart_over(title, "epoch", y_desc, lines, axis)
}

/// A line chart over a whole-number x axis (`x_desc`: epochs, optimizer steps). Non-finite
/// points are dropped; `None` when nothing is left. With more than one line, the legend is a
/// strip between the title and the plot (wrapped onto as many rows as it needs), so it never
/// covers a curve.
pub fn line_chart_over(
    title: &str,
    x_desc: &str,
    y_desc: &str,
    lines: &[Line],
    axis: YAxis,
) -> Result<Option<String>> {
    let lines: Vec<Line> = lines
        .iter()
        .map(|l| Line {
            name: l.name.clone(),
            points: l
                .points
                .iter()
                .copied()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .collect(),
            color: l.color,
        })
        .filter(|l| !l.points.is_empty())
        .collect();
    let all: Vec<(f64, f64)> = lines
        .iter()
        .flat_map(|l| l.points.iter().copied())
        .collect();
    if all.is_empty() {
        return Ok(None);
    }
    let (mut x0, mut x1) = min_max(all.iter().map(|p| p.0));
    if x1 - x0 < 1.0 {
        x0 -= 0.5;
        x1 += 0.5;
    }
    let (lo, hi) = min_max(all.iter().map(|p| p.1));
    let (y0, y1) = match axis {
        YAxis::Fraction => (((lo * 10.0).floor() / 10.0).clamp(0.0, 0.9), 1.0),
        YAxis::Linear | YAxis::Scientific if hi > 0.0 => (lo.min(0.0), hi * 1.08),
        _ => (lo.min(0.0) - 1.0, 1.0),
    };
    let ticks = epoch_ticks(x0, x1);
    let y_fmt = move |y: &f64| match axis {
        YAxis::Fraction => format!("{:.0}%", y * 100.0),
        YAxis::Linear => trim_zeros(format!("{y:.3}")),
        YAxis::Scientific => format!("{y:.1e}"),
    };
    let x_fmt = |x: &f64| format!("{x:.0}");
    const WIDTH: u32 = 800;
    const Y_AREA: u32 = 72;
    let legend: Vec<(String, RGBColor)> = if lines.len() > 1 {
        lines.iter().map(|l| (l.name.clone(), l.color)).collect()
    } else {
        Vec::new()
    };
    let legend_left = 12 + Y_AREA as i32;
    let legend_rows = legend_layout(&legend, legend_left, WIDTH as i32 - 24);
    let legend_h = legend_height(&legend_rows);
    render(title, (WIDTH, 340 + legend_h), |root| {
        let (strip, body) = root
            .titled(title, (FONT, TITLE_PX))?
            .split_vertically(legend_h);
        let mut chart = ChartBuilder::on(&body)
            .margin(12)
            .margin_right(24)
            .x_label_area_size(44)
            .y_label_area_size(Y_AREA)
            .build_cartesian_2d(Ticked::new(x0..x1, ticks.clone()), y0..y1)?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .max_light_lines(1)
            .light_line_style(GRID.mix(0.5))
            .bold_line_style(GRID)
            .label_style((FONT, LABEL_PX))
            .axis_desc_style((FONT, DESC_PX))
            .draw()?;
        for line in &lines {
            let color = line.color;
            chart.draw_series(LineSeries::new(line.points.clone(), color.stroke_width(2)))?;
            if line.points.len() <= 60 {
                chart.draw_series(
                    line.points
                        .iter()
                        .map(|&p| Circle::new(p, 3, color.filled())),
                )?;
            }
        }
        draw_legend(&strip, &legend_rows, Swatch::Line)
    })
    .map(Some)
}

/// How a legend entry's colour is shown: a short line (curves) or a box (bars).
#[derive(Clone, Copy)]
enum Swatch {
    Line,
    Box,
}

/// Height of one legend row, in pixels.
const LEGEND_ROW: u32 = 24;

/// Legend entries placed left to right from `left`, wrapped before `right`: `(row, x, name,
/// colour)`. Names are cut to 60 characters.
fn legend_layout(
    entries: &[(String, RGBColor)],
    left: i32,
    right: i32,
) -> Vec<(u32, i32, String, RGBColor)> {
    let mut out = Vec::with_capacity(entries.len());
    let (mut row, mut x) = (0u32, left);
    for (name, color) in entries {
        let name = truncate(name, 60);
        let w = 20 + text_width(&name, LABEL_PX) + 24;
        if x > left && x + w > right {
            row += 1;
            x = left;
        }
        out.push((row, x, name, *color));
        x += w;
    }
    out
}

/// The strip height a laid-out legend needs (0 for none).
fn legend_height(rows: &[(u32, i32, String, RGBColor)]) -> u32 {
    rows.iter()
        .map(|r| r.0 + 1)
        .max()
        .map_or(0, |n| n * LEGEND_ROW + 6)
}

fn draw_legend(
    strip: &Area<'_>,
    rows: &[(u32, i32, String, RGBColor)],
    swatch: Swatch,
) -> DrawResult {
    let text =
        TextStyle::from((FONT, LABEL_PX).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    for (row, x, name, color) in rows {
        let y = (*row * LEGEND_ROW + LEGEND_ROW / 2 + 3) as i32;
        match swatch {
            Swatch::Box => strip.draw(&Rectangle::new(
                [(*x, y - 6), (x + 14, y + 6)],
                color.filled(),
            ))?,
            Swatch::Line => strip.draw(&PathElement::new(
                vec![(*x, y), (x + 16, y)],
                color.stroke_width(3),
            ))?,
        }
        strip.draw(&Text::new(name.clone(), (x + 20, y), text.clone()))?;
    }
    Ok(())
}

/// A generous estimate of how wide `text` is drawn at font size `px` (plotters' units), in
/// pixels: layout that uses it leaves room rather than overlapping.
fn text_width(text: &str, px: f64) -> i32 {
    (text.chars().count() as f64 * px / 1.24 * 0.66).ceil() as i32
}

/// `"2.500"` as `"2.5"`, `"0.000"` as `"0"`.
fn trim_zeros(s: String) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// Up to ~12 whole numbers between `x0` and `x1` for the x axis ticks: every one when they
/// fit, else multiples of 2, 5, 10, 20, 50, ... (epochs, optimizer steps).
fn epoch_ticks(x0: f64, x1: f64) -> Vec<f64> {
    let first = x0.ceil().max(0.0) as usize;
    let last = x1.floor().max(0.0) as usize;
    let span = last.saturating_sub(first);
    let mut step = 1usize;
    'found: for scale in (0..18).map(|p| 10usize.pow(p)) {
        for m in [1, 2, 5] {
            step = m * scale;
            if span / step <= 12 {
                break 'found;
            }
        }
    }
    let start = first.div_ceil(step) * step;
    (start..=last).step_by(step).map(|e| e as f64).collect()
}

fn min_max(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    })
}

/// Height of an error bar's end caps (and diameter of its mean marker), in pixels.
const WHISKER: i32 = 8;
/// Space between what a bar chart draws on a row and the value printed after it, in pixels.
const LABEL_GAP: i32 = 5;

/// One series of horizontal bars, one value per category, with optional ± errors.
pub struct Bars {
    /// The legend's label.
    pub name: String,
    /// One value per category, in the categories' order.
    pub values: Vec<f64>,
    /// A ± half-width per value (e.g. the sd over seeds), drawn as an error bar.
    pub errors: Option<Vec<f64>>,
    /// The bars' colour.
    pub color: RGBColor,
}

/// A vertical reference line with a shaded ± band (e.g. the mean ± sd over folds).
pub struct Reference {
    /// Where the line is drawn, on the value axis.
    pub value: f64,
    /// Half-width of the shaded band around it (e.g. the sd).
    pub band: f64,
    /// The legend's label.
    pub label: String,
}

/// Where a bar chart's fraction axis starts: 0, or lower when every bar is high (so small
/// differences stay visible); returned so the page can say so.
pub fn bar_axis_start(values: &[f64], errors: &[f64]) -> f64 {
    let lowest = values
        .iter()
        .zip(errors.iter().chain(std::iter::repeat(&0.0)))
        .map(|(v, e)| v - e)
        .filter(|v| v.is_finite())
        .fold(f64::INFINITY, f64::min);
    if lowest.is_finite() && lowest > 0.5 {
        ((lowest * 20.0).floor() / 20.0 - 0.05).max(0.0)
    } else {
        0.0
    }
}

/// Horizontal bars of fractions (one row per category, one bar per series in each row), the
/// axis from `x_min` to 100%, values printed at the bar ends.
pub fn bar_chart(
    title: &str,
    categories: &[String],
    series: &[Bars],
    x_desc: &str,
    x_min: f64,
    reference: Option<&Reference>,
) -> Result<String> {
    let n = categories.len().max(1);
    let groups = series.len().max(1);
    let row = (groups as u32 * 15 + 10).max(26);
    let label_chars = categories
        .iter()
        .map(|c| c.chars().count().min(40))
        .max()
        .unwrap_or(4);
    let label_w = (label_chars as u32 * 8 + 20).clamp(48, 340);
    let mut legend: Vec<(String, RGBColor)> =
        series.iter().map(|s| (s.name.clone(), s.color)).collect();
    if let Some(r) = reference {
        legend.push((r.label.clone(), GREEN_C));
    }
    if legend.len() < 2 {
        legend.clear();
    }
    const WIDTH: u32 = 820;
    let legend_rows = legend_layout(&legend, 12 + label_w as i32, WIDTH as i32 - 24);
    let legend_h = legend_height(&legend_rows);
    let height = 70 + legend_h + 46 + n as u32 * row;
    let nf = n as f64;
    let centers: Vec<f64> = (0..n).map(|i| nf - i as f64 - 0.5).collect();
    let names: Vec<String> = categories.iter().map(|c| truncate(c, 40)).collect();
    let y_fmt = move |y: &f64| {
        let i = (nf - y - 0.5).round();
        if i >= 0.0 && (i as usize) < names.len() {
            names[i as usize].clone()
        } else {
            String::new()
        }
    };
    let x_fmt = |x: &f64| format!("{:.0}%", x * 100.0);
    render(title, (WIDTH, height), |root| {
        let (strip, body) = root
            .titled(title, (FONT, TITLE_PX))?
            .split_vertically(legend_h);
        let mut chart = ChartBuilder::on(&body)
            .margin(12)
            .margin_right(64)
            .x_label_area_size(40)
            .y_label_area_size(label_w)
            .build_cartesian_2d(x_min..1.0, Ticked::new(0.0..nf, centers.clone()))?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .max_light_lines(1)
            .x_desc(x_desc)
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .light_line_style(GRID.mix(0.5))
            .bold_line_style(GRID)
            .label_style((FONT, LABEL_PX))
            .axis_desc_style((FONT, DESC_PX))
            .draw()?;
        if let Some(r) = reference.filter(|r| r.value.is_finite()) {
            let band = r.band.max(0.0);
            let (lo, hi) = ((r.value - band).max(x_min), (r.value + band).min(1.0));
            chart.draw_series(std::iter::once(Rectangle::new(
                [(lo, 0.0), (hi, nf)],
                GREEN_C.mix(0.15).filled(),
            )))?;
        }
        let band_h = 0.8 / groups as f64;
        for (g, s) in series.iter().enumerate() {
            let color = s.color;
            let top = |i: usize| nf - i as f64 - 0.1 - g as f64 * band_h;
            let bars = s
                .values
                .iter()
                .enumerate()
                .filter(|(_, v)| v.is_finite())
                .map(|(i, &v)| {
                    let y1 = top(i);
                    Rectangle::new(
                        [(x_min, y1 - band_h * 0.92), (v.clamp(x_min, 1.0), y1)],
                        color.filled(),
                    )
                });
            chart.draw_series(bars)?;
            let error = |i: usize| {
                s.errors
                    .as_ref()
                    .and_then(|e| e.get(i))
                    .copied()
                    .filter(|e| e.is_finite())
            };
            if s.errors.is_some() {
                let whiskers = s
                    .values
                    .iter()
                    .enumerate()
                    .filter(|(_, v)| v.is_finite())
                    .filter_map(|(i, &v)| {
                        let e = error(i)?;
                        let y = top(i) - band_h * 0.46;
                        Some(ErrorBar::new_horizontal(
                            y,
                            (v - e).clamp(x_min, 1.0),
                            v.clamp(x_min, 1.0),
                            (v + e).clamp(x_min, 1.0),
                            BLACK.stroke_width(1),
                            WHISKER as u32,
                        ))
                    });
                chart.draw_series(whiskers)?;
            }
            // Each value is printed right of everything drawn on its row: past the bar's end
            // and past the error bar's right whisker with its cap (never over them).
            let text = TextStyle::from((FONT, SMALL_PX).into_font())
                .pos(Pos::new(HPos::Left, VPos::Center));
            let labels = s
                .values
                .iter()
                .enumerate()
                .filter(|(_, v)| v.is_finite())
                .map(|(i, &v)| {
                    // A drawn error bar (even of zero width) has the mean's circle and caps.
                    let whisker = s.errors.is_some() && error(i).is_some();
                    let e = error(i).unwrap_or(0.0).abs();
                    let end = (v + e).clamp(x_min, 1.0);
                    let gap = if whisker {
                        WHISKER / 2 + LABEL_GAP
                    } else {
                        LABEL_GAP
                    };
                    let y = top(i) - band_h * 0.46;
                    EmptyElement::at((end, y))
                        + Text::new(format!("{:.1}%", v * 100.0), (gap, 0), text.clone())
                });
            chart.draw_series(labels)?;
        }
        if let Some(r) = reference.filter(|r| r.value.is_finite()) {
            // The mean line goes over the bars; its band (drawn first) under them.
            chart.draw_series(std::iter::once(PathElement::new(
                vec![(r.value, 0.0), (r.value, nf)],
                GREEN_C.stroke_width(2),
            )))?;
        }
        draw_legend(&strip, &legend_rows, Swatch::Box)
    })
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max - 1).collect();
        t.push('…');
        t
    }
}

/// The confusion matrix `counts[true][predicted]` as a heat map: cell colour is the share of the
/// true class's samples, the number is the count (printed when the cells are big enough).
pub fn heatmap(title: &str, names: &[String], counts: &[Vec<usize>]) -> Result<String> {
    let n = counts.len().max(1);
    let cell = (560 / n as u32).clamp(6, 56);
    let label_chars = names
        .iter()
        .map(|c| c.chars().count().min(24))
        .max()
        .unwrap_or(2);
    let label_w = (label_chars as u32 * 8 + 24).clamp(40, 220);
    // Predicted-class names run upwards when they are wider than a cell.
    let rotate = label_chars as u32 * 8 > cell;
    let x_area = if rotate { label_w } else { 36 };
    let side = cell * n as u32;
    let size = (label_w + side + 52, side + x_area + 84);
    let nf = n as f64;
    let centers: Vec<f64> = (0..n).map(|i| i as f64 + 0.5).collect();
    let shown: Vec<String> = (0..n)
        .map(|i| truncate(names.get(i).map_or(&i.to_string(), |s| s), 24))
        .collect();
    let label_step = 16usize.div_ceil(cell as usize);
    let shown_x = shown.clone();
    let names_x = shown.clone();
    let x_fmt = move |x: &f64| {
        if rotate {
            String::new()
        } else {
            axis_name(&shown_x, x.floor(), label_step)
        }
    };
    let y_fmt = move |y: &f64| axis_name(&shown, nf - 1.0 - y.floor(), label_step);
    let font_px = (cell as f64 * 0.4).clamp(10.0, 17.0);
    let digits = counts
        .iter()
        .flatten()
        .max()
        .map_or(1, |m| m.to_string().len());
    let show_counts = digits as f64 * font_px / 1.24 * 0.62 <= cell as f64 - 4.0;
    render(title, size, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FONT, TITLE_PX))
            .margin(12)
            .margin_right(28)
            .x_label_area_size(x_area)
            .y_label_area_size(label_w)
            .build_cartesian_2d(
                Ticked::new(0.0..nf, centers.clone()),
                Ticked::new(0.0..nf, centers.clone()),
            )?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("predicted")
            .y_desc("true")
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .label_style((FONT, LABEL_PX))
            .axis_desc_style((FONT, DESC_PX))
            .draw()?;
        let mut cells = Vec::with_capacity(n * n);
        let mut texts = Vec::new();
        let style =
            TextStyle::from((FONT, font_px).into_font()).pos(Pos::new(HPos::Center, VPos::Center));
        for (t, row) in counts.iter().enumerate() {
            let total: usize = row.iter().sum();
            let y = nf - 1.0 - t as f64;
            for (p, &c) in row.iter().enumerate() {
                let share = if total > 0 {
                    c as f64 / total as f64
                } else {
                    0.0
                };
                let x = p as f64;
                cells.push(Rectangle::new(
                    [(x, y), (x + 1.0, y + 1.0)],
                    shade(share).filled(),
                ));
                if show_counts {
                    let color: &'static RGBColor = if share > 0.55 { &WHITE } else { &BLACK };
                    texts.push(Text::new(
                        c.to_string(),
                        (x + 0.5, y + 0.5),
                        style.color(color),
                    ));
                }
            }
        }
        chart.draw_series(cells)?;
        chart.draw_series(texts)?;
        if rotate {
            // plotters centres rotated tick labels on the tick, half inside the plot; these hang
            // below the axis instead, read bottom to top.
            let style = TextStyle::from((FONT, LABEL_PX).into_font())
                .transform(FontTransform::Rotate270)
                .pos(Pos::new(HPos::Right, VPos::Center));
            let labels = (0..n).map(|i| {
                EmptyElement::at((i as f64 + 0.5, 0.0))
                    + Text::new(
                        axis_name(&names_x, i as f64, label_step),
                        (0, 8),
                        style.clone(),
                    )
            });
            chart.draw_series(labels)?;
        }
        // A thin frame around the matrix.
        chart.draw_series(std::iter::once(Rectangle::new(
            [(0.0, 0.0), (nf, nf)],
            GRID.stroke_width(1),
        )))?;
        Ok(())
    })
}

fn axis_name(names: &[String], i: f64, step: usize) -> String {
    if i < 0.0 {
        return String::new();
    }
    let i = i as usize;
    if !i.is_multiple_of(step) {
        return String::new();
    }
    names.get(i).cloned().unwrap_or_default()
}

/// White → dark blue for a share in [0, 1].
fn shade(share: f64) -> RGBColor {
    let s = share.clamp(0.0, 1.0);
    let lerp = |a: f64, b: f64| (a + (b - a) * s).round() as u8;
    RGBColor(lerp(247.0, 8.0), lerp(251.0, 48.0), lerp(255.0, 107.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_confusion_matrices_drop_the_numbers_and_thin_the_labels() {
        let n = 100;
        let names: Vec<String> = (0..n).map(|i| format!("class{i}")).collect();
        let counts: Vec<Vec<usize>> = (0..n)
            .map(|t| (0..n).map(|p| usize::from(t == p) * 100).collect())
            .collect();
        let svg = heatmap("big", &names, &counts).unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(
            !svg.contains("\n100\n</text>"),
            "no counts in 6-pixel cells"
        );
        assert!(
            svg.contains("class0") && !svg.contains("class1\n"),
            "every third name only"
        );
        let small = heatmap(
            "small",
            &names[..3],
            &[vec![1000, 2, 3], vec![0, 5, 0], vec![0, 0, 7]],
        )
        .unwrap();
        assert!(small.contains("\n1000\n</text>"), "{small}");
    }

    #[test]
    fn empty_inputs_do_not_panic() {
        assert!(line_chart("t", "y", &[], YAxis::Linear).unwrap().is_none());
        assert!(bar_chart("t", &[], &[], "x", 0.0, None).is_ok());
        assert!(heatmap("t", &[], &[]).is_ok());
    }

    #[test]
    fn trims_trailing_zeros() {
        assert_eq!(trim_zeros("2.500".into()), "2.5");
        assert_eq!(trim_zeros("0.000".into()), "0");
        assert_eq!(trim_zeros("10".into()), "10");
    }

    #[test]
    fn ticks_are_whole_epochs() {
        assert_eq!(epoch_ticks(1.0, 5.0), vec![1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(epoch_ticks(0.5, 1.5), vec![1.0]);
        assert!(epoch_ticks(1.0, 100.0).len() <= 13);
    }

    /// The numbers of attributes `names` of every `<tag ...>` in `svg`.
    fn elements(svg: &str, tag: &str, names: &[&str]) -> Vec<Vec<f64>> {
        svg.split(&format!("<{tag} "))
            .skip(1)
            .map(|e| {
                let e = &e[..e.find('>').unwrap()];
                names
                    .iter()
                    .map(|n| {
                        let at = e.find(&format!(" {n}=\"")).map(|i| i + n.len() + 3);
                        let at =
                            at.or_else(|| e.starts_with(&format!("{n}=\"")).then_some(n.len() + 2));
                        let v = &e[at.unwrap()..];
                        v[..v.find('"').unwrap()].parse().unwrap()
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn value_labels_sit_clear_of_the_error_bars() {
        // Small, large, clamped at 100% and missing errors; two series per row.
        let cats: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
        let series = [
            Bars {
                name: "one".into(),
                values: vec![0.91, 0.95, 0.99, 0.5],
                errors: Some(vec![0.0005, 0.04, 0.05, f64::NAN]),
                color: BLUE_C,
            },
            Bars {
                name: "two".into(),
                values: vec![0.2, 0.7, 0.98, 0.6],
                errors: Some(vec![0.01, 0.2, 0.0, 0.1]),
                color: ORANGE_C,
            },
        ];
        let svg = bar_chart("t", &cats, &series, "x", 0.0, None).unwrap();
        // What an error bar draws: black lines (whisker and caps) and the mean's circle.
        let black: String = svg
            .split("<line ")
            .skip(1)
            .filter(|l| l[..l.find('>').unwrap()].contains("stroke=\"#000000\""))
            .map(|l| format!("<line {l}"))
            .collect();
        let lines = elements(&black, "line", &["x1", "y1", "x2", "y2"]);
        let circles = elements(&svg, "circle", &["cx", "cy", "r"]);
        let labels: Vec<Vec<f64>> = svg
            .split("<text ")
            .skip(1)
            .filter(|t| t.contains("text-anchor=\"start\"") && t.contains("%\n</text>"))
            .map(|t| elements(&format!("<text {t}"), "text", &["x", "y"])[0].clone())
            .collect();
        assert_eq!(labels.len(), 8, "a value per bar");
        for l in &labels {
            let (x, y) = (l[0], l[1]);
            for b in &lines {
                let (top, bottom) = (b[1].min(b[3]), b[1].max(b[3]));
                if bottom >= y - 7.0 && top <= y + 7.0 {
                    assert!(
                        b[0].max(b[2]) + 3.0 <= x,
                        "a line at {b:?} reaches the label at {l:?}"
                    );
                }
            }
            for c in &circles {
                if (c[1] - y).abs() <= c[2] + 7.0 {
                    assert!(
                        c[0] + c[2] + 3.0 <= x,
                        "a marker at {c:?} reaches the label at {l:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn legends_wrap_instead_of_running_off_the_chart() {
        let entries: Vec<(String, RGBColor)> = (0..12)
            .map(|i| {
                (
                    format!("strategy=fine-tune, lr=0.00{i}, seed={i}"),
                    PALETTE[i % 10],
                )
            })
            .collect();
        let rows = legend_layout(&entries, 84, 776);
        assert!(rows.iter().map(|r| r.0).max().unwrap() >= 3, "several rows");
        for (_, x, name, _) in &rows {
            assert!(
                x + 20 + text_width(name, LABEL_PX) <= 776,
                "{name} runs past the edge"
            );
        }
        assert_eq!(
            legend_height(&rows),
            (rows.last().unwrap().0 + 1) * LEGEND_ROW + 6
        );
        let lines: Vec<Line> = entries
            .iter()
            .map(|(name, color)| Line {
                name: name.clone(),
                points: vec![(1.0, 0.5), (2.0, 0.6)],
                color: *color,
            })
            .collect();
        let svg = line_chart("t", "y", &lines, YAxis::Fraction)
            .unwrap()
            .unwrap();
        assert!(svg.contains("seed=11"), "every series is named");
    }

    #[test]
    fn axis_starts_at_zero_unless_all_high() {
        assert_eq!(bar_axis_start(&[0.3, 0.9], &[]), 0.0);
        let start = bar_axis_start(&[0.91, 0.93], &[0.01, 0.02]);
        assert!(start > 0.7 && start < 0.9, "{start}");
    }
}
