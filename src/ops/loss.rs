//! Losses from logits, their gradients, and accuracy (shaders/loss.wgsl).
//!
//! The network's final sigmoid / softmax is folded into the loss: the model hands over logits,
//! and the loss computes `sigmoid_cross_entropy_with_logits` / `softmax_cross_entropy` in the
//! stable form, as Keras' TensorFlow backend does when it finds the logits behind a sigmoid or
//! softmax output. [`Clip::Keras`] reproduces Keras' probability path instead (clip p to
//! [1e-7, 1 - 1e-7] before the log: per-sample loss capped at 16.118, zero gradient where
//! clipped), which is what Keras computes on backends that do not track logits.

use super::{check_binding, reduce, shape_err, Result};
use crate::gpu::{Arg, Gpu, Kernel, ShaderId};
use crate::tensor::Tensor;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum LossKind {
    /// One logit per sample, labels 0/1 (or soft labels in [0,1]).
    BinaryCrossentropy,
    /// One logit per class, labels one-hot (or any distribution).
    CategoricalCrossentropy,
}

/// Where probabilities are clipped, if anywhere.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Clip {
    /// Exact loss from logits, no clipping.
    #[default]
    None,
    /// Keras' epsilon clipping of probabilities (epsilon 1e-7).
    Keras,
}

crate::shader_params! {
    pub(crate) struct Params {
        rows: u32,
        cols: u32,
        grad_scale: f32,
        _p0: u32,
    }
}

/// Per-sample losses (N) and dL/dlogits (same shape as logits) for the mean loss over the batch.
pub struct LossOutput {
    pub per_sample: Tensor,
    pub grad: Tensor,
}

fn rows_cols(
    gpu: &Gpu,
    op: &'static str,
    kind: LossKind,
    logits: &Tensor,
    labels: &Tensor,
) -> Result<(usize, usize)> {
    if logits.shape() != labels.shape() {
        return Err(shape_err(
            op,
            "labels",
            format!("{} like the logits", logits.shape()),
            labels.shape(),
        ));
    }
    let n = *logits
        .dims()
        .first()
        .ok_or_else(|| shape_err(op, "logits", "(N,...)", logits.shape()))?;
    let cols = logits.numel() / n.max(1);
    if kind == LossKind::BinaryCrossentropy && cols != 1 {
        return Err(shape_err(
            op,
            "logits",
            "(N,1) or (N,) for binary cross-entropy",
            logits.shape(),
        ));
    }
    check_binding(gpu, op, "logits", logits.byte_len())?;
    Ok((n, cols))
}

fn clip_const(clip: Clip) -> [(&'static str, f64); 1] {
    [("CLIP", f64::from(u32::from(clip == Clip::Keras)))]
}

/// Per-sample loss and the gradient of the batch-mean loss with respect to the logits.
pub fn loss_and_grad(
    gpu: &Gpu,
    kind: LossKind,
    logits: &Tensor,
    labels: &Tensor,
    clip: Clip,
) -> Result<LossOutput> {
    const OP: &str = "loss";
    let (n, cols) = rows_cols(gpu, OP, kind, logits, labels)?;
    let per_sample = Tensor::uninit(gpu, [n])?;
    let grad = Tensor::uninit(gpu, logits.shape().clone())?;
    let p = Params {
        rows: n as u32,
        cols: cols as u32,
        grad_scale: 1.0 / n.max(1) as f32,
        _p0: 0,
    };
    let entry = match kind {
        LossKind::BinaryCrossentropy => "bce_logits",
        LossKind::CategoricalCrossentropy => "cce_logits",
    };
    let consts = clip_const(clip);
    let kernel = Kernel::new(ShaderId::Loss, entry, &consts);
    gpu.dispatch(
        &kernel,
        &[
            Arg::Uniform(bytemuck::bytes_of(&p)),
            Arg::Read(logits.all()),
            Arg::Read(labels.all()),
            Arg::Write(per_sample.all()),
            Arg::Write(grad.all()),
        ],
        // One row per invocation.
        [n.div_ceil(kernel.workgroup_x()).max(1) as u32, 1, 1],
    );
    Ok(LossOutput { per_sample, grad })
}

/// Per-sample correctness (N): 1 where the prediction matches the label, as Keras'
/// `binary_accuracy` (threshold 0.5 on the probability) or `categorical_accuracy` (argmax).
pub fn correct(gpu: &Gpu, kind: LossKind, logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    const OP: &str = "accuracy";
    let (n, cols) = rows_cols(gpu, OP, kind, logits, labels)?;
    let out = Tensor::uninit(gpu, [n])?;
    let p = Params {
        rows: n as u32,
        cols: cols as u32,
        grad_scale: 0.0,
        _p0: 0,
    };
    let entry = match kind {
        LossKind::BinaryCrossentropy => "accuracy_binary",
        LossKind::CategoricalCrossentropy => "accuracy_categorical",
    };
    let kernel = Kernel::new(ShaderId::Loss, entry, &[]);
    gpu.dispatch(
        &kernel,
        &[
            Arg::Uniform(bytemuck::bytes_of(&p)),
            Arg::Read(logits.all()),
            Arg::Read(labels.all()),
            Arg::Write(out.all()),
        ],
        // One row per invocation.
        [n.div_ceil(kernel.workgroup_x()).max(1) as u32, 1, 1],
    );
    Ok(out)
}

/// Number of correct predictions in the batch, as a one-element tensor: the reduction runs on
/// the GPU and only this scalar is ever read back.
pub fn correct_count(
    gpu: &Gpu,
    kind: LossKind,
    logits: &Tensor,
    labels: &Tensor,
) -> Result<Tensor> {
    reduce::sum_all(gpu, &correct(gpu, kind, logits, labels)?)
}
