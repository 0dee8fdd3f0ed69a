//! `dacapo plot` rendered to PNG and SVG files from synthetic runs written through the stores.

use crate::synthetic_runs::{at_root as dacapo, make_run};
use crate::util::{fails, ok};

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
