//! `ObjectWeightsStore` beyond the conformance suite: the exact object layout, interrupted
//! uploads (files without a manifest), damaged objects, URL parsing, and remote errors
//! naming the store, run and iteration (on S3 when `DACAPO_TEST_S3_URL` is set).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use dacapo_store::conformance::data::{best, run_name, weights, weights_sized};
use dacapo_store::{StoreError, WeightsStore};
use dacapo_store_object::ObjectWeightsStore;
use dacapo_store_object::object_store::memory::InMemory;
use dacapo_store_object::object_store::path::Path as Key;
use dacapo_store_object::object_store::{ObjectStore, PutPayload};

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

fn keys(mem: &InMemory) -> Vec<String> {
    let listed = block_on(async {
        let mut out = Vec::new();
        let prefix = Key::from("p");
        let mut dirs = vec![prefix];
        while let Some(d) = dirs.pop() {
            let l = mem.list_with_delimiter(Some(&d)).await.unwrap();
            out.extend(l.objects.into_iter().map(|m| m.location.to_string()));
            dirs.extend(l.common_prefixes);
        }
        out
    });
    let mut listed = listed;
    listed.sort();
    listed
}

fn get(mem: &InMemory, key: &str) -> Vec<u8> {
    block_on(async {
        mem.get(&Key::from(key))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .to_vec()
    })
}

fn put(mem: &InMemory, key: &str, bytes: Vec<u8>) {
    block_on(mem.put(&Key::from(key), PutPayload::from(bytes))).unwrap();
}

fn setup() -> (Arc<InMemory>, ObjectWeightsStore) {
    let mem = Arc::new(InMemory::new());
    let store = ObjectWeightsStore::new(mem.clone(), "p", "memory://").unwrap();
    (mem, store)
}

#[test]
fn layout_is_the_local_stores() {
    let (mem, s) = setup();
    s.store_weights(&run_name("r"), 10, &weights(10)).unwrap();
    s.store_best(&run_name("r"), &best(10, "val0", "dice", 0.5))
        .unwrap();
    let dir = "p/r/checkpoints/iterations/10";
    assert_eq!(
        keys(&mem),
        vec![
            format!("{dir}/MANIFEST.json"),
            format!("{dir}/model.safetensors"),
            format!("{dir}/optimizer.safetensors"),
            format!("{dir}/state.json"),
            "p/r/val0/dice.json".to_owned(),
        ]
    );
    // The manifest is the local store's: it parses with the same checks.
    let manifest = dacapo_store::Manifest::from_json(
        &get(&mem, &format!("{dir}/MANIFEST.json")),
        10,
        std::path::Path::new("MANIFEST.json"),
    )
    .unwrap();
    let model = get(&mem, &format!("{dir}/model.safetensors"));
    let entry = &manifest.files["model.safetensors"];
    assert_eq!(entry.size, model.len() as u64);
    assert_eq!(entry.crc32c, crc32c::crc32c(&model));
    assert_eq!(entry.tensors, Some(weights(10).model.len()));
    // The files are what the local store writes, byte for byte.
    let tmp = tempfile::tempdir().unwrap();
    let local = dacapo_store::LocalWeightsStore::new(tmp.path()).with_fsync(false);
    local
        .store_weights(&run_name("r"), 10, &weights(10))
        .unwrap();
    let local_dir = local.checkpoint_dir(&run_name("r"), 10);
    for name in ["model.safetensors", "optimizer.safetensors", "state.json"] {
        assert_eq!(
            get(&mem, &format!("{dir}/{name}")),
            std::fs::read(local_dir.join(name)).unwrap(),
            "{name}"
        );
    }
}

#[test]
fn files_without_a_manifest_are_invisible_and_a_retry_replaces_them() {
    let (mem, s) = setup();
    s.store_weights(&run_name("r"), 10, &weights(10)).unwrap();
    // What a writer killed before its manifest PUT leaves behind.
    put(
        &mem,
        "p/r/checkpoints/iterations/20/model.safetensors",
        vec![1, 2, 3],
    );
    // Foreign entries are no checkpoints.
    put(&mem, "p/r/checkpoints/iterations/020/x", vec![1]);
    put(&mem, "p/r/checkpoints/iterations/tmp/x", vec![1]);
    assert_eq!(s.latest_iteration(&run_name("r")).unwrap(), Some(10));
    assert_eq!(s.iterations(&run_name("r")).unwrap(), vec![10]);
    let err = s.retrieve_weights(&run_name("r"), 20).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert!(
        err.to_string().contains("MANIFEST.json is missing"),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("memory://p/r/checkpoints/iterations/20/MANIFEST.json"),
        "{err}"
    );
    s.store_weights(&run_name("r"), 20, &weights(20)).unwrap();
    assert_eq!(s.latest_iteration(&run_name("r")).unwrap(), Some(20));
    assert_eq!(s.retrieve_weights(&run_name("r"), 20).unwrap(), weights(20));
    // Retention removes leftovers older than the newest checkpoint, and only those.
    put(
        &mem,
        "p/r/checkpoints/iterations/15/model.safetensors",
        vec![1],
    );
    put(
        &mem,
        "p/r/checkpoints/iterations/25/model.safetensors",
        vec![1],
    );
    assert_eq!(
        s.apply_retention(&run_name("r"), 2).unwrap(),
        Vec::<u64>::new()
    );
    let left = keys(&mem);
    assert!(!left.iter().any(|k| k.contains("/15/")), "{left:?}");
    assert!(left.iter().any(|k| k.contains("/25/")), "{left:?}");
    assert_eq!(s.iterations(&run_name("r")).unwrap(), vec![10, 20]);
}

