//! The `cnn-wgpu` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use cnn_wgpu::gpu::{AdapterRequest, BackendChoice, ConvAlgo, DeviceOptions, TuneMode};

mod cli;

use cli::{bench, data, inspect, train, transfer};

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
    /// Measure the choices this adapter's tuning cache lacks (how far to split each weight
    /// gradient's sum, which algorithm each 3x3 convolution runs) and save the fastest; same as CNN_WGPU_TUNE=1. Cached choices are used
    /// either way; CNN_WGPU_TUNE=0 ignores them.
    #[arg(long, global = true)]
    tune: bool,
    /// How 3x3 stride-1 convolutions run: auto (the measured choice per layer under --tune,
    /// else a cost model's), direct, f2x2, f4x4 or f6x6 (Winograd) everywhere; overrides
    /// CNN_WGPU_CONV_ALGO.
    #[arg(long, global = true, value_enum)]
    conv_algo: Option<ConvAlgo>,
    /// Open the device with WebGPU's default limits instead of the adapter's (16 KiB workgroup
    /// memory, 256 invocations, 128 MiB per storage binding, 8 storage buffers per stage), as a
    /// browser gives a page; same as CNN_WGPU_WEBGPU_LIMITS=1.
    #[arg(long, global = true)]
    webgpu_limits: bool,
    /// Main job: the dataset (prepared split, or Kaggle's flat cat.N.jpg/dog.N.jpg folder)
    /// [default: data/cats_and_dogs_small, else the shared folder's copy].
    #[arg(long)]
    data: Option<PathBuf>,
    /// Main job: VGG16 weights (Keras or torchvision naming, safetensors) [default:
    /// weights/vgg16_notop.safetensors, else weights/vgg16_tv_in1k.safetensors, else the shared
    /// folder's Keras copy].
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Main job: epochs of stage 2 (frozen base with augmentation) [default: the book's 30 on a
    /// GPU, 2 on a software adapter].
    #[arg(long, conflicts_with = "book", value_parser = at_least_one())]
    epochs: Option<usize>,
    /// Main job: epochs of stage 3 (block5 fine-tuning) [default: the book's 100 on a GPU, 2 on
    /// a software adapter].
    #[arg(long, conflicts_with = "book", value_parser = at_least_one())]
    finetune_epochs: Option<usize>,
    /// Main job: run stage 1 (the head on cached features) first and start stage 2's head from
    /// its best [default: on a software adapter; on a GPU with --warm-start].
    #[arg(long, conflicts_with = "book")]
    warm_start: bool,
    /// Main job: epochs of stage 1 where it runs (implies --warm-start) [default: 30].
    #[arg(long, conflicts_with = "book", value_parser = at_least_one())]
    head_epochs: Option<usize>,
    /// Main job: the book's schedule on any adapter: stage 2 for 30 epochs from a fresh head,
    /// then stage 3 for 100, augmented batches streamed from disk (days on a software adapter).
    #[arg(long)]
    book: bool,
    /// Main job: stream augmented batches through the frozen base in stages 2 and 3, instead of
    /// running it once per augmented view and caching the views (the default after stage 1
    /// when stages 2 and 3 run at most 8 epochs).
    #[arg(long)]
    stream: bool,
    /// Main job: RMSprop's learning rate in stage 1 [default: 2e-5].
    #[arg(long)]
    head_lr: Option<f32>,
    /// Main job: RMSprop's learning rate in stage 2 [default: 2e-5].
    #[arg(long)]
    frozen_lr: Option<f32>,
    /// Main job: RMSprop's learning rate in stage 3 [default: the book's 1e-5; the software
    /// schedule's on a software adapter].
    #[arg(long)]
    finetune_lr: Option<f32>,
    /// Main job: the seed of the heads' initialisation, the shuffles, dropout and augmentation.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Main job: print the plan (stages, epochs, images, the time each stage should take here,
    /// measured on one batch) and stop.
    #[arg(long)]
    plan: bool,
    /// Main job: image side.
    #[arg(long, default_value_t = 150)]
    image_size: usize,
    /// Main job: where the stages' run folders go.
    #[arg(long, default_value = "runs")]
    runs: PathBuf,
    /// Main job: start afresh where the stages' run folders already hold runs.
    #[arg(long)]
    overwrite: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

/// Epoch counts of the main job's stages: each stage that runs trains at least one epoch (the
/// next stage starts from its best checkpoint).
fn at_least_one() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::<usize>::new().range(1..)
}

fn parse_backend(s: &str) -> Result<BackendChoice, String> {
    s.parse().map_err(|e: cnn_wgpu::GpuError| e.to_string())
}

