//! The model zoo: the book's and the lecture notes' networks.

use super::spec::{conv, dense, Activation, LayerKind, ModelSpec, Sequential};
use super::ModelError;
use crate::ops::Padding;

use Activation::{Relu, Sigmoid, Softmax};
use Padding::{Same, Valid};

/// Names `cnn-wgpu summary --model` and `train --model` accept.
pub const NAMES: [&str; 7] = [
    "small-convnet",
    "small-convnet-dropout",
    "convnet-180",
    "vgg16-base",
    "vgg16-classifier",
    "mnist-convnet",
    "conv1d-net",
];

/// Book listing 5.5: four Conv2D + MaxPool blocks, Flatten, Dense 512, Dense 1 sigmoid.
pub fn small_convnet(size: usize, dropout: bool) -> ModelSpec {
    let mut m = Sequential::new(
        if dropout {
            "small-convnet-dropout"
        } else {
            "small-convnet"
        },
        &[size, size, 3],
    );
    for f in [32, 64, 128, 128] {
        m = m
            .push(conv(f, 3, Valid, Relu))
            .push(LayerKind::MaxPool2d { pool: 2 });
    }
    m = m.push(LayerKind::Flatten);
    if dropout {
        m = m.push(LayerKind::Dropout { rate: 0.5 });
    }
    m.push(dense(512, Relu)).push(dense(1, Sigmoid)).build()
}

/// The lecture notes' 180x180 convnet: Conv2D 32/64/128/256/256, pools after the first four.
pub fn convnet_180(size: usize) -> ModelSpec {
    let mut m = Sequential::new("convnet-180", &[size, size, 3]);
    for (i, f) in [32, 64, 128, 256, 256].into_iter().enumerate() {
        m = m.push(conv(f, 3, Valid, Relu));
        if i < 4 {
            m = m.push(LayerKind::MaxPool2d { pool: 2 });
        }
    }
    m.push(LayerKind::Flatten).push(dense(1, Sigmoid)).build()
}

/// VGG16's convolutional base with Keras' layer names (block1_conv1 ... block5_pool).
pub fn vgg16_base(size: usize) -> ModelSpec {
    vgg16_layers(Sequential::new("vgg16-base", &[size, size, 3])).build()
}

fn vgg16_layers(mut m: Sequential) -> Sequential {
    for (b, (filters, convs)) in [(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)]
        .into_iter()
        .enumerate()
    {
        for i in 1..=convs {
            m = m.named(
                &format!("block{}_conv{i}", b + 1),
                conv(filters, 3, Same, Relu),
            );
        }
        m = m.named(
            &format!("block{}_pool", b + 1),
            LayerKind::MaxPool2d { pool: 2 },
        );
    }
    m
}

/// The book's VGG16 classifier: the base, Flatten, Dense 256 relu, Dropout 0.5, Dense 1 sigmoid.
pub fn vgg16_classifier(size: usize) -> ModelSpec {
    vgg16_layers(Sequential::new("vgg16-classifier", &[size, size, 3]))
        .push(LayerKind::Flatten)
        .push(dense(256, Relu))
        .push(LayerKind::Dropout { rate: 0.5 })
        .push(dense(1, Sigmoid))
        .build()
}

/// The lecture notes' MNIST convnet: Conv2D 32/64/64, pools after the first two, Dense 64, Dense 10.
pub fn mnist_convnet() -> ModelSpec {
    Sequential::new("mnist-convnet", &[28, 28, 1])
        .push(conv(32, 3, Valid, Relu))
        .push(LayerKind::MaxPool2d { pool: 2 })
        .push(conv(64, 3, Valid, Relu))
        .push(LayerKind::MaxPool2d { pool: 2 })
        .push(conv(64, 3, Valid, Relu))
        .push(LayerKind::Flatten)
        .push(dense(64, Relu))
        .push(dense(10, Softmax))
        .build()
}

/// The lecture notes' 1-D convnet for sequences of `len` steps with `channels` features.
pub fn conv1d_net(len: usize, channels: usize) -> ModelSpec {
    Sequential::new("conv1d-net", &[len, channels])
        .push(LayerKind::Conv1d {
            filters: 256,
            kernel: 4,
            padding: Same,
            activation: Relu,
        })
        .push(LayerKind::MaxPool1d { pool: 2 })
        .push(LayerKind::Conv1d {
            filters: 128,
            kernel: 2,
            padding: Same,
            activation: Relu,
        })
        .push(LayerKind::GlobalMaxPool1d)
        .push(dense(1, Sigmoid))
        .build()
}

/// A zoo model by name. `size` is the image side (ignored by the fixed-size models); conv1d-net
/// takes its input as (len, channels).
pub fn by_name(
    name: &str,
    size: Option<usize>,
    seq: Option<(usize, usize)>,
) -> Result<ModelSpec, ModelError> {
    Ok(match name {
        "small-convnet" => small_convnet(size.unwrap_or(150), false),
        "small-convnet-dropout" => small_convnet(size.unwrap_or(150), true),
        "convnet-180" => convnet_180(size.unwrap_or(180)),
        "vgg16-base" => vgg16_base(size.unwrap_or(150)),
        "vgg16-classifier" => vgg16_classifier(size.unwrap_or(150)),
        "mnist-convnet" => mnist_convnet(),
        "conv1d-net" => {
            let (l, c) = seq.unwrap_or((128, 1));
            conv1d_net(l, c)
        }
        other => return Err(ModelError::UnknownModel(other.to_string())),
    })
}
