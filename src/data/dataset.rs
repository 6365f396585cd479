//! Datasets: folders of images, one sub-folder per class (Keras' `image_dataset_from_directory`),
//! and in-memory image sets (MNIST).

use std::path::{Path, PathBuf};

use super::image_io::{self, Image};
use super::DataError;

/// How labels are encoded for the loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum LabelKind {
    /// One value per sample, 0 or 1 (two classes).
    Binary,
    /// One-hot over this many classes.
    Categorical(usize),
}

impl LabelKind {
    /// Values per sample in a label batch.
    pub fn width(self) -> usize {
        match self {
            LabelKind::Binary => 1,
            LabelKind::Categorical(k) => k,
        }
    }

    /// Writes the encoding of class `class` into `out` (`width()` values).
    pub fn encode(self, class: usize, out: &mut [f32]) {
        match self {
            LabelKind::Binary => out[0] = class as f32,
            LabelKind::Categorical(_) => {
                out.fill(0.0);
                out[class] = 1.0;
            }
        }
    }
}

/// A source of labelled images at one size.
pub trait Dataset: Send + Sync {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// (H, W, C) of every sample.
    fn sample_shape(&self) -> (usize, usize, usize);
    fn label_kind(&self) -> LabelKind;
    fn class_names(&self) -> &[String];
    /// Class index of sample `i`.
    fn class_of(&self, i: usize) -> usize;
    /// The decoded, resized sample `i`.
    fn load(&self, i: usize) -> Result<Image, DataError>;
    /// Real-valued samples (sequences) bypass the 8-bit image path: the values as they are,
    /// (H*W*C). None for image datasets.
    fn values(&self, _i: usize) -> Option<Vec<f32>> {
        None
    }
    /// [`Self::values`] as epoch `epoch` (0-based) sees them: the same in every epoch, except
    /// for [`Views`], which holds one precomputed version of each sample per epoch.
    fn values_in_epoch(&self, i: usize, _epoch: u64) -> Option<Vec<f32>> {
        self.values(i)
    }
    /// A name for messages (the file path for image folders).
    fn describe(&self, i: usize) -> String;
}

/// Datasets one after another, as one (`evaluate --split all`). Every part has the classes,
/// labels and sample shape of the first; [`Concat::new`] refuses parts that differ.
pub struct Concat {
    parts: Vec<std::sync::Arc<dyn Dataset>>,
    /// `starts[k]`: the index of part k's first sample.
    starts: Vec<usize>,
}

impl Concat {
    /// `parts` with their names (for the refusal), at least one.
    pub fn new(parts: Vec<(String, std::sync::Arc<dyn Dataset>)>) -> Result<Self, DataError> {
        let Some((first_name, first)) = parts.first() else {
            return Err(DataError::Invalid("no datasets to put together".into()));
        };
        for (name, p) in &parts[1..] {
            if p.class_names() != first.class_names()
                || p.label_kind() != first.label_kind()
                || p.sample_shape() != first.sample_shape()
            {
                return Err(DataError::Invalid(format!(
                    "{name} (classes [{}], samples {:?}) does not match {first_name} (classes [{}], samples {:?}); they cannot be evaluated as one",
                    p.class_names().join(", "),
                    p.sample_shape(),
                    first.class_names().join(", "),
                    first.sample_shape()
                )));
            }
        }
        Ok(Self::unlabelled(
            parts.into_iter().map(|(_, p)| p).collect(),
        ))
    }

    /// `parts` of one sample shape whose labels do not matter (`predict`'s inputs), at least
    /// one; the classes are the first part's.
    pub fn unlabelled(parts: Vec<std::sync::Arc<dyn Dataset>>) -> Self {
        assert!(!parts.is_empty(), "Concat of no datasets");
        let mut starts = Vec::with_capacity(parts.len());
        let mut n = 0;
        for p in &parts {
            starts.push(n);
            n += p.len();
        }
        Self { parts, starts }
    }

    /// The part sample `i` is in, and its index there.
    fn locate(&self, i: usize) -> (&dyn Dataset, usize) {
        let k = self.starts.partition_point(|&s| s <= i) - 1;
        (self.parts[k].as_ref(), i - self.starts[k])
    }
}

impl Dataset for Concat {
    fn len(&self) -> usize {
        self.parts.iter().map(|p| p.len()).sum()
    }
    fn sample_shape(&self) -> (usize, usize, usize) {
        self.parts[0].sample_shape()
    }
    fn label_kind(&self) -> LabelKind {
        self.parts[0].label_kind()
    }
    fn class_names(&self) -> &[String] {
        self.parts[0].class_names()
    }
    fn class_of(&self, i: usize) -> usize {
        let (p, j) = self.locate(i);
        p.class_of(j)
    }
    fn load(&self, i: usize) -> Result<Image, DataError> {
        let (p, j) = self.locate(i);
        p.load(j)
    }
    fn values(&self, i: usize) -> Option<Vec<f32>> {
        let (p, j) = self.locate(i);
        p.values(j)
    }
    fn values_in_epoch(&self, i: usize, epoch: u64) -> Option<Vec<f32>> {
        let (p, j) = self.locate(i);
        p.values_in_epoch(j, epoch)
    }
    fn describe(&self, i: usize) -> String {
        let (p, j) = self.locate(i);
        p.describe(j)
    }
}

