//! Activations against their definitions, backward against finite differences.

mod common;

use cnn_wgpu::ops::activation as act;
use common::*;

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn softmax_rows(x: &[f64], cols: usize) -> Vec<f64> {
    x.chunks(cols)
        .flat_map(|r| {
            let m = r.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let s: f64 = r.iter().map(|v| (v - m).exp()).sum();
            r.iter().map(move |v| (v - m).exp() / s).collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn elementwise_forward_matches_definitions() {
    let gpu = gpu_or_skip!();
    // 1000 is not a multiple of the 256-wide workgroup; include huge magnitudes for sigmoid.
    let mut x = rand_vec(1000, 1);
    x[0] = 100.0;
    x[1] = -100.0;
    x[2] = 0.0;
    let xt = upload(gpu, &[10, 100], &x);
    // ReLU runs four values per invocation on lengths that are multiples of 4, one otherwise.
    for len in [1000, 999] {
        let relu: Vec<f64> = x[..len].iter().map(|&v| f64::from(v).max(0.0)).collect();
        assert_close(
            &format!("relu of {len}"),
            &read(
                gpu,
                &act::relu(gpu, &upload(gpu, &[len], &x[..len])).unwrap(),
            ),
            &relu,
            0.0,
            0.0,
        );
    }
    let sig: Vec<f64> = x.iter().map(|&v| sigmoid(f64::from(v))).collect();
    assert_close(
        "sigmoid",
        &read(gpu, &act::sigmoid(gpu, &xt).unwrap()),
        &sig,
        1e-6,
        1e-7,
    );
}

#[test]
fn softmax_is_stable_and_matches_definition() {
    let gpu = gpu_or_skip!();
    for (rows, cols) in [(1usize, 1usize), (3, 10), (7, 129)] {
        let mut x: Vec<f32> = rand_vec(rows * cols, 2).iter().map(|v| v * 5.0).collect();
        // Large logits must not overflow: the row maximum is subtracted first.
        x[0] = 1000.0;
        let y = read(
            gpu,
            &act::softmax(gpu, &upload(gpu, &[rows, cols], &x)).unwrap(),
        );
        assert!(y.iter().all(|v| v.is_finite()), "softmax overflowed");
        assert_close("softmax", &y, &softmax_rows(&to_f64(&x), cols), 1e-5, 1e-7);
    }
}

#[test]
fn activation_backward_matches_finite_differences() {
    let gpu = gpu_or_skip!();
    // 36 values: ReLU's backward runs four per invocation; the 15 below, one.
    let (rows, cols) = (4, 9);
    // Keep ReLU inputs away from the kink at 0 so the difference quotient is the derivative.
    let x: Vec<f32> = rand_vec(rows * cols, 3)
        .iter()
        .map(|v| if v.abs() < 0.05 { v + 0.1 } else { *v })
        .collect();
    let r = rand_vec(rows * cols, 4);
    let xt = upload(gpu, &[rows, cols], &x);
    let rt = upload(gpu, &[rows, cols], &r);
    let (x64, r64) = (to_f64(&x), to_f64(&r));

    // L = sum(f(x) * r):  relu' = [x > 0],  sigmoid' = y(1-y),  softmax' = J^T r with J = diag(y) - y y^T.
    let y = act::relu(gpu, &xt).unwrap();
    let num = numeric_grad(&x64, 1e-4, |v| {
        dot(&v.iter().map(|a| a.max(0.0)).collect::<Vec<_>>(), &r64)
    });
    assert_close(
        "relu dx",
        &read(gpu, &act::relu_backward(gpu, &rt, &y).unwrap()),
        &num,
        1e-4,
        1e-5,
    );
    let n = 15;
    let num15 = numeric_grad(&x64[..n], 1e-4, |v| {
        dot(&v.iter().map(|a| a.max(0.0)).collect::<Vec<_>>(), &r64[..n])
    });
    let dx15 = act::relu_backward(
        gpu,
        &upload(gpu, &[n], &r[..n]),
        &act::relu(gpu, &upload(gpu, &[n], &x[..n])).unwrap(),
    )
    .unwrap();
    assert_close("relu dx of 15", &read(gpu, &dx15), &num15, 1e-4, 1e-5);

    let y = act::sigmoid(gpu, &xt).unwrap();
    let num = numeric_grad(&x64, 1e-4, |v| {
        dot(&v.iter().map(|&a| sigmoid(a)).collect::<Vec<_>>(), &r64)
    });
    assert_close(
        "sigmoid dx",
        &read(gpu, &act::sigmoid_backward(gpu, &rt, &y).unwrap()),
        &num,
        1e-4,
        1e-6,
    );

    let y = act::softmax(gpu, &xt).unwrap();
    let num = numeric_grad(&x64, 1e-4, |v| dot(&softmax_rows(v, cols), &r64));
    assert_close(
        "softmax dx",
        &read(gpu, &act::softmax_backward(gpu, &rt, &y).unwrap()),
        &num,
        1e-4,
        1e-6,
    );
}
