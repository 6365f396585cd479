//! The VGG16 transfer-learning workflow of the book's chapter 5.3, on cats vs dogs:
//! 1. feature extraction: the frozen base run once over every split, its block5_pool features
//!    cached on disk, a dense head trained on them;
//! 2. the whole model end to end with the base frozen, augmented batches streamed from disk;
//! 3. block5 fine-tuning from stage 2's best checkpoint.
//!
//! Each stage writes a run folder as `train` does and evaluates on the test split.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use sha2::{Digest, Sha256};

use crate::data::dataset::TensorDataset;
use crate::data::{
    Augment, Dataset, DirectoryDataset, LabelKind, Loader, LoaderConfig, Preprocessing,
};
use crate::gpu::Gpu;
use crate::model::spec::{dense, Activation, LayerKind, Sequential};
use crate::model::weights::{self, LoadedWeights};
use crate::model::{zoo, Model, ModelSpec};
use crate::ops::optim::Optimizer;

use crate::train::{self, checkpoint, FitConfig, TrainError};

/// Settings shared by the stages; the defaults are the book's.
#[derive(Clone, Debug)]
pub struct TransferConfig {
    /// The prepared split: train/, validation/, test/ with cats/ and dogs/.
    pub data: PathBuf,
    pub weights: PathBuf,
    pub image_size: usize,
    pub batch: usize,
    pub epochs: usize,
    pub seed: u64,
    /// Run folder of this stage.
    pub out: PathBuf,
    pub augment: bool,
    pub workers: usize,
    pub progress: bool,
    pub stop_after_steps: Option<usize>,
    pub resume: bool,
    /// Start afresh in `out` even where it holds a run.
    pub overwrite: bool,
    /// RMSprop's learning rate (None: the stage's, [`STAGE_LR`]).
    pub lr: Option<f32>,
    pub interrupt: Arc<std::sync::atomic::AtomicBool>,
}

impl TransferConfig {
    pub fn new(data: &Path, weights: &Path, out: &Path) -> Self {
        Self {
            data: data.to_path_buf(),
            weights: weights.to_path_buf(),
            image_size: 150,
            batch: 20,
            epochs: 30,
            seed: 0,
            out: out.to_path_buf(),
            augment: true,
            workers: 0,
            progress: true,
            stop_after_steps: None,
            resume: false,
            overwrite: false,
            lr: None,
            interrupt: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        }
    }

    fn fit_config(&self, optimizer: Optimizer, meta: Vec<(String, String)>) -> FitConfig {
        let mut f = FitConfig::new(self.epochs, optimizer, self.seed);
        f.out = Some(self.out.clone());
        f.progress = self.progress;
        f.stop_after_steps = self.stop_after_steps;
        f.resume = self.resume;
        f.overwrite = self.overwrite;
        f.interrupt = self.interrupt.clone();
        f.meta = meta;
        f
    }

    /// Takes the run folder for this process, refusing one another process writes or one that
    /// holds a run, unless resumed or overwritten on purpose ([`train::check_run_folder`]);
    /// checked before a stage writes anything. The lock is held while the result lives.
    pub fn check_run_folder(&self) -> Result<train::RunLock, TrainError> {
        train::check_run_folder(&self.out, self.resume, self.overwrite)
    }

    /// The checks a stage makes before any work: its run folder (whose lock it returns), and
    /// the same class folders in train/, validation/ and test/.
    pub fn check_before_start(&self) -> Result<train::RunLock, TrainError> {
        let lock = self.check_run_folder()?;
        let splits = ["train", "validation", "test"]
            .into_iter()
            .map(|s| Ok((self.data.join(s), self.split(s)?.class_names().to_vec())))
            .collect::<Result<Vec<_>, TrainError>>()?;
        crate::data::check_same_classes(&splits)?;
        Ok(lock)
    }

    fn split(&self, name: &str) -> Result<DirectoryDataset, TrainError> {
        Ok(DirectoryDataset::open(
            &self.data.join(name),
            (self.image_size, self.image_size),
            2,
        )?)
    }
}

/// The main job's stages: stage 1 (the head on cached features, whose best head stage 2 then
/// starts from) where `head_epochs` is Some, the epochs of stages 2 and 3, and whether they train
/// on cached augmented views of the images or on augmented batches streamed from disk.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    pub head_epochs: Option<usize>,
    pub frozen_epochs: usize,
    pub block5_epochs: usize,
    /// Stage 3's RMSprop learning rate where the schedule sets one (None: [`STAGE_LR`]'s).
    pub block5_lr: Option<f32>,
    /// Stages 2 and 3 on cached views ([`main_job_cached`]); else streamed.
    pub cached: bool,
    pub kind: ScheduleKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScheduleKind {
    /// The book's 30 + 100 epochs, the head trained from scratch in stage 2: the default on a
    /// GPU, and `--book` anywhere.
    Book,
    /// The default on a software adapter: stage 1 to convergence, then stages 2 and 3 warm
    /// started on cached views (BENCHMARKS.md, "The main job on lavapipe", says why).
    Software,
    /// Epochs or `--warm-start` given on the command line.
    Given,
}

/// What the command line asks of the schedule.
#[derive(Clone, Copy, Debug, Default)]
pub struct ScheduleRequest {
    pub head_epochs: Option<usize>,
    pub frozen_epochs: Option<usize>,
    pub block5_epochs: Option<usize>,
    pub warm_start: bool,
    pub book: bool,
    pub stream: bool,
}

impl Schedule {
    pub const BOOK: (usize, usize) = (30, 100);
    /// Stage 1's epochs (the book's for feature extraction) where it runs.
    pub const HEAD_EPOCHS: usize = 30;
    /// Stages 2 and 3 on a software adapter.
    pub const SOFTWARE: (usize, usize) = (2, 3);
    /// Stage 3's learning rate on a software adapter, where it runs a few epochs, not the
    /// book's 100 (BENCHMARKS.md, "Warm start and cached views").
    pub const SOFTWARE_BLOCK5_LR: f32 = 2e-5;
    /// The most views stages 2 and 3 cache (one per epoch); longer runs stream.
    pub const MAX_VIEWS: usize = 8;

    /// The schedule for an adapter: the book's on a GPU and with `book`, the software one on a
    /// software adapter, with what the user gave in place of the defaults. A stage-1 run
    /// (`warm_start`, `head_epochs`, or the software default) warm starts stage 2; stages 2 and 3
    /// then train on cached views unless `stream` or they run more than [`Self::MAX_VIEWS`]
    /// epochs.
    pub fn choose(software: bool, r: ScheduleRequest) -> Self {
        let given = r.frozen_epochs.is_some()
            || r.block5_epochs.is_some()
            || r.head_epochs.is_some()
            || r.warm_start
            || r.stream;
        let software_default = software && !r.book;
        let (f, b) = if software_default {
            Self::SOFTWARE
        } else {
            Self::BOOK
        };
        let warm = software_default || r.warm_start || r.head_epochs.is_some();
        let head_epochs = warm.then(|| r.head_epochs.unwrap_or(Self::HEAD_EPOCHS));
        let frozen_epochs = r.frozen_epochs.unwrap_or(f);
        let block5_epochs = r.block5_epochs.unwrap_or(b);
        let kind = match (given, r.book, software_default) {
            (false, true, _) | (false, false, false) => ScheduleKind::Book,
            (false, false, true) => ScheduleKind::Software,
            (true, ..) => ScheduleKind::Given,
        };
        Self {
            head_epochs,
            frozen_epochs,
            block5_epochs,
            block5_lr: software_default.then_some(Self::SOFTWARE_BLOCK5_LR),
            cached: warm && !r.stream && frozen_epochs.max(block5_epochs) <= Self::MAX_VIEWS,
            kind,
        }
    }
}

