//! Winograd convolution (F(2x2,3x3), F(4x4,3x3)) against the direct CPU convolution, forward
//! and input gradient, on every kernel family, with error bounds derived from the transforms;
//! its input gradient against finite differences; and a frozen kernel's transformed copy kept
//! only while the kernel is unchanged.

mod common;

use std::sync::Mutex;

use cnn_wgpu::gpu::{ConvAlgo, Gpu};
use cnn_wgpu::ops::conv::{self, Conv2dSpec};
use cnn_wgpu::ops::Padding;
use common::*;

/// The algorithm is a device switch, and the family devices are shared by this binary's tests:
/// one test at a time sets it.
static ALGO: Mutex<()> = Mutex::new(());

const ALGOS: [(ConvAlgo, usize); 2] = [(ConvAlgo::F2x2, 2), (ConvAlgo::F4x4, 4)];

/// |B^T|, |G| and |A^T| of F(m x m, 3x3), as (rows, columns, values): the magnitudes the
/// error bound below is built from (Lavin & Gray's matrices; the shader's term-by-term
/// transforms are checked by the values, against the direct convolution, not by these).
fn abs_matrices(m: usize) -> ([Vec<f64>; 3], usize) {
    if m == 2 {
        (
            [
                vec![
                    1., 0., 1., 0., //
                    0., 1., 1., 0., //
                    0., 1., 1., 0., //
                    0., 1., 0., 1.,
                ],
                vec![1., 0., 0., 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0., 0., 1.],
                vec![1., 1., 1., 0., 0., 1., 1., 1.],
            ],
            4,
        )
    } else {
        let (a, b, c) = (1. / 24., 1. / 12., 1. / 6.);
        (
            [
                vec![
                    4., 0., 5., 0., 1., 0., //
                    0., 4., 4., 1., 1., 0., //
                    0., 4., 4., 1., 1., 0., //
                    0., 2., 1., 2., 1., 0., //
                    0., 2., 1., 2., 1., 0., //
                    0., 4., 0., 5., 0., 1.,
                ],
                vec![0.25, 0., 0., c, c, c, c, c, c, a, b, c, a, b, c, 0., 0., 1.],
                vec![
                    1., 1., 1., 1., 1., 0., //
                    0., 1., 1., 2., 2., 0., //
                    0., 1., 1., 4., 4., 0., //
                    0., 1., 1., 8., 8., 1.,
                ],
            ],
            6,
        )
    }
}

