//! Dropout checked by what it must do, not by a copy of its hash: each output is 0 or its input
//! scaled by 1/(1-rate), the kept fraction is 1-rate within binomial bounds at every rate, the
//! draws are independent of their neighbours and of the seed's neighbours, backward applies
//! the forward's own mask, and the same seed repeats.

mod common;

use cnn_wgpu::ops::dropout;
use common::*;

/// Binomial(n, p): |count - n p| within 5 standard deviations, sqrt(n p (1-p)).
fn assert_binomial(what: &str, count: usize, n: usize, p: f64) {
    let (mean, sd) = (n as f64 * p, (n as f64 * p * (1.0 - p)).sqrt());
    assert!(
        (count as f64 - mean).abs() <= 5.0 * sd,
        "{what}: {count} of {n}, expected {mean:.0} +- {:.0} (5 sd)",
        5.0 * sd
    );
}

#[test]
fn dropout_keeps_1_minus_rate_scaled_with_independent_draws() {
    let gpu = gpu_or_skip!();
    let n = 20_011;
    let x: Vec<f32> = rand_vec(n, 1).iter().map(|v| v + 2.0).collect(); // never 0
    let xt = upload(gpu, &[n], &x);
    let dy = rand_vec(n, 2);
    let dyt = upload(gpu, &[n], &dy);
    for (r, rate) in [0.1f32, 0.25, 0.5, 0.9].into_iter().enumerate() {
        let seed = 0x1234_5678_9abc_def0u64 + r as u64;
        let scale = 1.0 / (1.0 - f64::from(rate));
        let y = read(gpu, &dropout::dropout(gpu, &xt, rate, seed).unwrap());
        let kept: Vec<bool> = y.iter().map(|&v| v != 0.0).collect();
        for i in 0..n {
            // A kept value is x / (1 - rate), to the rounding of one f32 product.
            let want = if kept[i] {
                f64::from(x[i]) * scale
            } else {
                0.0
            };
            assert!(
                (f64::from(y[i]) - want).abs() <= 1e-6 * want,
                "rate {rate}: element {i} is {} for input {}: neither 0 nor x/(1-rate)",
                y[i],
                x[i]
            );
        }
        let p = 1.0 - f64::from(rate);
        let count = kept.iter().filter(|&&k| k).count();
        assert_binomial(&format!("rate {rate}: kept"), count, n, p);
        // Neighbours are independent: both of a pair kept with probability p^2.
        let pairs = kept.windows(2).filter(|w| w[0] && w[1]).count();
        assert_binomial(
            &format!("rate {rate}: adjacent pairs kept"),
            pairs,
            n - 1,
            p * p,
        );
        // So are the masks of neighbouring seeds: equal with probability p^2 + (1-p)^2.
        let other = read(gpu, &dropout::dropout(gpu, &xt, rate, seed + 1).unwrap());
        let same = kept
            .iter()
            .zip(&other)
            .filter(|(&k, &o)| k == (o != 0.0))
            .count();
        assert_binomial(
            &format!("rate {rate}: seeds {seed} and {} agree", seed + 1),
            same,
            n,
            p * p + (1.0 - p) * (1.0 - p),
        );

        // Backward: d(y_i)/d(x_i) is 1/(1-rate) where the forward kept x_i and 0 where it
        // dropped it, so dx = dy times the forward's own mask and scale.
        let dx = read(
            gpu,
            &dropout::dropout_backward(gpu, &dyt, rate, seed).unwrap(),
        );
        let want: Vec<f64> = (0..n)
            .map(|i| {
                if kept[i] {
                    f64::from(dy[i]) * scale
                } else {
                    0.0
                }
            })
            .collect();
        assert_close(&format!("rate {rate}: backward"), &dx, &want, 1e-6, 0.0);
        for i in 0..n {
            assert_eq!(
                dx[i] == 0.0 && dy[i] != 0.0,
                !kept[i],
                "rate {rate}: backward element {i} follows the forward mask"
            );
        }
    }
}

#[test]
fn dropout_is_seeded() {
    let gpu = gpu_or_skip!();
    let x = upload(gpu, &[4096], &vec![1.0; 4096]);
    let a = read(gpu, &dropout::dropout(gpu, &x, 0.3, 7).unwrap());
    let b = read(gpu, &dropout::dropout(gpu, &x, 0.3, 7).unwrap());
    let c = read(gpu, &dropout::dropout(gpu, &x, 0.3, 8).unwrap());
    assert_eq!(a, b, "same seed, same mask");
    assert_ne!(a, c, "another seed, another mask");
    let zero = read(gpu, &dropout::dropout(gpu, &x, 0.0, 7).unwrap());
    assert!(
        zero.iter().all(|&v| v == 1.0),
        "rate 0 keeps everything unscaled"
    );
    assert!(
        dropout::dropout(gpu, &x, 1.0, 7).is_err(),
        "rate 1 is rejected"
    );
}
