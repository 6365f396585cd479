//! 2-D and 1-D convolution (shaders/conv2d.wgsl): forward with fused bias and ReLU, and the
//! input, kernel and bias gradients. Input (N,H,W,Cin), kernel HWIO (KH,KW,Cin,Cout), output
//! (N,OH,OW,Cout). A batch whose activations pass the device's binding limit runs in chunks of
//! whole images, each bound as its own window of the big buffer.

use std::hash::{Hash, Hasher};

use super::gemm::{ARead, GemmPlan, GemmShaders, Product};
use super::pack::{b_args, Layout};
use super::winograd::{self, Conv3x3, Tile};
use super::{batch_chunks, check_binding, reduce, shape_err, Padding, Result};
use crate::gpu::pool::Derivation;
use crate::gpu::{Arg, BufferRange, ConvAlgo, Gpu, ShaderId};
use crate::tensor::Tensor;

/// Geometry of a convolution layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dSpec {
    pub stride: (usize, usize),
    pub padding: Padding,
    /// Apply ReLU in the forward epilogue.
    pub relu: bool,
}

impl Conv2dSpec {
    pub fn new(stride: usize, padding: Padding, relu: bool) -> Self {
        Self {
            stride: (stride, stride),
            padding,
            relu,
        }
    }
}

/// Resolved shapes of one convolution.
#[derive(Clone, Copy, Debug)]
struct Geometry {
    n: usize,
    h: usize,
    w: usize,
    cin: usize,
    kh: usize,
    kw: usize,
    cout: usize,
    oh: usize,
    ow: usize,
    pad_top: usize,
    pad_left: usize,
}

crate::shader_params! {
    pub(crate) struct Params {
        n: u32,
        h: u32,
        w: u32,
        oh: u32,
        ow: u32,
        pad_top: u32,
        pad_left: u32,
        a_base: u32,
        c_base: u32,
        b_base: u32,
        slices: u32,
        _p0: u32,
    }
}

fn geometry(op: &'static str, x: &Tensor, w: &Tensor, spec: &Conv2dSpec) -> Result<Geometry> {
    let &[n, h, wd, cin] = x.dims() else {
        return Err(shape_err(op, "input", "(N,H,W,Cin)", x.shape()));
    };
    let &[kh, kw, wcin, cout] = w.dims() else {
        return Err(shape_err(op, "kernel", "(KH,KW,Cin,Cout)", w.shape()));
    };
    if wcin != cin {
        return Err(shape_err(
            op,
            "kernel",
            format!("({kh},{kw},{cin},{cout}) for input {}", x.shape()),
            w.shape(),
        ));
    }
    if spec.stride.0 == 0 || spec.stride.1 == 0 {
        return Err(super::OpError::Invalid {
            op,
            reason: format!("stride {:?} must be positive", spec.stride),
        });
    }
    let (oh, pad_top) = spec.padding.resolve(h, kh, spec.stride.0).ok_or_else(|| {
        shape_err(
            op,
            "input",
            format!("at least {kh}x{kw} spatially for a valid {kh}x{kw} kernel"),
            x.shape(),
        )
    })?;
    let (ow, pad_left) = spec.padding.resolve(wd, kw, spec.stride.1).ok_or_else(|| {
        shape_err(
            op,
            "input",
            format!("at least {kh}x{kw} spatially for a valid {kh}x{kw} kernel"),
            x.shape(),
        )
    })?;
    Ok(Geometry {
        n,
        h,
        w: wd,
        cin,
        kh,
        kw,
        cout,
        oh,
        ow,
        pad_top,
        pad_left,
    })
}

/// The output shape a convolution of `input` (N,H,W,Cin) with `kernel` (KH,KW,Cin,Cout) has.
pub fn conv2d_output_shape(
    input: &[usize],
    kernel: &[usize],
    spec: &Conv2dSpec,
) -> Option<[usize; 4]> {
    let (oh, _) = spec.padding.resolve(input[1], kernel[0], spec.stride.0)?;
    let (ow, _) = spec.padding.resolve(input[2], kernel[1], spec.stride.1)?;
    Some([input[0], oh, ow, kernel[3]])
}

