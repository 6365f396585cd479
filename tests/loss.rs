//! Losses from logits against the textbook formulas on probabilities, gradients against finite
//! differences, accuracy against counting on the host.

mod common;

use cnn_wgpu::ops::loss::{self, Clip, LossKind};
use common::*;

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Mean binary cross-entropy from probabilities: -(y ln p + (1-y) ln(1-p)), p optionally
/// clipped to [1e-7, 1-1e-7] as Keras does.
fn bce(z: &[f64], y: &[f64], clip: bool) -> Vec<f64> {
    z.iter()
        .zip(y)
        .map(|(&z, &y)| {
            let mut p = sigmoid(z);
            if clip {
                p = p.clamp(1e-7, 1.0 - 1e-7);
            }
            // ln(1-p) via the logits when unclipped so the reference itself stays exact.
            let (lp, lq) = if clip {
                (p.ln(), (1.0 - p).ln())
            } else {
                (-(1.0 + (-z).exp()).ln(), -(1.0 + z.exp()).ln())
            };
            -(y * lp + (1.0 - y) * lq)
        })
        .collect()
}

fn cce(z: &[f64], y: &[f64], cols: usize, clip: bool) -> Vec<f64> {
    z.chunks(cols)
        .zip(y.chunks(cols))
        .map(|(zr, yr)| {
            let m = zr.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = m + zr.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
            zr.iter()
                .zip(yr)
                .map(|(&zj, &yj)| {
                    let mut lp = zj - lse;
                    if clip {
                        lp = lp.clamp(1e-7f64.ln(), (1.0 - 1e-7f64).ln());
                    }
                    -yj * lp
                })
                .sum()
        })
        .collect()
}

#[test]
fn binary_crossentropy_matches_formula_and_gradient() {
    let gpu = gpu_or_skip!();
    let n = 9;
    let mut z: Vec<f32> = rand_vec(n, 1).iter().map(|v| v * 6.0).collect();
    z[0] = 40.0; // p rounds to 1 in f32: the logit form must still give a finite loss
    z[1] = -40.0;
    let y: Vec<f32> = (0..n).map(|i| (i % 2) as f32).collect();
    for clip in [false, true] {
        let c = if clip { Clip::Keras } else { Clip::None };
        let out = loss::loss_and_grad(
            gpu,
            LossKind::BinaryCrossentropy,
            &upload(gpu, &[n, 1], &z),
            &upload(gpu, &[n, 1], &y),
            c,
        )
        .unwrap();
        let want = bce(&to_f64(&z), &to_f64(&y), clip);
        assert_close(
            &format!("bce clip={clip}"),
            &read(gpu, &out.per_sample),
            &want,
            1e-5,
            1e-6,
        );
        // d(mean loss)/dz = (sigmoid(z) - y)/N, zero where a clipped probability sits at its bound.
        let mean = |v: &[f64]| bce(v, &to_f64(&y), clip).iter().sum::<f64>() / n as f64;
        let num = numeric_grad(&to_f64(&z), 1e-4, mean);
        assert_close(
            &format!("bce grad clip={clip}"),
            &read(gpu, &out.grad),
            &num,
            1e-3,
            1e-6,
        );
    }
    // Clipping caps the loss at -ln(1e-7): z = 40 with y = 0 is maximally wrong.
    let out = loss::loss_and_grad(
        gpu,
        LossKind::BinaryCrossentropy,
        &upload(gpu, &[1], &[40.0]),
        &upload(gpu, &[1], &[0.0]),
        Clip::Keras,
    )
    .unwrap();
    let l = read(gpu, &out.per_sample)[0];
    assert!((f64::from(l) - 16.118_095).abs() < 1e-3, "clipped loss {l}");
}

#[test]
fn categorical_crossentropy_matches_formula_and_gradient() {
    let gpu = gpu_or_skip!();
    let (rows, cols) = (5, 10);
    let mut z: Vec<f32> = rand_vec(rows * cols, 3).iter().map(|v| v * 4.0).collect();
    z[0] = 500.0; // exp would overflow without the max shift
    let mut y = vec![0.0f32; rows * cols];
    for r in 0..rows {
        y[r * cols + (r * 3) % cols] = 1.0;
    }
    for clip in [false, true] {
        let c = if clip { Clip::Keras } else { Clip::None };
        let out = loss::loss_and_grad(
            gpu,
            LossKind::CategoricalCrossentropy,
            &upload(gpu, &[rows, cols], &z),
            &upload(gpu, &[rows, cols], &y),
            c,
        )
        .unwrap();
        let want = cce(&to_f64(&z), &to_f64(&y), cols, clip);
        assert_close(
            &format!("cce clip={clip}"),
            &read(gpu, &out.per_sample),
            &want,
            1e-5,
            1e-5,
        );
        // d(mean loss)/dz = (softmax(z) sum(y) - y)/N (clipped components drop out).
        let mean = |v: &[f64]| cce(v, &to_f64(&y), cols, clip).iter().sum::<f64>() / rows as f64;
        let num = numeric_grad(&to_f64(&z), 1e-4, mean);
        assert_close(
            &format!("cce grad clip={clip}"),
            &read(gpu, &out.grad),
            &num,
            1e-3,
            1e-6,
        );
    }
}

#[test]
fn accuracy_counts_on_the_gpu() {
    let gpu = gpu_or_skip!();
    let n = 1003;
    let z = rand_vec(n, 5);
    let y: Vec<f32> = rand_vec(n, 6).iter().map(|v| f32::from(*v > 0.0)).collect();
    let want = z
        .iter()
        .zip(&y)
        .filter(|(z, y)| (**z > 0.0) == (**y > 0.5))
        .count();
    let got = read(
        gpu,
        &loss::correct_count(
            gpu,
            LossKind::BinaryCrossentropy,
            &upload(gpu, &[n, 1], &z),
            &upload(gpu, &[n, 1], &y),
        )
        .unwrap(),
    );
    assert_eq!(got, vec![want as f32]);

    let (rows, cols) = (257, 10);
    let z = rand_vec(rows * cols, 7);
    let labels: Vec<usize> = (0..rows).map(|r| (r * 7) % cols).collect();
    let mut y = vec![0.0f32; rows * cols];
    for (r, &l) in labels.iter().enumerate() {
        y[r * cols + l] = 1.0;
    }
    let argmax = |row: &[f32]| {
        row.iter()
            .enumerate()
            .fold(0, |b, (i, v)| if *v > row[b] { i } else { b })
    };
    let want = (0..rows)
        .filter(|&r| argmax(&z[r * cols..(r + 1) * cols]) == labels[r])
        .count();
    let got = read(
        gpu,
        &loss::correct_count(
            gpu,
            LossKind::CategoricalCrossentropy,
            &upload(gpu, &[rows, cols], &z),
            &upload(gpu, &[rows, cols], &y),
        )
        .unwrap(),
    );
    assert_eq!(got, vec![want as f32]);
}

#[test]
fn loss_rejects_mismatched_labels() {
    let gpu = gpu_or_skip!();
    let err = loss::loss_and_grad(
        gpu,
        LossKind::BinaryCrossentropy,
        &upload(gpu, &[4, 1], &[0.0; 4]),
        &upload(gpu, &[3, 1], &[0.0; 3]),
        Clip::None,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.contains("labels") && err.contains("(3,1)") && err.contains("(4,1)"),
        "{err}"
    );
}
