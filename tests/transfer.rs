//! End to end, through the command line, the VGG16 workflow's three stages and the commands that
//! use their checkpoints (evaluate, predict): on a few dozen of the shared images with the real
//! weights, and everywhere on synthetic images with synthetic weights of VGG16's shapes, at
//! 32x32 (VGG16's base ends at 1x1x512 there). Each stage's reported test metrics are checked
//! against an independent computation: stage 1's head recomputed on the CPU in f64 from its
//! checkpoint and cached features, the later stages by `evaluate`, and `evaluate` by `predict`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use cnn_wgpu::data::{Dataset, DirectoryDataset};
use cnn_wgpu::train::checkpoint;
use common::*;
use rand::{Rng, SeedableRng};

/// The binary, run from a folder outside the repository (every path the tests give is
/// absolute), as an installed binary is.
fn cli() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cnn-wgpu"));
    c.current_dir(std::env::temp_dir());
    c
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

/// Cats reddish, dogs bluish, each image with its own gradient and noise: 40x40 PNGs.
fn synthetic_images(to: &Path, per_class: &[(&str, usize)]) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    for (split, n) in per_class {
        for (class, tint) in [("cats", [200u8, 60, 40]), ("dogs", [40, 70, 210])] {
            let dir = to.join(split).join(class);
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..*n {
                let slope: f32 = rng.random_range(-1.5..1.5);
                let noise: Vec<f32> = (0..40 * 40 * 3)
                    .map(|_| rng.random_range(-25.0..25.0))
                    .collect();
                image::RgbImage::from_fn(40, 40, |x, y| {
                    let k = ((y * 40 + x) * 3) as usize;
                    let g = slope * (x as f32 - 20.0);
                    image::Rgb(std::array::from_fn(|c| {
                        (f32::from(tint[c]) + g + noise[k + c]).clamp(0.0, 255.0) as u8
                    }))
                })
                .save(dir.join(format!("{class}.{i}.png")))
                .unwrap();
            }
        }
    }
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Label 1 for the images under a `dogs` folder (the second class in sorted order).
fn label(path: &Path) -> f64 {
    f64::from(u8::from(path.parent().unwrap().ends_with("dogs")))
}

/// Stage 1's reported test loss and accuracy against its head recomputed on the CPU, in f64,
/// from last.safetensors (the weights the stage evaluated with) and the cached test features.
fn check_stage1_on_the_cpu(run: &Path, data: &Path) {
    let m = json(&run.join("metrics.json"));
    let ck = run.join("last.safetensors");
    let spec = checkpoint::read_spec(&ck).unwrap();
    let bytes = std::fs::read(&ck).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut params = Values::new();
    for i in 0..spec.layers.len() {
        for (name, _) in spec.param_shapes(i).unwrap() {
            let t = st.tensor(&name).unwrap();
            params.insert(
                name,
                to_f64(&bytemuck::pod_collect_to_vec::<u8, f32>(t.data())),
            );
        }
    }
    let fbytes = std::fs::read(run.join("features/test-block5_pool.safetensors")).unwrap();
    let fst = safetensors::SafeTensors::deserialize(&fbytes).unwrap();
    let feats = fst.tensor("features").unwrap();
    let n = feats.shape()[0];
    let x = to_f64(&bytemuck::pod_collect_to_vec::<u8, f32>(feats.data()));
    let test = DirectoryDataset::open(&data.join("test"), (32, 32), 2).unwrap();
    assert_eq!(test.len(), n, "a feature row per test image");
    let y: Vec<f64> = (0..n).map(|i| label(test.path(i))).collect();
    let z = cpu_logits(&spec, &params, &Default::default(), &x, n);
    let correct = z
        .iter()
        .zip(&y)
        .filter(|(z, y)| (**z > 0.0) == (**y == 1.0))
        .count();
    let (loss, acc) = (cpu_loss(&z, &y, n), correct as f64 / n as f64);
    let (got_loss, got_acc) = (
        m["test_loss"].as_f64().unwrap(),
        m["test_accuracy"].as_f64().unwrap(),
    );
    assert!(
        (got_acc - acc).abs() < 1e-9 && (got_loss - loss).abs() <= 1e-4 * loss + 1e-5,
        "stage 1 reports test loss {got_loss}, accuracy {got_acc}; its head on the CPU gives {loss}, {acc}"
    );
}