/// Seconds per image of the main job's three kinds of work on this adapter, measured on one
/// batch of training images as the stages run it: after two untimed calls, the mean of two.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Speed {
    /// VGG16 classifier forward (validation and test).
    pub evaluate: f64,
    /// A stage-2 step: frozen base forward, the head forward and backward.
    pub frozen_step: f64,
    /// A stage-3 step: the same with block5's backward too.
    pub block5_step: f64,
}

/// Times the main job's work on the first `cfg.batch` training images (see [`Speed`]); also
/// loads the weights, so a bad file fails here, before any stage starts.
pub fn measure_speed(gpu: &Gpu, cfg: &TransferConfig) -> Result<Speed, TrainError> {
    let mut model = Model::new(gpu, zoo::vgg16_classifier(cfg.image_size), cfg.seed)?;
    let pre = weights::load_vgg16(gpu, &mut model, &cfg.weights)?.preprocessing;
    let train = Arc::new(cfg.split("train")?);
    let loader = Loader::new(train, LoaderConfig::evaluation(cfg.batch, pre))?;
    let first = loader.epoch(0).next().ok_or_else(|| {
        TrainError::Invalid(format!("{}: no training images", cfg.data.display()))
    })??;
    let n = first.len();
    let batch = first.upload(gpu)?;
    // SGD at rate 0: the steps run in full and change nothing.
    let still = Optimizer::sgd(0.0);
    let run = |model: &mut Model, (x, y): &(crate::Tensor, crate::Tensor), train: bool| {
        if train {
            model.train_step(gpu, &still, x, y, 0)?.read_sums(gpu)
        } else {
            model.evaluate_batch(gpu, x, y)?.read_sums(gpu)
        }
    };
    let time = |model: &mut Model, train: bool| {
        seconds_per_image(n, &mut || {
            run(model, &batch, train)?;
            Ok(())
        })
    };
    model.freeze_through("block5_pool")?;
    let evaluate = time(&mut model, false)?;
    let frozen_step = time(&mut model, true)?;
    model.trainable_from("block5_conv1")?;
    let block5_step = time(&mut model, true)?;
    Ok(Speed {
        evaluate,
        frozen_step,
        block5_step,
    })
}

/// Seconds per image of `step`, one call of which handles a batch of `n` images: two untimed
/// calls, then the mean of two. A frozen layer's kernel is seen by its first call at a shape,
/// packed or transformed and kept by its second, and reused from its third, as an epoch's
/// batches reuse it; the first call also builds the pipelines. Timing the second (after a
/// one-image batch, whose shape runs other algorithms) made evaluation look 1.6x slower than
/// the stages ran it (BENCHMARKS.md, "The main job on lavapipe").
fn seconds_per_image(
    n: usize,
    step: &mut dyn FnMut() -> Result<(), TrainError>,
) -> Result<f64, TrainError> {
    const UNTIMED: u32 = 2;
    const TIMED: u32 = 2;
    for _ in 0..UNTIMED {
        step()?;
    }
    let t = Instant::now();
    for _ in 0..TIMED {
        step()?;
    }
    Ok(t.elapsed().as_secs_f64() / (f64::from(TIMED) * n as f64))
}

/// Seconds per image of the cached schedule's kinds of work ([`main_job_cached`]), measured as
/// [`measure_speed`] does.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct CachedSpeed {
    /// Blocks 1-4 forward, to block4_pool (once per image and per view).
    pub prefix: f64,
    /// Block5 forward on cached block4_pool features.
    pub block5_forward: f64,
    /// A head training step on block5_pool features (stages 1 and 2).
    pub head_step: f64,
    /// The head's evaluation on block5_pool features.
    pub head_eval: f64,
    /// A block5 + head training step on block4_pool features (stage 3).
    pub suffix_step: f64,
    /// Block5 and the head's evaluation on block4_pool features.
    pub suffix_eval: f64,
}

/// Times the cached schedule's work on the first `cfg.batch` training images (see
/// [`CachedSpeed`]); like [`measure_speed`] it loads the weights first.
pub fn measure_cached_speed(gpu: &Gpu, cfg: &TransferConfig) -> Result<CachedSpeed, TrainError> {
    let (mut model, loaded, _) = frozen_classifier(gpu, cfg, None)?;
    let train = Arc::new(cfg.split("train")?);
    // The views' loader: images decoded and augmented on worker threads, which share the cores
    // with a software adapter, so the prefix is timed batch after batch as the pass runs it.
    let mut lc = LoaderConfig::evaluation(cfg.batch, loaded.preprocessing);
    lc.augment = Some(Augment::book());
    lc.seed = cfg.seed;
    let loader = Loader::new(train, lc)?;
    let no_images = || TrainError::Invalid(format!("{}: no training images", cfg.data.display()));
    let first = loader.epoch(0).next().ok_or_else(no_images)??;
    let n = first.len();
    let (x, y) = first.upload(gpu)?;
    let time = |step: &mut dyn FnMut() -> Result<(), TrainError>| seconds_per_image(n, step);
    // RMSprop at rate 0: the stages' optimizer, whose update costs time too, changing nothing.
    let still = Optimizer::rmsprop(0.0);
    let mut epoch = 0;
    let mut batches = loader.epoch(epoch);
    let prefix = time(&mut || {
        let b = match batches.next() {
            Some(b) => b?,
            None => {
                epoch += 1;
                batches = loader.epoch(epoch);
                batches.next().ok_or_else(no_images)??
            }
        };
        let (x, _) = b.upload(gpu)?;
        model.features(gpu, &x, "block4_pool")?.to_vec(gpu)?;
        Ok(())
    })?;
    drop(batches);
    let f4 = model.features(gpu, &x, "block4_pool")?;
    let f4_host = f4.to_vec(gpu)?;
    let f4_shape = f4.dims().to_vec();
    let b5 = model.spec.require_layer("block5_conv1")?;
    let block5 = model.suffix(b5)?;
    // Cached features go up from the host for every batch.
    let block5_forward = time(&mut || {
        let f4 = crate::Tensor::from_slice(gpu, &f4_shape[..], &f4_host)?;
        block5.features(gpu, &f4, "block5_pool")?.to_vec(gpu)?;
        Ok(())
    })?;
    let f5 = block5.features(gpu, &f4, "block5_pool")?;
    let mut head = model.suffix(model.spec.require_layer("flatten")?)?;
    let head_step = time(&mut || {
        head.train_step(gpu, &still, &f5, &y, 0)?.read_sums(gpu)?;
        Ok(())
    })?;
    let head_eval = time(&mut || {
        head.evaluate_batch(gpu, &f5, &y)?.read_sums(gpu)?;
        Ok(())
    })?;
    model.trainable_from("block5_conv1")?;
    let mut suffix = model.suffix(b5)?;
    let suffix_step = time(&mut || {
        let f4 = crate::Tensor::from_slice(gpu, &f4_shape[..], &f4_host)?;
        suffix.train_step(gpu, &still, &f4, &y, 0)?.read_sums(gpu)?;
        Ok(())
    })?;
    let suffix_eval = time(&mut || {
        suffix.evaluate_batch(gpu, &f4, &y)?.read_sums(gpu)?;
        Ok(())
    })?;
    Ok(CachedSpeed {
        prefix,
        block5_forward,
        head_step,
        head_eval,
        suffix_step,
        suffix_eval,
    })
}

