//! Test support: the shared device, seeded random data, closeness checks, and plain CPU
//! references (f64, straight from the definitions) that the GPU kernels are checked against.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use cnn_wgpu::gpu::select;
use cnn_wgpu::gpu::TiledConfig;
use cnn_wgpu::model::spec::{Activation, LayerKind};
use cnn_wgpu::model::ModelSpec;
use cnn_wgpu::ops::Padding;
use cnn_wgpu::{AdapterRequest, Gpu, Tensor};
use rand::{Rng, SeedableRng};

static GPU: OnceLock<Option<Gpu>> = OnceLock::new();
static SMALL_BINDING_GPU: OnceLock<Option<Gpu>> = OnceLock::new();

/// The binding limit of the `small_binding` devices: 64 KiB, so that the split-by-batch paths
/// run on small tensors on any adapter.
pub const SMALL_BINDING: u64 = 64 * 1024;

/// Opens a device on the adapter the environment names. Every test device fills the tensors it
/// hands out uninitialised with NaN (`Gpu::set_poison_uninit`): the pool recycles buffers, so a
/// kernel that leaves part of its output unwritten would otherwise pass a repeated call on the
/// previous call's result. Every tensor also carries a NaN tail inside its bindings
/// (`Gpu::nan_tail`): lavapipe returns 0 for a read past a binding, Metal and DX12 a real
/// value, so a kernel that reads past a tensor's end must show it here, as a NaN.
fn open(binding_limit: Option<u64>) -> Option<Gpu> {
    open_with(|o| o.binding_limit = binding_limit)
}

/// A device of its own, opened with the options the environment gives changed by `change`.
pub fn open_with(change: impl FnOnce(&mut cnn_wgpu::gpu::DeviceOptions)) -> Option<Gpu> {
    let mut request =
        AdapterRequest::from_env().expect("CNN_WGPU_ADAPTER / CNN_WGPU_BACKEND are valid");
    request.options.poison_uninit = true;
    request.options.nan_tail = true;
    change(&mut request.options);
    match select::open(&request) {
        Ok(g) => Some(g),
        Err(e) => {
            if std::env::var_os("CNN_WGPU_REQUIRE_GPU").is_some() {
                panic!("CNN_WGPU_REQUIRE_GPU is set but no adapter opened: {e}");
            }
            eprintln!("skipped: no GPU adapter ({e})");
            None
        }
    }
}

/// The device all GPU tests share (opening one per test is slow on lavapipe). None, with a
/// "skipped" line, where no adapter exists, unless CNN_WGPU_REQUIRE_GPU says one must.
pub fn gpu() -> Option<&'static Gpu> {
    GPU.get_or_init(|| open(None)).as_ref()
}

/// The adapter request the test devices are opened with (the environment's), where an adapter
/// opens; None, with a "skipped" line, as for [`gpu`].
pub fn request() -> Option<AdapterRequest> {
    gpu()?;
    Some(AdapterRequest::from_env().expect("CNN_WGPU_ADAPTER / CNN_WGPU_BACKEND are valid"))
}

/// A second device whose binding limit is lowered to [`SMALL_BINDING`], so the split-by-batch
/// paths run on small tensors on any adapter.
pub fn small_binding_gpu() -> Option<&'static Gpu> {
    SMALL_BINDING_GPU
        .get_or_init(|| open(Some(SMALL_BINDING)))
        .as_ref()
}

/// The configurations [`kernel_families`] runs every GEMM-shaped op on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Variant {
    /// Subgroup GEMM, 24-row tiles, B in operand textures only 64 texels wide, so that even
    /// small test operands wrap over many texture rows.
    Short,
    /// Subgroup GEMM, 32-row tiles, B read from buffers.
    Tall,
    /// Subgroup GEMM, the 8-row tiles a GPU takes (four subgroups per workgroup), B read from
    /// buffers.
    GpuRows,
    /// The GPU-class tiled kernels (subgroups off), in their 64x64 configuration of 8x8
    /// invocations: the one that loads two vec4s of A and of B per invocation and K step, and
    /// whose tiles the small test products span several of (tests/tiled.rs checks the others).
    Tiled,
    /// The 64x64 workgroup-memory kernels (subgroups and tiled kernels off).
    Plain,
}

