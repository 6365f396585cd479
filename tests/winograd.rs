//! Winograd convolution (F(2x2,3x3), F(4x4,3x3)) against the direct CPU convolution, forward
//! and input gradient, on every kernel family, with error bounds derived from the transforms;
//! its input gradient against finite differences; and a frozen kernel's transformed copy kept
//! only while the kernel is unchanged.

mod common;

use std::sync::Mutex;

use cnn_wgpu::gpu::{ConvAlgo, Gpu};
use cnn_wgpu::ops::conv::{self, Conv2dSpec};
use cnn_wgpu::ops::Padding;
use cnn_wgpu::reference::{flipped_kernel, winograd_error_bound};
use common::*;

/// The algorithm is a device switch, and the family devices are shared by this binary's tests:
/// one test at a time sets it.
static ALGO: Mutex<()> = Mutex::new(());

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
        c([1, 8, 8, 4], 8, Valid, true),
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
        for algo in ConvAlgo::WINOGRAD {
            let m = algo.winograd_side().unwrap();
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
            let mut bound =
                winograd_error_bound(&x64, c.x, &w64, c.cout, (pad, pad), (ys[1], ys[2]), m);
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
            let bound = winograd_error_bound(
                &dy64,
                ys,
                &flipped_kernel(&w64, c.x[3], c.cout),
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
        // copy (a texture for the subgroup kernels, a buffer for the others), and the third
        // reads that copy, so it neither transforms nor packs the kernel.
        let mut dispatches = Vec::new();
        let mut held = Vec::new();
        let mut cached = Vec::new();
        for call in 0..3 {
            // Each call starts from an empty free list, so that what it leaves cached is its own.
            gpu.trim_pool();
            let before = gpu.dispatch_count();
            let y = conv::conv2d_forward(gpu, &x, &w, &b, &s).unwrap();
            dispatches.push(gpu.dispatch_count() - before);
            assert_close(
                &format!("{what}: call {call}"),
                &read(gpu, &y),
                &want(&w0),
                1e-3,
                1e-3,
            );
            drop(y);
            let stats = gpu.pool_stats();
            held.push(stats.in_use);
            cached.push(stats.cached);
        }
        assert!(
            dispatches[2] < dispatches[0],
            "{what}: the third call reads the kept transform, so it dispatches less than the first: {dispatches:?}"
        );
        assert!(
            held[1] > held[0],
            "{what}: the second call keeps the transform: {} -> {} bytes in use",
            held[0],
            held[1]
        );
        // The keeping call's one-offs (the transformed kernel that was packed into the kept
        // texture, the texture's staging buffer) are not cached: it leaves the pool holding
        // what a call that reads the kept transform leaves (the output, the scratch).
        assert_eq!(
            cached[1], cached[2],
            "{what}: bytes cached after the keeping call and after the next"
        );
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
        // Unchanged again after the write: kept again, from the new contents.
        let y = conv::conv2d_forward(gpu, &x, &w, &b, &s).unwrap();
        assert_close(
            &format!("{what}: after a write, kept again"),
            &read(gpu, &y),
            &want(&w1),
            1e-3,
            1e-3,
        );
        // The kept transform goes back to the pool with its kernel.
        drop(y);
        let before = gpu.pool_stats().in_use;
        drop(w);
        let freed = before - gpu.pool_stats().in_use;
        let w_bytes = (ws.iter().product::<usize>() * 4) as u64;
        assert!(
            freed > w_bytes,
            "{what}: dropping the kernel returns its buffer and its kept transform: {freed} bytes"
        );
    });
}
