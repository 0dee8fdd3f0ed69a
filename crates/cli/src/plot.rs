//! `dacapo plot`: training loss and validation scores of one or more runs, as PNG or SVG.
//!
//! One panel for the training loss (raw, faint, and a centred moving average; log scale when
//! it spans decades) and one panel per (dataset, criterion) with the score of the best
//! post-processing parameter at each validated iteration, the best iteration marked. Several
//! runs share the panels, one colour each. Text uses an embedded DejaVu Sans, so no system
//! font libraries are needed.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Once;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use dacapo_core::{BestDim, RunName, ValidationScores};
use dacapo_store::BestRecord;
use plotters::coord::Shift;
use plotters::coord::types::{RangedCoordf64, RangedCoordu64};
use plotters::coord::ranged1d::{AsRangedCoord, Ranged, ValueFormatter};
use plotters::prelude::*;
use plotters::style::FontStyle;

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

impl Panel {
    /// The (dataset, criterion) key of the panel's series in [`RunData`].
    fn key(&self) -> (String, String) {
        (self.dataset.clone(), self.criterion.clone())
    }
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
    let entries = data.iter().filter(|d| !d.loss.is_empty()).count();
    let top = legend_fraction(area.dim_in_pixel().1, entries);
    // A log axis only helps when the loss is positive and falls by decades.
    if lo > 0.0 && hi / lo >= 100.0 {
        let r = with_legend_room(lo.log10() - 0.1..hi.log10() + 0.1, top, 0.0);
        let y = (10f64.powf(r.start)..10f64.powf(r.end)).log_scale();
        loss_chart(area, data, x_max, y)
    } else {
        loss_chart(
            area,
            data,
            x_max,
            with_legend_room(padded(lo, hi), top, 0.0),
        )
    }
}

fn loss_chart<DB, Y>(
    area: &DrawingArea<DB, Shift>,
    data: &[RunData],
    x_max: u64,
    y: Y,
) -> Result<()>
where
    DB: DrawingBackend,
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let (_, h) = area.dim_in_pixel();
    let (caption, label, legend) = font_sizes(h);
    let mut chart = ChartBuilder::on(area)
        .caption(
            "training loss (faint: per step, bold: moving average)",
            ("sans-serif", caption),
        )
        .margin(12)
        .x_label_area_size(label * 3)
        .y_label_area_size(label * 5)
        .build_cartesian_2d(0..x_max, y)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("iteration")
        .y_desc("loss")
        .y_label_formatter(&|v| runs::fmt_tick(*v))
        .label_style(("sans-serif", label))
        .light_line_style(BLACK.mix(0.04))
        .bold_line_style(BLACK.mix(0.12))
        .draw()
        .map_err(plot_err)?;
    for d in data.iter().filter(|d| !d.loss.is_empty()) {
        chart
            .draw_series(LineSeries::new(
                decimate(&d.loss, MAX_POINTS),
                d.color.mix(0.25),
            ))
            .map_err(plot_err)?;
    }
    for d in data.iter().filter(|d| !d.loss.is_empty()) {
        let color = d.color;
        chart
            .draw_series(LineSeries::new(
                decimate(&d.smoothed, MAX_POINTS),
                color.stroke_width(2),
            ))
            .map_err(plot_err)?
            .label(format!("{} (average of {})", d.name, d.window))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font(("sans-serif", legend))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .draw()
        .map_err(plot_err)?;
    Ok(())
}

/// The share of a panel's plotting height that a legend of `entries` lines takes.
fn legend_fraction(area_h: u32, entries: usize) -> f64 {
    if entries == 0 {
        return 0.0;
    }
    let (caption, label, legend) = font_sizes(area_h);
    let plot_h = f64::from(area_h) - f64::from(caption) * 1.5 - f64::from(label) * 3.0 - 24.0;
    let legend_h = entries as f64 * f64::from(legend + 8) + 14.0;
    (legend_h / plot_h.max(1.0)).min(0.6)
}

