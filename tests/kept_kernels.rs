//! A layer's kernel that is unchanged between calls keeps its packed texture (ops::pack::
//! pack_kernel): the products must still use the current contents after every kind of write,
//! and the texture must go when the kernel does.

mod common;

use cnn_wgpu::ops::conv::{self, Conv2dSpec};
use cnn_wgpu::ops::dense;
use cnn_wgpu::ops::optim::{self, Optimizer, OptimizerState, Penalty};
use cnn_wgpu::ops::Padding;
use common::*;

#[test]
fn kept_kernels_follow_every_write_and_go_with_the_kernel() {
    let Some(gpu) = fresh_gpu() else {
        eprintln!("skipped: no adapter");
        return;
    };
    if !(gpu.subgroup_kernels() && gpu.texture_operands()) {
        // Only the subgroup kernels keep textures: where CI expects them, their absence fails.
        assert!(
            !subgroup_family_expected(),
            "CNN_WGPU_EXPECT_KERNELS lists a subgroup family, but {} runs no subgroup kernels with operand textures",
            gpu.adapter_name()
        );
        eprintln!(
            "skipped: {} runs no subgroup kernels with operand textures",
            gpu.adapter_name()
        );
        return;
    }
    // Conv forward: 2x9x9x8 -> 12 channels (162 rows: several row tiles, so B is packed).
    let (xs, ws) = ([2usize, 9, 9, 8], [3usize, 3, 8, 12]);
    let xh = rand_vec(xs.iter().product(), 1);
    let x = upload(&gpu, &xs, &xh);
    let b = upload(&gpu, &[12], &rand_vec(12, 2));
    let bh = to_f64(&read(&gpu, &b));
    let spec = Conv2dSpec::new(1, Padding::Same, false);
    let mut wh = rand_vec(ws.iter().product(), 3);
    let w = upload(&gpu, &ws, &wh);
    let conv_matches = |wh: &[f32], what: &str| {
        let y = conv::conv2d_forward(&gpu, &x, &w, &b, &spec).unwrap();
        let (want, _) = conv2d_ref(
            &to_f64(&xh),
            xs,
            &to_f64(wh),
            ws,
            &bh,
            (1, 1),
            Padding::Same,
            false,
        );
        assert_close(what, &read(&gpu, &y), &want, 1e-4, 1e-4);
    };
    let before = gpu.pool_stats().in_use;
    conv_matches(&wh, "first call (packed per call)");
    conv_matches(&wh, "second call, unchanged (packed and kept)");
    let kept = gpu.pool_stats().in_use;
    assert!(
        kept > before,
        "the second call keeps a texture: {before} -> {kept}"
    );
    conv_matches(&wh, "third call (the kept texture)");
    // An upload replaces the contents.
    wh = rand_vec(wh.len(), 4);
    w.write(&gpu, &wh);
    conv_matches(&wh, "after an upload");
    conv_matches(&wh, "after an upload, again");
    conv_matches(&wh, "after an upload, kept again");
    // A kernel writing in place (an SGD step, w -= 0.5 * g) replaces them too.
    let g = upload(&gpu, &ws, &rand_vec(wh.len(), 5));
    let sgd = Optimizer::sgd(0.5);
    let mut state = OptimizerState::new(&gpu, &sgd, &w).unwrap();
    let none = Penalty { l1: 0.0, l2: 0.0 };
    optim::step(&gpu, &sgd, &w, &g, &mut state, none).unwrap();
    wh = read(&gpu, &w);
    conv_matches(&wh, "after an optimizer step");
    // A step before every call (a trainable layer) never hits a kept texture.
    for i in 0..3 {
        optim::step(&gpu, &sgd, &w, &g, &mut state, none).unwrap();
        wh = read(&gpu, &w);
        conv_matches(&wh, &format!("step {i} of a trainable kernel"));
    }
    // Zeroing is a write as well.
    w.fill_zero(&gpu);
    wh = vec![0.0; wh.len()];
    conv_matches(&wh, "after zeroing");
    conv_matches(&wh, "after zeroing, kept");
    conv_matches(&wh, "after zeroing, kept again");

    // Dense head (20 rows: one row tile reads B, so per call it stays unpacked); from the
    // second unchanged call it moves into a kept texture.
    let (rows, inp, out) = (20usize, 136usize, 36usize);
    let ah = rand_vec(rows * inp, 6);
    let a = upload(&gpu, &[rows, inp], &ah);
    let mut kh = rand_vec(inp * out, 7);
    let k = upload(&gpu, &[inp, out], &kh);
    let dense_matches = |kh: &[f32], what: &str| {
        let y = dense::matmul(&gpu, &a, &k).unwrap();
        let want = dense_ref(&to_f64(&ah), rows, inp, &to_f64(kh), out, None, false);
        assert_close(what, &read(&gpu, &y), &want, 1e-4, 1e-4);
    };
    for i in 0..3 {
        dense_matches(&kh, &format!("dense call {i}"));
    }
    kh = rand_vec(kh.len(), 8);
    k.write(&gpu, &kh);
    dense_matches(&kh, "dense after an upload");
    dense_matches(&kh, "dense after an upload, kept");

    // The kept textures go back to the pool with their kernels.
    let held = gpu.pool_stats().in_use;
    drop(w);
    drop(state);
    let after = gpu.pool_stats().in_use;
    let w_bytes = (ws.iter().product::<usize>() * 4) as u64;
    assert!(
        held - after > 2 * w_bytes,
        "dropping the conv kernel returns its buffer and its texture: {held} -> {after}"
    );
    let held = after;
    drop(k);
    let after = gpu.pool_stats().in_use;
    assert!(
        held - after > (inp * out * 4) as u64,
        "dropping the dense kernel returns its buffer and its texture: {held} -> {after}"
    );
}
