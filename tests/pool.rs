//! Pooling against the CPU definition; backward against finite differences.

mod common;

use cnn_wgpu::ops::pool::{self, PoolSpec};
use cnn_wgpu::ops::Padding;
use common::*;

fn specs() -> Vec<([usize; 4], PoolSpec)> {
    let s = |w: (usize, usize), st: (usize, usize), p| PoolSpec {
        window: w,
        stride: st,
        padding: p,
    };
    vec![
        ([2, 8, 6, 3], PoolSpec::square(2)),
        // odd sizes: valid drops the last row/column, same pads it
        ([1, 7, 5, 5], PoolSpec::square(2)),
        ([1, 7, 5, 5], s((2, 2), (2, 2), Padding::Same)),
        // overlapping windows (3x3 stride 2), as in many nets
        ([2, 9, 9, 4], s((3, 3), (2, 2), Padding::Valid)),
        ([2, 9, 8, 4], s((3, 3), (2, 2), Padding::Same)),
        // 1x1 spatial
        ([3, 1, 1, 7], s((1, 1), (1, 1), Padding::Valid)),
        // big channel count, batch 1
        ([1, 4, 4, 300], PoolSpec::square(2)),
        // C a multiple of 4 (max pooling moves four channels per invocation) on odd sizes,
        // 'same' padding and a window that does not divide the input
        ([1, 7, 5, 8], s((2, 2), (2, 2), Padding::Same)),
        ([3, 11, 9, 12], PoolSpec::square(3)),
    ]
}

/// Distinct values so the max is unique and finite differences never cross a tie.
fn distinct(n: usize, seed: u64) -> Vec<f32> {
    let mut v: Vec<f32> = (0..n).map(|i| i as f32 / n as f32 - 0.5).collect();
    let r = rand_vec(n, seed);
    // A seeded shuffle by sorting on random keys.
    let mut idx: Vec<usize> = (0..n).collect();
    idx.sort_by(|&a, &b| r[a].partial_cmp(&r[b]).unwrap());
    v = idx.iter().map(|&i| v[i]).collect();
    v
}

#[test]
fn pool_forward_matches_cpu_reference() {
    let gpu = gpu_or_skip!();
    for (i, (xs, spec)) in specs().into_iter().enumerate() {
        let x = rand_vec(xs.iter().product(), i as u64);
        let xt = upload(gpu, &xs, &x);
        let (ymax, _) = pool::max_pool2d(gpu, &xt, spec).unwrap();
        let (want, ys) = pool_ref(
            &to_f64(&x),
            xs,
            spec.window,
            spec.stride,
            spec.padding,
            true,
        );
        assert_eq!(ymax.dims(), ys);
        assert_close(&format!("max case {i}"), &read(gpu, &ymax), &want, 0.0, 0.0);
        let yavg = pool::avg_pool2d(gpu, &xt, spec).unwrap();
        let (want, _) = pool_ref(
            &to_f64(&x),
            xs,
            spec.window,
            spec.stride,
            spec.padding,
            false,
        );
        assert_close(
            &format!("avg case {i}"),
            &read(gpu, &yavg),
            &want,
            1e-6,
            1e-6,
        );
    }
}

#[test]
fn pool_backward_matches_finite_differences() {
    let gpu = gpu_or_skip!();
    for (i, (xs, spec)) in specs().into_iter().enumerate() {
        let x = distinct(xs.iter().product(), 50 + i as u64);
        let (_, ys) = pool_ref(
            &to_f64(&x),
            xs,
            spec.window,
            spec.stride,
            spec.padding,
            true,
        );
        let r = rand_vec(ys.iter().product(), 60 + i as u64);
        let xt = upload(gpu, &xs, &x);
        let rt = upload(gpu, &ys, &r);
        for max in [true, false] {
            // L = sum(pool(x) * r); max: dL/dx = r routed to each window's argmax;
            // avg: dL/dx = sum over covering windows of r / taps.
            let num = numeric_grad(&to_f64(&x), 1e-4, |v| {
                dot(
                    &pool_ref(v, xs, spec.window, spec.stride, spec.padding, max).0,
                    &to_f64(&r),
                )
            });
            let dx = if max {
                let (_, taps) = pool::max_pool2d(gpu, &xt, spec).unwrap();
                pool::max_pool2d_backward(gpu, &rt, &taps, &xs, spec).unwrap()
            } else {
                pool::avg_pool2d_backward(gpu, &rt, &xs, spec).unwrap()
            };
            assert_close(
                &format!("case {i} max={max} dx"),
                &read(gpu, &dx),
                &num,
                1e-3,
                1e-4,
            );
        }
    }
}

#[test]
fn global_pooling_and_gradients() {
    let gpu = gpu_or_skip!();
    let xs = [3, 5, 4, 6];
    let x = distinct(xs.iter().product(), 7);
    let xt = upload(gpu, &xs, &x);
    let (gmax, taps) = pool::global_max_pool(gpu, &xt).unwrap();
    let gavg = pool::global_avg_pool(gpu, &xt).unwrap();
    assert_eq!(gmax.dims(), [3, 6]);
    let (wmax, _) = pool_ref(&to_f64(&x), xs, (5, 4), (5, 4), Padding::Valid, true);
    let (wavg, _) = pool_ref(&to_f64(&x), xs, (5, 4), (5, 4), Padding::Valid, false);
    assert_close("global max", &read(gpu, &gmax), &wmax, 0.0, 0.0);
    assert_close("global avg", &read(gpu, &gavg), &wavg, 1e-6, 1e-6);

    let r = rand_vec(18, 8);
    let rt = upload(gpu, &[3, 6], &r);
    for max in [true, false] {
        let num = numeric_grad(&to_f64(&x), 1e-4, |v| {
            dot(
                &pool_ref(v, xs, (5, 4), (5, 4), Padding::Valid, max).0,
                &to_f64(&r),
            )
        });
        let dx = if max {
            pool::global_max_pool_backward(gpu, &rt, &taps, &xs).unwrap()
        } else {
            pool::global_avg_pool_backward(gpu, &rt, &xs).unwrap()
        };
        assert_close(
            &format!("global max={max} dx"),
            &read(gpu, &dx),
            &num,
            1e-3,
            1e-4,
        );
    }
}

#[test]
fn max_pool1d_forward_and_backward() {
    let gpu = gpu_or_skip!();
    let (n, l, c) = (2, 9, 3);
    let x = distinct(n * l * c, 9);
    let xt = upload(gpu, &[n, l, c], &x);
    let (y, taps) = pool::max_pool1d(gpu, &xt, 2, 2, Padding::Valid).unwrap();
    assert_eq!(y.dims(), [2, 4, 3]);
    let (want, _) = pool_ref(
        &to_f64(&x),
        [n, 1, l, c],
        (1, 2),
        (1, 2),
        Padding::Valid,
        true,
    );
    assert_close("max_pool1d", &read(gpu, &y), &want, 0.0, 0.0);
    let r = rand_vec(24, 10);
    let dx = pool::max_pool1d_backward(
        gpu,
        &upload(gpu, &[2, 4, 3], &r),
        &taps,
        &[n, l, c],
        2,
        2,
        Padding::Valid,
    )
    .unwrap();
    let num = numeric_grad(&to_f64(&x), 1e-4, |v| {
        dot(
            &pool_ref(v, [n, 1, l, c], (1, 2), (1, 2), Padding::Valid, true).0,
            &to_f64(&r),
        )
    });
    assert_eq!(dx.dims(), [n, l, c]);
    assert_close("max_pool1d dx", &read(gpu, &dx), &num, 1e-3, 1e-4);
}