#[test]
fn damaged_objects_fail_verification() {
    let (mem, s) = setup();
    s.store_weights(&run_name("r"), 10, &weights(10)).unwrap();
    s.store_weights(&run_name("r"), 20, &weights(20)).unwrap();
    // A flipped byte keeps the size: the quick check passes, retrieval catches it.
    let key = "p/r/checkpoints/iterations/20/optimizer.safetensors";
    let mut bytes = get(&mem, key);
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    put(&mem, key, bytes);
    assert_eq!(s.latest_iteration(&run_name("r")).unwrap(), Some(20));
    let err = s.retrieve_weights(&run_name("r"), 20).unwrap_err();
    assert!(err.to_string().contains("crc32c check failed"), "{err}");
    assert!(err.to_string().contains(key), "{err}");
    // A truncated file fails the quick check: the previous checkpoint is the latest.
    let key = "p/r/checkpoints/iterations/20/model.safetensors";
    let bytes = get(&mem, key);
    put(&mem, key, bytes[..bytes.len() - 1].to_vec());
    assert_eq!(s.latest_iteration(&run_name("r")).unwrap(), Some(10));
    assert_eq!(s.iterations(&run_name("r")).unwrap(), vec![10]);
    // Storing it again replaces the damaged checkpoint.
    s.store_weights(&run_name("r"), 20, &weights(20)).unwrap();
    assert_eq!(s.retrieve_weights(&run_name("r"), 20).unwrap(), weights(20));
    // A damaged state.json is caught by the quick check too.
    let key = "p/r/checkpoints/iterations/20/state.json";
    let mut bytes = get(&mem, key);
    bytes[3] ^= 1;
    put(&mem, key, bytes);
    assert_eq!(s.latest_iteration(&run_name("r")).unwrap(), Some(10));
}

#[test]
fn large_files_go_up_in_parts_and_remove_deletes_everything() {
    let (mem, s) = setup();
    let s = s.with_part_size(0);
    // About 12 MB of model tensors: three parts of the 5 MiB minimum.
    let w = weights_sized(5, 1 << 20);
    s.store_weights(&run_name("r"), 5, &w).unwrap();
    assert_eq!(s.retrieve_weights(&run_name("r"), 5).unwrap(), w);
    s.remove(&run_name("r"), 5).unwrap();
    assert!(keys(&mem).is_empty(), "{:?}", keys(&mem));
}

#[test]
fn urls_are_checked() {
    for bad in [
        "ftp://x/y",
        "s3://",
        "s3:///prefix",
        "s3://key:secret@bucket/p",
        "s3://bucket/p?region=x",
        "file://relative/dir",
        "/plain/path",
    ] {
        let err = ObjectWeightsStore::from_url(bad).unwrap_err();
        assert!(matches!(err, StoreError::Invalid(_)), "{bad}: {err}");
    }
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("file://{}/store/", tmp.path().display());
    let s = ObjectWeightsStore::from_url(&url).unwrap();
    assert_eq!(s.url(), url.trim_end_matches('/'));
    assert!(tmp.path().join("store").is_dir());
    let m = ObjectWeightsStore::from_url("memory://a/b").unwrap();
    assert_eq!(m.url(), "memory://a/b");
}

#[test]
fn remote_errors_name_the_store_run_and_iteration() {
    let Some(url) = common::s3_url("errors") else {
        return;
    };
    // The same server, a bucket that does not exist.
    let bucket_end = url["s3://".len()..].find('/').unwrap() + "s3://".len();
    let missing = format!("s3://dacapo-no-such-bucket{}", &url[bucket_end..]);
    let s = ObjectWeightsStore::from_url(&missing).unwrap();
    for (result, op) in [
        (s.latest_iteration(&run_name("r")).map(|_| ()), "run `r`"),
        (
            s.store_weights(&run_name("r"), 10, &weights(10)),
            "checkpoint 10 of run `r`",
        ),
        (s.remove(&run_name("r"), 10), "checkpoint 10 of run `r`"),
    ] {
        match result.unwrap_err() {
            StoreError::Remote { store, op: o, .. } => {
                assert_eq!(store, missing);
                assert!(o.contains(op), "{o}");
            }
            e => panic!("not a remote error: {e}"),
        }
    }
}
