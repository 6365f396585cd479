//! The binary as an installed one is used: run from a folder outside the repository, with the
//! paths a user there would type (relative to that folder). Every subcommand's smallest real
//! use works there; the reference bench workloads are built in and equal the shared file.
//! (`selftest` takes half a minute, so it is not repeated here: tests/cli.rs runs it, like
//! every command there, from the temporary folder too.)

mod common;

use std::path::Path;
use std::process::{Command, Output};

use cnn_wgpu::bench::{Workloads, REFERENCE_WORKLOADS};

/// The built-in workloads are the shared file, byte for byte, so the two cannot drift: a
/// change to the shared file fails here until `benches/workloads.json` is updated with it.
#[test]
fn the_built_in_workloads_are_the_shared_file() {
    let w = Workloads::reference();
    assert!(
        !w.conv2d_forward.is_empty() && !w.conv2d_backward.is_empty() && !w.matmul.is_empty(),
        "the built-in workloads have every section"
    );
    let Some(shared) = common::shared(&["bench/workloads.json"]) else {
        return;
    };
    let file = std::fs::read_to_string(shared.join("bench/workloads.json")).unwrap();
    assert!(
        file == REFERENCE_WORKLOADS,
        "benches/workloads.json differs from {}: copy the shared file over it",
        shared.join("bench/workloads.json").display()
    );
}

/// `cnn-wgpu ARGS` run in `dir`; fails the test with its stderr unless it succeeds.
fn run_in(dir: &Path, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_cnn-wgpu"))
        .args(args)
        .current_dir(dir)
        .env_remove("CNN_WGPU_SHARED")
        .output()
        .expect("run cnn-wgpu");
    assert!(
        out.status.success(),
        "cnn-wgpu {} (in {}) failed:\n{}",
        args.join(" "),
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Kaggle's flat layout: `cat.N.jpg` reddish and `dog.N.jpg` bluish, 40x40, `n` of each.
fn kaggle_folder(dir: &Path, n: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        for (class, tint) in [("cat", [200u8, 60, 40]), ("dog", [40, 70, 210])] {
            image::RgbImage::from_fn(40, 40, |x, y| {
                image::Rgb(std::array::from_fn(|c| {
                    tint[c].saturating_add(((x * 3 + y * 2) as usize + i * 7) as u8 % 40)
                }))
            })
            .save(dir.join(format!("{class}.{i}.jpg")))
            .unwrap();
        }
    }
}

#[test]
fn every_subcommand_runs_from_a_folder_outside_the_repository() {
    if common::gpu().is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let here = tmp.path();
    assert!(!here.starts_with(env!("CARGO_MANIFEST_DIR")));

    let devices = run_in(here, &["devices"]);
    assert!(!stdout(&devices).trim().is_empty());
    let summary = run_in(here, &["summary", "--model", "small-convnet"]);
    assert!(
        stdout(&summary).contains("Total params"),
        "{}",
        stdout(&summary)
    );
    // No workloads file anywhere near: the built-in reference set.
    let bench = run_in(
        here,
        &["bench", "--only", "dense_head", "--runs", "1", "--json"],
    );
    assert!(
        stdout(&bench).contains("\"matmul/dense_head\""),
        "{}",
        stdout(&bench)
    );

    kaggle_folder(&here.join("kaggle"), 6);
    run_in(
        here,
        &[
            "prepare",
            "--from",
            "kaggle",
            "--to",
            "data",
            "--train",
            "2",
            "--validation",
            "2",
            "--test",
            "2",
        ],
    );
    assert_eq!(
        std::fs::read_dir(here.join("data/test/dogs"))
            .unwrap()
            .count(),
        2
    );
    let check = run_in(here, &["check-data", "--data", "data/train"]);
    assert!(stdout(&check).contains("cats"), "{}", stdout(&check));
    run_in(
        here,
        &[
            "augment-preview",
            "--data",
            "data/train",
            "--out",
            "grid.png",
        ],
    );
    assert!(here.join("grid.png").is_file());

    let small = ["--image-size", "48", "--epochs", "1", "--batch", "4"];
    let mut train = vec!["train", "--model", "small-convnet", "--data", "data"];
    train.extend(small);
    run_in(here, &train);
    // Without --out, the run folder is under runs/ where the command runs.
    let ck = "runs/small-convnet-0/last.safetensors";
    assert!(here.join(ck).is_file());
    let eval = run_in(here, &["evaluate", "--checkpoint", ck, "--data", "data"]);
    assert!(
        stdout(&eval).contains("(test split)") && stdout(&eval).contains("on 4 samples"),
        "{}",
        stdout(&eval)
    );
    // One folder of class folders is one split, evaluated whole: the same 4 images.
    let whole = run_in(
        here,
        &["evaluate", "--checkpoint", ck, "--data", "data/test"],
    );
    let numbers = |s: &str| s.split_once("): ").map(|(_, r)| r.to_string());
    assert!(
        stdout(&whole).contains("(all split)")
            && numbers(&stdout(&whole)) == numbers(&stdout(&eval)),
        "{} against {}",
        stdout(&whole),
        stdout(&eval)
    );
    assert!(here.join("runs/small-convnet-0/evaluation.json").is_file());
    // Training needs its splits: one folder of class folders is refused, saying why.
    let one = Command::new(env!("CARGO_BIN_EXE_cnn-wgpu"))
        .args(["train", "--model", "small-convnet", "--data", "data/test"])
        .current_dir(here)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&one.stderr);
    assert!(
        !one.status.success() && err.contains("data/test: a folder of class folders is one split"),
        "{err}"
    );
    let predict = run_in(here, &["predict", "--checkpoint", ck, "data/test"]);
    assert_eq!(
        stdout(&predict)
            .lines()
            .filter(|l| l.contains(".jpg"))
            .count(),
        4,
        "{}",
        stdout(&predict)
    );

    common::synthetic_vgg16(&here.join("vgg16.safetensors"));
    let vgg = ["--weights", "vgg16.safetensors", "--image-size", "32"];
    let mut features = vec![
        "features",
        "--layer",
        "block1_pool",
        "--images",
        "data/test",
        "--out",
        "features.safetensors",
    ];
    features.extend(vgg);
    run_in(here, &features);
    assert!(here.join("features.safetensors").is_file());
    let stage = ["--data", "data", "--epochs", "1", "--batch", "4"];
    let mut extract = vec!["extract", "--out", "stage1"];
    extract.extend(stage.iter().chain(&vgg));
    run_in(here, &extract);
    assert!(here.join("stage1/metrics.json").is_file());
    let mut frozen = vec!["finetune", "--stage", "frozen", "--out", "stage2"];
    frozen.extend(stage.iter().chain(&vgg));
    run_in(here, &frozen);
    assert!(here.join("stage2/best.safetensors").is_file());
    let mut plan = vec!["--plan", "--data", "data"];
    plan.extend(vgg);
    let plan = run_in(here, &plan);
    assert!(stdout(&plan).contains("plan on"), "{}", stdout(&plan));
}
