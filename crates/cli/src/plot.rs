//! `dacapo plot`: training loss and validation scores of one or more runs, as PNG or SVG.
//!
//! One panel for the training loss (raw, faint, and a centred moving average; log scale when
//! it spans decades) and one panel per (dataset, criterion) with the score of the best
//! post-processing parameter at each validated iteration, the best iteration marked. Several
//! runs share the panels, one colour each. Each panel's legend sits between its title and its
//! chart, wrapped to the panel's width, so it never covers a curve. Text uses an embedded
//! DejaVu Sans, so no system font libraries are needed.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Once;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use dacapo_core::{BestDim, RunName, ValidationScores};
use dacapo_store::BestRecord;
use plotters::coord::Shift;
use plotters::coord::ranged1d::{AsRangedCoord, Ranged, ValueFormatter};
use plotters::coord::types::RangedCoordu64;
use plotters::prelude::*;
use plotters::style::FontStyle;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::RootArg;
use crate::runs::{self, Stores};

mod text;

/// Font embedded for all text (DejaVu Sans 2.37; license in `assets/DejaVuSans-LICENSE.txt`).
static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

/// Run colours (matplotlib's tab10), in order of the runs on the command line.
const COLORS: [RGBColor; 10] = [
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

/// Most points drawn per line; longer series keep each bucket's min and max.
const MAX_POINTS: usize = 2000;

/// Arguments of `dacapo plot`.
#[derive(Args, Debug)]
pub struct PlotArgs {
    /// Runs to plot, overlaid in one figure.
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
    /// Output file; its extension picks the format: .png or .svg.
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Image width in pixels.
    #[arg(long, default_value_t = 1200, value_parser = clap::value_parser!(u32).range(200..=16384))]
    pub width: u32,
    /// Image height in pixels.
    #[arg(long, default_value_t = 800, value_parser = clap::value_parser!(u32).range(200..=16384))]
    pub height: u32,
    /// Window (in iterations) of the loss moving average [default: 1/50 of the run, at least 1].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub smooth: Option<u64>,
    /// Also draw every post-processing parameter's score, faintly.
    #[arg(long)]
    pub all_parameters: bool,
    /// Only these criteria (repeatable; default: all).
    #[arg(short, long = "criterion", value_name = "CRITERION")]
    pub criteria: Vec<String>,
    /// Only these validation datasets (repeatable; default: all).
    #[arg(short, long = "dataset", value_name = "DATASET")]
    pub datasets: Vec<String>,
    #[command(flatten)]
    pub root: RootArg,
}

/// The output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Png,
    Svg,
}

/// Everything plotted of one run.
struct RunData {
    name: String,
    color: RGBColor,
    /// Finite `(iteration, loss)` pairs.
    loss: Vec<(u64, f64)>,
    /// Moving average of `loss`.
    smoothed: Vec<(u64, f64)>,
    window: u64,
    scores: ValidationScores,
    /// Score of the best parameter per validated iteration, by (dataset, criterion).
    best_per_iteration: BTreeMap<(String, String), Vec<(u64, f64)>>,
    /// The best record (stored, or computed from the scores) by (dataset, criterion).
    best: BTreeMap<(String, String), BestRecord>,
}

/// One score panel.
struct Panel {
    dataset: String,
    criterion: String,
    higher_is_better: bool,
}

