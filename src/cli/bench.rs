//! `bench`: the kernel, network and data-pipeline workloads.

use std::path::PathBuf;

use cnn_wgpu::bench::{self, BenchOptions, Workloads};
use cnn_wgpu::gpu::{select, AdapterRequest};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// A workloads file (default: the reference workloads built into the binary, the same as
    /// the shared folder's bench/workloads.json).
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
    /// Time each convolution and network workload run for run against this conv algorithm
    /// (direct, f2x2, f4x4, f6x6 or auto), the two alternating in pairs so that a shared machine's
    /// drifting load slows both alike; reports the baseline's time and the speed-up (the median
    /// of the pairs' ratios) beside each. The workloads themselves run with --conv-algo.
    #[arg(long, value_name = "ALGO", conflicts_with = "peak_paired")]
    against: Option<cnn_wgpu::gpu::ConvAlgo>,
    /// Measure the FMA peak first (as --peak), then run a short peak kernel beside every
    /// workload run, pair for pair, and report the share of the peak as the median of the
    /// pairs' own shares: on a machine whose speed drifts, a share that one moment's load does
    /// not skew.
    #[arg(long)]
    peak_paired: bool,
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
}

pub fn bench(request: &AdapterRequest, a: BenchArgs) -> Result<(), Box<dyn std::error::Error>> {
    let BenchArgs {
        workloads,
        only,
        json,
        peak,
        runs,
        against,
        peak_paired,
        pipeline_data,
        pipeline_images,
        threads,
    } = a;
    let w = match &workloads {
        Some(path) => Workloads::load(path)?,
        None => Workloads::reference(),
    };
    let gpu = select::open(request)?;
    let mut opts = BenchOptions {
        only,
        runs: runs as usize,
        against,
        ..BenchOptions::default()
    };
    if peak || peak_paired {
        let (p, unroll) = bench::measure_peak_best(&gpu)?;
        opts.peak_gflops = Some(p);
        opts.peak_paired = peak_paired.then_some(unroll);
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
        if opts.peak_paired.is_some() {
            println!(
                "(peak %: the median of each run's share of a peak kernel run right beside it)"
            );
        }
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
            let threads = threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
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
