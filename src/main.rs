//! The `cnn-wgpu` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use cnn_wgpu::bench::{self, BenchOptions, Workloads};
use cnn_wgpu::data::{
    augment, prepare, Augment, Dataset, DirectoryDataset, Loader, LoaderConfig, Preprocessing,
};
use cnn_wgpu::gpu::{select, AdapterRequest, BackendChoice};

#[derive(Parser)]
#[command(
    name = "cnn-wgpu",
    version,
    about = "Train convolutional networks on any Vulkan, Metal or DX12 GPU"
)]
struct Cli {
    /// Use the adapter whose name contains this (case-insensitive).
    #[arg(long, global = true, env = "CNN_WGPU_ADAPTER")]
    adapter: Option<String>,
    /// Only look at adapters of this backend: vulkan, metal, dx12 or gl.
    #[arg(long, global = true, env = "CNN_WGPU_BACKEND", value_parser = parse_backend)]
    backend: Option<BackendChoice>,
    /// More logging (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Main job: the dataset (prepared split, or Kaggle's flat cat.N.jpg/dog.N.jpg folder).
    #[arg(long, default_value = "data/cats_and_dogs_small")]
    data: PathBuf,
    /// Main job: VGG16 weights (Keras or torchvision naming, safetensors) [default:
    /// weights/vgg16_notop.safetensors, else weights/vgg16_tv_in1k.safetensors].
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Main job: epochs of stage 2 (frozen base with augmentation).
    #[arg(long, default_value_t = 30)]
    epochs: usize,
    /// Main job: epochs of stage 3 (block5 fine-tuning).
    #[arg(long, default_value_t = 100)]
    finetune_epochs: usize,
    /// Main job: image side.
    #[arg(long, default_value_t = 150)]
    image_size: usize,
    /// Main job: where the stages' run folders go.
    #[arg(long, default_value = "runs")]
    runs: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Args, Clone)]
