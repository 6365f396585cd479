//! `fit`, the training loop, as a sequence of named steps: check the settings, open the run
//! folder, start or resume, then for each epoch train its steps, validate, and end it (callbacks,
//! checkpoints, history). Each step is a function of the run's state ([`Run`]).

use std::sync::atomic::Ordering;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::run_folder::{self, checkpoint_meta};
use super::{checkpoint, evaluate, plot, EarlyStopping, EpochRecord, FitConfig, ReduceLrOnPlateau};
use super::{profile_table, TrainError, PROFILE_STEPS};
use crate::data::{mix, Loader};
use crate::gpu::Gpu;
use crate::model::Model;
use crate::ops::optim::Optimizer;
use crate::tensor::Tensor;

/// Where a run stands, stored in last.safetensors so `--resume` continues exactly.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct Progress {
    /// Epochs finished.
    pub(super) epochs_done: usize,
    /// Steps finished in the epoch after them (0 at an epoch boundary).
    pub(super) step: usize,
    loss_sum: f64,
    correct: f64,
    seen: usize,
    seconds: f64,
    best: Option<f64>,
    early: Option<EarlyStopping>,
    reduce: Option<ReduceLrOnPlateau>,
    pub(super) optimizer: Optimizer,
    finished: bool,
}

impl Progress {
    fn start(cfg: &FitConfig) -> Self {
        Self {
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
        }
    }

    /// The next epoch begins: its sums start from nothing.
    fn close_epoch(&mut self, epoch: usize, finished: bool) {
        self.epochs_done = epoch;
        self.step = 0;
        self.loss_sum = 0.0;
        self.correct = 0.0;
        self.seen = 0;
        self.seconds = 0.0;
        self.finished = finished;
    }
}

/// The state of one `fit` call.
struct Run {
    p: Progress,
    history: Vec<EpochRecord>,
    /// The best epoch's weights, kept where early stopping restores them.
    best_weights: Option<Vec<Vec<Tensor>>>,
    /// Whether last.safetensors holds a trained state of this run (resumed from, or written
    /// after training steps), not only the state it started from.
    saved_last: bool,
    /// Steps trained by this call (the profiling window and `stop_after_steps` count these).
    steps_run: usize,
    profile: ProfileWindow,
}

/// The profiler's window over steps [`PROFILE_STEPS`] of this call.
#[derive(Default)]
struct ProfileWindow {
    on: bool,
    steps: usize,
}

impl ProfileWindow {
    /// Starts timing where step `steps_run` opens the window (the first step, which builds the
    /// pipelines, is left out).
    fn begin_if_due(&mut self, gpu: &Gpu, steps_run: usize) -> Result<(), TrainError> {
        if steps_run != PROFILE_STEPS.start || self.on {
            return Ok(());
        }
        gpu.sync()?;
        self.on = gpu.begin_profile();
        if !self.on {
            eprintln!(
                "--profile: {} has no timestamp queries; only the memory peak is reported",
                gpu.adapter_name()
            );
        }
        Ok(())
    }

