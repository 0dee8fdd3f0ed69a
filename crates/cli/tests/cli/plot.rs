//! `dacapo plot` rendered to PNG and SVG files from synthetic runs written through the stores.

use crate::synthetic_runs::{at_root as dacapo, make_run};
use crate::util::{fails, ok, run_name};

/// Width, height and RGB pixels of a PNG, after checking the signature and IHDR by hand.
fn read_png(path: &std::path::Path) -> (u32, u32, Vec<u8>) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG signature");
    assert_eq!(&bytes[12..16], b"IHDR", "the first chunk must be IHDR");
    let be = |i: usize| u32::from_be_bytes(bytes[i..i + 4].try_into().unwrap());
    let (w, h) = (be(16), be(20));
    let mut reader = png::Decoder::new(std::io::Cursor::new(bytes))
        .read_info()
        .unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!((info.width, info.height), (w, h));
    assert_eq!(info.color_type, png::ColorType::Rgb);
    buf.truncate(info.buffer_size());
    (w, h, buf)
}

#[test]
fn png_has_the_requested_size_and_both_runs_colours() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    make_run(root, "alpha", 400, 100, 400);
    make_run(root, "beta", 1000, 100, 250);
    let out = root.join("curves.png");
    let stdout = ok(&dacapo(
        root,
        &[
            "plot",
            "alpha",
            "beta",
            "-o",
            out.to_str().unwrap(),
            "--width",
            "900",
            "--height",
            "600",
        ],
    ));
    assert_eq!(stdout, format!("wrote {}\n", out.display()));
    let (w, h, rgb) = read_png(&out);
    assert_eq!((w, h), (900, 600));
    let count = |c: [u8; 3]| rgb.chunks(3).filter(|p| *p == c).count();
    // Bold lines in the first two tab10 colours, one per run, and a white background.
    assert!(count([31, 119, 180]) > 500, "too little of alpha's blue");
    assert!(count([255, 127, 14]) > 500, "too little of beta's orange");
    assert!(count([255, 255, 255]) > (w * h / 2) as usize);
}

#[test]
fn svg_parses_with_the_requested_size_and_panels() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    make_run(root, "alpha", 400, 100, 400);
    let out = root.join("curves.svg");
    ok(&dacapo(
        root,
        &[
            "plot",
            "alpha",
            "-o",
            out.to_str().unwrap(),
            "--width",
            "640",
            "--height",
            "480",
        ],
    ));
    let text = std::fs::read_to_string(&out).unwrap();
    let doc = roxmltree::Document::parse(&text).unwrap();
    let svg = doc.root_element();
    assert_eq!(svg.tag_name().name(), "svg");
    assert_eq!(svg.attribute("width"), Some("640"));
    assert_eq!(svg.attribute("height"), Some("480"));
    let texts: Vec<String> = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text())
        .map(|t| t.trim().to_owned())
        .collect();
    let has = |s: &str| texts.iter().any(|t| t == s);
    assert!(
        has("training loss (faint: per step, bold: moving average)"),
        "{texts:?}"
    );
    assert!(has("val0 / dice (higher is better)"), "{texts:?}");
    assert!(has("val0 / voi (lower is better)"), "{texts:?}");
    assert!(
        has("alpha: best 0.9000 @ 200 (threshold=0.50)"),
        "{texts:?}"
    );
    assert!(
        has("alpha: best 0.4000 @ 400 (threshold=0.25)"),
        "{texts:?}"
    );
    // The loss falls from about 1 to 0.006: a log axis with decade ticks.
    assert!(has("0.01") && has("0.1") && has("1"), "{texts:?}");
}

#[test]
fn filters_pick_the_panels() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    make_run(root, "alpha", 400, 100, 400);
    let out = root.join("dice.svg");
    ok(&dacapo(
        root,
        &["plot", "alpha", "-c", "dice", "-o", out.to_str().unwrap()],
    ));
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.contains("val0 / dice"));
    assert!(!text.contains("val0 / voi"));
    let err = fails(&dacapo(
        root,
        &["plot", "alpha", "-c", "dcie", "-o", out.to_str().unwrap()],
    ));
    assert!(
        err.contains("--criterion dcie") && err.contains("known: dice, voi"),
        "{err}"
    );
}

#[test]
fn errors_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    make_run(root, "alpha", 400, 100, 400);
    let png = root.join("x.png");
    let png = png.to_str().unwrap();
    let err = fails(&dacapo(
        root,
        &["plot", "alpha", "-o", &png.replace(".png", ".jpg")],
    ));
    assert!(err.contains("*.png or *.svg"), "{err}");
    let err = fails(&dacapo(root, &["plot", "nope", "-o", png]));
    assert!(
        err.contains("no run `nope`") && err.contains("alpha"),
        "{err}"
    );
    // A run that has not trained a step yet has nothing to plot.
    make_run(root, "fresh", 400, 100, 0);
    let err = fails(&dacapo(root, &["plot", "fresh", "-o", png]));
    assert!(err.contains("nothing to plot"), "{err}");
    assert!(!root.join("x.png").exists());
    let missing = root.join("no-such-dir").join("x.png");
    let err = fails(&dacapo(
        root,
        &["plot", "alpha", "-o", missing.to_str().unwrap()],
    ));
    assert!(
        err.contains("cannot write") && err.contains("no-such-dir"),
        "{err}"
    );
}

