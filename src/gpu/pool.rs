//! A pool of storage buffers: a freed tensor's buffer goes back to a free list of its size class
//! and the next allocation of a fitting size takes it, so a training step allocates nothing
//! after the first one. The operand textures of the subgroup GEMM (B packed as rgba32float
//! texels, see `ops::pack`) are pooled the same way and counted in the same figures.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Allocator accounting, in bytes of GPU memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Bytes held by live tensors.
    pub in_use: u64,
    /// Bytes held by freed buffers waiting for reuse.
    pub cached: u64,
    /// Highest `in_use + cached` seen since the last reset: what the device really had to hold.
    pub peak: u64,
    /// Buffers created since the device was opened.
    pub created: u64,
    /// Allocations served from the free lists.
    pub reused: u64,
}

#[derive(Default)]
struct Inner {
    free: HashMap<u64, Vec<wgpu::Buffer>>,
    /// Free operand textures by (width, height) in texels.
    free_textures: HashMap<(u32, u32), Vec<(wgpu::Texture, wgpu::TextureView)>>,
    stats: PoolStats,
}

impl Inner {
    /// Accounts for `class` bytes going back on a free list.
    fn take_back(&mut self, class: u64) {
        self.stats.in_use -= class;
        self.stats.cached += class;
    }

    /// Accounts for `class` bytes lent out, from a free list or newly created.
    fn lend(&mut self, class: u64, reused: bool) {
        if reused {
            self.stats.cached -= class;
            self.stats.reused += 1;
        } else {
            self.stats.created += 1;
        }
        self.stats.in_use += class;
        self.stats.peak = self.stats.peak.max(self.stats.in_use + self.stats.cached);
    }
}

#[derive(Clone)]
pub(crate) struct BufferPool {
    device: wgpu::Device,
    inner: Arc<Mutex<Inner>>,
    derived: Arc<Mutex<Derived>>,
}

/// Operands derived from a loaned buffer's contents (the subgroup GEMM's packed B of a layer's
/// kernel, Winograd's transformed kernel), by loan: kept while the buffer is unchanged, dropped
/// with the loan.
#[derive(Default)]
struct Derived(HashMap<u64, Vec<DerivedEntry>>);

/// Every derivation's key, version and kept operand, by loan ([`BufferPool::snapshot_derivations`]).
pub(crate) struct DerivationsSnapshot(HashMap<u64, Vec<(u64, u64, Option<Kept>)>>);

/// A kept derivation: a packed texture, or a buffer for the kernels that read B from one.
#[derive(Clone)]
pub enum Kept {
    Texture(Arc<PooledTexture>),
    Buffer(Arc<PooledBuffer>),
}

struct DerivedEntry {
    /// Which derivation (the packing's parameters, hashed by the caller).
    key: u64,
    /// The buffer's write count when this was seen or derived.
    version: u64,
    kept: Option<Kept>,
}

/// What [`BufferPool::derivation`] knows of a derivation of a buffer's contents.
pub enum Derivation {
    /// Derived from these very contents before, and kept.
    Kept(Kept),
    /// Asked for before with the buffer unchanged since, but not kept: worth keeping now.
    Unchanged,
    /// First asked for, or the buffer was written since.
    Changed,
}

/// Loans are numbered so that a derivation never outlives the tensor it was made from, even
/// when the pool hands the same buffer to a new tensor.
static NEXT_LOAN: AtomicU64 = AtomicU64::new(1);

/// A buffer on loan from the pool; it returns itself when dropped.
pub struct PooledBuffer {
    buffer: Option<wgpu::Buffer>,
    class: u64,
    pool: Arc<Mutex<Inner>>,
    derived: Arc<Mutex<Derived>>,
    loan: u64,
    /// Bumped by every recorded write (`Gpu::dispatch` for its `Arg::Write` ranges, uploads,
    /// zero fills), so that a derivation can tell whether the contents changed.
    writes: AtomicU64,
    /// Set by [`PooledBuffer::discard_on_drop`]: freed when the loan ends, not cached.
    discard: AtomicBool,
}