/// Expected seconds of each part of [`main_job_cached`]: the feature passes, then stages 1, 2
/// and 3, for `views` views and the splits' sizes.
pub fn cached_seconds(
    speed: &CachedSpeed,
    schedule: &Schedule,
    (train, val, test): (usize, usize, usize),
) -> [f64; 4] {
    let views = schedule.frozen_epochs.max(schedule.block5_epochs).max(1);
    let (train, val, test) = (train as f64, val as f64, test as f64);
    let images = train + val + test + views as f64 * train;
    let features = images * (speed.prefix + speed.block5_forward);
    let head = |epochs: usize| {
        epochs as f64 * (train * speed.head_step + val * speed.head_eval) + test * speed.head_eval
    };
    let block5 = schedule.block5_epochs as f64
        * (train * speed.suffix_step + val * speed.suffix_eval)
        + test * speed.suffix_eval;
    [
        features,
        head(schedule.head_epochs.unwrap_or(0)),
        head(schedule.frozen_epochs),
        block5,
    ]
}

/// Expected seconds of a stage: `epochs` of `train` images at `step` s each plus `val` images
/// evaluated, then the `test` images.
pub fn stage_seconds(
    speed: &Speed,
    step: f64,
    epochs: usize,
    (train, val, test): (usize, usize, usize),
) -> f64 {
    epochs as f64 * (train as f64 * step + val as f64 * speed.evaluate)
        + test as f64 * speed.evaluate
}

/// The number of images in each split (train, validation, test).
pub fn split_sizes(cfg: &TransferConfig) -> Result<(usize, usize, usize), TrainError> {
    Ok((
        cfg.split("train")?.len(),
        cfg.split("validation")?.len(),
        cfg.split("test")?.len(),
    ))
}

/// What a stage did, for the final report.
#[derive(Clone, Debug, serde::Serialize)]
pub struct StageReport {
    pub stage: String,
    pub epochs: usize,
    pub seconds_per_epoch: f64,
    pub train_images_per_s: f64,
    pub test_loss: f64,
    pub test_accuracy: f64,
    pub run_dir: PathBuf,
}

/// Writes the stage's settings to `out/config.json`, as `train` does.
fn write_config(
    cfg: &TransferConfig,
    stage: &str,
    opt: &Optimizer,
    pre: Preprocessing,
) -> Result<(), TrainError> {
    std::fs::create_dir_all(&cfg.out).map_err(|source| TrainError::Io {
        path: cfg.out.clone(),
        source,
    })?;
    let json = serde_json::json!({
        "stage": stage, "data": cfg.data, "weights": cfg.weights, "image_size": cfg.image_size,
        "batch": cfg.batch, "epochs": cfg.epochs, "seed": cfg.seed, "augment": cfg.augment && !stage.starts_with('1'),
        "optimizer": opt, "preprocessing": pre,
    });
    train::write_or_check_config(&cfg.out, &json, cfg.resume, &["epochs"])
}

fn meta(pre: Preprocessing, classes: &[String]) -> Vec<(String, String)> {
    vec![
        (
            "preprocessing".into(),
            serde_json::to_string(&pre).expect("serialises"),
        ),
        (
            "class_names".into(),
            serde_json::to_string(classes).expect("serialises"),
        ),
    ]
}

fn report(
    stage: &str,
    history: &[train::EpochRecord],
    train_images: usize,
    test: (f64, f64),
    dir: &Path,
) -> Result<StageReport, TrainError> {
    let secs: f64 = history.iter().map(|r| r.seconds).sum::<f64>() / history.len().max(1) as f64;
    let r = StageReport {
        stage: stage.to_string(),
        epochs: history.len(),
        seconds_per_epoch: secs,
        train_images_per_s: train_images as f64 / secs.max(1e-9),
        test_loss: test.0,
        test_accuracy: test.1,
        run_dir: dir.to_path_buf(),
    };
    train::write_atomic(
        &dir.join("metrics.json"),
        serde_json::to_string_pretty(&r)
            .expect("report serialises")
            .as_bytes(),
    )?;
    Ok(r)
}

/// What a stage-1 checkpoint records about the base its features came from (the checkpoint's
/// own `preprocessing` is `none`: its inputs are features), so [`image_model`] can put the
/// head back on that base: the base's last layer, the image size, the weights file (absolute
/// path and sha256) and the preprocessing the weights expect.
const BASE_LAYER: &str = "base_layer";
const BASE_IMAGE_SIZE: &str = "base_image_size";
const BASE_WEIGHTS: &str = "base_weights";
const BASE_WEIGHTS_SHA256: &str = "base_weights_sha256";
const BASE_PREPROCESSING: &str = "base_preprocessing";