fn constants(g: &Geometry, spec: &Conv2dSpec, mode: u32) -> Vec<(&'static str, f64)> {
    vec![
        ("MODE", f64::from(mode)),
        ("KH", g.kh as f64),
        ("KW", g.kw as f64),
        ("SH", spec.stride.0 as f64),
        ("SW", spec.stride.1 as f64),
        ("CIN", g.cin as f64),
        ("COUT", g.cout as f64),
        ("RELU", f64::from(u32::from(spec.relu && mode == 0))),
    ]
}

/// conv2d's modules on the two GEMM families.
const SHADERS: GemmShaders = GemmShaders {
    core: ShaderId::Conv2d,
    sg_buffer: ShaderId::Conv2dSg,
    sg_texture: ShaderId::Conv2dSgTexture,
    tiled: ShaderId::Conv2dTiled,
};

impl Geometry {
    /// The GEMM of product `mode` (as in the shaders) over `m` rows. The forward and the weight
    /// gradient gather an input whose channels are not a multiple of 4 (RGB) value by value;
    /// the input gradient would write partial vec4s, so it needs Cin a multiple of 4 too. The
    /// weight gradient reads A along M: its rows are input channels, contiguous in NHWC.
    fn product(&self, mode: u32, m: usize) -> Product {
        let (kk, cin4, cout4) = (
            self.kh * self.kw,
            self.cin.is_multiple_of(4),
            self.cout.is_multiple_of(4),
        );
        match mode {
            0 => Product {
                m,
                k: kk * self.cin,
                n: self.cout,
                a: ARead::Gathered,
                vec4: cout4,
                b_transposed: false,
                batch: 1,
            },
            1 => Product {
                m,
                k: kk * self.cout,
                n: self.cin,
                a: ARead::Gathered,
                vec4: cout4 && cin4,
                b_transposed: true,
                batch: 1,
            },
            _ => Product {
                m: kk * self.cin,
                k: m,
                n: self.cout,
                a: ARead::AlongM,
                vec4: cout4,
                b_transposed: false,
                batch: 1,
            },
        }
    }

    fn params(&self, n: usize, a_base: u32, b_base: u32, c_base: u32) -> Params {
        Params {
            n: n as u32,
            h: self.h as u32,
            w: self.w as u32,
            oh: self.oh as u32,
            ow: self.ow as u32,
            pad_top: self.pad_top as u32,
            pad_left: self.pad_left as u32,
            a_base,
            c_base,
            b_base,
            slices: 1,
            _p0: 0,
        }
    }
    /// Batch items n0..n0+nb of the input x, bound for the kernels that read it as vec4s: an
    /// RGB input's last values sit in a partial vec4, so the range is padded to whole vec4s.
    fn input_window<'a>(
        &self,
        gpu: &Gpu,
        x: &'a Tensor,
        n0: usize,
        nb: usize,
    ) -> (BufferRange<'a>, u32) {
        let (xr, xb) = x.window(gpu, n0 * self.in_item(), nb * self.in_item());
        (xr.padded_to(16, gpu.binding_limit()), xb)
    }
    /// The input and the output, per image, of product `mode` (0 forward, 1 input gradient):
    /// ((H, W, C), (OH, OW, K)) as that product sees them.
    fn sides(&self, mode: u32) -> ((usize, usize, usize), (usize, usize, usize)) {
        if mode == 0 {
            ((self.h, self.w, self.cin), (self.oh, self.ow, self.cout))
        } else {
            ((self.oh, self.ow, self.cout), (self.h, self.w, self.cin))
        }
    }

    /// The batch chunks of the backward, whose input and output gradient must each fit a
    /// binding.
    fn backward_chunks(&self, gpu: &Gpu, op: &'static str) -> Result<Vec<(usize, usize)>> {
        batch_chunks(
            gpu,
            op,
            self.n,
            &[
                ("input", self.in_item() as u64 * 4),
                ("output gradient", self.out_item() as u64 * 4),
            ],
        )
    }

    fn in_item(&self) -> usize {
        self.h * self.w * self.cin
    }
    fn out_item(&self) -> usize {
        self.oh * self.ow * self.cout
    }
}

