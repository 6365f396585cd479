//! Fault injection: a training run killed with SIGKILL again and again (mid-epoch, in the middle
//! of writing a checkpoint, in the middle of writing the history) and resumed each time ends
//! with the history and the checkpoints of a run that was never interrupted, bit for bit, and
//! every checkpoint the run folder holds after each kill loads.
//!
//! The kills are exact: `CNN_WGPU_PAUSE_AT` (see `cnn_wgpu::fault`) makes the process stop at a
//! named point and wait, and the test then kills it with SIGKILL (`Child::kill`), so nothing in
//! the process gets to run after the point.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use cnn_wgpu::data::mnist;
use cnn_wgpu::model::Model;
use cnn_wgpu::train::checkpoint::Checkpoint;
use common::*;

/// Writes the first `n` MNIST test digits as plain IDX files into `dir`: 4/5 train, 1/5
/// validation, as `train` splits a folder holding only the t10k files.
fn few_digits(shared: &Path, dir: &Path, n: usize) {
    let all = mnist::load(&shared.join("data/mnist"), "t10k").unwrap();
    let labels: Vec<u8> = all.classes.iter().take(n).map(|&c| c as u8).collect();
    write_idx(
        dir,
        all.images.iter().take(n).map(|i| i.data.as_slice()),
        &labels,
    );
}

fn train(data: &Path, out: &Path, resume: bool) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cnn-wgpu"));
    c.args([
        "train",
        "--model",
        "mnist-convnet",
        "--epochs",
        "4",
        "--batch",
        "20",
    ])
    .args(["--seed", "5", "--reduce-lr-patience", "1", "--workers", "1"])
    .arg("--data")
    .arg(data)
    .arg("--out")
    .arg(out);
    if resume {
        c.arg("--resume");
    }
    c
}

/// Runs `c` with the pause point `at` armed, waits until the process says it has paused there,
/// kills it with SIGKILL and returns what it printed.
fn kill_at(c: Command, at: &str) -> String {
    let (mut child, seen) = paused_at(c, at);
    child.kill().unwrap();
    child.wait().unwrap();
    seen.join("\n")
}

/// Every `.safetensors` in `dir` reads, carries its model spec, and loads into that model.
fn every_checkpoint_loads(dir: &Path, after: &str) -> Vec<String> {
    let gpu = common::gpu().expect("checked by the caller");
    let mut names = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "safetensors") {
            let ck = Checkpoint::read(&p)
                .unwrap_or_else(|e| panic!("after {after}: {} does not read: {e}", p.display()));
            let mut model = Model::new(gpu, ck.spec().unwrap(), 0).unwrap();
            ck.load_params(gpu, &mut model)
                .unwrap_or_else(|e| panic!("after {after}: {} does not load: {e}", p.display()));
            names.push(p.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    names.sort();
    names
}

/// history.json without the wall times, which no two runs share.
fn history(dir: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join("history.json")).unwrap();
    let mut rows: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    for r in &mut rows {
        r.as_object_mut().unwrap().remove("seconds");
    }
    rows
}

fn tensors(path: &Path) -> HashMap<String, (Vec<usize>, Vec<u32>)> {
    Checkpoint::read(path)
        .unwrap()
        .tensors
        .into_iter()
        .map(|(k, (shape, v))| (k, (shape, v.iter().map(|x| x.to_bits()).collect())))
        .collect()
}

#[test]
fn runs_killed_anywhere_resume_to_the_uninterrupted_result() {
    let Some(shared) = shared(&[
        "data/mnist/t10k-images-idx3-ubyte.gz",
        "data/mnist/t10k-labels-idx1-ubyte.gz",
    ]) else {
        return;
    };
    if common::gpu().is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("digits");
    few_digits(&shared, &data, 300);
    let reference = tmp.path().join("reference");
    let out = train(&data, &reference, false).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // 240 training digits in batches of 20: 12 steps an epoch. Each kill is followed by
    // `--resume`; the first run is started afresh.
    let run = tmp.path().join("killed");
    let kills: [(&str, &str); 5] = [
        // Mid-epoch 1: only the starting state is saved.
        ("step#5", "resuming in epoch 1 after step 0"),
        // Half of epoch 1's last.safetensors written (history.json and best.safetensors of
        // epoch 1 already are): the starting state stays the resume point.
        (
            "write:last.safetensors#1",
            "resuming in epoch 1 after step 0",
        ),
        // Half of epoch 2's history.json written; epoch 1 is saved.
        ("write:history.json#2", "resuming in epoch 2 after step 0"),
        // Resumed in epoch 2: half of epoch 3's last.safetensors written.
        (
            "write:last.safetensors#2",
            "resuming in epoch 3 after step 0",
        ),
        // Two steps into epoch 4.
        ("step#14", "resuming in epoch 4 after step 0"),
    ];
    let mut expect: Option<&str> = None;
    for (at, next_resumes) in kills {
        let said = kill_at(train(&data, &run, expect.is_some()), at);
        if let Some(e) = expect {
            assert!(said.contains(e), "before {at}, expected {e:?}:\n{said}");
        }
        let saved = every_checkpoint_loads(&run, at);
        assert!(
            saved.contains(&"last.safetensors".to_string()),
            "after {at}: {saved:?}"
        );
        if let Some(name) = at.strip_prefix("write:") {
            let name = name.split('#').next().unwrap();
            assert!(
                run.join(format!("{name}.tmp")).is_file(),
                "the kill came inside the write of {name}: its temporary is left"
            );
        }
        expect = Some(next_resumes);
    }
    // The last resume runs to the end, and cleans up what the kills left.
    let out = train(&data, &run, true).output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(said.contains(expect.unwrap()), "{said}");
    let leftovers: Vec<PathBuf> = std::fs::read_dir(&run)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    assert_eq!(history(&run), history(&reference));
    assert_eq!(history(&run).len(), 4);
    for name in ["last.safetensors", "best.safetensors"] {
        let (a, b) = (tensors(&run.join(name)), tensors(&reference.join(name)));
        assert_eq!(
            a.keys().collect::<std::collections::BTreeSet<_>>(),
            b.keys().collect(),
            "{name}: the same tensors"
        );
        for (k, v) in &a {
            assert!(
                b[k] == *v,
                "{name}: tensor {k} differs from the uninterrupted run"
            );
        }
    }
}

/// A pause point that is not `<point>#<n>` with n >= 1 is refused, saying what is expected.
#[test]
fn malformed_pause_points_are_refused() {
    for bad in [
        "step",
        "step#0",
        "#3",
        "step#x",
        "write:last.safetensors#-1",
    ] {
        let e = cnn_wgpu::fault::arm(bad).unwrap_err();
        assert!(e.contains(bad) && e.contains("<point>#<n>"), "{bad}: {e}");
    }
}
