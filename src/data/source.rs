//! What a `--data` path holds, answered once for every command: a CSV file of sequences, a
//! folder of train/ and validation/ (and test/) class folders, a folder of MNIST IDX files, or
//! one folder of class folders (a single split, which `evaluate` takes whole).
//! `train` opens the train and validation splits; `evaluate` one [`Split`], by name.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::csv::CsvDataset;
use super::dataset::Concat;
use super::{check_same_classes, mnist, DataError, Dataset, DirectoryDataset};

/// The kind of data a path holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A `.csv` file: one sequence per row, the label in the last column.
    Csv(PathBuf),
    /// A folder with `train/` and `validation/` class folders, and optionally `test/`.
    ImageFolders(PathBuf),
    /// A folder with MNIST IDX files (`t10k-*`, and `train-*` where there).
    Mnist(PathBuf),
    /// A folder whose sub-folders are the classes: one split, with no train/ in it.
    Classes(PathBuf),
}

/// Which part of a source `evaluate` reads. Each source splits as `train` splits it, so that a
/// run's validation split is the same images at evaluation as during training.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Validation,
    Test,
    /// Every sample of the source, each once.
    All,
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Train => "train",
            Self::Validation => "validation",
            Self::Test => "test",
            Self::All => "all",
        })
    }
}

/// The splits a source gives.
pub struct Splits {
    pub train: Arc<dyn Dataset>,
    pub validation: Arc<dyn Dataset>,
    pub test: Option<Arc<dyn Dataset>>,
}

impl Source {
    /// Which kind `path` holds; an error names the path and the kinds accepted.
    pub fn detect(path: &Path) -> Result<Self, DataError> {
        let p = path.to_path_buf();
        if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
        {
            Ok(Self::Csv(p))
        } else if path.join("train").is_dir() {
            Ok(Self::ImageFolders(p))
        } else if path.join("t10k-images-idx3-ubyte.gz").is_file()
            || path.join("t10k-images-idx3-ubyte").is_file()
        {
            Ok(Self::Mnist(p))
        } else if !path.exists() {
            Err(DataError::MissingFolder(p))
        } else if has_sub_folders(path) {
            Ok(Self::Classes(p))
        } else {
            Err(DataError::Invalid(format!(
                "{}: expected train/ and validation/ class folders, a folder of class folders, MNIST IDX files (t10k-images-idx3-ubyte[.gz]), or a .csv file",
                path.display()
            )))
        }
    }

    /// The split `evaluate` reads when none is named: the split that no training saw where the
    /// source has one. Class folders: test/ where there is one, else validation/; MNIST: the
    /// t10k digits where the train files are there too, else the 2,000 of them `train`
    /// validates on; CSV: the rows `train` validates on; a folder of class folders: all of it.
    pub fn default_split(&self) -> Split {
        match self {
            Self::ImageFolders(dir) if dir.join("test").is_dir() => Split::Test,
            Self::Mnist(dir) if mnist::has_train_files(dir) => Split::Test,
            Self::ImageFolders(_) | Self::Mnist(_) | Self::Csv(_) => Split::Validation,
            Self::Classes(_) => Split::All,
        }
    }

    /// The path the source was found at.
    pub fn path(&self) -> &Path {
        match self {
            Self::Csv(p) | Self::ImageFolders(p) | Self::Mnist(p) | Self::Classes(p) => p,
        }
    }

    /// One split, as `train` would cut it (`image` and `validation_split` as in [`Self::open`]).
    /// A split the source lacks is refused, naming the ones it has.
    pub fn open_split(
        &self,
        split: Split,
        image: Option<(usize, usize, usize)>,
        validation_split: f32,
    ) -> Result<Arc<dyn Dataset>, DataError> {
        let no = |reason: String| DataError::NoSplit {
            path: self.path().to_path_buf(),
            split,
            reason,
        };
        if let Self::Classes(dir) = self {
            return match split {
                Split::All => open_classes(dir, image),
                _ => Err(no(
                    "it is one folder of class folders, with no train/, validation/ or test/ in it; evaluate it whole with --split all".into(),
                )),
            };
        }
        if let (Self::ImageFolders(dir), Split::Test) = (self, split) {
            if !dir.join("test").is_dir() {
                return Err(no(format!(
                    "there is no {}; use --split validation, train or all",
                    dir.join("test").display()
                )));
            }
        }
        if let (Self::Mnist(dir), Split::Test) = (self, split) {
            if !mnist::has_train_files(dir) {
                return Err(no("it holds only MNIST's t10k files, which `train` splits 8,000 / 2,000 into its train and validation splits; use --split validation (the 2,000 it did not train on) or all".into()));
            }
            return Ok(Arc::new(mnist::load(dir, "t10k")?));
        }
        if let (Self::Csv(_), Split::Test) = (self, split) {
            return Err(no(format!(
                "a CSV file splits into train and validation (its last {validation_split} of rows, --validation-split); use --split validation, train or all"
            )));
        }
        let splits = self.open(image, validation_split)?;
        Ok(match split {
            Split::Train => splits.train,
            Split::Validation => splits.validation,
            Split::Test => splits
                .test
                .expect("checked above: the test/ folder is there"),
            Split::All => {
                let mut parts = vec![
                    ("train".to_string(), splits.train),
                    ("validation".to_string(), splits.validation),
                ];
                // MNIST's validation split is its test set where the train files are there.
                if let (Some(t), false) = (splits.test, matches!(self, Self::Mnist(_))) {
                    parts.push(("test".to_string(), t));
                }
                Arc::new(Concat::new(parts)?)
            }
        })
    }

