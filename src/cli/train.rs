//! `train`, `evaluate` and `predict`: the training loop on a zoo model, and checkpoints put to use.

use std::path::PathBuf;

use cnn_wgpu::data::{Augment, Dataset, Loader, LoaderConfig, Preprocessing};
use cnn_wgpu::gpu::{select, AdapterRequest};
use cnn_wgpu::transfer::{image_model, ImageModel};

#[derive(clap::Args)]
pub struct TrainArgs {
    /// The zoo model: small-convnet, small-convnet-dropout, convnet-180, vgg16-base,
    /// vgg16-classifier, mnist-convnet or conv1d-net (`summary --model` prints one).
    #[arg(long)]
    model: String,
    /// Folder with train/ and validation/ (and test/) class folders, or MNIST IDX files.
    #[arg(long)]
    data: PathBuf,
    /// The book's augmentation on the training images (rotation 40, shifts/shear/zoom 0.2, flip).
    #[arg(long)]
    augment: bool,
    #[arg(long, default_value_t = 30)]
    epochs: usize,
    #[arg(long, default_value_t = 20)]
    batch: usize,
    /// rmsprop, adam or sgd (Keras defaults otherwise).
    #[arg(long, default_value = "rmsprop")]
    optimizer: String,
    #[arg(long, default_value_t = 1e-4, value_parser = super::learning_rate)]
    lr: f32,
    /// Image side (default: the model's).
    #[arg(long)]
    image_size: Option<usize>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Run folder (default runs/<model>-<seed>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Metric for the best checkpoint and the callbacks: val_loss, val_accuracy, loss, accuracy.
    #[arg(long, default_value = "val_loss")]
    monitor: String,
    /// Stop after this many epochs without improvement.
    #[arg(long)]
    early_stopping: Option<usize>,
    /// With --early-stopping: put back the best epoch's weights at the end.
    #[arg(long)]
    restore_best: bool,
    /// Reduce the learning rate after this many epochs without improvement.
    #[arg(long)]
    reduce_lr_patience: Option<usize>,
    #[arg(long, default_value_t = 0.1, value_parser = super::reduce_factor)]
    reduce_lr_factor: f32,
    #[arg(long, default_value_t = 0.0, value_parser = super::learning_rate)]
    min_lr: f32,
    /// Fail on an unreadable image instead of skipping it.
    #[arg(long)]
    strict: bool,
    /// Loader threads (default: one per core).
    #[arg(long, default_value_t = 0)]
    workers: usize,
    /// For a CSV file: which column is the label (only `last` is supported).
    #[arg(long, default_value = "last")]
    csv_label: String,
    /// For a CSV file: the last fraction of rows used for validation.
    #[arg(long, default_value_t = 0.25, value_parser = super::validation_fraction)]
    validation_split: f32,
    /// Continue the run in --out from its last.safetensors (after Ctrl-C or a crash).
    #[arg(long)]
    resume: bool,
    /// Start afresh in an --out folder that already holds a run, replacing its checkpoints
    /// and history.
    #[arg(long)]
    overwrite: bool,
    /// Print per-layer GPU time (timestamp queries) and peak GPU memory over a few steps.
    #[arg(long)]
    profile: bool,
    /// Stop after this many steps as Ctrl-C would (saved, resumable): time-boxed runs.
    #[arg(long)]
    stop_after_steps: Option<usize>,
}

pub fn train(request: &AdapterRequest, a: TrainArgs) -> Result<(), Box<dyn std::error::Error>> {
    use cnn_wgpu::model::{zoo, Model};
    use cnn_wgpu::ops::optim::Optimizer;
    use cnn_wgpu::train::{self, Monitor};

    let monitor = Monitor::new(&a.monitor)?;
    let optimizer = match a.optimizer.as_str() {
        "rmsprop" => Optimizer::rmsprop(a.lr),
        "adam" => Optimizer::adam(a.lr),
        "sgd" => Optimizer::sgd(a.lr),
        o => return Err(format!("--optimizer {o:?}: expected rmsprop, adam or sgd").into()),
    };
    if a.csv_label != "last" {
        return Err(format!(
            "--csv-label {:?}: only `last` (label in the last column) is supported",
            a.csv_label
        )
        .into());
    }
    let source = cnn_wgpu::data::Source::detect(&a.data)?;
    // A sequence model's length comes from the data; an image model's size decides how the
    // images are decoded.
    let (spec, splits) = if let cnn_wgpu::data::Source::Csv(_) = source {
        let splits = source.open(None, a.validation_split)?;
        let (_, len, _) = splits.train.sample_shape();
        let spec = zoo::by_name(&a.model, None, Some((len, 1)))?;
        if spec.input.len() != 2 {
            return Err(format!("model {} does not take sequence (CSV) input", a.model).into());
        }
        (spec, splits)
    } else {
        let spec = zoo::by_name(&a.model, a.image_size, None)?;
        let &[h, w, c] = spec.input.as_slice() else {
            return Err(format!("model {} does not take image input", a.model).into());
        };
        (spec, source.open(Some((h, w, c)), a.validation_split)?)
    };
    let augment = a.augment.then(Augment::book);
    let mut train_cfg = LoaderConfig::training(a.batch, a.seed, Preprocessing::Rescale, augment);
    train_cfg.strict = a.strict;
    train_cfg.workers = a.workers;
    let mut eval_cfg = LoaderConfig::evaluation(a.batch, Preprocessing::Rescale);
    eval_cfg.strict = a.strict;
    eval_cfg.workers = a.workers;
    let cnn_wgpu::data::Splits {
        train: train_ds,
        validation: val_ds,
        test: test_ds,
    } = splits;
    let (h, w, c) = data_shape(&spec)?;
    let (dh, dw, dc) = train_ds.sample_shape();
    if (dh, dw, dc) != (h, w, c) {
        return Err(format!(
            "the data is {dh}x{dw}x{dc}, model {} takes {h}x{w}x{c}",
            a.model
        )
        .into());
    }
    let train = Loader::new(train_ds, train_cfg)?;
    let val = Loader::new(val_ds, eval_cfg.clone())?;
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("runs/{}-{}", a.model, a.seed)));
    // Held to the end: config.json, the checkpoints and metrics.json have no other writer.
    let _lock = cnn_wgpu::train::check_run_folder(&out, a.resume, a.overwrite)?;
    let gpu = select::open(request)?;
    let mut model = Model::new(&gpu, spec, a.seed)?;
    eprintln!(
        "{}: {} trainable weight tensors; training on {} ({:?})",
        model.spec.name,
        model.trainable_weight_count(),
        gpu.adapter_name(),
        gpu.info().backend
    );
    let config = serde_json::json!({
        "model": model.spec, "data": a.data, "augment": augment, "epochs": a.epochs, "batch": a.batch,
        "optimizer": optimizer, "seed": a.seed, "monitor": a.monitor, "early_stopping": a.early_stopping,
        "restore_best": a.restore_best, "reduce_lr_patience": a.reduce_lr_patience, "reduce_lr_factor": a.reduce_lr_factor,
        "min_lr": a.min_lr, "adapter": gpu.adapter_name(),
    });
    // Epochs may be extended and the adapter may change when a run is resumed.
    train::write_or_check_config(&out, &config, a.resume, &["epochs", "adapter"])?;
    let cfg = fit_config(&a, optimizer, monitor, &out, train.dataset().class_names())?;
    let Some(history) =
        super::unless_stopped(train::fit(&gpu, &mut model, &train, Some(&val), &cfg))?
    else {
        return Ok(());
    };
    let test = test_ds.map(|t| Loader::new(t, eval_cfg)).transpose()?;
    write_metrics(&gpu, &model, test.as_ref(), &train, &out, history.len())
}

