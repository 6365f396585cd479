//! The data pipeline: preparation, directory datasets, decoding of every input kind, bad files,
//! preprocessing, MNIST, augmentation geometry, and deterministic streaming.

mod common;

use std::path::Path;
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
    // A CMYK JPEG (Adobe, 4 components) becomes the RGB that Pillow's convert("RGB") gives,
    // which is what Keras' load_img trains on.
    std::fs::write(p("cmyk.jpg"), CMYK_JPEG).unwrap();
    let img = image_io::load(&p("cmyk.jpg"), (16, 16), 3).unwrap();
    assert_eq!((img.h, img.w, img.c), (16, 16, 3));
    for (block, want) in CMYK_AS_RGB.iter().enumerate() {
        let (by, bx) = (block / 2, block % 2);
        for y in by * 8..by * 8 + 8 {
            for x in bx * 8..bx * 8 + 8 {
                let got = &img.data[(y * 16 + x) * 3..][..3];
                // Flat 8x8 blocks survive quality-100 JPEG exactly in Pillow; decoders may
                // round their colour conversion a level or two apart.
                let close = got
                    .iter()
                    .zip(want)
                    .all(|(&g, &w)| (i16::from(g) - i16::from(w)).abs() <= 2);
                assert!(
                    close,
                    "CMYK pixel ({y},{x}) is {got:?}, Pillow gives {want:?}"
                );
            }
        }
    }
}

/// A 16x16 CMYK JPEG of four flat 8x8 blocks, (C,M,Y,K) = (0,255,255,0), (200,30,0,40),
/// (10,120,220,0) and (0,0,0,128) in row order, written by Pillow 13.0 (`Image.new("CMYK")`,
/// `save(..., "JPEG", quality=100, subsampling=0)`, which adds the Adobe marker).
const CMYK_JPEG: &[u8] = &[
    0xFF, 0xD8, 0xFF, 0xEE, 0x00, 0x0E, 0x41, 0x64, 0x6F, 0x62, 0x65, 0x00, 0x64, 0x00, 0x00, 0x00,
    0x00, 0x00, 0xFF, 0xDB, 0x00, 0x43, 0x00, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01,
    0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01,
    0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01,
    0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01,
    0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0xFF, 0xC0, 0x00, 0x14, 0x08, 0x00, 0x10, 0x00, 0x10,
    0x04, 0x43, 0x11, 0x00, 0x4D, 0x11, 0x00, 0x59, 0x11, 0x00, 0x4B, 0x11, 0x00, 0xFF, 0xC4, 0x00,
    0x1F, 0x00, 0x00, 0x01, 0x05, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x0B, 0xFF, 0xC4,
    0x00, 0xB5, 0x10, 0x00, 0x02, 0x01, 0x03, 0x03, 0x02, 0x04, 0x03, 0x05, 0x05, 0x04, 0x04, 0x00,
    0x00, 0x01, 0x7D, 0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13,
    0x51, 0x61, 0x07, 0x22, 0x71, 0x14, 0x32, 0x81, 0x91, 0xA1, 0x08, 0x23, 0x42, 0xB1, 0xC1, 0x15,
    0x52, 0xD1, 0xF0, 0x24, 0x33, 0x62, 0x72, 0x82, 0x09, 0x0A, 0x16, 0x17, 0x18, 0x19, 0x1A, 0x25,
    0x26, 0x27, 0x28, 0x29, 0x2A, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3A, 0x43, 0x44, 0x45, 0x46,
    0x47, 0x48, 0x49, 0x4A, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5A, 0x63, 0x64, 0x65, 0x66,
    0x67, 0x68, 0x69, 0x6A, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7A, 0x83, 0x84, 0x85, 0x86,
    0x87, 0x88, 0x89, 0x8A, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0xA2, 0xA3, 0xA4,
    0xA5, 0xA6, 0xA7, 0xA8, 0xA9, 0xAA, 0xB2, 0xB3, 0xB4, 0xB5, 0xB6, 0xB7, 0xB8, 0xB9, 0xBA, 0xC2,
    0xC3, 0xC4, 0xC5, 0xC6, 0xC7, 0xC8, 0xC9, 0xCA, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8, 0xD9,
    0xDA, 0xE1, 0xE2, 0xE3, 0xE4, 0xE5, 0xE6, 0xE7, 0xE8, 0xE9, 0xEA, 0xF1, 0xF2, 0xF3, 0xF4, 0xF5,
    0xF6, 0xF7, 0xF8, 0xF9, 0xFA, 0xFF, 0xDA, 0x00, 0x0E, 0x04, 0x43, 0x00, 0x4D, 0x00, 0x59, 0x00,
    0x4B, 0x00, 0x00, 0x3F, 0x00, 0xFE, 0xFE, 0x2B, 0xFC, 0xFF, 0x00, 0xEB, 0xFC, 0xFF, 0x00, 0xEB,
    0xFB, 0xF8, 0xAF, 0xF1, 0xBF, 0xAF, 0xF7, 0x08, 0xAF, 0xF7, 0xF8, 0xAF, 0xCB, 0xFA, 0xFF, 0x00,
    0x5F, 0x0A, 0xFE, 0x4B, 0xEB, 0xFC, 0x47, 0xEB, 0xF5, 0x02, 0xBD, 0x42, 0xBF, 0xBC, 0x0A, 0xFF,
    0x00, 0x6E, 0x0A, 0xFF, 0x00, 0x3F, 0xFA, 0xFF, 0xD9,
];

/// Each block of [`CMYK_JPEG`] as Pillow 13.0 decodes it and converts it with
/// `convert("RGB")`: R = (255 - C)(255 - K) / 255, and so on, rounded.
const CMYK_AS_RGB: [[u8; 3]; 4] = [[255, 0, 0], [46, 190, 215], [245, 135, 35], [127, 127, 127]];

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