/// `evaluate` on the test split agrees with what the stage reported, and `predict` on every
/// test image agrees with `evaluate`: the accuracy exactly, the binary cross-entropy of the
/// printed probabilities within their 4-decimal rounding.
fn check_with_evaluate_and_predict(run: &Path, data: &Path) {
    let m = json(&run.join("metrics.json"));
    let ck = run.join("last.safetensors");
    let out = run.join("evaluation-test.json");
    let eval = cli()
        .args(["evaluate", "--checkpoint"])
        .arg(&ck)
        .arg("--data")
        .arg(data)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        eval.status.success(),
        "{}",
        String::from_utf8_lossy(&eval.stderr)
    );
    let e = json(&out);
    let (loss, acc) = (e["loss"].as_f64().unwrap(), e["accuracy"].as_f64().unwrap());
    assert!(
        (acc - m["test_accuracy"].as_f64().unwrap()).abs() < 1e-9
            && (loss - m["test_loss"].as_f64().unwrap()).abs() <= 1e-5 * loss + 1e-6,
        "evaluate gives {e}, the stage reported {m}"
    );

    let test = DirectoryDataset::open(&data.join("test"), (32, 32), 2).unwrap();
    let paths: Vec<_> = (0..test.len())
        .map(|i| test.path(i).to_path_buf())
        .collect();
    let run_predict = cli()
        .args(["predict", "--checkpoint"])
        .arg(&ck)
        .args(&paths)
        .output()
        .unwrap();
    assert!(
        run_predict.status.success(),
        "{}",
        String::from_utf8_lossy(&run_predict.stderr)
    );
    let stdout = String::from_utf8_lossy(&run_predict.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        paths.len() + 1,
        "a header and a row per image: {stdout}"
    );
    assert!(
        lines[0].starts_with("file") && lines[0].ends_with("class        probability"),
        "{stdout}"
    );
    let json_run = cli()
        .args(["predict", "--json", "--checkpoint"])
        .arg(&ck)
        .args(&paths)
        .output()
        .unwrap();
    assert!(json_run.status.success());
    let rows: serde_json::Value = serde_json::from_slice(&json_run.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), paths.len());
    let (mut correct, mut bce, mut slack) = (0, 0.0, 0.0);
    for ((line, path), row) in lines[1..].iter().zip(&paths).zip(rows) {
        // "<path>  <class> <probability of that class>"
        let mut fields = line.split_whitespace();
        assert_eq!(
            fields.next(),
            Some(path.display().to_string().as_str()),
            "{line}"
        );
        let class = fields.next().unwrap();
        let p_class: f64 = fields.next().unwrap().parse().unwrap();
        assert!((0.5..=1.0).contains(&p_class), "{line}");
        // The JSON says the same, with both classes' probabilities summing to 1.
        assert_eq!(row["file"], path.display().to_string());
        assert_eq!(row["class"], class);
        let (pc, pd) = (
            row["probabilities"]["cats"].as_f64().unwrap(),
            row["probabilities"]["dogs"].as_f64().unwrap(),
        );
        assert!((pc + pd - 1.0).abs() < 1e-6, "{row}");
        assert!(
            (row["probability"].as_f64().unwrap() - p_class).abs() <= 5e-5,
            "{row} vs {line}"
        );
        // p(dogs), rounded as printed.
        let p = if class == "dogs" {
            p_class
        } else {
            1.0 - p_class
        };
        assert_eq!(class, if pd > 0.5 { "dogs" } else { "cats" }, "{line}");
        let y = label(path);
        correct += usize::from((p > 0.5) == (y == 1.0));
        let q = if y == 1.0 { p } else { 1.0 - p };
        bce -= q.max(1e-12).ln();
        // d(-ln q)/dq = -1/q: a rounding of 5e-5 in q moves the loss by up to 5e-5/q.
        slack += 5e-5 / (q - 5e-5).max(1e-12);
    }
    let n = paths.len() as f64;
    assert!(
        (correct as f64 / n - acc).abs() < 1e-9,
        "predict is right on {correct} of {n} images, evaluate says accuracy {acc}"
    );
    assert!(
        (bce / n - loss).abs() <= slack / n + 1e-6,
        "predict's probabilities give a loss of {}, evaluate {loss}",
        bce / n
    );

    let missing = data.join("no-such.png");
    let run_predict = cli()
        .args(["predict", "--checkpoint"])
        .arg(&ck)
        .arg(&missing)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&run_predict.stderr);
    assert!(
        !run_predict.status.success() && err.contains("no-such.png"),
        "{err}"
    );
}

