//! The training loop: epochs over streamed batches, validation, Keras callbacks, a run folder
//! with history and checkpoints, and a guard against non-finite losses.

pub mod callbacks;
pub mod checkpoint;
pub mod plot;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use callbacks::{EarlyStopping, Monitor, ReduceLrOnPlateau};

use crate::data::{mix, DataError, Loader};
use crate::gpu::Gpu;
use crate::model::{Model, ModelError};
use crate::ops::optim::Optimizer;

/// Errors of the training layer.
#[derive(Debug, Error)]
pub enum TrainError {
    #[error("the loss became {loss} at epoch {epoch}, step {step}; training stopped; {}; try a lower learning rate (--lr)", kept_note(.kept.as_deref()))]
    NonFinite {
        epoch: usize,
        step: usize,
        loss: f32,
        /// This run's last good checkpoint, where it wrote (or resumed from) one.
        kept: Option<PathBuf>,
    },
    #[error("{} in epoch {epoch} after step {step}; {dir}/last.safetensors holds the state: run the same command with --resume to continue", if *.requested { "stopped as --stop-after-steps asked" } else { "interrupted" })]
    Interrupted {
        epoch: usize,
        step: usize,
        dir: String,
        /// True where `stop_after_steps` ended the run (it did what was asked), false for a
        /// signal.
        requested: bool,
    },
    #[error("{} already holds a run ({found}); nothing was changed. Continue it with --resume, replace it with --overwrite, or choose another run folder (--out)", dir.display())]
    RunExists { dir: PathBuf, found: String },
    #[error("checkpoint {path}: {reason}")]
    Checkpoint { path: PathBuf, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Gpu(#[from] crate::gpu::GpuError),
}

fn kept_note(kept: Option<&Path>) -> String {
    match kept {
        Some(path) => format!("the last good checkpoint, {}, was kept", path.display()),
        None => "this run had saved no trained state yet (only the state it started from)".into(),
    }
}

/// One row of the history, as Keras' `History` plus the learning rate and wall time.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EpochRecord {
    pub epoch: usize,
    pub loss: f64,
    pub accuracy: f64,
    pub val_loss: Option<f64>,
    pub val_accuracy: Option<f64>,
    pub lr: f32,
    pub seconds: f64,
}

impl EpochRecord {
    fn metric(&self, name: &str) -> Option<f64> {
        match name {
            "loss" => Some(self.loss),
            "accuracy" => Some(self.accuracy),
            "val_loss" => self.val_loss,
            "val_accuracy" => self.val_accuracy,
            _ => None,
        }
    }
}

/// How to train.
#[derive(Clone, Debug)]
pub struct FitConfig {
    pub epochs: usize,
    pub optimizer: Optimizer,
    pub seed: u64,
    pub monitor: Monitor,
    pub early_stopping: Option<EarlyStopping>,
    pub reduce_lr: Option<ReduceLrOnPlateau>,
    /// Run folder for history files and checkpoints; None keeps everything in memory.
    pub out: Option<PathBuf>,
    /// Show a progress bar (indicatif hides it when stderr is not a terminal).
    pub progress: bool,
    /// Continue the run in `out` from its last.safetensors.
    pub resume: bool,
    /// Start afresh in `out` even where it holds a run (see [`check_run_folder`]).
    pub overwrite: bool,
    /// Set (by a Ctrl-C handler) to stop after the current step, saving last.safetensors.
    pub interrupt: Arc<AtomicBool>,
    /// Stop as an interrupt would once this many steps ran in this call (time-boxed runs).
    pub stop_after_steps: Option<usize>,
    /// Extra metadata stored in every checkpoint (preprocessing, class names, ...).
    pub meta: Vec<(String, String)>,
    /// Time steps 2-6 of the first epoch per layer (timestamp queries) and print the table.
    pub profile: bool,
}

/// Steps of the first epoch the profiler times (the first builds pipelines, so it is skipped).
const PROFILE_STEPS: std::ops::Range<usize> = 1..6;

/// Per-layer GPU time per step, and the allocator's peak, as a table.
pub fn profile_table(profile: &crate::gpu::Profile, steps: usize, peak_bytes: u64) -> String {
    let total: f64 = profile.scopes.iter().map(|s| s.1).sum();
    let mut out = format!(
        "{:<32} {:>12} {:>8} {:>11}\n",
        "scope", "ms / step", "share", "dispatches"
    );
    for (scope, ns, n) in &profile.scopes {
        out += &format!(
            "{scope:<32} {:>12.3} {:>7.1}% {:>11}\n",
            ns / 1e6 / steps as f64,
            100.0 * ns / total.max(1.0),
            n / steps.max(1)
        );
    }
    out += &format!(
        "{:<32} {:>12.3}\npeak GPU memory (engine allocator): {:.1} MiB\n",
        "total",
        total / 1e6 / steps.max(1) as f64,
        peak_bytes as f64 / (1024.0 * 1024.0)
    );
    out
}

/// Where a run stands, stored in last.safetensors so `--resume` continues exactly.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Progress {
    /// Epochs finished.
    epochs_done: usize,
    /// Steps finished in the epoch after them (0 at an epoch boundary).
    step: usize,
    loss_sum: f64,
    correct: f64,
    seen: usize,
    seconds: f64,
    best: Option<f64>,
    early: Option<EarlyStopping>,
    reduce: Option<ReduceLrOnPlateau>,
    optimizer: Optimizer,
    finished: bool,
}