fn base_meta(
    cfg: &TransferConfig,
    layer: &str,
    pre: Preprocessing,
    weights_sha256: String,
) -> Result<Vec<(String, String)>, TrainError> {
    let weights = std::path::absolute(&cfg.weights).map_err(|source| TrainError::Io {
        path: cfg.weights.clone(),
        source,
    })?;
    Ok(vec![
        (BASE_LAYER.into(), layer.into()),
        (BASE_IMAGE_SIZE.into(), cfg.image_size.to_string()),
        (BASE_WEIGHTS.into(), weights.display().to_string()),
        (BASE_WEIGHTS_SHA256.into(), weights_sha256),
        (
            BASE_PREPROCESSING.into(),
            serde_json::to_string(&pre).expect("serialises"),
        ),
    ])
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of a weights file and their sha256 (hex): read once, then hashed and loaded from
/// the same bytes (VGG16's weights are 58-553 MB).
fn read_weights(path: &Path) -> Result<(Vec<u8>, String), TrainError> {
    let bytes = std::fs::read(path).map_err(|source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let sha = hex(&Sha256::digest(&bytes));
    Ok((bytes, sha))
}

/// A checkpoint made ready for images: the model, the preprocessing its images need, and the
/// class names it was trained with.
pub struct ImageModel {
    pub model: Model,
    pub preprocessing: Preprocessing,
    pub class_names: Vec<String>,
    /// For a stage-1 head: the VGG16 weights file it was put back on.
    pub base_weights: Option<PathBuf>,
}

/// The checkpoint at `path` as a model that takes images. Stage 2 and 3 checkpoints (and
/// `train`'s) hold the whole model. A stage-1 checkpoint holds a head trained on VGG16
/// features: it is put back on the VGG16 base whose weights it records (or `weights`, where
/// given), after checking that file's sha256 against the one recorded, since a head is only
/// right on the features it was trained on.
pub fn image_model(
    gpu: &Gpu,
    path: &Path,
    weights: Option<&Path>,
) -> Result<ImageModel, TrainError> {
    let ck = checkpoint::Checkpoint::read(path)?;
    let spec = ck.spec()?;
    let bad = |reason: String| TrainError::Checkpoint {
        path: path.to_path_buf(),
        reason,
    };
    let parse_pre = |key: &str, default: Preprocessing| match ck.meta.get(key) {
        Some(p) => serde_json::from_str(p).map_err(|e| bad(format!("{key}: {e}"))),
        None => Ok(default),
    };
    let class_names = match ck.meta.get("class_names") {
        Some(c) => serde_json::from_str(c).map_err(|e| bad(format!("class_names: {e}")))?,
        None => Vec::new(),
    };
    let Some(layer) = ck.meta.get(BASE_LAYER) else {
        if spec.name == "vgg16-feature-head" {
            return Err(bad("a head trained on VGG16 features that does not record which weights and image size made them (written before cnn-wgpu 0.1 recorded them); run extract again to get one that works on images".into()));
        }
        let mut model = Model::new(gpu, spec, 0)?;
        ck.load_params(gpu, &mut model)?;
        return Ok(ImageModel {
            model,
            preprocessing: parse_pre("preprocessing", Preprocessing::Rescale)?,
            class_names,
            base_weights: None,
        });
    };
    let size: usize = ck
        .meta
        .get(BASE_IMAGE_SIZE)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("{BASE_IMAGE_SIZE} missing or not a number")))?;
    let recorded = ck
        .meta
        .get(BASE_WEIGHTS)
        .map(PathBuf::from)
        .ok_or_else(|| bad(format!("{BASE_WEIGHTS} missing")))?;
    let sha = ck
        .meta
        .get(BASE_WEIGHTS_SHA256)
        .ok_or_else(|| bad(format!("{BASE_WEIGHTS_SHA256} missing")))?;
    let weights = match weights {
        Some(w) => w.to_path_buf(),
        None if recorded.is_file() => recorded.clone(),
        None => {
            return Err(bad(format!(
                "a head trained on the features of the VGG16 weights {} (sha256 {sha}), which are not there any more; pass --weights PATH to a copy of that file",
                recorded.display()
            )))
        }
    };
    let (bytes, found) = read_weights(&weights)?;
    if &found != sha {
        return Err(bad(format!(
            "a head trained on the features of VGG16 weights with sha256 {sha} ({}), but {} has sha256 {found}; the head is only right on the features it was trained on: pass --weights PATH to the file it was trained with",
            recorded.display(),
            weights.display()
        )));
    }
    let base = zoo::vgg16_base(size);
    let through = base
        .layer_index(layer)
        .ok_or_else(|| bad(format!("{BASE_LAYER} {layer} is not a VGG16 layer")))?;
    let composed = ModelSpec {
        name: format!("vgg16-{layer}+{}", spec.name),
        input: base.input.clone(),
        layers: base.layers[..=through]
            .iter()
            .chain(&spec.layers)
            .cloned()
            .collect(),
    };
    let mut model = Model::new(gpu, composed, 0)?;
    weights::load_vgg16_bytes(gpu, &mut model, &weights, &bytes)?;
    drop(bytes);
    let head = param_names(&spec)?;
    ck.load_params_where(gpu, &mut model, |n| head.contains(n))?;
    Ok(ImageModel {
        model,
        preprocessing: parse_pre(BASE_PREPROCESSING, Preprocessing::Caffe)?,
        class_names,
        base_weights: Some(weights),
    })
}

/// The book's head on VGG16's (4,4,512) block5_pool features: Flatten, Dense 256 relu, Dropout
/// 0.5, Dense 1 sigmoid (the same layer names as in `vgg16-classifier`).
pub fn feature_head(input: &[usize]) -> ModelSpec {
    Sequential::new("vgg16-feature-head", input)
        .push(LayerKind::Flatten)
        .push(dense(256, Activation::Relu))
        .push(LayerKind::Dropout { rate: 0.5 })
        .push(dense(1, Activation::Sigmoid))
        .build()
}

/// A key naming exactly what a feature cache was computed from: the layer, the image size, the
/// preprocessing, the weights file and every image (path, size, modification time).
fn cache_key(
    ds: &DirectoryDataset,
    weights: &Path,
    layer: &str,
    size: usize,
    pre: Preprocessing,
) -> Result<String, TrainError> {
    let mut h = Sha256::new();
    let stamp = |p: &Path| -> Result<String, TrainError> {
        let m = std::fs::metadata(p).map_err(|source| TrainError::Io {
            path: p.to_path_buf(),
            source,
        })?;
        let t = m
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        Ok(format!("{}|{}|{t}\n", p.display(), m.len()))
    };
    h.update(format!("{layer}|{size}|{pre:?}\n").as_bytes());
    h.update(stamp(weights)?.as_bytes());
    for i in 0..ds.len() {
        h.update(stamp(ds.path(i))?.as_bytes());
    }
    Ok(hex(&h.finalize()))
}

/// Where and how [`cached_features`] computes and keeps a layer's features.
pub struct FeatureRequest<'a> {
    pub layer: &'a str,
    pub preprocessing: Preprocessing,
    /// The weights file (part of the cache key).
    pub weights: &'a Path,
    /// The cache file.
    pub cache: &'a Path,
    pub batch: usize,
    /// Features of augmented images: `(augmentation, seed, view)` makes every image as a
    /// training loader with that augmentation and seed makes it in epoch `view` (0-based).
    pub augment: Option<(Augment, u64, u64)>,
}

/// The values of a feature cache at `cache` when it holds `n` samples of `per` values under
/// `key`; None when it is missing, stale or unreadable (then it is computed again).
fn read_cache(cache: &Path, key: &str, n: usize, per: usize) -> Option<Vec<f32>> {
    let ck = checkpoint::Checkpoint::read(cache).ok()?;
    if ck.meta.get("key").map(String::as_str) != Some(key) {
        return None;
    }
    let (s, v) = ck.tensors.get("features")?;
    (s.first() == Some(&n) && v.len() == n * per).then(|| v.clone())
}