/// The main job's plan on this (software) adapter, without running it: the short schedule
/// unless epochs are given, the images of each split, a time per stage, the command for the
/// book's schedule; nothing written.
fn main_job_plans(data: &Path, weights: &Path, tmp: &Path) {
    let runs = tmp.join("planned-runs");
    let plan = |extra: &[&str]| {
        let run = cli()
            .arg("--data")
            .arg(data)
            .arg("--weights")
            .arg(weights)
            .arg("--runs")
            .arg(&runs)
            .args(["--image-size", "32", "--plan"])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        String::from_utf8_lossy(&run.stdout).into_owned()
    };
    let out = plan(&[]);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].contains("the schedule for a software adapter")
            && lines[0].contains("cargo run --release -- --book"),
        "{out}"
    );
    let (f, b) = cnn_wgpu::transfer::Schedule::SOFTWARE;
    let epochs = |e: usize| {
        format!(
            "{e:>3} epoch{} x 24 images (+12 validation), then 12 test",
            if e == 1 { " " } else { "s" }
        )
    };
    let rows = [
        (
            "frozen blocks once per image",
            format!(
                "48 images + {} augmented views of the 24 training images",
                f.max(b)
            ),
        ),
        (
            "stage 1, head on cached features",
            format!("{}, RMSprop 2e-5", epochs(30)),
        ),
        (
            "stage 2, frozen base + augmentation",
            format!("{}, cached views, RMSprop 2e-5", epochs(f)),
        ),
        (
            "stage 3, block5 fine-tuning",
            format!(
                "{}, cached views, RMSprop {:e}",
                epochs(b),
                cnn_wgpu::transfer::Schedule::SOFTWARE_BLOCK5_LR
            ),
        ),
    ];
    for (line, (name, what)) in lines[1..].iter().zip(rows) {
        assert!(
            line.contains(name) && line.contains(&format!("{what}: about ")),
            "{name}: {what} in {out}"
        );
    }
    assert!(
        lines[5].contains("in all about") && lines[5].contains("through blocks 1-4"),
        "{out}"
    );
    assert!(!runs.exists(), "a plan writes nothing");

    let out = plan(&["--epochs", "5", "--finetune-epochs", "2"]);
    assert!(
        out.contains("(the epochs given)")
            && out.contains("  5 epochs x 24")
            && out.contains("  2 epochs x 24")
            && out.contains("5 augmented views"),
        "{out}"
    );
    let out = plan(&["--book"]);
    assert!(
        out.contains("(the book's schedule)")
            && !out.contains("stage 1")
            && out.contains(" 30 epochs x 24")
            && out.contains("100 epochs x 24")
            && out.contains("per stage-2 step image"),
        "{out}"
    );
    let out = plan(&["--stream", "--epochs", "1", "--finetune-epochs", "1"]);
    assert!(
        out.contains("stage 1, head on cached features")
            && !out.contains("cached views")
            && out.contains("  1 epoch  x 24"),
        "{out}"
    );
    assert!(!runs.exists(), "a plan writes nothing");
    // Flags that contradict each other are refused before any work.
    let run = cli()
        .args(["--book", "--epochs", "3", "--plan"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        !run.status.success() && err.contains("--book") && err.contains("--epochs"),
        "{err}"
    );
    // So are epochs a stage cannot run and learning rates that cannot train.
    for (bad, says) in [
        (&["--epochs", "0"][..], "0 is not in 1.."),
        (
            &["--finetune-lr=-1"][..],
            "--finetune-lr -1: a learning rate must be",
        ),
        (
            &["--head-lr", "NaN"][..],
            "--head-lr NaN: a learning rate must be",
        ),
    ] {
        let run = cli()
            .arg("--data")
            .arg(data)
            .arg("--weights")
            .arg(weights)
            .arg("--runs")
            .arg(&runs)
            .args(bad)
            .arg("--plan")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&run.stderr);
        assert!(
            !run.status.success() && err.contains(says) && !err.contains("measuring"),
            "{bad:?}: {err}"
        );
    }
}

#[test]
fn the_schedule_follows_the_adapter_unless_epochs_are_given() {
    use cnn_wgpu::transfer::{Schedule, ScheduleKind, ScheduleRequest};
    let pick = |software, r: ScheduleRequest| {
        let s = Schedule::choose(software, r);
        (
            s.head_epochs,
            s.frozen_epochs,
            s.block5_epochs,
            s.cached,
            s.kind,
        )
    };
    let none = ScheduleRequest::default();
    assert_eq!(
        pick(false, none),
        (None, 30, 100, false, ScheduleKind::Book)
    );
    let (f, b) = Schedule::SOFTWARE;
    assert_eq!(
        pick(true, none),
        (Some(30), f, b, true, ScheduleKind::Software)
    );
    // --book on a software adapter: the book's, streamed, no stage 1.
    let book = ScheduleRequest { book: true, ..none };
    assert_eq!(pick(true, book), (None, 30, 100, false, ScheduleKind::Book));
    // A stage given keeps the adapter's default for the other.
    let r = ScheduleRequest {
        block5_epochs: Some(7),
        ..none
    };
    assert_eq!(pick(true, r), (Some(30), f, 7, true, ScheduleKind::Given));
    let r = ScheduleRequest {
        frozen_epochs: Some(3),
        ..none
    };
    assert_eq!(pick(false, r), (None, 3, 100, false, ScheduleKind::Given));
    // --warm-start on a GPU: stage 1, then the book's epochs, streamed (100 views would not fit).
    let r = ScheduleRequest {
        warm_start: true,
        ..none
    };
    assert_eq!(
        pick(false, r),
        (Some(30), 30, 100, false, ScheduleKind::Given)
    );
    // Short enough to cache: cached views on any adapter, unless streaming is asked for.
    let r = ScheduleRequest {
        head_epochs: Some(10),
        frozen_epochs: Some(2),
        block5_epochs: Some(Schedule::MAX_VIEWS),
        ..none
    };
    assert_eq!(
        pick(false, r),
        (Some(10), 2, Schedule::MAX_VIEWS, true, ScheduleKind::Given)
    );
    let r = ScheduleRequest { stream: true, ..r };
    assert_eq!(
        pick(false, r),
        (Some(10), 2, Schedule::MAX_VIEWS, false, ScheduleKind::Given)
    );
    let r = ScheduleRequest {
        block5_epochs: Some(Schedule::MAX_VIEWS + 1),
        ..none
    };
    assert!(!Schedule::choose(true, r).cached);
}

