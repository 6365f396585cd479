//! `cargo xtask gpu-report`: the GPU measurement in one go, for a machine with a GPU but no Rust
//! toolchain and no network, that takes at most 64 MiB of files per run (x86-64 Linux). Builds a
//! bundle (the stripped release binary, which carries the bench workloads, the Vulkan loader
//! packages, the commit, and `run.sh`), which on that machine prints `devices`, runs `selftest`, then
//! `--tune bench --peak --json`, then the bench on every kernel family and tiled configuration,
//! and writes what BENCHMARKS.md needs into one folder. `--summarize DIR` turns that folder
//! into BENCHMARKS.md's table.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What the GPU machine runs: `sh run.sh REPORT_DIR`. Plain POSIX sh: that machine may have
/// nothing else. Seven files land in REPORT_DIR (a device run brings back few).
const RUN_SH: &str = r#"#!/bin/sh
# cnn-wgpu's GPU report (made by `cargo xtask gpu-report`): the adapters, the selftest, then the
# bench suite with its FMA peak on every kernel family and tiled configuration, into one folder.
# Usage: sh run.sh REPORT_DIR        BENCH_ONLY="a b" limits the bench to those workloads.
set -u
here=$(cd "$(dirname "$0")" && pwd)
report=${1:?usage: sh run.sh REPORT_DIR}
mkdir -p "$report" || exit 1
log="$report/log.txt"
: > "$log"
# The Vulkan loader, where the machine has none (unpacked into /: run as root).
if ! ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1'; then
    for f in "$here"/debs/*.deb; do
        [ -e "$f" ] && dpkg -x "$f" / >>"$log" 2>&1
    done
    ldconfig >>"$log" 2>&1
fi
# NVIDIA's driver files sit outside the loader's search path on some machines.
nv=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if [ -z "${VK_DRIVER_FILES:-}${VK_ICD_FILENAMES:-}" ] && [ -e "$nv" ] \
    && ! ls /usr/share/vulkan/icd.d/*nvidia* /etc/vulkan/icd.d/*nvidia* >/dev/null 2>&1; then
    export VK_DRIVER_FILES="$nv"
fi
bin="$here/cnn-wgpu"
export CNN_WGPU_TUNE_CACHE="$report/tune-cache.json"
only=""
[ -n "${BENCH_ONLY:-}" ] && only="--only $BENCH_ONLY"
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "commit: $(cat "$here/COMMIT")"
    echo "host: $(uname -srm)"
} > "$report/meta.txt"
"$bin" devices > "$report/devices.txt" 2>>"$log"
echo "devices exit: $?" >> "$report/meta.txt"
"$bin" devices --json > "$report/devices.json" 2>>"$log"
"$bin" selftest > "$report/selftest.txt" 2>>"$log"
echo "selftest exit: $?" >> "$report/meta.txt"
# The bench suite once per kernel family, every line of every run in bench.jsonl with the run's
# label added as "run" (a device run brings back few files). The default run measures the FMA
# peak and, with --tune, the fastest tiled configuration (or subgroup GEMM) per product.
bench() {
    label=$1
    shift
    run="$report/bench-run.tmp"
    # shellcheck disable=SC2086
    "$@" --json $only > "$run" 2>>"$log"
    echo "bench ($label) exit: $?" >> "$report/meta.txt"
    sed "s/^{/{\"run\":\"$label\",/" "$run" >> "$report/bench.jsonl"
    rm -f "$run"
}
: > "$report/bench.jsonl"
bench default "$bin" --tune bench --peak
# Winograd against the direct convolution run for run, with the choices the default run tuned.
bench "against direct" "$bin" bench --against direct
# The subgroup GEMM where the adapter has one fixed width (its 8-row tiles on a GPU).
bench subgroup env CNN_WGPU_NO_TILED=1 "$bin" bench
bench workgroup-memory env CNN_WGPU_NO_TILED=1 CNN_WGPU_NO_SUBGROUPS=1 "$bin" bench
# Each tiled configuration forced (subgroups off, so that it runs on every adapter).
for c in 128x128 128x64 64x64 64x64-k16; do
    bench "tiled $c" env CNN_WGPU_NO_SUBGROUPS=1 CNN_WGPU_TILED=$c "$bin" bench
done
echo "report in $report"
"#;

/// The most a device run carries.
const CARRY_LIMIT: u64 = 64 << 20;

pub struct Options {
    pub out: PathBuf,
    /// Use this binary instead of building one (the tests use the one cargo built).
    pub binary: Option<PathBuf>,
    /// Leave the Vulkan loader packages out (the machine has a loader, or apt cannot reach its
    /// mirrors).
    pub loader: bool,
}

/// Builds the bundle in `out/bundle`; returns its folder.
pub fn bundle(o: &Options) -> Result<PathBuf, String> {
    let binary = match &o.binary {
        Some(b) => b.clone(),
        None => {
            crate::cargo(&["build", "--release", "--bin", "cnn-wgpu"])?;
            root().join("target/release/cnn-wgpu")
        }
    };
    if !binary.is_file() {
        return Err(format!("{}: no such binary", binary.display()));
    }
    let dir = o.out.join("bundle");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let io = |p: &Path, e: std::io::Error| format!("{}: {e}", p.display());
    std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
    let bin = dir.join("cnn-wgpu");
    std::fs::copy(&binary, &bin).map_err(|e| io(&bin, e))?;
    // Debug info is most of the release binary (it keeps backtraces here); the GPU machine
    // needs none of it.
    match Command::new("strip").arg(&bin).status() {
        Ok(s) if s.success() => {}
        _ => eprintln!(
            "xtask: could not strip {}; the bundle carries it whole",
            bin.display()
        ),
    }
    std::fs::write(dir.join("COMMIT"), commit()).map_err(|e| io(&dir, e))?;
    let run = dir.join("run.sh");
    std::fs::write(&run, RUN_SH).map_err(|e| io(&run, e))?;
    if o.loader {
        loader_packages(&dir.join("debs"))?;
    }
    let size = folder_size(&dir).map_err(|e| io(&dir, e))?;
    if size > CARRY_LIMIT {
        return Err(format!(
            "{} is {} MiB, over the {} MiB a device run carries",
            dir.display(),
            size >> 20,
            CARRY_LIMIT >> 20
        ));
    }
    eprintln!(
        "xtask: bundle {} ({:.1} MiB); on the GPU machine: sh {}/run.sh REPORT_DIR",
        dir.display(),
        size as f64 / f64::from(1 << 20),
        dir.display()
    );
    Ok(dir)
}

/// The project's root (the shared folder is `../shared` from there), wherever xtask runs from.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The commit the bundle is built from, marked `-dirty` where the tree has changes.
fn commit() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let head = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    format!("{head}{}\n", if dirty { "-dirty" } else { "" })
}

/// Downloads the Vulkan loader's Debian package for x86-64 into `to`, as the device machine's
/// README says (apt's own lists in /tmp, nothing installed here).
fn loader_packages(to: &Path) -> Result<(), String> {
    std::fs::create_dir_all(to).map_err(|e| format!("{}: {e}", to.display()))?;
    let lists = std::env::temp_dir().join("xtask-gpu-report-apt");
    std::fs::create_dir_all(lists.join("partial"))
        .map_err(|e| format!("{}: {e}", lists.display()))?;
    let opts = [
        "-oAPT::Architecture=amd64".to_string(),
        "-oAPT::Architectures=amd64".to_string(),
        format!("-oDir::State::Lists={}", lists.display()),
    ];
    for args in [vec!["update", "-qq"], vec!["download", "libvulkan1"]] {
        let status = Command::new("apt-get")
            .args(&opts)
            .args(&args)
            .current_dir(to)
            .status()
            .map_err(|e| format!("apt-get: {e}"))?;
        if !status.success() {
            return Err(format!(
                "apt-get {} failed: the bundle needs the Vulkan loader package, or --no-loader where the GPU machine has one",
                args.join(" ")
            ));
        }
    }
    Ok(())
}

fn folder_size(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let m = e.metadata()?;
        total += if m.is_dir() {
            folder_size(&e.path())?
        } else {
            m.len()
        };
    }
    Ok(total)
}

/// BENCHMARKS.md's section for the adapter of a report folder: its name, driver, date and
/// commit, the selftest's verdict, and per workload the GFLOP/s and share of the FMA peak on
/// each kernel family.
pub fn summarize(report: &Path) -> Result<String, String> {
    let read = |name: &str| {
        std::fs::read_to_string(report.join(name))
            .map_err(|e| format!("{}: {e}", report.join(name).display()))
    };
    let meta = read("meta.txt")?;
    let field = |key: &str| {
        meta.lines()
            .find_map(|l| l.strip_prefix(key).map(str::trim))
            .unwrap_or("?")
            .to_string()
    };
    let selftest = read("selftest.txt")?;
    // "selftest on NAME (BACKEND, driver ...); error shown as ..."
    let header = selftest.lines().next().unwrap_or("");
    let adapter = header
        .strip_prefix("selftest on ")
        .and_then(|h| h.split("; ").next())
        .unwrap_or("unknown adapter");
    let verdict = selftest.lines().last().unwrap_or("no selftest output");
    let mut out = format!(
        "### {adapter}\n\nMeasured {} at commit `{}` with `cargo xtask gpu-report` ({}). Selftest: {verdict}.\n\n",
        field("date:"),
        field("commit:"),
        field("host:"),
    );
    let mut rows: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let runs = [
        ("default", "default families"),
        ("subgroup", "subgroup GEMM"),
        ("workgroup-memory", "workgroup-memory"),
        ("tiled 128x128", "tiled 128x128"),
        ("tiled 128x64", "tiled 128x64"),
        ("tiled 64x64", "tiled 64x64"),
        ("tiled 64x64-k16", "tiled 64x64-k16"),
    ];
    let text = read("bench.jsonl")?;
    let mut lines = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("bench.jsonl: {e}: {line}"))?;
        lines.push(v);
    }
    // The default run's FMA peak: every run's share is of it.
    let peak = lines
        .iter()
        .find(|v| v["workload"] == "peak/fma")
        .and_then(|v| v["gflops"].as_f64());
    for v in &lines {
        let name = v["workload"].as_str().unwrap_or("?").to_string();
        let Some(i) = runs.iter().position(|(r, _)| v["run"] == *r) else {
            continue;
        };
        if name == "peak/fma" {
            continue;
        }
        let gflops = v["gflops"].as_f64().unwrap_or(f64::NAN);
        let share = peak.map_or(String::new(), |p| format!(" ({:.0}%)", 100.0 * gflops / p));
        let cells = rows
            .entry(name)
            .or_insert_with(|| vec![String::new(); runs.len()]);
        cells[i] = format!("{gflops:.1}{share}");
    }
    out.push_str(&format!(
        "FMA peak: {} GFLOP/s. GFLOP/s per workload (share of the peak); the default run tuned each product (`--tune`).\n\n| workload | {} |\n| --- |{}\n",
        peak.map_or("?".to_string(), |p| format!("{p:.0}")),
        runs.iter().map(|(_, h)| *h).collect::<Vec<_>>().join(" | "),
        " ---: |".repeat(runs.len())
    ));
    for (name, cells) in rows {
        out.push_str(&format!("| {name} | {} |\n", cells.join(" | ")));
    }
    out.push_str(&paired_table(&lines));
    Ok(out)
}

/// The `against direct` run's workloads that were timed in pairs: what each ran, its time, the
/// direct convolution's, and the median of the pairs' ratios.
fn paired_table(lines: &[serde_json::Value]) -> String {
    let rows: Vec<String> = lines
        .iter()
        .filter(|v| v["run"] == "against direct" && v["speedup"].is_number())
        .map(|v| {
            let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
            format!(
                "| {} | {} | {:.2} | {:.2} | {:.2}x |\n",
                v["workload"].as_str().unwrap_or("?"),
                v["algorithm"].as_str().unwrap_or("-"),
                f("ms"),
                f("baseline_ms"),
                f("speedup")
            )
        })
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    format!(
        "\nEach 3x3 convolution's tuned algorithm against the direct one, run for run (`bench --against direct`; speed-up = median of the pairs' ratios):\n\n| workload | ran | ms | direct ms | speed-up |\n| --- | --- | ---: | ---: | ---: |\n{}",
        rows.concat()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bundle made from the release binary cargo built, run from a temporary folder on the
    /// adapter here (lavapipe in CI) with one workload, and its report summarised.
    #[test]
    fn the_bundle_runs_from_a_temporary_folder_and_its_report_summarises() {
        let binary = root().join("target/release/cnn-wgpu");
        if !binary.is_file() {
            eprintln!(
                "skipped: no release binary at {} (cargo build --release)",
                binary.display()
            );
            return;
        }
        let adapter = Command::new(&binary)
            .args(["devices", "--json"])
            .output()
            .unwrap();
        if !adapter.status.success() {
            assert!(
                std::env::var_os("CNN_WGPU_REQUIRE_GPU").is_none(),
                "CNN_WGPU_REQUIRE_GPU is set but there is no adapter"
            );
            eprintln!("skipped: no GPU adapter");
            return;
        }
        let tmp = std::env::temp_dir().join(format!("xtask-gpu-report-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let dir = bundle(&Options {
            out: tmp.join("made"),
            binary: Some(binary.clone()),
            loader: false,
        })
        .unwrap();
        for f in ["cnn-wgpu", "run.sh", "COMMIT"] {
            assert!(dir.join(f).is_file(), "{f} in the bundle");
        }
        assert!(
            std::fs::metadata(dir.join("cnn-wgpu")).unwrap().len()
                <= std::fs::metadata(&binary).unwrap().len()
        );
        // One matmul workload of the reference set, which the binary carries.
        let only = "dense_head";
        // Moved elsewhere, as it would be on the GPU machine.
        let moved = tmp.join("elsewhere");
        std::fs::rename(&dir, &moved).unwrap();
        let report = tmp.join("report");
        let run = Command::new("sh")
            .arg(moved.join("run.sh"))
            .arg(&report)
            .env("BENCH_ONLY", only)
            .env_remove("CNN_WGPU_SHARED")
            .current_dir(&tmp)
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        let meta = std::fs::read_to_string(report.join("meta.txt")).unwrap();
        for line in [
            "devices exit: 0",
            "selftest exit: 0",
            "bench (default) exit: 0",
            "bench (against direct) exit: 0",
            "bench (subgroup) exit: 0",
            "bench (workgroup-memory) exit: 0",
            "bench (tiled 128x128) exit: 0",
            "bench (tiled 64x64-k16) exit: 0",
        ] {
            assert!(meta.contains(line), "{meta}");
        }
        assert!(
            meta.contains(&format!("commit: {}", commit().trim())),
            "{meta}"
        );
        let files = std::fs::read_dir(&report).unwrap().count();
        assert!(
            files <= 8,
            "a device run brings back 8 files at most, not {files}"
        );
        let md = summarize(&report).unwrap();
        assert!(
            md.contains("Selftest: ") && md.contains("all passed"),
            "{md}"
        );
        let row = format!("| matmul/{only} | ");
        assert!(md.contains("FMA peak: ") && md.contains(&row), "{md}");
        // Every run measured the workload.
        let row = md.lines().find(|l| l.starts_with(&row)).unwrap();
        assert_eq!(row.matches('%').count(), 7, "{row}");
        let _ = std::fs::remove_dir_all(&tmp);
    }

    /// The summary's paired table lists the `against direct` run's paired lines only, with
    /// their algorithm, both times and the speed-up.
    #[test]
    fn the_summary_lists_the_paired_workloads() {
        let tmp = std::env::temp_dir().join(format!("xtask-paired-{}", std::process::id()));
        std::fs::create_dir_all(&tmp).unwrap();
        std::fs::write(tmp.join("meta.txt"), "date: d\ncommit: c\nhost: h\n").unwrap();
        std::fs::write(
            tmp.join("selftest.txt"),
            "selftest on Some GPU (Vulkan, driver 1); x\nall passed\n",
        )
        .unwrap();
        let jsonl = [
            r#"{"run":"default","workload":"peak/fma","gflops":1000.0}"#,
            r#"{"run":"default","workload":"conv2d_forward/b3","gflops":500.0,"ms":2.0}"#,
            r#"{"run":"against direct","workload":"conv2d_forward/b3","gflops":520.0,"ms":1.5,"algorithm":"f4x4","baseline":"direct","baseline_ms":3.25,"speedup":2.125}"#,
            r#"{"run":"against direct","workload":"matmul/m","gflops":300.0,"ms":1.0}"#,
        ];
        std::fs::write(tmp.join("bench.jsonl"), jsonl.join("\n")).unwrap();
        let md = summarize(&tmp).unwrap();
        let _ = std::fs::remove_dir_all(&tmp);
        assert!(
            md.contains("| conv2d_forward/b3 | f4x4 | 1.50 | 3.25 | 2.12x |"),
            "{md}"
        );
        assert!(!md.contains("| matmul/m | -"), "{md}");
        // The paired run is not a kernel-family column of the GFLOP/s table.
        assert!(md.contains("| conv2d_forward/b3 | 500.0 (50%) |"), "{md}");
    }
}