/// A device's configuration: its variant, binding limit and forced kernel-gradient slices.
type DeviceKey = (Variant, Option<u64>, Option<u32>);
type VariantDevices = Vec<(DeviceKey, &'static Gpu)>;
static VARIANTS: Mutex<VariantDevices> = Mutex::new(Vec::new());

/// The device of `key`, opened once per test binary.
fn variant_gpu(key: DeviceKey) -> &'static Gpu {
    let (variant, binding_limit, slices) = key;
    let mut devices = VARIANTS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, g)) = devices.iter().find(|(k, _)| *k == key) {
        return g;
    }
    let g: &'static Gpu = Box::leak(Box::new(
        open(binding_limit).expect("a second device on the same adapter"),
    ));
    match variant {
        Variant::Short => {
            g.force_subgroup_tile_rows(Some(24));
            g.force_texture_width(Some(64));
        }
        Variant::Tall => {
            g.force_subgroup_tile_rows(Some(32));
            g.set_texture_operands(false);
        }
        Variant::GpuRows => {
            g.force_subgroup_tile_rows(Some(8));
            g.set_texture_operands(false);
        }
        Variant::Tiled => {
            g.set_subgroup_kernels(false);
            g.force_tiled_config(TiledConfig::named("64x64"));
        }
        Variant::Plain => {
            g.set_subgroup_kernels(false);
            g.set_tiled_kernels(false);
        }
    }
    g.force_kernel_gradient_slices(slices);
    devices.push((key, g));
    g
}

/// The adapter's kernel families: where it has the subgroup GEMM, that GEMM forced to 24-row
/// tiles, to 32-row tiles and to a GPU's 8-row tiles; where its limits allow them, the tiled
/// kernels; and the workgroup-memory kernels; each on a device of its own, so every GEMM-shaped
/// op is checked on each. The shared device keeps the planner's choices. Fails when the
/// adapter's families are not the ones `CNN_WGPU_EXPECT_KERNELS` lists (see
/// [`check_expected_families`]).
pub fn kernel_families() -> Vec<(&'static str, &'static Gpu)> {
    families_with(None, None)
}

/// [`kernel_families`] on devices of their own whose binding limit is `binding_limit` (the
/// split-by-batch paths; [`SMALL_BINDING`] splits small tensors) and whose kernel gradients
/// split their sums into `slices` (`Gpu::force_kernel_gradient_slices`: the default depends on
/// the core count).
pub fn families_with(
    binding_limit: Option<u64>,
    slices: Option<u32>,
) -> Vec<(&'static str, &'static Gpu)> {
    let Some(g) = gpu() else {
        return Vec::new();
    };
    check_expected_families(g);
    let mut families = Vec::new();
    if g.subgroup_kernels() {
        families.push((
            "subgroup kernels, 24-row tiles, B in 64-texel-wide textures",
            variant_gpu((Variant::Short, binding_limit, slices)),
        ));
        families.push((
            "subgroup kernels, 32-row tiles, B in buffers",
            variant_gpu((Variant::Tall, binding_limit, slices)),
        ));
        families.push((
            "subgroup kernels, 8-row tiles as on a GPU, B in buffers",
            variant_gpu((Variant::GpuRows, binding_limit, slices)),
        ));
    }
    if tiled_runs(g) {
        families.push((
            "tiled kernels, 64x64 tiles of 8x8 per invocation",
            variant_gpu((Variant::Tiled, binding_limit, slices)),
        ));
    }
    families.push((
        "workgroup-memory kernels",
        variant_gpu((Variant::Plain, binding_limit, slices)),
    ));
    families
}

/// Whether `g` runs the tiled kernels: they are on and one configuration fits its limits.
fn tiled_runs(g: &Gpu) -> bool {
    g.tiled_kernels() && TiledConfig::ALL.iter().any(|c| c.fits(g.limits()))
}

