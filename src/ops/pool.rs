//! Pooling (shaders/pool.wgsl): max and average, 2-D, 1-D and global, forward and backward, on
//! NHWC (N,H,W,C). Batches over the binding limit run in chunks of whole images.

use super::Padding;
use super::{batch_chunks, grid_1d, shape_err, Result};
use crate::gpu::{Arg, Gpu, Kernel, ShaderId};
use crate::tensor::Tensor;

/// Window, stride and padding of a pooling layer. Keras' default stride is the window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolSpec {
    pub window: (usize, usize),
    pub stride: (usize, usize),
    pub padding: Padding,
}

impl PoolSpec {
    /// A k x k window with stride k, valid padding: Keras' `MaxPooling2D(k)`.
    pub fn square(k: usize) -> Self {
        Self {
            window: (k, k),
            stride: (k, k),
            padding: Padding::Valid,
        }
    }
}

crate::shader_params! {
    pub(crate) struct Params {
        n: u32,
        src_base: u32,
        dst_base: u32,
        aux_base: u32,
    }
}

#[derive(Clone, Copy)]
struct Geometry {
    n: usize,
    h: usize,
    w: usize,
    c: usize,
    oh: usize,
    ow: usize,
    pad_top: usize,
    pad_left: usize,
    spec: PoolSpec,
}

