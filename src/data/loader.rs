//! Streaming batches: worker threads decode, resize, augment and preprocess samples into ready
//! NHWC batches in a bounded prefetch queue, so the GPU never waits on the disk and the dataset
//! never has to fit in memory.
//!
//! Determinism: the epoch's order comes from (seed, epoch) and each sample's augmentation from
//! (seed, epoch, sample index); batches are handed out in order whatever worker finished first.
//! The same seed therefore gives the same batches for any number of workers.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::augment::Augment;
use super::dataset::Dataset;
use super::image_io::{Image, Preprocessing};
use super::{mix, DataError};
use crate::gpu::Gpu;
use crate::tensor::Tensor;

/// How a loader batches a dataset.
#[derive(Clone, Debug)]
pub struct LoaderConfig {
    pub batch_size: usize,
    /// Reshuffle every epoch (training); off keeps the dataset order (evaluation).
    pub shuffle: bool,
    pub seed: u64,
    /// Training-time augmentation; None for validation and test data.
    pub augment: Option<Augment>,
    pub preprocessing: Preprocessing,
    /// Decoding threads; 0 means one per core.
    pub workers: usize,
    /// Ready batches kept ahead of the consumer.
    pub prefetch: usize,
    /// Bytes of decoded, resized images kept in memory between epochs (0: no cache).
    pub cache_bytes: u64,
    /// Fail on an unreadable image instead of skipping it with a warning.
    pub strict: bool,
}

impl LoaderConfig {
    /// Training batches: shuffled, optionally augmented.
    pub fn training(
        batch_size: usize,
        seed: u64,
        preprocessing: Preprocessing,
        augment: Option<Augment>,
    ) -> Self {
        Self {
            batch_size,
            shuffle: true,
            seed,
            augment,
            preprocessing,
            workers: 0,
            prefetch: 4,
            cache_bytes: 0,
            strict: false,
        }
    }

    /// Validation / test batches: dataset order, never augmented.
    pub fn evaluation(batch_size: usize, preprocessing: Preprocessing) -> Self {
        Self {
            shuffle: false,
            augment: None,
            ..Self::training(batch_size, 0, preprocessing, None)
        }
    }
}

/// One batch: images (N,H,W,C) and labels (N, label width), f32.
#[derive(Clone, Debug)]
pub struct Batch {
    /// Position of this batch in its epoch.
    pub index: usize,
    pub shape: [usize; 4],
    pub images: Vec<f32>,
    pub label_width: usize,
    pub labels: Vec<f32>,
    /// Dataset indices of the samples, in batch order.
    pub samples: Vec<usize>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.shape[0]
    }
    pub fn is_empty(&self) -> bool {
        self.shape[0] == 0
    }
    /// Uploads images and labels: one copy each, recorded in the pending encoder.
    pub fn upload(&self, gpu: &Gpu) -> Result<(Tensor, Tensor), DataError> {
        let x = Tensor::from_slice(gpu, self.shape, &self.images)?;
        let y = Tensor::from_slice(gpu, [self.len(), self.label_width], &self.labels)?;
        Ok((x, y))
    }
}

#[derive(Default)]
struct Cache {
    images: HashMap<usize, Arc<Image>>,
    bytes: u64,
}

struct Shared {
    dataset: Arc<dyn Dataset>,
    cfg: LoaderConfig,
    cache: Mutex<Cache>,
    bad: Mutex<BTreeSet<String>>,
}

/// Batches of a dataset, epoch after epoch.
#[derive(Clone)]
pub struct Loader {
    shared: Arc<Shared>,
}

impl Loader {
    pub fn new(dataset: Arc<dyn Dataset>, cfg: LoaderConfig) -> Result<Self, DataError> {
        if cfg.batch_size == 0 {
            return Err(DataError::Invalid("batch size must be at least 1".into()));
        }
        if let Some(a) = &cfg.augment {
            a.validate()?;
        }
        if dataset.is_empty() {
            return Err(DataError::Invalid("the dataset has no samples".into()));
        }
        Ok(Self {
            shared: Arc::new(Shared {
                dataset,
                cfg,
                cache: Mutex::new(Cache::default()),
                bad: Mutex::new(BTreeSet::new()),
            }),
        })
    }

    pub fn dataset(&self) -> &Arc<dyn Dataset> {
        &self.shared.dataset
    }

    pub fn config(&self) -> &LoaderConfig {
        &self.shared.cfg
    }

    pub fn batches_per_epoch(&self) -> usize {
        self.shared
            .dataset
            .len()
            .div_ceil(self.shared.cfg.batch_size)
    }

    /// The files skipped so far because they could not be read.
    pub fn skipped(&self) -> Vec<String> {
        self.shared
            .bad
            .lock()
            .expect("bad-file lock")
            .iter()
            .cloned()
            .collect()
    }

    /// Bytes of decoded images held by the cache.
    pub fn cached_bytes(&self) -> u64 {
        self.shared.cache.lock().expect("cache lock").bytes
    }

