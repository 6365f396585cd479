//! VGG16 with ImageNet weights against Keras: the golden activations of the shared fixture, from
//! its preprocessed input and end to end from the JPEG files; and the weight loader's namings,
//! dtypes and errors.

mod common;

use std::path::PathBuf;

use cnn_wgpu::data::{image_io, Preprocessing};
use cnn_wgpu::gpu::ConvAlgo;
use cnn_wgpu::model::weights::{self, Naming};
use cnn_wgpu::model::{zoo, Model};
use common::*;

/// The weights, the golden fixture and the three images it was computed from.
fn shared() -> Option<PathBuf> {
    common::shared(&[
        "weights/vgg16_notop.safetensors",
        "fixtures/vgg16_golden.safetensors",
        "data/cats_and_dogs_small/train/cats/cat.0.jpg",
        "data/cats_and_dogs_small/train/dogs/dog.0.jpg",
        "data/cats_and_dogs_small/train/cats/cat.1.jpg",
    ])
}

fn fixture(dir: &std::path::Path) -> Vec<u8> {
    std::fs::read(dir.join("fixtures/vgg16_golden.safetensors")).unwrap()
}

fn golden(bytes: &[u8], name: &str) -> (Vec<usize>, Vec<f32>) {
    let st = safetensors::SafeTensors::deserialize(bytes).unwrap();
    let t = st.tensor(name).unwrap();
    (t.shape().to_vec(), bytemuck::pod_collect_to_vec(t.data()))
}

/// max |a - b| / max |b|: the fixture's own "max_abs_over_max_ref" measure.
fn rel_max(a: &[f32], b: &[f32]) -> f64 {
    let num = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from((x - y).abs()))
        .fold(0.0, f64::max);
    let den = b.iter().map(|y| f64::from(y.abs())).fold(0.0, f64::max);
    num / den
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (a, b) = (to_f64(a), to_f64(b));
    dot(&a, &b) / (dot(&a, &a).sqrt() * dot(&b, &b).sqrt())
}

#[test]
fn vgg16_matches_keras_golden_activations() {
    let Some(dir) = shared() else { return };
    let gpu = gpu_or_skip!();
    let mut model = Model::new(gpu, zoo::vgg16_base(150), 0).unwrap();
    let loaded = weights::load_vgg16(
        gpu,
        &mut model,
        &dir.join("weights/vgg16_notop.safetensors"),
    )
    .unwrap();
    assert_eq!(
        (loaded.naming, loaded.preprocessing, loaded.tensors),
        (Naming::Keras, Preprocessing::Caffe, 26)
    );
    assert_eq!(loaded.preprocessing_source, "metadata");

    let fx = fixture(&dir);
    let (shape, input) = golden(&fx, "input");
    assert_eq!(shape, [3, 150, 150, 3]);
    let x = upload(gpu, &shape, &input);
    // block1_conv1 is stored for image 0 only.
    let (_, want) = golden(&fx, "block1_conv1");
    let got = read(gpu, &model.features(gpu, &x, "block1_conv1").unwrap());
    let r = rel_max(&got[..want.len()], &want);
    assert!(r <= 1e-3, "block1_conv1: max error / max value = {r}");
    for layer in ["block3_pool", "block5_pool"] {
        let (wshape, want) = golden(&fx, layer);
        let out = model.features(gpu, &x, layer).unwrap();
        assert_eq!(out.dims(), wshape.as_slice(), "{layer} shape");
        let r = rel_max(&read(gpu, &out), &want);
        assert!(r <= 1e-3, "{layer}: max error / max value = {r}");
    }

    // End to end from the JPEGs: our decode and antialiased resize, caffe preprocessing, the base.
    let (_, want) = golden(&fx, "block5_pool");
    let per = want.len() / 3;
    let files = [
        "train/cats/cat.0.jpg",
        "train/dogs/dog.0.jpg",
        "train/cats/cat.1.jpg",
    ];
    let mut px = Vec::new();
    for f in files {
        let img =
            image_io::load(&dir.join("data/cats_and_dogs_small").join(f), (150, 150), 3).unwrap();
        let mut v = img.to_f32();
        Preprocessing::Caffe.apply(&mut v, 3);
        px.extend(v);
    }
    let got = read(
        gpu,
        &model
            .features(gpu, &upload(gpu, &[3, 150, 150, 3], &px), "block5_pool")
            .unwrap(),
    );
    for (i, f) in files.iter().enumerate() {
        let (a, b) = (&got[i * per..(i + 1) * per], &want[i * per..(i + 1) * per]);
        let cos = cosine(a, b);
        let rel = (a
            .iter()
            .zip(b)
            .map(|(x, y)| f64::from(x - y).powi(2))
            .sum::<f64>()
            / b.iter().map(|y| f64::from(*y).powi(2)).sum::<f64>())
        .sqrt();
        eprintln!("{f}: cosine {cos:.6}, relative error {rel:.4}");
        // Measured: cosine >= 0.99987, relative error 0.7-1.6%; what is left comes from the JPEG
        // decoder (jpeg-decoder vs libjpeg-turbo, mean 0.09 levels).
        assert!(
            cos >= 0.999 && rel <= 0.02,
            "{f}: cosine {cos}, relative error {rel}"
        );
    }
}

