//! The tuning cache: choices no fixed rule gets right on every adapter, measured once per shape
//! and kept on disk per adapter and driver. The one tuned so far is how far to split a weight
//! gradient's long sum over workgroups: the default splits only what would leave the adapter's
//! threads idle, a guess on a GPU (`Gpu::parallelism_hint`); on lavapipe the best split differed
//! from layer to layer (BENCHMARKS.md, the tuned kernel-gradient split).
//!
//! Modes (`DeviceOptions::tune`: `CNN_WGPU_TUNE`, or `--tune` on the command line): `0`/`off`
//! ignores the file; unset, cached choices are used and everything else keeps its default;
//! `1`/`measure` also times the candidates of every choice the file does not hold yet and saves
//! the winner. The file is `DeviceOptions::tune_cache` (`$CNN_WGPU_TUNE_CACHE`), else
//! `<cache dir>/cnn-wgpu/tune-<adapter>-<driver>.json`. A file that cannot be read or parsed is
//! reported (naming it) and ignored: tuning never stops a run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::Mutex;

use super::{Gpu, GpuError};

/// What the tuning cache does (`DeviceOptions::tune`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TuneMode {
    /// Defaults only; the file is not read.
    Off,
    /// Cached choices where the file has them, defaults elsewhere.
    Cached,
    /// As `Cached`, and choices the file lacks are measured and saved.
    Measure,
}

pub(crate) struct Tuner {
    mode: AtomicU8,
    path: Option<PathBuf>,
    choices: Mutex<BTreeMap<String, u32>>,
    /// Measurements in progress (they nest: an algorithm's candidates tune their GEMMs).
    measuring: AtomicU32,
    /// Measurements in progress whose candidates keep their derivations
    /// ([`Gpu::tuned_keeping`]).
    keeping: AtomicU32,
}

/// Counts a measurement in progress while it lives, also when a candidate fails.
struct Measuring<'a>(&'a AtomicU32);

impl<'a> Measuring<'a> {
    fn start(count: &'a AtomicU32) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count)
    }
}

impl Drop for Measuring<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `<cache dir>/cnn-wgpu/tune-<adapter>-<driver>.json`, the names reduced to [a-z0-9-].
pub fn default_cache_path(info: &wgpu::AdapterInfo) -> Option<PathBuf> {
    let raw = format!(
        "{}-{:?}-{}-{}",
        info.name, info.backend, info.driver, info.driver_info
    );
    let mut slug = String::new();
    for c in raw.to_ascii_lowercase().chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.ends_with('-') {
            slug.push('-');
        }
    }
    let slug = slug.trim_matches('-');
    Some(
        dirs::cache_dir()?
            .join("cnn-wgpu")
            .join(format!("tune-{slug}.json")),
    )
}

fn load(path: &Path) -> BTreeMap<String, u32> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return BTreeMap::new(),
        Err(e) => {
            tracing::warn!("tuning cache {} unreadable, ignored: {e}", path.display());
            return BTreeMap::new();
        }
    };
    serde_json::from_str(&text).unwrap_or_else(|e| {
        tracing::warn!(
            "tuning cache {} is not a JSON map of choices, ignored (it is rewritten when a choice is measured): {e}",
            path.display()
        );
        BTreeMap::new()
    })
}

/// The tuning cache file of an adapter: `chosen` (`DeviceOptions::tune_cache`), else
/// [`default_cache_path`].
pub fn cache_path(info: &wgpu::AdapterInfo, chosen: Option<&Path>) -> Option<PathBuf> {
    chosen
        .map(Path::to_path_buf)
        .or_else(|| default_cache_path(info))
}

/// How many choices the tuning cache file at `path` holds (0 when it is missing or damaged).
pub fn cached_choices(path: &Path) -> usize {
    load(path).len()
}

impl Tuner {
    pub(crate) fn open(info: &wgpu::AdapterInfo, mode: TuneMode, chosen: Option<&Path>) -> Self {
        let path = cache_path(info, chosen);
        let choices = match (&path, mode) {
            (Some(p), TuneMode::Cached | TuneMode::Measure) => load(p),
            _ => BTreeMap::new(),
        };
        Self {
            mode: AtomicU8::new(mode as u8),
            path,
            choices: Mutex::new(choices),
            measuring: AtomicU32::new(0),
            keeping: AtomicU32::new(0),
        }
    }

    pub(crate) fn mode(&self) -> TuneMode {
        match self.mode.load(Ordering::Relaxed) {
            0 => TuneMode::Off,
            1 => TuneMode::Cached,
            _ => TuneMode::Measure,
        }
    }

    pub(crate) fn set_mode(&self, mode: TuneMode) {
        if mode != TuneMode::Off && self.mode() == TuneMode::Off {
            // Turned on after opening with tuning off: read the file now.
            if let Some(p) = &self.path {
                let mut c = self.choices.lock().expect("tuning cache lock");
                for (k, v) in load(p) {
                    c.entry(k).or_insert(v);
                }
            }
        }
        self.mode.store(mode as u8, Ordering::Relaxed);
    }

    pub(crate) fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The cached choice for `key`, unless tuning is off.
    pub(crate) fn get(&self, key: &str) -> Option<u32> {
        if self.mode() == TuneMode::Off {
            return None;
        }
        self.choices
            .lock()
            .expect("tuning cache lock")
            .get(key)
            .copied()
    }

    /// Keeps `value` for `key` and rewrites the file (a failed write is reported, not fatal).
    pub(crate) fn record(&self, key: &str, value: u32) {
        let mut c = self.choices.lock().expect("tuning cache lock");
        c.insert(key.to_string(), value);
        let Some(path) = &self.path else {
            return;
        };
        let json = serde_json::to_string_pretty(&*c).expect("choices serialise");
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| crate::atomic_file::write_atomic(path, json.as_bytes()));
        if let Err(e) = written {
            tracing::warn!(
                "tuning cache {}: could not save {key} = {value}: {e}",
                path.display()
            );
        }
    }
}

