//! Dropout: the mask follows the host mirror of the counter-based hash exactly, kept values are
//! scaled by 1/(1-rate), backward uses the same mask, and the same seed repeats.

mod common;

use cnn_wgpu::ops::dropout;
use common::*;

#[test]
fn dropout_matches_host_mask_and_scales_kept_values() {
    let gpu = gpu_or_skip!();
    let n = 10_007;
    let rate = 0.5f32;
    let seed = 0x1234_5678_9abc_def0u64;
    let x: Vec<f32> = rand_vec(n, 1).iter().map(|v| v + 2.0).collect(); // never 0
    let xt = upload(gpu, &[n], &x);
    let y = read(gpu, &dropout::dropout(gpu, &xt, rate, seed).unwrap());
    let mut kept = 0;
    for i in 0..n {
        let keep = dropout::keep_mask_value(seed, i as u32, rate);
        let want = if keep { x[i] / (1.0 - rate) } else { 0.0 };
        assert_eq!(y[i], want, "element {i}: keep={keep}");
        kept += usize::from(keep);
    }
    // Binomial(10007, 0.5): sd = 50; 5 sd either side.
    assert!(
        (kept as f64 - n as f64 * 0.5).abs() < 250.0,
        "kept {kept} of {n}"
    );

    // Backward is the same mask and scale applied to dy.
    let dy = rand_vec(n, 2);
    let dx = read(
        gpu,
        &dropout::dropout_backward(gpu, &upload(gpu, &[n], &dy), rate, seed).unwrap(),
    );
    for i in 0..n {
        let want = if y[i] != 0.0 {
            dy[i] / (1.0 - rate)
        } else {
            0.0
        };
        assert_eq!(dx[i], want, "backward element {i}");
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
