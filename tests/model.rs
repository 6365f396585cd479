//! Models: the zoo's Keras parameter totals, freezing, the executor's gradients against finite
//! differences, and training that learns while frozen layers stay untouched.

mod common;

use cnn_wgpu::model::spec::{conv, dense, Activation, LayerKind, Sequential};
use cnn_wgpu::model::{zoo, Model};
use cnn_wgpu::ops::conv::Padding;
use cnn_wgpu::ops::optim::Optimizer;
use common::*;

fn totals(spec: &cnn_wgpu::model::ModelSpec, trainable_from: Option<usize>) -> (usize, usize) {
    let mut total = 0;
    let mut train = 0;
    for i in 0..spec.layers.len() {
        let p = spec.param_count(i).unwrap();
        total += p;
        if trainable_from.is_none_or(|f| i >= f) {
            train += p;
        }
    }
    (total, train)
}

#[test]
fn zoo_parameter_totals_match_keras() {
    assert_eq!(totals(&zoo::small_convnet(150, false), None).0, 3_453_121);
    assert_eq!(totals(&zoo::small_convnet(150, true), None).0, 3_453_121);
    assert_eq!(totals(&zoo::convnet_180(180), None).0, 991_041);
    assert_eq!(totals(&zoo::mnist_convnet(), None).0, 93_322);
    let base = zoo::vgg16_base(150);
    assert_eq!(totals(&base, None).0, 14_714_688);
    assert_eq!(base.shapes().unwrap().last().unwrap(), &vec![4, 4, 512]);
    let clf = zoo::vgg16_classifier(150);
    let flatten = clf.layer_index("flatten").unwrap();
    assert_eq!(totals(&clf, Some(flatten)), (16_812_353, 2_097_665));
    let seq = zoo::conv1d_net(100, 3);
    assert_eq!(seq.shapes().unwrap().last().unwrap(), &vec![1]);
    // Conv1D(256,4): 4*3*256+256; Conv1D(128,2): 2*256*128+128; Dense(1): 129.
    assert_eq!(totals(&seq, None).0, 3328 + 65_664 + 129);
}

#[test]
fn summary_is_a_keras_table() {
    let s = zoo::small_convnet(150, false).summary(&[true; 10]).unwrap();
    assert!(
        s.contains("conv2d (Conv2D)") && s.contains("(None, 148, 148, 32)") && s.contains("896"),
        "{s}"
    );
    assert!(
        s.contains("conv2d_1 (Conv2D)")
            && s.contains("max_pooling2d_3 (MaxPooling2D)")
            && s.contains("dense_1 (Dense)"),
        "{s}"
    );
    assert!(
        s.contains("Total params: 3,453,121") && s.contains("Non-trainable params: 0"),
        "{s}"
    );
    let clf = zoo::vgg16_classifier(150);
    let mask: Vec<bool> = (0..clf.layers.len())
        .map(|i| i >= clf.layer_index("flatten").unwrap())
        .collect();
    let s = clf.summary(&mask).unwrap();
    assert!(
        s.contains("block5_pool (MaxPooling2D)") && s.contains("(None, 4, 4, 512)"),
        "{s}"
    );
    assert!(
        s.contains("Trainable params: 2,097,665") && s.contains("Non-trainable params: 14,714,688"),
        "{s}"
    );
}

#[test]
fn shape_errors_name_the_layer() {
    let bad = Sequential::new("bad", &[5, 5, 3])
        .push(conv(4, 7, Padding::Valid, Activation::Relu))
        .build();
    let err = bad.shapes().unwrap_err().to_string();
    assert!(err.contains("conv2d") && err.contains("7x7"), "{err}");
    assert!(zoo::by_name("resnet", None, None).is_err());
}

#[test]
fn vgg16_trainable_weight_counts() {
    let gpu = gpu_or_skip!();
    let mut m = Model::new(gpu, zoo::vgg16_classifier(32), 1).unwrap();
    assert_eq!(m.trainable_weight_count(), 30, "everything trains");
    m.freeze_through("block5_pool").unwrap();
    assert_eq!(m.trainable_weight_count(), 4, "frozen base");
    m.trainable_from("block5_conv1").unwrap();
    assert_eq!(m.trainable_weight_count(), 10, "block5 unfrozen");
    let err = m.trainable_from("block6_conv1").unwrap_err().to_string();
    assert!(
        err.contains("block6_conv1") && err.contains("block5_conv3"),
        "{err}"
    );
}

fn tiny() -> cnn_wgpu::model::ModelSpec {
    Sequential::new("tiny", &[8, 8, 2])
        .push(conv(3, 3, Padding::Same, Activation::Relu))
        .push(LayerKind::MaxPool2d { pool: 2 })
        .push(conv(4, 3, Padding::Valid, Activation::Relu))
        .push(LayerKind::Flatten)
        .push(dense(5, Activation::Relu))
        .push(dense(1, Activation::Sigmoid))
        .build()
}

