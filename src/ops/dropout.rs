//! Inverted dropout (shaders/dropout.wgsl) with a counter-based RNG: the mask is a pure function
//! of (seed, element index), so backward recomputes it rather than storing it, and the same seed
//! gives the same mask on every adapter and for every chunking.

use super::{flat_chunks, grid_1d, OpError, Result};
use crate::gpu::{Arg, Gpu, Kernel, ShaderId};
use crate::tensor::Tensor;

crate::shader_params! {
    pub(crate) struct Params {
        len: u32,
        offset: u32,
        seed_lo: u32,
        seed_hi: u32,
        rate: f32,
        scale: f32,
        _p0: u32,
        _p1: u32,
    }
}

fn apply(gpu: &Gpu, op: &'static str, x: &Tensor, rate: f32, seed: u64) -> Result<Tensor> {
    if !(0.0..1.0).contains(&rate) {
        return Err(OpError::Invalid {
            op,
            reason: format!("rate {rate} must be in [0, 1)"),
        });
    }
    let out = Tensor::uninit(gpu, x.shape().clone())?;
    let kernel = Kernel::new(ShaderId::Dropout, "apply", &[]);
    for (start, len) in flat_chunks(gpu, x.numel()) {
        let p = Params {
            len: len as u32,
            offset: start as u32,
            seed_lo: seed as u32,
            seed_hi: (seed >> 32) as u32,
            rate,
            scale: 1.0 / (1.0 - rate),
            _p0: 0,
            _p1: 0,
        };
        let (xr, _) = x.window(gpu, start, len);
        let (or, _) = out.window(gpu, start, len);
        gpu.dispatch(
            &kernel,
            &[
                Arg::Uniform(bytemuck::bytes_of(&p)),
                Arg::Read(xr),
                Arg::Write(or),
            ],
            grid_1d(gpu, &kernel, len),
        );
    }
    Ok(out)
}

/// Training-time dropout: each element kept with probability 1 - rate and scaled by
/// 1 / (1 - rate). At inference a model skips the op (identity), as Keras does. Use a fresh
/// `seed` per step (for example hash(run seed, layer, step)).
pub fn dropout(gpu: &Gpu, x: &Tensor, rate: f32, seed: u64) -> Result<Tensor> {
    apply(gpu, "dropout", x, rate, seed)
}

/// dx = dy * mask / (1 - rate) with the forward's mask (same `rate` and `seed`).
pub fn dropout_backward(gpu: &Gpu, dy: &Tensor, rate: f32, seed: u64) -> Result<Tensor> {
    apply(gpu, "dropout_backward", dy, rate, seed)
}
