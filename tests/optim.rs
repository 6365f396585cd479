//! Each optimizer step against Keras' update formula computed by hand, over several steps so the
//! slot state and Adam's bias correction are exercised; and the weight penalties.

mod common;

use cnn_wgpu::ops::optim::{self, Optimizer, OptimizerState, Penalty};
use common::*;

/// Runs `steps` GPU updates with a fresh gradient each step and the same updates on the host
/// with `host(w, g, slots, t)`, comparing weights after every step.
fn check(opt: Optimizer, penalty: Penalty, host: impl Fn(&mut f64, f64, &mut [f64; 2], u64)) {
    let gpu = gpu_or_skip!();
    let n = 1031; // not a multiple of the 256-wide workgroup
    let w0 = rand_vec(n, 1);
    let w = upload(gpu, &[n], &w0);
    let mut state = OptimizerState::new(gpu, &opt, &w).unwrap();
    let mut hw: Vec<f64> = to_f64(&w0);
    let mut hs = vec![[0.0f64; 2]; n];
    for t in 1..=4u64 {
        let g = rand_vec(n, 100 + t);
        optim::step(gpu, &opt, &w, &upload(gpu, &[n], &g), &mut state, penalty).unwrap();
        for i in 0..n {
            // Keras adds the penalty's gradient to the loss gradient: l1 sign(w) + 2 l2 w.
            let gi = f64::from(g[i])
                + f64::from(penalty.l1) * hw[i].signum() * f64::from(u8::from(hw[i] != 0.0))
                + 2.0 * f64::from(penalty.l2) * hw[i];
            host(&mut hw[i], gi, &mut hs[i], t);
        }
        assert_close(
            &format!("{opt:?} step {t}"),
            &read(gpu, &w),
            &hw,
            1e-5,
            1e-6,
        );
    }
    assert_eq!(state.step, 4);
}

#[test]
fn sgd_matches_keras() {
    let (lr, momentum) = (0.01, 0.9);
    // velocity = momentum * velocity - lr * g;  w += velocity
    check(
        Optimizer::Sgd {
            lr,
            momentum,
            nesterov: false,
        },
        Penalty::default(),
        |w, g, s, _| {
            s[0] = f64::from(momentum) * s[0] - f64::from(lr) * g;
            *w += s[0];
        },
    );
    // nesterov: w += momentum * velocity - lr * g
    check(
        Optimizer::Sgd {
            lr,
            momentum,
            nesterov: true,
        },
        Penalty::default(),
        |w, g, s, _| {
            s[0] = f64::from(momentum) * s[0] - f64::from(lr) * g;
            *w += f64::from(momentum) * s[0] - f64::from(lr) * g;
        },
    );
}

#[test]
fn rmsprop_matches_keras() {
    let opt = Optimizer::rmsprop(1e-3);
    // Keras 3: v = rho v + (1-rho) g^2;  w -= lr g / sqrt(v + eps)  (epsilon inside the root)
    check(opt, Penalty::default(), |w, g, s, _| {
        s[0] = 0.9 * s[0] + 0.1 * g * g;
        *w -= 1e-3 * g / (s[0] + 1e-7).sqrt();
    });
}

#[test]
fn adam_matches_keras() {
    let opt = Optimizer::adam(1e-3);
    // Keras 3: alpha = lr sqrt(1-b2^t)/(1-b1^t); m += (g-m)(1-b1); v += (g^2-v)(1-b2);
    // w -= alpha m / (sqrt(v) + eps)
    check(opt, Penalty::default(), |w, g, s, t| {
        let alpha = 1e-3 * (1.0 - 0.999f64.powi(t as i32)).sqrt() / (1.0 - 0.9f64.powi(t as i32));
        s[0] += (g - s[0]) * (1.0 - 0.9);
        s[1] += (g * g - s[1]) * (1.0 - 0.999);
        *w -= alpha * s[0] / (s[1].sqrt() + 1e-7);
    });
}

#[test]
fn penalties_add_their_gradient() {
    let penalty = Penalty { l1: 0.01, l2: 0.05 };
    check(Optimizer::sgd(0.1), penalty, |w, g, _, _| {
        *w -= 0.1 * g;
    });
}

#[test]
fn penalty_value_is_l1_plus_l2() {
    let gpu = gpu_or_skip!();
    let w = rand_vec(777, 9);
    let p = Penalty {
        l1: 0.003,
        l2: 0.02,
    };
    let got = read(
        gpu,
        &optim::penalty_value(gpu, &upload(gpu, &[777], &w), p).unwrap(),
    );
    let want: f64 = w
        .iter()
        .map(|&v| 0.003 * f64::from(v).abs() + 0.02 * f64::from(v) * f64::from(v))
        .sum();
    assert_close("penalty", &got, &[want], 1e-5, 1e-6);
}
