//! Models: the zoo's Keras parameter totals, freezing, the executor's gradients against finite
//! differences, and training that learns while frozen layers stay untouched.

mod common;

use std::collections::HashMap;

use cnn_wgpu::model::spec::{conv, dense, Activation, LayerKind, Sequential};
use cnn_wgpu::model::{zoo, Model, ModelSpec, Pass};
use cnn_wgpu::ops::dropout;
use cnn_wgpu::ops::optim::Optimizer;
use cnn_wgpu::ops::Padding;
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

/// Sizes past what the adapter can hold are refused naming the layer and tensor before any of
/// it is allocated: at 4000x4000 the small convnet's dense kernel alone is 16 GB, which used to
/// abort the process drawing its initial weights on the host.
#[test]
fn models_larger_than_the_adapter_allows_are_refused_naming_the_layer() {
    let gpu = gpu_or_skip!();
    let limit = gpu.limits().max_buffer_size;
    let err = Model::new(gpu, zoo::small_convnet(4000, false), 0)
        .err()
        .expect("a 16 GB kernel is refused");
    let text = err.to_string();
    // The first conv's output for one sample, 3998 x 3998 x 32 floats, fits the adapter's real
    // limit, so the dense kernel is named; under WebGPU's 256 MiB it is the conv.
    let first_conv = 3998u64 * 3998 * 32 * 4;
    let named = if limit >= first_conv {
        "dense.kernel"
    } else {
        "layer conv2d"
    };
    assert!(
        text.contains(named) && text.contains(&limit.to_string()) && text.contains("--image-size"),
        "{text}"
    );
    let err = Model::new(gpu, zoo::vgg16_base(100_000), 0)
        .err()
        .expect("a 2.5 TB activation is refused");
    assert!(err.to_string().contains("block1_conv1"), "{err}");
}