/// Writes `values` ((N,H,W,C) features of `layer`) to `cache` under `key`, atomically.
fn write_cache(
    cache: &Path,
    key: String,
    layer: &str,
    shape: [usize; 4],
    values: &[f32],
) -> Result<(), TrainError> {
    let view = safetensors::tensor::TensorView::new(
        safetensors::Dtype::F32,
        shape.to_vec(),
        bytemuck::cast_slice(values),
    )
    .expect("f32 view");
    let meta = std::collections::HashMap::from([
        ("key".to_string(), key),
        ("layer".to_string(), layer.to_string()),
    ]);
    let bytes = safetensors::serialize([("features", view)], Some(meta))
        .map_err(|e| TrainError::Invalid(e.to_string()))?;
    if let Some(dir) = cache.parent() {
        std::fs::create_dir_all(dir).map_err(|source| TrainError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    crate::train::write_atomic(cache, &bytes)
}

/// A cached feature set: its samples and the key naming what they were computed from (a
/// derived cache's key extends it).
pub struct Features {
    pub set: TensorDataset,
    pub key: String,
}

/// The `layer` features of every image of `ds` (dataset order), computed with `model` in
/// batches, or read back from `cache` when its key matches. Every image must be readable.
pub fn cached_features(
    gpu: &Gpu,
    model: &Model,
    ds: DirectoryDataset,
    req: &FeatureRequest<'_>,
) -> Result<Features, TrainError> {
    let FeatureRequest {
        layer,
        preprocessing: pre,
        weights,
        cache,
        batch,
        augment,
    } = *req;
    let size = ds.sample_shape().0;
    let mut key = cache_key(&ds, weights, layer, size, pre)?;
    if let Some((aug, seed, view)) = augment {
        key = hex(&Sha256::digest(
            format!("{key}|{aug:?}|seed {seed}|view {view}").as_bytes(),
        ));
    }
    let classes: Vec<usize> = (0..ds.len()).map(|i| ds.class_of(i)).collect();
    let class_names = ds.class_names().to_vec();
    let sample = layer_sample(model, layer)?;
    let values = cached_or_computed(cache, &key, layer, classes.len(), sample, || {
        let root = ds.root().to_path_buf();
        let n = ds.len();
        let mut lc = LoaderConfig::evaluation(batch, pre);
        let mut label = format!("features {}", root.display());
        let mut epoch = 0;
        if let Some((aug, seed, view)) = augment {
            lc.augment = Some(aug);
            lc.seed = seed;
            epoch = view;
            label = format!("{label}, augmented view {}", view + 1);
        }
        let loader = Loader::new(Arc::new(ds), lc)?;
        let bar = crate::train::images_bar(label, n);
        let mut values = Vec::with_capacity(n * sample.0 * sample.1 * sample.2);
        for b in loader.epoch(epoch) {
            let b = b?;
            let (x, _) = b.upload(gpu)?;
            values.extend(model.features(gpu, &x, layer)?.to_vec(gpu)?);
            bar.inc(b.len() as u64);
        }
        bar.finish_and_clear();
        if !loader.skipped().is_empty() {
            return Err(TrainError::Invalid(format!(
                "{} unreadable image(s) under {}; features must cover every image (first: {})",
                loader.skipped().len(),
                root.display(),
                loader.skipped()[0]
            )));
        }
        Ok(values)
    })?;
    Ok(Features {
        set: TensorDataset {
            values,
            sample,
            classes,
            class_names,
            labels: LabelKind::Binary,
            name: cache.display().to_string(),
        },
        key,
    })
}

/// A layer's (H,W,C) sample shape in `model`.
fn layer_sample(model: &Model, layer: &str) -> Result<(usize, usize, usize), TrainError> {
    let idx = model
        .spec
        .layer_index(layer)
        .ok_or_else(|| TrainError::Invalid(format!("no layer {layer}")))?;
    let s = &model.shapes()[idx];
    Ok((s[0], s[1], s[2]))
}

/// The `n` samples of `layer`'s features (each `sample` in shape) that `cache` holds under
/// `key`; where it is missing or stale, those `compute` makes, written there first. This is
/// what every feature cache shares, wherever its inputs come from.
fn cached_or_computed(
    cache: &Path,
    key: &str,
    layer: &str,
    n: usize,
    sample: (usize, usize, usize),
    compute: impl FnOnce() -> Result<Vec<f32>, TrainError>,
) -> Result<Vec<f32>, TrainError> {
    if let Some(values) = read_cache(cache, key, n, sample.0 * sample.1 * sample.2) {
        tracing::info!(cache = %cache.display(), "reusing cached features");
        eprintln!("reusing {layer} features from {}", cache.display());
        return Ok(values);
    }
    let values = compute()?;
    write_cache(
        cache,
        key.to_string(),
        layer,
        [n, sample.0, sample.1, sample.2],
        &values,
    )?;
    Ok(values)
}

/// `layer`'s output of `model` on every sample of `from` (features of an earlier layer),
/// cached at `cache` under a key derived from `from`'s: the later layers of a frozen base run
/// on cached features of its earlier ones.
pub fn derived_features(
    gpu: &Gpu,
    model: &Model,
    from: &Features,
    layer: &str,
    cache: &Path,
    batch: usize,
) -> Result<Features, TrainError> {
    let key = hex(&Sha256::digest(
        format!("{}|{}|{layer}", from.key, model.spec.name).as_bytes(),
    ));
    let sample = layer_sample(model, layer)?;
    let n = from.set.len();
    let values = cached_or_computed(cache, &key, layer, n, sample, || {
        let mut values = Vec::with_capacity(n * sample.0 * sample.1 * sample.2);
        let (h, w, c) = from.set.sample;
        let bar = crate::train::images_bar(format!("{layer} from {}", from.set.name), n);
        for chunk in from.set.values.chunks(batch * h * w * c) {
            let rows = chunk.len() / (h * w * c);
            let x = crate::Tensor::from_slice(gpu, &[rows, h, w, c][..], chunk)?;
            values.extend(model.features(gpu, &x, layer)?.to_vec(gpu)?);
            bar.inc(rows as u64);
        }
        bar.finish_and_clear();
        Ok(values)
    })?;
    Ok(Features {
        set: TensorDataset {
            values,
            sample,
            classes: from.set.classes.clone(),
            class_names: from.set.class_names.clone(),
            labels: from.set.labels,
            name: cache.display().to_string(),
        },
        key,
    })
}

/// VGG16's base with `cfg.weights` loaded, what the loader found, and the file's sha256 (which
/// a stage-1 checkpoint records), the file read once.
fn vgg16_base_with_weights(
    gpu: &Gpu,
    cfg: &TransferConfig,
) -> Result<(Model, LoadedWeights, String), TrainError> {
    let mut base = Model::new(gpu, zoo::vgg16_base(cfg.image_size), cfg.seed)?;
    let (bytes, sha) = read_weights(&cfg.weights)?;
    let loaded = weights::load_vgg16_bytes(gpu, &mut base, &cfg.weights, &bytes)?;
    eprintln!(
        "{:?} VGG16 weights from {}: {:?} preprocessing (from the {})",
        loaded.naming,
        cfg.weights.display(),
        loaded.preprocessing,
        loaded.preprocessing_source
    );
    Ok((base, loaded, sha))
}

/// `layer`'s features of the train, validation and test splits, each cached under
/// `cfg.out/features/`.
fn split_features(
    gpu: &Gpu,
    cfg: &TransferConfig,
    model: &Model,
    layer: &str,
    pre: Preprocessing,
) -> Result<[Features; 3], TrainError> {
    let mut sets = Vec::new();
    for split in ["train", "validation", "test"] {
        let cache = cfg
            .out
            .join("features")
            .join(format!("{split}-{layer}.safetensors"));
        let req = FeatureRequest {
            layer,
            preprocessing: pre,
            weights: &cfg.weights,
            cache: &cache,
            batch: cfg.batch,
            augment: None,
        };
        sets.push(cached_features(gpu, model, cfg.split(split)?, &req)?);
    }
    Ok(sets
        .try_into()
        .unwrap_or_else(|_| unreachable!("three splits")))
}

/// Trains `model` on cached features (shuffled, never augmented) with `fit_cfg`, validates each
/// epoch and evaluates on the test features at the end. Returns the history and (loss, accuracy).
fn fit_on_features(
    gpu: &Gpu,
    batch: usize,
    seed: u64,
    model: &mut Model,
    [train_set, val, test]: [Arc<dyn Dataset>; 3],
    fit_cfg: &FitConfig,
) -> Result<(Vec<train::EpochRecord>, (f64, f64)), TrainError> {
    let train_loader = Loader::new(
        train_set,
        LoaderConfig::training(batch, seed, Preprocessing::None, None),
    )?;
    let val_loader = Loader::new(val, LoaderConfig::evaluation(batch, Preprocessing::None))?;
    let history = train::fit(gpu, model, &train_loader, Some(&val_loader), fit_cfg)?;
    let test_loader = Loader::new(test, LoaderConfig::evaluation(batch, Preprocessing::None))?;
    let result = train::evaluate(gpu, model, &test_loader)?;
    Ok((history, result))
}

/// Stage 1: block5_pool features of every split (cached under `out/features/`), then the dense
/// head trained on them with RMSprop 2e-5, and evaluated on the test features.
pub fn extract(gpu: &Gpu, cfg: &TransferConfig) -> Result<StageReport, TrainError> {
    let _lock = cfg.check_before_start()?;
    let (base, loaded, weights_sha256) = vgg16_base_with_weights(gpu, cfg)?;
    let pre = loaded.preprocessing;
    let sets = split_features(gpu, cfg, &base, "block5_pool", pre)?;
    drop(base);
    train_head(gpu, cfg, sets.map(|f| f.set), pre, weights_sha256)
}

/// Stage 1's head (the book's, seeded by `cfg.seed`) trained on block5_pool features of the
/// train, validation and test splits, into `cfg.out` as a checkpoint that records its base.
fn train_head(
    gpu: &Gpu,
    cfg: &TransferConfig,
    sets: [TensorDataset; 3],
    pre: Preprocessing,
    weights_sha256: String,
) -> Result<StageReport, TrainError> {
    let (h, w, c) = sets[0].sample;
    let n_train = sets[0].len();
    let classes = sets[0].class_names.clone();
    let mut head = Model::new(gpu, feature_head(&[h, w, c]), cfg.seed)?;
    let opt = Optimizer::rmsprop(cfg.lr.unwrap_or(STAGE_LR[0]));
    write_config(cfg, "1: feature extraction", &opt, pre)?;
    let mut m = meta(Preprocessing::None, &classes);
    m.extend(base_meta(cfg, "block5_pool", pre, weights_sha256)?);
    let fit_cfg = cfg.fit_config(opt, m);
    let sets = sets.map(|s| Arc::new(s) as Arc<dyn Dataset>);
    let (history, result) = fit_on_features(gpu, cfg.batch, cfg.seed, &mut head, sets, &fit_cfg)?;
    report("1: feature extraction", &history, n_train, result, &cfg.out)
}

/// The stages' RMSprop learning rates, the book's: the head (stages 1 and 2) at 2e-5, block5's
/// fine-tuning at 1e-5.
pub const STAGE_LR: [f32; 3] = [2e-5, 2e-5, 1e-5];

/// The names of the head's parameters (`flatten` to `dense_1`), the same in the feature head
/// and the classifier.
fn head_param_names(
    feature_shape: &[usize],
) -> Result<std::collections::HashSet<String>, TrainError> {
    param_names(&feature_head(feature_shape))
}

/// The names of every parameter of `spec`'s layers.
fn param_names(spec: &ModelSpec) -> Result<std::collections::HashSet<String>, TrainError> {
    let mut names = std::collections::HashSet::new();
    for i in 0..spec.layers.len() {
        names.extend(spec.param_shapes(i)?.into_iter().map(|(n, _)| n));
    }
    Ok(names)
}

/// Puts stage 1's head from the checkpoint `stage1` on `model` (a VGG16 classifier with the
/// weights whose sha256 is `weights_sha256`): the warm start of stage 2. Refuses a checkpoint
/// that is not a stage-1 head, or one trained on other features (another weights file or
/// image size), naming what differs.
pub fn warm_start_head(
    gpu: &Gpu,
    model: &mut Model,
    stage1: &Path,
    weights_sha256: &str,
    image_size: usize,
) -> Result<(), TrainError> {
    let ck = checkpoint::Checkpoint::read(stage1)?;
    let bad = |reason: String| TrainError::Checkpoint {
        path: stage1.to_path_buf(),
        reason,
    };
    if ck.meta.get(BASE_LAYER).map(String::as_str) != Some("block5_pool") {
        return Err(bad(
            "not a stage-1 head on VGG16's block5_pool features (written by `extract` or the main job's stage 1)".into(),
        ));
    }
    let size = ck.meta.get(BASE_IMAGE_SIZE).map(String::as_str);
    if size != Some(image_size.to_string().as_str()) {
        return Err(bad(format!(
            "a head trained at image size {}, but this stage runs at {image_size}",
            size.unwrap_or("(not recorded)")
        )));
    }
    let sha = ck.meta.get(BASE_WEIGHTS_SHA256).map(String::as_str);
    if sha != Some(weights_sha256) {
        return Err(bad(format!(
            "a head trained on the features of VGG16 weights with sha256 {}, but this stage's weights have sha256 {weights_sha256}; a head is only right on the features it was trained on",
            sha.unwrap_or("(not recorded)")
        )));
    }
    let flatten = model.spec.require_layer("flatten")?;
    let names = head_param_names(&model.shapes()[flatten - 1])?;
    ck.load_params_where(gpu, model, |n| names.contains(n))
}

/// The VGG16 classifier with `cfg.weights` loaded and its base frozen: stage 2's model, with
/// stage 1's head from `warm` where given, else the head initialised from `cfg.seed`.
pub fn frozen_classifier(
    gpu: &Gpu,
    cfg: &TransferConfig,
    warm: Option<&Path>,
) -> Result<(Model, LoadedWeights, String), TrainError> {
    let mut model = Model::new(gpu, zoo::vgg16_classifier(cfg.image_size), cfg.seed)?;
    let (bytes, sha) = read_weights(&cfg.weights)?;
    let loaded = weights::load_vgg16_bytes(gpu, &mut model, &cfg.weights, &bytes)?;
    drop(bytes);
    if let Some(stage1) = warm {
        warm_start_head(gpu, &mut model, stage1, &sha, cfg.image_size)?;
        eprintln!(
            "stage 2: the head starts from stage 1's {}",
            stage1.display()
        );
    }
    model.freeze_through("block5_pool")?;
    Ok((model, loaded, sha))
}

/// Stage 2: the VGG16 classifier end to end with the base frozen, augmented batches streamed
/// from disk, RMSprop 2e-5; the head starts from the stage-1 checkpoint `warm` where given.
pub fn finetune_frozen(
    gpu: &Gpu,
    cfg: &TransferConfig,
    warm: Option<&Path>,
) -> Result<StageReport, TrainError> {
    let _lock = cfg.check_before_start()?;
    let (model, loaded, _) = frozen_classifier(gpu, cfg, warm)?;
    eprintln!(
        "stage 2: base frozen, {} trainable weight tensors",
        model.trainable_weight_count()
    );
    run_end_to_end(
        gpu,
        cfg,
        model,
        loaded.preprocessing,
        Optimizer::rmsprop(cfg.lr.unwrap_or(STAGE_LR[1])),
        "2: frozen base + augmentation",
    )
}

/// Stage 3: block5_conv1..3 unfrozen, RMSprop 1e-5, starting from stage 2's checkpoint `from`.
pub fn finetune_block5(
    gpu: &Gpu,
    cfg: &TransferConfig,
    from: &Path,
) -> Result<StageReport, TrainError> {
    let _lock = cfg.check_before_start()?;
    let ck = checkpoint::Checkpoint::read(from)?;
    let mut model = Model::new(gpu, ck.spec()?, cfg.seed)?;
    if model.spec.layer_index("block5_conv1").is_none() {
        return Err(TrainError::Invalid(format!(
            "{} is not a VGG16 classifier checkpoint (no block5_conv1)",
            from.display()
        )));
    }
    ck.load_params(gpu, &mut model)?;
    let pre = match ck.meta.get("preprocessing") {
        Some(p) => serde_json::from_str(p)
            .map_err(|e| TrainError::Invalid(format!("{}: preprocessing: {e}", from.display())))?,
        None => Preprocessing::Caffe,
    };
    model.trainable_from("block5_conv1")?;
    eprintln!(
        "stage 3: block5 unfrozen, {} trainable weight tensors",
        model.trainable_weight_count()
    );
    if !cfg.augment {
        return block5_on_cached_prefix(gpu, cfg, model, pre);
    }
    run_end_to_end(
        gpu,
        cfg,
        model,
        pre,
        Optimizer::rmsprop(cfg.lr.unwrap_or(STAGE_LR[2])),
        "3: block5 fine-tuning",
    )
}

/// Trains the layers of `model` from `first` on as a model of their own on cached features of
/// layer `first - 1` (`sets`: train, validation, test), with its run in `cfg.out/<sub>`. The
/// suffix shares the model's parameters, so `cfg.out` then gets the whole model's
/// checkpoints (last, and best after the suffix's best weights are loaded back, which `model`
/// then holds) and the suffix's history, and `predict` and `evaluate` take images. Returns
/// the history and the test (loss, accuracy) of the last weights, as a streamed stage reports.
#[allow(clippy::too_many_arguments)]
fn train_suffix_cached(
    gpu: &Gpu,
    cfg: &TransferConfig,
    model: &mut Model,
    first: usize,
    sets: [Arc<dyn Dataset>; 3],
    opt: Optimizer,
    pre: Preprocessing,
    sub: &str,
) -> Result<(Vec<train::EpochRecord>, (f64, f64)), TrainError> {
    let classes = sets[0].class_names().to_vec();
    let mut suffix = model.suffix(first)?;
    let mut sub_cfg = cfg.clone();
    sub_cfg.out = cfg.out.join(sub);
    let fit_cfg = sub_cfg.fit_config(opt, meta(Preprocessing::None, &classes));
    let (history, result) = fit_on_features(gpu, cfg.batch, cfg.seed, &mut suffix, sets, &fit_cfg)?;
    let m = meta(pre, &classes);
    let m: Vec<(&str, String)> = m.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    checkpoint::save(gpu, model, &cfg.out.join("last.safetensors"), &m)?;
    checkpoint::load_params(gpu, &mut suffix, &sub_cfg.out.join("best.safetensors"))?;
    checkpoint::save(gpu, model, &cfg.out.join("best.safetensors"), &m)?;
    for f in ["history.json", "history.csv", "curves.png"] {
        let (from, to) = (sub_cfg.out.join(f), cfg.out.join(f));
        if f == "curves.png" && !from.is_file() {
            // fit only warned that it could not draw the curves; that costs nothing here either.
            continue;
        }
        let bytes = std::fs::read(&from).map_err(|source| TrainError::Io {
            path: from.clone(),
            source,
        })?;
        train::write_atomic(&to, &bytes)?;
    }
    Ok((history, result))
}

/// Stage 3 without augmentation: every epoch sees the same images, so the frozen blocks 1-4 are
/// run once per image and their block4_pool output cached; the epochs then train block5 and the
/// head on the cached (9,9,512) tensors only. The run folder keeps the full model's checkpoints
/// (the suffix's own run is in `block5-cached/`), and metrics.json reports the speed-up measured
/// against one end-to-end step.
fn block5_on_cached_prefix(
    gpu: &Gpu,
    cfg: &TransferConfig,
    mut model: Model,
    pre: Preprocessing,
) -> Result<StageReport, TrainError> {
    let stage = "3: block5 fine-tuning (cached block4_pool)";
    let opt = Optimizer::rmsprop(cfg.lr.unwrap_or(STAGE_LR[2]));
    write_config(cfg, stage, &opt, pre)?;
    let first = model
        .spec
        .layer_index("block5_conv1")
        .expect("checked by the caller");
    let prefix_layer = model.spec.layers[first - 1].name.clone();
    let n_train = cfg.split("train")?.len();

    // The cost of one ordinary step, to measure what the cache saves.
    let probe = Loader::new(
        Arc::new(cfg.split("train")?),
        LoaderConfig::evaluation(cfg.batch, pre),
    )?;
    let full_step = {
        let batch = probe
            .epoch(0)
            .next()
            .ok_or_else(|| TrainError::Invalid("empty training split".into()))??;
        let (x, y) = batch.upload(gpu)?;
        // What an ordinary step costs: the frozen prefix forward, then block5 and the head. Timed
        // the second time (after the pipelines are built), with SGD at lr 0 so the weights stay.
        let mut s = model.suffix(first)?;
        let still = Optimizer::sgd(0.0);
        let mut secs = 0.0;
        for _ in 0..2 {
            let t = Instant::now();
            let f = model.features(gpu, &x, &prefix_layer)?;
            s.train_step(gpu, &still, &f, &y, 0)?.read_sums(gpu)?;
            secs = t.elapsed().as_secs_f64();
        }
        secs
    };
    let sets = split_features(gpu, cfg, &model, &prefix_layer, pre)?
        .map(|f| Arc::new(f.set) as Arc<dyn Dataset>);
    let (history, result) =
        train_suffix_cached(gpu, cfg, &mut model, first, sets, opt, pre, "block5-cached")?;
    let mut r = report(stage, &history, n_train, result, &cfg.out)?;
    let steps = n_train.div_ceil(cfg.batch) as f64;
    let cached_epoch = history.iter().map(|h| h.seconds).sum::<f64>() / history.len().max(1) as f64;
    let speedup = steps * full_step / cached_epoch.max(1e-9);
    eprintln!("cached block4_pool prefix: {cached_epoch:.1} s per epoch, about {speedup:.1}x faster than running blocks 1-4 every step ({full_step:.2} s per step)");
    r.stage = format!("{stage}, {speedup:.1}x");
    let path = cfg.out.join("metrics.json");
    let mut json = serde_json::to_value(&r).expect("report serialises");
    json["prefix_cache_speedup"] = speedup.into();
    json["seconds_per_step_without_cache"] = full_step.into();
    train::write_atomic(
        &path,
        serde_json::to_string_pretty(&json)
            .expect("serialises")
            .as_bytes(),
    )?;
    Ok(r)
}

/// The main job's three stages with the frozen blocks run once per image (`cnn-wgpu` on a
/// software adapter):
/// 1. blocks 1-4 once over every split, block4_pool cached in `extract.out/features/`; block5
///    over those (cached too); the head trained on block5_pool features, as `extract` does.
/// 2. `views` augmented versions of each training image through blocks 1-4 (view v is the
///    image as the streaming loader augments it in epoch v), then block5; stage 2 trains the
///    head on their block5_pool features, starting from stage 1's best head, epoch e on view
///    e. Until the views run out that is streaming, with the frozen base run once per view.
/// 3. block5 and the head fine-tuned on the views' block4_pool features, from stage 2's best.
///
/// Validation and test run on the cached features of the clean images, which is the whole
/// model's evaluation, the frozen layers being what made them.
pub fn main_job_cached(gpu: &Gpu, job: &MainJob) -> Result<Vec<StageReport>, TrainError> {
    let MainJob {
        extract: c1,
        frozen: c2,
        block5: c3,
    } = job;
    let views = c2.epochs.max(c3.epochs).max(1);
    let (mut model, loaded, sha) = frozen_classifier(gpu, c1, None)?;
    let pre = loaded.preprocessing;
    let features = c1.out.join("features");
    let clean4 = split_features(gpu, c1, &model, "block4_pool", pre)?;
    let mut views4 = Vec::with_capacity(views);
    for v in 0..views {
        let cache = features.join(format!("train-block4_pool-view{v}.safetensors"));
        let req = FeatureRequest {
            layer: "block4_pool",
            preprocessing: pre,
            weights: &c1.weights,
            cache: &cache,
            batch: c1.batch,
            augment: Some((Augment::book(), c2.seed, v as u64)),
        };
        views4.push(cached_features(gpu, &model, c1.split("train")?, &req)?);
    }
    let b5 = model.spec.require_layer("block5_conv1")?;
    let block5 = model.suffix(b5)?;
    let to5 = |f: &Features, name: &str| {
        derived_features(
            gpu,
            &block5,
            f,
            "block5_pool",
            &features.join(format!("{name}-block5_pool.safetensors")),
            c1.batch,
        )
    };
    let clean5 = [
        to5(&clean4[0], "train")?,
        to5(&clean4[1], "validation")?,
        to5(&clean4[2], "test")?,
    ];
    let mut views5 = Vec::with_capacity(views);
    for (v, f) in views4.iter().enumerate() {
        views5.push(to5(f, &format!("train-view{v}"))?.set);
    }
    drop(block5);
    let n_train = clean5[0].set.len();
    let [train5, val5, test5] = clean5;

    let r1 = train_head(
        gpu,
        c1,
        [train5.set, val5.set.clone(), test5.set.clone()],
        pre,
        sha.clone(),
    )?;

    let stage = "2: frozen base + augmentation (cached views)";
    let opt = Optimizer::rmsprop(c2.lr.unwrap_or(STAGE_LR[1]));
    write_config(c2, stage, &opt, pre)?;
    let stage1 = c1.out.join("best.safetensors");
    warm_start_head(gpu, &mut model, &stage1, &sha, c1.image_size)?;
    eprintln!(
        "stage 2: the head starts from stage 1's {}",
        stage1.display()
    );
    let flatten = model.spec.require_layer("flatten")?;
    let sets: [Arc<dyn Dataset>; 3] = [
        Arc::new(crate::data::Views::new(views5)?),
        Arc::new(val5.set),
        Arc::new(test5.set),
    ];
    let (history, result) =
        train_suffix_cached(gpu, c2, &mut model, flatten, sets, opt, pre, "head-cached")?;
    let r2 = report(stage, &history, n_train, result, &c2.out)?;

    let stage = "3: block5 fine-tuning (cached views)";
    let opt = Optimizer::rmsprop(c3.lr.unwrap_or(STAGE_LR[2]));
    write_config(c3, stage, &opt, pre)?;
    model.trainable_from("block5_conv1")?;
    eprintln!(
        "stage 3: block5 unfrozen, {} trainable weight tensors, from stage 2's best",
        model.trainable_weight_count()
    );
    let [_, val4, test4] = clean4;
    let sets: [Arc<dyn Dataset>; 3] = [
        Arc::new(crate::data::Views::new(
            views4.into_iter().map(|f| f.set).collect(),
        )?),
        Arc::new(val4.set),
        Arc::new(test4.set),
    ];
    let (history, result) =
        train_suffix_cached(gpu, c3, &mut model, b5, sets, opt, pre, "block5-cached")?;
    let r3 = report(stage, &history, n_train, result, &c3.out)?;
    Ok(vec![r1, r2, r3])
}

/// The main job's three stages' settings; each stage has its run folder.
#[derive(Clone, Debug)]
pub struct MainJob {
    pub extract: TransferConfig,
    pub frozen: TransferConfig,
    pub block5: TransferConfig,
}

fn run_end_to_end(
    gpu: &Gpu,
    cfg: &TransferConfig,
    mut model: Model,
    pre: Preprocessing,
    opt: Optimizer,
    stage: &str,
) -> Result<StageReport, TrainError> {
    write_config(cfg, stage, &opt, pre)?;
    let train_ds = cfg.split("train")?;
    let n_train = train_ds.len();
    let classes = train_ds.class_names().to_vec();
    let augment = cfg.augment.then(Augment::book);
    let mut tcfg = LoaderConfig::training(cfg.batch, cfg.seed, pre, augment);
    tcfg.workers = cfg.workers;
    let train_loader = Loader::new(Arc::new(train_ds), tcfg)?;
    let val_loader = Loader::new(
        Arc::new(cfg.split("validation")?),
        LoaderConfig::evaluation(cfg.batch, pre),
    )?;
    let history = train::fit(
        gpu,
        &mut model,
        &train_loader,
        Some(&val_loader),
        &cfg.fit_config(opt, meta(pre, &classes)),
    )?;
    let test_loader = Loader::new(
        Arc::new(cfg.split("test")?),
        LoaderConfig::evaluation(cfg.batch, pre),
    )?;
    let result = train::evaluate(gpu, &model, &test_loader)?;
    report(stage, &history, n_train, result, &cfg.out)
}
