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
    tint()?;
    cargo(&["test", "--workspace", "--release"])?;
    webgpu_limits()?;
    gl_backend()?;
    lavapipe_widths()
}

/// A second WGSL compiler: Tint (Chrome's, inside Dawn, from the npm package `webgpu` pinned in
/// `xtask/tint/package-lock.json`) compiles every module exactly as the engine ships it
/// (`cnn-wgpu shaders`), on Dawn's null backend, so no GPU is needed. naga accepts modules that
/// the WGSL spec rejects (uniformity), and a browser or a GPU compiler reads the spec. Needs
/// Node; skipped, saying so, where there is none, unless CI (or `CNN_WGPU_REQUIRE_TINT`) is set.
fn tint() -> Result<(), String> {
    let dir = gpu_report::root().join("xtask/tint");
    let required = std::env::var_os("CI").is_some_and(|v| !v.is_empty())
        || std::env::var_os("CNN_WGPU_REQUIRE_TINT").is_some_and(|v| !v.is_empty() && v != "0");
    let node_there = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !node_there {
        if required {
            return Err(
                "the Tint check needs Node (node, npm): `apt-get install -y nodejs npm`".into(),
            );
        }
        eprintln!("xtask: skipped the Tint check: no `node` on this machine (apt-get install -y nodejs npm)");
        return Ok(());
    }
    let run = |program: &str, args: &[&str]| -> Result<(), String> {
        eprintln!("xtask: {program} {}", args.join(" "));
        let status = Command::new(program)
            .args(args)
            .current_dir(&dir)
            .status()
            .map_err(|e| format!("cannot run {program}: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("`{program} {}` failed ({status})", args.join(" ")))
        }
    };
    if !dir.join("node_modules/webgpu").is_dir() {
        run("npm", &["ci", "--no-audit", "--no-fund"])?;
    }
    let out = gpu_report::root().join("target/wgsl");
    let out = out
        .to_str()
        .ok_or("the target folder's path is not UTF-8")?;
    cargo(&["run", "--quiet", "--release", "--", "shaders", "--out", out])?;
    run("node", &["check.mjs", out])
}

/// The kernel and model test binaries again on lavapipe built for 512-bit vectors, whose
/// 16-lane subgroups stand for the real GPUs' 32 and 64 (the kernel choices made for other
/// subgroup widths are tested there), and for 128-bit vectors, whose 4-lane subgroups are too
/// narrow for the subgroup GEMM (8 to 64 lanes), so the tiled and workgroup-memory kernels run
/// without it, as on an adapter without subgroups. `CNN_WGPU_EXPECT_KERNELS_512` and
/// `CNN_WGPU_EXPECT_KERNELS_128` state the families that must run at each width (CI sets
/// them). Skipped, saying so, where lavapipe is not installed, unless `CNN_WGPU_REQUIRE_GPU` is
/// set.
fn lavapipe_widths() -> Result<(), String> {
    for bits in ["512", "128"] {
        lavapipe_at(bits)?;
    }
    Ok(())
}

fn lavapipe_at(bits: &str) -> Result<(), String> {
    let expect = format!("CNN_WGPU_EXPECT_KERNELS_{bits}");
    let on_lavapipe = |c: &mut Command| {
        c.env("LP_NATIVE_VECTOR_WIDTH", bits)
            .env("CNN_WGPU_ADAPTER", "llvmpipe");
        expect_families(c, &expect);
    };
    if !device_opens(&format!("lavapipe at {bits} bits"), &on_lavapipe)? {
        return Ok(());
    }
    eprintln!("xtask: the kernel and model tests on lavapipe at {bits} bits");
    kernel_tests(&on_lavapipe)
}

/// The families a pass expects (`CNN_WGPU_EXPECT_KERNELS` for the tests) from `var`, where CI
/// sets it; what is expected of the default device says nothing of another width or backend.
fn expect_families(c: &mut Command, var: &str) {
    match std::env::var(var) {
        Ok(families) => c.env("CNN_WGPU_EXPECT_KERNELS", families),
        Err(_) => c.env_remove("CNN_WGPU_EXPECT_KERNELS"),
    };
}

/// Whether `cnn-wgpu devices` opens an adapter in the environment `env` sets; where it does
/// not, the pass on `what` is skipped, saying so, or fails where `CNN_WGPU_REQUIRE_GPU` is set.
fn device_opens(what: &str, env: &dyn Fn(&mut Command)) -> Result<bool, String> {
    let cargo_bin = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut probe = Command::new(&cargo_bin);
    probe.args(["run", "--quiet", "--release", "--", "devices"]);
    env(&mut probe);
    let found = probe
        .output()
        .map_err(|e| format!("cannot run {cargo_bin}: {e}"))?;
    if found.status.success() {
        return Ok(true);
    }
    let why = String::from_utf8_lossy(&found.stderr).trim().to_string();
    if std::env::var_os("CNN_WGPU_REQUIRE_GPU").is_some() {
        return Err(format!(
            "CNN_WGPU_REQUIRE_GPU is set but {what} did not open: {why}"
        ));
    }
    eprintln!("xtask: skipped the pass on {what}: it did not open ({why})");
    Ok(false)
}

/// The kernel and model test binaries with the environment `env` sets.
fn kernel_tests(env: &dyn Fn(&mut Command)) -> Result<(), String> {
    let mut args = vec!["test", "--release"];
    for t in KERNEL_TESTS {
        args.extend(["--test", t]);
    }
    cargo_with(&args, env)
}

/// The test binaries that check kernels and models on a device, run again at each width and
/// under WebGPU's limits.
const KERNEL_TESTS: [&str; 15] = [
    "activation",
    "conv",
    "dense",
    "dropout",
    "kept_kernels",
    "loss",
    "manifest",
    "model",
    "optim",
    "pack",
    "pool",
    "runtime",
    "tiled",
    "tune",
    "winograd",
];

/// A second backend: `selftest` and the kernel and model tests on wgpu's GL backend (Mesa's
/// llvmpipe through EGL: OpenGL 4.5, naga's GLSL, no subgroups, so the tiled and the
/// workgroup-memory kernels), which reaches the shaders through another translator and another
/// driver than Vulkan. `CNN_WGPU_EXPECT_KERNELS_GL` states its families (CI sets it). Skipped,
/// saying so, where no GL adapter opens, unless `CNN_WGPU_REQUIRE_GPU` is set.
fn gl_backend() -> Result<(), String> {
    let on_gl = |c: &mut Command| {
        c.env("CNN_WGPU_BACKEND", "gl");
        expect_families(c, "CNN_WGPU_EXPECT_KERNELS_GL");
    };
    if !device_opens("wgpu's GL backend", &on_gl)? {
        return Ok(());
    }
    eprintln!("xtask: selftest, the kernel and the model tests on wgpu's GL backend");
    cargo_with(&["run", "--quiet", "--release", "--", "selftest"], on_gl)?;
    kernel_tests(&on_gl)
}

/// `selftest` and the kernel and model tests on a device opened with WebGPU's default limits
/// (`CNN_WGPU_WEBGPU_LIMITS=1`: 16 KiB of workgroup memory, 256 invocations, 128 MiB per
/// storage binding, 8 storage buffers per stage), as a browser would give.
fn webgpu_limits() -> Result<(), String> {
    let env = |c: &mut Command| {
        c.env("CNN_WGPU_WEBGPU_LIMITS", "1");
    };
    eprintln!("xtask: selftest, the kernel and the model tests under WebGPU's default limits");
    cargo_with(&["run", "--quiet", "--release", "--", "selftest"], env)?;
    kernel_tests(&env)
}

fn validate() -> Result<(), String> {
    cargo(&[
        "test",
        "--release",
        "--test",
        "shaders_validate",
        "--test",
        "contract",
        "--test",
        "translate",
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
    /// fmt check, clippy -D warnings, naga validation and translation and the host-shader
    /// contract, Tint's compile of every module, the whole test suite, selftest and the kernel
    /// and model tests under WebGPU's default limits, on the GL backend, then on lavapipe at
    /// 512 and 128 bits.
    Ci,
    /// naga validation of every shader, its translation to SPIR-V, GLSL, MSL and HLSL (with
    /// spirv-val and glslangValidator where installed) and the host-shader contract (no GPU).
    Validate,
    /// Tint (Chrome's WGSL compiler, from the npm package `webgpu`) compiles every module as
    /// the engine ships it, on Dawn's null backend (no GPU; needs Node).
    Tint,
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
        Task::Tint => tint(),
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
