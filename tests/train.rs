//! The training loop: a run folder with history and checkpoints, checkpoint round trips and
//! rejection of bad files, the non-finite loss guard, and early stopping.

mod common;

use std::sync::Arc;

use cnn_wgpu::data::dataset::MemoryDataset;
use cnn_wgpu::data::{Image, LabelKind, Loader, LoaderConfig, Preprocessing};
use cnn_wgpu::model::spec::{conv, dense, Activation, LayerKind, Sequential};
use cnn_wgpu::model::{Model, ModelSpec};
use cnn_wgpu::ops::optim::Optimizer;
use cnn_wgpu::ops::Padding;
use cnn_wgpu::train::{self, checkpoint, EarlyStopping, FitConfig, TrainError};
use common::*;

/// Bright square top-left (class 1) vs bottom-right (class 0) on noise, 10x10 gray.
fn squares(n: usize, seed: u64) -> MemoryDataset {
    let noise = rand_vec(n * 100, seed);
    let images = (0..n)
        .map(|i| {
            let class = i % 2;
            let data = (0..100)
                .map(|k| {
                    let (r, c) = (k / 10, k % 10);
                    let inside = if class == 1 {
                        r < 5 && c < 5
                    } else {
                        r >= 5 && c >= 5
                    };
                    let v = if inside { 200.0 } else { 40.0 } + 30.0 * noise[i * 100 + k];
                    v.clamp(0.0, 255.0) as u8
                })
                .collect();
            Image {
                h: 10,
                w: 10,
                c: 1,
                data,
            }
        })
        .collect();
    MemoryDataset {
        images,
        classes: (0..n).map(|i| i % 2).collect(),
        class_names: vec!["br".into(), "tl".into()],
        labels: LabelKind::Binary,
        name: format!("squares{seed}"),
    }
}

fn net() -> ModelSpec {
    Sequential::new("squares-net", &[10, 10, 1])
        .push(conv(4, 3, Padding::Same, Activation::Relu))
        .push(LayerKind::MaxPool2d { pool: 2 })
        .push(LayerKind::Flatten)
        .push(dense(8, Activation::Relu))
        .push(dense(1, Activation::Sigmoid))
        .build()
}

fn loaders(seed: u64) -> (Loader, Loader) {
    let train = Loader::new(
        Arc::new(squares(96, 1)),
        LoaderConfig::training(16, seed, Preprocessing::Rescale, None),
    )
    .unwrap();
    let val = Loader::new(
        Arc::new(squares(32, 2)),
        LoaderConfig::evaluation(16, Preprocessing::Rescale),
    )
    .unwrap();
    (train, val)
}

