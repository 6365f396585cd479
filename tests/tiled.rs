//! The GPU-class tiled kernels (gemm_tiled.wgsl) in each of their configurations, forced on a
//! device of its own, against the CPU references: conv2d forward (gathered A, an RGB input read
//! value by value), its input gradient (B packed transposed), its kernel gradient (A along M,
//! K split into slices), dense forward and backward, and Winograd's batched products. The
//! shapes span several tiles of the largest configuration (128x128) in both M and N, with
//! rows, columns and K off every tile. The other kernel tests run the tiled kernels in one
//! configuration beside the other families (common::kernel_families).

mod common;

use cnn_wgpu::gpu::{ConvAlgo, ShaderId, TiledConfig};
use cnn_wgpu::ops::conv::{self, Conv2dSpec};
use cnn_wgpu::ops::{dense, Padding};
use cnn_wgpu::reference::winograd_error_bound;
use cnn_wgpu::Gpu;
use common::*;

/// A device that runs every vec4 product on the tiled kernels in `config`.
fn tiled_gpu(config: TiledConfig) -> Option<Gpu> {
    open_with(|o| {
        o.subgroups = false;
        o.tiled = true;
        o.tiled_config = Some(config);
    })
}

/// The tiled pipelines `gpu` built, as (entry point, TL_WX, TL_WY, TL_TM, TL_TN4, TL_BK).
fn tiled_pipelines(gpu: &Gpu) -> Vec<(&'static str, [u32; 5])> {
    gpu.built_pipelines()
        .into_iter()
        .filter(|(s, _, _)| matches!(s, ShaderId::Conv2dTiled | ShaderId::MatmulTiled))
        .map(|(_, entry, consts)| {
            let get = |name: &str| {
                consts
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map_or(0, |&(_, v)| v as u32)
            };
            (
                entry,
                ["TL_WX", "TL_WY", "TL_TM", "TL_TN4", "TL_BK"].map(get),
            )
        })
        .collect()
}

fn configs_that_fit(gpu: &Gpu) -> Vec<TiledConfig> {
    TiledConfig::ALL
        .into_iter()
        .filter(|c| c.fits(gpu.limits()))
        .collect()
}

