//! Activations (shaders/activation.wgsl): ReLU, sigmoid, softmax, forward and backward.

use super::{check_binding, flat_chunks, grid_1d, shape_err, Result};
use crate::gpu::{Arg, Gpu, Kernel, ShaderId};
use crate::tensor::Tensor;

crate::shader_params! {
    pub(crate) struct Params {
        len: u32,
        cols: u32,
        _p0: u32,
        _p1: u32,
    }
}

/// Element-wise `entry` over `src` (and `src2` for backwards), chunked to fit the binding limit.
fn elementwise(
    gpu: &Gpu,
    entry: &'static str,
    src: &Tensor,
    src2: Option<&Tensor>,
) -> Result<Tensor> {
    same_shape(entry, src, src2)?;
    let out = Tensor::uninit(gpu, src.shape().clone())?;
    // ReLU moves four values per invocation where the length allows (chunks start on multiples
    // of 64 elements, so every window does too).
    let (entry, per_thread) = match entry {
        "relu_forward" if src.numel().is_multiple_of(4) => ("relu_forward_4", 4),
        "relu_backward" if src.numel().is_multiple_of(4) => ("relu_backward_4", 4),
        _ => (entry, 1),
    };
    let kernel = Kernel::new(ShaderId::Activation, entry, &[]);
    for (start, len) in flat_chunks(gpu, src.numel()) {
        let p = Params {
            len: (len / per_thread) as u32,
            cols: 0,
            _p0: 0,
            _p1: 0,
        };
        let (a, _) = src.window(gpu, start, len);
        let (b, _) = src2.unwrap_or(src).window(gpu, start, len);
        let (o, _) = out.window(gpu, start, len);
        gpu.dispatch(
            &kernel,
            &[
                Arg::Uniform(bytemuck::bytes_of(&p)),
                Arg::Read(a),
                Arg::Read(b),
                Arg::Write(o),
            ],
            grid_1d(gpu, &kernel, len / per_thread),
        );
    }
    Ok(out)
}

/// y = max(x, 0).
pub fn relu(gpu: &Gpu, x: &Tensor) -> Result<Tensor> {
    elementwise(gpu, "relu_forward", x, None)
}

/// dx = dy where the forward output y > 0, else 0.
pub fn relu_backward(gpu: &Gpu, dy: &Tensor, y: &Tensor) -> Result<Tensor> {
    elementwise(gpu, "relu_backward", dy, Some(y))
}

/// y = 1 / (1 + exp(-x)).
pub fn sigmoid(gpu: &Gpu, x: &Tensor) -> Result<Tensor> {
    elementwise(gpu, "sigmoid_forward", x, None)
}

/// dx = dy * y * (1 - y), y the forward output.
pub fn sigmoid_backward(gpu: &Gpu, dy: &Tensor, y: &Tensor) -> Result<Tensor> {
    elementwise(gpu, "sigmoid_backward", dy, Some(y))
}

/// A backward's second input (the forward output) must have the input's shape.
fn same_shape(entry: &'static str, src: &Tensor, src2: Option<&Tensor>) -> Result<()> {
    match src2 {
        Some(s2) if s2.shape() != src.shape() => Err(shape_err(
            entry,
            "forward output",
            format!("{}", src.shape()),
            s2.shape(),
        )),
        _ => Ok(()),
    }
}

fn rows(op: &'static str, t: &Tensor) -> Result<(usize, usize)> {
    match t.dims() {
        [.., c] if *c > 0 => Ok((t.numel() / c, *c)),
        _ => Err(shape_err(
            op,
            "input",
            "(rows, classes) with classes > 0",
            t.shape(),
        )),
    }
}

fn rowwise(gpu: &Gpu, entry: &'static str, src: &Tensor, src2: Option<&Tensor>) -> Result<Tensor> {
    let (r, c) = rows(entry, src)?;
    same_shape(entry, src, src2)?;
    check_binding(gpu, entry, "input", src.byte_len())?;
    let out = Tensor::uninit(gpu, src.shape().clone())?;
    let p = Params {
        len: r as u32,
        cols: c as u32,
        _p0: 0,
        _p1: 0,
    };
    let kernel = Kernel::new(ShaderId::Activation, entry, &[]);
    gpu.dispatch(
        &kernel,
        &[
            Arg::Uniform(bytemuck::bytes_of(&p)),
            Arg::Read(src.all()),
            Arg::Read(src2.unwrap_or(src).all()),
            Arg::Write(out.all()),
        ],
        // One row per invocation.
        [r.div_ceil(kernel.workgroup_x()) as u32, 1, 1],
    );
    Ok(out)
}

/// Softmax over the last dimension, shifted by the row maximum so it never overflows.
pub fn softmax(gpu: &Gpu, x: &Tensor) -> Result<Tensor> {
    rowwise(gpu, "softmax_forward", x, None)
}

/// dx_j = y_j * (dy_j - sum_k dy_k y_k), y the forward output.
pub fn softmax_backward(gpu: &Gpu, dy: &Tensor, y: &Tensor) -> Result<Tensor> {
    rowwise(gpu, "softmax_backward", dy, Some(y))
}