/// A folder with one sub-folder of images per class. Class names are the sorted sub-folder
/// names; files are taken in sorted order inside each class.
pub struct DirectoryDataset {
    root: PathBuf,
    classes: Vec<String>,
    items: Vec<(PathBuf, usize)>,
    size: (usize, usize),
    channels: usize,
    labels: LabelKind,
    /// Entries named like images that are not readable files (a symlink loop, a dangling
    /// link, a folder), with why: left out, each with a warning.
    unreadable: Vec<(PathBuf, String)>,
}

impl DirectoryDataset {
    /// Scans `root`. Two classes give binary labels, more give categorical ones. Errors, before any
    /// work starts: a missing folder, no class sub-folders, an empty class, or fewer classes than
    /// `min_classes`.
    pub fn open(root: &Path, size: (usize, usize), min_classes: usize) -> Result<Self, DataError> {
        super::image_io::check_size(size, 3)?;
        if !root.is_dir() {
            return Err(DataError::MissingFolder(root.to_path_buf()));
        }
        let mut classes: Vec<String> = std::fs::read_dir(root)
            .map_err(super::io_err(root))?
            .filter_map(Result::ok)
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| !n.starts_with('.'))
            .collect();
        classes.sort();
        if classes.is_empty() {
            return Err(DataError::NoClasses(root.to_path_buf()));
        }
        if classes.len() < min_classes {
            return Err(DataError::TooFewClasses {
                path: root.to_path_buf(),
                found: classes.len(),
                names: classes.join(", "),
            });
        }
        let mut items = Vec::new();
        let mut unreadable = Vec::new();
        for (label, name) in classes.iter().enumerate() {
            let dir = root.join(name);
            let mut files = Vec::new();
            for entry in std::fs::read_dir(&dir).map_err(super::io_err(&dir))? {
                let p = entry.map_err(super::io_err(&dir))?.path();
                if !image_io::is_image_path(&p) {
                    continue;
                }
                match unreadable_why(&p) {
                    None => files.push(p),
                    Some(why) => unreadable.push((p, why)),
                }
            }
            if files.is_empty() {
                return Err(DataError::EmptyClass(dir));
            }
            files.sort_by_cached_key(|p| natural_key(p));
            items.extend(files.into_iter().map(|f| (f, label)));
        }
        let labels = if classes.len() == 2 {
            LabelKind::Binary
        } else {
            LabelKind::Categorical(classes.len())
        };
        for (p, why) in &unreadable {
            tracing::warn!("left out {}: {why}", p.display());
        }
        Ok(Self {
            root: root.to_path_buf(),
            classes,
            items,
            size,
            channels: 3,
            labels,
            unreadable,
        })
    }

    /// Entries named like images that were left out because they are not readable files (a
    /// symlink loop, a dangling link, a folder), with why.
    pub fn unreadable(&self) -> &[(PathBuf, String)] {
        &self.unreadable
    }

    /// Keeps `n` samples spread evenly over the dataset (every class stays represented).
    pub fn subsample(mut self, n: usize) -> Self {
        if n < self.items.len() {
            let len = self.items.len();
            self.items = (0..n).map(|k| self.items[k * len / n].clone()).collect();
        }
        self
    }

    /// Load images as gray (1 channel) instead of RGB.
    pub fn grayscale(mut self) -> Self {
        self.channels = 1;
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn path(&self, i: usize) -> &Path {
        &self.items[i].0
    }

    /// Samples per class, in class order.
    pub fn counts(&self) -> Vec<usize> {
        let mut c = vec![0; self.classes.len()];
        for (_, l) in &self.items {
            c[*l] += 1;
        }
        c
    }
}

/// Why an entry named like an image is not a readable file (a folder, a dangling link, a link
/// loop), or None where it is one. `metadata` follows links, so a loop or a dangling link
/// fails here.
fn unreadable_why(p: &Path) -> Option<String> {
    match std::fs::metadata(p) {
        Ok(m) if m.is_file() => None,
        Ok(_) => Some("not a file".to_string()),
        Err(e) => Some(e.to_string()),
    }
}