/// A stage-1 head is only right on the features of the weights it was trained with: moved
/// weights are found with --weights, other weights are refused naming both checksums.
fn stage1_weights_are_checked(run: &Path, data: &Path, weights: &Path, tmp: &Path) {
    let ck = run.join("best.safetensors");
    let evaluate = |w: Option<&Path>| {
        let mut c = cli();
        c.args(["evaluate", "--checkpoint"])
            .arg(&ck)
            .arg("--data")
            .arg(data)
            .arg("--out")
            .arg(tmp.join("moved-evaluation.json"));
        if let Some(w) = w {
            c.arg("--weights").arg(w);
        }
        c.output().unwrap()
    };
    let here = evaluate(None);
    assert!(
        here.status.success(),
        "{}",
        String::from_utf8_lossy(&here.stderr)
    );
    let first = json(&tmp.join("moved-evaluation.json"));

    let moved = tmp.join("moved-weights.safetensors");
    std::fs::rename(weights, &moved).unwrap();
    let gone = evaluate(None);
    let err = String::from_utf8_lossy(&gone.stderr);
    assert!(
        !gone.status.success()
            && err.contains(&weights.display().to_string())
            && err.contains("--weights"),
        "{err}"
    );
    let found = evaluate(Some(&moved));
    std::fs::rename(&moved, weights).unwrap();
    assert!(
        found.status.success(),
        "{}",
        String::from_utf8_lossy(&found.stderr)
    );
    assert_eq!(
        json(&tmp.join("moved-evaluation.json"))["accuracy"],
        first["accuracy"]
    );

    // One weight changed: a different file, refused before anything runs.
    let mut bytes = std::fs::read(weights).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let other = tmp.join("other-weights.safetensors");
    std::fs::write(&other, bytes).unwrap();
    let wrong = evaluate(Some(&other));
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        !wrong.status.success()
            && err.contains("sha256")
            && err.contains("other-weights.safetensors"),
        "{err}"
    );
}

