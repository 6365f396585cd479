//! conv2d / conv1d against the direct CPU convolution, and their backward against finite
//! differences and an independent CPU backward.

mod common;

use cnn_wgpu::ops::conv::{self, Conv2dSpec};
use cnn_wgpu::ops::Padding;
use common::*;

// f32 accumulation over K = KH*KW*Cin terms in [-1,1]: error ~ K * 6e-8; 1e-4 leaves margin.
const RTOL: f64 = 1e-4;
const ATOL: f64 = 1e-4;

struct Case {
    x: [usize; 4],
    k: (usize, usize),
    cout: usize,
    stride: (usize, usize),
    padding: Padding,
    relu: bool,
}

fn cases() -> Vec<Case> {
    use Padding::*;
    let c = |x, k, cout, stride, padding, relu| Case {
        x,
        k,
        cout,
        stride,
        padding,
        relu,
    };
    vec![
        // batch 1, channel counts off every tile size
        c([1, 7, 9, 3], (3, 3), 5, (1, 1), Same, false),
        c([1, 7, 9, 3], (3, 3), 5, (1, 1), Valid, true),
        // 1x1 spatial input with same padding: only the centre tap sees data
        c([2, 1, 1, 17], (3, 3), 65, (1, 1), Same, false),
        // stride 2 with both paddings, odd sizes (TF puts the extra padding after)
        c([3, 11, 8, 6], (3, 3), 7, (2, 2), Same, true),
        c([3, 11, 8, 6], (3, 3), 7, (2, 2), Valid, false),
        // rectangular kernel and strides
        c([2, 10, 13, 4], (5, 2), 3, (3, 1), Same, false),
        c([2, 10, 13, 4], (2, 5), 9, (1, 2), Valid, false),
        // 1x1 kernel, more output channels than one tile (64)
        c([2, 5, 5, 33], (1, 1), 130, (1, 1), Valid, false),
        // a kernel gradient whose sum over N*OH*OW = 1920 is split into 8 slices
        c([4, 24, 20, 5], (3, 3), 6, (1, 1), Same, false),
        // more rows than one tile and a K slice that is not a multiple of 16
        c([2, 15, 14, 19], (3, 3), 70, (1, 1), Same, true),
        // channel counts that are multiples of 4, which the subgroup kernels take: batch 1,
        // rows and columns off the 64x64 tile, strides, a rectangular kernel, a 1x1 kernel, and
        // a kernel gradient long enough to be split
        c([1, 7, 9, 4], (3, 3), 8, (1, 1), Same, true),
        c([2, 11, 10, 8], (3, 3), 12, (2, 2), Valid, false),
        c([3, 9, 13, 12], (3, 3), 68, (1, 1), Same, true),
        c([2, 6, 7, 36], (2, 3), 8, (1, 2), Same, false),
        c([1, 5, 5, 16], (1, 1), 132, (1, 1), Valid, false),
        c([4, 24, 20, 8], (3, 3), 4, (1, 1), Same, false),
        // RGB-like inputs (Cin not a multiple of 4, input length not a multiple of 4) with Cout
        // a multiple of 4: the subgroup forward gathers A value by value
        c([2, 12, 11, 3], (3, 3), 32, (1, 1), Valid, true),
        c([1, 5, 6, 3], (3, 3), 8, (2, 2), Same, false),
        c([3, 6, 5, 5], (2, 2), 4, (1, 1), Same, false),
    ]
}

#[test]
fn conv2d_forward_matches_cpu_reference() {
    gpu_or_skip!();
    for (family, gpu) in kernel_families() {
        for (i, c) in cases().iter().enumerate() {
            let ws = [c.k.0, c.k.1, c.x[3], c.cout];
            let x = rand_vec(c.x.iter().product(), 10 + i as u64);
            let w = rand_vec(ws.iter().product(), 20 + i as u64);
            let b = rand_vec(c.cout, 30 + i as u64);
            let spec = Conv2dSpec {
                stride: c.stride,
                padding: c.padding,
                relu: c.relu,
            };
            let y = conv::conv2d_forward(
                gpu,
                &upload(gpu, &c.x, &x),
                &upload(gpu, &ws, &w),
                &upload(gpu, &[c.cout], &b),
                &spec,
            )
            .unwrap();
            let (want, ys) = conv2d_ref(
                &to_f64(&x),
                c.x,
                &to_f64(&w),
                ws,
                &to_f64(&b),
                c.stride,
                c.padding,
                c.relu,
            );
            assert_eq!(y.dims(), ys, "{family}: case {i}: output shape");
            assert_close(
                &format!("{family}: case {i} forward"),
                &read(gpu, &y),
                &want,
                RTOL,
                ATOL,
            );
        }
    }
}