    /// Counts a timed step, and where the window (or the epoch) ends prints the table.
    fn end_if_due(
        &mut self,
        gpu: &Gpu,
        bar: &indicatif::ProgressBar,
        steps_run: usize,
        last_of_epoch: bool,
    ) -> Result<(), TrainError> {
        if !self.on {
            return Ok(());
        }
        self.steps += 1;
        if steps_run + 1 == PROFILE_STEPS.end || last_of_epoch {
            self.on = false;
            let prof = gpu.end_profile()?;
            bar.suspend(|| {
                eprint!(
                    "GPU time per step over {} steps on {}:\n{}",
                    self.steps,
                    gpu.adapter_name(),
                    profile_table(&prof, self.steps, gpu.pool_stats().peak)
                )
            });
        }
        Ok(())
    }
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
    check_settings(cfg, val.is_some())?;
    // Before anything is written: the largest batch each loader makes must fit.
    for loader in std::iter::once(train).chain(val) {
        model.check_batch(
            gpu,
            loader
                .config()
                .batch_size
                .min(loader.dataset().len().max(1)),
        )?;
    }
    // Held until the run returns: no other process writes this run folder meanwhile.
    let _lock = cfg
        .out
        .as_deref()
        .map(|dir| run_folder::open(dir, cfg.resume, cfg.overwrite))
        .transpose()?;
    let mut run = if cfg.resume {
        let resumed = resume(gpu, model, cfg)?;
        if resumed.p.finished {
            return Ok(resumed.history);
        }
        resumed
    } else {
        start(gpu, model, cfg)?
    };
    gpu.reset_peak();
    for epoch in run.p.epochs_done + 1..=cfg.epochs {
        let started = Instant::now();
        train_epoch(gpu, model, train, cfg, &mut run, epoch, started)?;
        let record = validate(gpu, model, val, &run.p, epoch, started)?;
        if end_epoch(gpu, model, cfg, &mut run, record)? {
            break;
        }
    }
    if let Some(w) = run.best_weights {
        model.restore(w);
    }
    Ok(run.history)
}

/// Settings that cannot train, refused before anything is written.
fn check_settings(cfg: &FitConfig, has_val: bool) -> Result<(), TrainError> {
    if !has_val
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
    if cfg.resume && cfg.out.is_none() {
        return Err(TrainError::Invalid(
            "--resume needs the run folder (--out)".into(),
        ));
    }
    Ok(())
}

fn fresh_run(p: Progress) -> Run {
    Run {
        p,
        history: Vec::new(),
        best_weights: None,
        saved_last: false,
        steps_run: 0,
        profile: ProfileWindow::default(),
    }
}

/// A new run. From the first step on, last.safetensors holds a state this run resumes from: a
/// kill before the first epoch ends leaves a run that `--resume` continues, not a half-run
/// folder that only `--overwrite` clears.
fn start(gpu: &Gpu, model: &Model, cfg: &FitConfig) -> Result<Run, TrainError> {
    let run = fresh_run(Progress::start(cfg));
    if let Some(dir) = &cfg.out {
        run_folder::save_last(gpu, model, dir, cfg, &run.p)?;
    }
    Ok(run)
}

/// The run in `cfg.out` where its last.safetensors left it: weights, optimizer state, progress,
/// the history up to there, and the best weights where early stopping restores them.
fn resume(gpu: &Gpu, model: &mut Model, cfg: &FitConfig) -> Result<Run, TrainError> {
    let dir = cfg.out.as_ref().expect("checked by check_settings");
    let last = dir.join("last.safetensors");
    if !last.is_file() {
        return Err(TrainError::Invalid(format!(
            "--resume: {} holds no last.safetensors, so there is nothing to resume; run without --resume to start this run",
            dir.display()
        )));
    }
    let ck = checkpoint::Checkpoint::read(&last)?;
    ck.load_params(gpu, model)?;
    let progress = ck
        .meta
        .get("progress")
        .ok_or_else(|| TrainError::Checkpoint {
            path: ck.path.clone(),
            reason: "no training progress in the metadata; not a run's last.safetensors".into(),
        })?;
    let p: Progress = serde_json::from_str(progress).map_err(|e| TrainError::Checkpoint {
        path: ck.path.clone(),
        reason: format!("progress: {e}"),
    })?;
    ck.load_optimizer(gpu, model, &p.optimizer)?;
    let mut run = fresh_run(p);
    run.saved_last = true;
    if run.p.epochs_done > 0 {
        run.history = run_folder::read_history(dir)?;
        // Epochs past the checkpoint (a kill between history.json and last.safetensors) are
        // trained again, identically.
        run.history.truncate(run.p.epochs_done);
    }
    if run.p.early.as_ref().is_some_and(|e| e.restore_best)
        && dir.join("best.safetensors").is_file()
    {
        let mut best = Model::new(gpu, model.spec.clone(), 0)?;
        checkpoint::load_params(gpu, &mut best, &dir.join("best.safetensors"))?;
        run.best_weights = Some(best.snapshot(gpu)?);
    }
    // The numbering of the interrupted message: epochs from 1, steps done in that epoch.
    eprintln!(
        "resuming in epoch {} after step {} from {}",
        run.p.epochs_done + 1,
        run.p.step,
        ck.path.display()
    );
    Ok(run)
}

