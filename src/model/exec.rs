//! The executor: runs a [`ModelSpec`]'s layers over the ops, forward and backward.
//!
//! Backward runs from the loss down to the first trainable layer only. Layers before it (the
//! frozen prefix) keep nothing for backward — their activations are dropped as soon as the next
//! layer has read them, and the buffer pool hands the memory to the next allocation — and they
//! never get gradients or optimizer state. A training step records all its work into one
//! submission; only the loss and accuracy scalars are read back, by the caller, when it wants them.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::spec::{Activation, LayerKind, ModelSpec};
use super::ModelError;
use crate::data::mix;
use crate::gpu::Gpu;
use crate::ops::conv::{self, Conv2dSpec};
use crate::ops::loss::{self, Clip, LossKind};
use crate::ops::optim::{self, Optimizer, OptimizerState, Penalty};
use crate::ops::pool::{self, PoolSpec};
use crate::ops::Padding;
use crate::ops::{activation, dense, dropout, reduce};
use crate::tensor::{f32_bytes, Tensor};

/// A model on the device: its spec, parameters and which layers train.
pub struct Model {
    pub spec: ModelSpec,
    shapes: Vec<Vec<usize>>,
    /// Per layer: kernel and bias, or nothing for layers without weights.
    params: Vec<Vec<Tensor>>,
    trainable: Vec<bool>,
    /// Per layer: optimizer state of each parameter, only for trainable layers.
    states: Vec<Option<Vec<OptimizerState>>>,
}

/// Which forward pass [`Model::forward`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    /// Dropout off, nothing kept for backward: evaluation and prediction.
    Inference,
    /// Dropout on, with masks drawn from `dropout_seed` (each layer mixes in its index), and
    /// activations kept from the first trainable layer on.
    Training { dropout_seed: u64 },
}

/// What a layer saved in a training forward pass for its backward.
struct Saved {
    input: Tensor,
    output: Tensor,
    taps: Option<Tensor>,
    seed: u64,
}

/// A forward pass: the logits (pre-activation output of the last layer) and what backward needs.
pub struct Forward {
    pub logits: Tensor,
    saved: Vec<Option<Saved>>,
}

/// The device scalars a training step leaves behind: sum of per-sample losses and of correct
/// predictions over the batch. Read them back only when they are needed (for example every few
/// steps for a progress bar).
pub struct StepOutput {
    pub loss_sum: Tensor,
    pub correct: Tensor,
    pub batch: usize,
}

impl StepOutput {
    /// (mean loss, accuracy): reads the two scalars back.
    pub fn read(&self, gpu: &Gpu) -> Result<(f32, f32), ModelError> {
        let (l, c) = self.read_sums(gpu)?;
        let n = self.batch.max(1) as f32;
        Ok((l / n, c / n))
    }

    /// (loss sum, correct count) with one readback.
    pub fn read_sums(&self, gpu: &Gpu) -> Result<(f32, f32), ModelError> {
        let v = gpu.read_scalars(&[self.loss_sum.buffer(), self.correct.buffer()])?;
        Ok((v[0], v[1]))
    }
}

fn glorot(rng: &mut ChaCha8Rng, shape: &[usize]) -> Vec<f32> {
    // Keras' fans: receptive field times channels in / out.
    let receptive: usize = shape[..shape.len() - 2].iter().product();
    let fan_in = receptive * shape[shape.len() - 2];
    let fan_out = receptive * shape[shape.len() - 1];
    let limit = (6.0 / (fan_in + fan_out) as f64).sqrt() as f32;
    (0..shape.iter().product::<usize>())
        .map(|_| rng.random_range(-limit..=limit))
        .collect()
}

/// Refuses a model whose input, any layer's output for one sample, or any parameter tensor
/// passes the adapter's largest buffer, before any of it is allocated (on the host too, where
/// the initial weights are drawn).
fn fits(gpu: &Gpu, spec: &ModelSpec, shapes: &[Vec<usize>]) -> Result<(), ModelError> {
    let limit = gpu.limits().max_buffer_size;
    let too_large = |layer: &str, what: String, bytes: u64| ModelError::TooLarge {
        layer: layer.to_string(),
        what,
        bytes,
        limit,
    };
    if let Some(first) = spec.layers.first() {
        let b = f32_bytes(&spec.input);
        if b > limit {
            return Err(too_large(&first.name, "input for one sample".into(), b));
        }
    }
    for (i, layer) in spec.layers.iter().enumerate() {
        let b = f32_bytes(&shapes[i]);
        if b > limit {
            return Err(too_large(&layer.name, "output for one sample".into(), b));
        }
        for (name, shape) in spec.param_shapes(i)? {
            let b = f32_bytes(&shape);
            if b > limit {
                return Err(too_large(&layer.name, format!("parameter {name}"), b));
            }
        }
    }
    Ok(())
}

