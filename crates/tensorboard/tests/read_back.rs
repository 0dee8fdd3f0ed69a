//! Event files of this crate read back by TensorBoard's own reader (the `tensorboard` Python
//! package): scalars, images and a restart that rewrites steps, each step shown once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;

use dacapo_tensorboard::testing::{self, ImageRead};
use dacapo_tensorboard::{EventWriter, summary};

fn image(bytes: &[u8]) -> summary::Image {
    summary::Image {
        height: 2,
        width: 5,
        colorspace: 1,
        encoded_image_string: bytes.to_vec(),
    }
}

#[test]
fn tensorboard_reads_scalars_images_and_a_restart() {
    let python = match testing::python() {
        Ok(p) => p,
        Err(reason) => {
            eprintln!("SKIPPED the TensorBoard read-back: {reason}");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();

    // First session: steps 0..10, an image at 4, then killed mid-record.
    let mut first = EventWriter::create(dir.path(), "host").unwrap();
    for step in 0..10 {
        first
            .scalars(
                step,
                1.0,
                &[("a", step as f32 * 0.5), ("b", -(step as f32))],
            )
            .unwrap();
    }
    first.image(4, 1.0, "img", image(b"first")).unwrap();
    first.sync().unwrap();
    let path = first.path().to_owned();
    drop(first);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(&[7, 0, 0, 0, 0, 0])
        .unwrap();

    // Resumed from step 6: steps 6..12 written again with other values, an image at 8.
    let mut second = EventWriter::create(dir.path(), "host").unwrap();
    second.session_start(6, 2.0, "checkpoint 6").unwrap();
    for step in 6..12 {
        second
            .scalars(step, 2.0, &[("a", 100.0 + step as f32)])
            .unwrap();
    }
    second.image(8, 2.0, "img", image(b"second")).unwrap();
    second.sync().unwrap();

    let back = testing::read_back(&python, dir.path()).unwrap();
    let a: Vec<(i64, f32)> = (0..6)
        .map(|s| (s, s as f32 * 0.5))
        .chain((6..12).map(|s| (s, 100.0 + s as f32)))
        .collect();
    assert_eq!(back.scalars["a"], a);
    let b: Vec<(i64, f32)> = (0..6).map(|s| (s, -(s as f32))).collect();
    assert_eq!(back.scalars["b"], b, "steps >= 6 of `b` were superseded");
    let read = |step, encoded: &[u8]| ImageRead {
        step,
        width: 5,
        height: 2,
        encoded: encoded.to_vec(),
    };
    assert_eq!(back.images["img"], [read(4, b"first"), read(8, b"second")]);
}