fn progress_bar(
    cfg: &FitConfig,
    epoch: usize,
    steps: usize,
    done: usize,
) -> indicatif::ProgressBar {
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
    bar.set_position(done as u64);
    bar
}

/// The training steps of `epoch` (those after `run.p.step`, when resumed mid-epoch). Stops with
/// [`TrainError::NonFinite`] at a non-finite loss, and with [`TrainError::Interrupted`] (after
/// saving) when interrupted or `stop_after_steps` is reached before the epoch's last step.
fn train_epoch(
    gpu: &Gpu,
    model: &mut Model,
    train: &Loader,
    cfg: &FitConfig,
    run: &mut Run,
    epoch: usize,
    started: Instant,
) -> Result<(), TrainError> {
    let steps = train.batches_per_epoch();
    let bar = progress_bar(cfg, epoch, steps, run.p.step);
    for (step, batch) in train.epoch(epoch as u64 - 1).enumerate() {
        // Steps trained before an interruption: same batches, already in the weights.
        if step < run.p.step {
            continue;
        }
        let batch = batch?;
        let last_of_epoch = step + 1 == steps;
        if cfg.profile {
            run.profile.begin_if_due(gpu, run.steps_run)?;
        }
        let (x, y) = batch.upload(gpu)?;
        let x = model.as_input(x);
        let seed = mix(cfg.seed, (epoch * 1_000_003 + step) as u64);
        let out = model.train_step(gpu, &run.p.optimizer, &x, &y, seed)?;
        run.profile
            .end_if_due(gpu, &bar, run.steps_run, last_of_epoch)?;
        // The only readback of a step: the two scalars the progress bar shows, in one copy.
        let (loss, correct) = out.read_sums(gpu)?;
        if !loss.is_finite() {
            bar.abandon();
            return Err(TrainError::NonFinite {
                epoch,
                step: step + 1,
                loss: loss / batch.len() as f32,
                kept: cfg
                    .out
                    .as_ref()
                    .filter(|_| run.saved_last)
                    .map(|d| d.join("last.safetensors")),
            });
        }
        run.p.loss_sum += f64::from(loss);
        run.p.correct += f64::from(correct);
        run.p.seen += batch.len();
        bar.set_message(format!(
            "loss {:.4} acc {:.4}",
            run.p.loss_sum / run.p.seen as f64,
            run.p.correct / run.p.seen as f64
        ));
        bar.inc(1);
        run.steps_run += 1;
        crate::fault::reached("step");
        let signalled = cfg.interrupt.load(Ordering::Relaxed);
        let requested = cfg.stop_after_steps.is_some_and(|n| run.steps_run >= n);
        if (signalled || requested) && !last_of_epoch {
            bar.abandon();
            let mut at = run.p.clone();
            at.step = step + 1;
            at.seconds += started.elapsed().as_secs_f64();
            return Err(interrupt(gpu, model, cfg, &at, epoch, !signalled));
        }
    }
    bar.finish_and_clear();
    Ok(())
}

