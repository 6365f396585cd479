//! Repacking of the subgroup GEMM's B operand (shaders/pack.wgsl) into contiguous column tiles
//! (ceil(N/T), K, T) of T = 64 (or 32) columns, zero-padded past N. The conv and dense modules pack their kernels
//! (and, for the kernel gradients, the output gradients) before running `gemm_sg`.

use bytemuck::{Pod, Zeroable};

use super::Result;
use crate::gpu::{Arg, BufferRange, Gpu, Kernel, ShaderId};
use crate::tensor::Tensor;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    k: u32,
    n: u32,
    r: u32,
    src_base: u32,
}

/// How B (K,N) sits in the source buffer.
#[derive(Clone, Copy, Debug)]
pub enum Layout {
    /// Row-major (K,N): a conv kernel (KH*KW*CIN, COUT), a dense kernel, an output gradient.
    RowMajor,
    /// K = taps * r, and per tap an (N, r) row-major block read transposed: B[k, n] =
    /// src[((k / r) * N + n) * r + k % r]. A conv kernel as its input gradient reads it
    /// (r = COUT, N = CIN), or a dense kernel (IN,OUT) as (OUT,IN) (r = OUT, N = IN).
    TapTransposed { r: usize },
}

/// B (K,N) read from `src` starting at element `src_base`, packed into a new tensor
/// (ceil(N/tile), K, tile); `tile` is the GEMM's columns per workgroup, 64 or 32.
pub fn pack_b(
    gpu: &Gpu,
    src: BufferRange<'_>,
    src_base: u32,
    (k, n): (usize, usize),
    layout: Layout,
    tile: usize,
) -> Result<Tensor> {
    let tiles = n.div_ceil(tile);
    let packed = Tensor::uninit(gpu, [tiles, k, tile])?;
    let (transposed, r) = match layout {
        Layout::RowMajor => (0.0, 1),
        Layout::TapTransposed { r } => (1.0, r),
    };
    let p = Params {
        k: k as u32,
        n: n as u32,
        r: r as u32,
        src_base,
    };
    let groups = (tiles * k * tile / 4).div_ceil(64).max(1) as u32;
    let x = groups.min(gpu.limits().max_compute_workgroups_per_dimension);
    gpu.dispatch(
        &Kernel::new(
            ShaderId::Pack,
            "pack_b",
            &[("TRANSPOSED", transposed), ("TILE_N", tile as f64)],
        ),
        &[
            Arg::Uniform(bytemuck::bytes_of(&p)),
            Arg::Read(src),
            Arg::Write(packed.all()),
        ],
        [x, groups.div_ceil(x), 1],
    );
    Ok(packed)
}
