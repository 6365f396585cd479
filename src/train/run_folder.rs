//! The run folder: what makes a folder hold a run, opening one for a new or resumed run, the
//! settings file, the history files and last.safetensors with the metadata of every checkpoint.
//! Every file goes through the atomic writer.

use std::path::Path;

use super::fit::Progress;
use super::lock::RunLock;
use super::{checkpoint, EpochRecord, FitConfig, TrainError};
use crate::gpu::Gpu;
use crate::model::Model;
use crate::ops::optim::Optimizer;

/// The files whose presence means `dir` holds a run that a new one would overwrite.
const RUN_FILES: [&str; 4] = [
    "last.safetensors",
    "best.safetensors",
    "history.json",
    "metrics.json",
];

/// Takes run folder `dir` for this process (creating it) and returns its lock, which the caller
/// holds while the run may write there: a folder another process is writing is refused
/// ([`RunLock`]). Refuses as well to start a new run where one already is, unless it is resumed
/// or overwritten on purpose: forgetting `--resume` after Ctrl-C must not throw the saved state
/// away. Call it before writing anything into `dir`.
pub fn check_run_folder(dir: &Path, resume: bool, overwrite: bool) -> Result<RunLock, TrainError> {
    check_can_be_folder(dir)?;
    if resume && overwrite {
        return Err(TrainError::Invalid(
            "--resume continues the run folder and --overwrite replaces it: give one of them"
                .into(),
        ));
    }
    // Under the lock, so that no other run adds a run's files between the look and the start.
    RunLock::acquire_if(dir, || {
        if resume || overwrite {
            return Ok(());
        }
        let found: Vec<&str> = RUN_FILES
            .into_iter()
            .filter(|f| dir.join(f).exists())
            .collect();
        if found.is_empty() {
            Ok(())
        } else {
            Err(TrainError::RunExists {
                dir: dir.to_path_buf(),
                found: found.join(", "),
            })
        }
    })
}

/// Refuses a run folder that cannot be made: a file where it, or a folder above it, would be
/// (found before an hour-long stage starts, not when it first saves).
fn check_can_be_folder(dir: &Path) -> Result<(), TrainError> {
    use std::io::ErrorKind::{NotADirectory, NotFound};
    for at in dir.ancestors().filter(|p| !p.as_os_str().is_empty()) {
        match std::fs::metadata(at) {
            Ok(m) if m.is_dir() => return Ok(()),
            Ok(_) => {
                return Err(TrainError::Invalid(format!(
                    "run folder {}: {} is a file, not a folder; choose another run folder",
                    dir.display(),
                    at.display()
                )))
            }
            Err(e) if matches!(e.kind(), NotFound | NotADirectory) => continue,
            Err(source) => {
                return Err(TrainError::Io {
                    path: at.to_path_buf(),
                    source,
                })
            }
        }
    }
    Ok(())
}

/// Writes a run's settings to `dir/config.json`, or, when resuming, checks them against the
/// ones the run was started with there: a resumed run keeps its settings, so a flag that
/// differs (keys of `config` except `may_differ`) is refused by name instead of being written
/// down as if it had been used. config.json keeps recording what actually ran.
pub fn write_or_check_config(
    dir: &Path,
    config: &serde_json::Value,
    resume: bool,
    may_differ: &[&str],
) -> Result<(), TrainError> {
    let path = dir.join("config.json");
    if resume && path.is_file() {
        let text = std::fs::read_to_string(&path).map_err(|source| TrainError::Io {
            path: path.clone(),
            source,
        })?;
        let started: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| TrainError::Invalid(format!("{}: {e}", path.display())))?;
        let differ: Vec<String> = config
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| !may_differ.contains(&k.as_str()))
            .filter(|(k, v)| started.get(k.as_str()) != Some(v))
            .map(|(k, v)| {
                let was = started.get(k.as_str()).unwrap_or(&serde_json::Value::Null);
                format!("{k}: the run has {was}, this command {v}")
            })
            .collect();
        if !differ.is_empty() {
            return Err(TrainError::Invalid(format!(
                "--resume continues the run in {} with the settings it started with; this command differs ({}); give the same settings, or start a new run",
                dir.display(),
                differ.join("; ")
            )));
        }
        return Ok(());
    }
    write_atomic(
        &path,
        serde_json::to_string_pretty(config)
            .expect("settings serialise")
            .as_bytes(),
    )
}

