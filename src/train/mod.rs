//! The training loop: epochs over streamed batches, validation, Keras callbacks, a run folder
//! with history and checkpoints, and a guard against non-finite losses.

pub mod callbacks;
pub mod checkpoint;
mod fit;
mod lock;
pub mod plot;
mod run_folder;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use callbacks::{EarlyStopping, Monitor, ReduceLrOnPlateau};
pub use fit::fit;
pub use lock::{RunLock, LOCK_FILE};
pub(crate) use run_folder::write_atomic;
pub use run_folder::{check_run_folder, write_or_check_config};

use crate::data::{DataError, Loader};
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
    #[error("run folder {} is being written by another run ({holder}); nothing was changed. Wait for that run to end (or stop it), or choose another run folder (--out)", dir.display())]
    RunLocked { dir: PathBuf, holder: String },
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

/// A progress bar over `n` images, labelled `label`: hidden for a single image, and (as any
/// indicatif bar) where stderr is not a terminal.
pub fn images_bar(label: impl Into<String>, n: usize) -> indicatif::ProgressBar {
    let bar = if n > 1 {
        indicatif::ProgressBar::new(n as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix} [{bar:30}] {pos}/{len} ({per_sec}, eta {eta})",
        )
        .expect("progress template")
        .progress_chars("=> "),
    );
    bar.set_prefix(label.into());
    bar
}

/// Steps of the first epoch the profiler times (the first builds pipelines, so it is skipped).
pub(crate) const PROFILE_STEPS: std::ops::Range<usize> = 1..6;

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
