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

/// Opens a safetensors file held in `bytes`. The crate's own errors for a lying header (a size
/// that disagrees with dtype and shape, a gap or overlap, data past the end of the file) do not
/// always say which tensor is at fault, so on failure the header is read again here to name it.
pub fn open_safetensors(bytes: &[u8]) -> Result<safetensors::SafeTensors<'_>, String> {
    safetensors::SafeTensors::deserialize(bytes).map_err(|e| match explain_header(bytes) {
        Some(why) => format!("{e}: {why}"),
        None => e.to_string(),
    })
}

/// The first tensor whose `data_offsets` disagree with its dtype and shape, with its
/// neighbour, or with the length of the file, said in words; `None` when the header cannot be
/// parsed at all or every entry looks consistent.
fn explain_header(bytes: &[u8]) -> Option<String> {
    let n = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?) as usize;
    let json = bytes.get(8..8usize.checked_add(n)?)?;
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(json).ok()?;
    let data_len = bytes.len() - 8 - n;
    let mut entries: Vec<(String, &str, Vec<u64>, u64, u64)> = Vec::new();
    for (name, info) in header.iter().filter(|(k, _)| *k != "__metadata__") {
        let dtype = info.get("dtype")?.as_str()?;
        let shape = info
            .get("shape")?
            .as_array()?
            .iter()
            .map(|d| d.as_u64())
            .collect::<Option<Vec<u64>>>()?;
        let off = info.get("data_offsets")?.as_array()?;
        let (start, end) = (off.first()?.as_u64()?, off.get(1)?.as_u64()?);
        entries.push((name.clone(), dtype, shape, start, end));
    }
    entries.sort_by_key(|e| (e.3, e.4));
    let mut previous: Option<(&str, u64)> = None;
    for (name, dtype, shape, start, end) in &entries {
        if end < start {
            return Some(format!(
                "tensor {name} has data_offsets [{start}, {end}], which end before they start"
            ));
        }
        let expected_start = previous.map_or(0, |p| p.1);
        if *start != expected_start {
            return Some(match previous {
                Some((prev, prev_end)) => format!(
                    "tensor {name} starts at data byte {start}, but {prev} before it ends at \
                     {prev_end} (a gap or an overlap)"
                ),
                None => {
                    format!("tensor {name} is the first but starts at data byte {start}, not 0")
                }
            });
        }
        let width = match *dtype {
            "F64" | "I64" | "U64" => Some(8u64),
            "F32" | "I32" | "U32" => Some(4),
            "F16" | "BF16" | "I16" | "U16" => Some(2),
            "BOOL" | "U8" | "I8" | "F8_E4M3" | "F8_E5M2" => Some(1),
            _ => None,
        };
        let needed = width.and_then(|w| shape.iter().try_fold(w, |a, &d| a.checked_mul(d)));
        if let Some(needed) = needed {
            if end - start != needed {
                return Some(format!(
                    "tensor {name} has data_offsets [{start}, {end}] ({} bytes), but {dtype} \
                     shape {shape:?} needs {needed} bytes",
                    end - start
                ));
            }
        }
        if *end > data_len as u64 {
            return Some(format!(
                "tensor {name} ends at data byte {end}, but the file holds only {data_len} bytes \
                 of data (truncated?)"
            ));
        }
        previous = Some((name, *end));
    }
    match previous {
        Some((last, end)) if end != data_len as u64 => Some(format!(
            "the last tensor, {last}, ends at data byte {end}, but the file holds {data_len} \
             bytes of data (extra bytes after it)"
        )),
        _ => None,
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
    load_vgg16_bytes(gpu, model, path, &bytes)
}

/// [`load_vgg16`] on the bytes of the file at `path`, already read: a caller that also checks
/// the file's checksum reads it once (553 MB for timm's weights). `path` names it in errors.
pub fn load_vgg16_bytes(
    gpu: &Gpu,
    model: &mut Model,
    path: &Path,
    bytes: &[u8],
) -> Result<LoadedWeights, ModelError> {
    let st = open_safetensors(bytes).map_err(|e| {
        err(
            path,
            format!("not a valid safetensors file (truncated or another format?): {e}"),
        )
    })?;
    let (_, header) =
        safetensors::SafeTensors::read_metadata(bytes).map_err(|e| err(path, e.to_string()))?;
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
