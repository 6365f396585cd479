//! The data pipeline: preparation, directory datasets, decoding of every input kind, bad files,
//! preprocessing, MNIST, augmentation geometry, and deterministic streaming.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cnn_wgpu::data::augment::Transform;
use cnn_wgpu::data::dataset::MemoryDataset;
use cnn_wgpu::data::{
    image_io, mnist, prepare, Augment, DataError, Dataset, DirectoryDataset, FillMode, Image,
    LabelKind, Loader, LoaderConfig, Preprocessing,
};

/// A small RGB test picture whose pixels encode their position.
fn picture(w: u32, h: u32, tint: u8) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x * 255 / w.max(1)) as u8, (y * 255 / h.max(1)) as u8, tint])
    })
}

fn write_dataset(root: &Path, per_class: usize) {
    for (class, tint) in [("dogs", 200u8), ("cats", 30u8)] {
        let dir = root.join(class);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..per_class {
            picture(20 + i as u32, 16, tint)
                .save(dir.join(format!("{}.{i}.png", &class[..3])))
                .unwrap();
        }
    }
}

#[test]
fn prepare_splits_the_flat_layout_the_books_way() {
    let tmp = tempfile::tempdir().unwrap();
    let flat = tmp.path().join("kaggle");
    std::fs::create_dir_all(&flat).unwrap();
    for i in 0..7 {
        picture(8, 8, 10)
            .save(flat.join(format!("cat.{i}.jpg")))
            .unwrap();
        picture(8, 8, 200)
            .save(flat.join(format!("dog.{i}.jpg")))
            .unwrap();
    }
    let out = tmp.path().join("small");
    let split = prepare::Split {
        train: 3,
        validation: 2,
        test: 2,
    };
    let done = prepare::prepare(&flat, &out, split).unwrap();
    assert_eq!(done.copied, 14);
    assert_eq!(done.counts[&("train".to_string(), "cats".to_string())], 3);
    assert_eq!(done.counts[&("test".to_string(), "dogs".to_string())], 2);
    // First by index to train, next to validation, next to test.
    assert!(out.join("train/cats/cat.2.jpg").is_file());
    assert!(out.join("validation/cats/cat.3.jpg").is_file());
    assert!(out.join("test/dogs/dog.6.jpg").is_file());

    // Twice is harmless.
    let again = prepare::prepare(&flat, &out, split).unwrap();
    assert_eq!((again.copied, again.already_there), (0, 14));

    // A different file of the same name is never overwritten.
    std::fs::write(out.join("validation/dogs/dog.4.jpg"), b"something else").unwrap();
    let err = prepare::prepare(&flat, &out, split).unwrap_err();
    assert!(
        matches!(&err, DataError::Conflict(p) if p.ends_with("validation/dogs/dog.4.jpg")),
        "{err}"
    );
    assert_eq!(
        std::fs::read(out.join("validation/dogs/dog.4.jpg")).unwrap(),
        b"something else"
    );

    // Too few images: the numbers are in the message.
    let err = prepare::prepare(
        &flat,
        &tmp.path().join("big"),
        prepare::Split {
            train: 5,
            validation: 2,
            test: 2,
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("7") && err.contains("9") && err.contains("cat"),
        "{err}"
    );
    assert!(
        !tmp.path().join("big").exists(),
        "a refused run writes nothing"
    );
}

#[test]
fn directory_dataset_classes_labels_and_order() {
    let tmp = tempfile::tempdir().unwrap();
    write_dataset(tmp.path(), 12);
    let ds = DirectoryDataset::open(tmp.path(), (10, 12), 2).unwrap();
    assert_eq!(ds.class_names(), ["cats", "dogs"], "sorted folder names");
    assert_eq!(ds.label_kind(), LabelKind::Binary);
    assert_eq!(ds.len(), 24);
    assert_eq!(ds.counts(), vec![12, 12]);
    // Natural order inside a class: cat.2 before cat.10.
    let names: Vec<String> = (0..12)
        .map(|i| {
            ds.path(i)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(names[..3], ["cat.0.png", "cat.1.png", "cat.2.png"]);
    assert_eq!(names[11], "cat.11.png");
    assert_eq!((ds.class_of(0), ds.class_of(23)), (0, 1));
    let img = ds.load(5).unwrap();
    assert_eq!((img.h, img.w, img.c), (10, 12, 3));

    // Three classes become categorical.
    std::fs::create_dir_all(tmp.path().join("zebras")).unwrap();
    picture(5, 5, 0)
        .save(tmp.path().join("zebras/z.png"))
        .unwrap();
    let ds = DirectoryDataset::open(tmp.path(), (10, 12), 2).unwrap();
    assert_eq!(ds.label_kind(), LabelKind::Categorical(3));
}

#[test]
fn directory_dataset_errors_name_the_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope");
    let err = DirectoryDataset::open(&missing, (8, 8), 2)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("nope") && err.contains("does not exist"),
        "{err}"
    );

    let err = DirectoryDataset::open(tmp.path(), (8, 8), 2)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("no class sub-folders"), "{err}");

    std::fs::create_dir_all(tmp.path().join("cats")).unwrap();
    picture(4, 4, 0)
        .save(tmp.path().join("cats/a.png"))
        .unwrap();
    let err = DirectoryDataset::open(tmp.path(), (8, 8), 2)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("1 class folder") && err.contains("cats") && err.contains("at least 2"),
        "{err}"
    );

    std::fs::create_dir_all(tmp.path().join("dogs")).unwrap();
    let err = DirectoryDataset::open(tmp.path(), (8, 8), 2)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("dogs") && err.contains("holds no images"),
        "{err}"
    );
}