impl PooledBuffer {
    pub fn buffer(&self) -> &wgpu::Buffer {
        self.buffer.as_ref().expect("buffer present until drop")
    }

    /// This loan's number (unique for the process).
    pub fn loan(&self) -> u64 {
        self.loan
    }

    /// The write counter; see [`PooledBuffer::version`].
    pub fn writes(&self) -> &AtomicU64 {
        &self.writes
    }

    /// How many writes have been recorded into the buffer during this loan.
    pub fn version(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// Frees the buffer when the loan ends instead of caching it for reuse: for a one-off that
    /// nothing asks for again (the staging buffer of a texture that is kept, a frozen layer's
    /// transformed kernel once packed into one), which the free list would otherwise hold, and
    /// count in the peak, for the rest of the run.
    pub fn discard_on_drop(&self) {
        self.discard.store(true, Ordering::Relaxed);
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        // The derived operands go back to the pool (which locks it) before the buffer does.
        let derived = self
            .derived
            .lock()
            .expect("derived lock")
            .0
            .remove(&self.loan);
        drop(derived);
        if let Some(buf) = self.buffer.take() {
            let mut inner = self.pool.lock().expect("pool lock");
            if self.discard.load(Ordering::Relaxed) {
                // Dropped, not destroyed: wgpu frees it once the commands recorded so far,
                // which may still read it, have run.
                inner.stats.in_use -= self.class;
                drop(inner);
                drop(buf);
            } else {
                inner.take_back(self.class);
                inner.free.entry(self.class).or_default().push(buf);
            }
        }
    }
}

/// Bytes of one rgba32float texel.
pub const TEXEL_BYTES: u64 = 16;

/// An operand texture on loan from the pool; it returns itself when dropped.
pub struct PooledTexture {
    texture: Option<(wgpu::Texture, wgpu::TextureView)>,
    key: (u32, u32),
    bytes: u64,
    pool: Arc<Mutex<Inner>>,
}

impl PooledTexture {
    pub fn view(&self) -> &wgpu::TextureView {
        &self.texture.as_ref().expect("texture present until drop").1
    }

    pub fn texture(&self) -> &wgpu::Texture {
        &self.texture.as_ref().expect("texture present until drop").0
    }
}

impl Drop for PooledTexture {
    fn drop(&mut self) {
        if let Some(t) = self.texture.take() {
            let mut inner = self.pool.lock().expect("pool lock");
            inner.take_back(self.bytes);
            inner.free_textures.entry(self.key).or_default().push(t);
        }
    }
}

/// Rows of the pooled texture `width` texels wide that holds `texels` texels: whole rows,
/// rounded up to the buffers' size classes so that similar sizes share textures.
pub fn texture_height(width: u32, texels: u64) -> u64 {
    let row_bytes = u64::from(width) * TEXEL_BYTES;
    size_class(texels.div_ceil(u64::from(width)).max(1) * row_bytes) / row_bytes
}

/// Rounds a request up to its size class: multiples of 256 bytes up to 4 KiB, then steps of an
/// eighth of a power of two, so reuse wastes at most 12.5%.
pub fn size_class(bytes: u64) -> u64 {
    let bytes = bytes.max(4);
    if bytes <= 4096 {
        return bytes.div_ceil(256) * 256;
    }
    let top = 63 - bytes.leading_zeros() as u64;
    let step = 1u64 << (top - 3);
    bytes.div_ceil(step) * step
}

impl BufferPool {
    pub fn new(device: wgpu::Device) -> Self {
        Self {
            device,
            inner: Arc::new(Mutex::new(Inner::default())),
            derived: Arc::new(Mutex::new(Derived::default())),
        }
    }

