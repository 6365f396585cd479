//! The shader-throughput bench suite: the reference workloads (built in, the shared folder's
//! `bench/workloads.json`) or a file's, timed as
//! the median wall time of whole submissions after warm-up, reported as JSON lines or a table.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::gpu::{Arg, ConvAlgo, Gpu, Kernel, ShaderId};
use crate::ops::conv::{self, Conv2dSpec};
use crate::ops::Padding;
use crate::ops::{dense, OpError};
use crate::tensor::Tensor;

/// Errors of the bench layer.
#[derive(Debug, Error)]
pub enum BenchError {
    #[error("cannot read workloads file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("workloads file {path} is not valid: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("--only {0:?} matches no workload; names look like conv2d_forward/block1_conv2 or block1_conv2")]
    NoMatch(String),
    #[error("{0}")]
    Invalid(String),
    #[error("workload {workload}: {source}")]
    Workload {
        workload: String,
        #[source]
        source: Box<BenchError>,
    },
    #[error(transparent)]
    Op(#[from] OpError),
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    #[error(transparent)]
    Gpu(#[from] crate::gpu::GpuError),
}

impl BenchError {
    /// This error, said of workload `id` (`conv2d_forward/block1_conv2`).
    fn in_workload(self, id: &str) -> Self {
        Self::Workload {
            workload: id.to_string(),
            source: Box::new(self),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
pub struct ConvWorkload {
    pub name: String,
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub cin: usize,
    pub cout: usize,
    #[serde(default = "default_pad")]
    pub pad: Padding,
    #[serde(default = "default_k")]
    pub k: usize,
    #[serde(default = "default_stride")]
    pub stride: usize,
}

fn default_pad() -> Padding {
    Padding::Same
}
fn default_k() -> usize {
    3
}
fn default_stride() -> usize {
    1
}

#[derive(Clone, Debug, Deserialize)]
pub struct MatmulWorkload {
    pub name: String,
    pub m: usize,
    pub n: usize,
    pub k: usize,
}

/// The sections of the workloads file this engine runs. Unknown sections are kept aside so the
/// report can say what it skipped.
#[derive(Clone, Debug, Deserialize)]
pub struct Workloads {
    #[serde(default)]
    pub conv2d_forward: Vec<ConvWorkload>,
    #[serde(default)]
    pub conv2d_backward: Vec<ConvWorkload>,
    #[serde(default)]
    pub matmul: Vec<MatmulWorkload>,
    #[serde(default)]
    pub network: Vec<serde_json::Value>,
}

/// The reference workloads, carried inside the binary so that `bench` runs from any folder.
/// The file is the shared folder's `bench/workloads.json`, byte for byte; a test
/// (`tests/anywhere.rs`) fails where the two drift apart.
pub const REFERENCE_WORKLOADS: &str = include_str!("../benches/workloads.json");

/// What `bench` says it reads when no `--workloads` file is given.
pub const REFERENCE_WORKLOADS_NAME: &str = "<built-in reference workloads>";

impl Workloads {
    pub fn load(path: &Path) -> Result<Self, BenchError> {
        let text = std::fs::read_to_string(path).map_err(|source| BenchError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// The reference workloads built into the binary ([`REFERENCE_WORKLOADS`]).
    pub fn reference() -> Self {
        Self::parse(REFERENCE_WORKLOADS, Path::new(REFERENCE_WORKLOADS_NAME))
            .expect("the built-in workloads parse (tests/anywhere.rs checks them)")
    }

    /// Parses and checks a workloads file's `text`; errors name `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Self, BenchError> {
        let w: Self = serde_json::from_str(text).map_err(|source| BenchError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        w.check().map_err(|reason| {
            BenchError::Invalid(format!("workloads file {}: {reason}", path.display()))
        })?;
        Ok(w)
    }

    /// Every size of every workload is at least 1 (an empty tensor times nothing).
    fn check(&self) -> Result<(), String> {
        let sizes = |section: &str, name: &str, fields: &[(&str, usize)]| match fields
            .iter()
            .find(|(_, v)| *v == 0)
        {
            Some((field, _)) => Err(format!(
                "workload {section}/{name} has {field} 0; every size must be at least 1"
            )),
            None => Ok(()),
        };
        for (section, convs) in [
            ("conv2d_forward", &self.conv2d_forward),
            ("conv2d_backward", &self.conv2d_backward),
        ] {
            for c in convs {
                let fields = [
                    ("n", c.n),
                    ("h", c.h),
                    ("w", c.w),
                    ("cin", c.cin),
                    ("cout", c.cout),
                    ("k", c.k),
                    ("stride", c.stride),
                ];
                sizes(section, &c.name, &fields)?;
            }
        }
        for m in &self.matmul {
            sizes("matmul", &m.name, &[("m", m.m), ("n", m.n), ("k", m.k)])?;
        }
        for net in &self.network {
            let name = net.get("name").and_then(|v| v.as_str()).unwrap_or("?");
            for field in ["n", "h", "w"] {
                if net.get(field).and_then(|v| v.as_u64()) == Some(0) {
                    sizes("network", name, &[(field, 0)])?;
                }
            }
        }
        Ok(())
    }
}

/// One bench result, in the JSON-lines format the workloads file describes.
#[derive(Clone, Debug, Serialize)]
pub struct BenchLine {
    pub engine: String,
    pub adapter: String,
    pub workload: String,
    pub n: usize,
    pub ms: f64,
    pub gflops: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_fraction: Option<f64>,
    pub gpu_bytes: u64,
    pub runs: usize,
    /// The algorithm a convolution workload ran (its input gradient's, for a backward one):
    /// direct, f2x2, f4x4 or f6x6. GFLOP/s always counts the direct convolution's FLOPs, so
    /// Winograd's may pass the adapter's FMA peak.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<String>,
    /// The GEMM kernels a convolution or matmul workload ran: family and tile or tiled
    /// configuration per product (`subgroup-8 48x64`, `tiled 128x128`, `dx ..., dw ...`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gemm: Option<String>,
    /// With `--against`: the baseline conv algorithm each run alternated with (for a
    /// convolution workload, the one it resolved to for that layer), its median time, and the
    /// speed-up over it (the median of the pairs' ratios, [`time_paired`]). `gpu_bytes` is
    /// then both variants' peak together.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speedup: Option<f64>,
    /// With `--peak-paired`: `peak_fraction` is the median of the pairs' own shares of the
    /// peak kernel's speed ([`BenchOptions::peak_paired`]); `gpu_bytes` then includes the
    /// peak kernel's output, 4 bytes per invocation of its run.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub peak_paired: bool,
}

/// Untimed runs go on past the `warmup` count until this much time has passed: a millisecond
/// kernel's first runs after a big set-up are slow while the cores' clocks and caches come back
/// (how much is in BENCHMARKS.md's method paragraph), which a fixed two runs did not cover.
const MIN_WARMUP: std::time::Duration = std::time::Duration::from_millis(300);

/// Timed runs go on past the asked-for count until they span this long, so that the median of a
/// millisecond kernel is not at the mercy of one burst of load on a shared machine.
const MIN_TIMED: std::time::Duration = std::time::Duration::from_millis(500);
const MAX_RUNS: usize = 1000;

/// A median time and how many runs it was taken over.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub ms: f64,
    pub runs: usize,
}

/// Times `f` (which records work) as whole flushed-and-synced submissions: `warmup` untimed runs
/// (more while they take under 300 ms together), then the median of at least `runs` timed ones
/// (more, up to 1000, while they take under 500 ms together).
pub fn time_median(
    gpu: &Gpu,
    warmup: usize,
    runs: usize,
    mut f: impl FnMut() -> Result<(), BenchError>,
) -> Result<Timing, BenchError> {
    if gpu.simulated() {
        // Nothing runs there; one call builds every pipeline the work asks for.
        f()?;
        return Ok(Timing { ms: 0.0, runs: 1 });
    }
    let start = Instant::now();
    let mut done = 0;
    while done < warmup || (done > 0 && start.elapsed() < MIN_WARMUP) {
        f()?;
        gpu.sync()?;
        done += 1;
    }
    let mut times = Vec::with_capacity(runs);
    let start = Instant::now();
    while times.len() < runs.max(1) || (start.elapsed() < MIN_TIMED && times.len() < MAX_RUNS) {
        times.push(timed_run(gpu, &mut f)?);
    }
    Ok(Timing {
        ms: median(&mut times),
        runs: times.len(),
    })
}

/// One flushed-and-synced submission of `f`, in milliseconds.
fn timed_run(gpu: &Gpu, mut f: impl FnMut() -> Result<(), BenchError>) -> Result<f64, BenchError> {
    let t = Instant::now();
    f()?;
    gpu.sync()?;
    Ok(t.elapsed().as_secs_f64() * 1e3)
}

/// The median (the upper one of an even count); `v` is sorted in place.
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// A workload's timing and its baseline's, taken in alternation by [`time_paired`].
#[derive(Clone, Copy, Debug)]
pub struct Paired {
    pub main: Timing,
    pub baseline: Timing,
    /// The median over pairs of (baseline ms / main ms): above 1 where the main variant is
    /// the faster.
    pub speedup: f64,
}

/// Times `f(false)` (the main variant) against `f(true)` (the baseline) run for run: each pair
/// runs both back to back, so that a shared machine's load, which drifts over seconds, slows
/// both alike, and the speed-up is the median of the pairs' ratios (BENCHMARKS.md, "Paired
/// timing", shows how far apart separate runs fall there). The order within a pair
/// alternates, so that neither variant always runs on the caches the other left. Warm-up:
/// each variant `warmup` times, more while they take under 300 ms together; then at least
/// `runs` pairs, more (up to 1000) while they take under twice 500 ms together.
pub fn time_paired(
    gpu: &Gpu,
    warmup: usize,
    runs: usize,
    mut f: impl FnMut(bool) -> Result<(), BenchError>,
) -> Result<Paired, BenchError> {
    if gpu.simulated() {
        f(false)?;
        f(true)?;
        let none = Timing { ms: 0.0, runs: 1 };
        return Ok(Paired {
            main: none,
            baseline: none,
            speedup: 1.0,
        });
    }
    let start = Instant::now();
    let mut done = 0;
    while done < warmup || (done > 0 && start.elapsed() < MIN_WARMUP) {
        for baseline in [false, true] {
            f(baseline)?;
            gpu.sync()?;
        }
        done += 1;
    }
    let (mut main, mut base) = (Vec::new(), Vec::new());
    let start = Instant::now();
    while main.len() < runs.max(1) || (start.elapsed() < 2 * MIN_TIMED && main.len() < MAX_RUNS) {
        let order = if main.len() % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for baseline in order {
            let ms = timed_run(gpu, || f(baseline))?;
            if baseline { &mut base } else { &mut main }.push(ms);
        }
    }
    let speedup = paired_speedup(&main, &base);
    Ok(Paired {
        main: Timing {
            ms: median(&mut main),
            runs: main.len(),
        },
        baseline: Timing {
            ms: median(&mut base),
            runs: base.len(),
        },
        speedup,
    })
}

/// The median of `base[i] / main[i]` over the pairs: one pair's ratio is taken under one
/// moment's load, so a slow spell moves both of its times and not the ratio.
pub fn paired_speedup(main: &[f64], base: &[f64]) -> f64 {
    assert_eq!(main.len(), base.len(), "timings come in pairs");
    let mut ratios: Vec<f64> = main.iter().zip(base).map(|(m, b)| b / m).collect();
    median(&mut ratios)
}

/// What a workload's runs are paired with ([`time_paired`]).
#[derive(Clone, Copy, Debug)]
enum Pair {
    /// The same work with the device's conv algorithm set to this one (`--against`).
    Algo(ConvAlgo),
    /// A run of the FMA peak kernel unrolled `unroll` times, sized to last about
    /// [`PEAK_PAIR_SECONDS`] at `gflops` (`--peak-paired`).
    Peak { unroll: u32, gflops: f64 },
}

/// How long the peak kernel's run beside each workload run lasts: long enough that its
/// dispatch costs nothing measurable, short enough not to double a millisecond workload's time.
const PEAK_PAIR_SECONDS: f64 = 0.02;

/// How a workload was timed: alone, in pairs against a baseline conv algorithm, or in pairs
/// with a peak kernel run of these FLOPs.
enum Measured {
    Alone(Timing),
    Paired(Paired, ConvAlgo),
    PeakPaired(Paired, f64),
}

impl Measured {
    fn main(&self) -> Timing {
        match self {
            Measured::Alone(t) => *t,
            Measured::Paired(p, _) | Measured::PeakPaired(p, _) => p.main,
        }
    }
}

/// Times `f` alone, or in pairs ([`time_paired`]) with what `pair` names: the device's conv
/// algorithm set to the current one, then to the baseline (restored afterwards, also on an
/// error), or `f` then a peak kernel run.
fn measure(
    gpu: &Gpu,
    pair: Option<Pair>,
    warmup: usize,
    runs: usize,
    mut f: impl FnMut() -> Result<(), BenchError>,
) -> Result<Measured, BenchError> {
    match pair {
        None => Ok(Measured::Alone(time_median(gpu, warmup, runs, f)?)),
        Some(Pair::Algo(base)) => {
            let main = gpu.conv_algo();
            let paired = gpu.with_conv_algo(main, || {
                time_paired(gpu, warmup, runs, |baseline| {
                    gpu.set_conv_algo(if baseline { base } else { main });
                    f()
                })
            })?;
            Ok(Measured::Paired(paired, base))
        }
        Some(Pair::Peak { unroll, gflops }) => {
            let peak = PeakRun::lasting(gpu, unroll, gflops, PEAK_PAIR_SECONDS)?;
            let paired = time_paired(gpu, warmup, runs, |baseline| {
                if baseline {
                    peak.record(gpu);
                    Ok(())
                } else {
                    f()
                }
            })?;
            Ok(Measured::PeakPaired(paired, peak.flops()))
        }
    }
}

/// One kernel workload, when `--only` selects it (None otherwise): its setup, then `run` timed
/// on it as [`measure`] does (paired as [`BenchOptions::pair`] says for a convolution where
/// `conv`), and the allocator peak of setup and runs together.
fn time_kernel<S>(
    gpu: &Gpu,
    opts: &BenchOptions,
    id: &str,
    conv: bool,
    setup: impl FnOnce() -> Result<S, BenchError>,
    run: impl Fn(&S) -> Result<(), crate::ops::OpError>,
) -> Result<Option<(S, Measured, u64)>, BenchError> {
    if !selected(opts, id) {
        return Ok(None);
    }
    fresh_accounting(gpu);
    let s = setup()?;
    let t = measure(gpu, opts.pair(conv), opts.warmup, opts.runs, || {
        Ok(run(&s)?)
    })?;
    Ok(Some((s, t, gpu.pool_stats().peak)))
}

fn seeded(n: usize, seed: u32) -> Vec<f32> {
    // Cheap deterministic data; the values only need to be finite and varied.
    (0..n)
        .map(|i| {
            let h = (i as u32)
                .wrapping_mul(2_654_435_761)
                .wrapping_add(seed.wrapping_mul(97));
            (h >> 8) as f32 / 16_777_216.0 - 0.5
        })
        .collect()
}

/// A tensor of `shape` holding [`seeded`] values, refused before any host memory is taken
/// where it would pass the adapter's largest buffer.
fn seeded_tensor(gpu: &Gpu, shape: &[usize], seed: u32) -> Result<Tensor, BenchError> {
    let shape = crate::Shape::from(shape);
    crate::tensor::check_size(gpu, "bench", &shape)?;
    if gpu.simulated() {
        // Planning only (`crate::manifest`): no values are read.
        return Ok(Tensor::uninit(gpu, shape)?);
    }
    let values = seeded(shape.numel(), seed);
    Ok(Tensor::from_slice(gpu, shape, &values)?)
}

/// Inputs of one conv workload on the device.
pub struct ConvSetup {
    pub x: Tensor,
    pub w: Tensor,
    pub b: Tensor,
    pub dy: Tensor,
    pub spec: Conv2dSpec,
    /// FLOPs of one forward pass (a multiply-add counts 2).
    pub forward_flops: f64,
}

impl ConvWorkload {
    pub fn setup(&self, gpu: &Gpu) -> Result<ConvSetup, BenchError> {
        let spec = Conv2dSpec::new(self.stride, self.pad, false);
        let xs = [self.n, self.h, self.w, self.cin];
        let ws = [self.k, self.k, self.cin, self.cout];
        let ys = conv::conv2d_output_shape(&xs, &ws, &spec).ok_or_else(|| OpError::Invalid {
            op: "bench",
            reason: format!("workload {} does not fit its kernel", self.name),
        })?;
        let x = seeded_tensor(gpu, &xs, 1)?;
        let w = seeded_tensor(gpu, &ws, 2)?;
        let b = seeded_tensor(gpu, &[self.cout], 3)?;
        let dy = seeded_tensor(gpu, &ys, 4)?;
        let forward_flops =
            2.0 * (ys.iter().product::<usize>() * self.k * self.k * self.cin) as f64;
        Ok(ConvSetup {
            x,
            w,
            b,
            dy,
            spec,
            forward_flops,
        })
    }
}

/// Inputs of one matmul workload on the device.
pub struct MatmulSetup {
    pub a: Tensor,
    pub b: Tensor,
    pub flops: f64,
}

impl MatmulWorkload {
    pub fn setup(&self, gpu: &Gpu) -> Result<MatmulSetup, BenchError> {
        Ok(MatmulSetup {
            a: seeded_tensor(gpu, &[self.m, self.k], 5)?,
            b: seeded_tensor(gpu, &[self.k, self.n], 6)?,
            flops: 2.0 * (self.m * self.n * self.k) as f64,
        })
    }
}

/// Options of one bench run.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Substrings of "section/name"; empty runs everything.
    pub only: Vec<String>,
    pub warmup: usize,
    pub runs: usize,
    /// The adapter's measured FMA peak in GFLOP/s, for `peak_fraction`.
    pub peak_gflops: Option<f64>,
    /// Time the convolution and network workloads in pairs against this conv algorithm
    /// ([`time_paired`]); the matmul workloads, which no conv algorithm changes, alone.
    pub against: Option<ConvAlgo>,
    /// Pair every workload's runs with a short run of the peak kernel at this unrolling (the
    /// best one [`measure_peak_best`] found, at `peak_gflops`), so that `peak_fraction` is the
    /// median of the pairs' own shares: each taken under one moment's load. Takes precedence
    /// over `against`.
    pub peak_paired: Option<u32>,
}

impl BenchOptions {
    /// What a workload's runs are paired with; `conv`: a conv algorithm changes it.
    fn pair(&self, conv: bool) -> Option<Pair> {
        match (self.peak_paired, self.peak_gflops) {
            (Some(unroll), Some(gflops)) => Some(Pair::Peak { unroll, gflops }),
            _ => self.against.filter(|_| conv).map(Pair::Algo),
        }
    }
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            only: Vec::new(),
            warmup: 2,
            runs: 5,
            peak_gflops: None,
            against: None,
            peak_paired: None,
        }
    }
}

/// True when an `--only` filter selects the data-pipeline section.
pub fn is_pipeline_filter(o: &str) -> bool {
    !o.is_empty() && ("pipeline/decode_resize_augment".contains(o) || o.contains("pipeline"))
}

fn selected(opts: &BenchOptions, id: &str) -> bool {
    opts.only.is_empty() || opts.only.iter().any(|o| id.contains(o.as_str()))
}

/// Runs the kernel sections; `report` receives each line as soon as it is measured.
pub fn run(
    gpu: &Gpu,
    w: &Workloads,
    opts: &BenchOptions,
    mut report: impl FnMut(&BenchLine),
) -> Result<Vec<BenchLine>, BenchError> {
    let mut lines = Vec::new();
    let engine = format!("cnn-wgpu {}", env!("CARGO_PKG_VERSION"));
    let mut push = |workload: String,
                    n: usize,
                    m: Measured,
                    flops: f64,
                    gpu_bytes: u64,
                    (algorithm, baseline): (Option<ConvAlgo>, Option<ConvAlgo>),
                    gemm: Option<String>| {
        let t = m.main();
        let gflops = flops / (t.ms * 1e6);
        let paired = match m {
            Measured::Paired(p, against) => Some((p, baseline.unwrap_or(against))),
            _ => None,
        };
        // Paired with the peak kernel: a pair's share is (flops / its ms) over (peak FLOPs /
        // the peak run's ms), so the median share is flops / peak FLOPs times the median ratio.
        let peak_fraction = match m {
            Measured::PeakPaired(p, peak_flops) => Some(flops / peak_flops * p.speedup),
            _ => opts.peak_gflops.map(|p| gflops / p),
        };
        let line = BenchLine {
            engine: engine.clone(),
            adapter: gpu.adapter_name().to_string(),
            workload,
            n,
            ms: t.ms,
            gflops,
            peak_fraction,
            peak_paired: matches!(m, Measured::PeakPaired(..)),
            gpu_bytes,
            runs: t.runs,
            algorithm: algorithm.map(|a| a.name().to_string()),
            gemm,
            baseline: paired.map(|(_, a)| a.name().to_string()),
            baseline_ms: paired.map(|(p, _)| p.baseline.ms),
            speedup: paired.map(|(p, _)| p.speedup),
        };
        report(&line);
        lines.push(line);
    };
    let mut any = false;
    for c in &w.conv2d_forward {
        let id = format!("conv2d_forward/{}", c.name);
        let timed = time_kernel(
            gpu,
            opts,
            &id,
            true,
            || c.setup(gpu),
            |s| conv::conv2d_forward(gpu, &s.x, &s.w, &s.b, &s.spec).map(drop),
        )
        .map_err(|e| e.in_workload(&id))?;
        if let Some((s, t, bytes)) = timed {
            any = true;
            let algos = conv_algorithms(gpu, opts, &s, false)?;
            let gemm = conv::conv2d_gemm(gpu, &s.x, &s.w, &s.spec, false)?;
            push(id, c.n, t, s.forward_flops, bytes, algos, Some(gemm));
        }
    }
    for c in &w.conv2d_backward {
        let id = format!("conv2d_backward/{}", c.name);
        let timed = time_kernel(
            gpu,
            opts,
            &id,
            true,
            || c.setup(gpu),
            |s| conv::conv2d_backward(gpu, &s.x, &s.w, &s.dy, &s.spec, true).map(drop),
        )
        .map_err(|e| e.in_workload(&id))?;
        if let Some((s, t, bytes)) = timed {
            any = true;
            // Input gradient + weight gradient: two products the size of the forward.
            let algos = conv_algorithms(gpu, opts, &s, true)?;
            let gemm = conv::conv2d_gemm(gpu, &s.x, &s.w, &s.spec, true)?;
            push(id, c.n, t, 2.0 * s.forward_flops, bytes, algos, Some(gemm));
        }
    }
    for m in &w.matmul {
        let id = format!("matmul/{}", m.name);
        let timed = time_kernel(
            gpu,
            opts,
            &id,
            false,
            || m.setup(gpu),
            |s| dense::matmul(gpu, &s.a, &s.b).map(drop),
        )
        .map_err(|e| e.in_workload(&id))?;
        if let Some((s, t, bytes)) = timed {
            any = true;
            let (&[rows, k], &[_, n]) = (s.a.dims(), s.b.dims()) else {
                unreachable!("matmul workloads are 2-D")
            };
            let gemm = dense::matmul_gemm(gpu, rows, k, n);
            push(id, m.n, t, s.flops, bytes, (None, None), Some(gemm));
        }
    }
    for net in &w.network {
        let Some(name) = net.get("name").and_then(|v| v.as_str()) else {
            continue;
        };
        let id = format!("network/{name}");
        if !NETWORK_WORKLOADS.contains(&name) || !selected(opts, &id) {
            continue;
        }
        any = true;
        fresh_accounting(gpu);
        let dim = |k: &str, d: usize| {
            net.get(k)
                .and_then(|v| v.as_u64())
                .map_or(d, |v| v as usize)
        };
        let (n, h, wd) = (dim("n", 2), dim("h", 150), dim("w", 150));
        let measured = match name {
            "vgg16_base_forward_150" => vgg16_base_forward(
                gpu,
                n,
                h,
                wd,
                opts.warmup.min(1),
                opts.runs,
                opts.pair(true),
            ),
            "small_convnet_train_step" => train_step(
                gpu,
                crate::model::zoo::small_convnet(h, false),
                None,
                n,
                opts,
            ),
            _ => train_step(
                gpu,
                crate::model::zoo::vgg16_classifier(h),
                Some("block5_conv1"),
                n,
                opts,
            ),
        };
        let (t, flops) = measured.map_err(|e| e.in_workload(&id))?;
        push(id, n, t, flops, gpu.pool_stats().peak, (None, None), None);
    }
    // `pipeline` is measured by the CLI beside these sections, so asking only for it is fine.
    if !any && !opts.only.is_empty() && !opts.only.iter().any(|o| is_pipeline_filter(o)) {
        return Err(BenchError::NoMatch(opts.only.join(",")));
    }
    Ok(lines)
}

/// The algorithm a conv workload ran, and with `--against` the one its baseline resolved to
/// for the same layer (`auto` names a choice per shape).
fn conv_algorithms(
    gpu: &Gpu,
    opts: &BenchOptions,
    s: &ConvSetup,
    backward: bool,
) -> Result<(Option<ConvAlgo>, Option<ConvAlgo>), BenchError> {
    let ran = conv::conv2d_algorithm(gpu, &s.x, &s.w, &s.spec, backward)?;
    let Some(base) = opts.against else {
        return Ok((Some(ran), None));
    };
    let resolved = gpu.with_conv_algo(base, || {
        conv::conv2d_algorithm(gpu, &s.x, &s.w, &s.spec, backward)
    })?;
    Ok((Some(ran), Some(resolved)))
}

/// Decode + resize + augment throughput of the data pipeline.
#[derive(Clone, Debug, Serialize)]
pub struct PipelineLine {
    pub engine: String,
    pub workload: String,
    pub images: usize,
    pub threads: usize,
    pub ms: f64,
    pub images_per_s: f64,
}

/// Streams `images` training images of `dir` (class sub-folders) at `size` with the book's
/// augmentation through the loader, `threads` workers, no cache: what training would get.
pub fn pipeline_throughput(
    dir: &Path,
    size: usize,
    images: usize,
    threads: usize,
) -> Result<PipelineLine, crate::data::DataError> {
    use crate::data::{Augment, DirectoryDataset, Loader, LoaderConfig, Preprocessing};
    let ds = DirectoryDataset::open(dir, (size, size), 2)?.subsample(images);
    let n = crate::data::Dataset::len(&ds);
    let mut cfg = LoaderConfig::training(20, 1, Preprocessing::Rescale, Some(Augment::book()));
    cfg.workers = threads;
    let loader = Loader::new(std::sync::Arc::new(ds), cfg)?;
    let t = Instant::now();
    let mut seen = 0;
    for batch in loader.epoch(0) {
        seen += batch?.len();
    }
    let ms = t.elapsed().as_secs_f64() * 1e3;
    Ok(PipelineLine {
        engine: format!("cnn-wgpu {}", env!("CARGO_PKG_VERSION")),
        workload: format!("pipeline/decode_resize_augment_{size}"),
        images: seen.min(n),
        threads,
        ms,
        images_per_s: seen as f64 / (ms / 1e3),
    })
}

/// VGG16's convolutional base (13 conv 3x3 same + ReLU, 5 max-pools), in (cout, pool after) order.
pub const VGG16_BASE: [(usize, bool); 13] = [
    (64, false),
    (64, true),
    (128, false),
    (128, true),
    (256, false),
    (256, false),
    (256, true),
    (512, false),
    (512, false),
    (512, true),
    (512, false),
    (512, false),
    (512, true),
];

/// Times the VGG16 base forward (input to block5_pool) on an (n, h, w, 3) batch with seeded
/// weights: the network section's `vgg16_base_forward_150`, alone or paired as `pair` says.
/// Returns the timing and the FLOPs.
fn vgg16_base_forward(
    gpu: &Gpu,
    n: usize,
    h: usize,
    w: usize,
    warmup: usize,
    runs: usize,
    pair: Option<Pair>,
) -> Result<(Measured, f64), BenchError> {
    let mut layers = Vec::new();
    let (mut cin, mut hh, mut ww, mut flops) = (3, h, w, 0.0);
    for (i, &(cout, pool)) in VGG16_BASE.iter().enumerate() {
        let k = Tensor::from_slice(
            gpu,
            [3, 3, cin, cout],
            &seeded(9 * cin * cout, 10 + i as u32)
                .iter()
                .map(|v| v * 0.05)
                .collect::<Vec<_>>(),
        )?;
        let b = Tensor::zeros(gpu, [cout])?;
        flops += 2.0 * (n * hh * ww * cout * 9 * cin) as f64;
        layers.push((k, b, pool));
        cin = cout;
        if pool {
            hh /= 2;
            ww /= 2;
        }
    }
    let x = seeded_tensor(gpu, &[n, h, w, 3], 7)?;
    let spec = Conv2dSpec::new(1, Padding::Same, true);
    let t = measure(gpu, pair, warmup, runs, || {
        let mut t = x.clone();
        for (k, b, pool) in &layers {
            t = conv::conv2d_forward(gpu, &t, k, b, &spec)?;
            if *pool {
                t = crate::ops::pool::max_pool2d(gpu, &t, crate::ops::pool::PoolSpec::square(2))?.0;
            }
        }
        Ok(())
    })?;
    Ok((t, flops))
}

/// The network workloads this engine runs.
pub const NETWORK_WORKLOADS: [&str; 3] = [
    "vgg16_base_forward_150",
    "small_convnet_train_step",
    "vgg16_block5_finetune_step",
];

/// Times one training step (forward, loss, backward to the first trainable layer, RMSprop) of
/// `spec` on a batch of `n` seeded images, trainable from `trainable_from`. FLOPs: the forward
/// convolutions and dense products, plus 2x that for every layer backward reaches.
fn train_step(
    gpu: &Gpu,
    spec: crate::model::ModelSpec,
    trainable_from: Option<&str>,
    n: usize,
    opts: &BenchOptions,
) -> Result<(Measured, f64), BenchError> {
    let mut model = crate::model::Model::new(gpu, spec, 1)?;
    if let Some(name) = trainable_from {
        model.trainable_from(name)?;
    }
    let first = model.first_trainable().unwrap_or(0);
    let shapes = model.shapes().to_vec();
    let mut flops = 0.0;
    for i in 0..model.spec.layers.len() {
        // Multiply-adds per sample: output positions times the kernel's size.
        let macs: usize = model
            .spec
            .param_shapes(i)
            .unwrap_or_default()
            .first()
            .map_or(0, |(_, k)| {
                let positions: usize = shapes[i][..shapes[i].len() - 1].iter().product();
                positions * k.iter().product::<usize>()
            });
        let f = 2.0 * (n * macs) as f64;
        flops += if i >= first { 3.0 * f } else { f };
    }
    let dims: Vec<usize> = std::iter::once(n)
        .chain(model.spec.input.iter().copied())
        .collect();
    let x = seeded_tensor(gpu, &dims, 3)?;
    let y = Tensor::from_slice(
        gpu,
        [n, 1],
        &(0..n).map(|i| (i % 2) as f32).collect::<Vec<_>>(),
    )?;
    let opt = crate::ops::optim::Optimizer::rmsprop(1e-5);
    let mut step = 0u64;
    let t = measure(gpu, opts.pair(true), opts.warmup.min(1), opts.runs, || {
        step += 1;
        model.train_step(gpu, &opt, &x, &y, step)?;
        Ok(())
    })?;
    Ok((t, flops))
}

/// Drops the pool's cached buffers and restarts the peak, so `gpu_bytes` is this workload's own.
fn fresh_accounting(gpu: &Gpu) {
    gpu.trim_pool();
    gpu.reset_peak();
}

crate::shader_params! {
    /// shaders/peak.wgsl's uniform block.
    pub(crate) struct PeakParams {
        seed: f32,
        _p0: f32,
        _p1: f32,
        _p2: f32,
    }
}

/// The bench's uniform blocks, for the host-shader contract test (see `ops::params_layouts`).
pub fn params_layouts() -> Vec<crate::gpu::contract::ParamsLayout> {
    vec![crate::gpu::contract::ParamsLayout::of::<PeakParams>(
        "bench::PeakParams",
        &[ShaderId::Peak],
    )]
}

/// Loop unrollings `measure_peak` tries: the best one is the adapter's honest ceiling, where a
/// single rolled loop understates it (and so overstates every workload's share of it).
const PEAK_UNROLLS: [u32; 4] = [1, 2, 4, 8];

/// Measures the adapter's FMA throughput in GFLOP/s with shaders/peak.wgsl: the best of
/// [`PEAK_UNROLLS`].
pub fn measure_peak(gpu: &Gpu) -> Result<f64, BenchError> {
    Ok(measure_peak_best(gpu)?.0)
}

/// [`measure_peak`] and the unrolling that reached it.
pub fn measure_peak_best(gpu: &Gpu) -> Result<(f64, u32), BenchError> {
    let mut best = (0.0f64, 0u32);
    for unroll in PEAK_UNROLLS {
        let gflops = measure_peak_unrolled(gpu, unroll)?;
        tracing::info!(unroll, gflops, "FMA peak");
        if gflops > best.0 {
            best = (gflops, unroll);
        }
    }
    tracing::info!(unroll = best.1, gflops = best.0, "FMA peak kept");
    Ok(best)
}

/// The FMA throughput of shaders/peak.wgsl with its loop unrolled `unroll` times.
pub fn measure_peak_unrolled(gpu: &Gpu, unroll: u32) -> Result<f64, BenchError> {
    const ITERS: u32 = 4096;
    let run = PeakRun::new(gpu, ITERS, unroll, 1024)?;
    let t = time_median(gpu, 1, 5, || {
        run.record(gpu);
        Ok(())
    })?;
    Ok(run.flops() / (t.ms * 1e6))
}

/// What each invocation of the peak kernel stores after `iters` steps unrolled `unroll` times,
/// over `groups` workgroups: tests check it against the arithmetic on the CPU, so the FLOP count
/// the peak is computed from is the work the kernel really does.
pub fn peak_values(
    gpu: &Gpu,
    iters: u32,
    unroll: u32,
    groups: usize,
) -> Result<Vec<f32>, BenchError> {
    let run = PeakRun::new(gpu, iters, unroll, groups)?;
    run.record(gpu);
    Ok(run.out.to_vec(gpu)?)
}

/// One configuration of the peak kernel, with its output buffer.
struct PeakRun {
    consts: [(&'static str, f64); 2],
    iters: u32,
    groups: usize,
    out: Tensor,
}

impl PeakRun {
    fn new(gpu: &Gpu, iters: u32, unroll: u32, groups: usize) -> Result<Self, BenchError> {
        if unroll == 0 || !iters.is_multiple_of(unroll) {
            return Err(BenchError::Invalid(format!(
                "peak kernel: {iters} steps do not split into loops of {unroll}"
            )));
        }
        let consts = [("ITERS", f64::from(iters)), ("UNROLL", f64::from(unroll))];
        let threads = Kernel::new(ShaderId::Peak, "fma_peak", &consts).workgroup_x() * groups;
        Ok(Self {
            consts,
            iters,
            groups,
            out: Tensor::uninit(gpu, [threads])?,
        })
    }

    /// A run of `unroll` that lasts about `seconds` where the kernel runs at `gflops`: the
    /// peak kernel beside each workload run of `--peak-paired`.
    fn lasting(gpu: &Gpu, unroll: u32, gflops: f64, seconds: f64) -> Result<Self, BenchError> {
        const ITERS: u32 = 4096;
        let one = Self::new(gpu, ITERS, unroll, 1)?;
        let groups = (gflops * 1e9 * seconds / one.flops()).ceil().max(1.0);
        // Far beyond any adapter's grid (a 1000 TFLOP/s GPU needs ~1200 groups here).
        if groups > 65_535.0 {
            return Err(BenchError::Invalid(format!(
                "peak kernel: {gflops} GFLOP/s needs {groups} workgroups for {seconds} s"
            )));
        }
        Self::new(gpu, ITERS, unroll, groups as usize)
    }

    fn record(&self, gpu: &Gpu) {
        let params = PeakParams {
            seed: 1.0,
            _p0: 0.0,
            _p1: 0.0,
            _p2: 0.0,
        };
        gpu.dispatch(
            &Kernel::new(ShaderId::Peak, "fma_peak", &self.consts),
            &[
                Arg::Uniform(bytemuck::bytes_of(&params)),
                Arg::Write(self.out.all()),
            ],
            [self.groups as u32, 1, 1],
        );
    }

    /// Eight vec4 FMA chains per invocation, two FLOPs per lane and step.
    fn flops(&self) -> f64 {
        self.out.numel() as f64 * f64::from(self.iters) * 8.0 * 4.0 * 2.0
    }
}

/// Prints lines as an aligned table; with `--against`, each line's baseline, its time and the
/// speed-up over it come before the GEMM kernels.
pub fn table(lines: &[BenchLine]) -> String {
    let paired = lines.iter().any(|l| l.speedup.is_some());
    let mut out = format!(
        "{:<40} {:>6} {:>5} {:>11} {:>10} {:>7} {:>10}",
        "workload", "algo", "n", "median ms", "GFLOP/s", "peak %", "GPU MiB"
    );
    if paired {
        out += &format!(" {:>8} {:>11} {:>8}", "baseline", "its ms", "speed-up");
    }
    out += "  GEMM kernels\n";
    for l in lines {
        let peak = l
            .peak_fraction
            .map_or("-".to_string(), |p| format!("{:.1}", p * 100.0));
        out += &format!(
            "{:<40} {:>6} {:>5} {:>11.3} {:>10.2} {:>7} {:>10.1}",
            l.workload,
            l.algorithm.as_deref().unwrap_or("-"),
            l.n,
            l.ms,
            l.gflops,
            peak,
            l.gpu_bytes as f64 / (1024.0 * 1024.0),
        );
        if paired {
            out += &match (&l.baseline, l.baseline_ms, l.speedup) {
                (Some(b), Some(ms), Some(x)) => {
                    format!(" {b:>8} {ms:>11.3} {:>8}", format!("{x:.2}x"))
                }
                _ => format!(" {:>8} {:>11} {:>8}", "-", "-", "-"),
            };
        }
        out += &format!("  {}\n", l.gemm.as_deref().unwrap_or("-"));
    }
    out
}

/// Where the shared data lives: `CNN_WGPU_SHARED`, else `../shared` beside the current directory.
pub fn shared_dir() -> PathBuf {
    std::env::var_os("CNN_WGPU_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("../shared"))
}