/// The algorithms a convolution product may run on, as the tuning cache records them.
const DIRECT: u32 = 1;
const F2X2: u32 = 2;
const F4X4: u32 = 4;
const F6X6: u32 = 6;

/// Which algorithm runs product `mode` (0 forward, 1 input gradient) of the convolution `g`
/// with kernel `kernel`: Winograd only for 3x3 stride-1 kernels; there what `--conv-algo`
/// forces, else the tuning cache's measured choice (measured now under `--tune`, `run`
/// running a candidate), else [`default_algorithm`]. The calls that run the product
/// (`measurable`) record that they saw the kernel; the reports only look.
fn algorithm(
    gpu: &Gpu,
    g: &Geometry,
    spec: &Conv2dSpec,
    kernel: &Tensor,
    mode: u32,
    measurable: bool,
    run: impl FnMut(u32) -> Result<()>,
) -> Result<u32> {
    if (g.kh, g.kw, spec.stride) != (3, 3, (1, 1)) {
        return Ok(DIRECT);
    }
    let ((h, w, c), (oh, ow, k)) = g.sides(mode);
    // Where not even one image's transformed tensors fit a binding, the layer runs direct.
    let fits = |tile| winograd::images_per_chunk(gpu, tile, (h, w, c), (oh, ow, k)) > 0;
    let forced = |algo: u32, tile| {
        if fits(tile) {
            algo
        } else {
            tracing::debug!("conv2d: one image does not fit Winograd's bindings; running direct");
            DIRECT
        }
    };
    match gpu.conv_algo() {
        ConvAlgo::Direct => Ok(DIRECT),
        ConvAlgo::F2x2 => Ok(forced(F2X2, Tile::F2)),
        ConvAlgo::F4x4 => Ok(forced(F4X4, Tile::F4)),
        ConvAlgo::F6x6 => Ok(forced(F6X6, Tile::F6)),
        ConvAlgo::Auto => {
            // Labelled by the family before a tuned GEMM choice, which the first measurement
            // under --tune makes: the key stays the same from the next run on.
            let direct = g.product(mode, g.n * g.oh * g.ow);
            let family = GemmPlan::untuned(gpu, SHADERS, &direct).family();
            // A kernel unchanged since this product's last call (a frozen layer, inference)
            // has its Winograd transform kept, so its candidates are compared as they run
            // with their derivations kept, under a key of its own; a kernel written since (a
            // trainable layer) or seen for the first time pays its transform every call.
            let mut h = std::hash::DefaultHasher::new();
            ("conv2d algorithm: kernel seen", mode).hash(&mut h);
            let seen = h.finish();
            let kept = if measurable {
                matches!(
                    gpu.pool().derivation(kernel.pooled(), seen),
                    Derivation::Unchanged | Derivation::Kept(_)
                )
            } else {
                gpu.pool().seen_unchanged(kernel.pooled(), seen)
            };
            let key =
                format!(
                "conv2d {}: x ({},{},{},{}) kernel 3x3 pad ({},{}) cout {} on {family}: algorithm{}",
                if mode == 0 { "forward" } else { "input gradient" },
                g.n, g.h, g.w, g.cin, g.pad_top, g.pad_left, g.cout,
                if kept { ", kernel kept" } else { "" }
            );
            let candidates: Vec<u32> = [
                (DIRECT, None),
                (F2X2, Some(Tile::F2)),
                (F4X4, Some(Tile::F4)),
                (F6X6, Some(Tile::F6)),
            ]
            .into_iter()
            .filter(|(_, tile)| tile.is_none_or(fits))
            .map(|(algo, _)| algo)
            .collect();
            let default = default_algorithm(gpu, g, mode, fits);
            let default = if candidates.contains(&default) {
                default
            } else {
                DIRECT
            };
            if !kept {
                return gpu.tuned(&key, &candidates, default, measurable, run);
            }
            let release = || gpu.pool().release_kept(kernel.pooled());
            gpu.tuned_keeping(&key, &candidates, default, measurable, &release, run)
        }
    }
}