impl FitConfig {
    pub fn new(epochs: usize, optimizer: Optimizer, seed: u64) -> Self {
        Self {
            epochs,
            optimizer,
            seed,
            monitor: Monitor::default(),
            early_stopping: None,
            reduce_lr: None,
            out: None,
            progress: true,
            resume: false,
            overwrite: false,
            interrupt: Arc::new(AtomicBool::new(false)),
            stop_after_steps: None,
            meta: Vec::new(),
            profile: false,
        }
    }
}

/// The files whose presence means `dir` holds a run that a new one would overwrite.
const RUN_FILES: [&str; 4] = [
    "last.safetensors",
    "best.safetensors",
    "history.json",
    "metrics.json",
];

/// Refuses to start a new run in `dir` where one already is, unless it is resumed or
/// overwritten on purpose: forgetting `--resume` after Ctrl-C must not throw the saved state
/// away. Call it before writing anything into `dir`.
pub fn check_run_folder(dir: &Path, resume: bool, overwrite: bool) -> Result<(), TrainError> {
    if resume && overwrite {
        return Err(TrainError::Invalid(
            "--resume continues the run folder and --overwrite replaces it: give one of them"
                .into(),
        ));
    }
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

/// Mean loss and accuracy of `model` over every batch of `loader` (inference mode).
pub fn evaluate(gpu: &Gpu, model: &Model, loader: &Loader) -> Result<(f64, f64), TrainError> {
    let (mut loss, mut correct, mut n) = (0.0f64, 0.0f64, 0usize);
    for batch in loader.epoch(0) {
        let batch = batch?;
        let (x, y) = batch.upload(gpu)?;
        let (l, c) = model
            .evaluate_batch(gpu, &model.as_input(x), &y)?
            .read_sums(gpu)?;
        loss += f64::from(l);
        correct += f64::from(c);
        n += batch.len();
    }
    let n = n.max(1) as f64;
    Ok((loss / n, correct / n))
}

/// [`crate::atomic_file::write_atomic`] with the error naming the file: checkpoints, feature
/// caches and history files all go through here.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    crate::atomic_file::write_atomic(path, bytes).map_err(|source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn write_history(dir: &Path, history: &[EpochRecord]) -> Result<(), TrainError> {
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

fn save_last(
    gpu: &Gpu,
    model: &Model,
    dir: &Path,
    cfg: &FitConfig,
    progress: &Progress,
) -> Result<(), TrainError> {
    let mut meta: Vec<(&str, String)> = cfg
        .meta
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    meta.push(("epoch", progress.epochs_done.to_string()));
    meta.push((
        "optimizer",
        serde_json::to_string(&progress.optimizer).expect("optimizer serialises"),
    ));
    meta.push((
        "progress",
        serde_json::to_string(progress).expect("progress serialises"),
    ));
    checkpoint::save(gpu, model, &dir.join("last.safetensors"), &meta)
}

/// Trains `model` on `train` for `cfg.epochs` epochs, validating on `val` after each, applying
/// the callbacks, and (with `cfg.out`) writing history.json / history.csv every epoch and
/// last.safetensors / best.safetensors (by `cfg.monitor`). With `cfg.resume` it continues the run
/// in `cfg.out` where last.safetensors left it, so the finished history equals an uninterrupted
/// run's. Returns the whole history.
pub fn fit(
    gpu: &Gpu,
    model: &mut Model,
    train: &Loader,
    val: Option<&Loader>,
    cfg: &FitConfig,
) -> Result<Vec<EpochRecord>, TrainError> {
    if val.is_none()
        && cfg.monitor.metric.starts_with("val_")
        && (cfg.early_stopping.is_some() || cfg.reduce_lr.is_some() || cfg.out.is_some())
    {
        return Err(TrainError::Invalid(format!(
            "monitoring {} needs validation data",
            cfg.monitor.metric
        )));
    }
    let lr = cfg.optimizer.lr();
    if !lr.is_finite() || lr < 0.0 {
        return Err(TrainError::Invalid(format!(
            "learning rate {lr}: it must be a finite number >= 0"
        )));
    }
    if let Some(dir) = &cfg.out {
        check_run_folder(dir, cfg.resume, cfg.overwrite)?;
        std::fs::create_dir_all(dir).map_err(|source| TrainError::Io {
            path: dir.clone(),
            source,
        })?;
        remove_stale_temporaries(dir);
        if cfg.overwrite {
            remove_earlier_run(dir)?;
        }
    }
    let mut p = Progress {
        epochs_done: 0,
        step: 0,
        loss_sum: 0.0,
        correct: 0.0,
        seen: 0,
        seconds: 0.0,
        best: None,
        early: cfg.early_stopping.clone(),
        reduce: cfg.reduce_lr.clone(),
        optimizer: cfg.optimizer,
        finished: false,
    };
    let mut history: Vec<EpochRecord> = Vec::new();
    let mut best_weights = None;
    // Whether last.safetensors holds a trained state of this run (resumed from, or written by
    // it after training steps), not only the state it started from.
    let mut saved_last = cfg.resume;
    if cfg.resume {
        let dir = cfg
            .out
            .as_ref()
            .ok_or_else(|| TrainError::Invalid("--resume needs the run folder (--out)".into()))?;
        if !dir.join("last.safetensors").is_file() {
            return Err(TrainError::Invalid(format!(
                "--resume: {} holds no last.safetensors, so there is nothing to resume; run without --resume to start this run",
                dir.display()
            )));
        }
        let ck = checkpoint::Checkpoint::read(&dir.join("last.safetensors"))?;
        ck.load_params(gpu, model)?;
        p = serde_json::from_str(ck.meta.get("progress").ok_or_else(|| {
            TrainError::Checkpoint {
                path: ck.path.clone(),
                reason: "no training progress in the metadata; not a run's last.safetensors".into(),
            }
        })?)
        .map_err(|e| TrainError::Checkpoint {
            path: ck.path.clone(),
            reason: format!("progress: {e}"),
        })?;
        ck.load_optimizer(gpu, model, &p.optimizer)?;
        if p.epochs_done > 0 {
            let path = dir.join("history.json");
            let text = std::fs::read_to_string(&path).map_err(|source| TrainError::Io {
                path: path.clone(),
                source,
            })?;
            history = serde_json::from_str(&text).map_err(|e| TrainError::Checkpoint {
                path,
                reason: e.to_string(),
            })?;
            history.truncate(p.epochs_done);
        }
        if p.early.as_ref().is_some_and(|e| e.restore_best)
            && dir.join("best.safetensors").is_file()
        {
            let mut best = Model::new(gpu, model.spec.clone(), 0)?;
            checkpoint::load_params(gpu, &mut best, &dir.join("best.safetensors"))?;
            best_weights = Some(best.snapshot(gpu)?);
        }
        // The numbering of the interrupted message: epochs from 1, steps done in that epoch.
        eprintln!(
            "resuming in epoch {} after step {} from {}",
            p.epochs_done + 1,
            p.step,
            ck.path.display()
        );
        if p.finished {
            return Ok(history);
        }
    }
    if let (Some(dir), false) = (&cfg.out, cfg.resume) {
        // From the first step on, last.safetensors holds a state this run resumes from: a kill
        // before the first epoch ends leaves a run that `--resume` continues, not a half-run
        // folder that only `--overwrite` clears.
        save_last(gpu, model, dir, cfg, &p)?;
    }
    let steps = train.batches_per_epoch();
    let mut steps_run = 0usize;
    let mut profiling = false;
    let mut profiled = 0usize;
    gpu.reset_peak();
    for epoch in p.epochs_done + 1..=cfg.epochs {
        let start = Instant::now();
        let bar = if cfg.progress {
            indicatif::ProgressBar::new(steps as u64)
        } else {
            indicatif::ProgressBar::hidden()
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "epoch {prefix} [{bar:30}] {pos}/{len} {msg} ({per_sec}, eta {eta})",
            )
            .expect("progress template")
            .progress_chars("=> "),
        );
        bar.set_prefix(format!("{epoch}/{}", cfg.epochs));
        bar.set_position(p.step as u64);
        for (step, batch) in train.epoch(epoch as u64 - 1).enumerate() {
            // Steps trained before an interruption: same batches, already in the weights.
            if step < p.step {
                continue;
            }
            let batch = batch?;
            if cfg.profile && steps_run == PROFILE_STEPS.start && !profiling {
                gpu.sync()?;
                profiling = gpu.begin_profile();
                if !profiling {
                    eprintln!(
                        "--profile: {} has no timestamp queries; only the memory peak is reported",
                        gpu.adapter_name()
                    );
                }
            }
            let (x, y) = batch.upload(gpu)?;
            let x = model.as_input(x);
            let out = model.train_step(
                gpu,
                &p.optimizer,
                &x,
                &y,
                mix(cfg.seed, (epoch * 1_000_003 + step) as u64),
            )?;
            if profiling {
                profiled += 1;
                if steps_run + 1 == PROFILE_STEPS.end || step + 1 == steps {
                    profiling = false;
                    let prof = gpu.end_profile()?;
                    bar.suspend(|| {
                        eprint!(
                            "GPU time per step over {profiled} steps on {}:\n{}",
                            gpu.adapter_name(),
                            profile_table(&prof, profiled, gpu.pool_stats().peak)
                        )
                    });
                }
            }
            // The only readback of a step: the two scalars the progress bar shows, in one copy.
            let (l, c) = out.read_sums(gpu)?;
            if !l.is_finite() {
                bar.abandon();
                return Err(TrainError::NonFinite {
                    epoch,
                    step: step + 1,
                    loss: l / batch.len() as f32,
                    kept: cfg
                        .out
                        .as_ref()
                        .filter(|_| saved_last)
                        .map(|d| d.join("last.safetensors")),
                });
            }
            p.loss_sum += f64::from(l);
            p.correct += f64::from(c);
            p.seen += batch.len();
            bar.set_message(format!(
                "loss {:.4} acc {:.4}",
                p.loss_sum / p.seen as f64,
                p.correct / p.seen as f64
            ));
            bar.inc(1);
            steps_run += 1;
            crate::fault::reached("step");
            let signalled = cfg.interrupt.load(Ordering::Relaxed);
            let interrupted = signalled || cfg.stop_after_steps.is_some_and(|n| steps_run >= n);
            if interrupted && step + 1 < steps {
                bar.abandon();
                let mut at = p.clone();
                at.step = step + 1;
                at.seconds += start.elapsed().as_secs_f64();
                let dir = cfg.out.as_ref().ok_or_else(|| {
                    TrainError::Invalid("interrupted without a run folder: nothing saved".into())
                })?;
                save_last(gpu, model, dir, cfg, &at)?;
                return Err(TrainError::Interrupted {
                    epoch,
                    step: step + 1,
                    dir: dir.display().to_string(),
                    requested: !signalled,
                });
            }
        }
        bar.finish_and_clear();
        let (val_loss, val_acc) = match val {
            Some(v) => {
                let (l, a) = evaluate(gpu, model, v)?;
                (Some(l), Some(a))
            }
            None => (None, None),
        };
        let record = EpochRecord {
            epoch,
            loss: p.loss_sum / p.seen.max(1) as f64,
            accuracy: p.correct / p.seen.max(1) as f64,
            val_loss,
            val_accuracy: val_acc,
            lr: p.optimizer.lr(),
            seconds: p.seconds + start.elapsed().as_secs_f64(),
        };
        tracing::info!(?record, "epoch done");
        eprintln!(
            "epoch {epoch}/{}: loss {:.4} acc {:.4}{} ({:.1}s)",
            cfg.epochs,
            record.loss,
            record.accuracy,
            match (val_loss, val_acc) {
                (Some(l), Some(a)) => format!(" val_loss {l:.4} val_acc {a:.4}"),
                _ => String::new(),
            },
            record.seconds
        );
        let value = record.metric(&cfg.monitor.metric).unwrap_or(f64::NAN);
        let improved = cfg.monitor.improved(value, p.best, 0.0);
        if improved {
            p.best = Some(value);
        }
        history.push(record);
        let meta = [
            ("epoch", epoch.to_string()),
            (
                "optimizer",
                serde_json::to_string(&p.optimizer).expect("optimizer serialises"),
            ),
        ];
        if improved && p.early.as_ref().is_some_and(|e| e.restore_best) {
            best_weights = Some(model.snapshot(gpu)?);
        }
        if let Some(r) = p.reduce.as_mut() {
            if let Some(lr) = r.update(&cfg.monitor, value, p.optimizer.lr()) {
                tracing::info!(lr, "reducing the learning rate");
                eprintln!("reducing the learning rate to {lr}");
                p.optimizer.set_lr(lr);
            }
        }
        let stop = p
            .early
            .as_mut()
            .is_some_and(|e| e.update(&cfg.monitor, value));
        if stop {
            let patience = p.early.as_ref().map_or(0, |e| e.patience);
            eprintln!(
                "early stopping after epoch {epoch}: no {} improvement in {patience} epochs",
                cfg.monitor.metric
            );
        }
        p.epochs_done = epoch;
        p.step = 0;
        p.loss_sum = 0.0;
        p.correct = 0.0;
        p.seen = 0;
        p.seconds = 0.0;
        p.finished = stop || epoch == cfg.epochs;
        if let Some(dir) = &cfg.out {
            write_history(dir, &history)?;
            if improved {
                let mut m: Vec<(&str, String)> = cfg
                    .meta
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.clone()))
                    .collect();
                m.extend(meta.iter().map(|(k, v)| (*k, v.clone())));
                checkpoint::save(gpu, model, &dir.join("best.safetensors"), &m)?;
            }
            save_last(gpu, model, dir, cfg, &p)?;
            saved_last = true;
            // The plot comes last and never costs a checkpoint: a failure is only a warning.
            if let Err(e) = plot::curves(&history, &dir.join("curves.png")) {
                tracing::warn!("curves.png not updated: {e}");
            }
        }
        if stop {
            break;
        }
    }
    if let Some(w) = best_weights {
        model.restore(w);
    }
    Ok(history)
}
