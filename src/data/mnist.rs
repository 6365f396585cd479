//! The MNIST IDX format (gzip or plain): `*-images-idx3-ubyte[.gz]` and `*-labels-idx1-ubyte[.gz]`.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::dataset::{LabelKind, MemoryDataset};
use super::image_io::Image;
use super::DataError;

fn read_maybe_gz(path: &Path) -> Result<Vec<u8>, DataError> {
    let raw = std::fs::read(path).map_err(super::io_err(path))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| DataError::Idx {
                path: path.to_path_buf(),
                reason: format!("gzip: {e}"),
            })?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Parses an IDX file with unsigned-byte data: returns the dimensions and the data.
pub fn parse_idx(path: &Path, bytes: &[u8]) -> Result<(Vec<usize>, Vec<u8>), DataError> {
    let bad = |reason: String| DataError::Idx {
        path: path.to_path_buf(),
        reason,
    };
    if bytes.len() < 4 {
        return Err(bad(format!(
            "{} bytes, shorter than the 4-byte magic",
            bytes.len()
        )));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(bad("the magic number must start with two zero bytes".into()));
    }
    if bytes[2] != 0x08 {
        return Err(bad(format!(
            "data type 0x{:02x}, expected 0x08 (unsigned byte)",
            bytes[2]
        )));
    }
    let ndim = bytes[3] as usize;
    let header = 4 + 4 * ndim;
    if bytes.len() < header {
        return Err(bad(format!(
            "truncated header: {ndim} dimensions need {header} bytes, file has {}",
            bytes.len()
        )));
    }
    let dims: Vec<usize> = (0..ndim)
        .map(|i| {
            u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().expect("4 bytes")) as usize
        })
        .collect();
    let count: usize = dims.iter().product();
    let data = &bytes[header..];
    if data.len() != count {
        return Err(bad(format!(
            "dimensions {dims:?} need {count} data bytes, the file has {}",
            data.len()
        )));
    }
    Ok((dims, data.to_vec()))
}

fn find(dir: &Path, prefix: &str, kind: &str) -> Option<PathBuf> {
    [format!("{prefix}-{kind}.gz"), format!("{prefix}-{kind}")]
        .into_iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
}

/// Loads one MNIST part (`prefix` "train" or "t10k") from `dir` as 28x28x1 images with
/// categorical labels over the 10 digits.
pub fn load(dir: &Path, prefix: &str) -> Result<MemoryDataset, DataError> {
    let img_path = find(dir, prefix, "images-idx3-ubyte").ok_or_else(|| DataError::Idx {
        path: dir.join(format!("{prefix}-images-idx3-ubyte.gz")),
        reason: "not found (plain or .gz)".into(),
    })?;
    let lbl_path = find(dir, prefix, "labels-idx1-ubyte").ok_or_else(|| DataError::Idx {
        path: dir.join(format!("{prefix}-labels-idx1-ubyte.gz")),
        reason: "not found (plain or .gz)".into(),
    })?;
    let mut ds = load_images(&img_path)?;
    let n = ds.images.len();
    let (ldims, labels) = parse_idx(&lbl_path, &read_maybe_gz(&lbl_path)?)?;
    if ldims != [n] {
        return Err(DataError::Idx {
            path: lbl_path,
            reason: format!("{ldims:?} labels for {n} images"),
        });
    }
    if let Some(bad) = labels.iter().find(|&&l| l > 9) {
        return Err(DataError::Idx {
            path: lbl_path,
            reason: format!("label {bad} is not a digit 0-9"),
        });
    }
    ds.classes = labels.iter().map(|&l| l as usize).collect();
    Ok(ds)
}

/// The images of one IDX images file (`*-images-idx3-ubyte[.gz]`) as (rows, cols, 1), without
/// labels (every class 0): what `predict` reads.
pub fn load_images(path: &Path) -> Result<MemoryDataset, DataError> {
    let (idims, pixels) = parse_idx(path, &read_maybe_gz(path)?)?;
    let &[n, h, w] = idims.as_slice() else {
        return Err(DataError::Idx {
            path: path.to_path_buf(),
            reason: format!("images must have 3 dimensions (count, rows, cols), found {idims:?}"),
        });
    };
    let images = pixels
        .chunks_exact((h * w).max(1))
        .map(|p| Image {
            h,
            w,
            c: 1,
            data: p.to_vec(),
        })
        .collect();
    Ok(MemoryDataset {
        images,
        classes: vec![0; n],
        class_names: (0..10).map(|d| d.to_string()).collect(),
        labels: LabelKind::Categorical(10),
        name: path.display().to_string(),
    })
}

/// Whether `path` is named like an IDX file (`...-idx3-ubyte`, `...-idx1-ubyte`, maybe `.gz`):
/// read as one, so that a labels file given in place of the images is refused as such.
pub fn is_idx_file(path: &Path) -> bool {
    path.file_name().is_some_and(|n| {
        let n = n.to_string_lossy();
        n.contains("-idx") && n.contains("-ubyte")
    })
}

/// The IDX images files of an MNIST folder, train before t10k.
pub fn images_files(dir: &Path) -> Vec<PathBuf> {
    ["train", "t10k"]
        .into_iter()
        .filter_map(|prefix| find(dir, prefix, "images-idx3-ubyte"))
        .collect()
}

/// Whether `dir` holds MNIST's training images (`train-images-idx3-ubyte[.gz]`) beside the t10k
/// ones.
pub fn has_train_files(dir: &Path) -> bool {
    find(dir, "train", "images-idx3-ubyte").is_some()
}

/// MNIST train / validation as the project uses it: the standard 60,000 / 10,000 split when the
/// training files are in `dir`; otherwise the 10,000 test digits split into the first 8,000 for
/// training and the last 2,000 for validation.
pub fn train_validation(dir: &Path) -> Result<(MemoryDataset, MemoryDataset), DataError> {
    if has_train_files(dir) {
        return Ok((load(dir, "train")?, load(dir, "t10k")?));
    }
    let test = load(dir, "t10k")?;
    let cut = test.images.len() * 4 / 5;
    Ok((test.slice(0..cut), test.slice(cut..test.images.len())))
}