fn conv_spec(stride: usize, padding: Padding, activation: Activation, fused: bool) -> Conv2dSpec {
    Conv2dSpec::new(stride, padding, fused && activation == Activation::Relu)
}

impl Model {
    /// Allocates the model with Keras' initialisation: Glorot-uniform kernels, zero biases,
    /// seeded per layer so adding a layer does not change the others. Every layer trains.
    pub fn new(gpu: &Gpu, spec: ModelSpec, seed: u64) -> Result<Self, ModelError> {
        let shapes = spec.checked_shapes()?;
        fits(gpu, &spec, &shapes)?;
        let mut params = Vec::with_capacity(spec.layers.len());
        for i in 0..spec.layers.len() {
            let mut rng = ChaCha8Rng::seed_from_u64(mix(seed, i as u64));
            let mut p = Vec::new();
            for (name, shape) in spec.param_shapes(i)? {
                let t = if name.ends_with(".kernel") {
                    Tensor::from_slice(gpu, shape.as_slice(), &glorot(&mut rng, &shape))?
                } else {
                    Tensor::zeros(gpu, shape.as_slice())?
                };
                p.push(t);
            }
            params.push(p);
        }
        let n = spec.layers.len();
        Ok(Self {
            spec,
            shapes,
            params,
            trainable: vec![true; n],
            states: (0..n).map(|_| None).collect(),
        })
    }

    /// Freezes every layer before `name` and unfreezes it and everything after it.
    pub fn trainable_from(&mut self, name: &str) -> Result<(), ModelError> {
        let i = self.spec.require_layer(name)?;
        self.set_trainable_from(i);
        Ok(())
    }

    /// Trains layers `i..`; frozen layers drop their optimizer state.
    pub fn set_trainable_from(&mut self, i: usize) {
        for (k, t) in self.trainable.iter_mut().enumerate() {
            *t = k >= i;
        }
        for (k, s) in self.states.iter_mut().enumerate() {
            if k < i {
                *s = None;
            }
        }
    }

    /// Freezes everything up to and including the last layer named `base_last` ("all but the head").
    pub fn freeze_through(&mut self, base_last: &str) -> Result<(), ModelError> {
        let i = self.spec.require_layer(base_last)?;
        self.set_trainable_from(i + 1);
        Ok(())
    }

    pub fn trainable_mask(&self) -> &[bool] {
        &self.trainable
    }

    /// Number of trainable weight tensors (Keras' `len(model.trainable_weights)`).
    pub fn trainable_weight_count(&self) -> usize {
        self.params
            .iter()
            .zip(&self.trainable)
            .filter(|(_, t)| **t)
            .map(|(p, _)| p.len())
            .sum()
    }

    /// Layers holding optimizer state (only ever trainable ones, after a step).
    pub fn layers_with_optimizer_state(&self) -> Vec<usize> {
        (0..self.states.len())
            .filter(|&i| self.states[i].is_some())
            .collect()
    }

    /// The first layer with trainable weights: where backward stops.
    pub fn first_trainable(&self) -> Option<usize> {
        (0..self.params.len()).find(|&i| self.trainable[i] && !self.params[i].is_empty())
    }

    /// Every parameter as (`{layer}.kernel|bias`, tensor, trainable).
    pub fn params(&self) -> Vec<(String, &Tensor, bool)> {
        let mut out = Vec::new();
        for (i, p) in self.params.iter().enumerate() {
            let names = self.spec.param_shapes(i).unwrap_or_default();
            for ((name, _), t) in names.into_iter().zip(p) {
                out.push((name, t, self.trainable[i]));
            }
        }
        out
    }

    /// Optimizer slot tensors as (`optimizer.{param}.slot{k}`, tensor), and the step count.
    pub fn optimizer_tensors(&self) -> (Vec<(String, &Tensor)>, u64) {
        let mut out = Vec::new();
        let mut step = 0;
        for (i, st) in self.states.iter().enumerate() {
            let Some(st) = st else { continue };
            let names = self.spec.param_shapes(i).unwrap_or_default();
            for ((name, _), s) in names.iter().zip(st) {
                step = step.max(s.step);
                for (k, t) in s.slots.iter().enumerate() {
                    out.push((format!("optimizer.{name}.slot{k}"), t));
                }
            }
        }
        (out, step)
    }