#[test]
fn fit_writes_history_and_checkpoints_that_load_back() {
    let gpu = gpu_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let (train, val) = loaders(7);
    let mut model = Model::new(gpu, net(), 3).unwrap();
    let mut cfg = FitConfig::new(6, Optimizer::rmsprop(3e-3), 11);
    cfg.out = Some(tmp.path().to_path_buf());
    cfg.progress = false;
    let history = train::fit(gpu, &mut model, &train, Some(&val), &cfg).unwrap();
    assert_eq!(history.len(), 6);
    let last = history.last().unwrap();
    assert!(last.val_accuracy.unwrap() >= 0.9, "{history:?}");
    assert!(history[0].loss > last.loss, "training loss falls");

    let csv = std::fs::read_to_string(tmp.path().join("history.csv")).unwrap();
    assert!(csv.starts_with("epoch,loss,accuracy,val_loss,val_accuracy,lr,seconds\n"));
    assert_eq!(csv.lines().count(), 7);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("history.json")).unwrap())
            .unwrap();
    assert_eq!(json.as_array().unwrap().len(), 6);

    // last.safetensors holds this model exactly, with its spec and optimizer state.
    let path = tmp.path().join("last.safetensors");
    assert_eq!(checkpoint::read_spec(&path).unwrap(), net());
    let mut copy = Model::new(gpu, net(), 99).unwrap();
    checkpoint::load_params(gpu, &mut copy, &path).unwrap();
    for ((n, a, _), (_, b, _)) in model.params().iter().zip(copy.params().iter()) {
        assert_eq!(read(gpu, a), read(gpu, b), "{n} round-trips");
    }
    let st_bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&st_bytes).unwrap();
    assert!(st
        .names()
        .iter()
        .any(|n| n.starts_with("optimizer.conv2d.kernel.slot0")));
    assert!(tmp.path().join("best.safetensors").is_file());
    let curves = image::open(tmp.path().join("curves.png")).unwrap();
    assert_eq!((curves.width(), curves.height()), (1200, 480));
    if let Some(keep) = std::env::var_os("CNN_WGPU_KEEP_CURVES") {
        std::fs::copy(tmp.path().join("curves.png"), keep).unwrap();
    }
    let (vl, va) = train::evaluate(gpu, &copy, &val).unwrap();
    assert!(
        (va - last.val_accuracy.unwrap()).abs() < 1e-9
            && (vl - last.val_loss.unwrap()).abs() < 1e-6
    );

    // A new run into the same folder is refused before anything is written; resuming and
    // overwriting at once is a contradiction; overwriting on purpose starts afresh.
    let last_bytes = std::fs::read(&path).unwrap();
    let mut again = FitConfig::new(1, Optimizer::rmsprop(3e-3), 11);
    again.out = Some(tmp.path().to_path_buf());
    again.progress = false;
    let err = train::fit(gpu, &mut model, &train, Some(&val), &again).unwrap_err();
    assert!(
        matches!(&err, TrainError::RunExists { found, .. } if found.contains("last.safetensors")),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        last_bytes,
        "the run is untouched"
    );
    again.resume = true;
    again.overwrite = true;
    let err = train::fit(gpu, &mut model, &train, Some(&val), &again).unwrap_err();
    assert!(err.to_string().contains("--overwrite"), "{err}");
    again.resume = false;
    let history = train::fit(gpu, &mut model, &train, Some(&val), &again).unwrap();
    assert_eq!(history.len(), 1);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("history.json")).unwrap())
            .unwrap();
    assert_eq!(json.as_array().unwrap().len(), 1, "replaced, not appended");
}

#[test]
fn bad_checkpoints_are_rejected_naming_the_tensor() {
    let gpu = gpu_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let model = Model::new(gpu, net(), 3).unwrap();
    let path = tmp.path().join("m.safetensors");
    checkpoint::save(gpu, &model, &path, &[]).unwrap();
    let bytes = std::fs::read(&path).unwrap();

    // Truncated.
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let mut m = Model::new(gpu, net(), 3).unwrap();
    let err = checkpoint::load_params(gpu, &mut m, &path)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("m.safetensors") && err.contains("truncated"),
        "{err}"
    );

    // Another model: dense is (196, 8) there, (100, 8)-ish here.
    let other = Sequential::new("other", &[10, 10, 1])
        .push(conv(4, 3, Padding::Valid, Activation::Relu))
        .push(LayerKind::Flatten)
        .push(dense(8, Activation::Relu))
        .push(dense(1, Activation::Sigmoid))
        .build();
    let om = Model::new(gpu, other, 1).unwrap();
    checkpoint::save(gpu, &om, &path, &[]).unwrap();
    let err = checkpoint::load_params(gpu, &mut m, &path)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("dense.kernel") && err.contains("[256, 8]") && err.contains("[100, 8]"),
        "{err}"
    );

    // Missing tensor.
    let small = Sequential::new("small", &[10, 10, 1])
        .push(LayerKind::Flatten)
        .push(dense(1, Activation::Sigmoid))
        .build();
    checkpoint::save(gpu, &Model::new(gpu, small, 1).unwrap(), &path, &[]).unwrap();
    let err = checkpoint::load_params(gpu, &mut m, &path)
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing tensor conv2d.kernel"), "{err}");

    // A failed write keeps the earlier good checkpoint.
    checkpoint::save(gpu, &model, &path, &[]).unwrap();
    let good = std::fs::read(&path).unwrap();
    let blocked = tmp.path().join("dir.safetensors");
    std::fs::create_dir_all(&blocked).unwrap();
    assert!(
        checkpoint::save(gpu, &model, &blocked, &[]).is_err(),
        "renaming over a folder fails"
    );
    assert_eq!(std::fs::read(&path).unwrap(), good);
}