#[test]
fn conv2d_backward_matches_cpu_backward() {
    gpu_or_skip!();
    for (family, gpu) in kernel_families() {
        for (i, c) in cases().iter().enumerate() {
            let ws = [c.k.0, c.k.1, c.x[3], c.cout];
            let spec = Conv2dSpec {
                stride: c.stride,
                padding: c.padding,
                relu: false,
            };
            let x = rand_vec(c.x.iter().product(), 40 + i as u64);
            let w = rand_vec(ws.iter().product(), 50 + i as u64);
            let ys = conv::conv2d_output_shape(&c.x, &ws, &spec).unwrap();
            let dy = rand_vec(ys.iter().product(), 60 + i as u64);
            let g = conv::conv2d_backward(
                gpu,
                &upload(gpu, &c.x, &x),
                &upload(gpu, &ws, &w),
                &upload(gpu, &ys, &dy),
                &spec,
                true,
            )
            .unwrap();
            let (dx, dw, db) = conv2d_backward_ref(
                &to_f64(&x),
                c.x,
                &to_f64(&w),
                ws,
                &to_f64(&dy),
                c.stride,
                c.padding,
            );
            // dw sums N*OH*OW products: allow for the longer accumulation.
            let k = (ys[0] * ys[1] * ys[2]) as f64;
            assert_close(
                &format!("{family}: case {i} dx"),
                &read(gpu, g.dx.as_ref().unwrap()),
                &dx,
                RTOL,
                ATOL,
            );
            assert_close(
                &format!("{family}: case {i} dw"),
                &read(gpu, &g.dw),
                &dw,
                RTOL,
                ATOL * k.sqrt(),
            );
            assert_close(
                &format!("{family}: case {i} db"),
                &read(gpu, &g.db),
                &db,
                RTOL,
                ATOL * k.sqrt(),
            );
        }
    }
}

#[test]
fn conv2d_backward_matches_finite_differences() {
    gpu_or_skip!();
    // L = sum(y * r) so dL/dy = r; compare the GPU's dL/dx, dL/dw, dL/db with central
    // differences of the CPU forward in f64 (h = 1e-3; L is linear in each, so only rounding).
    // The last three cases have channel counts that are multiples of 4, which the subgroup
    // kernels take.
    let fd_cases = [
        (
            [2usize, 5, 4, 3],
            (3usize, 3usize),
            2usize,
            (1usize, 1usize),
            Padding::Same,
        ),
        ([1, 6, 5, 2], (3, 2), 3, (2, 2), Padding::Valid),
        ([1, 5, 5, 2], (3, 3), 2, (2, 2), Padding::Same),
        ([1, 5, 6, 4], (3, 3), 4, (1, 1), Padding::Same),
        ([2, 7, 5, 8], (3, 3), 4, (2, 2), Padding::Valid),
        ([1, 4, 5, 3], (2, 3), 8, (1, 1), Padding::Same),
    ];
    for (family, gpu) in kernel_families() {
        for (i, (xs, k, cout, stride, padding)) in fd_cases.into_iter().enumerate() {
            let ws = [k.0, k.1, xs[3], cout];
            let spec = Conv2dSpec {
                stride,
                padding,
                relu: false,
            };
            let x = to_f64(&rand_vec(xs.iter().product(), 70 + i as u64));
            let w = to_f64(&rand_vec(ws.iter().product(), 80 + i as u64));
            let b = to_f64(&rand_vec(cout, 90 + i as u64));
            let ys = conv::conv2d_output_shape(&xs, &ws, &spec).unwrap();
            let r = to_f64(&rand_vec(ys.iter().product(), 100 + i as u64));
            let loss = |x: &[f64], w: &[f64], b: &[f64]| {
                dot(&conv2d_ref(x, xs, w, ws, b, stride, padding, false).0, &r)
            };
            let num_dx = numeric_grad(&x, 1e-3, |v| loss(v, &w, &b));
            let num_dw = numeric_grad(&w, 1e-3, |v| loss(&x, v, &b));
            let num_db = numeric_grad(&b, 1e-3, |v| loss(&x, &w, v));
            let f32v = |v: &[f64]| v.iter().map(|&a| a as f32).collect::<Vec<_>>();
            let r32 = f32v(&r);
            let g = conv::conv2d_backward(
                gpu,
                &upload(gpu, &xs, &f32v(&x)),
                &upload(gpu, &ws, &f32v(&w)),
                &upload(gpu, &ys, &r32),
                &spec,
                true,
            )
            .unwrap();
            assert_close(
                &format!("{family}: fd case {i} dx"),
                &read(gpu, g.dx.as_ref().unwrap()),
                &num_dx,
                1e-3,
                1e-4,
            );
            assert_close(
                &format!("{family}: fd case {i} dw"),
                &read(gpu, &g.dw),
                &num_dw,
                1e-3,
                1e-4,
            );
            assert_close(
                &format!("{family}: fd case {i} db"),
                &read(gpu, &g.db),
                &num_db,
                1e-3,
                1e-4,
            );
        }
    }
}

