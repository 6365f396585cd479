//! Winograd convolution for 3x3 stride-1 layers (shaders/winograd.wgsl): F(2x2,3x3),
//! F(4x4,3x3) and F(6x6,3x3). The kernel, input and output transforms run here; the ALPHA^2 products between
//! them run on the GEMM planner's kernels through dense's matmul modules
//! ([`super::dense::batched_products`]), so every kernel family runs them. Forward (with the
//! fused bias and ReLU) and the input gradient, which is the same convolution of dy with the
//! kernel rotated 180 degrees, its channels swapped. The kernel gradient stays direct.

use std::hash::{Hash, Hasher};

use super::gemm::GemmPlan;
use super::{dense, grid_1d, shape_err, Result};
use crate::gpu::{Arg, BufferRange, Gpu, Kernel, ShaderId};
use crate::tensor::Tensor;

crate::shader_params! {
    pub(crate) struct Params {
        n: u32,
        h: u32,
        w: u32,
        c: u32,
        k: u32,
        oh: u32,
        ow: u32,
        pad_top: u32,
        pad_left: u32,
        tiles_h: u32,
        tiles_w: u32,
        src_base: u32,
        dst_base: u32,
        _p0: u32,
        _p1: u32,
        _p2: u32,
    }
}

/// Output tile side: 2 (F(2x2,3x3)), 4 (F(4x4,3x3)) or 6 (F(6x6,3x3)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Tile {
    F2,
    F4,
    F6,
}

impl Tile {
    pub fn side(self) -> usize {
        match self {
            Tile::F2 => 2,
            Tile::F4 => 4,
            Tile::F6 => 6,
        }
    }
    /// Transformed positions per tile: (side + 2)^2 products.
    pub fn positions(self) -> usize {
        (self.side() + 2).pow(2)
    }
}

/// One 3x3 stride-1 convolution as Winograd runs it: the input (N,H,W,C) with `pad` zero rows
/// and columns above and left, `out` (OH,OW) positions, the kernel read forward (HWIO, C in
/// and K out) or, with `flip`, as the input gradient reads it.
pub(crate) struct Conv3x3<'a> {
    pub x: &'a Tensor,
    pub w: &'a Tensor,
    pub flip: bool,
    pub pad: (usize, usize),
    pub out: (usize, usize),
    pub bias: Option<&'a Tensor>,
    pub relu: bool,
}

/// Scratch (the transformed input or output of one batch chunk) is kept under this many bytes
/// per tensor, on top of the binding limit, so that a large batch of large images costs a
/// bounded amount of memory: F(6x6) holds 1.78x the input, F(4x4) 2.25x, F(2x2) 4x. Each
/// scratch tensor is allocated once per call at a power of two of bytes, so that every layer's
/// scratch falls in a few of the pool's size classes and is reused across layers instead of
/// each layer leaving buffers of its own sizes in the pool (at 256 MiB and exact sizes, the
/// block5 fine-tuning step at batch 32 held 2.1 GiB; BENCHMARKS.md, "Winograd").
const SCRATCH_BYTES: u64 = 64 << 20;

