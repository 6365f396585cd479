//! Pretrained VGG16 weights from safetensors, in Keras naming (`block{b}_conv{i}.kernel`, HWIO
//! `[3,3,cin,cout]`, and `.bias`) or torchvision/timm naming (`features.{idx}.weight`, OIHW, and
//! `.bias`). f32, f16 and bf16 are accepted. The preprocessing the weights expect comes from the
//! file's `preprocessing` metadata, else from the naming (Keras: caffe, torchvision: torch).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::Dtype;

use super::{Model, ModelError};
use crate::data::Preprocessing;
use crate::gpu::Gpu;

/// The naming a weights file uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Naming {
    Keras,
    Torchvision,
}

/// What was loaded.
#[derive(Clone, Debug)]
pub struct LoadedWeights {
    pub path: PathBuf,
    pub naming: Naming,
    pub preprocessing: Preprocessing,
    /// Where the preprocessing came from: "metadata" or "naming".
    pub preprocessing_source: &'static str,
    pub tensors: usize,
    /// Tensors in the file that VGG16's base does not use (a torchvision classifier, say).
    pub ignored: Vec<String>,
}

/// torchvision's `features` indices of VGG16's 13 convolutions, in order.
const TORCH_CONV_INDICES: [usize; 13] = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28];

/// Keras names of VGG16's 13 convolutions, in order.
pub fn vgg16_conv_names() -> Vec<String> {
    let mut out = Vec::new();
    for (b, convs) in [2, 2, 3, 3, 3].into_iter().enumerate() {
        for i in 1..=convs {
            out.push(format!("block{}_conv{i}", b + 1));
        }
    }
    out
}

fn err(path: &Path, reason: String) -> ModelError {
    ModelError::Weights {
        path: path.to_path_buf(),
        reason,
    }
}

fn to_f32(
    path: &Path,
    name: &str,
    view: &safetensors::tensor::TensorView<'_>,
) -> Result<Vec<f32>, ModelError> {
    let data = view.data();
    let values: Vec<f32> = match view.dtype() {
        Dtype::F32 => bytemuck::pod_collect_to_vec(data),
        Dtype::F16 => bytemuck::pod_collect_to_vec::<u8, half::f16>(data)
            .iter()
            .map(|v| v.to_f32())
            .collect(),
        Dtype::BF16 => bytemuck::pod_collect_to_vec::<u8, half::bf16>(data)
            .iter()
            .map(|v| v.to_f32())
            .collect(),
        other => {
            return Err(err(
                path,
                format!("tensor {name} is {other:?}; expected F32, F16 or BF16"),
            ))
        }
    };
    // A NaN or infinity in a weight spreads through every activation after it without a word.
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(err(
            path,
            format!(
                "tensor {name} holds {} at element {i} (of {}): weights must be finite",
                values[i],
                values.len()
            ),
        ));
    }
    Ok(values)
}

/// OIHW (cout, cin, kh, kw) -> HWIO (kh, kw, cin, cout).
fn oihw_to_hwio(w: &[f32], o: usize, i: usize, h: usize, k: usize) -> Vec<f32> {
    let mut out = vec![0.0; w.len()];
    for co in 0..o {
        for ci in 0..i {
            for y in 0..h {
                for x in 0..k {
                    out[((y * k + x) * i + ci) * o + co] = w[((co * i + ci) * h + y) * k + x];
                }
            }
        }
    }
    out
}

