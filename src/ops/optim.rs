//! Optimizers as in-place GPU updates (shaders/optim.wgsl), with Keras' formulas and defaults,
//! and L1/L2 weight penalties.

use super::{flat_chunks, grid_1d, reduce, shape_err, OpError, Result};
use crate::gpu::{Arg, Gpu, Kernel, ShaderId};
use crate::tensor::Tensor;

/// An optimizer and its hyper-parameters. Constructors give Keras' defaults.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "name", rename_all = "lowercase")]
pub enum Optimizer {
    Sgd {
        lr: f32,
        momentum: f32,
        nesterov: bool,
    },
    Rmsprop {
        lr: f32,
        rho: f32,
        epsilon: f32,
    },
    Adam {
        lr: f32,
        beta1: f32,
        beta2: f32,
        epsilon: f32,
    },
}

impl Optimizer {
    /// Keras `SGD()`: lr 0.01, no momentum.
    pub fn sgd(lr: f32) -> Self {
        Optimizer::Sgd {
            lr,
            momentum: 0.0,
            nesterov: false,
        }
    }
    /// Keras `RMSprop()`: rho 0.9, epsilon 1e-7.
    pub fn rmsprop(lr: f32) -> Self {
        Optimizer::Rmsprop {
            lr,
            rho: 0.9,
            epsilon: 1e-7,
        }
    }
    /// Keras `Adam()`: beta1 0.9, beta2 0.999, epsilon 1e-7.
    pub fn adam(lr: f32) -> Self {
        Optimizer::Adam {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-7,
        }
    }

    pub fn lr(&self) -> f32 {
        match *self {
            Optimizer::Sgd { lr, .. }
            | Optimizer::Rmsprop { lr, .. }
            | Optimizer::Adam { lr, .. } => lr,
        }
    }

    pub fn set_lr(&mut self, new: f32) {
        match self {
            Optimizer::Sgd { lr, .. }
            | Optimizer::Rmsprop { lr, .. }
            | Optimizer::Adam { lr, .. } => *lr = new,
        }
    }

    fn slots(&self) -> usize {
        match self {
            Optimizer::Sgd { .. } | Optimizer::Rmsprop { .. } => 1,
            Optimizer::Adam { .. } => 2,
        }
    }
}

/// Keras-style weight penalties: the loss gains l1 * sum|w| + l2 * sum w^2.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Penalty {
    pub l1: f32,
    pub l2: f32,
}

impl Penalty {
    pub fn is_zero(&self) -> bool {
        self.l1 == 0.0 && self.l2 == 0.0
    }
}

/// Per-parameter optimizer state: the slot tensors (momentum / velocity / moments, zeroed at
/// creation) and the step count. Only trainable parameters ever get one.
pub struct OptimizerState {
    pub slots: Vec<Tensor>,
    pub step: u64,
}

impl OptimizerState {
    pub fn new(gpu: &Gpu, opt: &Optimizer, param: &Tensor) -> Result<Self> {
        let slots = (0..opt.slots())
            .map(|_| Tensor::zeros(gpu, param.shape().clone()))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(Self { slots, step: 0 })
    }
}

crate::shader_params! {
    pub(crate) struct Params {
        len: u32,
        nesterov: u32,
        _p0: u32,
        _p1: u32,
        lr: f32,
        beta1: f32,
        beta2: f32,
        eps: f32,
        l1: f32,
        l2: f32,
        _p2: f32,
        _p3: f32,
    }
}

/// One update of `param` in place from `grad`, advancing `state`.
pub fn step(
    gpu: &Gpu,
    opt: &Optimizer,
    param: &Tensor,
    grad: &Tensor,
    state: &mut OptimizerState,
    penalty: Penalty,
) -> Result<()> {
    const OP: &str = "optimizer_step";
    if grad.shape() != param.shape() {
        return Err(shape_err(
            OP,
            "gradient",
            format!("{} like the parameter", param.shape()),
            grad.shape(),
        ));
    }
    if state.slots.len() != opt.slots() || state.slots.iter().any(|s| s.shape() != param.shape()) {
        return Err(OpError::Invalid {
            op: OP,
            reason: format!(
                "optimizer state does not match {opt:?} for a parameter of shape {}",
                param.shape()
            ),
        });
    }
    state.step += 1;
    let (entry, lr, beta1, beta2, eps, nesterov) = match *opt {
        Optimizer::Sgd {
            lr,
            momentum,
            nesterov,
        } => ("sgd", lr, momentum, 0.0, 0.0, nesterov),
        Optimizer::Rmsprop { lr, rho, epsilon } => ("rmsprop", lr, rho, 0.0, epsilon, false),
        Optimizer::Adam {
            lr,
            beta1,
            beta2,
            epsilon,
        } => {
            // Bias correction folded into the step size, in f64 so late steps stay exact.
            let t = state.step as f64;
            let alpha = f64::from(lr) * (1.0 - f64::from(beta2).powf(t)).sqrt()
                / (1.0 - f64::from(beta1).powf(t));
            ("adam", alpha as f32, beta1, beta2, epsilon, false)
        }
    };
    let kernel = Kernel::new(ShaderId::Optim, entry, &[]);
    for (start, len) in flat_chunks(gpu, param.numel()) {
        let p = Params {
            len: len as u32,
            nesterov: u32::from(nesterov),
            _p0: 0,
            _p1: 0,
            lr,
            beta1,
            beta2,
            eps,
            l1: penalty.l1,
            l2: penalty.l2,
            _p2: 0.0,
            _p3: 0.0,
        };
        let (g, _) = grad.window(gpu, start, len);
        let (w, _) = param.window(gpu, start, len);
        let mut args = vec![
            Arg::Uniform(bytemuck::bytes_of(&p)),
            Arg::Read(g),
            Arg::Write(w),
        ];
        for s in &state.slots {
            args.push(Arg::Write(s.window(gpu, start, len).0));
        }
        gpu.dispatch(&kernel, &args, grid_1d(gpu, &kernel, len));
    }
    Ok(())
}

/// The penalty's contribution to the loss, l1 * sum|w| + l2 * sum w^2, as a one-element tensor.
pub fn penalty_value(gpu: &Gpu, param: &Tensor, penalty: Penalty) -> Result<Tensor> {
    let terms = Tensor::uninit(gpu, param.shape().clone())?;
    let kernel = Kernel::new(ShaderId::Optim, "penalty", &[]);
    for (start, len) in flat_chunks(gpu, param.numel()) {
        let p = Params {
            len: len as u32,
            nesterov: 0,
            _p0: 0,
            _p1: 0,
            lr: 0.0,
            beta1: 0.0,
            beta2: 0.0,
            eps: 0.0,
            l1: penalty.l1,
            l2: penalty.l2,
            _p2: 0.0,
            _p3: 0.0,
        };
        let (w, _) = param.window(gpu, start, len);
        let (t, _) = terms.window(gpu, start, len);
        gpu.dispatch(
            &kernel,
            &[
                Arg::Uniform(bytemuck::bytes_of(&p)),
                Arg::Unused,
                Arg::Write(w),
                Arg::Write(t),
            ],
            grid_1d(gpu, &kernel, len),
        );
    }
    reduce::sum_all(gpu, &terms)
}