/// The algorithm of a 3x3 stride-1 product where none was measured: the least of a cost
/// model's estimates, in multiply-adds per output position and channel pair. Direct does 9,
/// times the rows its GEMM computes past M (whole row tiles). Winograd F(m x m) does
/// ALPHA^2 / m^2, times the positions its tiles cover past the output, times its own row-tile
/// padding over the tiles P, plus its transforms, which cost about KAPPA products per
/// transformed value and so weigh ALPHA^2 / m^2 (1/C + 1/K). KAPPA was fitted to lavapipe's
/// timings of the VGG16 layers (BENCHMARKS.md, "Winograd"): the model's ratio to direct is
/// within 15% of the measured one on all six shapes timed, and F(6x6)'s to F(4x4) within about
/// 10% on the eight timed ("F(6x6,3x3)"; its transforms hold 64 values per lane and cost more
/// per value). Channel counts under 16 or not multiples of 4 stay direct (their products run
/// value by value). `--tune` measures instead.
fn default_algorithm(gpu: &Gpu, g: &Geometry, mode: u32, fits: impl Fn(Tile) -> bool) -> u32 {
    let ((_, _, c), (oh, ow, k)) = g.sides(mode);
    if c < 16 || k < 16 || !c.is_multiple_of(4) || !k.is_multiple_of(4) {
        return DIRECT;
    }
    let row_waste = |m: usize, rows: usize| (m.div_ceil(rows) * rows) as f64 / m as f64;
    let m = g.n * oh * ow;
    let direct_rows = GemmPlan::new(gpu, SHADERS, &g.product(mode, m)).tile().0;
    let mut best = (9.0 * row_waste(m, direct_rows), DIRECT);
    for (algo, tile, kappa) in [
        (F2X2, Tile::F2, 50.0),
        (F4X4, Tile::F4, 70.0),
        (F6X6, Tile::F6, 110.0),
    ] {
        if !fits(tile) {
            continue;
        }
        let side = tile.side();
        let tiles = oh.div_ceil(side) * ow.div_ceil(side);
        let p = g.n * tiles;
        let rows = winograd::product_plan(gpu, tile, p, c, k).tile().0;
        let per_output = tile.positions() as f64 / (side * side) as f64;
        let cover = (tiles * side * side) as f64 / (oh * ow) as f64;
        let transforms = kappa * per_output * (1.0 / c as f64 + 1.0 / k as f64);
        let cost = per_output * cover * row_waste(p, rows) + transforms;
        if cost < best.0 {
            best = (cost, algo);
        }
    }
    best.1
}

/// The algorithm the forward (or, with `input_gradient`, the input gradient) of a
/// convolution of `x` with `w` runs on this device now: forced, cached, or the default. Measures
/// nothing.
pub fn conv2d_algorithm(
    gpu: &Gpu,
    x: &Tensor,
    w: &Tensor,
    spec: &Conv2dSpec,
    input_gradient: bool,
) -> Result<ConvAlgo> {
    let g = geometry("conv2d_algorithm", x, w, spec)?;
    let mode = u32::from(input_gradient);
    Ok(
        match algorithm(gpu, &g, spec, w, mode, false, |_| Ok(()))? {
            F2X2 => ConvAlgo::F2x2,
            F4X4 => ConvAlgo::F4x4,
            F6X6 => ConvAlgo::F6x6,
            _ => ConvAlgo::Direct,
        },
    )
}

