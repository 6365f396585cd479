//! The subgroup GEMM's B packing (shaders/pack.wgsl) against a CPU repack.

mod common;

use cnn_wgpu::ops::pack::{pack_b, BSource, Layout};
use common::*;

/// packed[t, k, j] = B[k, T*t + j], zero past N; B[k, n] read from `src` as `layout` says.
fn pack_ref(src: &[f32], base: usize, k: usize, n: usize, layout: Layout, tile: usize) -> Vec<f64> {
    let tiles = n.div_ceil(tile);
    let mut out = vec![0.0; tiles * k * tile];
    for t in 0..tiles {
        for kk in 0..k {
            for j in 0..tile {
                let nn = tile * t + j;
                if nn >= n {
                    continue;
                }
                let i = match layout {
                    Layout::RowMajor => kk * n + nn,
                    Layout::TapTransposed { r } => ((kk / r) * n + nn) * r + kk % r,
                };
                out[(t * k + kk) * tile + j] = f64::from(src[base + i]);
            }
        }
    }
    out
}

#[test]
fn packing_matches_the_cpu_repack() {
    let gpu = gpu_or_skip!();
    // (K, N, layout, element base, tile): N off the column tile, one tap and several, an offset
    // into the source as a batch chunk of an output gradient has, both tile widths. Row-major
    // cases with N and the base multiples of 4 read whole vec4s (pack_b4); N = 18 and base 2
    // take the value-by-value path.
    for (i, (k, n, layout, base, tile)) in [
        (5usize, 4usize, Layout::RowMajor, 0usize, 64usize),
        (6, 18, Layout::RowMajor, 0, 64),
        (3, 8, Layout::RowMajor, 2, 32),
        (37, 132, Layout::RowMajor, 12, 64),
        (9 * 12, 68, Layout::TapTransposed { r: 12 }, 0, 64),
        (8, 36, Layout::TapTransposed { r: 8 }, 0, 64),
        (7, 20, Layout::RowMajor, 4, 32),
        (9 * 32, 32, Layout::TapTransposed { r: 32 }, 0, 32),
    ]
    .into_iter()
    .enumerate()
    {
        let src = rand_vec(base + k * n, 70 + i as u64);
        let t = upload(gpu, &[src.len()], &src);
        let want = pack_ref(&src, base, k, n, layout, tile);
        // A buffer, and textures 16 and 4096 texels wide: the first wraps every case over
        // several rows and most end mid-row.
        for source in [
            BSource::Packed,
            BSource::Texture { shift: 4 },
            BSource::Texture { shift: 12 },
        ] {
            let packed = pack_b(gpu, t.all(), base as u32, (k, n), layout, tile, source)
                .unwrap()
                .expect("packed");
            assert_close(
                &format!("case {i} {layout:?} into {source:?}"),
                &packed.to_vec(gpu, want.len()).unwrap(),
                &want,
                0.0,
                0.0,
            );
        }
        assert!(
            pack_b(gpu, t.all(), 0, (k, n), layout, tile, BSource::Plain)
                .unwrap()
                .is_none(),
            "plain B is not packed"
        );
    }
}

#[test]
fn b_goes_to_a_texture_only_where_it_fits() {
    let Some(gpu) = fresh_gpu() else {
        eprintln!("skipped: no adapter");
        return;
    };
    let max_rows = gpu.limits().max_texture_dimension_2d as usize;
    // 16 texels a row: B (K,64) in one 64-column tile takes K * 16 texels, one row per k.
    gpu.force_texture_width(Some(16));
    let fits = BSource::choose(&gpu, true, (max_rows / 2, 64), 64);
    assert_eq!(fits, BSource::Texture { shift: 4 });
    let too_tall = BSource::choose(&gpu, true, (max_rows + 1, 64), 64);
    assert_eq!(
        too_tall,
        BSource::Packed,
        "past the adapter's texture height"
    );
    assert_eq!(
        BSource::choose(&gpu, false, (8, 64), 64),
        BSource::Plain,
        "unpacked B stays where it is"
    );
    gpu.set_texture_operands(false);
    assert_eq!(BSource::choose(&gpu, true, (8, 64), 64), BSource::Packed);
}
