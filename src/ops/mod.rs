//! The ops: one module per op family, each owning the pipelines of its shader file and both
//! directions of the op. Every op only records work into the [`Gpu`]'s pending encoder; nothing
//! here reads data back except where a function says so.

pub mod activation;
pub mod conv;
pub mod dense;
pub mod dropout;
mod gemm;
pub mod loss;
pub mod optim;
pub mod pack;
pub mod pool;
pub mod reduce;
mod winograd;

use thiserror::Error;

use crate::gpu::{Gpu, GpuError};
use crate::tensor::Shape;

/// Keras padding modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Padding {
    /// No padding; the output shrinks to floor((in - k) / s) + 1.
    Valid,
    /// Output ceil(in / s); zero padding split with the smaller half before (TensorFlow's rule).
    Same,
}

impl Padding {
    /// Output length and padding before, for one spatial dimension; None when the kernel does
    /// not fit a `valid` input.
    pub fn resolve(self, input: usize, kernel: usize, stride: usize) -> Option<(usize, usize)> {
        match self {
            Padding::Valid => (input >= kernel).then(|| ((input - kernel) / stride + 1, 0)),
            Padding::Same => {
                let out = input.div_ceil(stride);
                let total = ((out.max(1) - 1) * stride + kernel).saturating_sub(input);
                Some((out, total / 2))
            }
        }
    }
}

/// Errors of the op layer: shapes that do not fit together, bad hyper-parameters.
#[derive(Debug, Error)]
pub enum OpError {
    #[error("{op}: {what} has shape {found}, expected {expected}")]
    Shape {
        op: &'static str,
        what: &'static str,
        expected: String,
        found: Shape,
    },
    #[error("{op}: {reason}")]
    Invalid { op: &'static str, reason: String },
    #[error(transparent)]
    Gpu(#[from] GpuError),
}

pub type Result<T> = std::result::Result<T, OpError>;

pub(crate) fn shape_err(
    op: &'static str,
    what: &'static str,
    expected: impl Into<String>,
    found: &Shape,
) -> OpError {
    OpError::Shape {
        op,
        what,
        expected: expected.into(),
        found: found.clone(),
    }
}

/// Workgroup grid for `threads` invocations of `kernel` (whose workgroup size along x comes from
/// the host-shader contract), spilling into y when x would pass the per-dimension limit.
/// Shaders rebuild the index as x + y * groups.x * wg.
pub(crate) fn grid_1d(gpu: &Gpu, kernel: &crate::gpu::Kernel<'_>, threads: usize) -> [u32; 3] {
    let groups = threads.div_ceil(kernel.workgroup_x()).max(1) as u64;
    let max_x = u64::from(gpu.limits().max_compute_workgroups_per_dimension);
    let x = groups.min(max_x);
    [x as u32, groups.div_ceil(x) as u32, 1]
}

/// Splits `n` batch items into runs so that each tensor's binding stays within the device's
/// binding limit. `per_item` lists (tensor name, bytes per batch item).
pub(crate) fn batch_chunks(
    gpu: &Gpu,
    op: &'static str,
    n: usize,
    per_item: &[(&'static str, u64)],
) -> Result<Vec<(usize, usize)>> {
    // A window may start up to one alignment unit before the chunk.
    let usable = gpu.binding_limit().saturating_sub(gpu.offset_alignment());
    let mut max_items = n.max(1);
    for &(tensor, bytes) in per_item {
        if bytes == 0 {
            continue;
        }
        let fit = (usable / bytes) as usize;
        if fit == 0 {
            return Err(too_large(gpu, op, tensor, bytes));
        }
        max_items = max_items.min(fit);
    }
    let mut out = runs(n, max_items);
    if out.is_empty() {
        out.push((0, 0));
    }
    Ok(out)
}

/// (start, length) runs of at most `max` covering 0..total.
fn runs(total: usize, max: usize) -> Vec<(usize, usize)> {
    (0..total)
        .step_by(max.max(1))
        .map(|start| (start, max.min(total - start)))
        .collect()
}

/// Splits a flat array of `len` elements into runs that fit one binding and start on multiples
/// of 64 elements (256 bytes, the largest storage offset alignment an adapter may ask for).
pub(crate) fn flat_chunks(gpu: &Gpu, len: usize) -> Vec<(usize, usize)> {
    runs(len, ((gpu.binding_limit() / 4) as usize / 64 * 64).max(64))
}

/// Fails when one binding of a tensor that is never split would pass the limit.
pub(crate) fn check_binding(
    gpu: &Gpu,
    op: &'static str,
    tensor: &'static str,
    bytes: u64,
) -> Result<()> {
    if bytes > gpu.binding_limit() {
        return Err(too_large(gpu, op, tensor, bytes));
    }
    Ok(())
}

fn too_large(gpu: &Gpu, op: &'static str, tensor: &'static str, bytes: u64) -> OpError {
    GpuError::BindingTooLarge {
        op,
        tensor,
        needed: bytes,
        limit: gpu.binding_limit(),
    }
    .into()
}

/// Every uniform block the ops write, with the shader modules that read it: the host side of
/// the host-shader contract that `tests/contract.rs` compares with the WGSL.
pub fn params_layouts() -> Vec<crate::gpu::contract::ParamsLayout> {
    use crate::gpu::contract::ParamsLayout;
    use crate::gpu::ShaderId::*;
    vec![
        ParamsLayout::of::<activation::Params>("ops::activation::Params", &[Activation]),
        ParamsLayout::of::<conv::Params>(
            "ops::conv::Params",
            &[Conv2d, Conv2dSg, Conv2dSgTexture, Conv2dTiled],
        ),
        ParamsLayout::of::<dense::Params>(
            "ops::dense::Params",
            &[Matmul, MatmulSg, MatmulSgTexture, MatmulTiled],
        ),
        ParamsLayout::of::<dropout::Params>("ops::dropout::Params", &[Dropout]),
        ParamsLayout::of::<loss::Params>("ops::loss::Params", &[Loss]),
        ParamsLayout::of::<optim::Params>("ops::optim::Params", &[Optim]),
        ParamsLayout::of::<pack::Params>("ops::pack::Params", &[Pack]),
        ParamsLayout::of::<pool::Params>("ops::pool::Params", &[Pool]),
        ParamsLayout::of::<reduce::Params>("ops::reduce::Params", &[Reduce]),
        ParamsLayout::of::<winograd::Params>("ops::winograd::Params", &[Winograd]),
    ]
}
