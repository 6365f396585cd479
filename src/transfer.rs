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

/// The main job's epochs per stage (stage 2: frozen base with augmentation, stage 3: block5
/// fine-tuning).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    pub frozen_epochs: usize,
    pub block5_epochs: usize,
    pub kind: ScheduleKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScheduleKind {
    /// The book's 30 + 100 epochs: the default on a GPU.
    Book,
    /// The default on a software adapter, where the book's schedule takes days: 2 + 1 epochs,
    /// which still streams augmented batches through the frozen base and fine-tunes block5 (about
    /// 94-95% test accuracy, as BENCHMARKS.md's stage-by-stage runs show).
    Short,
    /// Epochs given on the command line.
    Given,
}

impl Schedule {
    pub const BOOK: (usize, usize) = (30, 100);
    pub const SHORT: (usize, usize) = (2, 1);

    /// The schedule for an adapter: what the user gave, else the book's on a GPU and the short
    /// one on a software adapter (for any stage not given).
    pub fn choose(software: bool, frozen: Option<usize>, block5: Option<usize>) -> Self {
        let (kind, (f, b)) = match (frozen, block5, software) {
            (None, None, false) => (ScheduleKind::Book, Self::BOOK),
            (None, None, true) => (ScheduleKind::Short, Self::SHORT),
            (_, _, false) => (ScheduleKind::Given, Self::BOOK),
            (_, _, true) => (ScheduleKind::Given, Self::SHORT),
        };
        Self {
            frozen_epochs: frozen.unwrap_or(f),
            block5_epochs: block5.unwrap_or(b),
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
    // A frozen layer's kernel is seen by its first call at a shape, packed or transformed and
    // kept by its second, and reused from its third, as an epoch's batches reuse it; the first
    // call also builds the pipelines. So two untimed calls, then the mean of two. Timing the
    // second (after a one-image batch, whose shape runs other algorithms) made evaluation
    // look 1.6x slower than the stages ran it (BENCHMARKS.md, "The main job on lavapipe").
    const UNTIMED: u32 = 2;
    const TIMED: u32 = 2;
    let time = |model: &mut Model, train: bool| -> Result<f64, TrainError> {
        for _ in 0..UNTIMED {
            run(model, &batch, train)?;
        }
        let t = Instant::now();
        for _ in 0..TIMED {
            run(model, &batch, train)?;
        }
        Ok(t.elapsed().as_secs_f64() / (f64::from(TIMED) * n as f64))
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
    let mut head = std::collections::HashSet::new();
    for i in 0..spec.layers.len() {
        head.extend(spec.param_shapes(i)?.into_iter().map(|(n, _)| n));
    }
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
}

/// The `layer` features of every image of `ds` (dataset order), computed with `model` in
/// batches, or read back from `cache` when its key matches. Every image must be readable.
pub fn cached_features(
    gpu: &Gpu,
    model: &Model,
    ds: DirectoryDataset,
    req: &FeatureRequest<'_>,
) -> Result<TensorDataset, TrainError> {
    let FeatureRequest {
        layer,
        preprocessing: pre,
        weights,
        cache,
        batch,
    } = *req;
    let size = ds.sample_shape().0;
    let key = cache_key(&ds, weights, layer, size, pre)?;
    let classes: Vec<usize> = (0..ds.len()).map(|i| ds.class_of(i)).collect();
    let names = ds.class_names().to_vec();
    let idx = model
        .spec
        .layer_index(layer)
        .ok_or_else(|| TrainError::Invalid(format!("no layer {layer}")))?;
    let shape = model.shapes()[idx].clone();
    let sample = (shape[0], shape[1], shape[2]);
    let per = sample.0 * sample.1 * sample.2;
    if let Ok(ck) = checkpoint::Checkpoint::read(cache) {
        if ck.meta.get("key") == Some(&key) {
            if let Some((s, v)) = ck.tensors.get("features") {
                if s.first() == Some(&classes.len()) && v.len() == classes.len() * per {
                    tracing::info!(cache = %cache.display(), "reusing cached features");
                    eprintln!("reusing {} features from {}", layer, cache.display());
                    return Ok(TensorDataset {
                        values: v.clone(),
                        sample,
                        classes,
                        class_names: names,
                        labels: LabelKind::Binary,
                        name: cache.display().to_string(),
                    });
                }
            }
        }
    }
    let root = ds.root().to_path_buf();
    let n = ds.len();
    let loader = Loader::new(Arc::new(ds), LoaderConfig::evaluation(batch, pre))?;
    let bar = crate::train::images_bar(format!("features {}", root.display()), n);
    let mut values = Vec::with_capacity(n * per);
    for b in loader.epoch(0) {
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
    let view = safetensors::tensor::TensorView::new(
        safetensors::Dtype::F32,
        vec![n, sample.0, sample.1, sample.2],
        bytemuck::cast_slice(&values),
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
    crate::train::write_atomic(cache, &bytes)?;
    Ok(TensorDataset {
        values,
        sample,
        classes,
        class_names: names,
        labels: LabelKind::Binary,
        name: cache.display().to_string(),
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
) -> Result<[TensorDataset; 3], TrainError> {
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
    [train_set, val, test]: [TensorDataset; 3],
    fit_cfg: &FitConfig,
) -> Result<(Vec<train::EpochRecord>, (f64, f64)), TrainError> {
    let train_loader = Loader::new(
        Arc::new(train_set),
        LoaderConfig::training(batch, seed, Preprocessing::None, None),
    )?;
    let val_loader = Loader::new(
        Arc::new(val),
        LoaderConfig::evaluation(batch, Preprocessing::None),
    )?;
    let history = train::fit(gpu, model, &train_loader, Some(&val_loader), fit_cfg)?;
    let test_loader = Loader::new(
        Arc::new(test),
        LoaderConfig::evaluation(batch, Preprocessing::None),
    )?;
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
    let (h, w, c) = sets[0].sample;
    let n_train = sets[0].len();
    let classes = sets[0].class_names.clone();
    let mut head = Model::new(gpu, feature_head(&[h, w, c]), cfg.seed)?;
    let opt = Optimizer::rmsprop(2e-5);
    write_config(cfg, "1: feature extraction", &opt, pre)?;
    let mut m = meta(Preprocessing::None, &classes);
    m.extend(base_meta(cfg, "block5_pool", pre, weights_sha256)?);
    let fit_cfg = cfg.fit_config(opt, m);
    let (history, result) = fit_on_features(gpu, cfg.batch, cfg.seed, &mut head, sets, &fit_cfg)?;
    report("1: feature extraction", &history, n_train, result, &cfg.out)
}

/// Stage 2: the VGG16 classifier end to end with the base frozen, augmented batches streamed
/// from disk, RMSprop 2e-5.
pub fn finetune_frozen(gpu: &Gpu, cfg: &TransferConfig) -> Result<StageReport, TrainError> {
    let _lock = cfg.check_before_start()?;
    let mut model = Model::new(gpu, zoo::vgg16_classifier(cfg.image_size), cfg.seed)?;
    let loaded = weights::load_vgg16(gpu, &mut model, &cfg.weights)?;
    model.freeze_through("block5_pool")?;
    eprintln!(
        "stage 2: base frozen, {} trainable weight tensors",
        model.trainable_weight_count()
    );
    run_end_to_end(
        gpu,
        cfg,
        model,
        loaded.preprocessing,
        Optimizer::rmsprop(2e-5),
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
        Optimizer::rmsprop(1e-5),
        "3: block5 fine-tuning",
    )
}

/// Stage 3 without augmentation: every epoch sees the same images, so the frozen blocks 1-4 are
/// run once per image and their block4_pool output cached; the epochs then train block5 and the
/// head on the cached (9,9,512) tensors only. The run folder keeps the full model's checkpoints
/// (the suffix's own run is in `block5-cached/`), and metrics.json reports the speed-up measured
/// against one end-to-end step.
fn block5_on_cached_prefix(
    gpu: &Gpu,
    cfg: &TransferConfig,
    model: Model,
    pre: Preprocessing,
) -> Result<StageReport, TrainError> {
    let stage = "3: block5 fine-tuning (cached block4_pool)";
    let opt = Optimizer::rmsprop(1e-5);
    write_config(cfg, stage, &opt, pre)?;
    let first = model
        .spec
        .layer_index("block5_conv1")
        .expect("checked by the caller");
    let prefix_layer = model.spec.layers[first - 1].name.clone();
    let train_ds = cfg.split("train")?;
    let classes = train_ds.class_names().to_vec();
    let n_train = train_ds.len();

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
    let sets = split_features(gpu, cfg, &model, &prefix_layer, pre)?;
    let mut suffix = model.suffix(first)?;
    let mut sub_cfg = cfg.clone();
    sub_cfg.out = cfg.out.join("block5-cached");
    let fit_cfg = sub_cfg.fit_config(opt, meta(Preprocessing::None, &classes));
    let (history, result) = fit_on_features(gpu, cfg.batch, cfg.seed, &mut suffix, sets, &fit_cfg)?;
    // The full model shares the suffix's parameters: write its checkpoints (last now; best after
    // loading the suffix's best weights back) so `predict` and `evaluate` take images.
    let m = meta(pre, &classes);
    let m: Vec<(&str, String)> = m.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    checkpoint::save(gpu, &model, &cfg.out.join("last.safetensors"), &m)?;
    checkpoint::load_params(gpu, &mut suffix, &sub_cfg.out.join("best.safetensors"))?;
    checkpoint::save(gpu, &model, &cfg.out.join("best.safetensors"), &m)?;
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