/// The kernel families `g`'s adapter runs, by name: `subgroup-W` (the subgroup GEMM, at the
/// adapter's fixed subgroup width W) where it runs, `tiled` where its limits allow the tiled
/// kernels, and `workgroup-memory` everywhere.
pub fn adapter_families(g: &Gpu) -> Vec<String> {
    let mut names = Vec::new();
    if let Some(w) = g.subgroup_width() {
        names.push(format!("subgroup-{w}"));
    }
    if tiled_runs(g) {
        names.push("tiled".to_string());
    }
    names.push("workgroup-memory".to_string());
    names
}

/// The kernel families `CNN_WGPU_EXPECT_KERNELS` (comma-separated, as [`adapter_families`]
/// names them) says the adapter must run; empty where it is not set.
pub fn expected_families() -> Vec<String> {
    let Ok(list) = std::env::var("CNN_WGPU_EXPECT_KERNELS") else {
        return Vec::new();
    };
    let names: Vec<String> = list
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    for n in &names {
        let known = n == "workgroup-memory"
            || n == "tiled"
            || n.strip_prefix("subgroup-")
                .and_then(|w| w.parse::<u32>().ok())
                .is_some_and(u32::is_power_of_two);
        assert!(
            known,
            "CNN_WGPU_EXPECT_KERNELS={list:?}: {n:?} is no kernel family (subgroup-8, subgroup-16, ..., tiled, workgroup-memory)"
        );
    }
    names
}

/// Where `CNN_WGPU_EXPECT_KERNELS` is set (CI states its adapter's families), fails unless the
/// adapter runs exactly those families: a driver or detection change that drops the subgroup
/// kernels would otherwise shrink every op test to one family without a sound.
pub fn check_expected_families(g: &Gpu) {
    let mut expected = expected_families();
    if expected.is_empty() {
        return;
    }
    let mut have = adapter_families(g);
    expected.sort();
    have.sort();
    assert_eq!(
        have,
        expected,
        "{} runs the kernel families {have:?}, but CNN_WGPU_EXPECT_KERNELS lists {expected:?}",
        g.adapter_name()
    );
}

/// True where `CNN_WGPU_EXPECT_KERNELS` lists a subgroup family: tests of the subgroup kernels
/// then must not skip.
pub fn subgroup_family_expected() -> bool {
    expected_families()
        .iter()
        .any(|f| f.starts_with("subgroup-"))
}

/// A device of its own, for tests that count pipelines or pool buffers and must not see other
/// tests' work.
pub fn fresh_gpu() -> Option<Gpu> {
    open(None)
}

/// A device of its own whose tuning cache is the file `path`.
pub fn fresh_gpu_tuned_at(path: &std::path::Path) -> Option<Gpu> {
    open_with(|o| o.tune_cache = Some(path.to_path_buf()))
}

/// True where CNN_WGPU_REQUIRE_SHARED says the shared data must be there (CI sets it).
pub fn shared_required() -> bool {
    std::env::var("CNN_WGPU_REQUIRE_SHARED").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// The shared folder (`$CNN_WGPU_SHARED`, else `../shared`) when every path of `paths` exists
/// in it; otherwise None with a "skipped" line naming the missing ones, or, where
/// CNN_WGPU_REQUIRE_SHARED is set, a failure naming them.
pub fn shared(paths: &[&str]) -> Option<PathBuf> {
    // Absolute, so that the command-line tests can run the binary from a folder outside the
    // repository and still hand it shared paths.
    let dir = cnn_wgpu::bench::shared_dir();
    let dir = std::path::absolute(&dir).unwrap_or(dir);
    let missing: Vec<String> = paths
        .iter()
        .filter(|p| !dir.join(p).exists())
        .map(|p| dir.join(p).display().to_string())
        .collect();
    if missing.is_empty() {
        return Some(dir);
    }
    if shared_required() {
        panic!(
            "CNN_WGPU_REQUIRE_SHARED is set but the shared data lacks {}",
            missing.join(", ")
        );
    }
    eprintln!(
        "skipped: the shared data lacks {} (set CNN_WGPU_SHARED)",
        missing.join(", ")
    );
    None
}

#[macro_export]
macro_rules! gpu_or_skip {
    () => {
        match common::gpu() {
            Some(g) => g,
            None => return,
        }
    };
}

pub fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

pub fn upload(gpu: &Gpu, shape: &[usize], data: &[f32]) -> Tensor {
    Tensor::from_slice(gpu, shape, data).expect("upload")
}

pub fn read(gpu: &Gpu, t: &Tensor) -> Vec<f32> {
    t.to_vec(gpu).expect("readback")
}

/// |got - want| <= atol + rtol * |want| for every element, reporting the worst one.
pub fn assert_close(what: &str, got: &[f32], want: &[f64], rtol: f64, atol: f64) {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: length {} != {}",
        got.len(),
        want.len()
    );
    let mut worst = (0usize, 0.0f64);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        // A reference that is not finite is a broken oracle, not a value to be close to; a
        // result that is not finite is wrong whatever the reference.
        assert!(
            w.is_finite(),
            "{what}: the reference's element {i} is {w}: the oracle itself failed"
        );
        let excess = if g.is_finite() {
            (f64::from(g) - w).abs() - (atol + rtol * w.abs())
        } else {
            f64::INFINITY
        };
        if excess > worst.1 {
            worst = (i, excess);
        }
    }
    assert!(
        worst.1 <= 0.0,
        "{what}: element {} is {} but the reference is {} (rtol {rtol}, atol {atol})",
        worst.0,
        got[worst.0],
        want[worst.0]
    );
}