impl Gpu {
    /// How this device uses its tuning cache (`DeviceOptions::tune` at open).
    pub fn tune_mode(&self) -> TuneMode {
        self.tuner.mode()
    }

    pub fn set_tune_mode(&self, mode: TuneMode) {
        self.tuner.set_mode(mode);
    }

    /// True while [`Gpu::tuned`] times candidates. Kernels derived from a layer's weights are
    /// not kept then: each candidate's own derivation (a packed texture, Winograd's F(2x2) and
    /// F(4x4) transforms) would otherwise stay with a frozen kernel beside the one chosen.
    pub(crate) fn measuring(&self) -> bool {
        self.tuner.measuring.load(Ordering::Relaxed) > 0
    }

    /// Whether a kernel's derivation (packed texture, Winograd transform) may be kept now:
    /// always outside a measurement, and inside one only where it was started by
    /// [`Gpu::tuned_keeping`].
    pub(crate) fn keeps_derivations(&self) -> bool {
        !self.measuring() || self.tuner.keeping.load(Ordering::Relaxed) > 0
    }

    /// The tuning cache file of this adapter and driver, where there is a cache directory.
    pub fn tune_cache_path(&self) -> Option<&std::path::Path> {
        self.tuner.path()
    }

    /// The choice for `key` among `candidates`: the cached one where the tuning cache holds
    /// one; else, in [`TuneMode::Measure`] and where the caller says `run` may repeat
    /// (`measurable`), the fastest candidate, saved; else `default`. Measuring flushes the work
    /// recorded so far, then times `run(c)` for each candidate after one warm-up run (which also
    /// builds its pipelines), best of three.
    pub fn tuned<E: From<GpuError>>(
        &self,
        key: &str,
        candidates: &[u32],
        default: u32,
        measurable: bool,
        run: impl FnMut(u32) -> Result<(), E>,
    ) -> Result<u32, E> {
        self.choose(key, candidates, default, measurable, None, run)
    }

    /// [`Gpu::tuned`] for a layer whose kernel stays unchanged from call to call (frozen, or
    /// inference): while a candidate is timed it keeps its derivations of the kernel, as it
    /// would in use, so that it is timed at the speed it runs at once they are kept, not with
    /// the transform or packing a frozen kernel pays once. `release` drops what it kept
    /// after each candidate (`BufferPool::release_kept`), so that no candidate's derivation
    /// outlives its timing: the chosen one's is made and kept again by the next call.
    pub(crate) fn tuned_keeping<E: From<GpuError>>(
        &self,
        key: &str,
        candidates: &[u32],
        default: u32,
        measurable: bool,
        release: &dyn Fn(),
        run: impl FnMut(u32) -> Result<(), E>,
    ) -> Result<u32, E> {
        self.choose(key, candidates, default, measurable, Some(release), run)
    }

    fn choose<E: From<GpuError>>(
        &self,
        key: &str,
        candidates: &[u32],
        default: u32,
        measurable: bool,
        release: Option<&dyn Fn()>,
        mut run: impl FnMut(u32) -> Result<(), E>,
    ) -> Result<u32, E> {
        if self.simulated() {
            // The default runs first, as the plan without `--tune` would (an op may keep what
            // its first run derived, Winograd's transformed kernel, for the runs after). Then
            // every candidate runs twice, as a measurement's first run (a kernel maybe seen
            // for the first time) and its later ones (seen, its derivations kept or not) do.
            // The derivations are put back as they were before, so that the caller's own run
            // of the default finds what it would have found with nothing tried.
            if measurable && candidates.len() > 1 {
                let before = self.pool().snapshot_derivations();
                let tried = (|| -> Result<(), E> {
                    run(default)?;
                    let _measuring = Measuring::start(&self.tuner.measuring);
                    let _keeps = release.map(|_| Measuring::start(&self.tuner.keeping));
                    let _trying = self.trying_candidates();
                    for &c in candidates {
                        let ran = run(c).and_then(|()| run(c));
                        if let Some(release) = release {
                            release();
                        }
                        ran?;
                    }
                    Ok(())
                })();
                self.pool().restore_derivations(before);
                tried?;
            }
            return Ok(default);
        }
        if let Some(v) = self.tuner.get(key).filter(|v| candidates.contains(v)) {
            return Ok(v);
        }
        if self.tuner.mode() != TuneMode::Measure || !measurable || candidates.len() < 2 {
            return Ok(default);
        }
        self.sync()?;
        let measuring = Measuring::start(&self.tuner.measuring);
        let keeps = release.map(|_| Measuring::start(&self.tuner.keeping));
        let mut best = (f64::INFINITY, default);
        let mut times = Vec::new();
        for &c in candidates {
            let mut time = || -> Result<f64, E> {
                run(c)?;
                self.sync()?;
                let mut t = f64::INFINITY;
                for _ in 0..3 {
                    let start = std::time::Instant::now();
                    run(c)?;
                    self.sync()?;
                    t = t.min(start.elapsed().as_secs_f64() * 1e3);
                }
                Ok(t)
            };
            let timed = time();
            // Also where the candidate failed: nothing it kept outlives its timing.
            if let Some(release) = release {
                release();
            }
            let t = timed?;
            times.push(format!("{c}: {t:.2} ms"));
            if t < best.0 {
                best = (t, c);
            }
        }
        drop(keeps);
        drop(measuring);
        tracing::info!("tuned {key} = {} ({})", best.1, times.join(", "));
        self.tuner.record(key, best.1);
        Ok(best.1)
    }
}