struct TransferArgs {
    /// Prepared split (train/, validation/, test/ class folders) or Kaggle's flat folder.
    #[arg(long, default_value = "data/cats_and_dogs_small")]
    data: PathBuf,
    /// VGG16 weights [default: weights/vgg16_notop.safetensors, else
    /// weights/vgg16_tv_in1k.safetensors].
    #[arg(long)]
    weights: Option<PathBuf>,
    #[arg(long, default_value_t = 30)]
    epochs: usize,
    #[arg(long, default_value_t = 20)]
    batch: usize,
    #[arg(long, default_value_t = 150)]
    image_size: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Run folder (default runs/vgg16-<stage>).
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    workers: usize,
    /// Stop after this many steps as Ctrl-C would (saved, resumable).
    #[arg(long)]
    stop_after_steps: Option<usize>,
    /// Continue the stage's run folder from its last.safetensors.
    #[arg(long)]
    resume: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Stage {
    Frozen,
    Block5,
}

fn parse_backend(s: &str) -> Result<BackendChoice, String> {
    s.parse().map_err(|e: cnn_wgpu::GpuError| e.to_string())
}

#[derive(Subcommand)]
enum Command {
    /// List every adapter with its backend, type, driver and the limits that matter.
    Devices {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Time the kernels on the reference workloads.
    Bench {
        /// The workloads file (default: $CNN_WGPU_SHARED/bench/workloads.json, else ../shared/bench/workloads.json).
        #[arg(long)]
        workloads: Option<PathBuf>,
        /// Only workloads whose "section/name" contains one of these.
        #[arg(long, num_args = 1..)]
        only: Vec<String>,
        /// One JSON line per workload instead of a table.
        #[arg(long)]
        json: bool,
        /// Measure the adapter's FMA peak first and report each workload's share of it.
        #[arg(long)]
        peak: bool,
        /// Timed runs per workload, at least (more while they span under 500 ms); the median is
        /// reported
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
        runs: u64,
        /// Training images (class sub-folders) for the `pipeline` section (default: the shared
        /// cats-vs-dogs train split).
        #[arg(long)]
        pipeline_data: Option<PathBuf>,
        /// Images the `pipeline` section streams.
        #[arg(long, default_value_t = 400)]
        pipeline_images: usize,
        /// Worker threads of the `pipeline` section (default: one per core).
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Split the Kaggle "Dogs vs. Cats" flat folder (cat.N.jpg, dog.N.jpg) into
    /// train/validation/test class folders, the book's way.
    Prepare {
        #[arg(long)]
        from: PathBuf,
        #[arg(long)]
        to: PathBuf,
        #[arg(long, default_value_t = 1000)]
        train: usize,
        #[arg(long, default_value_t = 500)]
        validation: usize,
        #[arg(long, default_value_t = 500)]
        test: usize,
    },
    /// Train a zoo model on a dataset folder (train/ and validation/ class folders, optional
    /// test/) or an MNIST folder; writes a run folder with history and checkpoints.
    Train(TrainArgs),
    /// Loss and accuracy of a checkpoint on a dataset folder (class sub-folders, or a folder
    /// with test/); printed and written as JSON.
    Evaluate {
        #[arg(long)]
        checkpoint: PathBuf,
        #[arg(long)]
        data: PathBuf,
        #[arg(long, default_value_t = 32)]
        batch: usize,
        /// Where the JSON goes (default: evaluation.json beside the checkpoint).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Each image's probability and class under a checkpoint.
    Predict {
        #[arg(long)]
        checkpoint: PathBuf,
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// Write one VGG16 layer's activations (NHWC) for images, preprocessed as the weights expect.
    Features {
        #[arg(long)]
        weights: PathBuf,
        /// A VGG16 layer name, e.g. block1_conv1, block3_pool, block5_pool.
        #[arg(long)]
        layer: String,
        #[arg(long, required = true, num_args = 1..)]
        images: Vec<PathBuf>,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 150)]
        image_size: usize,
    },
    /// Stage 1: VGG16 block5_pool features of every split (cached), then a dense head on them.
    Extract(TransferArgs),
    /// Stage 2 (`--stage frozen`): end to end with the base frozen and augmentation; stage 3
    /// (`--stage block5`): block5 unfrozen, from stage 2's checkpoint.
    Finetune {
        #[command(flatten)]
        args: TransferArgs,
        #[arg(long, value_enum)]
        stage: Stage,
        /// Stage 3's starting checkpoint (default runs/vgg16-frozen/best.safetensors).
        #[arg(long)]
        from: Option<PathBuf>,
        /// Train without augmentation.
        #[arg(long)]
        no_augment: bool,
    },
    /// Print a zoo model's Keras-style summary: layers, output shapes, parameters.
    Summary {
        /// small-convnet, small-convnet-dropout, convnet-180, vgg16-base, vgg16-classifier,
        /// mnist-convnet or conv1d-net.
        #[arg(long)]
        model: String,
        /// Image side for the image models (default: the model's own).
        #[arg(long)]
        image_size: Option<usize>,
        /// Sequence length and channels for conv1d-net.
        #[arg(long, num_args = 2, value_names = ["LEN", "CHANNELS"])]
        sequence: Option<Vec<usize>>,
        /// Freeze every layer before this one (e.g. flatten, block5_conv1).
        #[arg(long)]
        trainable_from: Option<String>,
    },
    /// Decode every image of a dataset folder once, as training would, and report classes,
    /// counts and unreadable files (skipped with a warning, or an error with --strict).
    CheckData {
        #[arg(long)]
        data: PathBuf,
        #[arg(long, default_value_t = 150)]
        image_size: usize,
        /// Fail on the first unreadable image instead of skipping it.
        #[arg(long)]
        strict: bool,
    },
    /// Write a 3x3 grid of one training image augmented nine times (the book's figure).
    AugmentPreview {
        /// A dataset folder (class sub-folders) or an image file.
        #[arg(long)]
        data: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Which training image (in dataset order).
        #[arg(long, default_value_t = 0)]
        index: usize,
        #[arg(long, default_value_t = 150)]
        image_size: usize,
    },
}

#[derive(clap::Args)]
struct TrainArgs {
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
    #[arg(long, default_value_t = 1e-4)]
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
    #[arg(long, default_value_t = 0.1)]
    reduce_lr_factor: f32,
    #[arg(long, default_value_t = 0.0)]
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
    #[arg(long, default_value_t = 0.25)]
    validation_split: f32,
    /// Continue the run in --out from its last.safetensors (after Ctrl-C or a crash).
    #[arg(long)]
    resume: bool,
    /// Print per-layer GPU time (timestamp queries) and peak GPU memory over a few steps.
    #[arg(long)]
    profile: bool,
    /// Stop after this many steps as Ctrl-C would (saved, resumable): time-boxed runs.
    #[arg(long)]
    stop_after_steps: Option<usize>,
}

fn run_train(request: &AdapterRequest, a: TrainArgs) -> Result<(), Box<dyn std::error::Error>> {
    use cnn_wgpu::data::{mnist, LoaderConfig};
    use cnn_wgpu::model::{zoo, Model};
    use cnn_wgpu::ops::optim::Optimizer;
    use cnn_wgpu::train::{self, EarlyStopping, FitConfig, Monitor, ReduceLrOnPlateau};
    use std::sync::Arc;

    let monitor = Monitor::new(&a.monitor)?;
    let optimizer = match a.optimizer.as_str() {
        "rmsprop" => Optimizer::rmsprop(a.lr),
        "adam" => Optimizer::adam(a.lr),
        "sgd" => Optimizer::sgd(a.lr),
        o => return Err(format!("--optimizer {o:?}: expected rmsprop, adam or sgd").into()),
    };
    type Ds = Arc<dyn Dataset>;
    let is_csv = a
        .data
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    let mut csv_parts: Option<(Ds, Ds)> = None;
    let spec = if is_csv {
        if a.csv_label != "last" {
            return Err(format!(
                "--csv-label {:?}: only `last` (label in the last column) is supported",
                a.csv_label
            )
            .into());
        }
        let (tr, va) = cnn_wgpu::data::csv::CsvDataset::read(&a.data)?.split(a.validation_split)?;
        let len = tr.sequence_len();
        csv_parts = Some((Arc::new(tr), Arc::new(va)));
        zoo::by_name(&a.model, None, Some((len, 1)))?
    } else {
        zoo::by_name(&a.model, a.image_size, None)?
    };
    let (h, w, c) = match (spec.input.as_slice(), is_csv) {
        (&[h, w, c], false) => (h, w, c),
        (&[l, c], true) => (1, l, c),
        _ => {
            return Err(format!(
                "model {} does not take {} input",
                a.model,
                if is_csv { "sequence (CSV)" } else { "image" }
            )
            .into())
        }
    };
    let augment = a.augment.then(Augment::book);
    let mut train_cfg = LoaderConfig::training(a.batch, a.seed, Preprocessing::Rescale, augment);
    train_cfg.strict = a.strict;
    train_cfg.workers = a.workers;
    let mut eval_cfg = LoaderConfig::evaluation(a.batch, Preprocessing::Rescale);
    eval_cfg.strict = a.strict;
    eval_cfg.workers = a.workers;
    let (train_ds, val_ds, test_ds): (Ds, Ds, Option<Ds>) = if let Some((tr, va)) = csv_parts {
        (tr, va, None)
    } else if a.data.join("train").is_dir() {
        let open = |split: &str| -> Result<Ds, Box<dyn std::error::Error>> {
            let ds = DirectoryDataset::open(&a.data.join(split), (h, w), 2)?;
            Ok(Arc::new(if c == 1 { ds.grayscale() } else { ds }))
        };
        let test = if a.data.join("test").is_dir() {
            Some(open("test")?)
        } else {
            None
        };
        (open("train")?, open("validation")?, test)
    } else if a.data.join("t10k-images-idx3-ubyte.gz").is_file()
        || a.data.join("t10k-images-idx3-ubyte").is_file()
    {
        let (tr, va) = mnist::train_validation(&a.data)?;
        (Arc::new(tr), Arc::new(va), None)
    } else {
        return Err(format!(
            "{}: expected train/ and validation/ class folders, MNIST IDX files, or a .csv file",
            a.data.display()
        )
        .into());
    };
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
        .unwrap_or_else(|| PathBuf::from(format!("runs/{}-{}", a.model, a.seed)));
    std::fs::create_dir_all(&out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
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
    std::fs::write(
        out.join("config.json"),
        serde_json::to_string_pretty(&config)?,
    )?;
    let mut cfg = FitConfig::new(a.epochs, optimizer, a.seed);
    cfg.resume = a.resume;
    cfg.profile = a.profile;
    cfg.stop_after_steps = a.stop_after_steps;
    let flag = cfg.interrupt.clone();
    install_interrupt(flag);
    cfg.meta = vec![
        (
            "preprocessing".into(),
            serde_json::to_string(&Preprocessing::Rescale)?,
        ),
        (
            "class_names".into(),
            serde_json::to_string(train.dataset().class_names())?,
        ),
    ];
    cfg.monitor = monitor;
    cfg.out = Some(out.clone());
    cfg.early_stopping = a
        .early_stopping
        .map(|p| EarlyStopping::new(p, a.restore_best));
    cfg.reduce_lr = a
        .reduce_lr_patience
        .map(|p| ReduceLrOnPlateau::new(a.reduce_lr_factor, p, a.min_lr));
    let history = train::fit(&gpu, &mut model, &train, Some(&val), &cfg)?;
    let mut metrics = serde_json::json!({"epochs_run": history.len()});
    if let Some(test_ds) = test_ds {
        let test = Loader::new(test_ds, eval_cfg)?;
        let (loss, acc) = train::evaluate(&gpu, &model, &test)?;
        println!("test loss {loss:.4} accuracy {acc:.4}");
        metrics["test_loss"] = loss.into();
        metrics["test_accuracy"] = acc.into();
    }
    let skipped = train.skipped();
    metrics["skipped_files"] = skipped.len().into();
    std::fs::write(
        out.join("metrics.json"),
        serde_json::to_string_pretty(&metrics)?,
    )?;
    println!(
        "run folder {}: config.json, history.json, history.csv, last.safetensors, best.safetensors, metrics.json; {} unreadable file(s) skipped",
        out.display(),
        skipped.len()
    );
    Ok(())
}

/// A checkpoint's model with its weights, and the preprocessing and class names it was trained with.
fn load_checkpoint(
    gpu: &cnn_wgpu::Gpu,
    path: &std::path::Path,
) -> Result<(cnn_wgpu::model::Model, Preprocessing, Vec<String>), Box<dyn std::error::Error>> {
    let ck = cnn_wgpu::train::checkpoint::Checkpoint::read(path)?;
    let mut model = cnn_wgpu::model::Model::new(gpu, ck.spec()?, 0)?;
    ck.load_params(gpu, &mut model)?;
    let pre = match ck.meta.get("preprocessing") {
        Some(p) => serde_json::from_str(p)?,
        None => Preprocessing::Rescale,
    };
    let classes = match ck.meta.get("class_names") {
        Some(c) => serde_json::from_str(c)?,
        None => Vec::new(),
    };
    Ok((model, pre, classes))
}

/// Where the VGG16 weights are looked for when `--weights` is not given: the Keras file first (the
/// book's weights), then what `cargo xtask fetch-weights` downloads.
const DEFAULT_WEIGHTS: [&str; 2] = [
    "weights/vgg16_notop.safetensors",
    "weights/vgg16_tv_in1k.safetensors",
];

fn weights_or_default(given: Option<&std::path::Path>) -> PathBuf {
    match given {
        Some(p) => p.to_path_buf(),
        None => DEFAULT_WEIGHTS
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_WEIGHTS[0])),
    }
}

/// Checks the main job's inputs, preparing Kaggle's flat layout when that is what `data` is.
fn transfer_inputs(
    data: &std::path::Path,
    weights: &std::path::Path,
) -> Result<PathBuf, Box<dyn std::error::Error>> {
    if !weights.is_file() {
        return Err(format!(
            "no VGG16 weights at {w}.\n  Get them one of these ways:\n  \
             - copy the project's shared Keras copy: cp ../shared/weights/vgg16_notop.safetensors weights/\n  \
             - download timm's torchvision VGG16 (553 MB, checksum-verified): cargo xtask fetch-weights\n  \
             - or pass --weights PATH to any VGG16 safetensors in Keras or torchvision naming\n  \
             (see weights/README.md for sources, licences and checksums)",
            w = weights.display()
        )
        .into());
    }
    if !data.exists() {
        return Err(format!(
            "no dataset at {d}.\n  Put the book's split there (train/, validation/, test/ with cats/ and dogs/), e.g.\n  \
             cnn-wgpu prepare --from ~/kaggle/train --to {d}\n  or pass --data ../shared/data/cats_and_dogs_small",
            d = data.display()
        )
        .into());
    }
    if prepare::is_flat_layout(data) {
        let to = data.with_file_name(format!(
            "{}_small",
            data.file_name().and_then(|n| n.to_str()).unwrap_or("data")
        ));
        eprintln!(
            "{} is Kaggle's flat layout; preparing the book's split into {}",
            data.display(),
            to.display()
        );
        let done = prepare::prepare(data, &to, prepare::Split::default())?;
        eprintln!(
            "{} images copied, {} already there",
            done.copied, done.already_there
        );
        return Ok(to);
    }
    Ok(data.to_path_buf())
}

/// First Ctrl-C: finish the current step, save, explain how to resume. A second one exits at once.
fn install_interrupt(flag: std::sync::Arc<std::sync::atomic::AtomicBool>) {
    let _ = ctrlc::set_handler(move || {
        if flag.swap(true, std::sync::atomic::Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\nstopping after this step (Ctrl-C again to quit at once)");
    });
}

fn transfer_config(
    a: &TransferArgs,
    stage: &str,
) -> Result<cnn_wgpu::transfer::TransferConfig, Box<dyn std::error::Error>> {
    let weights = weights_or_default(a.weights.as_deref());
    let data = transfer_inputs(&a.data, &weights)?;
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("runs/vgg16-{stage}")));
    let mut c = cnn_wgpu::transfer::TransferConfig::new(&data, &weights, &out);
    c.epochs = a.epochs;
    c.batch = a.batch;
    c.image_size = a.image_size;
    c.seed = a.seed;
    c.workers = a.workers;
    c.stop_after_steps = a.stop_after_steps;
    c.resume = a.resume;
    let flag = c.interrupt.clone();
    install_interrupt(flag);
    Ok(c)
}

fn print_reports(gpu: &cnn_wgpu::Gpu, reports: &[cnn_wgpu::transfer::StageReport]) {
    println!(
        "\nVGG16 transfer learning on {} ({:?})",
        gpu.adapter_name(),
        gpu.info().backend
    );
    println!(
        "{:<32} {:>7} {:>10} {:>10} {:>9}  run folder",
        "stage", "epochs", "s/epoch", "images/s", "test acc"
    );
    for r in reports {
        println!(
            "{:<32} {:>7} {:>10.1} {:>10.2} {:>8.2}%  {} (curves.png, best.safetensors, last.safetensors)",
            r.stage,
            r.epochs,
            r.seconds_per_epoch,
            r.train_images_per_s,
            100.0 * r.test_accuracy,
            r.run_dir.display()
        );
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            let mut source = e.source();
            while let Some(s) = source {
                eprintln!("  caused by: {s}");
                source = s.source();
            }
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    let request = AdapterRequest {
        name: cli.adapter,
        backend: cli.backend,
        binding_limit: None,
    };
    match cli.command {
        None => {
            // The main job: the book's stages 2 and 3 on cats vs dogs, then a short report.
            eprintln!("cnn-wgpu {}: VGG16 transfer learning on cats vs dogs (stage 2: frozen base with augmentation, stage 3: block5 fine-tuning); `cnn-wgpu --help` lists the other commands", env!("CARGO_PKG_VERSION"));
            let args = TransferArgs {
                data: cli.data,
                weights: cli.weights,
                epochs: cli.epochs,
                batch: 20,
                image_size: cli.image_size,
                seed: 0,
                out: Some(cli.runs.join("vgg16-frozen")),
                workers: 0,
                stop_after_steps: None,
                resume: false,
            };
            let frozen = transfer_config(&args, "frozen")?;
            let gpu = select::open(&request)?;
            let r2 = cnn_wgpu::transfer::finetune_frozen(&gpu, &frozen)?;
            let mut block5 = frozen.clone();
            block5.epochs = cli.finetune_epochs;
            block5.out = cli.runs.join("vgg16-block5");
            let r3 = cnn_wgpu::transfer::finetune_block5(
                &gpu,
                &block5,
                &frozen.out.join("best.safetensors"),
            )?;
            print_reports(&gpu, &[r2, r3]);
            Ok(())
        }
        Some(Command::Extract(args)) => {
            let cfg = transfer_config(&args, "extract")?;
            let gpu = select::open(&request)?;
            let r = cnn_wgpu::transfer::extract(&gpu, &cfg)?;
            print_reports(&gpu, &[r]);
            Ok(())
        }
        Some(Command::Finetune {
            args,
            stage,
            from,
            no_augment,
        }) => {
            let name = match stage {
                Stage::Frozen => "frozen",
                Stage::Block5 => "block5",
            };
            let mut cfg = transfer_config(&args, name)?;
            cfg.augment = !no_augment;
            let gpu = select::open(&request)?;
            let r = match stage {
                Stage::Frozen => cnn_wgpu::transfer::finetune_frozen(&gpu, &cfg)?,
                Stage::Block5 => {
                    let from =
                        from.unwrap_or_else(|| PathBuf::from("runs/vgg16-frozen/best.safetensors"));
                    cnn_wgpu::transfer::finetune_block5(&gpu, &cfg, &from)?
                }
            };
            print_reports(&gpu, &[r]);
            Ok(())
        }
        Some(Command::Devices { json }) => {
            let list = select::list(&request);
            if list.is_empty() {
                return Err(Box::new(cnn_wgpu::GpuError::NoAdapter {
                    backends: format!("{:?}", request.backend),
                }));
            }
            if json {
                for a in &list {
                    println!("{}", serde_json::to_string(a)?);
                }
            } else {
                for (i, a) in list.iter().enumerate() {
                    println!("[{i}] {} ({}, {})", a.name, a.backend, a.device_type);
                    println!("    driver: {} {}", a.driver, a.driver_info);
                    println!(
                        "    max storage binding {} MiB, max buffer {} MiB, workgroup storage {} KiB, {} invocations/workgroup, {} workgroups/dim",
                        a.max_storage_buffer_binding_size >> 20,
                        a.max_buffer_size >> 20,
                        a.max_compute_workgroup_storage_size >> 10,
                        a.max_compute_invocations_per_workgroup,
                        a.max_compute_workgroups_per_dimension
                    );
                    let subgroups = match a.subgroup_sizes {
                        Some((8, 8)) => "8 lanes (subgroup GEMM kernels)".to_string(),
                        Some((lo, hi)) => format!("{lo}-{hi} lanes (workgroup-memory kernels)"),
                        None => "none (workgroup-memory kernels)".to_string(),
                    };
                    println!(
                        "    timestamp queries: {}, shader f16: {}, subgroups: {subgroups}",
                        a.timestamp_query, a.shader_f16
                    );
                }
            }
            Ok(())
        }
        Some(Command::Prepare {
            from,
            to,
            train,
            validation,
            test,
        }) => {
            let done = prepare::prepare(
                &from,
                &to,
                prepare::Split {
                    train,
                    validation,
                    test,
                },
            )?;
            for ((split, class), n) in &done.counts {
                println!("{split:<10} {class:<8} {n:>6}");
            }
            println!(
                "{} copied, {} already there, into {}",
                done.copied,
                done.already_there,
                to.display()
            );
            Ok(())
        }
        Some(Command::Train(args)) => run_train(&request, args),
        Some(Command::Evaluate {
            checkpoint,
            data,
            batch,
            out,
        }) => {
            let gpu = select::open(&request)?;
            let (model, pre, _) = load_checkpoint(&gpu, &checkpoint)?;
            let dir = if data.join("test").is_dir() {
                data.join("test")
            } else {
                data
            };
            let (h, w, c) = match model.spec.input.as_slice() {
                &[h, w, c] => (h, w, c),
                _ => return Err("evaluate takes image models".into()),
            };
            let ds = DirectoryDataset::open(&dir, (h, w), 2)?;
            let ds = if c == 1 { ds.grayscale() } else { ds };
            let n = ds.len();
            let loader = Loader::new(
                std::sync::Arc::new(ds),
                LoaderConfig::evaluation(batch, pre),
            )?;
            let (loss, acc) = cnn_wgpu::train::evaluate(&gpu, &model, &loader)?;
            println!(
                "{}: loss {loss:.4} accuracy {acc:.4} on {n} images",
                dir.display()
            );
            let out = out.unwrap_or_else(|| checkpoint.with_file_name("evaluation.json"));
            let json = serde_json::json!({"checkpoint": checkpoint, "data": dir, "images": n, "loss": loss, "accuracy": acc, "skipped_files": loader.skipped()});
            std::fs::write(&out, serde_json::to_string_pretty(&json)?)
                .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
            Ok(())
        }
        Some(Command::Predict { checkpoint, images }) => {
            let gpu = select::open(&request)?;
            let (model, pre, classes) = load_checkpoint(&gpu, &checkpoint)?;
            let (h, w, c) = match model.spec.input.as_slice() {
                &[h, w, c] => (h, w, c),
                _ => return Err("predict takes image models".into()),
            };
            for path in &images {
                let img = cnn_wgpu::data::image_io::load(path, (h, w), c)?;
                let mut px = img.to_f32();
                pre.apply(&mut px, c);
                let x = cnn_wgpu::Tensor::from_slice(&gpu, [1, h, w, c], &px)?;
                let p = model.predict(&gpu, &x)?.to_vec(&gpu)?;
                let name = |k: usize| classes.get(k).cloned().unwrap_or_else(|| k.to_string());
                if p.len() == 1 {
                    println!(
                        "{}: p = {:.4} -> {}",
                        path.display(),
                        p[0],
                        name(usize::from(p[0] > 0.5))
                    );
                } else {
                    let k = p
                        .iter()
                        .enumerate()
                        .fold(0, |b, (i, v)| if *v > p[b] { i } else { b });
                    println!("{}: {} (p = {:.4})", path.display(), name(k), p[k]);
                }
            }
            Ok(())
        }
        Some(Command::Features {
            weights,
            layer,
            images,
            out,
            image_size,
        }) => {
            let gpu = select::open(&request)?;
            let mut model =
                cnn_wgpu::model::Model::new(&gpu, cnn_wgpu::model::zoo::vgg16_base(image_size), 0)?;
            let loaded = cnn_wgpu::model::weights::load_vgg16(&gpu, &mut model, &weights)?;
            eprintln!(
                "{:?} weights, {:?} preprocessing (from the {})",
                loaded.naming, loaded.preprocessing, loaded.preprocessing_source
            );
            let mut px = Vec::new();
            for path in &images {
                let mut v =
                    cnn_wgpu::data::image_io::load(path, (image_size, image_size), 3)?.to_f32();
                loaded.preprocessing.apply(&mut v, 3);
                px.extend(v);
            }
            let x =
                cnn_wgpu::Tensor::from_slice(&gpu, [images.len(), image_size, image_size, 3], &px)?;
            let y = model.features(&gpu, &x, &layer)?;
            let data = y.to_vec(&gpu)?;
            let view = safetensors::tensor::TensorView::new(
                safetensors::Dtype::F32,
                y.dims().to_vec(),
                bytemuck::cast_slice(&data),
            )?;
            let files: Vec<String> = images.iter().map(|p| p.display().to_string()).collect();
            let meta = std::collections::HashMap::from([
                ("layout".to_string(), "NHWC".to_string()),
                ("files".to_string(), serde_json::to_string(&files)?),
                (
                    "preprocessing".to_string(),
                    format!("{:?}", loaded.preprocessing).to_lowercase(),
                ),
                ("weights".to_string(), weights.display().to_string()),
            ]);
            std::fs::write(
                &out,
                safetensors::serialize([(layer.as_str(), view)], Some(meta))?,
            )
            .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
            println!("wrote {} {:?} to {}", layer, y.dims(), out.display());
            Ok(())
        }
        Some(Command::Summary {
            model,
            image_size,
            sequence,
            trainable_from,
        }) => {
            let seq = sequence.map(|v| (v[0], v[1]));
            let spec = cnn_wgpu::model::zoo::by_name(&model, image_size, seq)?;
            let first = match &trainable_from {
                Some(name) => spec.require_layer(name)?,
                None => 0,
            };
            let mask: Vec<bool> = (0..spec.layers.len()).map(|i| i >= first).collect();
            print!("{}", spec.summary(&mask)?);
            Ok(())
        }
        Some(Command::CheckData {
            data,
            image_size,
            strict,
        }) => {
            let ds = DirectoryDataset::open(&data, (image_size, image_size), 2)?;
            let counts = ds.counts();
            for (name, n) in ds.class_names().iter().zip(&counts) {
                println!("{name:<12} {n:>7} files");
            }
            println!("labels: {:?}", ds.label_kind());
            let mut cfg = LoaderConfig::evaluation(64, Preprocessing::None);
            cfg.strict = strict;
            let loader = Loader::new(std::sync::Arc::new(ds), cfg)?;
            let start = std::time::Instant::now();
            let mut read = 0;
            for batch in loader.epoch(0) {
                read += batch?.len();
            }
            let skipped = loader.skipped();
            println!(
                "{read} images decoded at {image_size}x{image_size} in {:.1}s; {} skipped",
                start.elapsed().as_secs_f64(),
                skipped.len()
            );
            for s in &skipped {
                println!("  skipped: {s}");
            }
            Ok(())
        }
        Some(Command::AugmentPreview {
            data,
            out,
            seed,
            index,
            image_size,
        }) => {
            let size = (image_size, image_size);
            let img = if data.is_dir() {
                let ds = DirectoryDataset::open(&data, size, 1)?;
                if index >= ds.len() {
                    return Err(format!(
                        "--index {index}: {} has {} images",
                        data.display(),
                        ds.len()
                    )
                    .into());
                }
                ds.load(index)?
            } else {
                cnn_wgpu::data::image_io::load(&data, size, 3)?
            };
            let grid = augment::preview_grid(&img, &Augment::book(), seed);
            grid.save(&out)
                .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
            println!(
                "wrote {} ({}x{})",
                out.display(),
                grid.width(),
                grid.height()
            );
            Ok(())
        }
        Some(Command::Bench {
            workloads,
            only,
            json,
            peak,
            runs,
            pipeline_data,
            pipeline_images,
            threads,
        }) => {
            let path =
                workloads.unwrap_or_else(|| bench::shared_dir().join("bench/workloads.json"));
            let w = Workloads::load(&path)?;
            let gpu = select::open(&request)?;
            let mut opts = BenchOptions {
                only,
                runs: runs as usize,
                ..BenchOptions::default()
            };
            if peak {
                let p = bench::measure_peak(&gpu)?;
                opts.peak_gflops = Some(p);
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"engine": format!("cnn-wgpu {}", env!("CARGO_PKG_VERSION")), "adapter": gpu.adapter_name(), "workload": "peak/fma", "gflops": p})
                    );
                } else {
                    println!("{}: FMA peak {p:.1} GFLOP/s", gpu.adapter_name());
                }
            }
            if !json {
                println!("adapter: {} ({:?})", gpu.adapter_name(), gpu.info().backend);
            }
            let lines = bench::run(&gpu, &w, &opts, |l| {
                if json {
                    println!(
                        "{}",
                        serde_json::to_string(l).expect("bench line serialises")
                    );
                }
            })?;
            if !json {
                print!("{}", bench::table(&lines));
                let pending: Vec<&str> = w
                    .network
                    .iter()
                    .filter_map(|n| n.get("name")?.as_str())
                    .filter(|n| !bench::NETWORK_WORKLOADS.contains(n))
                    .collect();
                if !pending.is_empty() {
                    println!(
                        "(not yet measured: network/{} need the training executor)",
                        pending.join(", network/")
                    );
                }
            }
            if opts.only.is_empty() || opts.only.iter().any(|o| bench::is_pipeline_filter(o)) {
                let dir = pipeline_data
                    .unwrap_or_else(|| bench::shared_dir().join("data/cats_and_dogs_small/train"));
                if dir.is_dir() {
                    let threads = threads.unwrap_or_else(|| {
                        std::thread::available_parallelism().map_or(2, |n| n.get())
                    });
                    let p = bench::pipeline_throughput(&dir, 150, pipeline_images, threads)?;
                    if json {
                        println!("{}", serde_json::to_string(&p)?);
                    } else {
                        println!(
                            "{}: {:.1} images/s ({} images, {} threads, decode + resize + augment)",
                            p.workload, p.images_per_s, p.images, p.threads
                        );
                        if let Some(v) = lines
                            .iter()
                            .find(|l| l.workload == "network/vgg16_base_forward_150")
                        {
                            let consumed = v.n as f64 / (v.ms / 1e3);
                            println!(
                                "VGG16 base forward consumes {consumed:.2} images/s on {}: the pipeline is {:.0}x faster",
                                gpu.adapter_name(),
                                p.images_per_s / consumed
                            );
                        }
                    }
                } else {
                    eprintln!(
                        "skipped pipeline section: {} not found (--pipeline-data DIR)",
                        dir.display()
                    );
                }
            }
            Ok(())
        }
    }
}