/// The training loop's settings from the command line: optimizer, callbacks, the run folder,
/// the Ctrl-C / SIGTERM flag, and what every checkpoint records (preprocessing, class names).
fn fit_config(
    a: &TrainArgs,
    optimizer: cnn_wgpu::ops::optim::Optimizer,
    monitor: cnn_wgpu::train::Monitor,
    out: &std::path::Path,
    class_names: &[String],
) -> Result<cnn_wgpu::train::FitConfig, Box<dyn std::error::Error>> {
    use cnn_wgpu::train::{EarlyStopping, FitConfig, ReduceLrOnPlateau};
    let mut cfg = FitConfig::new(a.epochs, optimizer, a.seed);
    cfg.resume = a.resume;
    cfg.overwrite = a.overwrite;
    cfg.profile = a.profile;
    cfg.stop_after_steps = a.stop_after_steps;
    super::install_interrupt(cfg.interrupt.clone());
    cfg.meta = vec![
        (
            "preprocessing".into(),
            serde_json::to_string(&Preprocessing::Rescale)?,
        ),
        ("class_names".into(), serde_json::to_string(class_names)?),
    ];
    cfg.monitor = monitor;
    cfg.out = Some(out.to_path_buf());
    cfg.early_stopping = a
        .early_stopping
        .map(|p| EarlyStopping::new(p, a.restore_best));
    cfg.reduce_lr = a
        .reduce_lr_patience
        .map(|p| ReduceLrOnPlateau::new(a.reduce_lr_factor, p, a.min_lr));
    Ok(cfg)
}