#[test]
fn every_tiled_configuration_matches_the_cpu_convolution_and_its_gradients() {
    let Some(probe) = gpu() else {
        return;
    };
    // (input, kernel (h, w), cout, stride, padding): M = N*OH*OW over two 128-row tiles,
    // Cout over one 128-column tile (132), an RGB input (its forward gathers A value by
    // value; its input gradient runs on the workgroup-memory kernel), a strided layer.
    let cases = [
        (
            [2usize, 11, 13, 8],
            (3usize, 3usize),
            132usize,
            1usize,
            Padding::Same,
        ),
        ([1, 10, 9, 3], (3, 3), 8, 1, Padding::Valid),
        ([3, 9, 7, 12], (2, 3), 20, 2, Padding::Same),
    ];
    for config in configs_that_fit(probe) {
        let gpu = &tiled_gpu(config).expect("a second device on the adapter");
        // A kernel gradient split into slices as well as whole.
        for slices in [None, Some(3)] {
            gpu.force_kernel_gradient_slices(slices);
            for (i, &(xs, (kh, kw), cout, stride, padding)) in cases.iter().enumerate() {
                let what = format!("tiled {}: case {i}, slices {slices:?}", config.name);
                let ws = [kh, kw, xs[3], cout];
                let spec = Conv2dSpec::new(stride, padding, true);
                let x = rand_vec(xs.iter().product(), 500 + i as u64);
                let w = rand_vec(ws.iter().product(), 510 + i as u64);
                let b = rand_vec(cout, 520 + i as u64);
                let (xt, wt, bt) = (
                    upload(gpu, &xs, &x),
                    upload(gpu, &ws, &w),
                    upload(gpu, &[cout], &b),
                );
                let y = conv::conv2d_forward(gpu, &xt, &wt, &bt, &spec).unwrap();
                let (want, ys) = conv2d_ref(
                    &to_f64(&x),
                    xs,
                    &to_f64(&w),
                    ws,
                    &to_f64(&b),
                    (stride, stride),
                    padding,
                    true,
                );
                assert_eq!(y.dims(), ys, "{what}: output shape");
                // K = KH*KW*Cin terms in [-1,1]: f32 rounding ~ K * 6e-8, 1e-4 leaves margin.
                assert_close(
                    &format!("{what} forward"),
                    &read(gpu, &y),
                    &want,
                    1e-4,
                    1e-4,
                );

                let dy = rand_vec(ys.iter().product(), 530 + i as u64);
                let plain = Conv2dSpec::new(stride, padding, false);
                let g = conv::conv2d_backward(gpu, &xt, &wt, &upload(gpu, &ys, &dy), &plain, true)
                    .unwrap();
                // dx = sum over taps of dy * w, dw = sum over positions of x * dy,
                // db = sum of dy: the CPU backward from the definition.
                let (dx, dw, db) = conv2d_backward_ref(
                    &to_f64(&x),
                    xs,
                    &to_f64(&w),
                    ws,
                    &to_f64(&dy),
                    (stride, stride),
                    padding,
                );
                let sum_len = (ys[0] * ys[1] * ys[2]) as f64;
                assert_close(
                    &format!("{what} dx"),
                    &read(gpu, g.dx.as_ref().unwrap()),
                    &dx,
                    1e-4,
                    1e-4,
                );
                // dw sums N*OH*OW products: rounding grows like its square root.
                assert_close(
                    &format!("{what} dw"),
                    &read(gpu, &g.dw),
                    &dw,
                    1e-4,
                    1e-4 * sum_len.sqrt(),
                );
                assert_close(
                    &format!("{what} db"),
                    &read(gpu, &g.db),
                    &db,
                    1e-4,
                    1e-4 * sum_len.sqrt(),
                );
            }
        }
        // All three products ran on the tiled kernels, in this configuration only.
        let built = tiled_pipelines(gpu);
        let want = [config.wx, config.wy, config.tm, config.tn4, config.bk];
        for entry in ["gemm_tiled", "gemm_tiled_m"] {
            assert!(
                built.iter().any(|(e, _)| *e == entry),
                "tiled {}: {entry} never ran ({built:?})",
                config.name
            );
        }
        assert!(
            built.iter().all(|(_, c)| *c == want),
            "tiled {}: a pipeline in another configuration ran: {built:?}",
            config.name
        );
    }
}