pub fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
}

/// Central finite differences of a scalar function at `x`, in f64: (f(x+h) - f(x-h)) / 2h.
pub fn numeric_grad(x: &[f64], h: f64, f: impl Fn(&[f64]) -> f64) -> Vec<f64> {
    let mut xp = x.to_vec();
    (0..x.len())
        .map(|i| {
            let orig = xp[i];
            xp[i] = orig + h;
            let up = f(&xp);
            xp[i] = orig - h;
            let down = f(&xp);
            xp[i] = orig;
            (up - down) / (2.0 * h)
        })
        .collect()
}

pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Output size and padding before, Keras rules.
#[allow(unused_imports)]
pub use cnn_wgpu::reference::{conv2d_backward_ref, conv2d_ref, dense_ref, pool_ref, resolve};

/// Parameter values by name.
pub type Values = HashMap<String, Vec<f64>>;

/// The model's logits from the definitions, in f64: each layer as the CPU references here
/// compute it, dropout as the given per-layer masks (0 or 1/(1-rate); a layer without a mask
/// is the identity, as at inference), every other layer's activation applied (a sigmoid or
/// softmax too, not only ReLU), and the output layer's left to the loss, as the executor does. `params` maps `{layer}.kernel` / `{layer}.bias` to their values.
pub fn cpu_logits(
    spec: &ModelSpec,
    params: &Values,
    masks: &HashMap<usize, Vec<f64>>,
    x: &[f64],
    n: usize,
) -> Vec<f64> {
    let mut cur = x.to_vec();
    let mut shape = spec.input.clone();
    let last = spec.layers.len() - 1;
    for (i, layer) in spec.layers.iter().enumerate() {
        let kernel = || &params[&format!("{}.kernel", layer.name)];
        let bias = || &params[&format!("{}.bias", layer.name)];
        let relu = i != last && layer.kind.activation() == Activation::Relu;
        (cur, shape) = match &layer.kind {
            LayerKind::Conv2d {
                filters,
                kernel: k,
                stride,
                padding,
                ..
            } => {
                let (y, ys) = conv2d_ref(
                    &cur,
                    [n, shape[0], shape[1], shape[2]],
                    kernel(),
                    [k.0, k.1, shape[2], *filters],
                    bias(),
                    (*stride, *stride),
                    *padding,
                    relu,
                );
                (y, ys[1..].to_vec())
            }
            LayerKind::Conv1d {
                filters,
                kernel: k,
                padding,
                ..
            } => {
                let (y, ys) = conv2d_ref(
                    &cur,
                    [n, 1, shape[0], shape[1]],
                    kernel(),
                    [1, *k, shape[1], *filters],
                    bias(),
                    (1, 1),
                    *padding,
                    relu,
                );
                (y, vec![ys[2], ys[3]])
            }
            LayerKind::MaxPool2d { pool } => {
                let (y, ys) = pool_ref(
                    &cur,
                    [n, shape[0], shape[1], shape[2]],
                    (*pool, *pool),
                    (*pool, *pool),
                    Padding::Valid,
                    true,
                );
                (y, ys[1..].to_vec())
            }
            LayerKind::MaxPool1d { pool } => {
                let (y, ys) = pool_ref(
                    &cur,
                    [n, 1, shape[0], shape[1]],
                    (1, *pool),
                    (1, *pool),
                    Padding::Valid,
                    true,
                );
                (y, vec![ys[2], ys[3]])
            }
            LayerKind::GlobalMaxPool1d => {
                let (l, c) = (shape[0], shape[1]);
                let y = (0..n * c)
                    .map(|bc| {
                        let (b, ch) = (bc / c, bc % c);
                        (0..l)
                            .map(|t| cur[(b * l + t) * c + ch])
                            .fold(f64::NEG_INFINITY, f64::max)
                    })
                    .collect();
                (y, vec![c])
            }
            LayerKind::Flatten => (cur, vec![shape.iter().product()]),
            LayerKind::Dense { units, .. } => {
                let y = dense_ref(&cur, n, shape[0], kernel(), *units, Some(bias()), relu);
                (y, vec![*units])
            }
            LayerKind::Dropout { .. } => match masks.get(&i) {
                Some(m) => (cur.iter().zip(m).map(|(v, k)| v * k).collect(), shape),
                None => (cur, shape),
            },
        };
        if i != last {
            match layer.kind.activation() {
                Activation::Sigmoid => cur.iter_mut().for_each(|v| *v = 1.0 / (1.0 + (-*v).exp())),
                Activation::Softmax => {
                    for row in cur.chunks_mut(*shape.last().unwrap()) {
                        let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                        row.iter_mut().for_each(|v| *v = (*v - m).exp());
                        let sum: f64 = row.iter().sum();
                        row.iter_mut().for_each(|v| *v /= sum);
                    }
                }
                // ReLU is in the layer's reference above.
                Activation::Relu | Activation::Linear => {}
            }
        }
    }
    cur
}

