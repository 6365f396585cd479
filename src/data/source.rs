//! What a `--data` path holds, answered once for every command: a CSV file of sequences, a
//! folder of train/ and validation/ (and test/) class folders, or a folder of MNIST IDX files.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::csv::CsvDataset;
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
}

/// The splits a source gives.
pub struct Splits {
    pub train: Arc<dyn Dataset>,
    pub validation: Arc<dyn Dataset>,
    pub test: Option<Arc<dyn Dataset>>,
}

impl Source {
    /// Which kind `path` holds; an error names the path and the three kinds accepted.
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
        } else {
            Err(DataError::Invalid(format!(
                "{}: expected train/ and validation/ class folders, MNIST IDX files, or a .csv file",
                path.display()
            )))
        }
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
            Self::ImageFolders(dir) => {
                let (h, w, c) = image.ok_or_else(|| {
                    DataError::Invalid(format!(
                        "{}: class folders of images need an image size to decode to",
                        dir.display()
                    ))
                })?;
                let open = |split: &str| -> Result<Arc<dyn Dataset>, DataError> {
                    let ds = DirectoryDataset::open(&dir.join(split), (h, w), 2)?;
                    Ok(Arc::new(if c == 1 { ds.grayscale() } else { ds }))
                };
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
