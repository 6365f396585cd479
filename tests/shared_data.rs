//! The shared folder the suite and the benches read, checked whole: every file the tests need,
//! the book's split complete, and the files with published checksums intact. Where
//! CNN_WGPU_REQUIRE_SHARED is set (CI sets it), a missing or partial folder fails here, naming
//! what is missing, even where no other test happens to read that file.

mod common;

use std::path::Path;

use sha2::{Digest, Sha256};

const FILES: [&str; 10] = [
    "weights/vgg16_notop.safetensors",
    "weights/SHA256SUMS",
    "fixtures/vgg16_golden.safetensors",
    "data/mnist/t10k-images-idx3-ubyte.gz",
    "data/mnist/t10k-labels-idx1-ubyte.gz",
    "data/mnist/SHA256SUMS",
    "data/cats_and_dogs_small/train",
    "data/cats_and_dogs_small/validation",
    "data/cats_and_dogs_small/test",
    "bench/workloads.json",
];

/// Checks every `<sha256>  <name>` line of `dir/SHA256SUMS` against the file beside it.
fn check_sums(dir: &Path) {
    let sums = std::fs::read_to_string(dir.join("SHA256SUMS")).unwrap();
    let mut checked = 0;
    for line in sums.lines().filter(|l| !l.trim().is_empty()) {
        let (want, name) = line.split_once("  ").expect("`<sha256>  <name>` lines");
        let path = dir.join(name.trim());
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let got: String = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            got,
            want,
            "{} does not match its SHA256SUMS line",
            path.display()
        );
        checked += 1;
    }
    assert!(checked > 0, "{}/SHA256SUMS lists no file", dir.display());
}

#[test]
fn the_shared_folder_is_complete() {
    let Some(dir) = common::shared(&FILES) else {
        return;
    };
    // The book's split: 1000 / 500 / 500 images per class.
    for (split, per_class) in [("train", 1000), ("validation", 500), ("test", 500)] {
        for class in ["cats", "dogs"] {
            let folder = dir.join("data/cats_and_dogs_small").join(split).join(class);
            let images = std::fs::read_dir(&folder)
                .unwrap_or_else(|e| panic!("{}: {e}", folder.display()))
                .filter(|e| {
                    let p = e.as_ref().unwrap().path();
                    p.extension().is_some_and(|x| x == "jpg") && p.metadata().unwrap().len() > 0
                })
                .count();
            assert_eq!(
                images,
                per_class,
                "{} holds {images} non-empty JPEGs, the book's split has {per_class}",
                folder.display()
            );
        }
    }
    check_sums(&dir.join("data/mnist"));
    check_sums(&dir.join("weights"));
    let workloads: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("bench/workloads.json")).unwrap())
            .expect("bench/workloads.json is JSON");
    assert!(workloads.is_object() || workloads.is_array());
}
