//! Models: specifications ([`spec`]), the zoo ([`zoo`]) and the executor ([`exec`]) that runs a
//! model's forward and backward passes over the ops.

pub mod exec;
pub mod spec;
pub mod weights;
pub mod zoo;

use thiserror::Error;

pub use exec::{Model, Pass, StepOutput};
pub use spec::{Activation, LayerKind, LayerSpec, ModelSpec, Sequential};

/// Errors of the model layer.
#[derive(Debug, Error)]
pub enum ModelError {
    #[error("unknown model {0:?}; the zoo has: small-convnet, small-convnet-dropout, convnet-180, vgg16-base, vgg16-classifier, mnist-convnet, conv1d-net")]
    UnknownModel(String),
    #[error("layer {layer}: input {input:?} does not fit: {reason}")]
    Shape {
        layer: String,
        input: Vec<usize>,
        reason: String,
    },
    #[error("model {model}: a {h}x{w} image is too small for its layers, {least}x{least} is the least it takes (--image-size); {source}")]
    ImageTooSmall {
        model: String,
        h: usize,
        w: usize,
        least: usize,
        #[source]
        source: Box<ModelError>,
    },
    #[error("no layer named {name:?} in model {model}; layers: {layers}")]
    NoSuchLayer {
        name: String,
        model: String,
        layers: String,
    },
    #[error("layer {layer}: its {what} needs {bytes} bytes, over this adapter's max_buffer_size of {limit} bytes; a smaller input (--image-size) fits")]
    TooLarge {
        layer: String,
        what: String,
        bytes: u64,
        limit: u64,
    },
    #[error("a batch of {batch}: layer {layer}'s output for the batch needs {bytes} bytes, over this adapter's max_buffer_size of {limit} bytes; batches of up to {fits} fit (--batch)")]
    BatchTooLarge {
        batch: usize,
        layer: String,
        bytes: u64,
        limit: u64,
        fits: usize,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("weights file {path}: {reason}")]
    Weights {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("input batch has shape {found:?}, model {model} expects (N, {expected})")]
    Input {
        model: String,
        expected: String,
        found: Vec<usize>,
    },
    #[error(transparent)]
    Op(#[from] crate::ops::OpError),
    #[error(transparent)]
    Gpu(#[from] crate::gpu::GpuError),
}