/// Sort key that orders cat.2.jpg before cat.10.jpg (digit runs compare as numbers).
fn natural_key(p: &Path) -> Vec<(u64, String)> {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut key = Vec::new();
    let mut text = String::new();
    let mut num: Option<u64> = None;
    for ch in name.chars() {
        if let Some(d) = ch.to_digit(10) {
            num = Some(
                num.unwrap_or(0)
                    .saturating_mul(10)
                    .saturating_add(u64::from(d)),
            );
        } else {
            if let Some(n) = num.take() {
                key.push((n, std::mem::take(&mut text)));
            }
            text.push(ch);
        }
    }
    key.push((num.unwrap_or(0), text));
    key
}

impl Dataset for DirectoryDataset {
    fn len(&self) -> usize {
        self.items.len()
    }
    fn sample_shape(&self) -> (usize, usize, usize) {
        (self.size.0, self.size.1, self.channels)
    }
    fn label_kind(&self) -> LabelKind {
        self.labels
    }
    fn class_names(&self) -> &[String] {
        &self.classes
    }
    fn class_of(&self, i: usize) -> usize {
        self.items[i].1
    }
    fn load(&self, i: usize) -> Result<Image, DataError> {
        image_io::load(&self.items[i].0, self.size, self.channels)
    }
    fn describe(&self, i: usize) -> String {
        self.items[i].0.display().to_string()
    }
}

/// Unlabelled image files, as `predict` takes them: files named one by one (any name; the
/// format is sniffed from the bytes) and the images in folders, each folder walked with its
/// sub-folders in sorted order. Every sample is class 0.
pub struct FileList {
    files: Vec<PathBuf>,
    size: (usize, usize),
    channels: usize,
}

impl FileList {
    /// Expands `inputs` into files. Errors, before any image is decoded: a path that does not
    /// exist (or cannot be read), and a folder with no images in it or below it. Entries of a
    /// folder named like images that are not readable files (a dangling link) are left out
    /// with a warning, as [`DirectoryDataset::open`] does; links to folders are not followed,
    /// so a link loop cannot make the walk endless. The images decode as RGB at 150x150
    /// until [`FileList::sized`] says otherwise.
    pub fn open(inputs: &[PathBuf]) -> Result<Self, DataError> {
        let mut files = Vec::new();
        for input in inputs {
            let meta = std::fs::metadata(input).map_err(super::io_err(input))?;
            if meta.is_dir() {
                let before = files.len();
                walk(input, &mut files)?;
                if files.len() == before {
                    return Err(DataError::NoImages(input.clone()));
                }
            } else {
                files.push(input.clone());
            }
        }
        Ok(Self {
            files,
            size: (150, 150),
            channels: 3,
        })
    }

    /// The same files, decoded to (H,W) = `size` with `channels` channels (3 or 1).
    pub fn sized(mut self, size: (usize, usize), channels: usize) -> Result<Self, DataError> {
        image_io::check_size(size, channels)?;
        (self.size, self.channels) = (size, channels);
        Ok(self)
    }

    pub fn path(&self, i: usize) -> &Path {
        &self.files[i]
    }
}

/// Appends the images under `dir` to `files`: its own files in natural order, then each
/// sub-folder's in sorted order. Hidden entries are skipped.
fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> Result<(), DataError> {
    let mut here = Vec::new();
    let mut below = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(super::io_err(dir))? {
        let entry = entry.map_err(super::io_err(dir))?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let p = entry.path();
        let kind = entry.file_type().map_err(super::io_err(&p))?;
        if kind.is_dir() {
            below.push(p);
        } else if image_io::is_image_path(&p) {
            match unreadable_why(&p) {
                None => here.push(p),
                Some(why) => tracing::warn!("left out {}: {why}", p.display()),
            }
        }
    }
    here.sort_by_cached_key(|p| natural_key(p));
    files.extend(here);
    below.sort_by_cached_key(|p| natural_key(p));
    for sub in below {
        walk(&sub, files)?;
    }
    Ok(())
}

impl Dataset for FileList {
    fn len(&self) -> usize {
        self.files.len()
    }
    fn sample_shape(&self) -> (usize, usize, usize) {
        (self.size.0, self.size.1, self.channels)
    }
    fn label_kind(&self) -> LabelKind {
        LabelKind::Binary
    }
    fn class_names(&self) -> &[String] {
        &[]
    }
    fn class_of(&self, _i: usize) -> usize {
        0
    }
    fn load(&self, i: usize) -> Result<Image, DataError> {
        image_io::load(&self.files[i], self.size, self.channels)
    }
    fn describe(&self, i: usize) -> String {
        self.files[i].display().to_string()
    }
}

/// Real-valued samples in memory, (H,W,C) each: cached VGG16 features, for instance.
#[derive(Clone)]
pub struct TensorDataset {
    pub values: Vec<f32>,
    pub sample: (usize, usize, usize),
    pub classes: Vec<usize>,
    pub class_names: Vec<String>,
    pub labels: LabelKind,
    pub name: String,
}