/// y (N,OH,OW,K) for the convolution `conv` describes, on `tile`.
pub(crate) fn conv3x3(
    gpu: &Gpu,
    op: &'static str,
    conv: &Conv3x3<'_>,
    tile: Tile,
) -> Result<Tensor> {
    let &[n, h, w, c] = conv.x.dims() else {
        return Err(shape_err(op, "input", "(N,H,W,C)", conv.x.shape()));
    };
    let k = conv.w.numel() / (9 * c.max(1));
    if conv.w.numel() != 9 * c * k || conv.w.dims()[..2] != [3, 3] {
        return Err(shape_err(
            op,
            "kernel",
            format!("(3,3,{c},K) or (3,3,K,{c})"),
            conv.w.shape(),
        ));
    }
    let (oh, ow) = conv.out;
    let side = tile.side();
    let (tiles_h, tiles_w) = (oh.div_ceil(side), ow.div_ceil(side));
    let per_image = tiles_h * tiles_w;
    let positions = tile.positions();
    let y = Tensor::uninit(gpu, [n, oh, ow, k])?;
    let most = images_per_chunk(gpu, tile, (h, w, c), (oh, ow, k));
    if most == 0 {
        return Err(super::OpError::Invalid {
            op,
            reason: format!(
                "one image's Winograd scratch ({positions} x {per_image} tiles x {} channels) passes the {} bytes a binding may hold; run this layer with --conv-algo direct",
                c.max(k),
                gpu.binding_limit().min(SCRATCH_BYTES)
            ),
        });
    }
    let side_f = side as f64;
    let flip = f64::from(u32::from(conv.flip));
    let derive = || -> Result<Tensor> {
        let u = Tensor::uninit(gpu, [positions * c, k])?;
        let consts = [("TILE", side_f), ("FLIP", flip)];
        let p = params(c, k, (0, 0, 0), (0, 0), (0, 0), (0, 0), (0, 0));
        let uniform = Arg::Uniform(bytemuck::bytes_of(&p));
        // Four of U's columns per invocation where K allows, a quarter of the stores: a
        // trainable layer transforms its kernel every step, and for a 512x512 kernel that
        // cost about as much as the products.
        if k.is_multiple_of(4) {
            let kernel = Kernel::new(ShaderId::Winograd, "kernel_transform4", &consts);
            let w = conv.w.all();
            let args = [
                uniform,
                Arg::Read(w),
                Arg::Unused,
                Arg::Unused,
                Arg::Read(w),
                Arg::Unused,
                Arg::Write(u.all()),
            ];
            gpu.dispatch(&kernel, &args, grid_1d(gpu, &kernel, c * k / 4));
        } else {
            let kernel = Kernel::new(ShaderId::Winograd, "kernel_transform", &consts);
            let args = [
                uniform,
                Arg::Read(conv.w.all()),
                Arg::Unused,
                Arg::Write(u.all()),
            ];
            gpu.dispatch(&kernel, &args, grid_1d(gpu, &kernel, c * k));
        }
        Ok(u)
    };
    // A batch split into chunks transforms the kernel once per call, not once per chunk.
    let once = std::cell::OnceCell::new();
    let derive_once = || -> Result<Tensor> {
        if let Some(u) = once.get() {
            return Ok(Tensor::clone(u));
        }
        let u = derive()?;
        Ok(once.get_or_init(|| u).clone())
    };
    let mut hasher = std::hash::DefaultHasher::new();
    ("winograd", tile, conv.flip).hash(&mut hasher);
    let tag = hasher.finish();
    // Equal chunks (the last may be smaller), scratch sized for the largest.
    let chunks = n.div_ceil(most.max(1)).max(1);
    let most = n.div_ceil(chunks).max(1);
    let scratch = |channels: usize| {
        let values = positions * most * per_image * channels;
        let rounded = values.next_power_of_two();
        let fits = (rounded * 4) as u64 <= gpu.binding_limit();
        Tensor::uninit(gpu, [if fits { rounded } else { values }])
    };
    let v = scratch(c)?;
    let m = scratch(k)?;
    for n0 in (0..n).step_by(most) {
        let nb = most.min(n - n0);
        let rows = nb * per_image;
        let (xr, xb) = conv.x.window(gpu, n0 * h * w * c, nb * h * w * c);
        let p = params(
            c,
            k,
            (nb, h, w),
            (oh, ow),
            conv.pad,
            (tiles_h, tiles_w),
            (xb as usize, 0),
        );
        let consts = [("TILE", side_f)];
        transform(
            gpu,
            ("input_transform", "input_transform4"),
            &consts,
            &p,
            xr,
            None,
            v.all(),
            rows,
            c,
        );
        dense::batched_products(
            gpu,
            op,
            &v,
            &m,
            (positions, rows, c, k),
            conv.w,
            tag,
            &derive_once,
        )?;
        let (yr, yb) = y.window(gpu, n0 * oh * ow * k, nb * oh * ow * k);
        let mut p = p;
        p.src_base = 0;
        p.dst_base = yb;
        let consts = [
            ("TILE", side_f),
            ("HAS_BIAS", f64::from(u32::from(conv.bias.is_some()))),
            ("RELU", f64::from(u32::from(conv.relu))),
        ];
        let bias = conv.bias.unwrap_or(&m).all();
        transform(
            gpu,
            ("output_transform", "output_transform4"),
            &consts,
            &p,
            m.all(),
            Some(bias),
            yr,
            rows,
            k,
        );
    }
    Ok(y)
}

