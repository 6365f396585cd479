//! `cargo xtask`: the project's chores, mirroring CI locally.
//!
//!   cargo xtask ci         fmt check, clippy -D warnings, naga validation and the host-shader
//!                          contract, the whole test suite,
//!                          then the kernel and model tests on lavapipe at 512 bits
//!   cargo xtask validate   naga validation of every shader and the host-shader contract (no GPU)
//!   cargo xtask bench      the bench suite on the shared workloads, JSON lines with the FMA peak
//!   cargo xtask fetch-weights [--url URL --sha256 HEX] [--out PATH]
//!                          (--out defaults to weights/vgg16_tv_in1k.safetensors for the pinned
//!                          file, weights/vgg16_notop.safetensors for a given --url)
//!                          download weights with a progress bar; saved only if the checksum matches.
//!                          Without --url: timm's torchvision VGG16 at a pinned hub revision.
//!   cargo xtask gpu-report [--out DIR] [--no-loader] [--binary PATH]
//!                          a bundle for a GPU machine without Rust or network (the stripped
//!                          binary, the Vulkan loader, the workloads, run.sh); there
//!                          `sh run.sh REPORT_DIR` prints devices, runs selftest and the bench
//!                          suite on every kernel family
//!   cargo xtask gpu-report --summarize REPORT_DIR
//!                          BENCHMARKS.md's section for that report
//!   cargo xtask fetch-data [--url URL --sha256 HEX] [--to PATH] [--split 1000,500,500]
//!                          [--keep-download]
//!                          the book's cats-vs-dogs split (default data/cats_and_dogs_small) from
//!                          Microsoft's copy of the Asirra images: resumable, checksum-verified.

mod data;
mod fetch;
mod gpu_report;

use std::process::{Command, ExitCode};

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

fn fetch_weights(args: &[String]) -> Result<(), String> {
    let mut url = None;
    let mut sha = None;
    let mut out = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{a} needs a value"))
        };
        match a.as_str() {
            "--url" => url = Some(value()?),
            "--sha256" => sha = Some(value()?),
            "--out" => out = Some(value()?),
            other => return Err(format!("unknown option {other}")),
        }
    }
    // The pinned file lands under its own name; any other keeps the main job's first choice.
    let (url, sha, default_out) = match (url, sha) {
        (None, None) => {
            eprintln!("fetching timm's torchvision VGG16 (vgg16.tv_in1k, pinned revision; torch preprocessing)");
            (PINNED_URL.to_string(), PINNED_SHA256.to_string(), PINNED_OUT)
        }
        (Some(u), Some(s)) => (u, s, "weights/vgg16_notop.safetensors"),
        (Some(_), None) => {
            return Err("--url needs --sha256 too: a download is only kept when its checksum matches (weights/README.md lists them)".into())
        }
        (None, Some(_)) => return Err("--sha256 without --url: give the address it belongs to".into()),
    };
    let out = out.unwrap_or_else(|| default_out.to_string());
    fetch::fetch(&url, &sha, std::path::Path::new(&out))
}

fn fetch_data(args: &[String]) -> Result<(), String> {
    let mut f = data::FetchData {
        url: data::PINNED_URL.into(),
        sha256: data::PINNED_SHA256.into(),
        to: "data/cats_and_dogs_small".into(),
        split: data::Split::BOOK,
        keep_download: false,
    };
    let (mut url, mut sha) = (None, None);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{a} needs a value"))
        };
        match a.as_str() {
            "--url" => url = Some(value()?),
            "--sha256" => sha = Some(value()?),
            "--to" => f.to = value()?.into(),
            "--split" => f.split = data::Split::parse(&value()?)?,
            "--keep-download" => f.keep_download = true,
            other => return Err(format!("unknown option {other}")),
        }
    }
    match (url, sha) {
        (None, None) => eprintln!(
            "fetching Microsoft's copy of the Asirra cats and dogs (787 MiB, pinned checksum)"
        ),
        (Some(u), Some(s)) => (f.url, f.sha256) = (u, s),
        (Some(_), None) => {
            return Err(
                "--url needs --sha256 too: a download is only kept when its checksum matches"
                    .into(),
            )
        }
        (None, Some(_)) => {
            return Err("--sha256 without --url: give the address it belongs to".into())
        }
    }
    data::fetch_data(&f)
}

fn gpu_report(args: &[String]) -> Result<(), String> {
    let mut o = gpu_report::Options {
        out: "target/gpu-report".into(),
        binary: None,
        loader: true,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{a} needs a value"))
        };
        match a.as_str() {
            "--out" => o.out = value()?.into(),
            "--binary" => o.binary = Some(value()?.into()),
            "--no-loader" => o.loader = false,
            "--summarize" => {
                print!(
                    "{}",
                    gpu_report::summarize(std::path::Path::new(&value()?))?
                );
                return Ok(());
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    gpu_report::bundle(&o).map(|_| ())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("validate") => validate(),
        Some("bench") => bench(&args[1..]),
        Some("fetch-weights") => fetch_weights(&args[1..]),
        Some("fetch-data") => fetch_data(&args[1..]),
        Some("gpu-report") => gpu_report(&args[1..]),
        _ => {
            eprintln!("usage: cargo xtask <ci | validate | bench [bench options] | fetch-weights [--url URL --sha256 HEX] [--out PATH] | fetch-data [--url URL --sha256 HEX] [--to PATH] [--split T,V,S] [--keep-download] | gpu-report [--out DIR] [--no-loader] [--binary PATH] | gpu-report --summarize REPORT_DIR>");
            return ExitCode::from(2);
        }
    };
    match result {
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

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_url_needs_its_checksum_and_the_pin_is_well_formed() {
        let e = fetch_weights(&args(&["--url", "http://127.0.0.1:9/x"])).unwrap_err();
        assert!(e.contains("--sha256"), "{e}");
        let e = fetch_weights(&args(&["--sha256", PINNED_SHA256])).unwrap_err();
        assert!(e.contains("--url"), "{e}");
        let e = fetch_weights(&args(&["--bogus"])).unwrap_err();
        assert!(e.contains("--bogus"), "{e}");
        // The pin names one immutable revision, and its checksum is a sha256.
        assert!(PINNED_URL.contains("/resolve/") && !PINNED_URL.contains("/resolve/main/"));
        assert_eq!(PINNED_SHA256.len(), 64);
        assert!(PINNED_SHA256.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