/// Mean loss over the batch from the logits, in f64: binary cross-entropy of a sigmoid unit,
/// softplus(z) - y z, or categorical cross-entropy of a softmax, logsumexp(z) - sum_k y_k z_k
/// (one-hot y).
pub fn cpu_loss(logits: &[f64], labels: &[f64], n: usize) -> f64 {
    let k = logits.len() / n;
    let total: f64 = (0..n)
        .map(|b| {
            let z = &logits[b * k..(b + 1) * k];
            let y = &labels[b * k..(b + 1) * k];
            if k == 1 {
                z[0].max(0.0) + (-z[0].abs()).exp().ln_1p() - y[0] * z[0]
            } else {
                let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let lse = m + z.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
                lse * y.iter().sum::<f64>() - dot(y, z)
            }
        })
        .sum();
    total / n as f64
}

/// One header entry of [`raw_safetensors`]: name, dtype, shape, data_offsets.
pub type RawEntry<'a> = (&'a str, &'a str, &'a [usize], [u64; 2]);

/// A safetensors file written byte by byte from `entries` (name, dtype, shape, data_offsets)
/// and `data_len` bytes of data, so that a test can make the header lie in any way it wants.
pub fn raw_safetensors(entries: &[RawEntry<'_>], data_len: usize) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    for (name, dtype, shape, offsets) in entries {
        header.insert(
            name.to_string(),
            serde_json::json!({ "dtype": dtype, "shape": shape, "data_offsets": offsets }),
        );
    }
    let json = serde_json::to_vec(&header).unwrap();
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&json);
    out.resize(out.len() + data_len, 0);
    out
}