#[test]
fn conv2d_backward_without_input_gradient_skips_it() {
    let gpu = gpu_or_skip!();
    let xs = [1, 4, 4, 2];
    let ws = [3, 3, 2, 2];
    let spec = Conv2dSpec::new(1, Padding::Same, false);
    let x = upload(gpu, &xs, &rand_vec(32, 1));
    let w = upload(gpu, &ws, &rand_vec(36, 2));
    let dy = upload(gpu, &[1, 4, 4, 2], &rand_vec(32, 3));
    let with = conv::conv2d_backward(gpu, &x, &w, &dy, &spec, true).unwrap();
    let without = conv::conv2d_backward(gpu, &x, &w, &dy, &spec, false).unwrap();
    assert!(without.dx.is_none());
    assert_eq!(
        read(gpu, &with.dw),
        read(gpu, &without.dw),
        "dw does not depend on whether dx was asked for"
    );
}

#[test]
fn conv1d_matches_cpu_reference_and_gradients() {
    gpu_or_skip!();
    // (N,L,C) -> Cout with kernel K: (2,11,5) -> 7 with K 4 (Keras Conv1D(7, 4)) at both
    // paddings; then channel counts that are multiples of 4, which the subgroup kernels take:
    // batch 1 with L 13 and K 3, and a sequence long enough (N*OL = 300) for several row tiles.
    let cases = [
        (
            2usize,
            11usize,
            5usize,
            4usize,
            7usize,
            1usize,
            Padding::Same,
        ),
        (2, 11, 5, 4, 7, 2, Padding::Valid),
        (1, 13, 4, 3, 8, 1, Padding::Same),
        (3, 101, 8, 2, 12, 1, Padding::Valid),
    ];
    for (family, gpu) in kernel_families() {
        for (i, (n, l, c, k, co, stride, padding)) in cases.into_iter().enumerate() {
            let x = rand_vec(n * l * c, 200 + i as u64);
            let w = rand_vec(k * c * co, 210 + i as u64);
            let b = rand_vec(co, 220 + i as u64);
            let y = conv::conv1d_forward(
                gpu,
                &upload(gpu, &[n, l, c], &x),
                &upload(gpu, &[k, c, co], &w),
                &upload(gpu, &[co], &b),
                stride,
                padding,
                true,
            )
            .unwrap();
            let (want, ys) = conv2d_ref(
                &to_f64(&x),
                [n, 1, l, c],
                &to_f64(&w),
                [1, k, c, co],
                &to_f64(&b),
                (1, stride),
                padding,
                true,
            );
            assert_eq!(y.dims(), [ys[0], ys[2], ys[3]]);
            assert_close(
                &format!("{family}: conv1d case {i} forward"),
                &read(gpu, &y),
                &want,
                RTOL,
                ATOL,
            );

            let dy = rand_vec(want.len(), 230 + i as u64);
            let g = conv::conv1d_backward(
                gpu,
                &upload(gpu, &[n, l, c], &x),
                &upload(gpu, &[k, c, co], &w),
                &upload(gpu, y.dims(), &dy),
                stride,
                padding,
                true,
            )
            .unwrap();
            let (dx, dw, db) = conv2d_backward_ref(
                &to_f64(&x),
                [n, 1, l, c],
                &to_f64(&w),
                [1, k, c, co],
                &to_f64(&dy),
                (1, stride),
                padding,
            );
            assert_eq!(g.dw.dims(), [k, c, co]);
            assert_close(
                &format!("{family}: conv1d case {i} dx"),
                &read(gpu, g.dx.as_ref().unwrap()),
                &dx,
                RTOL,
                ATOL,
            );
            // dw and db sum N*OL products (up to 300): sqrt(300) * 1e-4 < 2e-3.
            assert_close(
                &format!("{family}: conv1d case {i} dw"),
                &read(gpu, &g.dw),
                &dw,
                RTOL,
                2e-3,
            );
            assert_close(
                &format!("{family}: conv1d case {i} db"),
                &read(gpu, &g.db),
                &db,
                RTOL,
                2e-3,
            );
        }
    }
}

