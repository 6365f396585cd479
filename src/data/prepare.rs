//! `cnn-wgpu prepare`: the Kaggle "Dogs vs. Cats" flat folder (`cat.0.jpg`, `dog.0.jpg`, ...) to
//! `train|validation|test/{cats,dogs}/` exactly as the book does: per class, indices
//! [0, train) go to train, the next `validation` to validation, the next `test` to test.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::DataError;

/// How many images per class each split gets.
#[derive(Clone, Copy, Debug)]
pub struct Split {
    pub train: usize,
    pub validation: usize,
    pub test: usize,
}

impl Default for Split {
    /// The book's split: 1000 / 500 / 500 per class.
    fn default() -> Self {
        Self {
            train: 1000,
            validation: 500,
            test: 500,
        }
    }
}

/// What `prepare` did: (split, class folder) -> images now there; and how many it copied.
#[derive(Debug, Default)]
pub struct Prepared {
    pub counts: BTreeMap<(String, String), usize>,
    pub copied: usize,
    pub already_there: usize,
}

/// Classes of the flat layout: file-name prefixes before `.N.ext`, with their indices.
fn scan(from: &Path) -> Result<BTreeMap<String, BTreeMap<usize, PathBuf>>, DataError> {
    if !from.is_dir() {
        return Err(DataError::MissingFolder(from.to_path_buf()));
    }
    let mut classes: BTreeMap<String, BTreeMap<usize, PathBuf>> = BTreeMap::new();
    for entry in std::fs::read_dir(from).map_err(super::io_err(from))? {
        let path = entry.map_err(super::io_err(from))?.path();
        if !path.is_file() || !super::image_io::is_image_path(&path) {
            continue;
        }
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let mut parts = name.splitn(3, '.');
        if let (Some(prefix), Some(idx), Some(_ext)) = (parts.next(), parts.next(), parts.next()) {
            if let Ok(i) = idx.parse::<usize>() {
                classes
                    .entry(prefix.to_string())
                    .or_default()
                    .insert(i, path.clone());
            }
        }
    }
    if classes.is_empty() {
        return Err(DataError::NoClasses(from.to_path_buf()));
    }
    Ok(classes)
}

/// Copies the split into `to`. Running it twice is harmless (identical files are left alone);
/// a different file already at a destination is an error naming it, and nothing is overwritten.
/// Every class must have images 0..train+validation+test-1, else an error says how many exist.
pub fn prepare(from: &Path, to: &Path, split: Split) -> Result<Prepared, DataError> {
    let classes = scan(from)?;
    let needed = split.train + split.validation + split.test;
    // Check everything before copying anything.
    for (class, files) in &classes {
        let present = (0..needed).take_while(|i| files.contains_key(i)).count();
        if present < needed {
            return Err(DataError::TooFewImages {
                dir: from.to_path_buf(),
                class: class.clone(),
                needed,
                found: present,
            });
        }
    }
    let mut plan = Vec::new();
    for (class, files) in &classes {
        let folder = format!("{class}s");
        let ranges = [
            ("train", 0..split.train),
            ("validation", split.train..split.train + split.validation),
            ("test", split.train + split.validation..needed),
        ];
        for (name, range) in ranges {
            for i in range {
                let src = &files[&i];
                let dst = to
                    .join(name)
                    .join(&folder)
                    .join(src.file_name().expect("file name"));
                plan.push((name, folder.clone(), src.clone(), dst));
            }
        }
    }
    // Conflicts first, so a refused run changes nothing.
    let mut same = vec![false; plan.len()];
    for (k, (_, _, src, dst)) in plan.iter().enumerate() {
        if dst.exists() {
            let a = std::fs::read(src).map_err(super::io_err(src))?;
            let b = std::fs::read(dst).map_err(super::io_err(dst))?;
            if a != b {
                return Err(DataError::Conflict(dst.clone()));
            }
            same[k] = true;
        }
    }
    let mut out = Prepared::default();
    for ((split_name, folder, src, dst), same) in plan.into_iter().zip(same) {
        if same {
            out.already_there += 1;
        } else {
            let dir = dst.parent().expect("destination folder");
            std::fs::create_dir_all(dir).map_err(super::io_err(dir))?;
            // Copy to a temporary name and rename, so an interrupted run never leaves a partial
            // image under the real name.
            let tmp = dst.with_extension("partial");
            std::fs::copy(&src, &tmp).map_err(super::io_err(&tmp))?;
            std::fs::rename(&tmp, &dst).map_err(super::io_err(&dst))?;
            out.copied += 1;
        }
        *out.counts
            .entry((split_name.to_string(), folder))
            .or_default() += 1;
    }
    Ok(out)
}

/// True when `dir` looks like the flat Kaggle layout rather than prepared split folders.
pub fn is_flat_layout(dir: &Path) -> bool {
    !dir.join("train").is_dir() && scan(dir).is_ok()
}