/// Each convolution algorithm, forced on every 3x3 layer, keeps block5_pool within the golden
/// tolerance (Winograd's rounding grows with its transforms: F(4x4) most).
#[test]
fn vgg16_golden_holds_with_each_convolution_algorithm() {
    let Some(dir) = shared() else { return };
    gpu_or_skip!();
    let Some(gpu) = fresh_gpu() else { return };
    let mut model = Model::new(&gpu, zoo::vgg16_base(150), 0).unwrap();
    weights::load_vgg16(
        &gpu,
        &mut model,
        &dir.join("weights/vgg16_notop.safetensors"),
    )
    .unwrap();
    let fx = fixture(&dir);
    let (shape, input) = golden(&fx, "input");
    let x = upload(&gpu, &shape, &input);
    let (_, want) = golden(&fx, "block5_pool");
    for algo in [
        ConvAlgo::Direct,
        ConvAlgo::F2x2,
        ConvAlgo::F4x4,
        ConvAlgo::F6x6,
    ] {
        gpu.set_conv_algo(algo);
        let got = read(&gpu, &model.features(&gpu, &x, "block5_pool").unwrap());
        let r = rel_max(&got, &want);
        eprintln!(
            "{}: block5_pool max error / max value = {r:.2e}",
            algo.name()
        );
        assert!(
            r <= 1e-3,
            "{}: block5_pool: max error / max value = {r}",
            algo.name()
        );
    }
}

/// The same weights in torchvision naming (OIHW, f16, with classifier tensors and no metadata)
/// give the same network, up to f16 rounding, and ask for torch preprocessing.
#[test]
fn torchvision_naming_and_half_precision_load_the_same_network() {
    let Some(dir) = shared() else { return };
    let gpu = gpu_or_skip!();
    let keras_path = dir.join("weights/vgg16_notop.safetensors");
    let bytes = std::fs::read(&keras_path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    let torch_idx = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28];
    for (k, layer) in weights::vgg16_conv_names().iter().enumerate() {
        let kt = st.tensor(&format!("{layer}.kernel")).unwrap();
        let s = kt.shape().to_vec();
        let w: Vec<f32> = bytemuck::pod_collect_to_vec(kt.data());
        // HWIO -> OIHW
        let (h, wd, ci, co) = (s[0], s[1], s[2], s[3]);
        let mut oihw = vec![half::f16::ZERO; w.len()];
        for y in 0..h {
            for x in 0..wd {
                for i in 0..ci {
                    for o in 0..co {
                        oihw[((o * ci + i) * h + y) * wd + x] =
                            half::f16::from_f32(w[((y * wd + x) * ci + i) * co + o]);
                    }
                }
            }
        }
        owned.push((
            format!("features.{}.weight", torch_idx[k]),
            vec![co, ci, h, wd],
            bytemuck::cast_slice(&oihw).to_vec(),
        ));
        let b: Vec<f32> =
            bytemuck::pod_collect_to_vec(st.tensor(&format!("{layer}.bias")).unwrap().data());
        let b16: Vec<half::f16> = b.iter().map(|v| half::f16::from_f32(*v)).collect();
        owned.push((
            format!("features.{}.bias", torch_idx[k]),
            vec![co],
            bytemuck::cast_slice(&b16).to_vec(),
        ));
    }
    owned.push(("classifier.0.weight".into(), vec![2, 2], vec![0; 8]));
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = owned
        .iter()
        .map(|(n, s, d)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F16, s.clone(), d)
                    .unwrap(),
            )
        })
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let torch_path = tmp.path().join("model.safetensors");
    std::fs::write(&torch_path, safetensors::serialize(views, None).unwrap()).unwrap();

    let size = 32;
    let mut a = Model::new(gpu, zoo::vgg16_base(size), 0).unwrap();
    let mut b = Model::new(gpu, zoo::vgg16_base(size), 0).unwrap();
    weights::load_vgg16(gpu, &mut a, &keras_path).unwrap();
    let loaded = weights::load_vgg16(gpu, &mut b, &torch_path).unwrap();
    assert_eq!(
        (
            loaded.naming,
            loaded.preprocessing,
            loaded.preprocessing_source
        ),
        (Naming::Torchvision, Preprocessing::Torch, "naming")
    );
    assert_eq!(loaded.ignored, ["classifier.0.weight"]);
    let x = upload(
        gpu,
        &[2, size, size, 3],
        &rand_vec(2 * size * size * 3, 5)
            .iter()
            .map(|v| v * 100.0)
            .collect::<Vec<_>>(),
    );
    let ya = read(gpu, &a.features(gpu, &x, "block5_pool").unwrap());
    let yb = read(gpu, &b.features(gpu, &x, "block5_pool").unwrap());
    let cos = cosine(&ya, &yb);
    assert!(
        cos > 0.999,
        "f16 torchvision weights vs f32 Keras weights: cosine {cos}"
    );
}