/// Renders the plot described by `args`.
pub fn run(args: &PlotArgs) -> Result<()> {
    let format = match args
        .output
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("png") => Format::Png,
        Some("svg") => Format::Svg,
        _ => bail!(
            "cannot tell the format of {}: name the output file *.png or *.svg",
            args.output.display()
        ),
    };
    register_font()?;
    let root = &args.root.resolve();
    let stores = Stores::open(root);
    let mut data = Vec::with_capacity(args.names.len());
    for (i, name) in args.names.iter().enumerate() {
        if args.names[..i].contains(name) {
            continue;
        }
        let run = runs::require_run(root, name)?;
        data.push(load(&stores, &run, COLORS[i % COLORS.len()], args.smooth)?);
    }
    let panels = panels(&data, &args.criteria, &args.datasets)?;
    let has_loss = data.iter().any(|d| !d.loss.is_empty());
    if !has_loss && panels.is_empty() {
        bail!(
            "nothing to plot: {} {} no training stats or validation scores yet",
            args.names.join(", "),
            if args.names.len() == 1 { "has" } else { "have" }
        );
    }
    let opts = Options {
        all_parameters: args.all_parameters,
        has_loss,
    };
    let size = (args.width, args.height);
    let out = &args.output;
    match format {
        Format::Png => {
            let (w, h) = (args.width as usize, args.height as usize);
            let mut buf = vec![0u8; w * h * 3];
            {
                let backend =
                    text::CrispText::new(BitMapBackend::with_buffer(&mut buf, size), FONT)
                        .ok_or_else(|| {
                            anyhow!("the embedded font cannot be loaded (a broken build)")
                        })?;
                let area = backend.into_drawing_area();
                draw(&area, &data, &panels, &opts)?;
                area.present().map_err(plot_err)?;
            }
            write_png(out, size, &buf)?;
        }
        Format::Svg => {
            let mut svg = String::new();
            {
                let area = SVGBackend::with_string(&mut svg, size).into_drawing_area();
                draw(&area, &data, &panels, &opts)?;
                area.present().map_err(plot_err)?;
            }
            std::fs::write(out, svg).with_context(|| {
                format!(
                    "cannot write {}; check that its directory exists and is writable",
                    out.display()
                )
            })?;
        }
    }
    println!("wrote {}", out.display());
    Ok(())
}

fn plot_err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("cannot draw the plot: {e}")
}

fn register_font() -> Result<()> {
    static ONCE: Once = Once::new();
    let mut ok = true;
    ONCE.call_once(|| {
        ok = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT).is_ok();
    });
    if ok {
        Ok(())
    } else {
        bail!("the embedded font cannot be loaded (a broken build of dacapo)")
    }
}

fn write_png(path: &Path, (w, h): (u32, u32), rgb: &[u8]) -> Result<()> {
    let ctx = || {
        format!(
            "cannot write {}; check that its directory exists and is writable",
            path.display()
        )
    };
    let file = std::fs::File::create(path).with_context(ctx)?;
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), w, h);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().with_context(ctx)?;
    writer.write_image_data(rgb).with_context(ctx)?;
    writer.finish().with_context(ctx)?;
    Ok(())
}

/// Reads what is plotted of run `name`.
fn load(stores: &Stores, name: &RunName, color: RGBColor, smooth: Option<u64>) -> Result<RunData> {
    let frozen = runs::read_config(&stores.root, name);
    let stores = &stores.of_run(frozen.config.as_ref())?;
    let stats = runs::training_stats(stores, name)?;
    let scores = runs::validation_scores(stores, name)?;
    let records = runs::best_records(stores, name)?;

    let loss: Vec<(u64, f64)> = stats
        .loss_series()
        .into_iter()
        .filter(|(_, l)| l.is_finite())
        .collect();
    let window = smooth.unwrap_or_else(|| (loss.len() as u64 / 50).max(1));
    let smoothed = moving_average(&loss, window);

    let mut best_per_iteration: BTreeMap<(String, String), Vec<(u64, f64)>> = BTreeMap::new();
    for b in scores.get_best(BestDim::Parameter) {
        if b.value.is_finite() {
            best_per_iteration
                .entry((b.dataset, b.criterion))
                .or_default()
                .push((b.iteration, b.value));
        }
    }
    let mut best: BTreeMap<(String, String), BestRecord> = records
        .into_iter()
        .map(|r| ((r.dataset.clone(), r.criterion.clone()), r))
        .collect();
    // Runs validated before their best records were written still get their best marked.
    for dataset in &scores.meta.datasets {
        for c in &scores.meta.criteria {
            let key = (dataset.clone(), c.name.clone());
            if !best.contains_key(&key)
                && let Some(b) = scores.best(dataset, &c.name)
            {
                best.insert(key, BestRecord::from_best(&b, c.higher_is_better));
            }
        }
    }
    Ok(RunData {
        name: name.to_string(),
        color,
        loss,
        smoothed,
        window,
        scores,
        best_per_iteration,
        best,
    })
}