impl Dataset for TensorDataset {
    fn len(&self) -> usize {
        self.classes.len()
    }
    fn sample_shape(&self) -> (usize, usize, usize) {
        self.sample
    }
    fn label_kind(&self) -> LabelKind {
        self.labels
    }
    fn class_names(&self) -> &[String] {
        &self.class_names
    }
    fn class_of(&self, i: usize) -> usize {
        self.classes[i]
    }
    fn load(&self, _i: usize) -> Result<Image, DataError> {
        Err(DataError::Invalid(format!(
            "{} holds real values, not images",
            self.name
        )))
    }
    fn values(&self, i: usize) -> Option<Vec<f32>> {
        let per = self.sample.0 * self.sample.1 * self.sample.2;
        Some(self.values[i * per..(i + 1) * per].to_vec())
    }
    fn describe(&self, i: usize) -> String {
        format!("{} sample {i}", self.name)
    }
}

/// Views of the same samples, one per epoch: epoch e reads view `e % len` (0-based). Cached
/// features of augmented images are views: view v holds each image as the loader's augmentation
/// makes it in epoch v, so training on the views is training on augmented images streamed from
/// disk for the first `len` epochs, without running the frozen layers again.
pub struct Views {
    views: Vec<TensorDataset>,
}

impl Views {
    /// Refuses no views, and views that differ in length, sample shape, classes or labels.
    pub fn new(views: Vec<TensorDataset>) -> Result<Self, DataError> {
        let first = views
            .first()
            .ok_or_else(|| DataError::Invalid("no views".into()))?;
        for v in &views[1..] {
            if v.len() != first.len()
                || v.sample != first.sample
                || v.classes != first.classes
                || v.class_names != first.class_names
                || v.labels != first.labels
            {
                return Err(DataError::Invalid(format!(
                    "view {} does not hold the samples of view {} ({} samples of {:?}, against {} of {:?}, or other labels)",
                    v.name,
                    first.name,
                    v.len(),
                    v.sample,
                    first.len(),
                    first.sample
                )));
            }
        }
        Ok(Self { views })
    }

    pub fn count(&self) -> usize {
        self.views.len()
    }

    fn first(&self) -> &TensorDataset {
        &self.views[0]
    }
}

impl Dataset for Views {
    fn len(&self) -> usize {
        self.first().len()
    }
    fn sample_shape(&self) -> (usize, usize, usize) {
        self.first().sample
    }
    fn label_kind(&self) -> LabelKind {
        self.first().labels
    }
    fn class_names(&self) -> &[String] {
        &self.first().class_names
    }
    fn class_of(&self, i: usize) -> usize {
        self.first().classes[i]
    }
    fn load(&self, i: usize) -> Result<Image, DataError> {
        self.first().load(i)
    }
    fn values(&self, i: usize) -> Option<Vec<f32>> {
        self.first().values(i)
    }
    fn values_in_epoch(&self, i: usize, epoch: u64) -> Option<Vec<f32>> {
        let k = (epoch % self.views.len() as u64) as usize;
        self.views[k].values(i)
    }
    fn describe(&self, i: usize) -> String {
        format!("{} ({} views)", self.first().describe(i), self.views.len())
    }
}

/// Images already in memory (MNIST, synthetic test sets).
pub struct MemoryDataset {
    pub images: Vec<Image>,
    pub classes: Vec<usize>,
    pub class_names: Vec<String>,
    pub labels: LabelKind,
    pub name: String,
}

impl MemoryDataset {
    /// The samples in `range`, as a new dataset (for train / validation splits).
    pub fn slice(&self, range: std::ops::Range<usize>) -> MemoryDataset {
        MemoryDataset {
            images: self.images[range.clone()].to_vec(),
            classes: self.classes[range.clone()].to_vec(),
            class_names: self.class_names.clone(),
            labels: self.labels,
            name: format!("{}[{}..{}]", self.name, range.start, range.end),
        }
    }
}

impl Dataset for MemoryDataset {
    fn len(&self) -> usize {
        self.images.len()
    }
    fn sample_shape(&self) -> (usize, usize, usize) {
        self.images.first().map_or((0, 0, 0), |i| (i.h, i.w, i.c))
    }
    fn label_kind(&self) -> LabelKind {
        self.labels
    }
    fn class_names(&self) -> &[String] {
        &self.class_names
    }
    fn class_of(&self, i: usize) -> usize {
        self.classes[i]
    }
    fn load(&self, i: usize) -> Result<Image, DataError> {
        Ok(self.images[i].clone())
    }
    fn describe(&self, i: usize) -> String {
        format!("{} sample {i}", self.name)
    }
}