#[test]
fn every_input_kind_decodes_to_rgb() {
    let tmp = tempfile::tempdir().unwrap();
    let p = |n: &str| tmp.path().join(n);
    image::GrayImage::from_pixel(6, 5, image::Luma([77]))
        .save(p("gray.png"))
        .unwrap();
    image::RgbaImage::from_pixel(6, 5, image::Rgba([10, 20, 30, 0]))
        .save(p("rgba.png"))
        .unwrap();
    image::ImageBuffer::<image::Rgb<u16>, Vec<u16>>::from_pixel(
        6,
        5,
        image::Rgb([65535, 0, 32896]),
    )
    .save(p("deep.png"))
    .unwrap();
    picture(6, 5, 9).save(p("pic.bmp")).unwrap();
    picture(6, 5, 9).save(p("pic.gif")).unwrap();
    // The format comes from the bytes: a PNG named .jpg still loads.
    std::fs::copy(p("gray.png"), p("png_named.jpg")).unwrap();
    for (name, want) in [
        ("gray.png", Some([77, 77, 77])),
        ("rgba.png", Some([10, 20, 30])),
        ("deep.png", Some([255, 0, 128])),
        ("pic.bmp", None),
        ("pic.gif", None),
        ("png_named.jpg", Some([77, 77, 77])),
    ] {
        let img = image_io::load(&p(name), (5, 6), 3).unwrap();
        assert_eq!((img.h, img.w, img.c), (5, 6, 3), "{name}");
        if let Some(px) = want {
            assert_eq!(img.data[..3], px, "{name}: first pixel");
        }
    }
    // A CMYK JPEG (Adobe, 4 components) becomes RGB too.
    let cmyk = cmyk_jpeg();
    std::fs::write(p("cmyk.jpg"), cmyk).unwrap();
    let img = image_io::load(&p("cmyk.jpg"), (8, 8), 3).unwrap();
    assert_eq!(img.c, 3);
}