/// Centred moving average over `window` points (`window / 2` on each side), narrowed
/// symmetrically near the ends: the curve neither lags behind a falling loss nor flattens
/// its first steps.
fn moving_average(points: &[(u64, f64)], window: u64) -> Vec<(u64, f64)> {
    let half = window as usize / 2;
    let mut prefix = Vec::with_capacity(points.len() + 1);
    prefix.push(0.0);
    for &(_, v) in points {
        prefix.push(prefix[prefix.len() - 1] + v);
    }
    let n = points.len();
    points
        .iter()
        .enumerate()
        .map(|(i, &(it, _))| {
            let h = half.min(i).min(n - 1 - i);
            (it, (prefix[i + h + 1] - prefix[i - h]) / (2 * h + 1) as f64)
        })
        .collect()
}

/// At most about `max_points` points: each bucket of a longer series keeps its min and max,
/// in iteration order, so spikes stay visible.
fn decimate(points: &[(u64, f64)], max_points: usize) -> Vec<(u64, f64)> {
    if points.len() <= max_points {
        return points.to_vec();
    }
    let bucket = points.len().div_ceil(max_points / 2);
    let mut out = Vec::with_capacity(max_points + 2);
    for chunk in points.chunks(bucket) {
        let (mut lo, mut hi) = (chunk[0], chunk[0]);
        for &p in chunk {
            if p.1 < lo.1 {
                lo = p;
            }
            if p.1 > hi.1 {
                hi = p;
            }
        }
        if lo.0 <= hi.0 {
            out.extend([lo, hi]);
        } else {
            out.extend([hi, lo]);
        }
    }
    out.dedup();
    out
}

/// The (dataset, criterion) panels of all runs, in metadata order, after the filters.
fn panels(data: &[RunData], criteria: &[String], datasets: &[String]) -> Result<Vec<Panel>> {
    let mut out: Vec<Panel> = Vec::new();
    for d in data {
        for dataset in &d.scores.meta.datasets {
            for c in &d.scores.meta.criteria {
                let key = (dataset.clone(), c.name.clone());
                let wanted = (datasets.is_empty() || datasets.contains(dataset))
                    && (criteria.is_empty() || criteria.contains(&c.name))
                    && data.iter().any(|r| r.best_per_iteration.contains_key(&key));
                if wanted
                    && !out
                        .iter()
                        .any(|p| &p.dataset == dataset && p.criterion == c.name)
                {
                    out.push(Panel {
                        dataset: dataset.clone(),
                        criterion: c.name.clone(),
                        higher_is_better: c.higher_is_better,
                    });
                }
            }
        }
    }
    for (flag, asked, known) in [
        (
            "--criterion",
            criteria,
            data.iter()
                .flat_map(|d| d.scores.criteria())
                .map(str::to_owned)
                .collect::<Vec<_>>(),
        ),
        (
            "--dataset",
            datasets,
            data.iter()
                .flat_map(|d| d.scores.meta.datasets.iter().cloned())
                .collect(),
        ),
    ] {
        for a in asked {
            if !known.contains(a) {
                let mut known = known.clone();
                known.sort();
                known.dedup();
                bail!(
                    "{flag} {a}: no run validated it; known: {}",
                    if known.is_empty() {
                        "none (the runs have no validation scores yet)".to_owned()
                    } else {
                        known.join(", ")
                    }
                );
            }
        }
    }
    Ok(out)
}

/// Drawing options.
struct Options {
    all_parameters: bool,
    has_loss: bool,
}