    /// The sample order of `epoch`.
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.shared.dataset.len()).collect();
        if self.shared.cfg.shuffle {
            let mut rng = ChaCha8Rng::seed_from_u64(mix(self.shared.cfg.seed, 0x5EED_0000 + epoch));
            order.shuffle(&mut rng);
        }
        order
    }

    /// Starts producing the batches of `epoch` on worker threads.
    pub fn epoch(&self, epoch: u64) -> Epoch {
        let cfg = &self.shared.cfg;
        let order = Arc::new(self.order(epoch));
        let total = self.batches_per_epoch();
        let workers = if cfg.workers == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            cfg.workers
        }
        .min(total.max(1));
        let (tx, rx) = sync_channel(cfg.prefetch.max(1));
        let next = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let handles = (0..workers)
            .map(|w| {
                let (shared, order, next, stop, tx) = (
                    self.shared.clone(),
                    order.clone(),
                    next.clone(),
                    stop.clone(),
                    tx.clone(),
                );
                std::thread::Builder::new()
                    .name(format!("loader-{w}"))
                    .spawn(move || loop {
                        let b = next.fetch_add(1, Ordering::Relaxed);
                        if b >= total || stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let batch = shared.build(epoch, b, &order);
                        if tx.send((b, batch)).is_err() {
                            break;
                        }
                    })
                    .expect("spawn loader thread")
            })
            .collect();
        Epoch {
            rx,
            pending: BTreeMap::new(),
            next: 0,
            total,
            stop,
            handles,
        }
    }
}

impl Shared {
    fn sample(&self, i: usize) -> Result<Arc<Image>, DataError> {
        if let Some(img) = self.cache.lock().expect("cache lock").images.get(&i) {
            return Ok(img.clone());
        }
        let img = Arc::new(self.dataset.load(i)?);
        if self.cfg.cache_bytes > 0 {
            let mut cache = self.cache.lock().expect("cache lock");
            let size = img.bytes() as u64;
            if cache.bytes + size <= self.cfg.cache_bytes && !cache.images.contains_key(&i) {
                cache.bytes += size;
                cache.images.insert(i, img.clone());
            }
        }
        Ok(img)
    }

    fn build(&self, epoch: u64, b: usize, order: &[usize]) -> Result<Batch, DataError> {
        let (h, w, c) = self.dataset.sample_shape();
        let kind = self.dataset.label_kind();
        let lw = kind.width();
        let bs = self.cfg.batch_size;
        let idx = &order[b * bs..((b + 1) * bs).min(order.len())];
        let mut images = Vec::with_capacity(idx.len() * h * w * c);
        let mut labels = Vec::with_capacity(idx.len() * lw);
        let mut samples = Vec::with_capacity(idx.len());
        let mut scratch = vec![0.0f32; h * w * c];
        for &i in idx {
            if let Some(values) = self.dataset.values_in_epoch(i, epoch) {
                // Real-valued samples: no decoding, no augmentation, no pixel preprocessing.
                if values.len() != h * w * c {
                    return Err(DataError::Invalid(format!(
                        "{} has {} values, expected {}",
                        self.dataset.describe(i),
                        values.len(),
                        h * w * c
                    )));
                }
                images.extend_from_slice(&values);
                let l0 = labels.len();
                labels.resize(l0 + lw, 0.0);
                kind.encode(self.dataset.class_of(i), &mut labels[l0..]);
                samples.push(i);
                continue;
            }
            let img = match self.sample(i) {
                Ok(img) => img,
                Err(e)
                    if !self.cfg.strict
                        && matches!(e, DataError::Decode { .. } | DataError::Io { .. }) =>
                {
                    let name = self.dataset.describe(i);
                    if self.bad.lock().expect("bad-file lock").insert(name) {
                        tracing::warn!("skipping unreadable image: {e}");
                    }
                    continue;
                }
                Err(e) => return Err(e),
            };
            if (img.h, img.w, img.c) != (h, w, c) {
                return Err(DataError::Invalid(format!(
                    "{} is {}x{}x{}, the dataset's samples are {h}x{w}x{c}",
                    self.dataset.describe(i),
                    img.h,
                    img.w,
                    img.c
                )));
            }
            let start = images.len();
            match &self.cfg.augment {
                Some(aug) => {
                    let src = img.to_f32();
                    aug.transform_for(self.cfg.seed, epoch, i as u64, h, w)
                        .apply(&src, h, w, c, aug.fill_mode, &mut scratch);
                    images.extend_from_slice(&scratch);
                }
                None => images.extend(img.data.iter().map(|&v| f32::from(v))),
            }
            self.cfg.preprocessing.apply(&mut images[start..], c);
            let l0 = labels.len();
            labels.resize(l0 + lw, 0.0);
            kind.encode(self.dataset.class_of(i), &mut labels[l0..]);
            samples.push(i);
        }
        Ok(Batch {
            index: b,
            shape: [samples.len(), h, w, c],
            images,
            label_width: lw,
            labels,
            samples,
        })
    }
}

/// The batches of one epoch, in order. Dropping it stops the workers.
pub struct Epoch {
    rx: Receiver<(usize, Result<Batch, DataError>)>,
    pending: BTreeMap<usize, Result<Batch, DataError>>,
    next: usize,
    total: usize,
    stop: Arc<AtomicBool>,
    handles: Vec<JoinHandle<()>>,
}

impl Epoch {
    pub fn total(&self) -> usize {
        self.total
    }
}

impl Iterator for Epoch {
    type Item = Result<Batch, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        while self.next < self.total {
            while !self.pending.contains_key(&self.next) {
                match self.rx.recv() {
                    Ok((b, batch)) => {
                        self.pending.insert(b, batch);
                    }
                    Err(_) => return None,
                }
            }
            let batch = self.pending.remove(&self.next).expect("pending batch");
            self.next += 1;
            match batch {
                // A batch whose every file was unreadable is skipped, not handed out empty.
                Ok(b) if b.is_empty() => continue,
                other => return Some(other),
            }
        }
        None
    }
}

impl Drop for Epoch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Unblock workers waiting on a full queue, then wait for them.
        while self.rx.try_recv().is_ok() {}
        for h in self.handles.drain(..) {
            while !h.is_finished() {
                while self.rx.try_recv().is_ok() {}
                std::thread::yield_now();
            }
            let _ = h.join();
        }
    }
}