impl Geometry {
    fn of(op: &'static str, x_dims: &[usize], spec: PoolSpec) -> Result<Self> {
        let &[n, h, w, c] = x_dims else {
            return Err(shape_err(op, "input", "(N,H,W,C)", &x_dims.into()));
        };
        if spec.window.0 == 0 || spec.window.1 == 0 || spec.stride.0 == 0 || spec.stride.1 == 0 {
            return Err(super::OpError::Invalid {
                op,
                reason: format!(
                    "window {:?} and stride {:?} must be positive",
                    spec.window, spec.stride
                ),
            });
        }
        let fit = || {
            shape_err(
                op,
                "input",
                format!("at least the {:?} window", spec.window),
                &x_dims.into(),
            )
        };
        let (oh, pad_top) = spec
            .padding
            .resolve(h, spec.window.0, spec.stride.0)
            .ok_or_else(fit)?;
        let (ow, pad_left) = spec
            .padding
            .resolve(w, spec.window.1, spec.stride.1)
            .ok_or_else(fit)?;
        Ok(Self {
            n,
            h,
            w,
            c,
            oh,
            ow,
            pad_top,
            pad_left,
            spec,
        })
    }
    fn in_item(&self) -> usize {
        self.h * self.w * self.c
    }
    fn out_item(&self) -> usize {
        self.oh * self.ow * self.c
    }
    fn params(&self, n: usize, src_base: u32, dst_base: u32, aux_base: u32) -> Params {
        Params {
            n: n as u32,
            src_base,
            dst_base,
            aux_base,
        }
    }
    /// The layer's geometry as the shader's override constants (the batch stays a uniform).
    fn constants(&self) -> [(&'static str, f64); 11] {
        [
            ("H", self.h as f64),
            ("W", self.w as f64),
            ("C", self.c as f64),
            ("OH", self.oh as f64),
            ("OW", self.ow as f64),
            ("PH", self.spec.window.0 as f64),
            ("PW", self.spec.window.1 as f64),
            ("SH", self.spec.stride.0 as f64),
            ("SW", self.spec.stride.1 as f64),
            ("PAD_TOP", self.pad_top as f64),
            ("PAD_LEFT", self.pad_left as f64),
        ]
    }
}

/// The entry point that runs `entry` and the elements each invocation handles: max pooling
/// moves four channels per invocation (`*_4`, vec4 bindings) when the channel count and every
/// binding's element base are multiples of 4.
fn vectorised(entry: &'static str, c: usize, bases: &[u32]) -> (&'static str, usize) {
    let aligned = c.is_multiple_of(4) && bases.iter().all(|b| b % 4 == 0);
    match entry {
        "max_forward" if aligned => ("max_forward_4", 4),
        "max_backward" if aligned => ("max_backward_4", 4),
        _ => (entry, 1),
    }
}

/// Forward pass: `entry` reads x and writes y (and the winning taps for max pooling).
fn forward(
    gpu: &Gpu,
    op: &'static str,
    entry: &'static str,
    x: &Tensor,
    spec: PoolSpec,
    taps: bool,
) -> Result<(Tensor, Option<Tensor>)> {
    let g = Geometry::of(op, x.dims(), spec)?;
    let y = Tensor::uninit(gpu, [g.n, g.oh, g.ow, g.c])?;
    let arg = if taps {
        Some(Tensor::uninit(gpu, [g.n, g.oh, g.ow, g.c])?)
    } else {
        None
    };
    let consts = g.constants();
    let per = [
        ("input", g.in_item() as u64 * 4),
        ("output", g.out_item() as u64 * 4),
    ];
    for (n0, nb) in batch_chunks(gpu, op, g.n, &per)? {
        let (xr, xb) = x.window(gpu, n0 * g.in_item(), nb * g.in_item());
        let (yr, yb) = y.window(gpu, n0 * g.out_item(), nb * g.out_item());
        let mut args = vec![Arg::Read(xr), Arg::Write(yr)];
        let mut ab = 0;
        if let Some(a) = &arg {
            let (ar, b) = a.window(gpu, n0 * g.out_item(), nb * g.out_item());
            ab = b;
            args.push(Arg::Write(ar));
        }
        let p = g.params(nb, xb, yb, ab);
        args.insert(0, Arg::Uniform(bytemuck::bytes_of(&p)));
        let (entry, per_thread) = vectorised(entry, g.c, &[xb, yb, ab]);
        let kernel = Kernel::new(ShaderId::Pool, entry, &consts);
        let threads = nb * g.out_item() / per_thread;
        gpu.dispatch(&kernel, &args, grid_1d(gpu, &kernel, threads));
    }
    Ok((y, arg))
}

/// Backward pass: `entry` gathers dy (and taps) into dx of shape `x_dims`.
fn backward(
    gpu: &Gpu,
    op: &'static str,
    entry: &'static str,
    dy: &Tensor,
    taps: Option<&Tensor>,
    x_dims: &[usize],
    spec: PoolSpec,
) -> Result<Tensor> {
    let g = Geometry::of(op, x_dims, spec)?;
    let want = [g.n, g.oh, g.ow, g.c];
    if dy.dims() != want {
        return Err(shape_err(
            op,
            "output gradient",
            format!("{:?}", crate::tensor::Shape(want.to_vec())),
            dy.shape(),
        ));
    }
    if let Some(t) = taps {
        if t.dims() != want {
            return Err(shape_err(
                op,
                "winning taps",
                format!("{:?}", crate::tensor::Shape(want.to_vec())),
                t.shape(),
            ));
        }
    }
    let dx = Tensor::uninit(gpu, x_dims)?;
    let consts = g.constants();
    let per = [
        ("input", g.in_item() as u64 * 4),
        ("output", g.out_item() as u64 * 4),
    ];
    for (n0, nb) in batch_chunks(gpu, op, g.n, &per)? {
        let (dyr, dyb) = dy.window(gpu, n0 * g.out_item(), nb * g.out_item());
        let (dxr, dxb) = dx.window(gpu, n0 * g.in_item(), nb * g.in_item());
        let mut args = vec![Arg::Read(dyr), Arg::Write(dxr)];
        let mut ab = 0;
        if let Some(t) = taps {
            let (tr, b) = t.window(gpu, n0 * g.out_item(), nb * g.out_item());
            ab = b;
            args.push(Arg::Write(tr));
        }
        let p = g.params(nb, dyb, dxb, ab);
        args.insert(0, Arg::Uniform(bytemuck::bytes_of(&p)));
        let (entry, per_thread) = vectorised(entry, g.c, &[dyb, dxb, ab]);
        let kernel = Kernel::new(ShaderId::Pool, entry, &consts);
        let threads = nb * g.in_item() / per_thread;
        gpu.dispatch(&kernel, &args, grid_1d(gpu, &kernel, threads));
    }
    Ok(dx)
}

/// Max pooling: y (N,OH,OW,C) and the winning tap of each window (kept for backward).
pub fn max_pool2d(gpu: &Gpu, x: &Tensor, spec: PoolSpec) -> Result<(Tensor, Tensor)> {
    let (y, taps) = forward(gpu, "max_pool2d", "max_forward", x, spec, true)?;
    Ok((y, taps.expect("max pooling records taps")))
}

/// dx: each window's dy goes to its winning input (summed where windows overlap).
pub fn max_pool2d_backward(
    gpu: &Gpu,
    dy: &Tensor,
    taps: &Tensor,
    x_dims: &[usize],
    spec: PoolSpec,
) -> Result<Tensor> {
    backward(
        gpu,
        "max_pool2d_backward",
        "max_backward",
        dy,
        Some(taps),
        x_dims,
        spec,
    )
}

/// Average pooling over the taps inside the image.
pub fn avg_pool2d(gpu: &Gpu, x: &Tensor, spec: PoolSpec) -> Result<Tensor> {
    Ok(forward(gpu, "avg_pool2d", "avg_forward", x, spec, false)?.0)
}

/// dx: each window's dy spread evenly over its taps inside the image.
pub fn avg_pool2d_backward(
    gpu: &Gpu,
    dy: &Tensor,
    x_dims: &[usize],
    spec: PoolSpec,
) -> Result<Tensor> {
    backward(
        gpu,
        "avg_pool2d_backward",
        "avg_backward",
        dy,
        None,
        x_dims,
        spec,
    )
}

fn global_spec(op: &'static str, x_dims: &[usize]) -> Result<PoolSpec> {
    let &[_, h, w, _] = x_dims else {
        return Err(shape_err(op, "input", "(N,H,W,C)", &x_dims.into()));
    };
    Ok(PoolSpec {
        window: (h, w),
        stride: (h, w),
        padding: Padding::Valid,
    })
}

/// Global max pooling (N,H,W,C) -> (N,C), with the winning taps (N,1,1,C).
pub fn global_max_pool(gpu: &Gpu, x: &Tensor) -> Result<(Tensor, Tensor)> {
    let (y, taps) = max_pool2d(gpu, x, global_spec("global_max_pool", x.dims())?)?;
    let (n, c) = (x.dims()[0], x.dims()[3]);
    Ok((y.reshape([n, c]), taps))
}

pub fn global_max_pool_backward(
    gpu: &Gpu,
    dy: &Tensor,
    taps: &Tensor,
    x_dims: &[usize],
) -> Result<Tensor> {
    let spec = global_spec("global_max_pool_backward", x_dims)?;
    let dy4 = dy.reshape([x_dims[0], 1, 1, x_dims[3]]);
    max_pool2d_backward(gpu, &dy4, taps, x_dims, spec)
}

/// Global average pooling (N,H,W,C) -> (N,C).
pub fn global_avg_pool(gpu: &Gpu, x: &Tensor) -> Result<Tensor> {
    let y = avg_pool2d(gpu, x, global_spec("global_avg_pool", x.dims())?)?;
    let (n, c) = (x.dims()[0], x.dims()[3]);
    Ok(y.reshape([n, c]))
}

pub fn global_avg_pool_backward(gpu: &Gpu, dy: &Tensor, x_dims: &[usize]) -> Result<Tensor> {
    let spec = global_spec("global_avg_pool_backward", x_dims)?;
    let dy4 = dy.reshape([x_dims[0], 1, 1, x_dims[3]]);
    avg_pool2d_backward(gpu, &dy4, x_dims, spec)
}

fn spec_1d(window: usize, stride: usize, padding: Padding) -> PoolSpec {
    PoolSpec {
        window: (1, window),
        stride: (1, stride),
        padding,
    }
}

fn as_4d(op: &'static str, x: &Tensor) -> Result<Tensor> {
    let &[n, l, c] = x.dims() else {
        return Err(shape_err(op, "input", "(N,L,C)", x.shape()));
    };
    Ok(x.reshape([n, 1, l, c]))
}

fn drop_h(t: Tensor) -> Tensor {
    let d = t.dims().to_vec();
    t.reshape([d[0], d[2], d[3]])
}

/// 1-D max pooling (N,L,C) -> (N,OL,C), and the winning taps.
pub fn max_pool1d(
    gpu: &Gpu,
    x: &Tensor,
    window: usize,
    stride: usize,
    padding: Padding,
) -> Result<(Tensor, Tensor)> {
    let (y, taps) = max_pool2d(
        gpu,
        &as_4d("max_pool1d", x)?,
        spec_1d(window, stride, padding),
    )?;
    Ok((drop_h(y), taps))
}

pub fn max_pool1d_backward(
    gpu: &Gpu,
    dy: &Tensor,
    taps: &Tensor,
    x_dims: &[usize],
    window: usize,
    stride: usize,
    padding: Padding,
) -> Result<Tensor> {
    let &[n, l, c] = x_dims else {
        return Err(shape_err(
            "max_pool1d_backward",
            "input",
            "(N,L,C)",
            &x_dims.into(),
        ));
    };
    let d = dy.dims();
    let dy4 = dy.reshape([d[0], 1, d[1], d[2]]);
    let dx = max_pool2d_backward(
        gpu,
        &dy4,
        taps,
        &[n, 1, l, c],
        spec_1d(window, stride, padding),
    )?;
    Ok(drop_h(dx))
}