/// A NaN in a weights file would spread through every activation after it without a word:
/// the loader refuses it, naming the tensor and the element.
#[test]
fn non_finite_weights_are_refused_naming_the_tensor() {
    let gpu = gpu_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("nan.safetensors");
    let mut kernel = vec![0.01f32; 3 * 3 * 3 * 64];
    kernel[17] = f32::NAN;
    let bias = vec![0.0f32; 64];
    let views = [
        ("block1_conv1.kernel", vec![3, 3, 3, 64], &kernel),
        ("block1_conv1.bias", vec![64], &bias),
    ]
    .map(|(n, shape, data)| {
        let view = safetensors::tensor::TensorView::new(
            safetensors::Dtype::F32,
            shape,
            bytemuck::cast_slice(data),
        )
        .unwrap();
        (n, view)
    });
    safetensors::serialize_to_file(views, None, &path).unwrap();
    let mut model = Model::new(gpu, zoo::vgg16_base(32), 0).unwrap();
    let Err(err) = cnn_wgpu::model::weights::load_vgg16(gpu, &mut model, &path) else {
        panic!("weights with a NaN were loaded");
    };
    let err = err.to_string();
    assert!(
        err.contains("block1_conv1.kernel") && err.contains("NaN") && err.contains("element 17"),
        "{err}"
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

fn tiny() -> ModelSpec {
    Sequential::new("tiny", &[8, 8, 2])
        .push(conv(3, 3, Padding::Same, Activation::Relu))
        .push(LayerKind::MaxPool2d { pool: 2 })
        .push(conv(4, 3, Padding::Valid, Activation::Relu))
        .push(LayerKind::Flatten)
        .push(dense(5, Activation::Relu))
        .push(dense(1, Activation::Sigmoid))
        .build()
}

/// Strided convolutions with channel counts the subgroup kernels take, dropout, and a softmax
/// head over 3 classes.
fn strided_softmax() -> ModelSpec {
    Sequential::new("strided-softmax", &[9, 7, 3])
        .push(LayerKind::Conv2d {
            filters: 8,
            kernel: (3, 3),
            stride: 2,
            padding: Padding::Same,
            activation: Activation::Relu,
        })
        .push(conv(4, 2, Padding::Valid, Activation::Relu))
        .push(LayerKind::Flatten)
        .push(LayerKind::Dropout { rate: 0.3 })
        .push(dense(3, Activation::Softmax))
        .build()
}

/// The 1-D layers: Conv1D, MaxPooling1D, GlobalMaxPooling1D, dropout, a sigmoid head.
fn sequence_sigmoid() -> ModelSpec {
    Sequential::new("sequence-sigmoid", &[13, 3])
        .push(LayerKind::Conv1d {
            filters: 8,
            kernel: 3,
            padding: Padding::Same,
            activation: Activation::Relu,
        })
        .push(LayerKind::MaxPool1d { pool: 2 })
        .push(LayerKind::Conv1d {
            filters: 5,
            kernel: 2,
            padding: Padding::Valid,
            activation: Activation::Relu,
        })
        .push(LayerKind::Dropout { rate: 0.5 })
        .push(LayerKind::GlobalMaxPool1d)
        .push(dense(1, Activation::Sigmoid))
        .build()
}

/// A 1-D stack into a softmax head of 4 classes, with a linear Conv1D before the global pool.
fn sequence_softmax() -> ModelSpec {
    Sequential::new("sequence-softmax", &[10, 4])
        .push(LayerKind::Conv1d {
            filters: 4,
            kernel: 3,
            padding: Padding::Valid,
            activation: Activation::Relu,
        })
        .push(LayerKind::MaxPool1d { pool: 2 })
        .push(LayerKind::Conv1d {
            filters: 6,
            kernel: 2,
            padding: Padding::Same,
            activation: Activation::Linear,
        })
        .push(LayerKind::GlobalMaxPool1d)
        .push(dense(6, Activation::Relu))
        .push(dense(4, Activation::Softmax))
        .build()
}

/// Sigmoid and softmax on layers that are not the output, on a convolution (softmax over the
/// channels) and on a dense layer: the executor once ran them as linear.
fn hidden_sigmoid_softmax() -> ModelSpec {
    Sequential::new("hidden-sigmoid-softmax", &[5, 6, 2])
        .push(conv(4, 3, Padding::Same, Activation::Softmax))
        .push(conv(3, 2, Padding::Valid, Activation::Sigmoid))
        .push(LayerKind::Flatten)
        .push(dense(5, Activation::Softmax))
        .push(dense(1, Activation::Sigmoid))
        .build()
}

/// Labels for `n` samples of a head with `classes` outputs: one-hot rows for a softmax head,
/// alternating 0/1 for a sigmoid unit.
fn labels(n: usize, classes: usize) -> Vec<f32> {
    (0..n * classes)
        .map(|j| {
            let (b, k) = (j / classes, j % classes);
            let on = if classes == 1 {
                b % 2 == 1
            } else {
                k == (b + 1) % classes
            };
            f32::from(u8::from(on))
        })
        .collect()
}

/// The executor's gradient of the mean loss with respect to every parameter, on every kernel
/// family, element by element against central differences (h = 1e-6) of the f64 CPU model at
/// the same f32 parameters, dropout masks and input.
///
/// Bound: the finite differences are exact to ~1e-10 here (truncation h^2 times the third
/// derivative ~ 1e-12, rounding 1e-16 / h), so the error is the GPU's f32 rounding: every
/// gradient element is a sum of at most a few hundred products through a few layers, each
/// rounding at 6e-8 relative to its terms, which are at most about the tensor's largest gradient
/// element: 1e-4 of that largest element plus 1e-3 relative leaves a margin of 10x. An element
/// whose one-sided differences disagree sits on a ReLU or max-pool kink, where no derivative
/// exists; those are skipped and counted.
#[test]
fn executor_gradients_match_finite_differences() {
    gpu_or_skip!();
    let h = 1e-6;
    let mut checked = 0;
    let mut kinks = 0;
    for (family, gpu) in kernel_families() {
        for (m, spec) in [
            tiny(),
            strided_softmax(),
            sequence_sigmoid(),
            sequence_softmax(),
            hidden_sigmoid_softmax(),
        ]
        .into_iter()
        .enumerate()
        {
            let model = Model::new(gpu, spec.clone(), 3 + m as u64).unwrap();
            let n = 3;
            let classes = *model.shapes().last().unwrap().last().unwrap();
            let mut xshape = vec![n];
            xshape.extend(&spec.input);
            let xv = rand_vec(xshape.iter().product(), 40 + m as u64);
            let yv = labels(n, classes);
            let x = upload(gpu, &xshape, &xv);
            let y = upload(gpu, &[n, classes], &yv);
            let seed = 11 + m as u64;
            let fwd = model
                .forward(gpu, &x, Pass::Training { dropout_seed: seed })
                .unwrap();
            let logits = read(gpu, &fwd.logits);
            let lo = cnn_wgpu::ops::loss::loss_and_grad(
                gpu,
                spec.loss().unwrap(),
                &fwd.logits,
                &y,
                cnn_wgpu::ops::loss::Clip::None,
            )
            .unwrap();
            let grads = model.backward(gpu, fwd, lo.grad).unwrap();

            // Each dropout layer's mask: the dropout kernel on ones, with the seed the executor
            // gives layer i of a step (mix(step seed, i)).
            let shapes = model.shapes().to_vec();
            let mut masks = HashMap::new();
            for (i, layer) in spec.layers.iter().enumerate() {
                if let LayerKind::Dropout { rate } = layer.kind {
                    let len = n * shapes[i].iter().product::<usize>();
                    let ones = upload(gpu, &[len], &vec![1.0; len]);
                    let layer_seed = cnn_wgpu::data::mix(seed, i as u64);
                    let mask = dropout::dropout(gpu, &ones, rate, layer_seed).unwrap();
                    masks.insert(i, to_f64(&read(gpu, &mask)));
                }
            }
            let mut params: Values = model
                .params()
                .into_iter()
                .map(|(name, t, _)| (name, to_f64(&read(gpu, t))))
                .collect();
            let (xd, yd) = (to_f64(&xv), to_f64(&yv));
            assert_close(
                &format!("{family}: {} logits", spec.name),
                &logits,
                &cpu_logits(&spec, &params, &masks, &xd, n),
                1e-4,
                1e-5,
            );

            let mut tensors = 0;
            for (i, g) in grads.iter().enumerate() {
                let Some(g) = g else { continue };
                for (gt, part) in g.iter().zip(["kernel", "bias"]) {
                    let name = format!("{}.{part}", spec.layers[i].name);
                    let analytic = read(gpu, gt);
                    let w0 = params[&name].clone();
                    let mut loss_at = |j: usize, delta: f64| {
                        params.get_mut(&name).unwrap()[j] = w0[j] + delta;
                        let l = cpu_loss(&cpu_logits(&spec, &params, &masks, &xd, n), &yd, n);
                        params.get_mut(&name).unwrap()[j] = w0[j];
                        l
                    };
                    let l0 = loss_at(0, 0.0);
                    let mut numeric = Vec::with_capacity(w0.len());
                    let mut smooth = Vec::with_capacity(w0.len());
                    for j in 0..w0.len() {
                        let (up, down) = (loss_at(j, h), loss_at(j, -h));
                        let (right, left) = ((up - l0) / h, (l0 - down) / h);
                        numeric.push((up - down) / (2.0 * h));
                        smooth.push((right - left).abs() <= 1e-6 * (1.0 + right.abs()));
                    }
                    let scale = numeric.iter().fold(0.0f64, |a, v| a.max(v.abs()));
                    let (atol, rtol) = (1e-4 * scale + 1e-9, 1e-3);
                    for j in 0..w0.len() {
                        if !smooth[j] {
                            kinks += 1;
                            continue;
                        }
                        let (a, want) = (f64::from(analytic[j]), numeric[j]);
                        assert!(
                            a.is_finite() && (a - want).abs() <= atol + rtol * want.abs(),
                            "{family}: {} {name}[{j}]: analytic {a}, finite differences {want} (bound {atol} + {rtol} x |want|; largest element {scale})",
                            spec.name
                        );
                        checked += 1;
                    }
                    tensors += 1;
                }
            }
            let with_weights = spec
                .layers
                .iter()
                .filter(|l| {
                    spec.layer_index(&l.name)
                        .is_some_and(|i| !spec.param_shapes(i).unwrap().is_empty())
                })
                .count();
            assert_eq!(
                tensors,
                2 * with_weights,
                "{}: a kernel and a bias gradient for every layer with weights",
                spec.name
            );
        }
    }
    assert!(
        kinks * 50 < checked,
        "{kinks} elements on kinks against {checked} checked: the check saw too little"
    );
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

/// A batch whose layer outputs pass the adapter's largest buffer is refused before anything
/// runs, naming the first such layer and the largest batch that fits; that batch is accepted.
#[test]
fn a_batch_no_buffer_holds_is_refused_naming_the_layer() {
    let Some(gpu) = gpu() else { return };
    let model = Model::new(gpu, zoo::small_convnet(150, false), 0).unwrap();
    let limit = gpu.limits().max_buffer_size;
    let fits = model.largest_batch(gpu);
    // What "fits" means: every layer's output for `fits` samples is within one buffer, and the
    // first layer's output that is not, for one sample more, is the one the error names.
    let bytes = |n: usize, shape: &[usize]| n as u64 * 4 * shape.iter().product::<usize>() as u64;
    assert!(model.shapes().iter().all(|s| bytes(fits, s) <= limit));
    let first = model
        .shapes()
        .iter()
        .position(|s| bytes(fits + 1, s) > limit)
        .expect("one more sample passes some layer's buffer");
    model.check_batch(gpu, fits).unwrap();
    let err = model.check_batch(gpu, fits + 1).unwrap_err().to_string();
    let layer = &model.spec.layers[first].name;
    assert!(
        err.contains(&format!("layer {layer}'s output"))
            && err.contains(&format!("batches of up to {fits} fit")),
        "{err}"
    );
}

/// An image too small for a model's layers is refused with the least side that fits, derived
/// here by hand: VGG16's five 2x2 pools after `same` convolutions need floor(s / 2^5) >= 1, so
/// s >= 32; the small convnet's four (valid 3x3 conv, 2x2 pool) steps map s to
/// floor((s - 2) / 2), and four of them reach 1 from 46 (46 -> 22 -> 10 -> 4 -> 1) but not
/// from 45 (45 -> 21 -> 9 -> 3 -> 0).
#[test]
fn an_image_too_small_for_the_layers_names_the_least_side() {
    for (spec, least) in [
        (zoo::vgg16_classifier as fn(usize) -> ModelSpec, 32),
        (|s| zoo::small_convnet(s, false), 46),
    ] {
        spec(least).checked_shapes().unwrap();
        let small = spec(least - 1);
        let err = small.checked_shapes().unwrap_err().to_string();
        let side = least - 1;
        assert!(
            err.contains(&format!(
                "model {}: a {side}x{side} image is too small for its layers, {least}x{least} is the least it takes",
                small.name
            )),
            "{err}"
        );
    }
}

/// Under WebGPU's default limits (16 KiB of workgroup memory, 256 invocations, 128 MiB per
/// storage binding, 8 storage buffers per stage), as a browser gives a page, every zoo model
/// trains a step (a base without a loss runs forward), and the step gives what it gives on the
/// same adapter with its real limits:
/// the planner picks only configurations that fit, and they compute the same function.
#[test]
fn every_zoo_model_steps_under_webgpu_default_limits() {
    let Some(web) = open_with(|o| o.webgpu_limits = true) else {
        return;
    };
    let full = gpu_or_skip!();
    let l = web.limits();
    assert!(
        l.max_storage_buffers_per_shader_stage <= 8
            && l.max_compute_workgroup_storage_size <= 16384
            && l.max_compute_invocations_per_workgroup <= 256
            && l.max_storage_buffer_binding_size <= 128 << 20,
        "{l:?}"
    );
    let step = |gpu: &cnn_wgpu::Gpu, name: &str| -> (f32, Vec<Vec<f32>>) {
        // The least image side each takes: VGG16's five pools 32, convnet-180's five 3x3
        // convolutions and pools 78.
        let side = match name {
            "convnet-180" => 78,
            n if n.starts_with("vgg16") => 32,
            _ => 48,
        };
        let spec = zoo::by_name(name, Some(side), Some((40, 1))).unwrap();
        let mut model = Model::new(gpu, spec.clone(), 3).unwrap();
        let n = 2;
        let per: usize = spec.input.iter().product();
        let mut shape = vec![n];
        shape.extend_from_slice(&spec.input);
        let x = upload(gpu, &shape, &rand_vec(n * per, 7));
        let forward = read(gpu, &model.predict(gpu, &x).unwrap());
        if spec.loss().is_err() {
            // A base with no loss (vgg16-base): its forward pass.
            return (forward.iter().sum(), vec![forward]);
        }
        let units = forward.len() / n;
        let y: Vec<f32> = if units == 1 {
            vec![0.0, 1.0]
        } else {
            (0..n * units)
                .map(|i| f32::from(u8::from(i % units == (i / units) * 3 % units)))
                .collect()
        };
        let y = upload(gpu, &[n, units], &y);
        let out = model
            .train_step(gpu, &Optimizer::rmsprop(1e-4), &x, &y, 1)
            .unwrap();
        let (loss, _) = out.read_sums(gpu).unwrap();
        let params = model
            .params()
            .iter()
            .map(|(_, t, _)| read(gpu, t))
            .collect();
        (loss, params)
    };
    for name in zoo::NAMES {
        let (loss, params) = step(&web, name);
        let (want_loss, want_params) = step(full, name);
        assert!(
            loss.is_finite() && (loss - want_loss).abs() <= 1e-4 * want_loss.abs() + 1e-5,
            "{name}: loss {loss} under WebGPU's limits, {want_loss} under the adapter's"
        );
        for (got, want) in params.iter().zip(&want_params) {
            assert_close(name, got, &to_f64(want), 1e-4, 1e-5);
        }
    }
}