    /// Opens the splits. Images in class folders are decoded to `image` = (h, w, c) (c 1:
    /// grayscale), which they need; CSV rows and MNIST digits keep their own shape. A CSV's
    /// last `validation_split` of rows validate. Class folders must match across splits.
    pub fn open(
        &self,
        image: Option<(usize, usize, usize)>,
        validation_split: f32,
    ) -> Result<Splits, DataError> {
        match self {
            Self::Csv(path) => {
                let (train, validation) = CsvDataset::read(path)?.split(validation_split)?;
                Ok(Splits {
                    train: Arc::new(train),
                    validation: Arc::new(validation),
                    test: None,
                })
            }
            Self::Mnist(dir) => {
                let (train, validation) = mnist::train_validation(dir)?;
                Ok(Splits {
                    train: Arc::new(train),
                    validation: Arc::new(validation),
                    test: None,
                })
            }
            Self::Classes(dir) => Err(DataError::Invalid(format!(
                "{}: a folder of class folders is one split; training needs train/ and validation/ class folders in one folder (`prepare` makes them from Kaggle's flat folder)",
                dir.display()
            ))),
            Self::ImageFolders(dir) => {
                let open = |split: &str| open_classes(&dir.join(split), image);
                let test = if dir.join("test").is_dir() {
                    Some(open("test")?)
                } else {
                    None
                };
                let (train, validation) = (open("train")?, open("validation")?);
                let mut named = vec![
                    (dir.join("train"), train.class_names().to_vec()),
                    (dir.join("validation"), validation.class_names().to_vec()),
                ];
                if let Some(t) = &test {
                    named.push((dir.join("test"), t.class_names().to_vec()));
                }
                check_same_classes(&named)?;
                Ok(Splits {
                    train,
                    validation,
                    test,
                })
            }
        }
    }
}

/// Whether `dir` has a sub-folder that is not hidden (a class, for a folder of class folders).
fn has_sub_folders(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.path().is_dir() && !e.file_name().to_string_lossy().starts_with('.'))
    })
}

/// A folder of class folders, decoded to `image` = (h, w, c) (c 1: grayscale).
fn open_classes(
    dir: &Path,
    image: Option<(usize, usize, usize)>,
) -> Result<Arc<dyn Dataset>, DataError> {
    let (h, w, c) = image.ok_or_else(|| {
        DataError::Invalid(format!(
            "{}: class folders of images need an image size to decode to (the model takes sequences, not images)",
            dir.display()
        ))
    })?;
    let ds = DirectoryDataset::open(dir, (h, w), 2)?;
    Ok(Arc::new(if c == 1 { ds.grayscale() } else { ds }))
}

/// What one `predict` argument holds: image files and folders of them, an MNIST IDX images file
/// (or a folder of MNIST files: its images files), or a CSV file of sequences.
pub enum PredictInput {
    Images(super::FileList),
    Digits(PathBuf),
    Rows(PathBuf),
}

impl PredictInput {
    /// Each of `paths`, in order. A path that does not exist, or a folder with no images, is
    /// refused by name before any model loads.
    pub fn classify(paths: &[PathBuf]) -> Result<Vec<Self>, DataError> {
        let mut inputs = Vec::new();
        for p in paths {
            let is_file = std::fs::metadata(p).map_err(super::io_err(p))?.is_file();
            if is_file && p.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv")) {
                inputs.push(Self::Rows(p.clone()));
            } else if is_file && mnist::is_idx_file(p) {
                inputs.push(Self::Digits(p.clone()));
            } else if let (false, Ok(Source::Mnist(dir))) = (is_file, Source::detect(p)) {
                inputs.extend(mnist::images_files(&dir).into_iter().map(Self::Digits));
            } else {
                inputs.push(Self::Images(super::FileList::open(std::slice::from_ref(
                    p,
                ))?));
            }
        }
        Ok(inputs)
    }

    /// The samples, for a model whose input is `input` ((H, W, C) images or (L, C) sequences);
    /// a source the model cannot take is refused, naming the file and both shapes.
    pub fn open(self, input: &[usize]) -> Result<Arc<dyn Dataset>, DataError> {
        let refuse = |path: &Path, holds: String| {
            DataError::Invalid(format!(
                "{}: {holds}, the model takes {}",
                path.display(),
                describe_input(input)
            ))
        };
        match (self, input) {
            (Self::Images(files), &[h, w, c]) => Ok(Arc::new(files.sized((h, w), c)?)),
            (Self::Images(files), _) => Err(refuse(files.path(0), "images".into())),
            (Self::Digits(path), _) => {
                let ds = mnist::load_images(&path)?;
                let (h, w, c) = ds.sample_shape();
                if input != [h, w, c] {
                    return Err(refuse(&path, format!("MNIST digits of {h}x{w}x{c}")));
                }
                Ok(Arc::new(ds))
            }
            (Self::Rows(path), &[len, 1]) => Ok(Arc::new(CsvDataset::read_unlabelled(&path, len)?)),
            (Self::Rows(path), _) => Err(refuse(&path, "sequences (CSV rows)".into())),
        }
    }
}

/// "150x150x3 images", "sequences of 64 values".
fn describe_input(input: &[usize]) -> String {
    match *input {
        [h, w, c] => format!("{h}x{w}x{c} images"),
        [len, 1] => format!("sequences of {len} values"),
        _ => format!("inputs of shape {input:?}"),
    }
}