/// A text element of an SVG.
#[derive(Debug)]
struct SvgText {
    x: f64,
    y: f64,
    size: f64,
    /// Left-aligned: only legend lines are.
    start: bool,
    text: String,
}

/// The text elements of an SVG, rotated ones (axis titles) left out.
fn svg_texts(doc: &roxmltree::Document) -> Vec<SvgText> {
    let num = |n: &roxmltree::Node, a: &str| n.attribute(a).unwrap().parse::<f64>().unwrap();
    doc.descendants()
        .filter(|n| n.has_tag_name("text") && n.attribute("transform").is_none())
        .map(|n| SvgText {
            x: num(&n, "x"),
            y: num(&n, "y"),
            size: num(&n, "font-size"),
            start: n.attribute("text-anchor") == Some("start"),
            text: n.text().unwrap_or_default().trim().to_owned(),
        })
        .collect()
}

/// Width in pixels of `text` in the plot's font at `size`.
fn text_width(text: &str, size: f64) -> f64 {
    use ab_glyph::{Font, FontRef, ScaleFont};
    let font = FontRef::try_from_slice(include_bytes!("../../assets/DejaVuSans.ttf")).unwrap();
    let font = font.as_scaled(size as f32);
    text.chars()
        .map(|c| f64::from(font.h_advance(font.glyph_id(c))))
        .sum()
}

#[test]
fn legends_sit_above_the_curves_and_inside_the_panel() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let name = "a-run-with-a-rather-long-name";
    make_run(root, name, 400, 100, 400);
    let out = root.join("narrow.svg");
    // One column: the loss panel over the dice panel, each 400 pixels high.
    ok(&dacapo(
        root,
        &[
            "plot",
            name,
            "-c",
            "dice",
            "-o",
            out.to_str().unwrap(),
            "--width",
            "360",
            "--height",
            "800",
        ],
    ));
    let text = std::fs::read_to_string(&out).unwrap();
    let doc = roxmltree::Document::parse(&text).unwrap();
    // Curves: the run's colour, 2 pixels wide, more points than a legend sample.
    let mut curve_points: Vec<(f64, f64)> = Vec::new();
    for n in doc.descendants().filter(|n| n.has_tag_name("polyline")) {
        let points: Vec<(f64, f64)> = n
            .attribute("points")
            .unwrap()
            .split_whitespace()
            .map(|p| {
                let (x, y) = p.split_once(',').unwrap();
                (x.parse().unwrap(), y.parse().unwrap())
            })
            .collect();
        if n.attribute("stroke") == Some("#1F77B4") && points.len() > 2 {
            curve_points.extend(points);
        }
    }
    assert!(!curve_points.is_empty());
    let legend: Vec<SvgText> = svg_texts(&doc).into_iter().filter(|t| t.start).collect();
    // The legends do not fit 360 pixels on one line: they wrap, nothing is lost.
    let lines = |top: bool| -> String {
        let lines: Vec<&str> = legend
            .iter()
            .filter(|t| (t.y < 400.0) == top)
            .map(|t| t.text.as_str())
            .collect();
        assert_eq!(lines.len(), 2, "{legend:?}");
        lines.join(" ")
    };
    assert_eq!(lines(true), format!("{name} (average of 8)"));
    assert_eq!(
        lines(false),
        format!("{name}: best 0.9000 @ 200 (threshold=0.50)")
    );
    for t in &legend {
        let line = &t.text;
        assert!(
            t.x + text_width(line, t.size) <= 360.0,
            "{line:?} runs past the edge"
        );
        let panel = (t.y / 400.0).floor();
        for &(px, py) in &curve_points {
            if (py / 400.0).floor() == panel {
                assert!(
                    py > t.y + t.size,
                    "curve point ({px}, {py}) under legend {line:?}"
                );
            }
        }
    }
}

#[test]
fn flat_series_get_plain_tick_labels() {
    use dacapo_core::{Score, ValidationIterationScores};
    use dacapo_store::{FileStatsStore, StatsStore};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    make_run(root, "flat", 400, 100, 400);
    // voi 0 at every validation: the axis is centred on 0.
    let store = FileStatsStore::new(root);
    let stored = store
        .retrieve_validation_iteration_scores(&run_name("flat"))
        .unwrap();
    let flat = stored
        .subscores(stored.scores().iter().map(|s| {
            let mut s: ValidationIterationScores = s.clone();
            for per_param in s.scores.values_mut().flat_map(|d| d.values_mut()) {
                per_param.insert("voi".into(), Score(0.0));
            }
            s
        }))
        .unwrap();
    store
        .store_validation_iteration_scores(&run_name("flat"), &flat)
        .unwrap();
    let out = root.join("flat.svg");
    ok(&dacapo(
        root,
        &["plot", "flat", "-c", "voi", "-o", out.to_str().unwrap()],
    ));
    let text = std::fs::read_to_string(&out).unwrap();
    let doc = roxmltree::Document::parse(&text).unwrap();
    let texts: Vec<String> = svg_texts(&doc).into_iter().map(|t| t.text).collect();
    assert!(texts.iter().any(|t| t == "0"), "{texts:?}");
    assert!(
        !texts.iter().any(|t| t.contains("e-1") || t.contains("e-2")),
        "rounding noise as a tick label: {texts:?}"
    );
}