/// The GEMM kernels a convolution of `x` with `w` runs on this device now, as `bench` reports
/// them: per product its family with the tile or tiled configuration (a cached `--tune` choice
/// included), the Winograd products' where that algorithm runs. The forward's, or with
/// `backward` the input gradient's and the kernel gradient's. Measures nothing.
pub fn conv2d_gemm(
    gpu: &Gpu,
    x: &Tensor,
    w: &Tensor,
    spec: &Conv2dSpec,
    backward: bool,
) -> Result<String> {
    const OP: &str = "conv2d_gemm";
    let g = geometry(OP, x, w, spec)?;
    // Product `mode` (0 forward, 1 input gradient) as it runs: direct, or Winograd's batched
    // products over the images of its first chunk.
    let product = |mode: u32| -> Result<String> {
        let algo = algorithm(gpu, &g, spec, w, mode, false, |_| Ok(()))?;
        let ((h, w, c), (oh, ow, k)) = g.sides(mode);
        Ok(match tile_of(algo) {
            Some(tile) => {
                let images = winograd::images_per_chunk(gpu, tile, (h, w, c), (oh, ow, k));
                let side = tile.side();
                let p = g.n.min(images) * oh.div_ceil(side) * ow.div_ceil(side);
                winograd::product_plan(gpu, tile, p, c, k).describe()
            }
            None => GemmPlan::new(gpu, SHADERS, &g.product(mode, g.n * oh * ow)).describe(),
        })
    };
    if !backward {
        return product(0);
    }
    let chunks = g.backward_chunks(gpu, OP)?;
    let nb = chunks.first().map_or(g.n, |c| c.1);
    let dw = GemmPlan::new(gpu, SHADERS, &g.product(2, nb * g.oh * g.ow)).describe();
    Ok(format!("dx {}, dw {dw}", product(1)?))
}

fn tile_of(algo: u32) -> Option<Tile> {
    match algo {
        F2X2 => Some(Tile::F2),
        F4X4 => Some(Tile::F4),
        F6X6 => Some(Tile::F6),
        _ => None,
    }
}

/// y (N,OH,OW,Cout) = x (N,H,W,Cin) * w (KH,KW,Cin,Cout) + b (Cout), then ReLU if `spec.relu`.
pub fn conv2d_forward(
    gpu: &Gpu,
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    spec: &Conv2dSpec,
) -> Result<Tensor> {
    const OP: &str = "conv2d_forward";
    let g = geometry(OP, x, w, spec)?;
    if b.dims() != [g.cout] {
        return Err(shape_err(OP, "bias", format!("({})", g.cout), b.shape()));
    }
    check_binding(gpu, OP, "kernel", w.byte_len())?;
    let run = |algo: u32| match tile_of(algo) {
        Some(tile) => winograd::conv3x3(
            gpu,
            OP,
            &Conv3x3 {
                x,
                w,
                flip: false,
                pad: (g.pad_top, g.pad_left),
                out: (g.oh, g.ow),
                bias: Some(b),
                relu: spec.relu,
            },
            tile,
        ),
        None => forward_direct(gpu, x, w, b, spec, &g),
    };
    let algo = algorithm(gpu, &g, spec, w, 0, true, |a| run(a).map(drop))?;
    run(algo)
}