/// An 8x8 CMYK baseline JPEG made by the image crate's encoder is not possible (it writes RGB
/// or gray only), so this is the smallest valid 4-component JPEG: written by hand here from
/// its segments (SOI, DQT, SOF0 with 4 components, DHT, SOS, EOI) with all-zero coefficients.
fn cmyk_jpeg() -> Vec<u8> {
    let mut j = vec![0xFF, 0xD8];
    // Adobe APP14 marker: transform 0 = CMYK as stored.
    j.extend([
        0xFF, 0xEE, 0x00, 0x0E, b'A', b'd', b'o', b'b', b'e', 0x00, 0x64, 0x00, 0x00, 0x00, 0x00,
        0x00,
    ]);
    // DQT: table 0, all ones.
    j.extend([0xFF, 0xDB, 0x00, 0x43, 0x00]);
    j.extend([1u8; 64]);
    // SOF0: 8 bits, 8x8, 4 components, each 1x1 sampling, table 0.
    j.extend([0xFF, 0xC0, 0x00, 0x14, 0x08, 0x00, 0x08, 0x00, 0x08, 0x04]);
    for id in 1..=4u8 {
        j.extend([id, 0x11, 0x00]);
    }
    // DHT: DC table 0 with one code of length 1 for symbol 0; AC table 0 with one code for EOB.
    j.extend([0xFF, 0xC4, 0x00, 0x14, 0x00, 0x01]);
    j.extend([0u8; 15]);
    j.push(0x00);
    j.extend([0xFF, 0xC4, 0x00, 0x14, 0x10, 0x01]);
    j.extend([0u8; 15]);
    j.push(0x00);
    // SOS: 4 components, tables 0/0.
    j.extend([0xFF, 0xDA, 0x00, 0x0E, 0x04]);
    for id in 1..=4u8 {
        j.extend([id, 0x00]);
    }
    j.extend([0x00, 0x3F, 0x00]);
    // Each block: DC diff code '0' then EOB code '0' -> 2 bits per block, 4 blocks = 8 zero bits.
    j.push(0x00);
    j.extend([0xFF, 0xD9]);
    j
}

#[test]
fn bad_files_are_errors_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: [(&str, &[u8]); 3] = [
        ("empty.jpg", b""),
        ("text.jpg", b"this is not an image at all"),
        (
            "trunc.png",
            &[0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0],
        ),
    ];
    for (name, bytes) in cases {
        let path = tmp.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let err = image_io::load(&path, (8, 8), 3).unwrap_err();
        assert!(matches!(err, DataError::Decode { .. }), "{name}: {err}");
        assert!(err.to_string().contains(name), "{err}");
    }
}

fn flat_dataset(n: usize, h: usize, w: usize) -> MemoryDataset {
    MemoryDataset {
        images: (0..n)
            .map(|i| Image {
                h,
                w,
                c: 3,
                data: (0..h * w * 3)
                    .map(|k| ((i * 31 + k * 7) % 256) as u8)
                    .collect(),
            })
            .collect(),
        classes: (0..n).map(|i| i % 2).collect(),
        class_names: vec!["a".into(), "b".into()],
        labels: LabelKind::Binary,
        name: "synthetic".into(),
    }
}

#[test]
fn loader_skips_unreadable_files_once_and_counts_them() {
    let tmp = tempfile::tempdir().unwrap();
    write_dataset(tmp.path(), 5);
    std::fs::write(tmp.path().join("cats/cat.99.png"), b"").unwrap();
    std::fs::write(tmp.path().join("dogs/dog.77.jpg"), b"GIF89a but truncated").unwrap();
    let ds: Arc<dyn Dataset> = Arc::new(DirectoryDataset::open(tmp.path(), (8, 8), 2).unwrap());
    let loader = Loader::new(
        ds.clone(),
        LoaderConfig::training(4, 3, Preprocessing::Rescale, None),
    )
    .unwrap();
    for epoch in 0..2 {
        let n: usize = loader.epoch(epoch).map(|b| b.unwrap().len()).sum();
        assert_eq!(n, 10, "the 10 good images every epoch");
    }
    let skipped = loader.skipped();
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert!(skipped.iter().any(|s| s.ends_with("cat.99.png")));

    let mut strict = LoaderConfig::training(4, 3, Preprocessing::Rescale, None);
    strict.strict = true;
    let loader = Loader::new(ds, strict).unwrap();
    let err = loader
        .epoch(0)
        .find_map(|b| b.err())
        .expect("strict mode fails on the bad file");
    assert!(
        err.to_string().contains(".99.png") || err.to_string().contains(".77.jpg"),
        "{err}"
    );
}

