//! `evaluate` and `predict` take every source `train` takes, through the one function that
//! recognises a source (`data::Source`), and cut its splits as `train` cuts them. The oracles:
//! the training loop's own validation numbers for the same checkpoint, the weighted mean of the
//! parts for `--split all`, and the true labels of generated digits for `predict`.

mod common;

use std::path::Path;
use std::process::{Command, Output};

fn cli() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cnn-wgpu"));
    c.current_dir(std::env::temp_dir());
    c
}

fn ok(c: &mut Command) -> Output {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{c:?}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// `evaluate` of `ck` on `data` with `extra` flags: (stdout, loss, accuracy, samples).
fn evaluate(ck: &Path, data: &Path, extra: &[&str]) -> (String, f64, f64, u64) {
    let out = ck.with_file_name("evaluation-test.json");
    let run = ok(cli()
        .args(["evaluate", "--checkpoint"])
        .arg(ck)
        .arg("--data")
        .arg(data)
        .arg("--out")
        .arg(&out)
        .args(extra));
    let e = json(&out);
    (
        String::from_utf8_lossy(&run.stdout).into_owned(),
        e["loss"].as_f64().unwrap(),
        e["accuracy"].as_f64().unwrap(),
        e["samples"].as_u64().unwrap(),
    )
}

fn close(a: f64, b: f64, rtol: f64) -> bool {
    (a - b).abs() <= rtol * a.abs().max(b.abs()) + 1e-7
}

#[test]
fn evaluate_and_predict_take_an_mnist_folder_split_as_train_splits_it() {
    if common::gpu().is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("digits");
    let labels = common::write_digits(&data, 50, 4);
    let run = tmp.path().join("run");
    ok(cli()
        .args(["train", "--model", "mnist-convnet", "--epochs", "2"])
        .args(["--batch", "10", "--lr", "1e-3", "--seed", "2", "--data"])
        .arg(&data)
        .arg("--out")
        .arg(&run));
    let ck = run.join("last.safetensors");

    // Only t10k files: train trained on the first 40 and validated on the last 10, so the
    // default is that validation split, and it gives what the loop measured there.
    let (said, loss, acc, n) = evaluate(&ck, &data, &[]);
    assert!(said.contains("(validation split)") && n == 10, "{said}");
    let history = json(&run.join("history.json"));
    let last = history.as_array().unwrap().last().unwrap().clone();
    assert!(
        close(loss, last["val_loss"].as_f64().unwrap(), 1e-5)
            && close(acc, last["val_accuracy"].as_f64().unwrap(), 1e-9),
        "evaluate gives loss {loss}, accuracy {acc}; the training loop's last epoch {last}"
    );
    // All = train + validation, each sample once: the means weighted by the parts' sizes.
    let (_, train_loss, train_acc, train_n) = evaluate(&ck, &data, &["--split", "train"]);
    let (said, all_loss, all_acc, all_n) = evaluate(&ck, &data, &["--split", "all"]);
    assert!(
        said.contains("(all split)") && train_n == 40 && all_n == 50,
        "{said}"
    );
    assert!(
        close(all_acc * 50.0, train_acc * 40.0 + acc * 10.0, 1e-9)
            && close(all_loss * 50.0, train_loss * 40.0 + loss * 10.0, 1e-5),
        "all: {all_loss} {all_acc}; train {train_loss} {train_acc}; validation {loss} {acc}"
    );
    let test = cli()
        .args(["evaluate", "--split", "test", "--checkpoint"])
        .arg(&ck)
        .arg("--data")
        .arg(&data)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&test.stderr);
    assert!(
        !test.status.success() && err.contains("has no test split") && err.contains("t10k"),
        "{err}"
    );

    // predict on the IDX images file, and on the folder: one row per digit, named by its
    // index, whose classes agree with the labels exactly as often as evaluate says.
    let images = data.join("t10k-images-idx3-ubyte");
    for input in [&images, &data] {
        let p = ok(cli()
            .args(["predict", "--json", "--checkpoint"])
            .arg(&ck)
            .arg(input));
        let rows: Vec<serde_json::Value> = serde_json::from_slice(&p.stdout).unwrap();
        assert_eq!(rows.len(), 50);
        let mut right = 0;
        for (i, (row, &label)) in rows.iter().zip(&labels).enumerate() {
            assert_eq!(
                row["file"].as_str().unwrap(),
                format!("{} sample {i}", images.display())
            );
            right += usize::from(row["class"].as_str().unwrap() == label.to_string());
        }
        assert!(
            close(right as f64 / 50.0, all_acc, 1e-9),
            "predict gets {right} of 50 right, evaluate says {all_acc}"
        );
    }

    // A source the model cannot take, and a labels file given as images, are refused by name.
    let csv = tmp.path().join("rows.csv");
    std::fs::write(&csv, "1,2,3,0\n4,5,6,1\n").unwrap();
    let labels_file = data.join("t10k-labels-idx1-ubyte");
    for (input, says) in [
        (&csv, "sequences (CSV rows), the model takes 28x28x1 images"),
        (&labels_file, "images must have 3 dimensions"),
    ] {
        let p = cli()
            .args(["predict", "--checkpoint"])
            .arg(&ck)
            .arg(input)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&p.stderr);
        assert!(
            !p.status.success() && err.contains(&*input.to_string_lossy()) && err.contains(says),
            "{err}"
        );
    }
}
