//! The `cnn-wgpu` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use cnn_wgpu::bench::{self, BenchOptions, Workloads};
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
    #[command(subcommand)]
    command: Option<Command>,
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
        /// Timed runs per workload (the median is reported).
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
        runs: u64,
    },
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
            println!(
                "cnn-wgpu {}: a GPU engine for convolutional networks on wgpu.\n\n\
                 Ready now:\n  cnn-wgpu devices        list adapters and their limits\n  \
                 cnn-wgpu bench          time conv2d forward/backward and matmul on the reference workloads\n\n\
                 Coming with the next milestones: `prepare`, `train`, `extract`, `finetune`, `evaluate`, `predict`;\n\
                 then `cargo run --release` will run the VGG16 transfer-learning workflow end to end.\n\
                 Run `cnn-wgpu --help` for options.",
                env!("CARGO_PKG_VERSION")
            );
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
                    println!(
                        "    timestamp queries: {}, shader f16: {}",
                        a.timestamp_query, a.shader_f16
                    );
                }
            }
            Ok(())
        }
        Some(Command::Bench {
            workloads,
            only,
            json,
            peak,
            runs,
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
                if !w.network.is_empty() {
                    println!(
                        "(the `network` section needs the graph executor and runs once it lands)"
                    );
                }
            }
            Ok(())
        }
    }
}