/// A header that lies about its offsets is refused with the name of the tensor at fault, for each
/// way the offsets can disagree: with dtype and shape, with the tensor before, with the file's
/// end (short or long).
#[test]
fn lying_checkpoint_headers_name_the_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("lying.safetensors");
    // Each case: a (2,3) F32 tensor `a` (24 bytes) then a (3,) F32 tensor `b` (12 bytes).
    let cases: [(&[RawEntry], usize, &str, &[&str]); 4] = [
        (
            &[("a", "F32", &[2, 3], [0, 20]), ("b", "F32", &[3], [20, 32])],
            32,
            "size",
            &["tensor a", "20 bytes", "needs 24 bytes"],
        ),
        (
            &[("a", "F32", &[2, 3], [0, 24]), ("b", "F32", &[3], [28, 40])],
            40,
            "gap",
            &[
                "tensor b",
                "starts at data byte 28",
                "a before it ends at 24",
            ],
        ),
        (
            &[("a", "F32", &[2, 3], [0, 24]), ("b", "F32", &[3], [24, 36])],
            30,
            "short file",
            &[
                "tensor b",
                "ends at data byte 36",
                "only 30 bytes",
                "truncated",
            ],
        ),
        (
            &[("a", "F32", &[2, 3], [0, 24]), ("b", "F32", &[3], [24, 36])],
            50,
            "long file",
            &["last tensor, b", "holds 50", "extra bytes"],
        ),
    ];
    for (entries, data_len, what, wanted) in cases {
        std::fs::write(&path, raw_safetensors(entries, data_len)).unwrap();
        let err = match checkpoint::Checkpoint::read(&path) {
            Ok(_) => panic!("{what}: a lying header was accepted"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("lying.safetensors"), "{what}: {err}");
        for w in wanted {
            assert!(err.contains(w), "{what}: wanted {w:?} in {err}");
        }
    }
    // The honest version of the same file reads.
    std::fs::write(
        &path,
        raw_safetensors(
            &[("a", "F32", &[2, 3], [0, 24]), ("b", "F32", &[3], [24, 36])],
            36,
        ),
    )
    .unwrap();
    let ok = checkpoint::Checkpoint::read(&path).unwrap();
    assert_eq!(ok.tensors["a"].0, vec![2, 3]);
}

/// The side files never cost a checkpoint: a curves.png that cannot be written (here a folder
/// of that name) is a warning and the epoch's checkpoints are still saved; temporaries a kill
/// left in the middle of an atomic write are removed at the next start.
#[test]
fn side_files_never_cost_a_checkpoint() {
    let gpu = gpu_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("curves.png")).unwrap();
    for stale in ["last.safetensors.tmp", "history.json.tmp", "curves.png.tmp"] {
        std::fs::write(tmp.path().join(stale), b"half a file").unwrap();
    }
    let (train, val) = loaders(2);
    let mut model = Model::new(gpu, net(), 3).unwrap();
    let mut cfg = FitConfig::new(2, Optimizer::rmsprop(3e-3), 1);
    cfg.out = Some(tmp.path().to_path_buf());
    cfg.progress = false;
    let history = train::fit(gpu, &mut model, &train, Some(&val), &cfg).unwrap();
    assert_eq!(history.len(), 2);
    checkpoint::read_spec(&tmp.path().join("last.safetensors")).unwrap();
    checkpoint::read_spec(&tmp.path().join("best.safetensors")).unwrap();
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "stale temporaries left: {left:?}");
}

