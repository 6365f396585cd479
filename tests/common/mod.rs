//! Test support: the shared device, seeded random data, closeness checks, and plain CPU
//! references (f64, straight from the definitions) that the GPU kernels are checked against.
#![allow(dead_code)]

use std::sync::OnceLock;

use cnn_wgpu::gpu::select;
use cnn_wgpu::ops::conv::Padding;
use cnn_wgpu::{AdapterRequest, Gpu, Tensor};
use rand::{Rng, SeedableRng};

static GPU: OnceLock<Option<Gpu>> = OnceLock::new();
static PLAIN_GPU: OnceLock<Option<Gpu>> = OnceLock::new();
static SMALL_BINDING_GPU: OnceLock<Option<Gpu>> = OnceLock::new();

fn open(binding_limit: Option<u64>) -> Option<Gpu> {
    let mut request =
        AdapterRequest::from_env().expect("CNN_WGPU_ADAPTER / CNN_WGPU_BACKEND are valid");
    request.binding_limit = binding_limit;
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

/// A second device whose binding limit is lowered to 64 KiB, so the split-by-batch paths run on
/// small tensors on any adapter.
pub fn small_binding_gpu() -> Option<&'static Gpu> {
    SMALL_BINDING_GPU
        .get_or_init(|| open(Some(64 * 1024)))
        .as_ref()
}

static SHORT_TILE_GPU: OnceLock<Option<Gpu>> = OnceLock::new();
static TALL_TILE_GPU: OnceLock<Option<Gpu>> = OnceLock::new();

/// The adapter's kernel families: where it has the subgroup GEMM, that GEMM forced to 24-row
/// tiles and forced to 32-row tiles, and the workgroup-memory kernels (subgroups off), each on
/// a device of its own, so every GEMM-shaped op is checked on each; elsewhere just the shared
/// device. The shared device keeps choosing tile heights by its cost model.
pub fn kernel_families() -> Vec<(&'static str, &'static Gpu)> {
    let Some(g) = gpu() else {
        return Vec::new();
    };
    if !g.subgroup_kernels() {
        return vec![("workgroup-memory kernels", g)];
    }
    let second = |cell: &'static OnceLock<Option<Gpu>>, setup: fn(&Gpu)| {
        cell.get_or_init(|| {
            let p = open(None)?;
            setup(&p);
            Some(p)
        })
        .as_ref()
        .expect("a second device on the same adapter")
    };
    // Operand textures only 64 texels wide, so that even small test operands wrap over many
    // texture rows.
    let short = second(&SHORT_TILE_GPU, |p| {
        p.force_subgroup_tile_rows(Some(24));
        p.force_texture_width(Some(64));
    });
    let tall = second(&TALL_TILE_GPU, |p| {
        p.force_subgroup_tile_rows(Some(32));
        p.set_texture_operands(false);
    });
    let plain = second(&PLAIN_GPU, |p| p.set_subgroup_kernels(false));
    vec![
        (
            "subgroup kernels, 24-row tiles, B in 64-texel-wide textures",
            short,
        ),
        ("subgroup kernels, 32-row tiles, B in buffers", tall),
        ("workgroup-memory kernels", plain),
    ]
}

/// A device of its own, for tests that count pipelines or pool buffers and must not see other
/// tests' work.
pub fn fresh_gpu() -> Option<Gpu> {
    open(None)
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
pub fn resolve(input: usize, k: usize, s: usize, padding: Padding) -> (usize, usize) {
    match padding {
        Padding::Valid => ((input - k) / s + 1, 0),
        Padding::Same => {
            let out = input.div_ceil(s);
            let total = ((out - 1) * s + k).saturating_sub(input);
            (out, total / 2)
        }
    }
}

/// Direct convolution from the definition: y[n,oy,ox,co] = b[co] + sum x[n, oy*s+ky-pt, ox*s+kx-pl, ci] w[ky,kx,ci,co].
#[allow(clippy::too_many_arguments)]
pub fn conv2d_ref(
    x: &[f64],
    xs: [usize; 4],
    w: &[f64],
    ws: [usize; 4],
    b: &[f64],
    stride: (usize, usize),
    padding: Padding,
    relu: bool,
) -> (Vec<f64>, [usize; 4]) {
    let [n, h, wd, ci] = xs;
    let [kh, kw, _, co] = ws;
    let (oh, pt) = resolve(h, kh, stride.0, padding);
    let (ow, pl) = resolve(wd, kw, stride.1, padding);
    let mut y = vec![0.0; n * oh * ow * co];
    for b_ in 0..n {
        for oy in 0..oh {
            for ox in 0..ow {
                for o in 0..co {
                    let mut s = b[o];
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let iy = (oy * stride.0 + ky) as isize - pt as isize;
                            let ix = (ox * stride.1 + kx) as isize - pl as isize;
                            if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                continue;
                            }
                            for c in 0..ci {
                                s += x[((b_ * h + iy as usize) * wd + ix as usize) * ci + c]
                                    * w[((ky * kw + kx) * ci + c) * co + o];
                            }
                        }
                    }
                    y[((b_ * oh + oy) * ow + ox) * co + o] = if relu { s.max(0.0) } else { s };
                }
            }
        }
    }
    (y, [n, oh, ow, co])
}

pub fn dense_ref(
    x: &[f64],
    rows: usize,
    inp: usize,
    w: &[f64],
    out: usize,
    b: Option<&[f64]>,
    relu: bool,
) -> Vec<f64> {
    let mut y = vec![0.0; rows * out];
    for r in 0..rows {
        for o in 0..out {
            let mut s = b.map_or(0.0, |b| b[o]);
            for i in 0..inp {
                s += x[r * inp + i] * w[i * out + o];
            }
            y[r * out + o] = if relu { s.max(0.0) } else { s };
        }
    }
    y
}

/// Max (or average over in-image taps) pooling from the definition.
pub fn pool_ref(
    x: &[f64],
    xs: [usize; 4],
    window: (usize, usize),
    stride: (usize, usize),
    padding: Padding,
    max: bool,
) -> (Vec<f64>, [usize; 4]) {
    let [n, h, w, c] = xs;
    let (oh, pt) = resolve(h, window.0, stride.0, padding);
    let (ow, pl) = resolve(w, window.1, stride.1, padding);
    let mut y = vec![0.0; n * oh * ow * c];
    for b in 0..n {
        for oy in 0..oh {
            for ox in 0..ow {
                for ch in 0..c {
                    let mut best = f64::NEG_INFINITY;
                    let mut sum = 0.0;
                    let mut count = 0.0;
                    for ky in 0..window.0 {
                        for kx in 0..window.1 {
                            let iy = (oy * stride.0 + ky) as isize - pt as isize;
                            let ix = (ox * stride.1 + kx) as isize - pl as isize;
                            if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                continue;
                            }
                            let v = x[((b * h + iy as usize) * w + ix as usize) * c + ch];
                            best = best.max(v);
                            sum += v;
                            count += 1.0;
                        }
                    }
                    y[((b * oh + oy) * ow + ox) * c + ch] = if max { best } else { sum / count };
                }
            }
        }
    }
    (y, [n, oh, ow, c])
}