/// Saves `at` (the state after a step inside `epoch`) in last.safetensors and returns the error
/// that says how to resume (`requested`: `stop_after_steps` asked for it, not a signal).
fn interrupt(
    gpu: &Gpu,
    model: &Model,
    cfg: &FitConfig,
    at: &Progress,
    epoch: usize,
    requested: bool,
) -> TrainError {
    let Some(dir) = cfg.out.as_ref() else {
        return TrainError::Invalid("interrupted without a run folder: nothing saved".into());
    };
    if let Err(e) = run_folder::save_last(gpu, model, dir, cfg, at) {
        return e;
    }
    TrainError::Interrupted {
        epoch,
        step: at.step,
        dir: dir.display().to_string(),
        requested,
    }
}

/// The epoch's row of the history: the training sums, and the validation loss and accuracy.
fn validate(
    gpu: &Gpu,
    model: &Model,
    val: Option<&Loader>,
    p: &Progress,
    epoch: usize,
    started: Instant,
) -> Result<EpochRecord, TrainError> {
    let (val_loss, val_accuracy) = match val {
        Some(v) => {
            let (l, a) = evaluate(gpu, model, v)?;
            (Some(l), Some(a))
        }
        None => (None, None),
    };
    Ok(EpochRecord {
        epoch,
        loss: p.loss_sum / p.seen.max(1) as f64,
        accuracy: p.correct / p.seen.max(1) as f64,
        val_loss,
        val_accuracy,
        lr: p.optimizer.lr(),
        seconds: p.seconds + started.elapsed().as_secs_f64(),
    })
}

/// The end of an epoch: report it, apply the callbacks, then write the run folder. Returns
/// whether training stops here.
fn end_epoch(
    gpu: &Gpu,
    model: &Model,
    cfg: &FitConfig,
    run: &mut Run,
    record: EpochRecord,
) -> Result<bool, TrainError> {
    let epoch = record.epoch;
    report(cfg, &record);
    let value = record.metric(&cfg.monitor.metric).unwrap_or(f64::NAN);
    run.history.push(record);
    // The best checkpoint records the optimizer this epoch trained with, before any reduction.
    let best_meta = checkpoint_meta(cfg, epoch, &run.p.optimizer, None);
    let improved = cfg.monitor.improved(value, run.p.best, 0.0);
    if improved {
        run.p.best = Some(value);
        if run.p.early.as_ref().is_some_and(|e| e.restore_best) {
            run.best_weights = Some(model.snapshot(gpu)?);
        }
    }
    let stop = apply_callbacks(cfg, &mut run.p, epoch, value);
    run.p.close_epoch(epoch, stop || epoch == cfg.epochs);
    if let Some(dir) = &cfg.out {
        // last.safetensors is the commit point and goes after the files a resume reads back
        // (history.json) or would not write again (best.safetensors of an improved epoch).
        run_folder::write_history(dir, &run.history)?;
        if improved {
            checkpoint::save(gpu, model, &dir.join("best.safetensors"), &best_meta)?;
        }
        run_folder::save_last(gpu, model, dir, cfg, &run.p)?;
        run.saved_last = true;
        // The plot comes last and never costs a checkpoint: a failure is only a warning.
        if let Err(e) = plot::curves(&run.history, &dir.join("curves.png")) {
            tracing::warn!("curves.png not updated: {e}");
        }
    }
    Ok(stop)
}

fn report(cfg: &FitConfig, record: &EpochRecord) {
    tracing::info!(?record, "epoch done");
    eprintln!(
        "epoch {}/{}: loss {:.4} acc {:.4}{} ({:.1}s)",
        record.epoch,
        cfg.epochs,
        record.loss,
        record.accuracy,
        match (record.val_loss, record.val_accuracy) {
            (Some(l), Some(a)) => format!(" val_loss {l:.4} val_acc {a:.4}"),
            _ => String::new(),
        },
        record.seconds
    );
}

/// ReduceLROnPlateau and EarlyStopping on the epoch's monitored `value`, as Keras orders them.
/// Returns whether early stopping ends the run.
fn apply_callbacks(cfg: &FitConfig, p: &mut Progress, epoch: usize, value: f64) -> bool {
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
    stop
}
