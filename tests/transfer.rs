//! End-to-end smoke test of the VGG16 workflow: all three stages, through the command line, on a
//! few dozen of the shared images at 32x32 (VGG16's base ends at 1x1x512 there).

use std::path::Path;
use std::process::Command;

fn cli() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cnn-wgpu"))
}

fn copy_subset(shared: &Path, to: &Path, per_class: &[(&str, usize)]) {
    for (split, n) in per_class {
        for class in ["cats", "dogs"] {
            let src = shared
                .join("data/cats_and_dogs_small")
                .join(split)
                .join(class);
            let dst = to.join(split).join(class);
            std::fs::create_dir_all(&dst).unwrap();
            let mut files: Vec<_> = std::fs::read_dir(&src)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            files.sort();
            for f in files.iter().take(*n) {
                std::fs::copy(f, dst.join(f.file_name().unwrap())).unwrap();
            }
        }
    }
}

#[test]
fn three_stages_end_to_end_on_a_few_dozen_images() {
    let shared = cnn_wgpu::bench::shared_dir();
    let weights = shared.join("weights/vgg16_notop.safetensors");
    if !weights.is_file() || !shared.join("data/cats_and_dogs_small").is_dir() {
        eprintln!(
            "skipped: shared data or VGG16 weights not found under {} (set CNN_WGPU_SHARED)",
            shared.display()
        );
        return;
    }
    if cnn_wgpu::gpu::select::choose(&cnn_wgpu::AdapterRequest::default()).is_err() {
        assert!(
            std::env::var_os("CNN_WGPU_REQUIRE_GPU").is_none(),
            "no adapter but CNN_WGPU_REQUIRE_GPU is set"
        );
        eprintln!("skipped: no GPU adapter");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    copy_subset(
        &shared,
        &data,
        &[("train", 12), ("validation", 6), ("test", 6)],
    );
    let runs = tmp.path().join("runs");
    let common = |c: &mut Command, out: &str| {
        c.arg("--data")
            .arg(&data)
            .arg("--weights")
            .arg(&weights)
            .args(["--image-size", "32", "--batch", "8", "--epochs", "2"])
            .arg("--out")
            .arg(runs.join(out));
    };
    let check = |out: &Command, name: &str| {
        let _ = out;
        let dir = runs.join(name);
        for f in [
            "config.json",
            "history.json",
            "history.csv",
            "best.safetensors",
            "last.safetensors",
            "metrics.json",
            "curves.png",
        ] {
            assert!(dir.join(f).is_file(), "{name}/{f} missing");
        }
        let m: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("metrics.json")).unwrap())
                .unwrap();
        let acc = m["test_accuracy"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&acc), "{m}");
        assert_eq!(m["epochs"], 2, "{m}");
    };

    let mut c = cli();
    c.arg("extract");
    common(&mut c, "extract");
    let run = c.output().unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    check(&c, "extract");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        stdout.contains("1: feature extraction") && stdout.contains("test acc"),
        "{stdout}"
    );
    for split in ["train", "validation", "test"] {
        assert!(runs
            .join(format!("extract/features/{split}-block5_pool.safetensors"))
            .is_file());
    }
    // A second run reuses the cached features.
    let mut again = cli();
    again.arg("extract");
    common(&mut again, "extract");
    let run = again.output().unwrap();
    assert!(
        run.status.success()
            && String::from_utf8_lossy(&run.stderr).contains("reusing block5_pool features"),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );

    let mut c = cli();
    c.args(["finetune", "--stage", "frozen"]);
    common(&mut c, "frozen");
    let run = c.output().unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(String::from_utf8_lossy(&run.stderr).contains("4 trainable weight tensors"));
    check(&c, "frozen");

    let mut c = cli();
    c.args(["finetune", "--stage", "block5", "--from"])
        .arg(runs.join("frozen/best.safetensors"));
    common(&mut c, "block5");
    let run = c.output().unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(String::from_utf8_lossy(&run.stderr).contains("10 trainable weight tensors"));
    check(&c, "block5");

    // Without augmentation stage 3 trains on cached block4_pool outputs and says how much faster.
    let mut c = cli();
    c.args(["finetune", "--stage", "block5", "--no-augment", "--from"])
        .arg(runs.join("frozen/best.safetensors"));
    common(&mut c, "block5-cached");
    let run = c.output().unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    check(&c, "block5-cached");
    let m: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(runs.join("block5-cached/metrics.json")).unwrap(),
    )
    .unwrap();
    assert!(m["prefix_cache_speedup"].as_f64().unwrap() > 1.0, "{m}");
    assert!(runs
        .join("block5-cached/features/train-block4_pool.safetensors")
        .is_file());
    // Its checkpoint is the whole classifier: it evaluates on images.
    let run = cli()
        .args(["evaluate", "--checkpoint"])
        .arg(runs.join("block5-cached/best.safetensors"))
        .arg("--data")
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );

    // The main job run in `cwd` with these extra arguments must fail; its stderr.
    let main_job_error = |cwd: &std::path::Path, extra: &[&std::ffi::OsStr]| {
        let run = cli()
            .current_dir(cwd)
            .args(extra)
            .arg("--data")
            .arg(&data)
            .output()
            .unwrap();
        assert!(!run.status.success());
        String::from_utf8_lossy(&run.stderr).into_owned()
    };

    // The main job without weights says how to get them.
    let none = tmp.path().join("none.safetensors");
    let err = main_job_error(tmp.path(), &["--weights".as_ref(), none.as_os_str()]);
    assert!(
        err.contains("no VGG16 weights") && err.contains("weights/README.md"),
        "{err}"
    );

    // Without --weights the Keras file is looked for first, then the pinned download's name.
    let cwd = tempfile::tempdir().unwrap();
    let err = main_job_error(cwd.path(), &[]);
    assert!(
        err.contains("weights/vgg16_notop.safetensors")
            && err.contains("cargo xtask fetch-weights"),
        "{err}"
    );
    std::fs::create_dir(cwd.path().join("weights")).unwrap();
    std::fs::write(
        cwd.path().join("weights/vgg16_tv_in1k.safetensors"),
        b"not safetensors",
    )
    .unwrap();
    let err = main_job_error(cwd.path(), &[]);
    assert!(err.contains("vgg16_tv_in1k.safetensors"), "{err}");
}