/// `range` extended so that the top `top` and bottom `bottom` shares of the axis are free
/// for a legend.
fn with_legend_room(range: Range<f64>, top: f64, bottom: f64) -> Range<f64> {
    let keep = (1.0 - top - bottom).max(0.2);
    let total = (range.end - range.start) / keep;
    range.start - bottom * total..range.end + top * total
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
    let y = score_range(area, data, panel, opts);
    let (_, h) = area.dim_in_pixel();
    let (caption, label, legend) = font_sizes(h);
    let direction = if panel.higher_is_better {
        "higher is better"
    } else {
        "lower is better"
    };
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!("{} / {} ({direction})", panel.dataset, panel.criterion),
            ("sans-serif", caption),
        )
        .margin(12)
        .x_label_area_size(label * 3)
        .y_label_area_size(label * 5)
        .build_cartesian_2d(0..x_max, y.clone())
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("iteration")
        .y_desc(panel.criterion.as_str())
        .y_label_formatter(&|v| runs::fmt_tick(*v))
        .label_style(("sans-serif", label))
        .light_line_style(BLACK.mix(0.04))
        .bold_line_style(BLACK.mix(0.12))
        .draw()
        .map_err(plot_err)?;
    let mut labelled = false;
    for d in data {
        labelled |= draw_run_scores(&mut chart, d, panel, &y, opts)?;
    }
    if labelled {
        chart
            .configure_series_labels()
            .position(if panel.higher_is_better {
                SeriesLabelPosition::LowerRight
            } else {
                SeriesLabelPosition::UpperRight
            })
            .label_font(("sans-serif", legend))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .draw()
            .map_err(plot_err)?;
    }
    Ok(())
}

/// The finite `(iteration, score)` series of every parameter set of `d` in `panel`.
fn parameter_series(d: &RunData, panel: &Panel) -> Vec<Vec<(u64, f64)>> {
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
}

/// The y range of `panel`: every value drawn in it, padded, with room for the legend.
fn score_range<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    data: &[RunData],
    panel: &Panel,
    opts: &Options,
) -> Range<f64> {
    let key = panel.key();
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
            values.extend(
                parameter_series(d, panel)
                    .into_iter()
                    .flatten()
                    .map(|p| p.1),
            );
        }
    }
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let entries = data
        .iter()
        .filter(|d| d.best_per_iteration.contains_key(&key))
        .count();
    // The legend goes where curves of this criterion are not expected: low for
    // higher-is-better scores, which rise, and high for the others.
    let room = legend_fraction(area.dim_in_pixel().1, entries);
    if panel.higher_is_better {
        with_legend_room(padded(lo, hi), 0.0, room)
    } else {
        with_legend_room(padded(lo, hi), room, 0.0)
    }
}

/// Draws the scores of run `d` in `panel` (every parameter's faintly with
/// `--all-parameters`, the best per iteration, the best iteration marked); returns whether
/// it added a legend entry.
fn draw_run_scores<DB: DrawingBackend>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<RangedCoordu64, RangedCoordf64>>,
    d: &RunData,
    panel: &Panel,
    y: &Range<f64>,
    opts: &Options,
) -> Result<bool> {
    let key = panel.key();
    let color = d.color;
    if opts.all_parameters {
        for series in parameter_series(d, panel) {
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
    let mut labelled = false;
    if let Some(series) = d.best_per_iteration.get(&key) {
        let text = match best {
            Some(b) => format!(
                "{}: best {} @ {} ({})",
                d.name,
                runs::fmt_num(b.value),
                b.iteration,
                b.parameter
            ),
            None => d.name.clone(),
        };
        chart
            .draw_series(
                LineSeries::new(series.iter().copied(), color.stroke_width(2)).point_size(3),
            )
            .map_err(plot_err)?
            .label(text)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        labelled = true;
    }
    if let Some(b) = best.filter(|b| b.value.is_finite()) {
        chart
            .draw_series([
                Circle::new((b.iteration, b.value), 7, color.filled()),
                Circle::new((b.iteration, b.value), 7, BLACK.stroke_width(2)),
            ])
            .map_err(plot_err)?;
    }
    Ok(labelled)
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
    fn padding_widens_ranges() {
        assert_eq!(padded(0.0, 1.0), -0.05..1.05);
        assert_eq!(padded(2.0, 2.0), 1.9..2.1);
        assert_eq!(padded(0.0, 0.0), -0.5..0.5);
        assert_eq!(padded(f64::INFINITY, f64::NEG_INFINITY), 0.0..1.0);
    }
}
