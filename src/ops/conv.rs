//! 2-D and 1-D convolution (shaders/conv2d.wgsl): forward with fused bias and ReLU, and the
//! input, kernel and bias gradients. Input (N,H,W,Cin), kernel HWIO (KH,KW,Cin,Cout), output
//! (N,OH,OW,Cout). A batch whose activations pass the device's binding limit runs in chunks of
//! whole images, each bound as its own window of the big buffer.

use super::gemm::{grid, ARead, SgTiles};
use super::pack::{b_args, pack_b, pack_kernel, BSource, Layout, PackedB};
use super::{batch_chunks, check_binding, reduce, shape_err, Padding, Result};
use crate::gpu::{Arg, BufferRange, Gpu, Kernel, ShaderId};
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

/// How one convolution product (`mode` as in the shaders) runs: on the subgroup kernels
/// (conv2d_sg.wgsl) when the adapter has 8-lane subgroups and the channel counts let every
/// operand move as whole vec4s (Cout a multiple of 4, and Cin too for the input gradient), on
/// the workgroup-memory kernel (conv2d.wgsl) otherwise. The weight gradient reads A along M
/// (`gemm_sg_m`): its rows are input channels, contiguous in NHWC.
struct Plan {
    mode: u32,
    /// The subgroup kernel's tile and where it reads B; None on the workgroup-memory kernel.
    sg: Option<(SgTiles, BSource)>,
}

impl Plan {
    /// The plan for an M = `rows` product whose B is (K,N) = `b_dims`. The subgroup kernel
    /// reads B packed (pack.wgsl) for the input gradient, whose B is the kernel read
    /// transposed, and otherwise where more than one row tile reads B, so that packing pays.
    fn new(gpu: &Gpu, g: &Geometry, mode: u32, rows: usize, b_dims: (usize, usize)) -> Self {
        // The forward and the weight gradient gather an input whose channels are not a
        // multiple of 4 (RGB) value by value; the input gradient would write partial vec4s.
        let cin_ok = g.cin.is_multiple_of(4) || mode != 1;
        if !(gpu.subgroup_kernels() && cin_ok && g.cout.is_multiple_of(4)) {
            return Self { mode, sg: None };
        }
        let a = if mode == 2 {
            ARead::AlongM
        } else {
            ARead::Gathered
        };
        let tiles = SgTiles::choose(gpu, rows, b_dims.1, a);
        let pack = mode == 1 || rows > tiles.rows();
        let source = BSource::choose(gpu, pack, b_dims, tiles.cols());
        Self {
            mode,
            sg: Some((tiles, source)),
        }
    }

    /// Packs the layer's kernel `w` as B (K,N) = `b_dims` read by `layout`, or takes the
    /// packed texture `w` keeps (`pack::pack_kernel`), and notes where B is then read from.
    fn pack_kernel(
        &mut self,
        gpu: &Gpu,
        w: &Tensor,
        b_dims: (usize, usize),
        layout: Layout,
    ) -> Result<Option<PackedB>> {
        let Some((tiles, source)) = self.sg else {
            return Ok(None);
        };
        let (source, packed) = pack_kernel(gpu, w, b_dims, layout, tiles.cols(), source)?;
        self.sg = Some((tiles, source));
        Ok(packed)
    }

    /// Where the subgroup kernel reads B; None on the workgroup-memory kernel.
    fn source(&self) -> Option<BSource> {
        self.sg.map(|(_, source)| source)
    }

    /// (rows, columns) of C per workgroup.
    fn tile(&self) -> (usize, usize) {
        self.sg
            .map_or((64, 64), |(tiles, _)| (tiles.rows(), tiles.cols()))
    }