#[test]
fn preprocessing_modes() {
    let px = [255.0f32, 128.0, 0.0];
    let mut r = px;
    Preprocessing::Rescale.apply(&mut r, 3);
    assert_eq!(r, [1.0, 128.0 / 255.0, 0.0]);
    // caffe: RGB -> BGR, minus the BGR ImageNet mean, no scaling.
    let mut c = px;
    Preprocessing::Caffe.apply(&mut c, 3);
    assert_eq!(c, [0.0 - 103.939, 128.0 - 116.779, 255.0 - 123.68]);
    // torch: x/255, minus mean, over std, RGB kept.
    let mut t = px;
    Preprocessing::Torch.apply(&mut t, 3);
    let want = [
        (1.0 - 0.485) / 0.229,
        (128.0 / 255.0 - 0.456) / 0.224,
        (0.0 - 0.406) / 0.225,
    ];
    for k in 0..3 {
        assert!((t[k] - want[k]).abs() < 1e-6);
    }
}

#[test]
fn augmentation_geometry() {
    let (h, w, c) = (6usize, 5usize, 1usize);
    let src: Vec<f32> = (0..h * w).map(|i| i as f32).collect();
    let mut out = vec![0.0; h * w];
    let at = |v: &[f32], y: usize, x: usize| v[y * w + x];

    Transform::identity().apply(&src, h, w, c, FillMode::Nearest, &mut out);
    assert_eq!(out, src, "identity");

    let flip = Transform {
        flip: true,
        ..Transform::identity()
    };
    flip.apply(&src, h, w, c, FillMode::Nearest, &mut out);
    assert_eq!(
        at(&out, 2, 0),
        at(&src, 2, 4),
        "horizontal flip mirrors columns"
    );

    // Output (x, y) samples input (x + 2, y): content moves 2 pixels left; the fill decides the
    // last two columns.
    let shift = Transform {
        shift_x: 2.0,
        ..Transform::identity()
    };
    for (fill, col3, col4) in [
        (FillMode::Nearest, at(&src, 1, 4), at(&src, 1, 4)),
        (FillMode::Constant, 0.0, 0.0),
        (FillMode::Reflect, at(&src, 1, 4), at(&src, 1, 3)),
        (FillMode::Wrap, at(&src, 1, 0), at(&src, 1, 1)),
    ] {
        shift.apply(&src, h, w, c, fill, &mut out);
        assert_eq!(at(&out, 1, 0), at(&src, 1, 2), "{fill:?}");
        assert_eq!(
            (at(&out, 1, 3), at(&out, 1, 4)),
            (col3, col4),
            "{fill:?} fills the right edge"
        );
    }

    // A half-pixel shift is the bilinear average of neighbours.
    let half = Transform {
        shift_y: 0.5,
        ..Transform::identity()
    };
    half.apply(&src, h, w, c, FillMode::Nearest, &mut out);
    assert!((at(&out, 2, 1) - (at(&src, 2, 1) + at(&src, 3, 1)) / 2.0).abs() < 1e-5);

    // Rotation by 90 degrees about the centre of a square image maps the corners onto each other.
    let n = 5;
    let sq: Vec<f32> = (0..n * n).map(|i| i as f32).collect();
    let mut rot = vec![0.0; n * n];
    Transform {
        theta_deg: 90.0,
        ..Transform::identity()
    }
    .apply(&sq, n, n, 1, FillMode::Nearest, &mut rot);
    // output (x,y) samples input (cx - (y - cy), cy + (x - cx)): (0,0) <- (4,0), i.e. index 4.
    assert!((rot[0] - sq[4]).abs() < 1e-4, "{}", rot[0]);
    assert!(
        (rot[n * n / 2] - sq[n * n / 2]).abs() < 1e-4,
        "the centre stays"
    );

    // Zoom 2 samples twice as far from the centre: the centre row's ends come from the edge.
    let zoom = Transform {
        zoom_x: 2.0,
        zoom_y: 2.0,
        ..Transform::identity()
    };
    zoom.apply(&sq, n, n, 1, FillMode::Constant, &mut rot);
    assert_eq!(rot[2 * n], 0.0, "far outside under constant fill");
    assert!((rot[2 * n + 2] - sq[2 * n + 2]).abs() < 1e-4);
}

