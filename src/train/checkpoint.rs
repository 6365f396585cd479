//! Checkpoints: a model's parameters (and optimizer slots) in safetensors, with the model spec
//! and training state in the metadata. Written to a temporary file and renamed, so a crash or a
//! full disk never leaves a broken checkpoint, and the previous good one survives a failed write.

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};

use super::TrainError;
use crate::gpu::Gpu;
use crate::model::{Model, ModelSpec};

/// Writes `model` to `path` atomically. `meta` is added to the metadata (epoch, optimizer...).
pub fn save(
    gpu: &Gpu,
    model: &Model,
    path: &Path,
    meta: &[(&str, String)],
) -> Result<(), TrainError> {
    let mut named: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    for (name, t, _) in model.params() {
        named.push((name, t.dims().to_vec(), t.to_vec(gpu)?));
    }
    let (slots, step) = model.optimizer_tensors();
    for (name, t) in slots {
        named.push((name, t.dims().to_vec(), t.to_vec(gpu)?));
    }
    let views: Vec<(String, TensorView<'_>)> = named
        .iter()
        .map(|(n, shape, data)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, shape.clone(), bytemuck::cast_slice(data))
                    .expect("f32 view"),
            )
        })
        .collect();
    let mut info: HashMap<String, String> = meta
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    info.insert("format".into(), "cnn-wgpu".into());
    info.insert(
        "model".into(),
        serde_json::to_string(&model.spec).expect("spec serialises"),
    );
    info.insert("optimizer_step".into(), step.to_string());
    let bytes = safetensors::serialize(views, Some(info)).map_err(|e| TrainError::Checkpoint {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    super::write_atomic(path, &bytes)
}

/// A checkpoint read into memory: f32 tensors by name, and the metadata.
pub struct Checkpoint {
    pub path: std::path::PathBuf,
    pub tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
    pub meta: HashMap<String, String>,
}

impl Checkpoint {
    /// Reads and checks a checkpoint file: readable safetensors, f32 tensors only.
    pub fn read(path: &Path) -> Result<Self, TrainError> {
        let bytes = std::fs::read(path).map_err(|source| TrainError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let bad = |reason: String| TrainError::Checkpoint {
            path: path.to_path_buf(),
            reason,
        };
        let st = crate::model::weights::open_safetensors(&bytes)
            .map_err(|e| bad(format!("not a readable safetensors file (truncated?): {e}")))?;
        let (_, header) =
            safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
        let meta = header.metadata().clone().unwrap_or_default();
        let mut tensors = HashMap::new();
        for (name, t) in st.tensors() {
            if t.dtype() != Dtype::F32 {
                return Err(bad(format!(
                    "tensor {name} is {:?}, expected F32",
                    t.dtype()
                )));
            }
            tensors.insert(
                name,
                (t.shape().to_vec(), bytemuck::pod_collect_to_vec(t.data())),
            );
        }
        Ok(Self {
            path: path.to_path_buf(),
            tensors,
            meta,
        })
    }

    /// The model spec stored in the metadata.
    pub fn spec(&self) -> Result<ModelSpec, TrainError> {
        let bad = |reason: String| TrainError::Checkpoint {
            path: self.path.clone(),
            reason,
        };
        let spec = self.meta.get("model").ok_or_else(|| {
            bad("no model spec in the metadata; not a cnn-wgpu checkpoint".into())
        })?;
        serde_json::from_str(spec).map_err(|e| bad(format!("model spec: {e}")))
    }

    /// Copies every parameter of `model` from the checkpoint: each must be there with the
    /// model's shape, else an error names the tensor with the expected and the found shape.
    pub fn load_params(&self, gpu: &Gpu, model: &mut Model) -> Result<(), TrainError> {
        self.load_params_where(gpu, model, |_| true)
    }

    /// [`Self::load_params`] for the parameters whose name passes `wanted` only (a head put
    /// back on a base whose weights come from elsewhere).
    pub fn load_params_where(
        &self,
        gpu: &Gpu,
        model: &mut Model,
        wanted: impl Fn(&str) -> bool,
    ) -> Result<(), TrainError> {
        let wanted: Vec<(String, Vec<usize>)> = model
            .params()
            .into_iter()
            .filter(|(n, _, _)| wanted(n))
            .map(|(n, t, _)| (n, t.dims().to_vec()))
            .collect();
        for (name, shape) in wanted {
            let (found, data) = self
                .tensors
                .get(&name)
                .ok_or_else(|| TrainError::Checkpoint {
                    path: self.path.clone(),
                    reason: format!("missing tensor {name} (expected shape {shape:?})"),
                })?;
            if *found != shape {
                return Err(TrainError::Checkpoint {
                    path: self.path.clone(),
                    reason: format!("tensor {name} has shape {found:?}, expected {shape:?}"),
                });
            }
            if let Some(i) = data.iter().position(|v| !v.is_finite()) {
                return Err(TrainError::Checkpoint {
                    path: self.path.clone(),
                    reason: format!(
                        "tensor {name} holds {} at element {i} (of {}): weights must be finite",
                        data[i],
                        data.len()
                    ),
                });
            }
            model.set_param(gpu, &name, data)?;
        }
        Ok(())
    }

    /// Restores the optimizer slots saved with the parameters.
    pub fn load_optimizer(
        &self,
        gpu: &Gpu,
        model: &mut Model,
        opt: &crate::ops::optim::Optimizer,
    ) -> Result<(), TrainError> {
        let step = self
            .meta
            .get("optimizer_step")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        model.load_optimizer_state(gpu, opt, step, |name| {
            self.tensors.get(name).map(|(_, d)| d.clone())
        })?;
        Ok(())
    }
}

/// Reads the model spec stored in a checkpoint's metadata.
pub fn read_spec(path: &Path) -> Result<ModelSpec, TrainError> {
    Checkpoint::read(path)?.spec()
}

/// Loads the parameters of `path` into `model` (see [`Checkpoint::load_params`]).
pub fn load_params(gpu: &Gpu, model: &mut Model, path: &Path) -> Result<(), TrainError> {
    Checkpoint::read(path)?.load_params(gpu, model)
}
