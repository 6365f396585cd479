//! Stages 1-3 of the VGG16 workflow: `extract`, `finetune` and the main job (no subcommand).

use std::path::{Path, PathBuf};

use cnn_wgpu::data::prepare;
use cnn_wgpu::gpu::{select, AdapterRequest};
use cnn_wgpu::transfer::{self, MainJob, Schedule, ScheduleKind, ScheduleRequest, TransferConfig};

#[derive(clap::Args, Clone)]
pub struct TransferArgs {
    /// Prepared split (train/, validation/, test/ class folders) or Kaggle's flat folder
    /// [default: data/cats_and_dogs_small, else the shared folder's copy].
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// VGG16 weights [default: weights/vgg16_notop.safetensors, else
    /// weights/vgg16_tv_in1k.safetensors, else the shared folder's Keras copy].
    #[arg(long)]
    pub weights: Option<PathBuf>,
    #[arg(long, default_value_t = 30)]
    pub epochs: usize,
    #[arg(long, default_value_t = 20)]
    pub batch: usize,
    #[arg(long, default_value_t = 150)]
    pub image_size: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Run folder (default runs/vgg16-<stage>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    pub workers: usize,
    /// Stop after this many steps as Ctrl-C would (saved, resumable).
    #[arg(long)]
    pub stop_after_steps: Option<usize>,
    /// Continue the stage's run folder from its last.safetensors.
    #[arg(long)]
    pub resume: bool,
    /// Start afresh in a run folder that already holds a run (its checkpoints and history are
    /// replaced; a feature cache there is still reused).
    #[arg(long)]
    pub overwrite: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Stage {
    Frozen,
    Block5,
}

#[derive(clap::Args)]
pub struct FinetuneArgs {
    #[command(flatten)]
    args: TransferArgs,
    #[arg(long, value_enum)]
    stage: Stage,
    /// The starting checkpoint: for stage 3 a stage-2 one (default
    /// runs/vgg16-frozen/best.safetensors); for stage 2 a stage-1 head (`extract`'s
    /// best.safetensors), which warm starts the head [default: the head from --seed].
    #[arg(long)]
    from: Option<PathBuf>,
    /// RMSprop's learning rate [default: the book's, 2e-5 for stage 2, 1e-5 for stage 3].
    #[arg(long)]
    lr: Option<f32>,
    /// Train without augmentation.
    #[arg(long)]
    no_augment: bool,
}

/// The main job's learning rates as given on the command line (None: the stage's).
#[derive(Clone, Copy, Default)]
pub struct Rates {
    pub head: Option<f32>,
    pub frozen: Option<f32>,
    pub finetune: Option<f32>,
}

/// The main job: the book's stages on cats vs dogs, then a short report. `args` carries the
/// settings the stages share; each stage runs into its folder under `runs` (vgg16-extract,
/// vgg16-frozen, vgg16-block5). It first prints its plan with the time each stage should take,
/// measured on one batch, and with `plan_only` stops there.
pub fn main_job(
    request: &AdapterRequest,
    args: TransferArgs,
    want: ScheduleRequest,
    rates: Rates,
    runs: &Path,
    plan_only: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    for (flag, lr) in [
        ("--head-lr", rates.head),
        ("--frozen-lr", rates.frozen),
        ("--finetune-lr", rates.finetune),
    ] {
        if let Some(lr) = lr.filter(|lr| !lr.is_finite() || *lr < 0.0) {
            return Err(
                format!("{flag} {lr}: a learning rate must be a finite number >= 0").into(),
            );
        }
    }
    let mut frozen = transfer_config(&args, "frozen")?;
    frozen.out = runs.join("vgg16-frozen");
    frozen.lr = rates.frozen;
    let mut block5 = frozen.clone();
    block5.out = runs.join("vgg16-block5");
    block5.lr = rates.finetune;
    let mut extract = frozen.clone();
    extract.out = runs.join("vgg16-extract");
    extract.lr = rates.head;
    let gpu = select::open(request)?;
    let software = gpu.info().device_type == wgpu::DeviceType::Cpu;
    let schedule = Schedule::choose(software, want);
    extract.epochs = schedule.head_epochs.unwrap_or(0);
    block5.lr = block5.lr.or(schedule.block5_lr);
    frozen.epochs = schedule.frozen_epochs;
    block5.epochs = schedule.block5_epochs;
    // Every folder before the first stage starts, and locked for the whole job: stage 3
    // refusing its folder hours later would waste the stages before it. A plan writes nothing,
    // so it needs none.
    let _locks = if plan_only {
        None
    } else {
        let first = if schedule.head_epochs.is_some() {
            &extract
        } else {
            &frozen
        };
        Some((
            first.check_before_start()?,
            frozen.check_run_folder()?,
            block5.check_run_folder()?,
        ))
    };
    print_plan(
        &gpu,
        &frozen,
        schedule,
        [&extract, &frozen, &block5].map(|c| c.lr),
    )?;
    if plan_only {
        return Ok(());
    }
    let job = MainJob {
        extract,
        frozen,
        block5,
    };
    if schedule.cached {
        let Some(reports) = super::unless_stopped(transfer::main_job_cached(&gpu, &job))? else {
            return Ok(());
        };
        print_reports(&gpu, &reports);
        return Ok(());
    }
    let mut reports = Vec::new();
    let warm = if schedule.head_epochs.is_some() {
        let Some(r1) = super::unless_stopped(transfer::extract(&gpu, &job.extract))? else {
            return Ok(());
        };
        reports.push(r1);
        Some(job.extract.out.join("best.safetensors"))
    } else {
        None
    };
    let Some(r2) = super::unless_stopped(transfer::finetune_frozen(
        &gpu,
        &job.frozen,
        warm.as_deref(),
    ))?
    else {
        return Ok(());
    };
    reports.push(r2);
    let Some(r3) = super::unless_stopped(transfer::finetune_block5(
        &gpu,
        &job.block5,
        &job.frozen.out.join("best.safetensors"),
    ))?
    else {
        return Ok(());
    };
    reports.push(r3);
    print_reports(&gpu, &reports);
    Ok(())
}

/// The plan, before the first step: the schedule and why, then per stage the epochs, the images
/// and the time it should take on this adapter, measured on one batch.
fn print_plan(
    gpu: &cnn_wgpu::Gpu,
    cfg: &TransferConfig,
    schedule: Schedule,
    rates: [Option<f32>; 3],
) -> Result<(), Box<dyn std::error::Error>> {
    let lr = |stage: usize| {
        format!(
            "RMSprop {:e}",
            rates[stage].unwrap_or(transfer::STAGE_LR[stage])
        )
    };
    let sizes = transfer::split_sizes(cfg)?;
    eprintln!(
        "measuring {} on one batch of {} images...",
        gpu.adapter_name(),
        cfg.batch
    );
    let (book2, book3) = Schedule::BOOK;
    let why = match schedule.kind {
        ScheduleKind::Book => "the book's schedule".to_string(),
        ScheduleKind::Given => "the epochs given".to_string(),
        ScheduleKind::Software => format!(
            "the schedule for a software adapter; the book's {book2} + {book3} epochs: cargo run --release -- --book"
        ),
    };
    let (train, val, test) = sizes;
    let each = |epochs: usize| {
        format!(
            "{epochs:>3} epoch{} x {train} images (+{val} validation), then {test} test",
            if epochs == 1 { " " } else { "s" }
        )
    };
    let mut rows: Vec<(String, String, f64)> = Vec::new();
    let measured = if schedule.cached {
        let speed = transfer::measure_cached_speed(gpu, cfg)?;
        let [features, s1, s2, s3] = transfer::cached_seconds(&speed, &schedule, sizes);
        let views = schedule.frozen_epochs.max(schedule.block5_epochs).max(1);
        rows.push((
            "frozen blocks once per image".into(),
            format!(
                "{} images + {views} augmented view{} of the {train} training images",
                train + val + test,
                if views == 1 { "" } else { "s" }
            ),
            features,
        ));
        rows.push((
            "stage 1, head on cached features".into(),
            format!("{}, {}", each(schedule.head_epochs.unwrap_or(0)), lr(0)),
            s1,
        ));
        rows.push((
            "stage 2, frozen base + augmentation".into(),
            format!("{}, cached views, {}", each(schedule.frozen_epochs), lr(1)),
            s2,
        ));
        rows.push((
            "stage 3, block5 fine-tuning".into(),
            format!("{}, cached views, {}", each(schedule.block5_epochs), lr(2)),
            s3,
        ));
        format!(
            "{:.3} s per image through blocks 1-4, {:.4} through block5, {:.4} per stage-3 step image",
            speed.prefix, speed.block5_forward, speed.suffix_step
        )
    } else {
        let speed = transfer::measure_speed(gpu, cfg)?;
        if let Some(e) = schedule.head_epochs {
            // Stage 1: one frozen forward per image of every split, then the head (whose steps
            // on (4,4,512) features cost little beside it).
            rows.push((
                "stage 1, head on cached features".into(),
                format!("{}, {}", each(e), lr(0)),
                (train + val + test) as f64 * speed.evaluate,
            ));
        }
        rows.push((
            "stage 2, frozen base + augmentation".into(),
            format!("{}, {}", each(schedule.frozen_epochs), lr(1)),
            transfer::stage_seconds(&speed, speed.frozen_step, schedule.frozen_epochs, sizes),
        ));
        rows.push((
            "stage 3, block5 fine-tuning".into(),
            format!("{}, {}", each(schedule.block5_epochs), lr(2)),
            transfer::stage_seconds(&speed, speed.block5_step, schedule.block5_epochs, sizes),
        ));
        format!(
            "{:.3} s per image evaluated, {:.3} per stage-2 step image, {:.3} per stage-3 step image",
            speed.evaluate, speed.frozen_step, speed.block5_step
        )
    };
    println!("plan on {} ({why}):", gpu.adapter_name());
    for (name, what, secs) in &rows {
        println!("  {name:<36} {what}: about {}", duration(*secs));
    }
    let total: f64 = rows.iter().map(|r| r.2).sum();
    println!("  in all about {} (measured: {measured})", duration(total));
    Ok(())
}

/// "45 min", "2.5 h", "40 s".
fn duration(secs: f64) -> String {
    match secs {
        s if s < 90.0 => format!("{s:.0} s"),
        s if s < 5400.0 => format!("{:.0} min", s / 60.0),
        s => format!("{:.1} h", s / 3600.0),
    }
}

pub fn extract(
    request: &AdapterRequest,
    args: TransferArgs,
) -> Result<(), Box<dyn std::error::Error>> {
    let cfg = transfer_config(&args, "extract")?;
    let gpu = select::open(request)?;
    let Some(r) = super::unless_stopped(cnn_wgpu::transfer::extract(&gpu, &cfg))? else {
        return Ok(());
    };
    print_reports(&gpu, &[r]);
    Ok(())
}

pub fn finetune(
    request: &AdapterRequest,
    a: FinetuneArgs,
) -> Result<(), Box<dyn std::error::Error>> {
    let FinetuneArgs {
        args,
        stage,
        from,
        lr,
        no_augment,
    } = a;
    let name = match stage {
        Stage::Frozen => "frozen",
        Stage::Block5 => "block5",
    };
    let mut cfg = transfer_config(&args, name)?;
    cfg.augment = !no_augment;
    cfg.lr = lr;
    let gpu = select::open(request)?;
    let r = match stage {
        Stage::Frozen => transfer::finetune_frozen(&gpu, &cfg, from.as_deref()),
        Stage::Block5 => {
            let from = from.unwrap_or_else(|| PathBuf::from("runs/vgg16-frozen/best.safetensors"));
            cnn_wgpu::transfer::finetune_block5(&gpu, &cfg, &from)
        }
    };
    let Some(r) = super::unless_stopped(r)? else {
        return Ok(());
    };
    print_reports(&gpu, &[r]);
    Ok(())
}

/// Where the VGG16 weights are looked for when `--weights` is not given: the Keras file first (the
/// book's weights), then what `cargo xtask fetch-weights` downloads.
const DEFAULT_WEIGHTS: [&str; 2] = [
    "weights/vgg16_notop.safetensors",
    "weights/vgg16_tv_in1k.safetensors",
];

/// Where the dataset is looked for when `--data` is not given (then the shared folder's copy).
const DEFAULT_DATA: &str = "data/cats_and_dogs_small";

/// The input `given`, else the first of `defaults` that exists, else `shared` (inside the
/// shared folder, `$CNN_WGPU_SHARED` or ../shared) where it exists. Says in one line which it
/// uses and why; None (with the places looked in) where nothing is found.
fn find_input(
    what: &str,
    given: Option<&Path>,
    defaults: &[&str],
    shared: &str,
) -> Result<PathBuf, Vec<PathBuf>> {
    if let Some(p) = given {
        return Ok(p.to_path_buf());
    }
    let shared = cnn_wgpu::bench::shared_dir().join(shared);
    let mut looked = Vec::new();
    for (p, source) in defaults
        .iter()
        .map(|d| (PathBuf::from(d), "the project default"))
        .chain([(shared, "the shared folder, $CNN_WGPU_SHARED or ../shared")])
    {
        if p.exists() {
            eprintln!("using {what} {} ({source})", p.display());
            return Ok(p);
        }
        looked.push(p);
    }
    Err(looked)
}

fn looked_in(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Finds the main job's inputs (see [`find_input`]) and checks them, preparing Kaggle's flat
/// layout when that is what the data is. Returns (data, weights).
fn transfer_inputs(
    data: Option<&Path>,
    weights: Option<&Path>,
) -> Result<(PathBuf, PathBuf), Box<dyn std::error::Error>> {
    let no_weights = |looked: &[PathBuf]| {
        format!(
            "no VGG16 weights found (looked in {}).\n  Get them one of these ways:\n  \
             - download timm's torchvision VGG16 (553 MB, checksum-verified): cargo xtask fetch-weights\n  \
             - point CNN_WGPU_SHARED at the project's shared folder, which holds the Keras copy\n  \
             - or pass --weights PATH to any VGG16 safetensors in Keras or torchvision naming\n  \
             (see weights/README.md for sources, licences and checksums)",
            looked_in(looked)
        )
    };
    let weights = find_input(
        "VGG16 weights",
        weights,
        &DEFAULT_WEIGHTS,
        "weights/vgg16_notop.safetensors",
    )
    .map_err(|looked| no_weights(&looked))?;
    if !weights.is_file() {
        return Err(no_weights(std::slice::from_ref(&weights)).into());
    }
    let no_data = |looked: &[PathBuf]| {
        format!(
            "no dataset found (looked in {}).\n  Get it one of these ways:\n  \
             - download Microsoft's copy of the images (787 MiB, checksum-verified, resumable) and split it the book's way into {DEFAULT_DATA}: cargo xtask fetch-data\n  \
             - split Kaggle's train folder: cnn-wgpu prepare --from ~/kaggle/train --to {DEFAULT_DATA}\n  \
             - point CNN_WGPU_SHARED at the project's shared folder, which holds the split\n  \
             - or pass --data PATH to train/, validation/, test/ folders with cats/ and dogs/",
            looked_in(looked)
        )
    };
    let data = find_input("data", data, &[DEFAULT_DATA], "data/cats_and_dogs_small")
        .map_err(|looked| no_data(&looked))?;
    if !data.exists() {
        return Err(no_data(std::slice::from_ref(&data)).into());
    }
    let data = data.as_path();
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
        return Ok((to, weights));
    }
    Ok((data.to_path_buf(), weights))
}

fn transfer_config(
    a: &TransferArgs,
    stage: &str,
) -> Result<cnn_wgpu::transfer::TransferConfig, Box<dyn std::error::Error>> {
    let (data, weights) = transfer_inputs(a.data.as_deref(), a.weights.as_deref())?;
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
    c.overwrite = a.overwrite;
    let flag = c.interrupt.clone();
    super::install_interrupt(flag);
    Ok(c)
}

fn print_reports(gpu: &cnn_wgpu::Gpu, reports: &[cnn_wgpu::transfer::StageReport]) {
    println!(
        "\nVGG16 transfer learning on {} ({:?})",
        gpu.adapter_name(),
        gpu.info().backend
    );
    println!(
        "{:<46} {:>7} {:>10} {:>10} {:>9}  run folder",
        "stage", "epochs", "s/epoch", "images/s", "test acc"
    );
    for r in reports {
        println!(
            "{:<46} {:>7} {:>10.1} {:>10.2} {:>8.2}%  {} (curves.png, best.safetensors, last.safetensors)",
            r.stage,
            r.epochs,
            r.seconds_per_epoch,
            r.train_images_per_s,
            100.0 * r.test_accuracy,
            r.run_dir.display()
        );
    }
}