#[test]
fn bad_weight_files_are_clear_errors() {
    let Some(dir) = shared() else { return };
    let gpu = gpu_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let mut model = Model::new(gpu, zoo::vgg16_base(32), 0).unwrap();
    let bytes = std::fs::read(dir.join("weights/vgg16_notop.safetensors")).unwrap();

    let p = tmp.path().join("truncated.safetensors");
    std::fs::write(&p, &bytes[..1000]).unwrap();
    let e = weights::load_vgg16(gpu, &mut model, &p)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("truncated.safetensors") && e.contains("not a valid safetensors"),
        "{e}"
    );

    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let keep: Vec<(String, safetensors::tensor::TensorView<'_>)> = st
        .tensors()
        .into_iter()
        .filter(|(n, _)| !n.starts_with("block5_conv3") && !n.starts_with("block2_conv1.bias"))
        .collect();
    let p = tmp.path().join("partial.safetensors");
    std::fs::write(&p, safetensors::serialize(keep, None).unwrap()).unwrap();
    let e = weights::load_vgg16(gpu, &mut model, &p)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("missing tensors")
            && e.contains("block2_conv1.bias")
            && e.contains("block5_conv3.kernel")
            && e.contains("block5_conv3.bias"),
        "{e}"
    );

    let data = vec![0u8; 4 * 3 * 3 * 3 * 8];
    let wrong =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![3, 3, 3, 8], &data)
            .unwrap();
    let p = tmp.path().join("shape.safetensors");
    std::fs::write(
        &p,
        safetensors::serialize([("block1_conv1.kernel", wrong)], None).unwrap(),
    )
    .unwrap();
    let e = weights::load_vgg16(gpu, &mut model, &p)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("block1_conv1.kernel")
            && e.contains("[3, 3, 3, 8]")
            && e.contains("[3, 3, 3, 64]"),
        "{e}"
    );

    let zeros = vec![0u8; 4 * 1728];
    let ints =
        safetensors::tensor::TensorView::new(safetensors::Dtype::I32, vec![3, 3, 3, 64], &zeros)
            .unwrap();
    let p = tmp.path().join("ints.safetensors");
    std::fs::write(
        &p,
        safetensors::serialize([("block1_conv1.kernel", ints)], None).unwrap(),
    )
    .unwrap();
    let e = weights::load_vgg16(gpu, &mut model, &p)
        .unwrap_err()
        .to_string();
    assert!(e.contains("I32") && e.contains("F32, F16 or BF16"), "{e}");

    let p = tmp.path().join("other.safetensors");
    let v =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![1], &[0u8; 4]).unwrap();
    std::fs::write(
        &p,
        safetensors::serialize([("resnet.fc.weight", v)], None).unwrap(),
    )
    .unwrap();
    let e = weights::load_vgg16(gpu, &mut model, &p)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("neither Keras") && e.contains("resnet.fc.weight"),
        "{e}"
    );
}

/// The weights loader names the tensor whose offsets lie, as the checkpoint reader does; needs no
/// shared data, only a header written by hand.
#[test]
fn a_lying_weights_header_names_the_tensor() {
    let gpu = gpu_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let mut model = Model::new(gpu, zoo::vgg16_base(32), 0).unwrap();
    let p = tmp.path().join("lying.safetensors");
    // block1_conv1.kernel is (3,3,3,64) F32 = 6912 bytes; the header claims 6900.
    std::fs::write(
        &p,
        raw_safetensors(
            &[
                ("block1_conv1.kernel", "F32", &[3, 3, 3, 64], [0, 6900]),
                ("block1_conv1.bias", "F32", &[64], [6900, 7156]),
            ],
            7156,
        ),
    )
    .unwrap();
    let e = weights::load_vgg16(gpu, &mut model, &p)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("lying.safetensors")
            && e.contains("tensor block1_conv1.kernel")
            && e.contains("needs 6912 bytes"),
        "{e}"
    );
}