#[test]
fn random_transforms_stay_in_their_ranges() {
    let aug = Augment::book();
    for i in 0..200 {
        let t = aug.transform_for(9, 1, i, 150, 150);
        assert!(t.theta_deg.abs() <= 40.0);
        assert!(t.shift_x.abs() <= 30.0 && t.shift_y.abs() <= 30.0);
        assert!(t.shear_deg.abs() <= 0.2);
        assert!((0.8..=1.2).contains(&t.zoom_x) && (0.8..=1.2).contains(&t.zoom_y));
    }
    let flips = (0..1000)
        .filter(|&i| aug.transform_for(9, 1, i, 150, 150).flip)
        .count();
    assert!(
        (400..600).contains(&flips),
        "about half are flipped: {flips}"
    );
    assert!(Augment {
        zoom_range: 1.5,
        ..aug
    }
    .validate()
    .is_err());
    assert!(Augment {
        rotation_range: -1.0,
        ..aug
    }
    .validate()
    .is_err());
}

fn collect(loader: &Loader, epoch: u64) -> Vec<(Vec<usize>, Vec<f32>, Vec<f32>)> {
    loader
        .epoch(epoch)
        .map(|b| b.unwrap())
        .map(|b| (b.samples, b.images, b.labels))
        .collect()
}

#[test]
fn streaming_is_deterministic_whatever_the_worker_count() {
    let ds: Arc<dyn Dataset> = Arc::new(flat_dataset(53, 9, 7));
    let cfg = |workers| {
        let mut c = LoaderConfig::training(8, 42, Preprocessing::Rescale, Some(Augment::book()));
        c.workers = workers;
        c.prefetch = 2;
        c
    };
    let one = Loader::new(ds.clone(), cfg(1)).unwrap();
    let three = Loader::new(ds.clone(), cfg(3)).unwrap();
    let a = collect(&one, 0);
    assert_eq!(
        a,
        collect(&three, 0),
        "1 worker and 3 workers give identical batches"
    );
    assert_eq!(a.len(), 7, "53 samples in batches of 8");
    assert_eq!(a[6].0.len(), 5, "the last batch holds the remainder");
    let mut seen: Vec<usize> = a.iter().flat_map(|b| b.0.clone()).collect();
    seen.sort();
    assert_eq!(
        seen,
        (0..53).collect::<Vec<_>>(),
        "every sample exactly once per epoch"
    );
    // Labels follow the samples' classes.
    for (samples, _, labels) in &a {
        for (k, &s) in samples.iter().enumerate() {
            assert_eq!(labels[k], (s % 2) as f32);
        }
    }
    let b = collect(&one, 1);
    assert_ne!(a[0].0, b[0].0, "each epoch has its own order");
    let other_seed = Loader::new(ds.clone(), LoaderConfig { seed: 43, ..cfg(2) }).unwrap();
    assert_ne!(a, collect(&other_seed, 0));

    // Evaluation data: dataset order, no augmentation, raw pixels only rescaled.
    let eval = Loader::new(
        ds.clone(),
        LoaderConfig::evaluation(10, Preprocessing::Rescale),
    )
    .unwrap();
    let e = collect(&eval, 5);
    assert_eq!(e[0].0, (0..10).collect::<Vec<_>>());
    let img0 = ds.load(0).unwrap();
    assert_eq!(
        e[0].1[..img0.data.len()],
        img0.data
            .iter()
            .map(|&v| f32::from(v) / 255.0)
            .collect::<Vec<_>>()[..]
    );
}

