//! `cargo xtask`: the project's chores, mirroring CI locally (`cargo xtask --help` lists them).

mod data;
mod fetch;
mod gpu_report;

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use clap::Parser;

fn cargo(args: &[&str]) -> Result<(), String> {
    cargo_with(args, |_| {})
}

/// Runs cargo with `args`, its environment adjusted by `env`.
fn cargo_with(args: &[&str], env: impl FnOnce(&mut Command)) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    eprintln!("xtask: cargo {}", args.join(" "));
    let mut command = Command::new(&cargo);
    command.args(args);
    env(&mut command);
    let status = command
        .status()
        .map_err(|e| format!("cannot run {cargo}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`cargo {}` failed ({status})", args.join(" ")))
    }
}

fn ci() -> Result<(), String> {
    cargo(&["fmt", "--all", "--check"])?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--release",
        "--",
        "-D",
        "warnings",
    ])?;
    validate()?;
    cargo(&["test", "--workspace", "--release"])?;
    lavapipe_512()
}

/// The kernel and model test binaries again on lavapipe built for 512-bit vectors, whose
/// 16-lane subgroups stand for the real GPUs' 32 and 64: the kernel choices made for other
/// subgroup widths are tested here. `CNN_WGPU_EXPECT_KERNELS_512` states the families that must
/// run there (CI sets it). Skipped, saying so, where lavapipe is not installed, unless
/// `CNN_WGPU_REQUIRE_GPU` is set.
fn lavapipe_512() -> Result<(), String> {
    let on_lavapipe_512 = |c: &mut Command| {
        c.env("LP_NATIVE_VECTOR_WIDTH", "512")
            .env("CNN_WGPU_ADAPTER", "llvmpipe");
        match std::env::var("CNN_WGPU_EXPECT_KERNELS_512") {
            Ok(families) => c.env("CNN_WGPU_EXPECT_KERNELS", families),
            // What is expected at 256 bits says nothing of 512.
            Err(_) => c.env_remove("CNN_WGPU_EXPECT_KERNELS"),
        };
    };
    let cargo_bin = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut probe = Command::new(&cargo_bin);
    probe.args(["run", "--quiet", "--release", "--", "devices"]);
    on_lavapipe_512(&mut probe);
    let found = probe
        .output()
        .map_err(|e| format!("cannot run {cargo_bin}: {e}"))?;
    if !found.status.success() {
        let why = String::from_utf8_lossy(&found.stderr).trim().to_string();
        if std::env::var_os("CNN_WGPU_REQUIRE_GPU").is_some() {
            return Err(format!(
                "CNN_WGPU_REQUIRE_GPU is set but lavapipe at 512 bits did not open: {why}"
            ));
        }
        eprintln!("xtask: skipped the 512-bit lavapipe pass: lavapipe did not open ({why})");
        return Ok(());
    }
    eprintln!("xtask: the kernel and model tests on lavapipe at 512 bits");
    let mut args = vec!["test", "--release"];
    for t in [
        "activation",
        "conv",
        "dense",
        "dropout",
        "kept_kernels",
        "loss",
        "model",
        "optim",
        "pack",
        "pool",
        "runtime",
        "tiled",
        "tune",
        "winograd",
    ] {
        args.extend(["--test", t]);
    }
    cargo_with(&args, on_lavapipe_512)
}

fn validate() -> Result<(), String> {
    cargo(&[
        "test",
        "--release",
        "--test",
        "shaders_validate",
        "--test",
        "contract",
    ])
}

fn bench(extra: &[String]) -> Result<(), String> {
    let mut args = vec!["run", "--release", "--", "bench", "--peak"];
    args.extend(extra.iter().map(String::as_str));
    cargo(&args)
}

