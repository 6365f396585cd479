//! Model specifications: a sequence of named layers (Keras names), shape inference, parameter
//! shapes and the Keras-style summary. Pure data: nothing here touches the GPU.

use serde::{Deserialize, Serialize};

use super::ModelError;
use crate::ops::conv::Conv2dSpec;
use crate::ops::Padding;

/// The activation a layer ends with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    Linear,
    Relu,
    Sigmoid,
    Softmax,
}

/// What a layer does; the shapes in the comments leave out the batch dimension.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LayerKind {
    /// (H,W,C) -> (OH,OW,filters); kernel (KH,KW,C,filters), bias (filters).
    Conv2d {
        filters: usize,
        kernel: (usize, usize),
        stride: usize,
        padding: Padding,
        activation: Activation,
    },
    /// (L,C) -> (OL,filters); kernel (K,C,filters), bias (filters).
    Conv1d {
        filters: usize,
        kernel: usize,
        padding: Padding,
        activation: Activation,
    },
    /// (H,W,C) -> (H/p,W/p,C), valid.
    MaxPool2d { pool: usize },
    /// (L,C) -> (L/p,C), valid.
    MaxPool1d { pool: usize },
    /// (L,C) -> (C).
    GlobalMaxPool1d,
    /// (...) -> (prod ...).
    Flatten,
    /// (F) -> (units); kernel (F,units), bias (units).
    Dense {
        units: usize,
        activation: Activation,
    },
    /// Identity at inference; drops `rate` of its inputs in training.
    Dropout { rate: f32 },
}