#[test]
fn cache_holds_what_fits_the_budget() {
    let ds: Arc<dyn Dataset> = Arc::new(flat_dataset(20, 4, 4)); // 48 bytes per image
    let mut cfg = LoaderConfig::evaluation(5, Preprocessing::None);
    cfg.cache_bytes = 48 * 7;
    let loader = Loader::new(ds, cfg).unwrap();
    let first = collect(&loader, 0);
    assert_eq!(
        loader.cached_bytes(),
        48 * 7,
        "the cache stops at its budget"
    );
    assert_eq!(
        first,
        collect(&loader, 1),
        "cached samples are the same samples"
    );
}

fn shared() -> Option<PathBuf> {
    let dir = cnn_wgpu::bench::shared_dir();
    if dir.join("data").is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "skipped: shared data not found at {} (set CNN_WGPU_SHARED)",
            dir.display()
        );
        None
    }
}

#[test]
fn mnist_idx_files_load_and_split() {
    let Some(shared) = shared() else { return };
    let dir = shared.join("data/mnist");
    let test = mnist::load(&dir, "t10k").unwrap();
    assert_eq!(test.images.len(), 10_000);
    assert_eq!(
        (test.images[0].h, test.images[0].w, test.images[0].c),
        (28, 28, 1)
    );
    // The first MNIST test digit is a 7, the second a 2.
    assert_eq!(test.classes[..2], [7, 2]);
    let mut per_digit = [0usize; 10];
    test.classes.iter().for_each(|&d| per_digit[d] += 1);
    assert!(per_digit.iter().all(|&n| n > 800), "{per_digit:?}");
    let (train, val) = mnist::train_validation(&dir).unwrap();
    assert_eq!((train.images.len(), val.images.len()), (8000, 2000));
    assert_eq!(val.classes[0], test.classes[8000]);

    // Plain (un-gzipped) files read the same; a damaged one is an error naming it.
    let tmp = tempfile::tempdir().unwrap();
    let gz = std::fs::read(dir.join("t10k-labels-idx1-ubyte.gz")).unwrap();
    let mut plain = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut plain).unwrap();
    std::fs::write(tmp.path().join("t10k-labels-idx1-ubyte"), &plain).unwrap();
    std::fs::copy(
        dir.join("t10k-images-idx3-ubyte.gz"),
        tmp.path().join("t10k-images-idx3-ubyte.gz"),
    )
    .unwrap();
    assert_eq!(
        mnist::load(tmp.path(), "t10k").unwrap().classes,
        test.classes
    );
    std::fs::write(tmp.path().join("t10k-labels-idx1-ubyte"), &plain[..100]).unwrap();
    let err = mnist::load(tmp.path(), "t10k").err().unwrap().to_string();
    assert!(
        err.contains("t10k-labels-idx1-ubyte") && err.contains("10000"),
        "{err}"
    );
}