    /// What is known of derivation `key` of `buffer`'s current contents; records the asking,
    /// and drops a kept operand made from older contents.
    pub fn derivation(&self, buffer: &PooledBuffer, key: u64) -> Derivation {
        let version = buffer.version();
        // A kept buffer that is dropped returns to the pool and drops its own derivations,
        // which takes this lock: it is dropped after the lock is released.
        let mut derived = self.derived.lock().expect("derived lock");
        let list = derived.0.entry(buffer.loan).or_default();
        match list.iter_mut().find(|e| e.key == key) {
            Some(e) if e.version == version => match &e.kept {
                Some(k) => Derivation::Kept(k.clone()),
                None => Derivation::Unchanged,
            },
            Some(e) => {
                e.version = version;
                let stale = e.kept.take();
                drop(derived);
                drop(stale);
                Derivation::Changed
            }
            None => {
                list.push(DerivedEntry {
                    key,
                    version,
                    kept: None,
                });
                Derivation::Changed
            }
        }
    }

    /// Whether derivation `key` of `buffer`'s current contents was asked for before, the
    /// buffer unchanged since: [`BufferPool::derivation`]'s Unchanged or Kept, without
    /// recording the asking.
    pub fn seen_unchanged(&self, buffer: &PooledBuffer, key: u64) -> bool {
        let version = buffer.version();
        let derived = self.derived.lock().expect("derived lock");
        derived
            .0
            .get(&buffer.loan)
            .is_some_and(|list| list.iter().any(|e| e.key == key && e.version == version))
    }

    /// What every derivation is known as now, to be put back with
    /// [`BufferPool::restore_derivations`]: a simulated device tries `--tune` candidates
    /// (`Gpu::tuned`), and the plan that runs after them must find what it would have found
    /// had nothing been tried.
    pub(crate) fn snapshot_derivations(&self) -> DerivationsSnapshot {
        let derived = self.derived.lock().expect("derived lock");
        DerivationsSnapshot(
            derived
                .0
                .iter()
                .map(|(loan, list)| {
                    let entries = list
                        .iter()
                        .map(|e| (e.key, e.version, e.kept.clone()))
                        .collect();
                    (*loan, entries)
                })
                .collect(),
        )
    }

    /// Puts the derivations back as [`BufferPool::snapshot_derivations`] found them; what was
    /// kept since is dropped.
    pub(crate) fn restore_derivations(&self, snapshot: DerivationsSnapshot) {
        let restored = Derived(
            snapshot
                .0
                .into_iter()
                .map(|(loan, entries)| {
                    let list = entries
                        .into_iter()
                        .map(|(key, version, kept)| DerivedEntry { key, version, kept })
                        .collect();
                    (loan, list)
                })
                .collect(),
        );
        let mut derived = self.derived.lock().expect("derived lock");
        let stale = std::mem::replace(&mut *derived, restored);
        drop(derived);
        drop(stale);
    }

    /// Drops every operand kept for `buffer`'s loan. Each derivation is still known as
    /// asked for at these contents, so the next call that uses one derives and keeps it
    /// again: after `--tune` timed candidates that kept theirs, only the chosen one's returns.
    pub fn release_kept(&self, buffer: &PooledBuffer) {
        let mut derived = self.derived.lock().expect("derived lock");
        let released: Vec<Kept> = derived
            .0
            .get_mut(&buffer.loan)
            .map(|list| list.iter_mut().filter_map(|e| e.kept.take()).collect())
            .unwrap_or_default();
        drop(derived);
        drop(released);
    }

    /// Keeps `kept`, derivation `key` of `buffer`'s current contents, until the buffer is
    /// written or its loan ends.
    pub fn keep_derived(&self, buffer: &PooledBuffer, key: u64, kept: Kept) {
        let version = buffer.version();
        let mut derived = self.derived.lock().expect("derived lock");
        let list = derived.0.entry(buffer.loan).or_default();
        let stale: Vec<DerivedEntry> = list.extract_if(.., |e| e.key == key).collect();
        list.push(DerivedEntry {
            key,
            version,
            kept: Some(kept),
        });
        drop(derived);
        drop(stale);
    }