/// Loads VGG16's 13 convolutions from `path` into `model` (whose layers carry Keras' VGG16
/// names; its other layers are left alone). Every problem with the file is reported before any
/// weight is written: not a safetensors file, missing tensors (all listed), wrong shapes
/// (expected vs found), unsupported dtypes.
pub fn load_vgg16(gpu: &Gpu, model: &mut Model, path: &Path) -> Result<LoadedWeights, ModelError> {
    let bytes = std::fs::read(path).map_err(|e| err(path, format!("cannot read: {e}")))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| {
        err(
            path,
            format!("not a valid safetensors file (truncated or another format?): {e}"),
        )
    })?;
    let (_, header) =
        safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| err(path, e.to_string()))?;
    let names: Vec<String> = st.names().into_iter().map(str::to_string).collect();
    let naming = if names.iter().any(|n| n.starts_with("block1_conv1.")) {
        Naming::Keras
    } else if names.iter().any(|n| n.starts_with("features.")) {
        Naming::Torchvision
    } else {
        return Err(err(path, format!("neither Keras (block1_conv1.kernel) nor torchvision (features.0.weight) VGG16 naming; tensors: {}", preview(&names))));
    };
    let params: BTreeMap<String, Vec<usize>> = model
        .params()
        .into_iter()
        .map(|(n, t, _)| (n, t.dims().to_vec()))
        .collect();
    let mut planned: Vec<(String, Vec<f32>)> = Vec::new();
    let mut missing = Vec::new();
    let mut used = std::collections::BTreeSet::new();
    for (k, layer) in vgg16_conv_names().iter().enumerate() {
        let (kname, bname) = (format!("{layer}.kernel"), format!("{layer}.bias"));
        let want_k = params
            .get(&kname)
            .ok_or_else(|| {
                err(
                    path,
                    format!("model {} has no layer {layer}", model.spec.name),
                )
            })?
            .clone();
        let (src_k, src_b) = match naming {
            Naming::Keras => (kname.clone(), bname.clone()),
            Naming::Torchvision => (
                format!("features.{}.weight", TORCH_CONV_INDICES[k]),
                format!("features.{}.bias", TORCH_CONV_INDICES[k]),
            ),
        };
        for (src, dst, want) in [
            (&src_k, &kname, want_k.clone()),
            (&src_b, &bname, vec![want_k[3]]),
        ] {
            let Ok(view) = st.tensor(src) else {
                missing.push(format!("{src} (shape {want:?})"));
                continue;
            };
            used.insert(src.clone());
            let found = view.shape().to_vec();
            let data = to_f32(path, src, &view)?;
            let data = if naming == Naming::Torchvision && want.len() == 4 {
                let expect = vec![want[3], want[2], want[0], want[1]];
                if found != expect {
                    return Err(err(
                        path,
                        format!("tensor {src} has shape {found:?}, expected {expect:?} (OIHW)"),
                    ));
                }
                oihw_to_hwio(&data, want[3], want[2], want[0], want[1])
            } else {
                if found != want {
                    return Err(err(
                        path,
                        format!("tensor {src} has shape {found:?}, expected {want:?}"),
                    ));
                }
                data
            };
            planned.push((dst.clone(), data));
        }
    }
    if !missing.is_empty() {
        return Err(err(
            path,
            format!("missing tensors: {}", missing.join(", ")),
        ));
    }
    let ignored: Vec<String> = names
        .iter()
        .filter(|n| !used.contains(*n))
        .cloned()
        .collect();
    if !ignored.is_empty() {
        tracing::info!(count = ignored.len(), first = %ignored[0], "ignoring tensors VGG16's base does not use (e.g. a classifier)");
    }
    let meta = header.metadata().clone().unwrap_or_default();
    let (preprocessing, source) = match meta.get("preprocessing") {
        Some(p) => (
            p.parse()
                .map_err(|e: crate::data::DataError| err(path, format!("metadata: {e}")))?,
            "metadata",
        ),
        None => (
            if naming == Naming::Keras {
                Preprocessing::Caffe
            } else {
                Preprocessing::Torch
            },
            "naming",
        ),
    };
    for (name, data) in &planned {
        model.set_param(gpu, name, data)?;
    }
    tracing::info!(?naming, ?preprocessing, source, path = %path.display(), "loaded VGG16 weights");
    Ok(LoadedWeights {
        path: path.to_path_buf(),
        naming,
        preprocessing,
        preprocessing_source: source,
        tensors: planned.len(),
        ignored,
    })
}

fn preview(names: &[String]) -> String {
    let mut v: Vec<&str> = names.iter().map(String::as_str).take(5).collect();
    if names.len() > 5 {
        v.push("...");
    }
    v.join(", ")
}