/// The three stages and the checks above, on `data` with `weights`, in `tmp`.
fn three_stages(data: &Path, original_weights: &Path, tmp: &Path) {
    // A copy the test may move (the shared folder is read-only).
    let weights = &tmp.join("vgg16-weights.safetensors");
    std::fs::copy(original_weights, weights).unwrap();
    let runs = tmp.join("runs");
    let common = |c: &mut Command, out: &str| {
        c.arg("--data")
            .arg(data)
            .arg("--weights")
            .arg(weights)
            .args(["--image-size", "32", "--batch", "8", "--epochs", "2"])
            .arg("--out")
            .arg(runs.join(out));
    };
    let check = |name: &str| {
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
        let m = json(&dir.join("metrics.json"));
        assert_eq!(m["epochs"], 2, "{m}");
        let history = json(&dir.join("history.json"));
        assert_eq!(history.as_array().unwrap().len(), 2, "{history}");
    };
    let run_ok = |c: &mut Command| {
        let run = c.output().unwrap();
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        run
    };

    let mut c = cli();
    c.arg("extract");
    common(&mut c, "extract");
    let run = run_ok(&mut c);
    check("extract");
    check_stage1_on_the_cpu(&runs.join("extract"), data);
    // Its head goes back on the VGG16 base it records, so it evaluates and predicts on images.
    check_with_evaluate_and_predict(&runs.join("extract"), data);
    stage1_weights_are_checked(&runs.join("extract"), data, weights, tmp);
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
    // A second run into the same folder is refused, leaving the first run as it was...
    let metrics = std::fs::read(runs.join("extract/metrics.json")).unwrap();
    let mut again = cli();
    again.arg("extract");
    common(&mut again, "extract");
    let run = again.output().unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        !run.status.success() && err.contains("already holds a run") && err.contains("--overwrite"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(runs.join("extract/metrics.json")).unwrap(),
        metrics
    );
    // ...and with --overwrite it reuses the cached features, and reports the same.
    let mut again = cli();
    again.arg("extract");
    common(&mut again, "extract");
    again.arg("--overwrite");
    let run = run_ok(&mut again);
    assert!(
        String::from_utf8_lossy(&run.stderr).contains("reusing block5_pool features"),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    check_stage1_on_the_cpu(&runs.join("extract"), data);

    let mut c = cli();
    c.args(["finetune", "--stage", "frozen"]);
    common(&mut c, "frozen");
    let run = run_ok(&mut c);
    assert!(String::from_utf8_lossy(&run.stderr).contains("4 trainable weight tensors"));
    check("frozen");
    check_with_evaluate_and_predict(&runs.join("frozen"), data);

    let mut c = cli();
    c.args(["finetune", "--stage", "block5", "--from"])
        .arg(runs.join("frozen/best.safetensors"));
    common(&mut c, "block5");
    let run = run_ok(&mut c);
    assert!(String::from_utf8_lossy(&run.stderr).contains("10 trainable weight tensors"));
    check("block5");
    check_with_evaluate_and_predict(&runs.join("block5"), data);

    // Without augmentation stage 3 trains on cached block4_pool outputs and says how much faster.
    let mut c = cli();
    c.args(["finetune", "--stage", "block5", "--no-augment", "--from"])
        .arg(runs.join("frozen/best.safetensors"));
    common(&mut c, "block5-cached");
    run_ok(&mut c);
    check("block5-cached");
    let m = json(&runs.join("block5-cached/metrics.json"));
    assert!(m["prefix_cache_speedup"].as_f64().unwrap() > 1.0, "{m}");
    assert!(runs
        .join("block5-cached/features/train-block4_pool.safetensors")
        .is_file());
    // Its checkpoint is the whole classifier: it evaluates and predicts on images.
    check_with_evaluate_and_predict(&runs.join("block5-cached"), data);

    // The main job run in `cwd` with these extra arguments and `shared` as the shared folder
    // must fail; its stderr.
    let empty_shared = tempfile::tempdir().unwrap();
    let main_job_error_with =
        |cwd: &std::path::Path, shared: &std::path::Path, extra: &[&std::ffi::OsStr]| {
            let run = cli()
                .current_dir(cwd)
                .env("CNN_WGPU_SHARED", shared)
                .args(extra)
                .output()
                .unwrap();
            assert!(!run.status.success());
            String::from_utf8_lossy(&run.stderr).into_owned()
        };
    let main_job_error = |cwd: &std::path::Path, extra: &[&std::ffi::OsStr]| {
        let mut args = extra.to_vec();
        args.extend(["--data".as_ref(), data.as_os_str()]);
        main_job_error_with(cwd, empty_shared.path(), &args)
    };

    // The main job without weights says how to get them.
    let none = tmp.join("none.safetensors");
    let err = main_job_error(tmp, &["--weights".as_ref(), none.as_os_str()]);
    assert!(
        err.contains("no VGG16 weights") && err.contains("weights/README.md"),
        "{err}"
    );

    // A file where the run folders would go is refused before any work: it used to surface
    // when stage 2 first saved, after the plan's minute of measuring.
    let file = tmp.join("a-file");
    std::fs::write(&file, b"").unwrap();
    let err = main_job_error(
        tmp,
        &[
            "--weights".as_ref(),
            weights.as_os_str(),
            "--runs".as_ref(),
            file.as_os_str(),
        ],
    );
    assert!(
        err.contains(&format!("{} is a file, not a folder", file.display()))
            && !err.contains("measuring"),
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
    assert!(
        err.contains("using VGG16 weights weights/vgg16_tv_in1k.safetensors (the project default)"),
        "{err}"
    );

    // Neither --weights nor --data, nothing in the project: the shared folder's copies are
    // used, each named in one line (here a stand-in weights file, which then fails to load).
    let bare = tempfile::tempdir().unwrap();
    let shared = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(shared.path().join("weights")).unwrap();
    std::fs::write(
        shared.path().join("weights/vgg16_notop.safetensors"),
        b"not safetensors",
    )
    .unwrap();
    let err = main_job_error_with(bare.path(), shared.path(), &[]);
    assert!(
        err.contains("no dataset found")
            && err.contains("cats_and_dogs_small")
            && err.contains("cargo xtask fetch-data"),
        "{err}"
    );
    assert!(
        err.contains("using VGG16 weights")
            && err.contains(&format!("{}", shared.path().join("weights").display()))
            && err.contains("(the shared folder"),
        "{err}"
    );
    std::fs::create_dir_all(shared.path().join("data")).unwrap();
    copy_dir(data, &shared.path().join("data/cats_and_dogs_small"));
    let err = main_job_error_with(bare.path(), shared.path(), &[]);
    assert!(
        err.contains(&format!(
            "using data {} (the shared folder",
            shared.path().join("data/cats_and_dogs_small").display()
        )) && err.contains("not a valid safetensors"),
        "{err}"
    );
    // Nothing anywhere: both missing pieces say where they were looked for and how to get them.
    let err = main_job_error_with(bare.path(), empty_shared.path(), &[]);
    assert!(
        err.contains("no VGG16 weights found")
            && err.contains(&format!("{}", empty_shared.path().display()))
            && err.contains("cargo xtask fetch-weights"),
        "{err}"
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// A temporary folder holding `data/` (synthetic class folders, `per_split` images per class
/// in each split) and synthetic VGG16 weights of the real shapes, with their paths.
struct Synthetic {
    tmp: tempfile::TempDir,
    data: PathBuf,
    weights: PathBuf,
}

fn synthetic(per_split: &[(&str, usize)]) -> Synthetic {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    synthetic_images(&data, per_split);
    let weights = tmp.path().join("vgg16-synthetic.safetensors");
    synthetic_vgg16(&weights);
    Synthetic { tmp, data, weights }
}

fn adapter_or_skip() -> bool {
    if cnn_wgpu::gpu::select::choose(&cnn_wgpu::AdapterRequest::default()).is_err() {
        assert!(
            std::env::var_os("CNN_WGPU_REQUIRE_GPU").is_none(),
            "no adapter but CNN_WGPU_REQUIRE_GPU is set"
        );
        eprintln!("skipped: no GPU adapter");
        return false;
    }
    true
}

#[test]
fn three_stages_end_to_end_on_a_few_dozen_shared_images() {
    let Some(shared) = common::shared(&[
        "weights/vgg16_notop.safetensors",
        "data/cats_and_dogs_small/train",
        "data/cats_and_dogs_small/validation",
        "data/cats_and_dogs_small/test",
    ]) else {
        return;
    };
    if !adapter_or_skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    copy_subset(
        &shared,
        &data,
        &[("train", 12), ("validation", 6), ("test", 6)],
    );
    three_stages(
        &data,
        &shared.join("weights/vgg16_notop.safetensors"),
        tmp.path(),
    );
}

/// The same on images and weights the test makes, so it runs on any clone with an adapter.
#[test]
fn three_stages_end_to_end_on_synthetic_images_and_weights() {
    if !adapter_or_skip() {
        return;
    }
    let Synthetic { tmp, data, weights } =
        synthetic(&[("train", 12), ("validation", 6), ("test", 6)]);
    three_stages(&data, &weights, tmp.path());
    main_job_plans(&data, &weights, tmp.path());
    main_job_runs(&data, &weights, tmp.path());

    // A renamed class folder in one split would swap labels: every stage refuses it before
    // any work, naming the difference.
    std::fs::rename(data.join("test/dogs"), data.join("test/zebra")).unwrap();
    let out = tmp.path().join("runs/renamed");
    for stage in [&["extract"][..], &["finetune", "--stage", "frozen"][..]] {
        let run = cli()
            .args(stage)
            .arg("--data")
            .arg(&data)
            .arg("--weights")
            .arg(&weights)
            .args(["--image-size", "32"])
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&run.stderr);
        assert!(
            !run.status.success() && err.contains("missing dogs") && err.contains("extra zebra"),
            "{stage:?}: {err}"
        );
        assert!(!out.join("config.json").exists(), "{stage:?} wrote nothing");
    }
}

/// The main job on a software adapter, in full: stage 1, then stages 2 and 3 on cached views,
/// each stage's checkpoint checked independently (stage 1's head on the CPU, the others by
/// `evaluate` and `predict` on images); then again with the same seed into other folders, which
/// must print the same report; then streamed with --warm-start.
fn main_job_runs(data: &Path, weights: &Path, tmp: &Path) {
    let job = |runs: &Path, extra: &[&str]| {
        let run = cli()
            .arg("--data")
            .arg(data)
            .arg("--weights")
            .arg(weights)
            .arg("--runs")
            .arg(runs)
            .args(["--image-size", "32", "--head-epochs", "3", "--seed", "4"])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        (
            String::from_utf8_lossy(&run.stdout).into_owned(),
            String::from_utf8_lossy(&run.stderr).into_owned(),
        )
    };
    let runs = tmp.join("main-job");
    let (out, err) = job(&runs, &[]);
    let report: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.starts_with("VGG16 transfer learning"))
        .collect();
    assert_eq!(report.len(), 5, "a title, a header and three stages: {out}");
    for (line, stage) in report[2..].iter().zip([
        "1: feature extraction",
        "2: frozen base + augmentation (cached views)",
        "3: block5 fine-tuning (cached views)",
    ]) {
        assert!(
            line.starts_with(stage) && line.contains('%'),
            "{stage} in {out}"
        );
    }
    assert!(
        err.contains("stage 2: the head starts from stage 1's"),
        "{err}"
    );
    let (f, b) = cnn_wgpu::transfer::Schedule::SOFTWARE;
    for v in 0..f.max(b) {
        assert!(runs
            .join(format!(
                "vgg16-extract/features/train-block4_pool-view{v}.safetensors"
            ))
            .is_file());
    }
    check_stage1_on_the_cpu(&runs.join("vgg16-extract"), data);
    for (stage, epochs) in [("vgg16-frozen", f), ("vgg16-block5", b)] {
        let m = json(&runs.join(stage).join("metrics.json"));
        assert_eq!(m["epochs"], epochs, "{m}");
        check_with_evaluate_and_predict(&runs.join(stage), data);
    }
    // Seeded: the same seed in fresh folders (the features computed again) prints the same.
    job(&tmp.join("main-job-again"), &[]);
    for stage in ["vgg16-extract", "vgg16-frozen", "vgg16-block5"] {
        let (a, b) = (
            json(&runs.join(stage).join("metrics.json")),
            json(&tmp.join("main-job-again").join(stage).join("metrics.json")),
        );
        assert_eq!(
            (&a["test_loss"], &a["test_accuracy"]),
            (&b["test_loss"], &b["test_accuracy"]),
            "{stage}: {a} against {b}"
        );
        let losses = |runs: &Path| -> Vec<serde_json::Value> {
            let h = json(&runs.join(stage).join("history.json"));
            h.as_array()
                .unwrap()
                .iter()
                .map(|e| serde_json::json!([e["loss"], e["val_loss"], e["val_accuracy"]]))
                .collect()
        };
        assert_eq!(
            losses(&runs),
            losses(&tmp.join("main-job-again")),
            "{stage}"
        );
    }
    // Streamed with --warm-start (a GPU's way): the same three stages, from the images.
    let (out, err) = job(
        &tmp.join("main-job-streamed"),
        &["--stream", "--epochs", "1", "--finetune-epochs", "1"],
    );
    assert!(
        err.contains("stage 2: the head starts from stage 1's"),
        "{err}"
    );
    let report: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.starts_with("VGG16 transfer learning"))
        .collect();
    assert!(
        report.len() == 5
            && report[2].starts_with("1: feature extraction")
            && report[3].starts_with("2: frozen base + augmentation ")
            && report[4].starts_with("3: block5 fine-tuning "),
        "{out}"
    );
    check_with_evaluate_and_predict(&tmp.join("main-job-streamed/vgg16-block5"), data);
}

/// Stage 2's warm start (issue 35): before its first step the classifier's head is stage 1's
/// best head bit for bit, and on the first training batch (dataset order, no augmentation, in
/// inference mode) the whole classifier's loss on the images equals the stage-1 head's on the
/// cached block5_pool features of the same images.
#[test]
fn the_warm_start_puts_stage_ones_head_on_the_base_bit_for_bit() {
    use cnn_wgpu::data::{Loader, LoaderConfig};
    use cnn_wgpu::transfer::{self, TransferConfig};
    if !adapter_or_skip() {
        return;
    }
    let Some(gpu) = common::gpu() else { return };
    let Synthetic { tmp, data, weights } =
        synthetic(&[("train", 10), ("validation", 4), ("test", 4)]);
    let mut c1 = TransferConfig::new(&data, &weights, &tmp.path().join("extract"));
    (c1.image_size, c1.batch, c1.epochs, c1.progress) = (32, 8, 3, false);
    transfer::extract(gpu, &c1).unwrap();
    let stage1 = c1.out.join("best.safetensors");

    // Another seed, so that a head initialised from it differs from stage 1's.
    let mut c2 = c1.clone();
    c2.out = tmp.path().join("frozen");
    c2.seed = 77;
    let (warm, loaded, _) = transfer::frozen_classifier(gpu, &c2, Some(&stage1)).unwrap();
    let (cold, _, _) = transfer::frozen_classifier(gpu, &c2, None).unwrap();
    let bytes = std::fs::read(&stage1).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut compared = 0;
    for ((name, t, trainable), (_, c, _)) in warm.params().into_iter().zip(cold.params()) {
        let Ok(want) = st.tensor(&name) else {
            assert!(
                !trainable,
                "{name}: only the base is frozen, and it is not in the head's checkpoint"
            );
            continue;
        };
        assert!(trainable, "{name}: the head trains in stage 2");
        let want: Vec<f32> = bytemuck::pod_collect_to_vec(want.data());
        let got = read(gpu, t);
        assert!(
            got.iter()
                .map(|v| v.to_bits())
                .eq(want.iter().map(|v| v.to_bits())),
            "{name}: not stage 1's tensor bit for bit"
        );
        assert_ne!(
            read(gpu, c),
            want,
            "{name}: the cold start's head is its own"
        );
        compared += 1;
    }
    assert_eq!(compared, 4, "the head's two kernels and two biases");

    // The first batch of the training images, as stage 1 computed its features.
    let train = DirectoryDataset::open(&data.join("train"), (32, 32), 2).unwrap();
    let loader = Loader::new(
        std::sync::Arc::new(train),
        LoaderConfig::evaluation(8, loaded.preprocessing),
    )
    .unwrap();
    let batch = loader.epoch(0).next().unwrap().unwrap();
    let (x, y) = batch.upload(gpu).unwrap();
    let (whole, _) = warm
        .evaluate_batch(gpu, &x, &y)
        .unwrap()
        .read_sums(gpu)
        .unwrap();

    let ck = checkpoint::Checkpoint::read(&stage1).unwrap();
    let mut head = cnn_wgpu::model::Model::new(gpu, ck.spec().unwrap(), 0).unwrap();
    ck.load_params(gpu, &mut head).unwrap();
    let fbytes = std::fs::read(c1.out.join("features/train-block5_pool.safetensors")).unwrap();
    let fst = safetensors::SafeTensors::deserialize(&fbytes).unwrap();
    let f = fst.tensor("features").unwrap();
    let per: usize = f.shape()[1..].iter().product();
    let rows: Vec<f32> = bytemuck::pod_collect_to_vec(&f.data()[..8 * per * 4]);
    let mut shape = f.shape().to_vec();
    shape[0] = 8;
    let feats = upload(gpu, &shape, &rows);
    let (alone, _) = head
        .evaluate_batch(gpu, &feats, &y)
        .unwrap()
        .read_sums(gpu)
        .unwrap();
    // Same features, same head weights, the same dense kernels: the same sum of 8 losses.
    assert!(
        (whole - alone).abs() <= 1e-6 * alone.abs(),
        "first batch: the warm-started classifier's loss {whole}, stage 1's head's {alone}"
    );

    // A head trained on other weights' features, or at another size, is refused.
    let other = tmp.path().join("other.safetensors");
    let mut changed = std::fs::read(&weights).unwrap();
    // The last value's lowest mantissa bit (f16, little-endian): other weights, still finite.
    let low = changed.len() - 2;
    changed[low] ^= 1;
    std::fs::write(&other, changed).unwrap();
    let mut c3 = c2.clone();
    c3.weights = other;
    let err = transfer::frozen_classifier(gpu, &c3, Some(&stage1))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("sha256") && err.contains(&stage1.display().to_string()),
        "{err}"
    );
    let mut c4 = c2.clone();
    c4.image_size = 48;
    let err = transfer::frozen_classifier(gpu, &c4, Some(&stage1))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("image size 32") && err.contains("48"), "{err}");
}