impl LayerKind {
    /// The Keras class name shown in summaries.
    pub fn keras_type(&self) -> &'static str {
        match self {
            LayerKind::Conv2d { .. } => "Conv2D",
            LayerKind::Conv1d { .. } => "Conv1D",
            LayerKind::MaxPool2d { .. } => "MaxPooling2D",
            LayerKind::MaxPool1d { .. } => "MaxPooling1D",
            LayerKind::GlobalMaxPool1d => "GlobalMaxPooling1D",
            LayerKind::Flatten => "Flatten",
            LayerKind::Dense { .. } => "Dense",
            LayerKind::Dropout { .. } => "Dropout",
        }
    }

    /// Keras' default layer-name stem.
    fn stem(&self) -> &'static str {
        match self {
            LayerKind::Conv2d { .. } => "conv2d",
            LayerKind::Conv1d { .. } => "conv1d",
            LayerKind::MaxPool2d { .. } => "max_pooling2d",
            LayerKind::MaxPool1d { .. } => "max_pooling1d",
            LayerKind::GlobalMaxPool1d => "global_max_pooling1d",
            LayerKind::Flatten => "flatten",
            LayerKind::Dense { .. } => "dense",
            LayerKind::Dropout { .. } => "dropout",
        }
    }

    pub fn activation(&self) -> Activation {
        match self {
            LayerKind::Conv2d { activation, .. }
            | LayerKind::Conv1d { activation, .. }
            | LayerKind::Dense { activation, .. } => *activation,
            _ => Activation::Linear,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerSpec {
    pub name: String,
    pub kind: LayerKind,
}

/// A sequential model: an input shape (without the batch) and its layers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    pub name: String,
    pub input: Vec<usize>,
    pub layers: Vec<LayerSpec>,
}

/// The largest image side [`ModelSpec::checked_shapes`] looks at for the least that fits.
const MAX_SIDE: usize = 8192;

/// Builds a [`ModelSpec`] (Keras `Sequential.add` is `push` here), giving unnamed layers Keras' default names (conv2d, conv2d_1, ...).
pub struct Sequential {
    spec: ModelSpec,
}

impl Sequential {
    pub fn new(name: &str, input: &[usize]) -> Self {
        Self {
            spec: ModelSpec {
                name: name.to_string(),
                input: input.to_vec(),
                layers: Vec::new(),
            },
        }
    }

    /// Adds a layer with Keras' default name for its type.
    pub fn push(mut self, kind: LayerKind) -> Self {
        let stem = kind.stem();
        let used = self
            .spec
            .layers
            .iter()
            .filter(|l| l.name == stem || l.name.starts_with(&format!("{stem}_")))
            .count();
        let name = if used == 0 {
            stem.to_string()
        } else {
            format!("{stem}_{used}")
        };
        self.spec.layers.push(LayerSpec { name, kind });
        self
    }

    pub fn named(mut self, name: &str, kind: LayerKind) -> Self {
        self.spec.layers.push(LayerSpec {
            name: name.to_string(),
            kind,
        });
        self
    }

    pub fn build(self) -> ModelSpec {
        self.spec
    }
}

/// Conv2D(filters, k x k, stride 1) with an activation.
pub fn conv(filters: usize, k: usize, padding: Padding, activation: Activation) -> LayerKind {
    LayerKind::Conv2d {
        filters,
        kernel: (k, k),
        stride: 1,
        padding,
        activation,
    }
}

pub fn dense(units: usize, activation: Activation) -> LayerKind {
    LayerKind::Dense { units, activation }
}

impl ModelSpec {
    /// [`ModelSpec::shapes`], where an image input too small for the layers is an error that
    /// says the least square side that fits (layers that shrink the image fit every larger
    /// one too, so the first side that fits is the least).
    pub fn checked_shapes(&self) -> Result<Vec<Vec<usize>>, ModelError> {
        let err = match self.shapes() {
            Ok(shapes) => return Ok(shapes),
            Err(e @ ModelError::Shape { .. }) => e,
            Err(e) => return Err(e),
        };
        let &[h, w, c] = self.input.as_slice() else {
            return Err(err);
        };
        let fits = |side: usize| {
            let at = ModelSpec {
                input: vec![side, side, c],
                ..self.clone()
            };
            at.shapes().is_ok()
        };
        match (h.max(w) + 1..=MAX_SIDE).find(|&s| fits(s)) {
            Some(least) => Err(ModelError::ImageTooSmall {
                model: self.name.clone(),
                h,
                w,
                least,
                source: Box::new(err),
            }),
            None => Err(err),
        }
    }

    /// Output shape of every layer (without the batch), checking that each layer fits its input.
    pub fn shapes(&self) -> Result<Vec<Vec<usize>>, ModelError> {
        let mut cur = self.input.clone();
        let mut out = Vec::with_capacity(self.layers.len());
        for l in &self.layers {
            let bad = |why: String| ModelError::Shape {
                layer: l.name.clone(),
                input: cur.clone(),
                reason: why,
            };
            cur = match (&l.kind, cur.as_slice()) {
                (
                    LayerKind::Conv2d {
                        filters,
                        kernel,
                        stride,
                        padding,
                        ..
                    },
                    &[h, w, c],
                ) => {
                    let spec = Conv2dSpec::new(*stride, *padding, false);
                    let s = crate::ops::conv::conv2d_output_shape(
                        &[1, h, w, c],
                        &[kernel.0, kernel.1, c, *filters],
                        &spec,
                    )
                    .ok_or_else(|| {
                        bad(format!("a {}x{} kernel does not fit", kernel.0, kernel.1))
                    })?;
                    vec![s[1], s[2], s[3]]
                }
                (
                    LayerKind::Conv1d {
                        filters,
                        kernel,
                        padding,
                        ..
                    },
                    &[len, _],
                ) => {
                    let (ol, _) = padding
                        .resolve(len, *kernel, 1)
                        .ok_or_else(|| bad(format!("a kernel of {kernel} does not fit")))?;
                    vec![ol, *filters]
                }
                (LayerKind::MaxPool2d { pool }, &[h, w, c]) => {
                    if h < *pool || w < *pool {
                        return Err(bad(format!("a {pool}x{pool} pool does not fit")));
                    }
                    vec![h / pool, w / pool, c]
                }
                (LayerKind::MaxPool1d { pool }, &[len, c]) => {
                    if len < *pool {
                        return Err(bad(format!("a pool of {pool} does not fit")));
                    }
                    vec![len / pool, c]
                }
                (LayerKind::GlobalMaxPool1d, &[_, c]) => vec![c],
                (LayerKind::Flatten, s) => vec![s.iter().product()],
                (LayerKind::Dense { units, .. }, &[_]) => vec![*units],
                (LayerKind::Dropout { rate }, s) => {
                    if !(0.0..1.0).contains(rate) {
                        return Err(bad(format!("dropout rate {rate} must be in [0, 1)")));
                    }
                    s.to_vec()
                }
                (k, _) => {
                    return Err(bad(format!(
                        "{} does not take an input of rank {}",
                        k.keras_type(),
                        cur.len()
                    )))
                }
            };
            out.push(cur.clone());
        }
        Ok(out)
    }

    /// Parameter tensors of layer `i`, in Keras order: (`{layer}.kernel`, shape), (`{layer}.bias`, shape).
    pub fn param_shapes(&self, i: usize) -> Result<Vec<(String, Vec<usize>)>, ModelError> {
        let shapes = self.shapes()?;
        let input = if i == 0 {
            self.input.clone()
        } else {
            shapes[i - 1].clone()
        };
        let l = &self.layers[i];
        let kb = |k: Vec<usize>, b: usize| {
            vec![
                (format!("{}.kernel", l.name), k),
                (format!("{}.bias", l.name), vec![b]),
            ]
        };
        Ok(match &l.kind {
            LayerKind::Conv2d {
                filters, kernel, ..
            } => kb(vec![kernel.0, kernel.1, input[2], *filters], *filters),
            LayerKind::Conv1d {
                filters, kernel, ..
            } => kb(vec![*kernel, input[1], *filters], *filters),
            LayerKind::Dense { units, .. } => kb(vec![input[0], *units], *units),
            _ => Vec::new(),
        })
    }

    pub fn param_count(&self, i: usize) -> Result<usize, ModelError> {
        Ok(self
            .param_shapes(i)?
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum())
    }

    pub fn layer_index(&self, name: &str) -> Option<usize> {
        self.layers.iter().position(|l| l.name == name)
    }

    /// The index of layer `name`, or an error listing the layers there are.
    pub fn require_layer(&self, name: &str) -> Result<usize, ModelError> {
        self.layer_index(name)
            .ok_or_else(|| ModelError::NoSuchLayer {
                name: name.to_string(),
                model: self.name.clone(),
                layers: self
                    .layers
                    .iter()
                    .map(|l| l.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// The loss the output layer implies: sigmoid with one unit -> binary cross-entropy,
    /// softmax -> categorical.
    pub fn loss(&self) -> Result<crate::ops::loss::LossKind, ModelError> {
        use crate::ops::loss::LossKind;
        match self.layers.last().map(|l| &l.kind) {
            Some(LayerKind::Dense {
                units: 1,
                activation: Activation::Sigmoid,
            }) => Ok(LossKind::BinaryCrossentropy),
            Some(LayerKind::Dense {
                activation: Activation::Softmax,
                ..
            }) => Ok(LossKind::CategoricalCrossentropy),
            _ => Err(ModelError::Invalid(format!(
                "model {}: the last layer must be Dense(1, sigmoid) or Dense(k, softmax) to train",
                self.name
            ))),
        }
    }

    /// Keras' `model.summary()` table; `trainable[i]` says whether layer i trains.
    pub fn summary(&self, trainable: &[bool]) -> Result<String, ModelError> {
        let shapes = self.checked_shapes()?;
        let rule = "_".repeat(75);
        let mut s = format!(
            "Model: \"{}\"\n{rule}\n {:<34}{:<27}{:>12}\n{}\n",
            self.name,
            "Layer (type)",
            "Output Shape",
            "Param #",
            "=".repeat(75)
        );
        let (mut total, mut train) = (0usize, 0usize);
        for (i, l) in self.layers.iter().enumerate() {
            let p = self.param_count(i)?;
            total += p;
            if trainable.get(i).copied().unwrap_or(true) {
                train += p;
            }
            let shape = format!(
                "(None, {})",
                shapes[i]
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            s += &format!(
                " {:<34}{:<27}{:>12}\n",
                format!("{} ({})", l.name, l.kind.keras_type()),
                shape,
                group(p)
            );
        }
        s += &format!(
            "{}\nTotal params: {}\nTrainable params: {}\nNon-trainable params: {}\n{rule}\n",
            "=".repeat(75),
            group(total),
            group(train),
            group(total - train)
        );
        Ok(s)
    }
}

/// 1234567 -> "1,234,567".
pub fn group(n: usize) -> String {
    let d = n.to_string();
    let mut out = String::new();
    for (i, ch) in d.chars().enumerate() {
        if i > 0 && (d.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}