#[test]
fn every_tiled_configuration_matches_the_cpu_dense_products_and_winograd() {
    let Some(probe) = gpu() else {
        return;
    };
    for config in configs_that_fit(probe) {
        let gpu = &tiled_gpu(config).expect("a second device on the adapter");
        // (rows, in, out): M over two 128-row tiles with N over one 128-column tile, and
        // batch 1 with K off every stage.
        for (i, (rows, inp, out)) in [(150usize, 36usize, 132usize), (1, 20, 8)]
            .into_iter()
            .enumerate()
        {
            let what = format!("tiled {}: dense case {i}", config.name);
            let x = rand_vec(rows * inp, 600 + i as u64);
            let w = rand_vec(inp * out, 610 + i as u64);
            let b = rand_vec(out, 620 + i as u64);
            let dy = rand_vec(rows * out, 630 + i as u64);
            let (xt, wt) = (upload(gpu, &[rows, inp], &x), upload(gpu, &[inp, out], &w));
            let y =
                dense::dense_forward(gpu, &xt, &wt, Some(&upload(gpu, &[out], &b)), true).unwrap();
            let (xf, wf, dyf) = (to_f64(&x), to_f64(&w), to_f64(&dy));
            let want = dense_ref(&xf, rows, inp, &wf, out, Some(&to_f64(&b)), true);
            assert_close(
                &format!("{what} forward"),
                &read(gpu, &y),
                &want,
                1e-4,
                1e-4,
            );
            let g = dense::dense_backward(gpu, &xt, &wt, &upload(gpu, &[rows, out], &dy), true)
                .unwrap();
            // dx = dy w^T (rows, in), dw = x^T dy (in, out).
            let mut dx = vec![0.0; rows * inp];
            let mut dw = vec![0.0; inp * out];
            for r in 0..rows {
                for k in 0..inp {
                    for o in 0..out {
                        dx[r * inp + k] += dyf[r * out + o] * wf[k * out + o];
                        dw[k * out + o] += xf[r * inp + k] * dyf[r * out + o];
                    }
                }
            }
            assert_close(
                &format!("{what} dx"),
                &read(gpu, g.dx.as_ref().unwrap()),
                &dx,
                1e-4,
                1e-4 * (out as f64).sqrt(),
            );
            assert_close(
                &format!("{what} dw"),
                &read(gpu, &g.dw),
                &dw,
                1e-4,
                1e-4 * (rows as f64).sqrt(),
            );
        }
        // Winograd's ALPHA^2 batched products (dense's MODE 0 with products) on this
        // configuration, against the direct CPU convolution.
        for algo in ConvAlgo::WINOGRAD {
            gpu.set_conv_algo(algo);
            let (xs, ws) = ([2usize, 11, 10, 16], [3usize, 3, 16, 20]);
            let spec = Conv2dSpec::new(1, Padding::Same, false);
            let x = rand_vec(xs.iter().product(), 640);
            let w = rand_vec(ws.iter().product(), 641);
            let b = rand_vec(20, 642);
            let y = conv::conv2d_forward(
                gpu,
                &upload(gpu, &xs, &x),
                &upload(gpu, &ws, &w),
                &upload(gpu, &[20], &b),
                &spec,
            )
            .unwrap();
            let (want, _) = conv2d_ref(
                &to_f64(&x),
                xs,
                &to_f64(&w),
                ws,
                &to_f64(&b),
                (1, 1),
                Padding::Same,
                false,
            );
            // Within the rounding bound derived from Winograd's transforms (as
            // tests/winograd.rs), plus one rounding of the bias add.
            let m = algo.winograd_side().unwrap();
            let mut bound =
                winograd_error_bound(&to_f64(&x), xs, &to_f64(&w), 20, (1, 1), (11, 10), m);
            for (e, (yv, bv)) in bound.iter_mut().zip(want.iter().zip(b.iter().cycle())) {
                *e += f64::from(f32::EPSILON) * (yv.abs() + f64::from(bv.abs()));
            }
            let got = read(gpu, &y);
            for (i, ((&g, &w), &e)) in got.iter().zip(&want).zip(&bound).enumerate() {
                assert!(
                    (f64::from(g) - w).abs() <= e + 1e-7,
                    "tiled {}: winograd {}: element {i} is {g}, expected {w} (bound {e:.3e})",
                    config.name,
                    algo.name()
                );
            }
        }
        gpu.set_conv_algo(ConvAlgo::Auto);
        let built = tiled_pipelines(gpu);
        assert!(
            !built.is_empty()
                && built
                    .iter()
                    .all(|(_, c)| *c == [config.wx, config.wy, config.tm, config.tn4, config.bk]),
            "tiled {}: the products did not all run in this configuration: {built:?}",
            config.name
        );
    }
}

/// `CNN_WGPU_TILED` names a configuration; anything else is an error naming the variable and
/// the names it takes.
#[test]
fn tiled_configurations_are_named_and_checked_against_the_limits() {
    for c in TiledConfig::ALL {
        assert_eq!(TiledConfig::named(c.name), Some(c));
        // Every configuration fits wgpu's default limits (16 KiB of workgroup memory, 256
        // invocations), so it runs on any adapter wgpu supports.
        assert!(c.fits(&wgpu::Limits::default()), "{c:?}");
        assert_eq!(
            c.workgroup_bytes(),
            2 * c.bk * (c.rows() + c.cols()) as u32 * 4
        );
    }
    assert_eq!(TiledConfig::named("256x256"), None);
    let small = wgpu::Limits {
        max_compute_workgroup_storage_size: 8192,
        ..wgpu::Limits::default()
    };
    let fit: Vec<&str> = TiledConfig::ALL
        .iter()
        .filter(|c| c.fits(&small))
        .map(|c| c.name)
        .collect();
    assert_eq!(fit, ["64x64"]);
}