    /// The kernel, with the plan's override constants added to the op's `consts`.
    fn kernel<'a>(&self, consts: &'a mut Vec<(&'static str, f64)>) -> Kernel<'a> {
        match self.sg {
            Some((tiles, source)) => {
                consts.extend(source.constants());
                consts.extend(tiles.constants());
                let entry = if self.mode == 2 {
                    "gemm_sg_m"
                } else {
                    "gemm_sg"
                };
                let shader = source.shader(ShaderId::Conv2dSg, ShaderId::Conv2dSgTexture);
                Kernel::new(shader, entry, consts)
            }
            None => Kernel::new(ShaderId::Conv2d, "gemm", consts),
        }
    }
}

impl Geometry {
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
    fn in_item(&self) -> usize {
        self.h * self.w * self.cin
    }
    fn out_item(&self) -> usize {
        self.oh * self.ow * self.cout
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
    let y = Tensor::uninit(gpu, [g.n, g.oh, g.ow, g.cout])?;
    let mut consts = constants(&g, spec, 0);
    // Rows of the largest chunk decide the tile; smaller chunks only pad more.
    let rows = g.n * g.oh * g.ow;
    let dims = (g.kh * g.kw * g.cin, g.cout);
    let mut plan = Plan::new(gpu, &g, 0, rows, dims);
    let packed = plan.pack_kernel(gpu, w, dims, Layout::RowMajor)?;
    let (kernel, tile) = (plan.kernel(&mut consts), plan.tile());
    let [wb, wt] = b_args(packed.as_ref(), w.all());
    let chunks = batch_chunks(
        gpu,
        OP,
        g.n,
        &[
            ("input", g.in_item() as u64 * 4),
            ("output", g.out_item() as u64 * 4),
        ],
    )?;
    for (n0, nb) in chunks {
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
            grid(gpu, nb * g.oh * g.ow, g.cout, tile),
        );
    }
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
    let in_bytes = g.in_item() as u64 * 4;
    let out_bytes = g.out_item() as u64 * 4;
    let chunks = batch_chunks(
        gpu,
        OP,
        g.n,
        &[("input", in_bytes), ("output gradient", out_bytes)],
    )?;

    let dx = if need_dx {
        let dx = Tensor::uninit(gpu, x.shape().clone())?;
        let mut consts = constants(&g, spec, 1);
        let dims = (g.kh * g.kw * g.cout, g.cin);
        let rows = g.n * g.h * g.w;
        let mut plan = Plan::new(gpu, &g, 1, rows, dims);
        // The subgroup kernel reads w' (KH*KW*Cout, Cin) packed: one pass over the weights.
        let layout = Layout::TapTransposed { r: g.cout };
        let packed = plan.pack_kernel(gpu, w, dims, layout)?;
        let (kernel, tile) = (plan.kernel(&mut consts), plan.tile());
        let [wb, wt] = b_args(packed.as_ref(), w.all());
        for &(n0, nb) in &chunks {
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
                grid(gpu, nb * g.h * g.w, g.cin, tile),
            );
        }
        Some(dx)
    } else {
        None
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
        let dims = (k, g.cout);
        let plan = Plan::new(gpu, &g, 2, m, dims);
        let (source, tile) = (plan.source(), plan.tile());
        let tiles = m.div_ceil(tile.0) * n.div_ceil(tile.1);
        let most = k.div_ceil(256).clamp(1, 64) as u32;
        let default = (gpu.parallelism_hint().div_ceil(tiles) as u32).clamp(1, most);
        let (xr, xb) = g.input_window(gpu, x, n0, nb);
        let (dyr, dyb) = dy.window(gpu, n0 * g.out_item(), nb * g.out_item());
        // The subgroup kernel reads this chunk's dy (N*OH*OW, Cout) packed.
        let packed = match source {
            Some(source) => pack_b(gpu, dyr, dyb, dims, Layout::RowMajor, tile.1, source)?,
            None => None,
        };
        let [dyb_arg, dyt] = b_args(packed.as_ref(), dyr);
        let mut run = |slices: u32| -> Result<()> {
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
            let mut grid = grid(gpu, m, n, tile);
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
        let family = if plan.source().is_some() {
            format!("subgroup {}x{}", tile.0, tile.1)
        } else {
            "workgroup-memory".to_string()
        };
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
        let slices = match gpu.forced_kernel_gradient_slices() {
            Some(forced) => forced.min(most),
            // Later chunks accumulate into dw, so only the first may run more than once.
            None => gpu.tuned(&key, &candidates, default, i == 0, &mut run)?,
        };
        run(slices)?;
    }
    let db = reduce::sum_rows(gpu, &dy.reshape([g.n * g.oh * g.ow, g.cout]))?;
    Ok(Conv2dGrads { dx, dw, db })
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
