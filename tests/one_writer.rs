//! A run folder has one writer: two real processes, the first paused mid-run by the fault seam
//! (`CNN_WGPU_PAUSE_AT`), the second refused whatever it asks (a new run, `--resume`,
//! `--overwrite`), naming the first's process id; `evaluate` still writes its result there.
//! Once the first is killed with SIGKILL its lock file stays behind, and a resumed run takes
//! the folder as if it were not there.

mod common;

use std::path::Path;
use std::process::Command;

fn cli() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cnn-wgpu"));
    c.current_dir(std::env::temp_dir());
    c
}

fn train(data: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut c = cli();
    c.args(["train", "--model", "mnist-convnet", "--epochs", "2"])
        .args(["--batch", "8", "--seed", "3", "--workers", "1", "--data"])
        .arg(data)
        .arg("--out")
        .arg(out)
        .args(extra);
    c
}

#[test]
fn a_run_folder_has_one_writer_and_a_killed_one_leaves_no_lock() {
    if common::gpu().is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("digits");
    common::write_digits(&data, 40, 1);
    let out = tmp.path().join("run");

    let (mut first, _) = common::paused_at(train(&data, &out, &[]), "step#2");
    let pid = first.id().to_string();
    let lock = std::fs::read_to_string(out.join(cnn_wgpu::train::LOCK_FILE)).unwrap();
    assert!(
        lock.starts_with(&format!("pid {pid}\nstarted ")),
        "the lock file names its holder: {lock}"
    );
    let last = std::fs::read(out.join("last.safetensors")).unwrap();
    for extra in [&[][..], &["--resume"], &["--overwrite"]] {
        let second = train(&data, &out, extra).output().unwrap();
        let err = String::from_utf8_lossy(&second.stderr);
        assert!(
            !second.status.success()
                && err.contains("is being written by another run")
                && err.contains(&format!("process {pid}, started ")),
            "a second writer with {extra:?}: {err}"
        );
    }
    assert_eq!(
        std::fs::read(out.join("last.safetensors")).unwrap(),
        last,
        "the refused runs changed nothing"
    );
    // A reader may still write its own result into the locked folder.
    let eval = cli()
        .args(["evaluate", "--checkpoint"])
        .arg(out.join("last.safetensors"))
        .arg("--data")
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        eval.status.success(),
        "{}",
        String::from_utf8_lossy(&eval.stderr)
    );
    assert!(out.join("evaluation.json").is_file());

    // kill -9: the lock file is left with the dead process's id, but no lock.
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(out.join(cnn_wgpu::train::LOCK_FILE).is_file());
    let resumed = train(&data, &out, &["--resume"]).output().unwrap();
    let err = String::from_utf8_lossy(&resumed.stderr);
    assert!(resumed.status.success(), "{err}");
    assert!(err.contains("resuming in epoch 1"), "{err}");
    let history = std::fs::read_to_string(out.join("history.csv")).unwrap();
    assert_eq!(history.lines().count(), 3, "{history}");
}