/// The default download: timm's `vgg16.tv_in1k` (torchvision's ImageNet VGG16, BSD-3-Clause) at
/// the hub revision that added it, so the checksum below (the hub's LFS listing for that file,
/// 553 MB) can never drift. Its `classifier.*` tensors are ignored by the loader.
const PINNED_URL: &str = "https://huggingface.co/timm/vgg16.tv_in1k/resolve/3394518cba29aee1ea82a49d971be90d2dd1dab7/model.safetensors";
const PINNED_SHA256: &str = "57b026918159a6bf9faf8405c3a551903768e7138989d9c6224a14227203fad8";
/// Where the main job looks after `weights/vgg16_notop.safetensors`.
const PINNED_OUT: &str = "weights/vgg16_tv_in1k.safetensors";

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "The project's chores, mirroring CI locally"
)]
enum Task {
    /// fmt check, clippy -D warnings, naga validation and the host-shader contract, the whole
    /// test suite, then the kernel and model tests on lavapipe at 512 bits.
    Ci,
    /// naga validation of every shader and the host-shader contract (no GPU).
    Validate,
    /// The bench suite on the shared workloads with the FMA peak; further arguments go to
    /// `cnn-wgpu bench`.
    Bench {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Download VGG16 weights with a progress bar, resumably; saved only if the checksum
    /// matches. Without --url: timm's torchvision VGG16 at a pinned hub revision.
    FetchWeights {
        #[arg(long)]
        url: Option<String>,
        #[arg(long)]
        sha256: Option<String>,
        /// Default: weights/vgg16_tv_in1k.safetensors for the pinned file,
        /// weights/vgg16_notop.safetensors for a given --url.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// The book's cats-vs-dogs split from Microsoft's copy of the Asirra images: resumable,
    /// checksum-verified, split per class in file-number order with unreadable files skipped.
    FetchData {
        #[arg(long)]
        url: Option<String>,
        #[arg(long)]
        sha256: Option<String>,
        #[arg(long, default_value = "data/cats_and_dogs_small")]
        to: PathBuf,
        /// Images per class: TRAIN,VALIDATION,TEST.
        #[arg(long, default_value = "1000,500,500", value_parser = data::Split::parse)]
        split: data::Split,
        /// Keep the downloaded archive after the split is made.
        #[arg(long)]
        keep_download: bool,
    },
    /// A bundle for a GPU machine without Rust or network (the stripped binary, the Vulkan
    /// loader, the workloads, run.sh); there `sh run.sh REPORT_DIR` prints devices, runs
    /// selftest and the bench suite on every kernel family. With --summarize: BENCHMARKS.md's
    /// section for such a report.
    GpuReport {
        #[arg(long, default_value = "target/gpu-report")]
        out: PathBuf,
        /// Bundle this binary instead of building one.
        #[arg(long)]
        binary: Option<PathBuf>,
        /// Leave the Vulkan loader package out (the GPU machine has a loader).
        #[arg(long)]
        no_loader: bool,
        #[arg(long, value_name = "REPORT_DIR")]
        summarize: Option<PathBuf>,
    },
}

/// A download's address and checksum: both given, or neither (the pinned default).
fn url_and_sha(
    url: Option<String>,
    sha: Option<String>,
) -> Result<Option<(String, String)>, String> {
    match (url, sha) {
        (None, None) => Ok(None),
        (Some(u), Some(s)) => Ok(Some((u, s))),
        (Some(_), None) => Err("--url needs --sha256 too: a download is only kept when its checksum matches (weights/README.md lists the weights' checksums)".into()),
        (None, Some(_)) => Err("--sha256 without --url: give the address it belongs to".into()),
    }
}

fn run(task: Task) -> Result<(), String> {
    match task {
        Task::Ci => ci(),
        Task::Validate => validate(),
        Task::Bench { args } => bench(&args),
        Task::FetchWeights { url, sha256, out } => {
            // The pinned file lands under its own name; any other keeps the main job's first
            // choice.
            let (url, sha, default_out) = match url_and_sha(url, sha256)? {
                None => {
                    eprintln!("fetching timm's torchvision VGG16 (vgg16.tv_in1k, pinned revision; torch preprocessing)");
                    (
                        PINNED_URL.to_string(),
                        PINNED_SHA256.to_string(),
                        PINNED_OUT,
                    )
                }
                Some((u, s)) => (u, s, "weights/vgg16_notop.safetensors"),
            };
            let out = out.unwrap_or_else(|| default_out.into());
            fetch::fetch(&url, &sha, &out)
        }
        Task::FetchData {
            url,
            sha256,
            to,
            split,
            keep_download,
        } => {
            let (url, sha256) = url_and_sha(url, sha256)?.unwrap_or_else(|| {
                eprintln!("fetching Microsoft's copy of the Asirra cats and dogs (787 MiB, pinned checksum)");
                (data::PINNED_URL.into(), data::PINNED_SHA256.into())
            });
            data::fetch_data(&data::FetchData {
                url,
                sha256,
                to,
                split,
                keep_download,
            })
        }
        Task::GpuReport {
            out,
            binary,
            no_loader,
            summarize,
        } => match summarize {
            Some(report) => {
                print!("{}", gpu_report::summarize(&report)?);
                Ok(())
            }
            None => gpu_report::bundle(&gpu_report::Options {
                out,
                binary,
                loader: !no_loader,
            })
            .map(|_| ()),
        },
    }
}

fn main() -> ExitCode {
    match run(Task::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The task `args` ask for, or the error they get.
    fn task(args: &[&str]) -> Result<(), String> {
        let t = Task::try_parse_from(std::iter::once("xtask").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        match t {
            // Stop before any download: these tests check the arguments only.
            Task::FetchWeights { url, sha256, .. } | Task::FetchData { url, sha256, .. } => {
                url_and_sha(url, sha256).map(|_| ())
            }
            _ => Ok(()),
        }
    }

    #[test]
    fn a_url_needs_its_checksum_and_the_pin_is_well_formed() {
        for t in ["fetch-weights", "fetch-data"] {
            let e = task(&[t, "--url", "http://127.0.0.1:9/x"]).unwrap_err();
            assert!(e.contains("--sha256"), "{e}");
            let e = task(&[t, "--sha256", PINNED_SHA256]).unwrap_err();
            assert!(e.contains("--url"), "{e}");
            let e = task(&[t, "--bogus"]).unwrap_err();
            assert!(e.contains("--bogus"), "{e}");
            task(&[t]).unwrap();
        }
        let e = task(&["fetch-data", "--split", "1000,500"]).unwrap_err();
        assert!(e.contains("--split") && e.contains("1000,500,500"), "{e}");
        task(&["bench", "--only", "block5", "--json"]).unwrap();
        // The pin names one immutable revision, and its checksum is a sha256.
        assert!(PINNED_URL.contains("/resolve/") && !PINNED_URL.contains("/resolve/main/"));
        assert_eq!(PINNED_SHA256.len(), 64);
        assert!(PINNED_SHA256.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