/// Columns and rows for `n` panels on a `w`×`h` canvas: panels closest to 3:2, then the
/// fewest empty cells.
fn grid(n: usize, w: u32, h: u32) -> (usize, usize) {
    let mut best = (1, n.max(1));
    let mut best_cost = f64::INFINITY;
    for cols in 1..=n.max(1) {
        let rows = n.max(1).div_ceil(cols);
        let aspect = (f64::from(w) / cols as f64) / (f64::from(h) / rows as f64);
        let cost = (aspect / 1.5).ln().abs() + 0.01 * (cols * rows - n) as f64;
        if cost < best_cost {
            best_cost = cost;
            best = (cols, rows);
        }
    }
    best
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    data: &[RunData],
    panels: &[Panel],
    opts: &Options,
) -> Result<()> {
    root.fill(&WHITE).map_err(plot_err)?;
    let n = panels.len() + usize::from(opts.has_loss);
    let (w, h) = root.dim_in_pixel();
    let (cols, rows) = grid(n, w, h);
    if (h as usize) / rows < 180 || (w as usize) / cols < 240 {
        tracing::warn!(
            "{n} panels in {w}x{h} pixels are small: pick fewer with --criterion/--dataset or \
             pass a larger --width/--height"
        );
    }
    let areas = root.split_evenly((rows, cols));
    let mut areas = areas.iter();
    let x_max = data
        .iter()
        .flat_map(|d| {
            let loss = d.loss.last().map(|l| l.0 + 1);
            let val = d.scores.scores().last().map(|s| s.iteration);
            loss.into_iter().chain(val)
        })
        .max()
        .unwrap_or(1)
        .max(1);
    // Room on the right so the last point's marker is not cut in half.
    let x_max = x_max + (x_max / 40).max(1);
    if opts.has_loss
        && let Some(area) = areas.next()
    {
        loss_panel(area, data, x_max)?;
    }
    for (panel, area) in panels.iter().zip(areas) {
        score_panel(area, data, panel, x_max, opts)?;
    }
    Ok(())
}

/// Font sizes for a panel of this height: caption, tick labels, legend.
fn font_sizes(area_h: u32) -> (u32, u32, u32) {
    let caption = (area_h / 22).clamp(13, 22);
    let label = (area_h / 30).clamp(11, 15);
    (caption, label, label)
}

fn loss_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    data: &[RunData],
    x_max: u64,
) -> Result<()> {
    let values = data.iter().flat_map(|d| d.loss.iter().map(|p| p.1));
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    let legend: Vec<LegendEntry> = data
        .iter()
        .filter(|d| !d.loss.is_empty())
        .map(|d| LegendEntry {
            color: d.color,
            text: format!("{} (average of {})", d.name, d.window),
        })
        .collect();
    let area = title_and_legend(
        area,
        "training loss (faint: per step, bold: moving average)",
        &legend,
    )?;
    // A log axis only helps when the loss is positive and falls by decades.
    if lo > 0.0 && hi / lo >= 100.0 {
        let y = (10f64.powf(lo.log10() - 0.1)..10f64.powf(hi.log10() + 0.1)).log_scale();
        loss_chart(&area, data, x_max, y, 0.0)
    } else {
        let y = padded(lo, hi);
        let span = y.end - y.start;
        loss_chart(&area, data, x_max, y, span)
    }
}

/// The loss chart on `area` (below its title and legend); `span` is the height of a linear
/// y axis (0 for a log axis), a billionth of which is rounding noise in tick values.
fn loss_chart<DB, Y>(
    area: &DrawingArea<DB, Shift>,
    data: &[RunData],
    x_max: u64,
    y: Y,
    span: f64,
) -> Result<()>
where
    DB: DrawingBackend,
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let mut chart = chart_builder(area)
        .build_cartesian_2d(0..x_max, y)
        .map_err(plot_err)?;
    configure_mesh(&mut chart, area, "loss", span)?;
    for d in data.iter().filter(|d| !d.loss.is_empty()) {
        chart
            .draw_series(LineSeries::new(
                decimate(&d.loss, MAX_POINTS),
                d.color.mix(0.25),
            ))
            .map_err(plot_err)?;
    }
    for d in data.iter().filter(|d| !d.loss.is_empty()) {
        chart
            .draw_series(LineSeries::new(
                decimate(&d.smoothed, MAX_POINTS),
                d.color.stroke_width(2),
            ))
            .map_err(plot_err)?;
    }
    Ok(())
}

