//! The training loop: epochs over streamed batches, validation, Keras callbacks, a run folder
//! with history and checkpoints, and a guard against non-finite losses.

pub mod callbacks;
pub mod checkpoint;

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use thiserror::Error;

pub use callbacks::{EarlyStopping, Monitor, ReduceLrOnPlateau};

use crate::data::{mix, DataError, Loader};
use crate::gpu::Gpu;
use crate::model::{Model, ModelError};
use crate::ops::optim::Optimizer;

/// Errors of the training layer.
#[derive(Debug, Error)]
pub enum TrainError {
    #[error("the loss became {loss} at epoch {epoch}, step {step}; training stopped and the last good checkpoint was kept; try a lower learning rate (--lr)")]
    NonFinite {
        epoch: usize,
        step: usize,
        loss: f32,
    },
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

/// One row of the history, as Keras' `History` plus the learning rate and wall time.
#[derive(Clone, Debug, Serialize, PartialEq)]
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
        }
    }
}

/// Mean loss and accuracy of `model` over every batch of `loader` (inference mode).
pub fn evaluate(gpu: &Gpu, model: &Model, loader: &Loader) -> Result<(f64, f64), TrainError> {
    let (mut loss, mut correct, mut n) = (0.0f64, 0.0f64, 0usize);
    for batch in loader.epoch(0) {
        let batch = batch?;
        let (x, y) = batch.upload(gpu)?;
        let out = model.evaluate_batch(gpu, &x, &y)?;
        loss += f64::from(out.loss_sum.to_vec(gpu)?[0]);
        correct += f64::from(out.correct.to_vec(gpu)?[0]);
        n += batch.len();
    }
    let n = n.max(1) as f64;
    Ok((loss / n, correct / n))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|source| TrainError::Io {
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

/// Trains `model` on `train` for `cfg.epochs` epochs, validating on `val` after each, applying
/// the callbacks, and (with `cfg.out`) writing history.json / history.csv every epoch and
/// last.safetensors / best.safetensors (by `cfg.monitor`). Returns the history.
pub fn fit(
    gpu: &Gpu,
    model: &mut Model,
    train: &Loader,
    val: Option<&Loader>,
    cfg: &FitConfig,
) -> Result<Vec<EpochRecord>, TrainError> {
    let mut opt = cfg.optimizer;
    let mut early = cfg.early_stopping.clone();
    let mut reduce = cfg.reduce_lr.clone();
    if val.is_none()
        && cfg.monitor.metric.starts_with("val_")
        && (early.is_some() || reduce.is_some() || cfg.out.is_some())
    {
        return Err(TrainError::Invalid(format!(
            "monitoring {} needs validation data",
            cfg.monitor.metric
        )));
    }
    if let Some(dir) = &cfg.out {
        std::fs::create_dir_all(dir).map_err(|source| TrainError::Io {
            path: dir.clone(),
            source,
        })?;
    }
    let mut history = Vec::new();
    let mut best: Option<f64> = None;
    let mut best_weights = None;
    let steps = train.batches_per_epoch();
    for epoch in 1..=cfg.epochs {
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
        let (mut loss_sum, mut correct, mut seen) = (0.0f64, 0.0f64, 0usize);
        for (step, batch) in train.epoch(epoch as u64 - 1).enumerate() {
            let batch = batch?;
            let (x, y) = batch.upload(gpu)?;
            let out = model.train_step(
                gpu,
                &opt,
                &x,
                &y,
                mix(cfg.seed, (epoch * 1_000_003 + step) as u64),
            )?;
            // The only readback of a step: the two scalars the progress bar shows.
            let (l, c) = (out.loss_sum.to_vec(gpu)?[0], out.correct.to_vec(gpu)?[0]);
            if !l.is_finite() {
                bar.abandon();
                return Err(TrainError::NonFinite {
                    epoch,
                    step: step + 1,
                    loss: l / batch.len() as f32,
                });
            }
            loss_sum += f64::from(l);
            correct += f64::from(c);
            seen += batch.len();
            bar.set_message(format!(
                "loss {:.4} acc {:.4}",
                loss_sum / seen as f64,
                correct / seen as f64
            ));
            bar.inc(1);
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
            loss: loss_sum / seen.max(1) as f64,
            accuracy: correct / seen.max(1) as f64,
            val_loss,
            val_accuracy: val_acc,
            lr: opt.lr(),
            seconds: start.elapsed().as_secs_f64(),
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
        let improved = cfg.monitor.improved(value, best, 0.0);
        if improved {
            best = Some(value);
        }
        history.push(record);
        let meta = [
            ("epoch", epoch.to_string()),
            (
                "optimizer",
                serde_json::to_string(&opt).expect("optimizer serialises"),
            ),
        ];
        if let Some(dir) = &cfg.out {
            write_history(dir, &history)?;
            checkpoint::save(gpu, model, &dir.join("last.safetensors"), &meta)?;
            if improved {
                checkpoint::save(gpu, model, &dir.join("best.safetensors"), &meta)?;
            }
        }
        if improved && early.as_ref().is_some_and(|e| e.restore_best) {
            best_weights = Some(model.snapshot(gpu)?);
        }
        if let Some(r) = reduce.as_mut() {
            if let Some(lr) = r.update(&cfg.monitor, value, opt.lr()) {
                tracing::info!(lr, "reducing the learning rate");
                eprintln!("reducing the learning rate to {lr}");
                opt.set_lr(lr);
            }
        }
        if let Some(e) = early.as_mut() {
            if e.update(&cfg.monitor, value) {
                eprintln!(
                    "early stopping after epoch {epoch}: no {} improvement in {} epochs",
                    cfg.monitor.metric, e.patience
                );
                break;
            }
        }
    }
    if let Some(w) = best_weights {
        model.restore(w);
    }
    Ok(history)
}
