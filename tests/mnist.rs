//! The lecture notes' MNIST convnet on the shared digits: trained on the first 8,000 test digits,
//! validated on the last 2,000. The full 5-epoch run is in BENCHMARKS.md; CI runs 2 epochs.

mod common;

use std::sync::Arc;

use cnn_wgpu::data::{mnist, Loader, LoaderConfig, Preprocessing};
use cnn_wgpu::model::{zoo, Model};
use cnn_wgpu::ops::optim::Optimizer;
use cnn_wgpu::train::{self, FitConfig};

#[test]
fn mnist_convnet_reaches_97_percent() {
    let Some(shared) = common::shared(&[
        "data/mnist/t10k-images-idx3-ubyte.gz",
        "data/mnist/t10k-labels-idx1-ubyte.gz",
    ]) else {
        return;
    };
    let dir = shared.join("data/mnist");
    let gpu = gpu_or_skip!();
    let (tr, va) = mnist::train_validation(&dir).unwrap();
    assert_eq!((tr.images.len(), va.images.len()), (8000, 2000));
    let train_loader = Loader::new(
        Arc::new(tr),
        LoaderConfig::training(64, 1, Preprocessing::Rescale, None),
    )
    .unwrap();
    let val_loader = Loader::new(
        Arc::new(va),
        LoaderConfig::evaluation(250, Preprocessing::Rescale),
    )
    .unwrap();
    let mut model = Model::new(gpu, zoo::mnist_convnet(), 1).unwrap();
    let mut cfg = FitConfig::new(2, Optimizer::rmsprop(1e-3), 1);
    cfg.progress = false;
    let history = train::fit(gpu, &mut model, &train_loader, Some(&val_loader), &cfg).unwrap();
    let acc = history.last().unwrap().val_accuracy.unwrap();
    assert!(
        acc >= 0.97,
        "validation accuracy after 2 epochs: {acc} ({history:?})"
    );
}