/// The chart layout shared by all panels (their title and legend are drawn above it).
fn chart_builder<'a, 'b, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
) -> ChartBuilder<'a, 'b, DB> {
    let label = label_size(area);
    let mut builder = ChartBuilder::on(area);
    builder
        .margin(12)
        .margin_top(6)
        .x_label_area_size(label * 3)
        .y_label_area_size(label * 5);
    builder
}

/// Tick label size for a chart on `area`.
fn label_size<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>) -> u32 {
    font_sizes(area.dim_in_pixel().1).1
}

/// Axis titles, tick labels and grid of a panel; `span`: see [`loss_chart`].
fn configure_mesh<DB, Y>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<RangedCoordu64, Y>>,
    area: &DrawingArea<DB, Shift>,
    y_desc: &str,
    span: f64,
) -> Result<()>
where
    DB: DrawingBackend,
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let formatter = |v: &f64| tick_label(*v, span);
    chart
        .configure_mesh()
        .x_desc("iteration")
        .y_desc(y_desc)
        .y_labels(6)
        .y_label_formatter(&formatter)
        .label_style(("sans-serif", label_size(area)))
        .light_line_style(BLACK.mix(0.04))
        .bold_line_style(BLACK.mix(0.12))
        .draw()
        .map_err(plot_err)
}

/// The label of tick value `v` on a linear axis `span` high (0 for a log axis): ticks are
/// computed as `start + k * step`, so a value within a billionth of the axis of zero is zero,
/// not `-5.551e-17`.
fn tick_label(v: f64, span: f64) -> String {
    runs::fmt_tick(if v.abs() < span * 1e-9 { 0.0 } else { v })
}

/// One line of a panel's legend.
struct LegendEntry {
    color: RGBColor,
    text: String,
}

/// Draws `caption` at the top of `area` and under it the legend: per entry a colour sample
/// and the text, wrapped onto a second line (and shortened with "…" past that) where the
/// panel is too narrow. Returns the rest of `area` for the chart, so a legend never covers a
/// curve nor runs past the panel.
fn title_and_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    caption: &str,
    entries: &[LegendEntry],
) -> Result<DrawingArea<DB, Shift>> {
    let (w, h) = area.dim_in_pixel();
    let (caption_size, label, legend_size) = font_sizes(h);
    let titled = area
        .titled(caption, ("sans-serif", caption_size))
        .map_err(plot_err)?;
    if entries.is_empty() {
        return Ok(titled);
    }
    // Aligned with the chart's plotting area (margin + y label area).
    let left = (12 + label * 5) as i32;
    let text_x = left + 26;
    let max_width = w.saturating_sub(text_x as u32 + 12);
    let style = TextStyle::from(("sans-serif", legend_size).into_font())
        .pos(Pos::new(HPos::Left, VPos::Center));
    let width = |t: &str| {
        titled
            .estimate_text_size(t, &style)
            .map_or(u32::MAX, |(w, _)| w)
    };
    let lines: Vec<Vec<String>> = entries
        .iter()
        .map(|e| wrap_text(&e.text, max_width, 2, width))
        .collect();
    let line = legend_size + 5;
    let count: usize = lines.iter().map(Vec::len).sum();
    let (legend, rest) = titled.split_vertically(count as u32 * line + 4);
    let mut row = 0u32;
    for (entry, lines) in entries.iter().zip(&lines) {
        let y = (row * line + line / 2) as i32;
        legend
            .draw(&PathElement::new(
                vec![(left, y), (left + 20, y)],
                entry.color.stroke_width(2),
            ))
            .map_err(plot_err)?;
        for text in lines {
            let y = (row * line + line / 2) as i32;
            legend
                .draw_text(text, &style, (text_x, y))
                .map_err(plot_err)?;
            row += 1;
        }
    }
    Ok(rest)
}

