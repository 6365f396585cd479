//! The image data pipeline: dataset preparation, directory and MNIST datasets, Keras-equivalent
//! augmentation, and batches streamed from disk by worker threads.
//!
//! Samples move through: decode (any format the `image` crate reads, converted to RGB or gray) →
//! resize to the target size (antialiased bilinear, aspect not kept) → optional cache of the
//! resized 8-bit image → augmentation (one affine resampling pass, f32) → preprocessing (rescale /
//! caffe / torch) → an NHWC f32 batch ready for one upload.

pub mod augment;
pub mod csv;
pub mod dataset;
pub mod image_io;
pub mod loader;
pub mod mnist;
pub mod prepare;
pub mod resample;
pub mod source;

use std::path::PathBuf;

use thiserror::Error;

pub use augment::{Augment, FillMode};
pub use dataset::{Concat, Dataset, DirectoryDataset, FileList, LabelKind, Views};
pub use image_io::{Image, Preprocessing};
pub use loader::{Batch, Loader, LoaderConfig};
pub use source::{PredictInput, Source, Split, Splits};

/// Errors of the data layer. Every variant names the file or folder it is about.
#[derive(Debug, Error)]
pub enum DataError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("dataset folder {0} does not exist")]
    MissingFolder(PathBuf),
    #[error("{0} has no class sub-folders; expected one folder per class (for example {0}/cats and {0}/dogs)")]
    NoClasses(PathBuf),
    #[error("class folder {0} holds no images (.jpg .jpeg .png .bmp .gif)")]
    EmptyClass(PathBuf),
    #[error("folder {0} holds no images (.jpg .jpeg .png .bmp .gif), in it or in its sub-folders")]
    NoImages(PathBuf),
    #[error("{path} has {found} class folder(s) ({names}); this task needs at least 2")]
    TooFewClasses {
        path: PathBuf,
        found: usize,
        names: String,
    },
    #[error("cannot decode image {path}: {reason}")]
    Decode { path: PathBuf, reason: String },
    #[error("{dir} has {found} {class} images (cat.N.jpg numbered from 0), {needed} are needed for the requested split")]
    TooFewImages {
        dir: PathBuf,
        class: String,
        needed: usize,
        found: usize,
    },
    #[error("refusing to overwrite {0}: a different file of that name is already there")]
    Conflict(PathBuf),
    #[error("{path} is not a valid MNIST IDX file: {reason}")]
    Idx { path: PathBuf, reason: String },
    #[error("{path}, line {line}: {reason}")]
    Csv {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("{split} has the class folders [{found}] but {reference} has [{expected}] ({difference}); every split needs the same classes, or labels would be swapped or impossible")]
    ClassMismatch {
        reference: PathBuf,
        expected: String,
        split: PathBuf,
        found: String,
        difference: String,
    },
    #[error("{path} has no {split} split: {reason}")]
    NoSplit {
        path: PathBuf,
        split: source::Split,
        reason: String,
    },
    #[error("invalid data option: {0}")]
    Invalid(String),
    #[error(transparent)]
    Gpu(#[from] crate::gpu::GpuError),
}

/// Fails unless every split has the same class folders as the first, naming what differs:
/// labels are class indices in sorted order, so an extra class breaks the label shape and a
/// renamed one silently swaps labels.
pub fn check_same_classes(splits: &[(PathBuf, Vec<String>)]) -> Result<(), DataError> {
    let Some((reference, expected)) = splits.first() else {
        return Ok(());
    };
    for (split, found) in &splits[1..] {
        if found == expected {
            continue;
        }
        let missing: Vec<&str> = expected
            .iter()
            .filter(|c| !found.contains(c))
            .map(String::as_str)
            .collect();
        let extra: Vec<&str> = found
            .iter()
            .filter(|c| !expected.contains(c))
            .map(String::as_str)
            .collect();
        let mut difference = Vec::new();
        if !missing.is_empty() {
            difference.push(format!("missing {}", missing.join(", ")));
        }
        if !extra.is_empty() {
            difference.push(format!("extra {}", extra.join(", ")));
        }
        return Err(DataError::ClassMismatch {
            reference: reference.to_path_buf(),
            expected: expected.join(", "),
            split: split.to_path_buf(),
            found: found.join(", "),
            difference: difference.join("; "),
        });
    }
    Ok(())
}

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> DataError {
    let path = path.into();
    move |source| DataError::Io { path, source }
}

/// A 64-bit mix (splitmix64's finaliser): derives independent seeds from (seed, epoch, index).
pub fn mix(a: u64, b: u64) -> u64 {
    let mut z = a ^ b.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