fn forward_direct(
    gpu: &Gpu,
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    spec: &Conv2dSpec,
    g: &Geometry,
) -> Result<Tensor> {
    const OP: &str = "conv2d_forward";
    let g = *g;
    let y = Tensor::uninit(gpu, [g.n, g.oh, g.ow, g.cout])?;
    let chunks = batch_chunks(
        gpu,
        OP,
        g.n,
        &[
            ("input", g.in_item() as u64 * 4),
            ("output", g.out_item() as u64 * 4),
        ],
    )?;
    let dispatch = |plan: &GemmPlan| -> Result<()> {
        let mut plan = *plan;
        let packed = plan.pack_kernel(gpu, w, Layout::RowMajor)?;
        let mut consts = constants(&g, spec, 0);
        let kernel = plan.kernel(&mut consts);
        let [wb, wt] = b_args(packed.as_ref(), w.all());
        for &(n0, nb) in &chunks {
            let (xr, xb) = g.input_window(gpu, x, n0, nb);
            let (yr, yb) = y.window(gpu, n0 * g.out_item(), nb * g.out_item());
            let p = g.params(nb, xb, 0, yb);
            gpu.dispatch(
                &kernel,
                &[
                    Arg::Uniform(bytemuck::bytes_of(&p)),
                    Arg::Read(xr),
                    wb,
                    Arg::Read(b.all()),
                    Arg::Write(yr),
                    wt,
                ],
                plan.grid(gpu, nb * g.oh * g.ow, g.cout),
            );
        }
        Ok(())
    };
    // Rows of the largest chunk decide the tile; smaller chunks only pad more. y is
    // overwritten, so a candidate may run more than once.
    let product = g.product(0, g.n * g.oh * g.ow);
    let plan = GemmPlan::new(gpu, SHADERS, &product).tune(gpu, &product, true, dispatch)?;
    dispatch(&plan)?;
    Ok(y)
}

/// Gradients of a convolution. `dx` is None when the caller asked for no input gradient (the
/// first trainable layer of a network never needs one).
pub struct Conv2dGrads {
    pub dx: Option<Tensor>,
    pub dw: Tensor,
    pub db: Tensor,
}