#[test]
fn non_finite_loss_stops_with_the_epoch_and_step() {
    let gpu = gpu_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let (train, val) = loaders(1);
    let mut model = Model::new(gpu, net(), 3).unwrap();
    let mut cfg = FitConfig::new(3, Optimizer::rmsprop(1e-3), 1);
    cfg.out = Some(tmp.path().to_path_buf());
    cfg.progress = false;
    train::fit(gpu, &mut model, &train, Some(&val), &cfg).unwrap();
    let good = std::fs::read(tmp.path().join("last.safetensors")).unwrap();
    // Poison the output bias (a NaN before a ReLU could be clamped away): every logit is NaN.
    let (name, t, _) = model.params().into_iter().last().unwrap();
    let mut w = read(gpu, t);
    w[0] = f32::NAN;
    model.set_param(gpu, &name, &w).unwrap();
    // A new run over the finished one (on purpose): it fails at its first step, before it
    // saved a trained state, and says so instead of promising a good checkpoint.
    cfg.overwrite = true;
    let err = train::fit(gpu, &mut model, &train, Some(&val), &cfg).unwrap_err();
    assert!(
        matches!(
            err,
            TrainError::NonFinite {
                epoch: 1,
                step: 1,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("lower learning rate")
            && err.to_string().contains("had saved no trained state yet"),
        "{err}"
    );
    // --overwrite replaced the earlier run at the start: its history is gone, and
    // last.safetensors is the new run's starting state (the poisoned bias), ready for --resume.
    assert!(!tmp.path().join("history.json").exists());
    assert_ne!(
        std::fs::read(tmp.path().join("last.safetensors")).unwrap(),
        good
    );
    let start = checkpoint::Checkpoint::read(&tmp.path().join("last.safetensors")).unwrap();
    assert!(start.tensors[&name].1[0].is_nan());
    assert_eq!(start.meta["epoch"], "0");
    // Loading it anywhere (resume, evaluate, predict) is refused, naming tensor and element.
    let err = start
        .load_params(gpu, &mut Model::new(gpu, net(), 3).unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&name) && err.contains("NaN at element 0") && err.contains("finite"),
        "{err}"
    );

    // A learning rate that is not a finite number >= 0 is refused before the first step.
    for lr in [-1.0, f32::NAN, f32::INFINITY] {
        let mut bad = FitConfig::new(1, Optimizer::rmsprop(lr), 1);
        bad.progress = false;
        let err = train::fit(gpu, &mut model, &train, Some(&val), &bad).unwrap_err();
        assert!(err.to_string().contains("learning rate"), "lr {lr}: {err}");
    }
}

/// Training labels are the validation labels flipped, so the better the model fits its
/// training set the worse it does on validation: val_loss rises after its best epoch, early
/// stopping ends the run `patience` epochs later, and the weights it leaves are the best
/// epoch's, seen by evaluating them again.
#[test]
fn early_stopping_ends_the_run_and_restores_the_best_weights() {
    let gpu = gpu_or_skip!();
    let mut flipped = squares(96, 1);
    for c in &mut flipped.classes {
        *c = 1 - *c;
    }
    let train = Loader::new(
        Arc::new(flipped),
        LoaderConfig::training(16, 3, Preprocessing::Rescale, None),
    )
    .unwrap();
    let val = Loader::new(
        Arc::new(squares(32, 2)),
        LoaderConfig::evaluation(16, Preprocessing::Rescale),
    )
    .unwrap();
    let patience = 2;
    for restore in [true, false] {
        let mut model = Model::new(gpu, net(), 3).unwrap();
        let mut cfg = FitConfig::new(10, Optimizer::rmsprop(3e-3), 1);
        cfg.early_stopping = Some(EarlyStopping::new(patience, restore));
        cfg.progress = false;
        let history = train::fit(gpu, &mut model, &train, Some(&val), &cfg).unwrap();
        let losses: Vec<f64> = history.iter().map(|r| r.val_loss.unwrap()).collect();
        let best = (0..losses.len())
            .min_by(|&a, &b| losses[a].total_cmp(&losses[b]))
            .unwrap();
        assert_eq!(
            history.len(),
            best + 1 + patience,
            "stops {patience} epochs after the best: {losses:?}"
        );
        let last = *losses.last().unwrap();
        assert!(
            last > losses[best] * 1.01,
            "validation got worse: {losses:?}"
        );
        let (now, _) = train::evaluate(gpu, &model, &val).unwrap();
        let want = if restore { losses[best] } else { last };
        assert!(
            (now - want).abs() <= 1e-5 * want,
            "restore_best {restore}: the weights left give val_loss {now}, want {want} ({losses:?})"
        );
    }
}

/// Interrupt mid-epoch (as Ctrl-C does), resume from last.safetensors, and get exactly the
/// history of the uninterrupted run with the same seed (Adam, so the step count matters too;
/// dropout and augmentation draw from seeds that depend only on epoch and step).
#[test]
fn resume_gives_the_uninterrupted_history() {
    let gpu = gpu_or_skip!();
    let spec = Sequential::new("resume-net", &[10, 10, 1])
        .push(conv(4, 3, Padding::Same, Activation::Relu))
        .push(LayerKind::MaxPool2d { pool: 2 })
        .push(LayerKind::Flatten)
        .push(LayerKind::Dropout { rate: 0.3 })
        .push(dense(8, Activation::Relu))
        .push(dense(1, Activation::Sigmoid))
        .build();
    let train_loader = || {
        let cfg = LoaderConfig::training(
            16,
            21,
            Preprocessing::Rescale,
            Some(cnn_wgpu::data::Augment::book()),
        );
        Loader::new(Arc::new(squares(96, 1)), cfg).unwrap()
    };
    let val = Loader::new(
        Arc::new(squares(32, 2)),
        LoaderConfig::evaluation(16, Preprocessing::Rescale),
    )
    .unwrap();
    let config = |dir: &std::path::Path| {
        let mut c = FitConfig::new(3, Optimizer::adam(2e-3), 8);
        c.out = Some(dir.to_path_buf());
        c.progress = false;
        c.early_stopping = Some(EarlyStopping::new(5, false));
        c
    };
    let strip = |h: Vec<train::EpochRecord>| {
        h.into_iter()
            .map(|r| {
                (
                    r.epoch,
                    r.loss,
                    r.accuracy,
                    r.val_loss,
                    r.val_accuracy,
                    r.lr,
                )
            })
            .collect::<Vec<_>>()
    };

    let whole = tempfile::tempdir().unwrap();
    let mut model = Model::new(gpu, spec.clone(), 4).unwrap();
    let straight = strip(
        train::fit(
            gpu,
            &mut model,
            &train_loader(),
            Some(&val),
            &config(whole.path()),
        )
        .unwrap(),
    );

    let cut = tempfile::tempdir().unwrap();
    let mut first = Model::new(gpu, spec.clone(), 4).unwrap();
    let mut c = config(cut.path());
    c.stop_after_steps = Some(8); // 6 steps per epoch: stops in epoch 2 after its 2nd step
    let err = train::fit(gpu, &mut first, &train_loader(), Some(&val), &c).unwrap_err();
    assert!(
        matches!(
            err,
            TrainError::Interrupted {
                epoch: 2,
                step: 2,
                requested: true,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("--resume"), "{err}");

    // A fresh process: a new model with other initial weights, resumed from the run folder.
    let mut resumed = Model::new(gpu, spec, 99).unwrap();
    let mut c = config(cut.path());
    c.resume = true;
    let history = strip(train::fit(gpu, &mut resumed, &train_loader(), Some(&val), &c).unwrap());
    assert_eq!(
        history, straight,
        "resumed history equals the uninterrupted one"
    );
    for ((n, a, _), (_, b, _)) in model.params().iter().zip(resumed.params().iter()) {
        assert_eq!(read(gpu, a), read(gpu, b), "{n} ends the same");
    }
}

#[test]
fn checkpoint_with_a_wrong_dtype_is_rejected() {
    let gpu = gpu_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("half.safetensors");
    let data = vec![0u8; 2 * 36];
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F16, vec![3, 3, 1, 4], &data)
            .unwrap();
    std::fs::write(
        &path,
        safetensors::serialize([("conv2d.kernel", view)], None).unwrap(),
    )
    .unwrap();
    let mut m = Model::new(gpu, net(), 1).unwrap();
    let err = checkpoint::load_params(gpu, &mut m, &path)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("conv2d.kernel") && err.contains("F16") && err.contains("F32"),
        "{err}"
    );
}

/// A run folder where a file stands, or under a file, is refused by name before anything is
/// written; a folder that does not exist yet, however deep, is made and locked.
#[test]
fn a_file_in_place_of_the_run_folder_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("a-file");
    std::fs::write(&file, b"kept").unwrap();
    for dir in [file.clone(), file.join("run"), file.join("runs/stage")] {
        let err = train::check_run_folder(&dir, false, false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("{} is a file, not a folder", file.display())),
            "{err}"
        );
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"kept");
    let deeper = tmp.path().join("new/deeper/run");
    let _lock = train::check_run_folder(&deeper, false, false).unwrap();
    assert!(deeper.join(train::LOCK_FILE).is_file());
}