/// A JPEG cut short (as a failed download or copy leaves it) is an unreadable file, as Pillow
/// says ("image file is truncated"), not an image of gray blocks: cut at 700 bytes and at half,
/// for a baseline and a progressive file, each loads as an error naming the file; the whole
/// file, and one with padding after its end marker, load.
#[test]
fn truncated_jpegs_are_errors_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let img = image::RgbImage::from_fn(96, 80, |x, y| {
        image::Rgb([(x * 2) as u8, (y * 3) as u8, ((x + y) % 256) as u8])
    });
    let mut baseline = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut baseline, 90)
        .encode_image(&img)
        .unwrap();
    let mut files = vec![("baseline", baseline)];
    // A progressive JPEG from the shared data where there is one (the encoder above writes
    // baseline only).
    if let Some(shared) = common::shared(&["data/cats_and_dogs_small/train/cats/cat.0.jpg"]) {
        let cat = shared.join("data/cats_and_dogs_small/train/cats/cat.0.jpg");
        files.push(("cat.0", std::fs::read(cat).unwrap()));
    }
    for (name, bytes) in files {
        let whole = tmp.path().join(format!("{name}.jpg"));
        std::fs::write(&whole, &bytes).unwrap();
        image_io::load(&whole, (32, 32), 3).unwrap();
        let mut padded = bytes.clone();
        padded.extend([0u8; 64]);
        let path = tmp.path().join(format!("{name}-padded.jpg"));
        std::fs::write(&path, &padded).unwrap();
        image_io::load(&path, (32, 32), 3).unwrap();
        for cut in [700, bytes.len() / 2, bytes.len() - 2] {
            let path = tmp.path().join(format!("{name}-cut-{cut}.jpg"));
            std::fs::write(&path, &bytes[..cut]).unwrap();
            let err = image_io::load(&path, (32, 32), 3).unwrap_err();
            assert!(
                matches!(err, DataError::Decode { .. }),
                "{name} cut at {cut}: {err}"
            );
            let text = err.to_string();
            assert!(
                text.contains(&format!("{name}-cut-{cut}.jpg")) && text.contains("truncated"),
                "{text}"
            );
        }
    }
}

/// Target sizes that could only end in a failed allocation are errors naming the size, before
/// anything is decoded.
#[test]
fn absurd_image_sizes_are_errors_before_decoding() {
    let tmp = tempfile::tempdir().unwrap();
    for class in ["cats", "dogs"] {
        std::fs::create_dir_all(tmp.path().join(class)).unwrap();
        image::RgbImage::from_pixel(8, 8, image::Rgb([1, 2, 3]))
            .save(tmp.path().join(class).join("a.png"))
            .unwrap();
    }
    let png = tmp.path().join("cats/a.png");
    for size in [(100_000, 100_000), (8193, 8192), (usize::MAX, 2), (0, 5)] {
        let err = image_io::load(&png, size, 3).unwrap_err().to_string();
        assert!(err.contains(&format!("{}x{}", size.0, size.1)), "{err}");
        let err = DirectoryDataset::open(tmp.path(), size, 2)
            .err()
            .expect("refused")
            .to_string();
        assert!(err.contains(&format!("{}x{}", size.0, size.1)), "{err}");
    }
    assert_eq!(
        image_io::load(&png, (16, 8), 3).unwrap().data.len(),
        16 * 8 * 3
    );
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

#[test]
fn mnist_idx_files_load_and_split() {
    let Some(shared) = common::shared(&[
        "data/mnist/t10k-images-idx3-ubyte.gz",
        "data/mnist/t10k-labels-idx1-ubyte.gz",
    ]) else {
        return;
    };
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
    let Some(shared) = common::shared(&[
        "fixtures/vgg16_golden.safetensors",
        "data/cats_and_dogs_small/train/cats/cat.0.jpg",
        "data/cats_and_dogs_small/train/dogs/dog.0.jpg",
        "data/cats_and_dogs_small/train/cats/cat.1.jpg",
    ]) else {
        return;
    };
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

/// `Source::detect` answers what a `--data` path holds for every command, and names the path
/// when it holds none of the three kinds.
#[test]
fn a_data_path_is_recognised_or_refused_by_name() {
    use cnn_wgpu::data::Source;
    let tmp = tempfile::tempdir().unwrap();
    let csv = tmp.path().join("series.CSV");
    std::fs::write(&csv, "1,2,3,0\n").unwrap();
    assert_eq!(Source::detect(&csv).unwrap(), Source::Csv(csv.clone()));
    let folders = tmp.path().join("pets");
    std::fs::create_dir_all(folders.join("train/cats")).unwrap();
    assert_eq!(
        Source::detect(&folders).unwrap(),
        Source::ImageFolders(folders.clone())
    );
    let digits = tmp.path().join("digits");
    std::fs::create_dir_all(&digits).unwrap();
    std::fs::write(digits.join("t10k-images-idx3-ubyte"), b"").unwrap();
    assert_eq!(
        Source::detect(&digits).unwrap(),
        Source::Mnist(digits.clone())
    );

    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let e = Source::detect(&empty).unwrap_err().to_string();
    assert!(
        e.contains("empty")
            && e.contains("class folders")
            && e.contains("MNIST")
            && e.contains(".csv"),
        "{e}"
    );
    let e = Source::detect(&tmp.path().join("nowhere"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("nowhere") && e.contains("does not exist"), "{e}");
    // Class folders need a size to decode to; opening without one says so.
    let e = match Source::ImageFolders(folders.clone()).open(None, 0.2) {
        Ok(_) => panic!("opened image folders without an image size"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("pets") && e.contains("image size"), "{e}");
}