/// Backward of [`conv2d_forward`] given dL/dy (N,OH,OW,Cout) *after* the activation's own
/// backward (a fused ReLU is undone by `activation::relu_backward` first):
/// dx = sum over taps of dy * w, dw = sum over positions of x * dy, db = sum over N,OH,OW of dy.
pub fn conv2d_backward(
    gpu: &Gpu,
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
    spec: &Conv2dSpec,
    need_dx: bool,
) -> Result<Conv2dGrads> {
    const OP: &str = "conv2d_backward";
    let g = geometry(OP, x, w, spec)?;
    if dy.dims() != [g.n, g.oh, g.ow, g.cout] {
        return Err(shape_err(
            OP,
            "output gradient",
            format!("({},{},{},{})", g.n, g.oh, g.ow, g.cout),
            dy.shape(),
        ));
    }
    check_binding(gpu, OP, "kernel", w.byte_len())?;
    let chunks = g.backward_chunks(gpu, OP)?;

    let dx_winograd = |tile: Tile| {
        winograd::conv3x3(
            gpu,
            OP,
            &Conv3x3 {
                x: dy,
                w,
                flip: true,
                pad: (2 - g.pad_top, 2 - g.pad_left),
                out: (g.h, g.w),
                bias: None,
                relu: false,
            },
            tile,
        )
    };
    let dx_algo = if need_dx {
        algorithm(gpu, &g, spec, w, 1, true, |a| match tile_of(a) {
            Some(tile) => dx_winograd(tile).map(drop),
            None => input_gradient_direct(gpu, w, dy, spec, &g, &chunks).map(drop),
        })?
    } else {
        DIRECT
    };
    let dx = if !need_dx {
        None
    } else if let Some(tile) = tile_of(dx_algo) {
        Some(dx_winograd(tile)?)
    } else {
        Some(input_gradient_direct(gpu, w, dy, spec, &g, &chunks)?)
    };

    let dw = Tensor::uninit(gpu, w.shape().clone())?;
    let (m, n) = (g.kh * g.kw * g.cin, g.cout);
    for (i, &(n0, nb)) in chunks.iter().enumerate() {
        // The long sum over N*OH*OW may be split into slices (each of 256 or more terms), one
        // per workgroup z, whose partial kernels the column-sum reduction adds. By default it
        // splits only what would leave the adapter's threads idle (a guess on a GPU, whose
        // width `parallelism_hint` does not know); the tuning cache may hold a measured choice
        // (gpu::tune).
        let k = nb * g.oh * g.ow;
        let product = g.product(2, k);
        // The slices' partial kernels (slices, KH*KW*Cin*Cout) are one tensor, bound whole:
        // no more slices than one binding holds (under WebGPU's 128 MiB, 14 of block5's).
        let fit = (gpu.binding_limit() / (m * n * 4) as u64).max(1) as usize;
        let most = k.div_ceil(256).clamp(1, 64).min(fit) as u32;
        let default_slices = |plan: &GemmPlan| {
            let tile = plan.tile();
            let tiles = m.div_ceil(tile.0) * n.div_ceil(tile.1);
            (gpu.parallelism_hint().div_ceil(tiles) as u32).clamp(1, most)
        };
        let (xr, xb) = g.input_window(gpu, x, n0, nb);
        let (dyr, dyb) = dy.window(gpu, n0 * g.out_item(), nb * g.out_item());
        let run_on = |plan: &GemmPlan, slices: u32| -> Result<()> {
            // The subgroup kernel reads this chunk's dy (N*OH*OW, Cout) packed.
            let packed = plan.pack_operand(gpu, dyr, dyb, Layout::RowMajor)?;
            let [dyb_arg, dyt] = b_args(packed.as_ref(), dyr);
            let partial = if slices > 1 {
                Some(Tensor::uninit(gpu, [slices as usize, m * n])?)
            } else {
                None
            };
            let mut consts = constants(&g, spec, 2);
            consts.push(("ACCUM", f64::from(u32::from(i > 0 && partial.is_none()))));
            let kernel = plan.kernel(&mut consts);
            let mut p = g.params(nb, xb, dyb, 0);
            p.slices = slices;
            let out = partial.as_ref().unwrap_or(&dw);
            let mut grid = plan.grid(gpu, m, n);
            grid[2] = slices;
            gpu.dispatch(
                &kernel,
                &[
                    Arg::Uniform(bytemuck::bytes_of(&p)),
                    Arg::Read(xr),
                    dyb_arg,
                    Arg::Read(w.all()),
                    Arg::Write(out.all()),
                    dyt,
                ],
                grid,
            );
            if let Some(partial) = partial {
                reduce::sum_rows_into(gpu, &partial, &dw.reshape([m * n]), i > 0)?;
            }
            Ok(())
        };
        let forced = gpu.forced_kernel_gradient_slices().map(|s| s.min(most));
        // The tile first, at the default split (later chunks accumulate into dw, so only the
        // first may run more than once), then the split on that tile.
        let plan = GemmPlan::new(gpu, SHADERS, &product).tune(gpu, &product, i == 0, |p| {
            run_on(p, forced.unwrap_or_else(|| default_slices(p)))
        })?;
        let default = default_slices(&plan);
        let mut run = |slices: u32| run_on(&plan, slices);
        let family = plan.family();
        let key = format!(
            "conv2d kernel gradient: x ({nb},{},{},{}) kernel {}x{} stride {:?} pad ({},{}) cout {} on {family}: slices",
            g.h, g.w, g.cin, g.kh, g.kw, spec.stride, g.pad_top, g.pad_left, g.cout
        );
        let mut candidates: Vec<u32> = [1, 2, 4, 8, 16, 32, 64]
            .into_iter()
            .filter(|&c| c <= most)
            .collect();
        if !candidates.contains(&default) {
            candidates.push(default);
        }
        let slices = match forced {
            Some(forced) => forced,
            // Later chunks accumulate into dw, so only the first may run more than once.
            None => gpu.tuned(&key, &candidates, default, i == 0, &mut run)?,
        };
        run(slices)?;
    }
    let db = reduce::sum_rows(gpu, &dy.reshape([g.n * g.oh * g.ow, g.cout]))?;
    Ok(Conv2dGrads { dx, dw, db })
}