/// Our decode + antialiased bilinear resize against the exact pixels Keras/PIL produced for the
/// same JPEGs (the golden fixture's `raw_rgb`). Decoders and filter arithmetic differ slightly.
#[test]
fn resize_matches_keras_load_img_closely() {
    let Some(shared) = shared() else { return };
    let bytes = std::fs::read(shared.join("fixtures/vgg16_golden.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let raw = st.tensor("raw_rgb").unwrap();
    assert_eq!(raw.shape(), [3, 150, 150, 3]);
    let files = [
        "train/cats/cat.0.jpg",
        "train/dogs/dog.0.jpg",
        "train/cats/cat.1.jpg",
    ];
    for (i, f) in files.iter().enumerate() {
        let img = image_io::load(
            &shared.join("data/cats_and_dogs_small").join(f),
            (150, 150),
            3,
        )
        .unwrap();
        let want = &raw.data()[i * 67_500..(i + 1) * 67_500];
        let diffs: Vec<f64> = img
            .data
            .iter()
            .zip(want)
            .map(|(&a, &b)| (f64::from(a) - f64::from(b)).abs())
            .collect();
        let mean = diffs.iter().sum::<f64>() / diffs.len() as f64;
        let max = diffs.iter().cloned().fold(0.0, f64::max);
        eprintln!("{f}: mean |diff| {mean:.3}, max {max} against PIL");
        // Measured: mean 0.08-0.09, max 2 levels (all of it from the JPEG decoder).
        assert!(
            mean < 0.15 && max <= 3.0,
            "{f}: mean |diff| {mean:.3}, max {max} against PIL"
        );
    }
    // The resampler alone is Pillow's: resizing PIL's own decode gives PIL's pixels exactly.
    let decoded = st.tensor("decoded_rgb").unwrap();
    for i in 0..3 {
        let src = &decoded.data()[i * 120_000..(i + 1) * 120_000];
        let ours = cnn_wgpu::data::resample::resize(src, 200, 200, 3, 150, 150);
        assert_eq!(
            ours,
            raw.data()[i * 67_500..(i + 1) * 67_500],
            "image {i}: resampling differs from Pillow"
        );
    }
}

#[test]
fn batches_upload_as_nhwc_tensors() {
    let Some(gpu) = common::gpu() else { return };
    let ds: Arc<dyn Dataset> = Arc::new(flat_dataset(7, 3, 5));
    let loader = Loader::new(ds, LoaderConfig::evaluation(4, Preprocessing::Rescale)).unwrap();
    let batch = loader.epoch(0).next().unwrap().unwrap();
    let (x, y) = batch.upload(gpu).unwrap();
    assert_eq!(x.dims(), [4, 3, 5, 3]);
    assert_eq!(y.dims(), [4, 1]);
    assert_eq!(x.to_vec(gpu).unwrap(), batch.images);
    assert_eq!(y.to_vec(gpu).unwrap(), vec![0.0, 1.0, 0.0, 1.0]);
}

#[test]
fn csv_rows_parse_and_bad_fields_name_line_and_column() {
    use cnn_wgpu::data::csv::CsvDataset;
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("t.csv");
    std::fs::write(&p, "a,b,c,label\n0.5,1,2,1\n-1,0,3.5,0\n\n2,2,2,1\n").unwrap();
    let ds = CsvDataset::read(&p).unwrap();
    assert_eq!(
        (ds.len(), ds.sequence_len()),
        (3, 3),
        "the header and the blank line are skipped"
    );
    assert_eq!(ds.values(1).unwrap(), vec![-1.0, 0.0, 3.5]);
    assert_eq!((ds.class_of(0), ds.class_of(1)), (1, 0));
    let (tr, va) = ds.split(0.34).unwrap();
    assert_eq!((tr.len(), va.len()), (2, 1), "the last rows validate");

    for (text, want) in [
        ("1,2,1\n1,2\n", "line 2: 2 fields, the rows before have 3"),
        ("1,2,1\n1,x,0\n", "line 2: column 2: \"x\" is not a number"),
        ("1,2,1\n1,2,3\n", "line 2: column 3: label 3 must be 0 or 1"),
        ("1,nan,1\n", "line 1: column 2"),
    ] {
        std::fs::write(&p, text).unwrap();
        let err = CsvDataset::read(&p).err().unwrap().to_string();
        assert!(
            err.contains("t.csv") && err.contains(want),
            "{err} (wanted {want})"
        );
    }
}