/// A componentwise bound on the rounding error of each output of a Winograd convolution of x
/// (N,H,W,C) with w (3,3,C,K) HWIO, `pad` zeros above and left, (OH,OW) outputs, tile side m:
///   |err| <= 2 u (C + 4 alpha + 8) |A^T| [ sum_c (|G| |g_c| |G^T|) .* (|B^T| |d_c| |B|) ] |A|
/// (u = 2^-24): every value passes through at most alpha + 1 additions in each of the input,
/// kernel and output transforms' two passes and C in the product's sum, each rounding once,
/// and the magnitudes are what those sums add up to with every sign made positive. The
/// direct convolution's bound is the same with only its 9C terms: F(4x4) is much looser.
fn winograd_bound(
    x: &[f64],
    xs: [usize; 4],
    w: &[f64],
    k: usize,
    pad: (usize, usize),
    (oh, ow): (usize, usize),
    m: usize,
) -> Vec<f64> {
    let ([bt, g, at], al) = abs_matrices(m);
    let [n, h, wd, c] = xs;
    let gamma = 2.0 * f64::from(f32::EPSILON) / 2.0 * (c + 4 * al + 8) as f64;
    // |U| (alpha, alpha, C, K) = |G| |g| |G^T|.
    let mut u = vec![0.0; al * al * c * k];
    for ci in 0..c {
        for ko in 0..k {
            for xi in 0..al {
                for nu in 0..al {
                    let mut s = 0.0;
                    for a in 0..3 {
                        for b in 0..3 {
                            s += g[xi * 3 + a]
                                * w[((a * 3 + b) * c + ci) * k + ko].abs()
                                * g[nu * 3 + b];
                        }
                    }
                    u[((xi * al + nu) * c + ci) * k + ko] = s;
                }
            }
        }
    }
    let mut out = vec![0.0; n * oh * ow * k];
    for img in 0..n {
        for ty in 0..oh.div_ceil(m) {
            for tx in 0..ow.div_ceil(m) {
                // |M| (alpha, alpha, K) = sum_c |U| .* |V|, |V| = |B^T| |d| |B|.
                let mut mm = vec![0.0; al * al * k];
                for ci in 0..c {
                    let d = |r: usize, s: usize| {
                        let y = (ty * m + r) as isize - pad.0 as isize;
                        let xx = (tx * m + s) as isize - pad.1 as isize;
                        if y < 0 || xx < 0 || y >= h as isize || xx >= wd as isize {
                            0.0
                        } else {
                            x[((img * h + y as usize) * wd + xx as usize) * c + ci].abs()
                        }
                    };
                    for xi in 0..al {
                        for nu in 0..al {
                            let mut v = 0.0;
                            for r in 0..al {
                                for s in 0..al {
                                    v += bt[xi * al + r] * d(r, s) * bt[nu * al + s];
                                }
                            }
                            for ko in 0..k {
                                mm[(xi * al + nu) * k + ko] +=
                                    u[((xi * al + nu) * c + ci) * k + ko] * v;
                            }
                        }
                    }
                }
                for r in 0..m {
                    for s in 0..m {
                        let (oy, ox) = (ty * m + r, tx * m + s);
                        if oy >= oh || ox >= ow {
                            continue;
                        }
                        for ko in 0..k {
                            let mut e = 0.0;
                            for xi in 0..al {
                                for nu in 0..al {
                                    e += at[r * al + xi]
                                        * mm[(xi * al + nu) * k + ko]
                                        * at[s * al + nu];
                                }
                            }
                            out[((img * oh + oy) * ow + ox) * k + ko] = gamma * e;
                        }
                    }
                }
            }
        }
    }
    out
}

/// The input gradient's kernel: w (3,3,C,K) rotated 180 degrees with its channels swapped,
/// (3,3,K,C), so that dx is the convolution of dy with it.
fn flipped(w: &[f64], c: usize, k: usize) -> Vec<f64> {
    let mut f = vec![0.0; w.len()];
    for a in 0..3 {
        for b in 0..3 {
            for ci in 0..c {
                for ko in 0..k {
                    f[(((2 - a) * 3 + 2 - b) * k + ko) * c + ci] =
                        w[((a * 3 + b) * c + ci) * k + ko];
                }
            }
        }
    }
    f
}

fn assert_within(what: &str, got: &[f32], want: &[f64], bound: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = (0.0f64, 0usize);
    for (i, ((&g, &w), &b)) in got.iter().zip(want).zip(bound).enumerate() {
        let err = (f64::from(g) - w).abs();
        // A floor of 1e-7 for outputs whose terms are all zero (a padded corner).
        assert!(
            err <= b + 1e-7,
            "{what}: element {i} is {g}, expected {w} (error {err:.3e} over the bound {b:.3e})"
        );
        if b > 0.0 && err / b > worst.0 {
            worst = (err / b, i);
        }
    }
    eprintln!("{what}: worst error {:.2} of its bound", worst.0);
}

struct Case {
    x: [usize; 4],
    cout: usize,
    padding: Padding,
    relu: bool,
}

fn cases() -> Vec<Case> {
    use Padding::*;
    let c = |x, cout, padding, relu| Case {
        x,
        cout,
        padding,
        relu,
    };
    vec![
        // batch 1, odd H and W, channels not multiples of 4 (the workgroup-memory products)
        c([1, 7, 9, 3], 5, Same, false),
        c([1, 7, 9, 3], 5, Valid, true),
        // one channel in and out
        c([2, 5, 6, 1], 1, Same, false),
        // H and W smaller than one tile, and exactly a tile's input (valid: 6 -> 4)
        c([1, 1, 1, 4], 8, Same, false),
        c([2, 6, 6, 4], 4, Valid, false),
        // channels that are multiples of 4 (the subgroup products), more rows than a tile
        c([2, 15, 14, 8], 12, Same, true),
        c([3, 9, 13, 12], 68, Valid, false),
        c([1, 11, 10, 36], 20, Same, true),
    ]
}

