//! The subgroup GEMM's B packing (shaders/pack.wgsl) against a CPU repack.

mod common;

use cnn_wgpu::ops::pack::{pack_b, Layout};
use common::*;

/// packed[t, k, j] = B[k, 64t + j], zero past N; B[k, n] read from `src` as `layout` says.
fn pack_ref(src: &[f32], base: usize, k: usize, n: usize, layout: Layout) -> Vec<f64> {
    let tiles = n.div_ceil(64);
    let mut out = vec![0.0; tiles * k * 64];
    for t in 0..tiles {
        for kk in 0..k {
            for j in 0..64 {
                let nn = 64 * t + j;
                if nn >= n {
                    continue;
                }
                let i = match layout {
                    Layout::RowMajor => kk * n + nn,
                    Layout::TapTransposed { r } => ((kk / r) * n + nn) * r + kk % r,
                };
                out[(t * k + kk) * 64 + j] = f64::from(src[base + i]);
            }
        }
    }
    out
}

#[test]
fn packing_matches_the_cpu_repack() {
    let gpu = gpu_or_skip!();
    // (K, N, layout, element base): N off the 64-column tile, one tap and several, an offset
    // into the source as a batch chunk of an output gradient has.
    for (i, (k, n, layout, base)) in [
        (5usize, 4usize, Layout::RowMajor, 0usize),
        (37, 132, Layout::RowMajor, 12),
        (9 * 12, 68, Layout::TapTransposed { r: 12 }, 0),
        (8, 36, Layout::TapTransposed { r: 8 }, 0),
    ]
    .into_iter()
    .enumerate()
    {
        let src = rand_vec(base + k * n, 70 + i as u64);
        let t = upload(gpu, &[src.len()], &src);
        let packed = pack_b(gpu, t.all(), base as u32, k, n, layout).unwrap();
        assert_eq!(packed.dims(), [n.div_ceil(64), k, 64]);
        let want = pack_ref(&src, base, k, n, layout);
        assert_close(
            &format!("case {i} {layout:?}"),
            &read(gpu, &packed),
            &want,
            0.0,
            0.0,
        );
    }
}