/// Removes the `<name>.tmp` files a kill in the middle of an atomic write left in `dir` (only
/// that writer makes them, and the file it was replacing is intact).
fn remove_stale_temporaries(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_file() && p.extension().is_some_and(|x| x == "tmp") {
            match std::fs::remove_file(&p) {
                Ok(()) => tracing::info!("removed {}, left by an interrupted write", p.display()),
                Err(err) => tracing::warn!("cannot remove {}: {err}", p.display()),
            }
        }
    }
}

/// What `--overwrite` replaces: every file a run writes besides config.json (which the caller has
/// already written for the new run). Removed before the new run writes anything, so a kill early
/// in the new run never leaves its files mixed with the old run's.
fn remove_earlier_run(dir: &Path) -> Result<(), TrainError> {
    for name in RUN_FILES.iter().chain(&["history.csv", "curves.png"]) {
        let path = dir.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => tracing::info!("--overwrite: removed the earlier run's {}", path.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(TrainError::Io { path, source }),
        }
    }
    Ok(())
}

/// Readies `dir` for a run and returns its lock: refuses a folder another process writes, or one
/// that holds a run unless resumed or overwritten on purpose; creates it, removes the
/// temporaries a kill left (only the lock's holder may: they could be a live writer's), and with
/// `overwrite` the earlier run's files.
pub(super) fn open(dir: &Path, resume: bool, overwrite: bool) -> Result<RunLock, TrainError> {
    let lock = check_run_folder(dir, resume, overwrite)?;
    remove_stale_temporaries(dir);
    if overwrite {
        remove_earlier_run(dir)?;
    }
    Ok(lock)
}

/// [`crate::atomic_file::write_atomic`] with the error naming the file: checkpoints, feature
/// caches and history files all go through here.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    crate::atomic_file::write_atomic(path, bytes).map_err(|source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    })
}

pub(super) fn write_history(dir: &Path, history: &[EpochRecord]) -> Result<(), TrainError> {
    write_atomic(
        &dir.join("history.json"),
        serde_json::to_string_pretty(history)
            .expect("history serialises")
            .as_bytes(),
    )?;
    let opt = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.6}"));
    let mut csv = String::from("epoch,loss,accuracy,val_loss,val_accuracy,lr,seconds\n");
    for r in history {
        csv += &format!(
            "{},{:.6},{:.6},{},{},{},{:.3}\n",
            r.epoch,
            r.loss,
            r.accuracy,
            opt(r.val_loss),
            opt(r.val_accuracy),
            r.lr,
            r.seconds
        );
    }
    write_atomic(&dir.join("history.csv"), csv.as_bytes())
}

/// The history a run folder holds (history.json).
pub(super) fn read_history(dir: &Path) -> Result<Vec<EpochRecord>, TrainError> {
    let path = dir.join("history.json");
    let text = std::fs::read_to_string(&path).map_err(|source| TrainError::Io {
        path: path.clone(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| TrainError::Checkpoint {
        path,
        reason: e.to_string(),
    })
}

/// The metadata of a checkpoint of this run: the caller's (`cfg.meta`: preprocessing, classes),
/// the epoch, the optimizer, and for last.safetensors the progress `--resume` continues from.
pub(super) fn checkpoint_meta<'a>(
    cfg: &'a FitConfig,
    epoch: usize,
    optimizer: &Optimizer,
    progress: Option<&Progress>,
) -> Vec<(&'a str, String)> {
    let mut meta: Vec<(&str, String)> = cfg
        .meta
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    meta.push(("epoch", epoch.to_string()));
    meta.push((
        "optimizer",
        serde_json::to_string(optimizer).expect("optimizer serialises"),
    ));
    if let Some(p) = progress {
        meta.push((
            "progress",
            serde_json::to_string(p).expect("progress serialises"),
        ));
    }
    meta
}

/// Writes last.safetensors: the weights, optimizer state and progress of `progress`.
pub(super) fn save_last(
    gpu: &Gpu,
    model: &Model,
    dir: &Path,
    cfg: &FitConfig,
    progress: &Progress,
) -> Result<(), TrainError> {
    let meta = checkpoint_meta(
        cfg,
        progress.epochs_done,
        &progress.optimizer,
        Some(progress),
    );
    checkpoint::save(gpu, model, &dir.join("last.safetensors"), &meta)
}