/// The executor's gradient of the mean binary cross-entropy with respect to every parameter,
/// against central differences of the loss the GPU forward computes (f32, so h = 1e-2 and the
/// comparison is by direction and size over each tensor).
#[test]
fn executor_gradients_match_finite_differences() {
    let gpu = gpu_or_skip!();
    let mut model = Model::new(gpu, tiny(), 3).unwrap();
    let n = 3;
    let x = upload(gpu, &[n, 8, 8, 2], &rand_vec(n * 128, 4));
    let y = upload(gpu, &[n, 1], &[1.0, 0.0, 1.0]);
    let mean_loss = |m: &Model| -> f64 {
        let o = m.evaluate_batch(gpu, &x, &y).unwrap();
        f64::from(o.read(gpu).unwrap().0)
    };
    // dL/dz = (sigmoid(z) - y)/N, pushed back through the layers by the executor.
    let fwd = model.forward(gpu, &x, Some(0)).unwrap();
    let lo = cnn_wgpu::ops::loss::loss_and_grad(
        gpu,
        cnn_wgpu::ops::loss::LossKind::BinaryCrossentropy,
        &fwd.logits,
        &y,
        cnn_wgpu::ops::loss::Clip::None,
    )
    .unwrap();
    let grads = model.backward(gpu, fwd, lo.grad).unwrap();
    let names: Vec<(String, Vec<f32>)> = model
        .params()
        .into_iter()
        .map(|(n, t, _)| (n, read(gpu, t)))
        .collect();
    let mut k = 0;
    for (layer, g) in grads.iter().enumerate() {
        let Some(g) = g else { continue };
        for gt in g {
            let (name, w0) = &names[k];
            k += 1;
            let analytic = read(gpu, gt);
            let h = 1e-2f32;
            let mut numeric = Vec::new();
            for j in 0..w0.len() {
                let mut w = w0.clone();
                w[j] += h;
                model.set_param(gpu, name, &w).unwrap();
                let up = mean_loss(&model);
                w[j] -= 2.0 * h;
                model.set_param(gpu, name, &w).unwrap();
                let down = mean_loss(&model);
                numeric.push((up - down) / (2.0 * f64::from(h)));
            }
            model.set_param(gpu, name, w0).unwrap();
            let a = to_f64(&analytic);
            let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
            let cos = dot(&a, &numeric) / (norm(&a) * norm(&numeric)).max(1e-12);
            assert!(
                cos > 0.99,
                "layer {layer} {name}: cosine {cos} between analytic and numeric gradients"
            );
            assert!(
                (norm(&a) / norm(&numeric) - 1.0).abs() < 0.05,
                "layer {layer} {name}: norms {} vs {}",
                norm(&a),
                norm(&numeric)
            );
        }
    }
    assert_eq!(k, 8, "4 layers with kernel and bias");
}

/// Bright-vs-dark stripes: a 2-class task the test generates, learnt to >= 95% validation accuracy;
/// frozen layers stay bit-identical, trainable ones change, and only trainable layers get
/// optimizer state.
#[test]
fn tiny_convnet_learns_and_frozen_layers_stay_put() {
    let gpu = gpu_or_skip!();
    let spec = Sequential::new("stripes", &[12, 12, 1])
        .push(conv(4, 3, Padding::Same, Activation::Relu))
        .push(LayerKind::MaxPool2d { pool: 2 })
        .push(conv(8, 3, Padding::Same, Activation::Relu))
        .push(LayerKind::MaxPool2d { pool: 2 })
        .push(LayerKind::Flatten)
        .push(dense(16, Activation::Relu))
        .push(LayerKind::Dropout { rate: 0.2 })
        .push(dense(1, Activation::Sigmoid))
        .build();
    // Class 1: horizontal stripes; class 0: vertical stripes; random phase, contrast and noise.
    let make = |count: usize, seed: u64| {
        let noise = rand_vec(count * 144, seed);
        let mut xs = Vec::with_capacity(count * 144);
        let mut ys = Vec::with_capacity(count);
        for i in 0..count {
            let class = i % 2;
            let phase = (i / 2) % 3;
            let contrast = 0.5 + 0.5 * ((i * 7) % 5) as f32 / 5.0;
            for r in 0..12 {
                for c in 0..12 {
                    let coord = if class == 1 { r } else { c };
                    let on = ((coord + phase) / 2) % 2 == 0;
                    xs.push(if on { contrast } else { 0.0 } + 0.2 * noise[i * 144 + r * 12 + c]);
                }
            }
            ys.push(class as f32);
        }
        (xs, ys)
    };
    let (tx, ty) = make(256, 1);
    let (vx, vy) = make(64, 2);
    let mut model = Model::new(gpu, spec, 5).unwrap();
    model.set_trainable_from(2); // freeze the first conv
    let frozen_before = read(gpu, model.params()[0].1);
    let trainable_before = read(gpu, model.params()[2].1);
    let opt = Optimizer::rmsprop(3e-3);
    let bs = 32;
    for epoch in 0..12u64 {
        for b in 0..tx.len() / (bs * 144) {
            let x = upload(gpu, &[bs, 12, 12, 1], &tx[b * bs * 144..(b + 1) * bs * 144]);
            let y = upload(gpu, &[bs, 1], &ty[b * bs..(b + 1) * bs]);
            model
                .train_step(gpu, &opt, &x, &y, epoch * 100 + b as u64)
                .unwrap();
        }
    }
    let out = model
        .evaluate_batch(
            gpu,
            &upload(gpu, &[64, 12, 12, 1], &vx),
            &upload(gpu, &[64, 1], &vy),
        )
        .unwrap();
    let (loss, acc) = out.read(gpu).unwrap();
    assert!(acc >= 0.95, "validation accuracy {acc} (loss {loss})");
    assert_eq!(
        read(gpu, model.params()[0].1),
        frozen_before,
        "frozen kernel is bit-identical"
    );
    assert_ne!(
        read(gpu, model.params()[2].1),
        trainable_before,
        "trainable kernel moved"
    );
    assert_eq!(
        model.layers_with_optimizer_state(),
        vec![2, 5, 7],
        "optimizer state only for trainable layers with weights"
    );
}