/// The test split's loss and accuracy (where there is one) and the skipped files, printed and
/// written to `out/metrics.json`.
fn write_metrics(
    gpu: &cnn_wgpu::Gpu,
    model: &cnn_wgpu::model::Model,
    test: Option<&Loader>,
    train: &Loader,
    out: &std::path::Path,
    epochs_run: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut metrics = serde_json::json!({ "epochs_run": epochs_run });
    if let Some(test) = test {
        let (loss, acc) = cnn_wgpu::train::evaluate(gpu, model, test)?;
        println!("test loss {loss:.4} accuracy {acc:.4}");
        metrics["test_loss"] = loss.into();
        metrics["test_accuracy"] = acc.into();
    }
    let skipped = train.skipped();
    metrics["skipped_files"] = skipped.len().into();
    let path = out.join("metrics.json");
    cnn_wgpu::atomic_file::write_atomic(&path, serde_json::to_string_pretty(&metrics)?.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    println!(
        "run folder {}: config.json, history.json, history.csv, last.safetensors, best.safetensors, metrics.json; {} unreadable file(s) skipped",
        out.display(),
        skipped.len()
    );
    Ok(())
}

#[derive(clap::Args)]
pub struct EvaluateArgs {
    /// Any run's checkpoint; a stage-1 (extract) head is put back on the VGG16 base it records.
    #[arg(long)]
    checkpoint: PathBuf,
    /// For a stage-1 checkpoint: the VGG16 weights file, where it is no longer where the
    /// checkpoint says (it must be the same file: its sha256 is checked).
    #[arg(long)]
    weights: Option<PathBuf>,
    /// What `train --data` takes (a folder with train/ and validation/, and optionally test/,
    /// class folders; a folder of MNIST IDX files; a .csv file), or one folder of class folders.
    #[arg(long)]
    data: PathBuf,
    /// Which split, cut as `train` cuts it [default: test where the data has one (test/, MNIST's
    /// t10k beside its train files), else validation; all for one folder of class folders].
    #[arg(long, value_enum)]
    split: Option<cnn_wgpu::data::Split>,
    /// For a CSV file: the last fraction of rows that `train` validated on.
    #[arg(long, default_value_t = 0.25, value_parser = super::validation_fraction)]
    validation_split: f32,
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Where the JSON goes (default: evaluation.json beside the checkpoint).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// The (H, W, C) a model's input takes from a dataset: its image, or (1, L, C) for a sequence,
/// as the loader lays a CSV row out.
fn data_shape(spec: &cnn_wgpu::model::ModelSpec) -> Result<(usize, usize, usize), String> {
    match *spec.input.as_slice() {
        [h, w, c] => Ok((h, w, c)),
        [l, c] => Ok((1, l, c)),
        _ => Err(format!(
            "model {} has an input of rank {}",
            spec.name,
            spec.input.len()
        )),
    }
}

pub fn evaluate(
    request: &AdapterRequest,
    a: EvaluateArgs,
) -> Result<(), Box<dyn std::error::Error>> {
    let EvaluateArgs {
        checkpoint,
        weights,
        data,
        split,
        validation_split,
        batch,
        out,
    } = a;
    // The data first: a path that holds no source is refused before the model loads.
    let source = cnn_wgpu::data::Source::detect(&data)?;
    let split = split.unwrap_or_else(|| source.default_split());
    let gpu = select::open(request)?;
    let ImageModel {
        model,
        preprocessing: pre,
        class_names,
        ..
    } = image_model(&gpu, &checkpoint, weights.as_deref())?;
    let (h, w, c) = data_shape(&model.spec)?;
    let image = (model.spec.input.len() == 3).then_some((h, w, c));
    let ds = source.open_split(split, image, validation_split)?;
    if ds.sample_shape() != (h, w, c) {
        let (dh, dw, dc) = ds.sample_shape();
        return Err(format!(
            "{}: the data is {dh}x{dw}x{dc}, model {} takes {h}x{w}x{c}",
            data.display(),
            model.spec.name
        )
        .into());
    }
    // A checkpoint that names its classes must be evaluated on the same ones, in the same
    // order, or its accuracy would be measured against swapped labels.
    if !class_names.is_empty() && class_names != ds.class_names() {
        return Err(format!(
            "{}: the data's classes are [{}], checkpoint {} was trained on [{}]",
            data.display(),
            ds.class_names().join(", "),
            checkpoint.display(),
            class_names.join(", ")
        )
        .into());
    }
    let n = ds.len();
    let loader = Loader::new(ds, LoaderConfig::evaluation(batch, pre))?;
    let (loss, acc) = cnn_wgpu::train::evaluate(&gpu, &model, &loader)?;
    println!(
        "{} ({split} split): loss {loss:.4} accuracy {acc:.4} on {n} samples",
        data.display()
    );
    let out = out.unwrap_or_else(|| checkpoint.with_file_name("evaluation.json"));
    let json = serde_json::json!({"checkpoint": checkpoint, "data": data, "split": split, "samples": n, "loss": loss, "accuracy": acc, "skipped_files": loader.skipped()});
    cnn_wgpu::atomic_file::write_atomic(&out, serde_json::to_string_pretty(&json)?.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    Ok(())
}

#[derive(clap::Args)]
pub struct PredictArgs {
    /// Any run's checkpoint; a stage-1 (extract) head is put back on the VGG16 base it records.
    #[arg(long)]
    checkpoint: PathBuf,
    /// For a stage-1 checkpoint: the VGG16 weights file, where it is no longer where the
    /// checkpoint says (it must be the same file: its sha256 is checked).
    #[arg(long)]
    weights: Option<PathBuf>,
    /// One JSON array on stdout (file, class, probability, every class's probability) instead
    /// of the table.
    #[arg(long)]
    json: bool,
    /// Images per forward pass.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..))]
    batch: u64,
    /// Image files, or folders whose images (sub-folders included) are all predicted; MNIST
    /// IDX images files (or a folder of them) and CSV files of sequences (a row of the model's
    /// length, or that and a label), each sample named by its index.
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

/// One sample's verdict: the class and its probability, and every class's probability.
#[derive(serde::Serialize)]
struct Prediction {
    /// The image file, or the file and the sample's index in it.
    file: String,
    class: String,
    probability: f32,
    probabilities: serde_json::Map<String, serde_json::Value>,
}

/// Predicts every sample `a` names, a batch at a time. An image that cannot be decoded is left
/// out with a warning and the rest are still predicted and printed; the command then fails,
/// naming how many and the first, so that a script notices.
pub fn predict(request: &AdapterRequest, a: PredictArgs) -> Result<(), Box<dyn std::error::Error>> {
    let PredictArgs {
        checkpoint,
        weights,
        json,
        batch,
        images,
    } = a;
    // Paths first: a missing file or an empty folder is refused before the model loads.
    let inputs = cnn_wgpu::data::PredictInput::classify(&images)?;
    let gpu = select::open(request)?;
    let ImageModel {
        model,
        preprocessing: pre,
        class_names,
        ..
    } = image_model(&gpu, &checkpoint, weights.as_deref())?;
    let mut parts = inputs
        .into_iter()
        .map(|i| i.open(&model.spec.input))
        .collect::<Result<Vec<_>, _>>()?;
    let samples: std::sync::Arc<dyn Dataset> = if parts.len() == 1 {
        parts.pop().expect("one part")
    } else {
        std::sync::Arc::new(cnn_wgpu::data::Concat::unlabelled(parts))
    };
    let n = samples.len();
    let loader = Loader::new(
        samples.clone(),
        LoaderConfig::evaluation(usize::try_from(batch)?, pre),
    )?;
    let bar = cnn_wgpu::train::images_bar("predict", n);
    let name = |k: usize| class_names.get(k).cloned().unwrap_or_else(|| k.to_string());
    let mut rows = Vec::with_capacity(n);
    for b in loader.epoch(0) {
        let b = b?;
        let x = cnn_wgpu::Tensor::from_slice(&gpu, b.shape, &b.images)?;
        let p = model.predict(&gpu, &model.as_input(x))?.to_vec(&gpu)?;
        let per = p.len() / b.len().max(1);
        for (&i, p) in b.samples.iter().zip(p.chunks(per.max(1))) {
            // A single sigmoid unit is the probability of the second class.
            let per_class = if p.len() == 1 {
                vec![1.0 - p[0], p[0]]
            } else {
                p.to_vec()
            };
            let k = per_class
                .iter()
                .enumerate()
                .fold(0, |b, (i, v)| if *v > per_class[b] { i } else { b });
            rows.push(Prediction {
                file: samples.describe(i),
                class: name(k),
                probability: per_class[k],
                probabilities: per_class
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (name(i), (*v).into()))
                    .collect(),
            });
        }
        bar.inc(b.len() as u64);
    }
    bar.finish_and_clear();
    print_predictions(&rows, json)?;
    let skipped = loader.skipped();
    if let Some(first) = skipped.first() {
        return Err(format!(
            "{} of {n} images could not be decoded and have no prediction (first: {first}); the other {} are printed",
            skipped.len(),
            rows.len()
        )
        .into());
    }
    Ok(())
}

/// The predictions as a table, or with `json` as one JSON array.
fn print_predictions(rows: &[Prediction], json: bool) -> Result<(), Box<dyn std::error::Error>> {
    if json {
        println!("{}", serde_json::to_string_pretty(rows)?);
        return Ok(());
    }
    let width = rows.iter().map(|r| r.file.len()).max().unwrap_or(0).max(4);
    println!("{:<width$}  {:<12} probability", "file", "class");
    for r in rows {
        println!("{:<width$}  {:<12} {:.4}", r.file, r.class, r.probability);
    }
    Ok(())
}