    /// Copies of every parameter, for putting back later with [`Model::restore`].
    pub fn snapshot(&self, gpu: &Gpu) -> Result<Vec<Vec<Tensor>>, ModelError> {
        self.params
            .iter()
            .map(|p| {
                p.iter()
                    .map(|t| t.duplicate(gpu).map_err(ModelError::from))
                    .collect()
            })
            .collect()
    }

    /// Restores optimizer state saved by [`Model::optimizer_tensors`]: `slot(name)` returns the
    /// values of a slot tensor if the checkpoint has it. Layers whose slots are all present get
    /// state at step `step`; the others start fresh at their first update.
    pub fn load_optimizer_state(
        &mut self,
        gpu: &Gpu,
        opt: &Optimizer,
        step: u64,
        slot: impl Fn(&str) -> Option<Vec<f32>>,
    ) -> Result<(), ModelError> {
        'layers: for i in 0..self.params.len() {
            if !self.trainable[i] || self.params[i].is_empty() {
                continue;
            }
            let names = self.spec.param_shapes(i)?;
            let mut states = Vec::new();
            for ((name, _), p) in names.iter().zip(&self.params[i]) {
                let mut st = OptimizerState::new(gpu, opt, p)?;
                for (k, t) in st.slots.iter().enumerate() {
                    match slot(&format!("optimizer.{name}.slot{k}")) {
                        Some(v) if v.len() == t.numel() => t.write(gpu, &v),
                        _ => continue 'layers,
                    }
                }
                st.step = step;
                states.push(st);
            }
            self.states[i] = Some(states);
        }
        Ok(())
    }

    /// Puts back a [`Model::snapshot`].
    pub fn restore(&mut self, snapshot: Vec<Vec<Tensor>>) {
        self.params = snapshot;
    }

    /// The layers from `first` on as a model of their own, taking layer `first - 1`'s output. The
    /// parameters are shared, not copied: training the suffix trains these layers of `self`.
    pub fn suffix(&self, first: usize) -> Result<Model, ModelError> {
        if first == 0 || first >= self.spec.layers.len() {
            return Err(ModelError::Invalid(format!(
                "cannot split model {} at layer {first}",
                self.spec.name
            )));
        }
        let spec = ModelSpec {
            name: format!("{}[{}..]", self.spec.name, self.spec.layers[first].name),
            input: self.shapes[first - 1].clone(),
            layers: self.spec.layers[first..].to_vec(),
        };
        Ok(Model {
            shapes: self.shapes[first..].to_vec(),
            params: self.params[first..].to_vec(),
            trainable: self.trainable[first..].to_vec(),
            states: (first..self.spec.layers.len()).map(|_| None).collect(),
            spec,
        })
    }

    /// Replaces parameter `name`'s values (shape-checked).
    pub fn set_param(&mut self, gpu: &Gpu, name: &str, data: &[f32]) -> Result<(), ModelError> {
        for (i, p) in self.params.iter().enumerate() {
            let names = self.spec.param_shapes(i)?;
            if let Some(k) = names.iter().position(|(n, _)| n == name) {
                if data.len() != p[k].numel() {
                    return Err(ModelError::Invalid(format!(
                        "{name}: {} values given, shape {} holds {}",
                        data.len(),
                        p[k].shape(),
                        p[k].numel()
                    )));
                }
                p[k].write(gpu, data);
                return Ok(());
            }
        }
        Err(ModelError::Invalid(format!(
            "model {} has no parameter {name}",
            self.spec.name
        )))
    }

    /// `x` viewed as (N, input...) when it holds as many values per sample: a loader's (N,1,L,1)
    /// sequence batch becomes the (N,L,1) a 1-D model takes. Other shapes pass unchanged (and the
    /// forward pass then reports the mismatch).
    pub fn as_input(&self, x: Tensor) -> Tensor {
        let per: usize = self.spec.input.iter().product();
        let n = x.dims().first().copied().unwrap_or(0);
        if n * per == x.numel() && x.dims()[1..] != self.spec.input[..] {
            let mut shape = vec![n];
            shape.extend_from_slice(&self.spec.input);
            x.reshape(shape)
        } else {
            x
        }
    }

    /// Runs the layers on `x` (N, input...). In a [`Pass::Training`] pass dropout is active (its
    /// masks drawn from the pass's seed) and layers from the first trainable one on keep what
    /// backward needs; in [`Pass::Inference`] nothing is kept.
    pub fn forward(&self, gpu: &Gpu, x: &Tensor, pass: Pass) -> Result<Forward, ModelError> {
        let training = match pass {
            Pass::Training { dropout_seed } => Some(dropout_seed),
            Pass::Inference => None,
        };
        let dims = x.dims();
        if dims.len() != self.spec.input.len() + 1 || dims[1..] != self.spec.input[..] {
            return Err(ModelError::Input {
                model: self.spec.name.clone(),
                expected: self
                    .spec
                    .input
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
                found: dims.to_vec(),
            });
        }
        self.check_batch(gpu, dims[0])?;
        let keep_from = if training.is_some() {
            self.first_trainable()
        } else {
            None
        };
        let last = self.spec.layers.len() - 1;
        let mut cur = x.clone();
        let mut saved = Vec::with_capacity(self.spec.layers.len());
        for (i, layer) in self.spec.layers.iter().enumerate() {
            gpu.set_scope(&layer.name);
            let input = cur.clone();
            // The output layer's sigmoid/softmax is left to the loss (logits), or applied by predict.
            let fused = i != last;
            let mut taps = None;
            let seed = training.map_or(0, |s| mix(s, i as u64));
            let p = &self.params[i];
            cur = match &layer.kind {
                LayerKind::Conv2d {
                    stride,
                    padding,
                    activation,
                    ..
                } => conv::conv2d_forward(
                    gpu,
                    &input,
                    &p[0],
                    &p[1],
                    &conv_spec(*stride, *padding, *activation, fused),
                )?,
                LayerKind::Conv1d {
                    padding,
                    activation,
                    ..
                } => conv::conv1d_forward(
                    gpu,
                    &input,
                    &p[0],
                    &p[1],
                    1,
                    *padding,
                    fused && *activation == Activation::Relu,
                )?,
                LayerKind::Dense { activation, .. } => dense::dense_forward(
                    gpu,
                    &input,
                    &p[0],
                    Some(&p[1]),
                    fused && *activation == Activation::Relu,
                )?,
                LayerKind::MaxPool2d { pool } => {
                    let (y, t) = pool::max_pool2d(gpu, &input, PoolSpec::square(*pool))?;
                    taps = Some(t);
                    y
                }
                LayerKind::MaxPool1d { pool } => {
                    let (y, t) = pool::max_pool1d(gpu, &input, *pool, *pool, Padding::Valid)?;
                    taps = Some(t);
                    y
                }
                LayerKind::GlobalMaxPool1d => {
                    let d = input.dims();
                    let (y, t) = pool::global_max_pool(gpu, &input.reshape([d[0], 1, d[1], d[2]]))?;
                    taps = Some(t);
                    y
                }
                LayerKind::Flatten => {
                    let n = input.dims()[0];
                    input.reshape([n, input.numel() / n.max(1)])
                }
                LayerKind::Dropout { rate } => match training {
                    Some(_) if *rate > 0.0 => dropout::dropout(gpu, &input, *rate, seed)?,
                    _ => input.clone(),
                },
            };
            // ReLU runs fused in its layer's kernel; a sigmoid or softmax on a layer that is not
            // the output runs here (the output layer's is left to the loss).
            if fused {
                cur = match layer.kind.activation() {
                    Activation::Sigmoid => activation::sigmoid(gpu, &cur)?,
                    Activation::Softmax => activation::softmax(gpu, &cur)?,
                    Activation::Relu | Activation::Linear => cur,
                };
            }
            let keep = keep_from.is_some_and(|f| i >= f);
            saved.push(keep.then(|| Saved {
                input,
                output: cur.clone(),
                taps,
                seed,
            }));
        }
        Ok(Forward { logits: cur, saved })
    }

    /// The output of layer `name` (after its activation) for `x`, in inference mode: what
    /// `cnn-wgpu features` writes. Runs only the layers up to `name`.
    pub fn features(&self, gpu: &Gpu, x: &Tensor, name: &str) -> Result<Tensor, ModelError> {
        let end = self.spec.require_layer(name)?;
        let mut prefix = self.spec.clone();
        prefix.layers.truncate(end + 1);
        // Layers before the end keep their fused activations; the last one gets its own applied.
        let view = Model {
            spec: prefix,
            shapes: self.shapes[..=end].to_vec(),
            params: self.params[..=end].to_vec(),
            trainable: self.trainable[..=end].to_vec(),
            states: (0..=end).map(|_| None).collect(),
        };
        let out = view.forward(gpu, x, Pass::Inference)?.logits;
        Ok(match self.spec.layers[end].kind.activation() {
            Activation::Relu => activation::relu(gpu, &out)?,
            Activation::Sigmoid => activation::sigmoid(gpu, &out)?,
            Activation::Softmax => activation::softmax(gpu, &out)?,
            Activation::Linear => out,
        })
    }

    /// Probabilities: the forward pass in inference mode with the output activation applied.
    pub fn predict(&self, gpu: &Gpu, x: &Tensor) -> Result<Tensor, ModelError> {
        let f = self.forward(gpu, x, Pass::Inference)?;
        Ok(match self.spec.layers.last().map(|l| l.kind.activation()) {
            Some(Activation::Sigmoid) => activation::sigmoid(gpu, &f.logits)?,
            Some(Activation::Softmax) => activation::softmax(gpu, &f.logits)?,
            _ => f.logits,
        })
    }

    /// Gradients of the trainable layers' parameters from dL/dlogits, walking back to the first
    /// trainable layer and no further. Index i holds layer i's [kernel, bias] gradients.
    pub fn backward(
        &self,
        gpu: &Gpu,
        fwd: Forward,
        dlogits: Tensor,
    ) -> Result<Vec<Option<Vec<Tensor>>>, ModelError> {
        let n = self.spec.layers.len();
        let mut grads: Vec<Option<Vec<Tensor>>> = (0..n).map(|_| None).collect();
        let Some(first) = self.first_trainable() else {
            return Ok(grads);
        };
        let last = n - 1;
        let mut g = dlogits;
        for i in (first..n).rev() {
            let s = fwd.saved[i].as_ref().ok_or_else(|| {
                ModelError::Invalid(format!(
                    "layer {} kept nothing for backward: the forward pass was not a training pass",
                    self.spec.layers[i].name
                ))
            })?;
            let need_dx = i > first;
            let kind = &self.spec.layers[i].kind;
            gpu.set_scope(&format!("{} (backward)", self.spec.layers[i].name));
            // Through the activation, from its output y: ReLU 1[y > 0], sigmoid y (1 - y),
            // softmax y_j (delta_jk - y_k) over the last axis.
            if i != last {
                g = match kind.activation() {
                    Activation::Relu => activation::relu_backward(gpu, &g, &s.output)?,
                    Activation::Sigmoid => activation::sigmoid_backward(gpu, &g, &s.output)?,
                    Activation::Softmax => activation::softmax_backward(gpu, &g, &s.output)?,
                    Activation::Linear => g,
                };
            }
            let p = &self.params[i];
            g = match kind {
                LayerKind::Conv2d {
                    stride, padding, ..
                } => {
                    let r = conv::conv2d_backward(
                        gpu,
                        &s.input,
                        &p[0],
                        &g,
                        &Conv2dSpec::new(*stride, *padding, false),
                        need_dx,
                    )?;
                    grads[i] = Some(vec![r.dw, r.db]);
                    match r.dx {
                        Some(dx) => dx,
                        None => break,
                    }
                }
                LayerKind::Conv1d { padding, .. } => {
                    let r = conv::conv1d_backward(gpu, &s.input, &p[0], &g, 1, *padding, need_dx)?;
                    grads[i] = Some(vec![r.dw, r.db]);
                    match r.dx {
                        Some(dx) => dx,
                        None => break,
                    }
                }
                LayerKind::Dense { .. } => {
                    let r = dense::dense_backward(gpu, &s.input, &p[0], &g, need_dx)?;
                    grads[i] = Some(vec![r.dw, r.db]);
                    match r.dx {
                        Some(dx) => dx,
                        None => break,
                    }
                }
                LayerKind::MaxPool2d { pool } => pool::max_pool2d_backward(
                    gpu,
                    &g,
                    s.taps.as_ref().expect("pool taps"),
                    s.input.dims(),
                    PoolSpec::square(*pool),
                )?,
                LayerKind::MaxPool1d { pool } => pool::max_pool1d_backward(
                    gpu,
                    &g,
                    s.taps.as_ref().expect("pool taps"),
                    s.input.dims(),
                    *pool,
                    *pool,
                    Padding::Valid,
                )?,
                LayerKind::GlobalMaxPool1d => {
                    let d = s.input.dims();
                    pool::global_max_pool_backward(
                        gpu,
                        &g,
                        s.taps.as_ref().expect("pool taps"),
                        &[d[0], 1, d[1], d[2]],
                    )?
                    .reshape(s.input.shape().clone())
                }
                LayerKind::Flatten => g.reshape(s.input.shape().clone()),
                LayerKind::Dropout { rate } => {
                    if *rate > 0.0 {
                        dropout::dropout_backward(gpu, &g, *rate, s.seed)?
                    } else {
                        g
                    }
                }
            };
        }
        Ok(grads)
    }

    /// One training step on a batch: forward, loss, backward to the first trainable layer, and an
    /// in-place optimizer update of the trainable parameters. Records everything; reads nothing.
    pub fn train_step(
        &mut self,
        gpu: &Gpu,
        opt: &Optimizer,
        x: &Tensor,
        y: &Tensor,
        seed: u64,
    ) -> Result<StepOutput, ModelError> {
        let kind = self.spec.loss()?;
        let fwd = self.forward(gpu, x, Pass::Training { dropout_seed: seed })?;
        let logits = fwd.logits.clone();
        gpu.set_scope("loss and accuracy");
        let out = loss::loss_and_grad(gpu, kind, &logits, y, Clip::None)?;
        let loss_sum = reduce::sum_all(gpu, &out.per_sample)?;
        let correct = loss::correct_count(gpu, kind, &logits, y)?;
        let grads = self.backward(gpu, fwd, out.grad)?;
        gpu.set_scope("optimizer");
        for (i, g) in grads.into_iter().enumerate() {
            let Some(g) = g else { continue };
            if !self.trainable[i] {
                continue;
            }
            if self.states[i].is_none() {
                let st = self.params[i]
                    .iter()
                    .map(|p| OptimizerState::new(gpu, opt, p))
                    .collect::<Result<Vec<_>, _>>()?;
                self.states[i] = Some(st);
            }
            let states = self.states[i].as_mut().expect("state just created");
            for ((p, g), st) in self.params[i].iter().zip(&g).zip(states.iter_mut()) {
                optim::step(gpu, opt, p, g, st, Penalty::default())?;
            }
        }
        Ok(StepOutput {
            loss_sum,
            correct,
            batch: x.dims()[0],
        })
    }

    /// Loss and correct-prediction sums on a batch without training (dropout off).
    pub fn evaluate_batch(
        &self,
        gpu: &Gpu,
        x: &Tensor,
        y: &Tensor,
    ) -> Result<StepOutput, ModelError> {
        let kind: LossKind = self.spec.loss()?;
        let f = self.forward(gpu, x, Pass::Inference)?;
        let out = loss::loss_and_grad(gpu, kind, &f.logits, y, Clip::None)?;
        Ok(StepOutput {
            loss_sum: reduce::sum_all(gpu, &out.per_sample)?,
            correct: loss::correct_count(gpu, kind, &f.logits, y)?,
            batch: x.dims()[0],
        })
    }

    /// Output shape of every layer (without the batch).
    pub fn shapes(&self) -> &[Vec<usize>] {
        &self.shapes
    }

    /// Refuses a batch of `n` samples where a layer's output for the whole batch would pass the
    /// adapter's largest buffer (one sample's was checked when the model was made), naming
    /// the layer and the largest batch that fits: an early, clear error in place of an
    /// allocation failing mid-step.
    pub fn check_batch(&self, gpu: &Gpu, n: usize) -> Result<(), ModelError> {
        let limit = gpu.limits().max_buffer_size;
        for (layer, shape) in self.spec.layers.iter().zip(&self.shapes) {
            let need = f32_bytes(shape).saturating_mul(n as u64);
            if need > limit {
                return Err(ModelError::BatchTooLarge {
                    batch: n,
                    layer: layer.name.clone(),
                    bytes: need,
                    limit,
                    fits: self.largest_batch(gpu),
                });
            }
        }
        Ok(())
    }

    /// The largest batch whose every layer output fits one buffer of this adapter.
    pub fn largest_batch(&self, gpu: &Gpu) -> usize {
        let limit = gpu.limits().max_buffer_size;
        self.shapes
            .iter()
            .map(|s| (limit / f32_bytes(s)) as usize)
            .min()
            .unwrap_or(usize::MAX)
    }
}