#[derive(Subcommand)]
enum Command {
    /// List every adapter with its backend, type, driver and the limits that matter.
    Devices(inspect::DevicesArgs),
    /// Time the kernels on the reference workloads.
    Bench(bench::BenchArgs),
    /// Check every kernel family and op, forward and backward, against the CPU reference on
    /// the adapter in use (a new GPU or driver), in seconds.
    Selftest(inspect::SelftestArgs),
    /// Split the Kaggle "Dogs vs. Cats" flat folder (cat.N.jpg, dog.N.jpg) into
    /// train/validation/test class folders, the book's way.
    Prepare(data::PrepareArgs),
    /// Train a zoo model on a dataset folder (train/ and validation/ class folders, optional
    /// test/) or an MNIST folder; writes a run folder with history and checkpoints.
    Train(train::TrainArgs),
    /// Loss and accuracy of a checkpoint on a dataset folder (class sub-folders, or a folder
    /// with test/); printed and written as JSON.
    Evaluate(train::EvaluateArgs),
    /// Each image's probability and class under a checkpoint.
    Predict(train::PredictArgs),
    /// Write one VGG16 layer's activations (NHWC) for images, preprocessed as the weights expect.
    Features(inspect::FeaturesArgs),
    /// Stage 1: VGG16 block5_pool features of every split (cached), then a dense head on them.
    Extract(transfer::TransferArgs),
    /// Stage 2 (`--stage frozen`): end to end with the base frozen and augmentation; stage 3
    /// (`--stage block5`): block5 unfrozen, from stage 2's checkpoint.
    Finetune(transfer::FinetuneArgs),
    /// Print a zoo model's Keras-style summary: layers, output shapes, parameters.
    Summary(inspect::SummaryArgs),
    /// Decode every image of a dataset folder once, as training would, and report classes,
    /// counts and unreadable files (skipped with a warning, or an error with --strict).
    CheckData(data::CheckDataArgs),
    /// Write a 3x3 grid of one training image augmented nine times (the book's figure).
    AugmentPreview(data::AugmentPreviewArgs),
    /// Write every WGSL module exactly as the engine compiles it, and the manifest of every
    /// pipeline each adapter class builds, for other compilers to check.
    #[command(hide = true)]
    Shaders(inspect::ShadersArgs),
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
            let top = e.to_string();
            eprintln!("error: {top}");
            // Most errors quote their cause in their own message; a cause is printed only
            // where it adds something.
            let mut said = top;
            let mut source = e.source();
            while let Some(s) = source {
                let text = s.to_string();
                if !said.contains(&text) {
                    eprintln!("  caused by: {text}");
                    said = text;
                }
                source = s.source();
            }
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    // The fault-injection tests' seam (see `cnn_wgpu::fault`); read here, at the edge, only.
    if let Ok(spec) = std::env::var("CNN_WGPU_PAUSE_AT") {
        cnn_wgpu::fault::arm(&spec).map_err(|e| format!("CNN_WGPU_PAUSE_AT: {e}"))?;
    }
    // The device switches come from the environment and the flags, here and nowhere deeper.
    let mut options = DeviceOptions::from_env()?;
    if cli.tune {
        options.tune = TuneMode::Measure;
    }
    if let Some(algo) = cli.conv_algo {
        options.conv_algo = algo;
    }
    if cli.webgpu_limits {
        options.webgpu_limits = true;
    }
    let request = AdapterRequest {
        name: cli.adapter,
        backend: cli.backend,
        options,
    };
    match cli.command {
        None => {
            eprintln!("cnn-wgpu {}: VGG16 transfer learning on cats vs dogs (stage 1: the head on cached features, stage 2: frozen base with augmentation, stage 3: block5 fine-tuning); `cnn-wgpu --help` lists the other commands", env!("CARGO_PKG_VERSION"));
            let args = transfer::TransferArgs {
                data: cli.data,
                weights: cli.weights,
                epochs: 0,
                batch: 20,
                image_size: cli.image_size,
                seed: cli.seed,
                out: Some(cli.runs.join("vgg16-frozen")),
                workers: 0,
                stop_after_steps: None,
                resume: false,
                overwrite: cli.overwrite,
            };
            let want = cnn_wgpu::transfer::ScheduleRequest {
                head_epochs: cli.head_epochs,
                frozen_epochs: cli.epochs,
                block5_epochs: cli.finetune_epochs,
                warm_start: cli.warm_start,
                book: cli.book,
                stream: cli.stream,
            };
            let rates = transfer::Rates {
                head: cli.head_lr,
                frozen: cli.frozen_lr,
                finetune: cli.finetune_lr,
            };
            transfer::main_job(&request, args, want, rates, &cli.runs, cli.plan)
        }
        Some(Command::Extract(args)) => transfer::extract(&request, args),
        Some(Command::Finetune(a)) => transfer::finetune(&request, a),
        Some(Command::Devices(a)) => inspect::devices(&request, a),
        Some(Command::Prepare(a)) => data::prepare(a),
        Some(Command::Train(a)) => train::train(&request, a),
        Some(Command::Evaluate(a)) => train::evaluate(&request, a),
        Some(Command::Predict(a)) => train::predict(&request, a),
        Some(Command::Features(a)) => inspect::features(&request, a),
        Some(Command::Summary(a)) => inspect::summary(a),
        Some(Command::CheckData(a)) => data::check_data(a),
        Some(Command::AugmentPreview(a)) => data::augment_preview(a),
        Some(Command::Shaders(a)) => inspect::shaders(&request, a),
        Some(Command::Bench(a)) => bench::bench(&request, a),
        Some(Command::Selftest(a)) => {
            // A kernel that reads past a tensor's end must fail here on any adapter, not only
            // on those that return a real value there (Metal, DX12).
            let mut request = request;
            request.options.nan_tail = true;
            inspect::selftest(&request, a)
        }
    }
}