/// Writes 28x28 `images` and their `labels` as plain MNIST IDX files (`t10k-*`, so that
/// `train` splits them 4/5 train, 1/5 validation) into `dir`.
pub fn write_idx<'a>(
    dir: &std::path::Path,
    images: impl IntoIterator<Item = &'a [u8]>,
    labels: &[u8],
) {
    std::fs::create_dir_all(dir).unwrap();
    let n = labels.len() as u32;
    let mut idx = vec![0, 0, 8, 3];
    for d in [n, 28, 28] {
        idx.extend_from_slice(&d.to_be_bytes());
    }
    for img in images {
        assert_eq!(img.len(), 28 * 28, "a 28x28 digit");
        idx.extend_from_slice(img);
    }
    assert_eq!(
        idx.len(),
        16 + labels.len() * 28 * 28,
        "one label per image"
    );
    let mut lbl = vec![0, 0, 8, 1];
    lbl.extend_from_slice(&n.to_be_bytes());
    lbl.extend_from_slice(labels);
    std::fs::write(dir.join("t10k-images-idx3-ubyte"), idx).unwrap();
    std::fs::write(dir.join("t10k-labels-idx1-ubyte"), lbl).unwrap();
}

/// Writes `n` generated digits with [`write_idx`]: digit k is a bright 6x4 block at a place of
/// its own on a noisy background, so that the classes are learnable. Returns the labels.
pub fn write_digits(dir: &std::path::Path, n: usize, seed: u64) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
    let images: Vec<Vec<u8>> = labels
        .iter()
        .map(|&k| {
            let (r0, c0) = (2 + (k as usize / 5) * 12, 2 + (k as usize % 5) * 5);
            (0..28 * 28)
                .map(|p| {
                    let (r, c) = (p / 28, p % 28);
                    let inside = (r0..r0 + 6).contains(&r) && (c0..c0 + 4).contains(&c);
                    if inside {
                        255
                    } else {
                        rng.random_range(0..40)
                    }
                })
                .collect()
        })
        .collect();
    write_idx(dir, images.iter().map(Vec::as_slice), &labels);
    labels
}

/// Starts `c` with the pause point `at` armed (`CNN_WGPU_PAUSE_AT`, see `cnn_wgpu::fault`) and
/// returns the process once it says it has paused there, with the stderr lines it printed up
/// to then; it waits there until killed. Panics, with those lines, where it ends first.
pub fn paused_at(mut c: std::process::Command, at: &str) -> (std::process::Child, Vec<String>) {
    use std::io::BufRead;
    let mut child = c
        .env("CNN_WGPU_PAUSE_AT", at)
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut seen = Vec::new();
    for line in std::io::BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        let paused = line.contains(&format!("paused at {at}"));
        seen.push(line);
        if paused {
            return (child, seen);
        }
    }
    let status = child.wait().unwrap();
    panic!(
        "the run never reached {at} ({status}):\n{}",
        seen.join("\n")
    );
}

/// A VGG16 base with Keras names and shapes (f16, caffe preprocessing in the metadata), its
/// kernels He-uniform scaled by 0.7 per layer so that activations shrink slowly instead of
/// saturating the head: weights for the workflow's plumbing, not for recognising anything.
pub fn synthetic_vgg16(path: &std::path::Path) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(16);
    let mut tensors = Vec::new();
    let mut cin = 3;
    for (b, (convs, cout)) in [(2, 64), (2, 128), (3, 256), (3, 512), (3, 512)]
        .into_iter()
        .enumerate()
    {
        for i in 0..convs {
            let name = format!("block{}_conv{}", b + 1, i + 1);
            let limit = 0.7 * (6.0f32 / (9 * cin) as f32).sqrt();
            let kernel: Vec<half::f16> = (0..9 * cin * cout)
                .map(|_| half::f16::from_f32(rng.random_range(-limit..limit)))
                .collect();
            let bias = vec![half::f16::from_f32(0.01); cout];
            tensors.push((format!("{name}.kernel"), vec![3, 3, cin, cout], kernel));
            tensors.push((format!("{name}.bias"), vec![cout], bias));
            cin = cout;
        }
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, shape, data)| {
            let view = safetensors::tensor::TensorView::new(
                safetensors::Dtype::F16,
                shape.clone(),
                bytemuck::cast_slice(data),
            )
            .unwrap();
            (n.clone(), view)
        })
        .collect();
    let meta = [
        ("format", "keras"),
        ("layout", "HWIO"),
        ("preprocessing", "caffe"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    safetensors::serialize_to_file(views, Some(meta), path).unwrap();
}