#[test]
fn conv2d_rejects_mismatched_shapes_naming_both() {
    let gpu = gpu_or_skip!();
    let x = upload(gpu, &[1, 4, 4, 3], &rand_vec(48, 1));
    let w = upload(gpu, &[3, 3, 2, 4], &rand_vec(72, 2));
    let b = upload(gpu, &[4], &rand_vec(4, 3));
    let err = conv::conv2d_forward(gpu, &x, &w, &b, &Conv2dSpec::new(1, Padding::Same, false))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("conv2d_forward") && err.contains("(3,3,2,4)") && err.contains("(1,4,4,3)"),
        "{err}"
    );
    let w = upload(gpu, &[5, 5, 3, 4], &rand_vec(300, 2));
    let err = conv::conv2d_forward(gpu, &x, &w, &b, &Conv2dSpec::new(1, Padding::Valid, false))
        .unwrap_err()
        .to_string();
    assert!(err.contains("5x5"), "{err}");
}

/// CI states which kernel families its adapter runs (CNN_WGPU_EXPECT_KERNELS); the op tests
/// above then really ran on each. Without the statement there is nothing to hold the adapter to.
#[test]
fn the_adapter_runs_the_expected_kernel_families() {
    let gpu = gpu_or_skip!();
    let expected = expected_families();
    if expected.is_empty() {
        eprintln!(
            "skipped: CNN_WGPU_EXPECT_KERNELS is not set ({} runs {:?})",
            gpu.adapter_name(),
            adapter_families(gpu)
        );
        return;
    }
    check_expected_families(gpu);
    // The subgroup family is tested with the CPU adapter's two tile heights and a GPU's, and
    // both homes of B, beside the tiled kernels and the workgroup-memory kernels.
    let tiled = usize::from(expected.iter().any(|f| f == "tiled"));
    let want = if subgroup_family_expected() { 3 } else { 0 } + tiled + 1;
    assert_eq!(kernel_families().len(), want);
}

/// The kernel gradient's sum over N*OH*OW split into slices (partial kernels summed by the
/// column reduction) and not split, each alone and with the batch split into chunks whose
/// results accumulate into dw: forced, since the default split depends on the core count.
#[test]
fn kernel_gradient_slices_and_batch_chunks_match_the_cpu_backward() {
    gpu_or_skip!();
    // (6,24,24,8) f32 is 18 KiB an image: a 64 KiB binding takes 3 images, so two chunks of
    // N*OH*OW = 1728 terms (up to 6 slices of 256); cout 4 and 5 (not a multiple of 4: the
    // workgroup-memory kernels on every family).
    let cases = [([6usize, 24, 24, 8], 4usize), ([5, 16, 20, 3], 5)];
    let mut families = Vec::new();
    for (limit, bindings) in [(None, ""), (Some(SMALL_BINDING), ", 64 KiB bindings")] {
        for slices in [1, 6] {
            for (f, g) in families_with(limit, Some(slices)) {
                families.push((format!("{f}{bindings}"), slices, g));
            }
        }
    }
    // Dispatches each (family, case) took with one slice: the split runs must take more (the
    // column reductions of their partial kernels), or the forced split never happened.
    let mut unsplit = std::collections::HashMap::new();
    for (family, slices, gpu) in families {
        for (i, (xs, cout)) in cases.into_iter().enumerate() {
            let ws = [3, 3, xs[3], cout];
            let spec = Conv2dSpec::new(1, Padding::Same, false);
            let x = rand_vec(xs.iter().product(), 300 + i as u64);
            let w = rand_vec(ws.iter().product(), 310 + i as u64);
            let ys = conv::conv2d_output_shape(&xs, &ws, &spec).unwrap();
            let dy = rand_vec(ys.iter().product(), 320 + i as u64);
            let (_, dw, db) = conv2d_backward_ref(
                &to_f64(&x),
                xs,
                &to_f64(&w),
                ws,
                &to_f64(&dy),
                (1, 1),
                Padding::Same,
            );
            // dw sums N*OH*OW = 3456 or 1600 products in [-1,1]: rounding grows like sqrt(K).
            let atol = ATOL * ((ys[0] * ys[1] * ys[2]) as f64).sqrt();
            let (xt, wt, dyt) = (
                upload(gpu, &xs, &x),
                upload(gpu, &ws, &w),
                upload(gpu, &ys, &dy),
            );
            let before = gpu.dispatch_count();
            let g = conv::conv2d_backward(gpu, &xt, &wt, &dyt, &spec, false).unwrap();
            let dispatches = gpu.dispatch_count() - before;
            if slices == 1 {
                unsplit.insert((family.clone(), i), dispatches);
            } else {
                assert!(
                    dispatches > unsplit[&(family.clone(), i)],
                    "{family}: case {i}: {slices} slices took {dispatches} dispatches, no more than one slice"
                );
            }
            let what = format!("{family}: case {i}, {slices} slice(s)");
            assert_close(&format!("{what} dw"), &read(gpu, &g.dw), &dw, RTOL, atol);
            assert_close(&format!("{what} db"), &read(gpu, &g.db), &db, RTOL, atol);
        }
    }
}