/// Runs the input or output transform from `src` to `dst` over `rows` tiles of `channels`
/// channels: four channels per invocation where `channels` is a multiple of 4 (`entries`' vec4
/// entry point, the second, which moves a quarter of the loads and stores), one otherwise.
#[allow(clippy::too_many_arguments)]
fn transform(
    gpu: &Gpu,
    (scalar, vec4): (&'static str, &'static str),
    consts: &[(&'static str, f64)],
    p: &Params,
    src: BufferRange<'_>,
    bias: Option<BufferRange<'_>>,
    dst: BufferRange<'_>,
    rows: usize,
    channels: usize,
) {
    let uniform = Arg::Uniform(bytemuck::bytes_of(p));
    let bias = bias.map_or(Arg::Unused, Arg::Read);
    if channels.is_multiple_of(4) {
        let kernel = Kernel::new(ShaderId::Winograd, vec4, consts);
        let args = [
            uniform,
            Arg::Unused,
            Arg::Unused,
            Arg::Unused,
            Arg::Read(src),
            bias,
            Arg::Write(dst),
        ];
        gpu.dispatch(&kernel, &args, grid_1d(gpu, &kernel, rows * channels / 4));
    } else {
        let kernel = Kernel::new(ShaderId::Winograd, scalar, consts);
        let args = [uniform, Arg::Read(src), bias, Arg::Write(dst)];
        gpu.dispatch(&kernel, &args, grid_1d(gpu, &kernel, rows * channels));
    }
}

/// The GEMM plan of the products of a Winograd convolution on `tile` over `p` tiles, C
/// channels in and K out (the cost model reads its tile).
pub(crate) fn product_plan(gpu: &Gpu, tile: Tile, p: usize, c: usize, k: usize) -> GemmPlan {
    GemmPlan::new(
        gpu,
        dense::SHADERS,
        &dense::batched_product(tile.positions(), p, c, k),
    )
}

/// How many images of an (H,W,C) -> (OH,OW,K) convolution one chunk of Winograd on `tile`
/// takes, so that each of its tensors fits a binding and [`SCRATCH_BYTES`]; 0 where not even
/// one image does, or the transformed kernel does not fit a binding (the layer then runs
/// direct).
pub(crate) fn images_per_chunk(
    gpu: &Gpu,
    tile: Tile,
    (h, w, c): (usize, usize, usize),
    (oh, ow, k): (usize, usize, usize),
) -> usize {
    let per_image = oh.div_ceil(tile.side()) * ow.div_ceil(tile.side());
    let cap = gpu.binding_limit().min(SCRATCH_BYTES);
    if (tile.positions() * c * k * 4) as u64 > gpu.binding_limit() {
        return 0;
    }
    [
        tile.positions() * per_image * c,
        tile.positions() * per_image * k,
        h * w * c,
        oh * ow * k,
    ]
    .into_iter()
    .map(|values| (cap / (values.max(1) * 4) as u64) as usize)
    .min()
    .unwrap_or(0)
}

fn params(
    c: usize,
    k: usize,
    (n, h, w): (usize, usize, usize),
    (oh, ow): (usize, usize),
    (pad_top, pad_left): (usize, usize),
    (tiles_h, tiles_w): (usize, usize),
    (src_base, dst_base): (usize, usize),
) -> Params {
    Params {
        n: n as u32,
        h: h as u32,
        w: w as u32,
        c: c as u32,
        k: k as u32,
        oh: oh as u32,
        ow: ow as u32,
        pad_top: pad_top as u32,
        pad_left: pad_left as u32,
        tiles_h: tiles_h as u32,
        tiles_w: tiles_w as u32,
        src_base: src_base as u32,
        dst_base: dst_base as u32,
        _p0: 0,
        _p1: 0,
        _p2: 0,
    }
}