/// `text` broken at spaces into at most `max_lines` lines that `width` says fit in `max`
/// pixels; a word too long for a line, or text left over, is cut with "…".
fn wrap_text(text: &str, max: u32, max_lines: usize, width: impl Fn(&str) -> u32) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut words = text.split(' ').peekable();
    while let Some(word) = words.next() {
        let last = lines.len() == max_lines;
        match lines.last_mut() {
            Some(line) if width(&format!("{line} {word}")) <= max => {
                line.push(' ');
                line.push_str(word);
            }
            Some(line) if last => {
                // No room for another line: the rest goes, marked.
                let rest: Vec<&str> = std::iter::once(word).chain(words.by_ref()).collect();
                *line = shorten(&format!("{line} {}", rest.join(" ")), max, &width);
            }
            _ => lines.push(shorten(word, max, &width)),
        }
    }
    lines
}

/// `text` if `width` says it fits in `max` pixels, else its longest prefix that fits with "…".
fn shorten(text: &str, max: u32, width: &impl Fn(&str) -> u32) -> String {
    if width(text) <= max {
        return text.to_owned();
    }
    let chars: Vec<char> = text.chars().collect();
    (0..chars.len())
        .rev()
        .map(|n| format!("{}…", chars[..n].iter().collect::<String>()))
        .find(|t| width(t) <= max)
        .unwrap_or_default()
}

/// `lo..hi` widened by 5% (or around a single value), for a linear axis.
fn padded(lo: f64, hi: f64) -> Range<f64> {
    if !(lo.is_finite() && hi.is_finite()) {
        return 0.0..1.0;
    }
    let span = hi - lo;
    if span > 0.0 {
        lo - 0.05 * span..hi + 0.05 * span
    } else {
        let pad = if lo == 0.0 { 0.5 } else { 0.05 * lo.abs() };
        lo - pad..hi + pad
    }
}

