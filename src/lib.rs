//! cnn-wgpu: a GPU compute engine for convolutional networks on wgpu.
//!
//! Layers of the system, bottom up:
//! - [`gpu`]: adapter choice, device, pipeline cache, buffer pool, command recording.
//! - [`tensor`]: f32 NHWC tensors in pooled GPU buffers.
//! - [`ops`]: one module per op family, each owning its kernels' pipelines, forward and backward.
//! - [`data`]: datasets, augmentation and the streaming batch loader.
//! - [`model`]: model specs, the zoo, and the executor (forward, backward, training step).
//! - [`train`]: the training loop, callbacks and checkpoints.
//! - [`transfer`]: the VGG16 transfer-learning workflow (the three stages).
//! - [`bench`]: the shader-throughput bench suite.
//! - [`manifest`]: every pipeline each adapter class would build, for other compilers to check.

pub mod atomic_file;
pub mod bench;
pub mod data;
pub mod fault;
pub mod gpu;
pub mod manifest;
pub mod model;
pub mod ops;
pub mod reference;
pub mod selftest;
pub mod tensor;
pub mod train;
pub mod transfer;

pub use gpu::{AdapterRequest, Gpu, GpuError};
pub use ops::OpError;
pub use tensor::{Shape, Tensor};