    pub fn alloc(&self, bytes: u64) -> PooledBuffer {
        let class = size_class(bytes);
        let mut inner = self.inner.lock().expect("pool lock");
        let reused = inner.free.get_mut(&class).and_then(|v| v.pop());
        inner.lend(class, reused.is_some());
        let buffer = reused.unwrap_or_else(|| {
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("tensor"),
                size: class,
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_SRC
                    | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        });
        PooledBuffer {
            buffer: Some(buffer),
            class,
            pool: self.inner.clone(),
            derived: self.derived.clone(),
            loan: NEXT_LOAN.fetch_add(1, Ordering::Relaxed),
            writes: AtomicU64::new(0),
            discard: AtomicBool::new(false),
        }
    }

    pub fn stats(&self) -> PoolStats {
        self.inner.lock().expect("pool lock").stats
    }

    /// An rgba32float texture `width` texels wide with room for `texels` texels, filled by
    /// buffer copies and read with textureLoad. Heights are rounded up to the buffers' size
    /// classes so that similar sizes share textures.
    pub fn alloc_texture(&self, width: u32, texels: u64) -> PooledTexture {
        let height = texture_height(width, texels) as u32;
        let key = (width, height);
        let bytes = u64::from(height) * u64::from(width) * TEXEL_BYTES;
        let mut inner = self.inner.lock().expect("pool lock");
        let reused = inner.free_textures.get_mut(&key).and_then(|v| v.pop());
        inner.lend(bytes, reused.is_some());
        let (texture, view) = reused.unwrap_or_else(|| {
            let texture = self.device.create_texture(&wgpu::TextureDescriptor {
                label: Some("operand texture"),
                size: wgpu::Extent3d {
                    width,
                    height,
                    depth_or_array_layers: 1,
                },
                mip_level_count: 1,
                sample_count: 1,
                dimension: wgpu::TextureDimension::D2,
                format: wgpu::TextureFormat::Rgba32Float,
                usage: wgpu::TextureUsages::TEXTURE_BINDING
                    | wgpu::TextureUsages::COPY_DST
                    | wgpu::TextureUsages::COPY_SRC,
                view_formats: &[],
            });
            let view = texture.create_view(&Default::default());
            (texture, view)
        });
        PooledTexture {
            texture: Some((texture, view)),
            key,
            bytes,
            pool: self.inner.clone(),
        }
    }

    pub fn trim(&self) {
        let mut inner = self.inner.lock().expect("pool lock");
        inner.free.clear();
        inner.free_textures.clear();
        inner.stats.cached = 0;
    }

    pub fn reset_peak(&self) {
        let mut inner = self.inner.lock().expect("pool lock");
        inner.stats.peak = inner.stats.in_use + inner.stats.cached;
    }
}

#[cfg(test)]
mod tests {
    use super::{size_class, texture_height};

    #[test]
    fn texture_heights_hold_the_texels_in_whole_rows() {
        for (width, texels) in [
            (16u32, 1u64),
            (16, 16),
            (16, 17),
            (4096, 589_824),
            (64, 1_000_003),
        ] {
            let h = texture_height(width, texels);
            assert!(
                h * u64::from(width) >= texels,
                "{texels} texels in {h} rows of {width}"
            );
            // Rounded up by at most an eighth of the rows needed (and one partial row).
            let need = texels.div_ceil(u64::from(width));
            assert!(h <= need + need / 8 + 1, "{h} rows for {need} needed");
        }
    }

    #[test]
    fn size_classes_fit_and_waste_little() {
        for bytes in [
            1u64,
            255,
            256,
            257,
            4096,
            4097,
            10_000,
            1 << 20,
            (1 << 20) + 1,
            123_456_789,
        ] {
            let c = size_class(bytes);
            assert!(c >= bytes, "class {c} below request {bytes}");
            assert!(
                c.is_multiple_of(256) || bytes > 4096,
                "small classes are 256-byte multiples"
            );
            // At most an eighth of waste above 4 KiB.
            if bytes > 4096 {
                assert!(
                    (c - bytes) * 8 <= bytes,
                    "class {c} wastes too much for {bytes}"
                );
            }
        }
        assert_eq!(
            size_class(5000),
            size_class(5100),
            "nearby sizes share a class"
        );
    }
}