fn spec(c: &Case) -> Conv2dSpec {
    Conv2dSpec {
        stride: (1, 1),
        padding: c.padding,
        relu: c.relu,
    }
}

/// Runs `f` on every kernel family with each Winograd algorithm forced, then restores auto.
fn each_algorithm(families: Vec<(&'static str, &'static Gpu)>, f: impl Fn(&str, &Gpu, usize)) {
    let _one = ALGO.lock().unwrap_or_else(|e| e.into_inner());
    for (family, gpu) in families {
        for (algo, m) in ALGOS {
            gpu.set_conv_algo(algo);
            f(&format!("{family}, {}", algo.name()), gpu, m);
        }
        gpu.set_conv_algo(ConvAlgo::Auto);
    }
}

fn check_forward(families: Vec<(&'static str, &'static Gpu)>) {
    each_algorithm(families, |what, gpu, m| {
        for (i, c) in cases().iter().enumerate() {
            let ws = [3, 3, c.x[3], c.cout];
            let x = rand_vec(c.x.iter().product(), 10 + i as u64);
            let w = rand_vec(ws.iter().product(), 20 + i as u64);
            let b = rand_vec(c.cout, 30 + i as u64);
            let y = conv::conv2d_forward(
                gpu,
                &upload(gpu, &c.x, &x),
                &upload(gpu, &ws, &w),
                &upload(gpu, &[c.cout], &b),
                &spec(c),
            )
            .unwrap();
            let (x64, w64) = (to_f64(&x), to_f64(&w));
            let (want, ys) =
                conv2d_ref(&x64, c.x, &w64, ws, &to_f64(&b), (1, 1), c.padding, c.relu);
            assert_eq!(y.dims(), ys, "{what}: case {i}: output shape");
            let pad = usize::from(c.padding == Padding::Same);
            let mut bound = winograd_bound(&x64, c.x, &w64, c.cout, (pad, pad), (ys[1], ys[2]), m);
            // The bias adds one rounding of a value at most |y| + |b|.
            for (e, (yv, bv)) in bound.iter_mut().zip(want.iter().zip(b.iter().cycle())) {
                *e += f64::from(f32::EPSILON) * (yv.abs() + f64::from(bv.abs()));
            }
            assert_within(
                &format!("{what}: case {i} forward"),
                &read(gpu, &y),
                &want,
                &bound,
            );
        }
    });
}

#[test]
fn winograd_forward_matches_cpu_reference_within_its_bound() {
    gpu_or_skip!();
    check_forward(kernel_families());
}

#[test]
fn winograd_forward_splits_a_batch_past_the_binding_limit() {
    gpu_or_skip!();
    // 64 KiB bindings: the transformed input of case 5 (F(2x2): 16 x 56 tiles x 8 channels x 4
    // bytes = 28 KiB per image) fits one image per chunk, so the batch runs in chunks.
    check_forward(families_with(Some(SMALL_BINDING), None));
}

#[test]
fn winograd_input_gradient_matches_cpu_backward_within_its_bound() {
    gpu_or_skip!();
    each_algorithm(kernel_families(), |what, gpu, m| {
        for (i, c) in cases().iter().enumerate() {
            let ws = [3, 3, c.x[3], c.cout];
            let s = spec(c);
            let x = rand_vec(c.x.iter().product(), 40 + i as u64);
            let w = rand_vec(ws.iter().product(), 50 + i as u64);
            let ys = conv::conv2d_output_shape(&c.x, &ws, &s).unwrap();
            let dy = rand_vec(ys.iter().product(), 60 + i as u64);
            let g = conv::conv2d_backward(
                gpu,
                &upload(gpu, &c.x, &x),
                &upload(gpu, &ws, &w),
                &upload(gpu, &ys, &dy),
                &s,
                true,
            )
            .unwrap();
            let (w64, dy64) = (to_f64(&w), to_f64(&dy));
            let (dx, _, _) =
                conv2d_backward_ref(&to_f64(&x), c.x, &w64, ws, &dy64, (1, 1), c.padding);
            // dx is the convolution of dy (N,OH,OW,K) with the flipped kernel, padded by
            // 2 - pad: its bound is the forward bound of that convolution.
            let pad = 2 - usize::from(c.padding == Padding::Same);
            let bound = winograd_bound(
                &dy64,
                ys,
                &flipped(&w64, c.x[3], c.cout),
                c.x[3],
                (pad, pad),
                (c.x[1], c.x[2]),
                m,
            );
            assert_within(
                &format!("{what}: case {i} dx"),
                &read(gpu, g.dx.as_ref().unwrap()),
                &dx,
                &bound,
            );
        }
    });
}

