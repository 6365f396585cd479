//! `prepare`, `check-data` and `augment-preview`: datasets on disk.

use std::path::PathBuf;

use cnn_wgpu::data::{
    augment, prepare, Augment, Dataset, DirectoryDataset, Loader, LoaderConfig, Preprocessing,
};

#[derive(clap::Args)]
pub struct PrepareArgs {
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
}

pub fn prepare(a: PrepareArgs) -> Result<(), Box<dyn std::error::Error>> {
    let PrepareArgs {
        from,
        to,
        train,
        validation,
        test,
    } = a;
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

#[derive(clap::Args)]
pub struct CheckDataArgs {
    #[arg(long)]
    data: PathBuf,
    #[arg(long, default_value_t = 150)]
    image_size: usize,
    /// Fail on the first unreadable image instead of skipping it.
    #[arg(long)]
    strict: bool,
}

pub fn check_data(a: CheckDataArgs) -> Result<(), Box<dyn std::error::Error>> {
    let CheckDataArgs {
        data,
        image_size,
        strict,
    } = a;
    let ds = DirectoryDataset::open(&data, (image_size, image_size), 2)?;
    let counts = ds.counts();
    for (name, n) in ds.class_names().iter().zip(&counts) {
        println!("{name:<12} {n:>7} files");
    }
    println!("labels: {:?}", ds.label_kind());
    let left_out: Vec<String> = ds
        .unreadable()
        .iter()
        .map(|(p, why)| format!("{} ({why})", p.display()))
        .collect();
    if strict {
        if let Some(first) = left_out.first() {
            return Err(format!("not a readable image file: {first}").into());
        }
    }
    let mut cfg = LoaderConfig::evaluation(64, Preprocessing::None);
    cfg.strict = strict;
    let loader = Loader::new(std::sync::Arc::new(ds), cfg)?;
    let start = std::time::Instant::now();
    let mut read = 0;
    for batch in loader.epoch(0) {
        read += batch?.len();
    }
    let mut skipped = left_out;
    skipped.extend(loader.skipped());
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

#[derive(clap::Args)]
pub struct AugmentPreviewArgs {
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
}

pub fn augment_preview(a: AugmentPreviewArgs) -> Result<(), Box<dyn std::error::Error>> {
    let AugmentPreviewArgs {
        data,
        out,
        seed,
        index,
        image_size,
    } = a;
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