fn score_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    data: &[RunData],
    panel: &Panel,
    x_max: u64,
    opts: &Options,
) -> Result<()> {
    let key = (panel.dataset.clone(), panel.criterion.clone());
    let parameters = |d: &RunData| -> Vec<Vec<(u64, f64)>> {
        d.scores
            .parameter_names()
            .into_iter()
            .map(|p| {
                d.scores
                    .series(&panel.dataset, p, &panel.criterion)
                    .into_iter()
                    .filter(|(_, v)| v.is_finite())
                    .collect()
            })
            .collect()
    };
    let mut values: Vec<f64> = Vec::new();
    for d in data {
        values.extend(
            d.best_per_iteration
                .get(&key)
                .into_iter()
                .flatten()
                .map(|p| p.1),
        );
        values.extend(d.best.get(&key).map(|b| b.value).filter(|v| v.is_finite()));
        if opts.all_parameters {
            values.extend(parameters(d).into_iter().flatten().map(|p| p.1));
        }
    }
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let y = padded(lo, hi);
    let direction = if panel.higher_is_better {
        "higher is better"
    } else {
        "lower is better"
    };
    let legend: Vec<LegendEntry> = data
        .iter()
        .filter(|d| d.best_per_iteration.contains_key(&key))
        .map(|d| LegendEntry {
            color: d.color,
            text: match d.best.get(&key) {
                Some(b) => format!(
                    "{}: best {} @ {} ({})",
                    d.name,
                    runs::fmt_num(b.value),
                    b.iteration,
                    b.parameter
                ),
                None => d.name.clone(),
            },
        })
        .collect();
    let area = title_and_legend(
        area,
        &format!("{} / {} ({direction})", panel.dataset, panel.criterion),
        &legend,
    )?;
    let mut chart = chart_builder(&area)
        .build_cartesian_2d(0..x_max, y.clone())
        .map_err(plot_err)?;
    configure_mesh(&mut chart, &area, &panel.criterion, y.end - y.start)?;

    for d in data {
        let color = d.color;
        if opts.all_parameters {
            for series in parameters(d) {
                chart
                    .draw_series(LineSeries::new(series, color.mix(0.3)))
                    .map_err(plot_err)?;
            }
        }
        let best = d.best.get(&key);
        if let Some(b) = best {
            // The best iteration: a faint vertical line under the marker.
            chart
                .draw_series(LineSeries::new(
                    [(b.iteration, y.start), (b.iteration, y.end)],
                    color.mix(0.35),
                ))
                .map_err(plot_err)?;
        }
        if let Some(series) = d.best_per_iteration.get(&key) {
            chart
                .draw_series(
                    LineSeries::new(series.iter().copied(), color.stroke_width(2)).point_size(3),
                )
                .map_err(plot_err)?;
        }
        if let Some(b) = best.filter(|b| b.value.is_finite()) {
            chart
                .draw_series([
                    Circle::new((b.iteration, b.value), 7, color.filled()),
                    Circle::new((b.iteration, b.value), 7, BLACK.stroke_width(2)),
                ])
                .map_err(plot_err)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moving_average_is_centred_and_narrows_at_the_ends() {
        let pts: Vec<(u64, f64)> = [1.0, 2.0, 3.0, 4.0, 8.0]
            .iter()
            .enumerate()
            .map(|(i, &v)| (i as u64 + 10, v))
            .collect();
        assert_eq!(
            moving_average(&pts, 3),
            vec![(10, 1.0), (11, 2.0), (12, 3.0), (13, 5.0), (14, 8.0)]
        );
        assert_eq!(moving_average(&pts, 2), moving_average(&pts, 3));
        assert_eq!(moving_average(&pts, 1), pts);
        assert_eq!(moving_average(&pts, 100)[2], (12, 3.6));
        assert_eq!(moving_average(&pts, 100)[1], (11, 2.0));
    }

    #[test]
    fn decimate_keeps_extremes_in_order() {
        let pts: Vec<(u64, f64)> = (0..100)
            .map(|i| (i, if i == 37 { 9.0 } else { 1.0 }))
            .collect();
        let d = decimate(&pts, 10);
        assert!(d.len() <= 12, "{}", d.len());
        assert!(d.contains(&(37, 9.0)));
        assert!(d.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(decimate(&pts[..5], 10), pts[..5].to_vec());
    }

    #[test]
    fn grid_prefers_three_by_two_panels() {
        assert_eq!(grid(1, 1200, 800), (1, 1));
        assert_eq!(grid(3, 1200, 800), (2, 2));
        assert_eq!(grid(9, 1200, 800), (3, 3));
        assert_eq!(grid(2, 1200, 800), (1, 2));
    }

    #[test]
    fn rounding_noise_is_labelled_zero() {
        // The quickstart's flat fnr: 0 on an axis from -0.5 to 0.8.
        assert_eq!(tick_label(-5.551115123125783e-17, 1.3), "0");
        assert_eq!(tick_label(0.2, 1.3), "0.2");
        assert_eq!(tick_label(1e-12, 0.0), "1e-12");
        assert_eq!(tick_label(2e-4, 1e-3), "2e-4");
    }

    #[test]
    fn legend_text_wraps_at_spaces_then_shortens() {
        // One pixel per character.
        let width = |t: &str| t.chars().count() as u32;
        assert_eq!(
            wrap_text("run: best 1 @ 5", 40, 2, width),
            ["run: best 1 @ 5"]
        );
        assert_eq!(
            wrap_text("run: best 0.9833 @ 750 (threshold=0)", 20, 2, width),
            ["run: best 0.9833 @", "750 (threshold=0)"]
        );
        let cut = wrap_text(
            "a-long-run-name: best 0.9833 @ 750 (threshold=0.25)",
            12,
            2,
            width,
        );
        assert_eq!(cut, ["a-long-run-…", "best 0.9833…"]);
        assert!(cut.iter().all(|l| width(l) <= 12));
        assert_eq!(shorten("abc", 0, &width), "");
    }

    #[test]
    fn padding_widens_ranges() {
        assert_eq!(padded(0.0, 1.0), -0.05..1.05);
        assert_eq!(padded(2.0, 2.0), 1.9..2.1);
        assert_eq!(padded(0.0, 0.0), -0.5..0.5);
        assert_eq!(padded(f64::INFINITY, f64::NEG_INFINITY), 0.0..1.0);
    }
}