/// dx (N,H,W,Cin) of [`conv2d_backward`] on the implicit GEMM, over the batch `chunks`.
fn input_gradient_direct(
    gpu: &Gpu,
    w: &Tensor,
    dy: &Tensor,
    spec: &Conv2dSpec,
    g: &Geometry,
    chunks: &[(usize, usize)],
) -> Result<Tensor> {
    let g = *g;
    let dx = Tensor::uninit(gpu, [g.n, g.h, g.w, g.cin])?;
    let dispatch = |plan: &GemmPlan| -> Result<()> {
        let mut plan = *plan;
        // The subgroup and tiled kernels read w' (KH*KW*Cout, Cin) packed: one pass over the
        // weights.
        let packed = plan.pack_kernel(gpu, w, Layout::TapTransposed { r: g.cout })?;
        let mut consts = constants(&g, spec, 1);
        let kernel = plan.kernel(&mut consts);
        let [wb, wt] = b_args(packed.as_ref(), w.all());
        for &(n0, nb) in chunks {
            let (dyr, dyb) = dy.window(gpu, n0 * g.out_item(), nb * g.out_item());
            let (dxr, dxb) = dx.window(gpu, n0 * g.in_item(), nb * g.in_item());
            let p = g.params(nb, dyb, 0, dxb);
            gpu.dispatch(
                &kernel,
                &[
                    Arg::Uniform(bytemuck::bytes_of(&p)),
                    Arg::Read(dyr),
                    wb,
                    Arg::Read(w.all()),
                    Arg::Write(dxr),
                    wt,
                ],
                plan.grid(gpu, nb * g.h * g.w, g.cin),
            );
        }
        Ok(())
    };
    // dx is overwritten, so a candidate may run more than once.
    let product = g.product(1, g.n * g.h * g.w);
    let plan = GemmPlan::new(gpu, SHADERS, &product).tune(gpu, &product, true, dispatch)?;
    dispatch(&plan)?;
    Ok(dx)
}

/// 1-D convolution: x (N,L,Cin), w (K,Cin,Cout), b (Cout) -> (N,OL,Cout). Runs as the 2-D
/// kernel with H = 1, so it shares every optimisation and test of the 2-D path.
pub fn conv1d_forward(
    gpu: &Gpu,
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    stride: usize,
    padding: Padding,
    relu: bool,
) -> Result<Tensor> {
    let (x4, w4) = as_2d("conv1d_forward", x, w)?;
    let y = conv2d_forward(
        gpu,
        &x4,
        &w4,
        b,
        &Conv2dSpec {
            stride: (1, stride),
            padding,
            relu,
        },
    )?;
    let d = y.dims().to_vec();
    Ok(y.reshape([d[0], d[2], d[3]]))
}

/// Backward of [`conv1d_forward`]; shapes as there.
pub fn conv1d_backward(
    gpu: &Gpu,
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
    stride: usize,
    padding: Padding,
    need_dx: bool,
) -> Result<Conv2dGrads> {
    let (x4, w4) = as_2d("conv1d_backward", x, w)?;
    let &[n, ol, co] = dy.dims() else {
        return Err(shape_err(
            "conv1d_backward",
            "output gradient",
            "(N,L,Cout)",
            dy.shape(),
        ));
    };
    let spec = Conv2dSpec {
        stride: (1, stride),
        padding,
        relu: false,
    };
    let g = conv2d_backward(gpu, &x4, &w4, &dy.reshape([n, 1, ol, co]), &spec, need_dx)?;
    Ok(Conv2dGrads {
        dx: g.dx.map(|d| d.reshape(x.shape().clone())),
        dw: g.dw.reshape(w.shape().clone()),
        db: g.db,
    })
}

fn as_2d(op: &'static str, x: &Tensor, w: &Tensor) -> Result<(Tensor, Tensor)> {
    let &[n, l, c] = x.dims() else {
        return Err(shape_err(op, "input", "(N,L,Cin)", x.shape()));
    };
    let &[k, ci, co] = w.dims() else {
        return Err(shape_err(op, "kernel", "(K,Cin,Cout)", w.shape()));
    };
    Ok((x.reshape([n, 1, l, c]), w.reshape([1, k, ci, co])))
}