/// A cached augmented view holds exactly what the streaming loader feeds the frozen base in that
/// epoch: view v of image i is the image as a training loader with the same seed augments it
/// in epoch v, whatever the batch it lands in.
#[test]
fn a_cached_view_is_what_the_streaming_loader_makes_in_that_epoch() {
    use cnn_wgpu::data::{Augment, Loader, LoaderConfig};
    use cnn_wgpu::model::{weights as w, zoo, Model};
    use cnn_wgpu::transfer::{cached_features, FeatureRequest};
    if !adapter_or_skip() {
        return;
    }
    let Some(gpu) = common::gpu() else { return };
    let Synthetic { tmp, data, weights } = synthetic(&[("train", 9)]);
    let mut base = Model::new(gpu, zoo::vgg16_base(32), 0).unwrap();
    let pre = w::load_vgg16(gpu, &mut base, &weights)
        .unwrap()
        .preprocessing;
    let open = || DirectoryDataset::open(&data.join("train"), (32, 32), 2).unwrap();
    let seed = 3;
    let view = |v: u64| {
        let cache = tmp.path().join(format!("view{v}.safetensors"));
        let req = FeatureRequest {
            layer: "block4_pool",
            preprocessing: pre,
            weights: &weights,
            cache: &cache,
            batch: 6,
            augment: Some((Augment::book(), seed, v)),
        };
        cached_features(gpu, &base, open(), &req).unwrap().set
    };
    let (v0, v1) = (view(0), view(1));
    let per = v1.sample.0 * v1.sample.1 * v1.sample.2;
    assert_ne!(v0.values, v1.values, "each epoch augments anew");
    // Epoch 1 streamed: shuffled, in batches of 4, each sample's features against view 1's row
    // (batches of 4 and of 6 may run other convolution algorithms: equal up to rounding).
    let loader = Loader::new(
        std::sync::Arc::new(open()),
        LoaderConfig::training(4, seed, pre, Some(Augment::book())),
    )
    .unwrap();
    let mut seen = 0;
    for b in loader.epoch(1) {
        let b = b.unwrap();
        let (x, _) = b.upload(gpu).unwrap();
        let got = read(gpu, &base.features(gpu, &x, "block4_pool").unwrap());
        for (k, &i) in b.samples.iter().enumerate() {
            let want = to_f64(&v1.values[i * per..(i + 1) * per]);
            assert_close(
                &format!("image {i} of epoch 1"),
                &got[k * per..(k + 1) * per],
                &want,
                1e-4,
                1e-5,
            );
            seen += 1;
        }
    }
    assert_eq!(seen, 18);
    // Read back from its cache, the view is the same.
    assert_eq!(view(1).values, v1.values);
}