#[test]
fn winograd_input_gradient_matches_finite_differences() {
    gpu_or_skip!();
    // L = sum(y * r), so dL/dx is what conv2d_backward returns for dy = r; central differences
    // of the CPU forward in f64 (h = 1e-3; L is linear in x, so only rounding remains).
    let fd = [
        ([1usize, 5, 6, 4], 4usize, Padding::Same),
        ([2, 6, 5, 3], 2, Padding::Valid),
    ];
    each_algorithm(kernel_families(), |what, gpu, _| {
        for (i, (xs, cout, padding)) in fd.into_iter().enumerate() {
            let ws = [3, 3, xs[3], cout];
            let s = Conv2dSpec {
                stride: (1, 1),
                padding,
                relu: false,
            };
            let x = to_f64(&rand_vec(xs.iter().product(), 70 + i as u64));
            let w = to_f64(&rand_vec(ws.iter().product(), 80 + i as u64));
            let b = vec![0.0; cout];
            let ys = conv::conv2d_output_shape(&xs, &ws, &s).unwrap();
            let r = to_f64(&rand_vec(ys.iter().product(), 90 + i as u64));
            let num = numeric_grad(&x, 1e-3, |v| {
                dot(&conv2d_ref(v, xs, &w, ws, &b, (1, 1), padding, false).0, &r)
            });
            let f32v = |v: &[f64]| v.iter().map(|&a| a as f32).collect::<Vec<_>>();
            let g = conv::conv2d_backward(
                gpu,
                &upload(gpu, &xs, &f32v(&x)),
                &upload(gpu, &ws, &f32v(&w)),
                &upload(gpu, &ys, &f32v(&r)),
                &s,
                true,
            )
            .unwrap();
            assert_close(
                &format!("{what}: case {i} dx"),
                &read(gpu, g.dx.as_ref().unwrap()),
                &num,
                1e-3,
                1e-3,
            );
        }
    });
}

#[test]
fn a_frozen_kernel_keeps_its_transform_only_while_unchanged() {
    gpu_or_skip!();
    each_algorithm(kernel_families(), |what, gpu, _| {
        let xs = [2, 9, 7, 8];
        let ws = [3, 3, 8, 12];
        let s = Conv2dSpec::new(1, Padding::Same, false);
        let x = upload(gpu, &xs, &rand_vec(xs.iter().product(), 1));
        let w0 = rand_vec(ws.iter().product(), 2);
        let w1 = rand_vec(ws.iter().product(), 3);
        let w = upload(gpu, &ws, &w0);
        let b = upload(gpu, &[12], &[0.0; 12]);
        let want = |wv: &[f32]| {
            conv2d_ref(
                &to_f64(&read(gpu, &x)),
                xs,
                &to_f64(wv),
                ws,
                &[0.0; 12],
                (1, 1),
                Padding::Same,
                false,
            )
            .0
        };
        // Three calls: the kernel is seen unchanged on the second, which keeps its transformed
        // copy, and the third reads that copy.
        for call in 0..3 {
            let y = conv::conv2d_forward(gpu, &x, &w, &b, &s).unwrap();
            assert_close(
                &format!("{what}: call {call}"),
                &read(gpu, &y),
                &want(&w0),
                1e-3,
                1e-3,
            );
        }
        // A written kernel (a training step) must not be served its old transform.
        w.write(gpu, &w1);
        let y = conv::conv2d_forward(gpu, &x, &w, &b, &s).unwrap();
        assert_close(
            &format!("{what}: after a write"),
            &read(gpu, &y),
            &want(&w1),
            1e-3,
            1e-3,
        );
    });
}
