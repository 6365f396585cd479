//! The GPU runtime: adapter discovery ([`select`]), the device context ([`Gpu`]), the
//! pipeline cache ([`pipeline`]), the buffer pool ([`pool`]) and the command recorder.
//!
//! Getting a device ([`select::open`]) is kept apart from running on one ([`Gpu`]), so tests,
//! benches and the CLI all share one way to pick an adapter and every op only ever sees a `&Gpu`.

pub mod pipeline;
pub mod pool;
pub mod select;
pub mod tune;

use std::sync::Mutex;

use thiserror::Error;

pub use pipeline::{Access, Kernel, ShaderId};
pub use pool::{PoolStats, PooledTexture};
pub use select::{AdapterRequest, AdapterSummary, BackendChoice};
pub use tune::TuneMode;

/// Errors of the GPU runtime layer: finding an adapter, opening a device, moving data.
#[derive(Debug, Error)]
pub enum GpuError {
    #[error("no GPU adapter found on backends {backends}; on a machine without a GPU install lavapipe (Debian/Ubuntu: `apt-get install -y mesa-vulkan-drivers libvulkan1`)")]
    NoAdapter { backends: String },
    #[error("no adapter name contains {wanted:?}; available: {available}")]
    AdapterNotFound { wanted: String, available: String },
    #[error("unknown backend {0:?}: expected one of vulkan, metal, dx12, gl")]
    UnknownBackend(String),
    #[error("adapter {adapter:?} refused to open a device: {source}")]
    RequestDevice {
        adapter: String,
        #[source]
        source: wgpu::RequestDeviceError,
    },
    #[error("{op}: tensor {tensor} needs a {needed}-byte binding per batch item, over this adapter's max_storage_buffer_binding_size of {limit} bytes")]
    BindingTooLarge {
        op: &'static str,
        tensor: &'static str,
        needed: u64,
        limit: u64,
    },
    #[error(
        "{op}: {what} needs {needed} bytes, over the adapter's max_buffer_size of {limit} bytes"
    )]
    BufferTooLarge {
        op: &'static str,
        what: String,
        needed: u64,
        limit: u64,
    },
    #[error("reading back {bytes} bytes from the GPU failed: {reason}")]
    Readback { bytes: u64, reason: String },
}

/// Operand textures are this many texels wide where the adapter allows: wide enough that a
/// VGG16 kernel (4608 x 512 floats) needs 144 rows, and a power of two so that the shader
/// finds a texel with a mask and a shift.
const OPERAND_TEXTURE_WIDTH: u32 = 4096;

/// [`OPERAND_TEXTURE_WIDTH`], or the widest power of two the adapter's 2-D textures allow.
fn default_texture_width(limits: &wgpu::Limits) -> u32 {
    let widest = 1 << (31 - limits.max_texture_dimension_2d.max(1).leading_zeros());
    OPERAND_TEXTURE_WIDTH.min(widest)
}

/// One argument of a dispatch, in binding order (binding 0 first).
#[derive(Clone, Copy)]
pub enum Arg<'a> {
    /// A small uniform block (binding-local copy, created per dispatch).
    Uniform(&'a [u8]),
    /// A byte range of a storage buffer, read-only in the shader.
    Read(BufferRange<'a>),
    /// A byte range of a storage buffer, read-write in the shader.
    Write(BufferRange<'a>),
    /// An rgba32float texture read with textureLoad (`texture_2d<f32>`).
    Texture(&'a wgpu::TextureView),
    /// A binding the entry point never touches: left out of the layout and the bind group.
    Unused,
}

/// A byte range of a buffer; `offset` must be a multiple of the storage offset alignment.
#[derive(Clone, Copy)]
pub struct BufferRange<'a> {
    pub buffer: &'a wgpu::Buffer,
    pub offset: u64,
    pub size: u64,
    /// The pooled buffer's write counter, bumped when the range is bound for writing.
    pub(crate) writes: &'a std::sync::atomic::AtomicU64,
}

impl BufferRange<'_> {
    /// The range grown to a multiple of `align` bytes where the buffer (and `limit`) allow:
    /// a shader reading the range as `array<vec4<f32>>` then sees its last partial vec4.
    /// Pool buffers are whole multiples of 256 bytes, so for them this always succeeds.
    pub fn padded_to(self, align: u64, limit: u64) -> Self {
        let want = self.size.div_ceil(align) * align;
        let room = self.buffer.size() - self.offset;
        Self {
            size: want.min(room).min(limit.max(self.size)),
            ..self
        }
    }
}

/// The device context every op runs on.
///
/// Work is recorded into one pending command encoder; nothing reaches the GPU queue until
/// [`Gpu::flush`] or a readback, so the ops of one training step become one submission with no
/// host round trip between them.
pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    limits: wgpu::Limits,
    features: wgpu::Features,
    binding_limit: u64,
    /// Whether the GEMM-shaped ops use the subgroup kernels (gemm_sg.wgsl); see
    /// [`Gpu::subgroup_kernels`].
    subgroup8: std::sync::atomic::AtomicBool,
    subgroup8_supported: bool,
    /// Rows per subgroup the subgroup GEMM must use (24 or 32), or 0 to let each product
    /// choose; see [`Gpu::force_subgroup_tile_rows`].
    subgroup_rows: std::sync::atomic::AtomicU32,
    /// Whether the subgroup GEMM reads packed B operands from textures; see
    /// [`Gpu::texture_operands`].
    textures: std::sync::atomic::AtomicBool,
    /// Operand texture width in texels (a power of two); see [`Gpu::force_texture_width`].
    texture_width: std::sync::atomic::AtomicU32,
    /// Slices every kernel gradient's sum must be split into (0: the default or the tuned
    /// choice); see [`Gpu::force_kernel_gradient_slices`].
    kgrad_slices: std::sync::atomic::AtomicU32,
    /// Whether uninitialised tensors are filled with NaN; see [`Gpu::set_poison_uninit`].
    poison: std::sync::atomic::AtomicBool,
    /// A buffer of NaN bytes the poison fills copy from, made on first use.
    nan_source: std::sync::OnceLock<wgpu::Buffer>,
    tuner: tune::Tuner,
    pipelines: pipeline::PipelineCache,
    pool: pool::BufferPool,
    pending: Mutex<Pending>,
}

#[derive(Default)]
struct Pending {
    encoder: Option<wgpu::CommandEncoder>,
    dispatches: u64,
    /// What the next dispatches belong to (a layer name), for the profiler.
    scope: String,
    profiler: Option<Profiler>,
}

/// Timestamp queries around every dispatch while profiling, labelled by scope.
struct Profiler {
    sets: Vec<wgpu::QuerySet>,
    labels: Vec<String>,
    /// Texture operands were on and are off while profiling (see [`Gpu::begin_profile`]).
    textures_off: bool,
}

const QUERIES_PER_SET: u32 = wgpu::QUERY_SET_MAX_QUERIES;

/// GPU time spent per scope while profiling.
#[derive(Clone, Debug, Default)]
pub struct Profile {
    /// (scope, total nanoseconds, dispatches), in first-seen order.
    pub scopes: Vec<(String, f64, usize)>,
}

impl Gpu {
    /// Wraps an opened device. `binding_limit` lowers the per-binding byte limit below the
    /// adapter's (tests use it to exercise the splitting paths on any adapter).
    pub fn from_parts(
        adapter: &wgpu::Adapter,
        device: wgpu::Device,
        queue: wgpu::Queue,
        binding_limit: Option<u64>,
    ) -> Self {
        let limits = device.limits();
        let adapter_limit = limits.max_storage_buffer_binding_size;
        let binding_limit = binding_limit.map_or(adapter_limit, |b| b.min(adapter_limit));
        let pool = pool::BufferPool::new(device.clone());
        let subgroup8_supported = Self::supports_subgroup8(adapter, device.features());
        let texture_width = default_texture_width(&limits);
        Self {
            info: adapter.get_info(),
            features: device.features(),
            pipelines: pipeline::PipelineCache::new(device.clone()),
            limits,
            binding_limit,
            subgroup8: std::sync::atomic::AtomicBool::new(
                subgroup8_supported && std::env::var_os("CNN_WGPU_NO_SUBGROUPS").is_none(),
            ),
            subgroup8_supported,
            subgroup_rows: std::sync::atomic::AtomicU32::new(0),
            textures: std::sync::atomic::AtomicBool::new(
                std::env::var_os("CNN_WGPU_NO_TEXTURES").is_none(),
            ),
            texture_width: std::sync::atomic::AtomicU32::new(texture_width),
            kgrad_slices: std::sync::atomic::AtomicU32::new(0),
            poison: std::sync::atomic::AtomicBool::new(false),
            nan_source: std::sync::OnceLock::new(),
            tuner: tune::Tuner::open(&adapter.get_info(), TuneMode::from_env()),
            pool,
            pending: Mutex::new(Pending::default()),
            device,
            queue,
        }
    }

    pub fn info(&self) -> &wgpu::AdapterInfo {
        &self.info
    }

    pub fn limits(&self) -> &wgpu::Limits {
        &self.limits
    }

    pub fn features(&self) -> wgpu::Features {
        self.features
    }

    pub fn adapter_name(&self) -> &str {
        &self.info.name
    }

    /// Subgroup operations with every subgroup exactly 8 lanes wide, which the subgroup GEMM
    /// (shaders/gemm_sg.wgsl) is written for: lavapipe at 256 bits. Adapters whose subgroup
    /// size varies (or is not 8) keep the workgroup-memory kernels.
    fn supports_subgroup8(adapter: &wgpu::Adapter, features: wgpu::Features) -> bool {
        let info = adapter.get_info();
        features.contains(wgpu::Features::SUBGROUP)
            && info.subgroup_min_size == 8
            && info.subgroup_max_size == 8
    }

    /// True when convolutions with channel counts that are multiples of 4 run on the subgroup
    /// kernels. On by default where supported; `CNN_WGPU_NO_SUBGROUPS=1` turns it off.
    pub fn subgroup_kernels(&self) -> bool {
        self.subgroup8.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Turns the subgroup kernels off (or back on, where the adapter supports them): tests run
    /// both kernel families against the same CPU references.
    pub fn set_subgroup_kernels(&self, on: bool) {
        self.subgroup8.store(
            on && self.subgroup8_supported,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Makes every product on the subgroup GEMM use `rows` (24 or 32) rows per subgroup instead
    /// of the height its cost model picks (None restores that): tests check both tile heights
    /// of every kernel against the CPU references.
    pub fn force_subgroup_tile_rows(&self, rows: Option<u32>) {
        assert!(
            matches!(rows, None | Some(24) | Some(32)),
            "the subgroup GEMM has 24- and 32-row tiles, not {rows:?}"
        );
        self.subgroup_rows
            .store(rows.unwrap_or(0), std::sync::atomic::Ordering::Relaxed);
    }

    /// True when the subgroup GEMM reads its packed B operand from an rgba32float texture
    /// rather than a storage buffer: on lavapipe a texel fetch moves a lane's vec4 in one
    /// load, where a storage load differing per lane is a branchy per-lane loop: VGG16 conv
    /// layers ran 4-18% faster forward and 13-17% backward (BENCHMARKS.md). On by default;
    /// `CNN_WGPU_NO_TEXTURES=1` turns it off. Only the subgroup kernels read textures.
    pub fn texture_operands(&self) -> bool {
        self.textures.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Turns texture operands off (or back on): tests run both ways of reading B.
    pub fn set_texture_operands(&self, on: bool) {
        self.textures
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Makes operand textures `width` texels wide (a power of two, at least 16) instead of 4096
    /// (None restores that), so small test products wrap over many texture rows.
    pub fn force_texture_width(&self, width: Option<u32>) {
        let width = width.unwrap_or_else(|| default_texture_width(&self.limits));
        // Rows are filled by buffer copies, whose rows must be whole multiples of 256 bytes.
        let narrowest = wgpu::COPY_BYTES_PER_ROW_ALIGNMENT / pool::TEXEL_BYTES as u32;
        assert!(
            width.is_power_of_two()
                && (narrowest..=self.limits.max_texture_dimension_2d).contains(&width),
            "operand textures are a power of two from {narrowest} texels wide up to the adapter's limit, not {width}"
        );
        self.texture_width
            .store(width, std::sync::atomic::Ordering::Relaxed);
    }

    /// Makes every kernel gradient split its sum over N*OH*OW into `slices` (at most what the
    /// sum's length allows, one slice per 256 terms) instead of the default or tuned choice;
    /// None restores that. The default depends on the core count, so tests force both one
    /// slice and many to reach every path on any machine.
    pub fn force_kernel_gradient_slices(&self, slices: Option<u32>) {
        assert!(
            slices != Some(0),
            "a kernel gradient has at least one slice"
        );
        self.kgrad_slices
            .store(slices.unwrap_or(0), std::sync::atomic::Ordering::Relaxed);
    }

    /// The forced kernel-gradient slice count, if any; see
    /// [`Gpu::force_kernel_gradient_slices`].
    pub fn forced_kernel_gradient_slices(&self) -> Option<u32> {
        match self.kgrad_slices.load(std::sync::atomic::Ordering::Relaxed) {
            0 => None,
            s => Some(s),
        }
    }

    /// Fills every tensor from [`crate::Tensor::uninit`] with NaN before handing it out (off by
    /// default). The pool recycles buffers, so a kernel that fails to write part of its output
    /// would otherwise leave the previous, often identical, result there and pass a repeated
    /// test; with poison on, every unwritten element reads NaN. The test suite turns it on for
    /// every device it opens.
    pub fn set_poison_uninit(&self, on: bool) {
        self.poison.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn poisons_uninit(&self) -> bool {
        self.poison.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Records copies of NaN bytes (0xFF: a quiet NaN in every f32) over `size` bytes of
    /// `buffer`, ordered with the other recorded work.
    pub(crate) fn record_poison(&self, buffer: &wgpu::Buffer, size: u64) {
        const CHUNK: u64 = 1 << 20;
        let source = self.nan_source.get_or_init(|| {
            let b = self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("NaN poison source"),
                size: CHUNK,
                usage: wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: true,
            });
            b.get_mapped_range_mut(..)
                .expect("freshly mapped poison buffer")
                .copy_from_slice(&vec![0xFF; CHUNK as usize]);
            b.unmap();
            b
        });
        self.record(|enc| {
            let mut at = 0;
            while at < size {
                let n = CHUNK.min(size - at);
                enc.copy_buffer_to_buffer(source, 0, buffer, at, n);
                at += n;
            }
        });
    }

    /// log2 of the operand texture width when `texels` rgba32float texels fit one texture
    /// (texel t at (t mod width, t / width)) and texture operands are on; None otherwise, and
    /// the caller keeps B in a buffer.
    pub(crate) fn operand_texture_shift(&self, texels: usize) -> Option<u32> {
        if !self.texture_operands() {
            return None;
        }
        let width = self
            .texture_width
            .load(std::sync::atomic::Ordering::Relaxed);
        let height = pool::texture_height(width, texels as u64);
        (height <= u64::from(self.limits.max_texture_dimension_2d)).then(|| width.trailing_zeros())
    }

    /// A pooled operand texture of `texels` texels, `1 << shift` wide.
    pub(crate) fn operand_texture(&self, shift: u32, texels: usize) -> PooledTexture {
        self.pool.alloc_texture(1 << shift, texels as u64)
    }

    /// The tile height [`Gpu::force_subgroup_tile_rows`] set, if any.
    pub fn forced_subgroup_tile_rows(&self) -> Option<u32> {
        match self
            .subgroup_rows
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            0 => None,
            r => Some(r),
        }
    }

    /// How this device uses its tuning cache (see [`tune`]); `CNN_WGPU_TUNE` sets it at open.
    pub fn tune_mode(&self) -> TuneMode {
        self.tuner.mode()
    }

    pub fn set_tune_mode(&self, mode: TuneMode) {
        self.tuner.set_mode(mode);
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
        mut run: impl FnMut(u32) -> Result<(), E>,
    ) -> Result<u32, E> {
        if let Some(v) = self.tuner.get(key).filter(|v| candidates.contains(v)) {
            return Ok(v);
        }
        if self.tuner.mode() != TuneMode::Measure || !measurable || candidates.len() < 2 {
            return Ok(default);
        }
        self.sync()?;
        let mut best = (f64::INFINITY, default);
        let mut times = Vec::new();
        for &c in candidates {
            run(c)?;
            self.sync()?;
            let mut t = f64::INFINITY;
            for _ in 0..3 {
                let start = std::time::Instant::now();
                run(c)?;
                self.sync()?;
                t = t.min(start.elapsed().as_secs_f64() * 1e3);
            }
            times.push(format!("{c}: {t:.2} ms"));
            if t < best.0 {
                best = (t, c);
            }
        }
        tracing::info!("tuned {key} = {} ({})", best.1, times.join(", "));
        self.tuner.record(key, best.1);
        Ok(best.1)
    }

    /// The largest byte range one storage binding may cover on this device.
    pub fn binding_limit(&self) -> u64 {
        self.binding_limit
    }

    /// About how many workgroups the adapter runs at once: its cores for a software adapter
    /// (one workgroup per thread), a few dozen for a GPU. Kernels use it to decide when a small
    /// output is worth splitting along its reduction.
    pub fn parallelism_hint(&self) -> usize {
        if self.info.device_type == wgpu::DeviceType::Cpu {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            64
        }
    }

    /// Storage-binding offsets must be multiples of this.
    pub fn offset_alignment(&self) -> u64 {
        u64::from(self.limits.min_storage_buffer_offset_alignment)
    }

    pub fn pool_stats(&self) -> PoolStats {
        self.pool.stats()
    }

    /// Frees the buffers the pool keeps for reuse.
    pub fn trim_pool(&self) {
        self.pool.trim();
    }

    pub fn reset_peak(&self) {
        self.pool.reset_peak();
    }

    pub(crate) fn pool(&self) -> &pool::BufferPool {
        &self.pool
    }

    /// Number of distinct pipelines built so far (each (shader, entry, constants) once).
    pub fn pipeline_count(&self) -> usize {
        self.pipelines.len()
    }

    /// Number of compute dispatches recorded since the device was opened.
    pub fn dispatch_count(&self) -> u64 {
        self.pending.lock().expect("pending lock").dispatches
    }

    /// Names the work recorded from now on (a layer, "loss", "optimizer") for [`Gpu::end_profile`].
    pub fn set_scope(&self, scope: &str) {
        let mut pending = self.pending.lock().expect("pending lock");
        if pending.profiler.is_some() {
            pending.scope.clear();
            pending.scope.push_str(scope);
        }
    }

    /// True when the adapter can time dispatches (timestamp queries).
    pub fn can_profile(&self) -> bool {
        self.features.contains(wgpu::Features::TIMESTAMP_QUERY)
    }

    /// Starts timing every dispatch; false when the adapter has no timestamp queries.
    ///
    /// On a software adapter this turns texture operands off until [`Gpu::end_profile`]:
    /// lavapipe's timestamps go wrong once passes bind textures (a small-convnet step summed
    /// to 34 ms of its 634; submitting after each texture copy did not help, and an unread
    /// placeholder texture in every GEMM pass skewed even the passes without one), so the
    /// profile times the buffer path instead, and says so.
    pub fn begin_profile(&self) -> bool {
        if !self.can_profile() {
            return false;
        }
        let mut pending = self.pending.lock().expect("pending lock");
        // Only the subgroup kernels read textures.
        let textures_off = self.info.device_type == wgpu::DeviceType::Cpu
            && self.subgroup_kernels()
            && self.texture_operands();
        if textures_off {
            tracing::warn!(
                "profiling with operand textures off: this adapter's timestamps miss passes that read them; unprofiled runs are faster than this profile"
            );
            self.set_texture_operands(false);
        }
        pending.profiler = Some(Profiler {
            sets: Vec::new(),
            labels: Vec::new(),
            textures_off,
        });
        true
    }

    /// Stops timing and returns the GPU time per scope (waits for the recorded work).
    pub fn end_profile(&self) -> Result<Profile, GpuError> {
        let Some(prof) = self.pending.lock().expect("pending lock").profiler.take() else {
            return Ok(Profile::default());
        };
        if prof.textures_off {
            self.set_texture_operands(true);
        }
        let period = f64::from(self.queue.get_timestamp_period());
        let mut ticks: Vec<u64> = Vec::with_capacity(prof.labels.len() * 2);
        let queries = prof.labels.len() as u32 * 2;
        for (k, set) in prof.sets.iter().enumerate() {
            let used = (queries - k as u32 * QUERIES_PER_SET).min(QUERIES_PER_SET);
            let size = u64::from(used) * 8;
            let resolve = self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("timestamps"),
                size,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            self.record(|enc| enc.resolve_query_set(set, 0..used, &resolve, 0));
            ticks.extend(bytemuck::pod_collect_to_vec::<u8, u64>(
                &self.read_bytes(&resolve, 0, size)?,
            ));
        }
        let mut profile = Profile::default();
        for (i, label) in prof.labels.iter().enumerate() {
            let ns = ticks[2 * i + 1].saturating_sub(ticks[2 * i]) as f64 * period;
            match profile.scopes.iter_mut().find(|(s, _, _)| s == label) {
                Some(e) => {
                    e.1 += ns;
                    e.2 += 1;
                }
                None => profile.scopes.push((label.clone(), ns, 1)),
            }
        }
        Ok(profile)
    }

    /// Records `f` into the pending command encoder.
    pub fn record<R>(&self, f: impl FnOnce(&mut wgpu::CommandEncoder) -> R) -> R {
        let mut pending = self.pending.lock().expect("pending lock");
        let encoder = pending.encoder.get_or_insert_with(|| {
            self.device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("step"),
                })
        });
        f(encoder)
    }

    /// Records one compute dispatch of `kernel` with `args` bound in order.
    pub fn dispatch(&self, kernel: &Kernel<'_>, args: &[Arg<'_>], groups: [u32; 3]) {
        let access: Vec<Access> = args
            .iter()
            .map(|a| match a {
                Arg::Uniform(_) => Access::Uniform,
                Arg::Read(_) => Access::Read,
                Arg::Write(r) => {
                    // Packed copies kept of this buffer's contents are stale from here on.
                    r.writes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    Access::Write
                }
                Arg::Texture(_) => Access::Texture,
                Arg::Unused => Access::Unused,
            })
            .collect();
        let pipe = self.pipelines.get(kernel, &access);
        let uniforms: Vec<Option<wgpu::Buffer>> = args
            .iter()
            .map(|a| match a {
                Arg::Uniform(bytes) => Some(self.uniform_buffer(bytes)),
                _ => None,
            })
            .collect();
        let entries: Vec<wgpu::BindGroupEntry> = args
            .iter()
            .zip(&uniforms)
            .enumerate()
            .filter(|(_, (a, _))| !matches!(a, Arg::Unused))
            .map(|(i, (a, u))| {
                let resource = match a {
                    Arg::Uniform(_) | Arg::Unused => {
                        u.as_ref().expect("uniform buffer").as_entire_binding()
                    }
                    Arg::Texture(view) => wgpu::BindingResource::TextureView(view),
                    Arg::Read(r) | Arg::Write(r) => {
                        debug_assert!(r.size <= self.binding_limit, "binding over the limit");
                        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                            buffer: r.buffer,
                            offset: r.offset,
                            size: wgpu::BufferSize::new(r.size),
                        })
                    }
                };
                wgpu::BindGroupEntry {
                    binding: i as u32,
                    resource,
                }
            })
            .collect();
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(kernel.entry),
            layout: &pipe.layout,
            entries: &entries,
        });
        let mut pending = self.pending.lock().expect("pending lock");
        pending.dispatches += 1;
        let Pending {
            encoder,
            scope,
            profiler,
            ..
        } = &mut *pending;
        let encoder = encoder.get_or_insert_with(|| {
            self.device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("step"),
                })
        });
        let timestamps = profiler.as_mut().map(|prof| {
            let index = prof.labels.len() as u32 * 2;
            if index.is_multiple_of(QUERIES_PER_SET) {
                prof.sets
                    .push(self.device.create_query_set(&wgpu::QuerySetDescriptor {
                        label: Some("profile"),
                        ty: wgpu::QueryType::Timestamp,
                        count: QUERIES_PER_SET,
                    }));
            }
            prof.labels.push(if scope.is_empty() {
                kernel.entry.to_string()
            } else {
                scope.clone()
            });
            (
                prof.sets.last().expect("query set"),
                index % QUERIES_PER_SET,
            )
        });
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some(kernel.entry),
            timestamp_writes: timestamps.map(|(set, local)| wgpu::ComputePassTimestampWrites {
                query_set: set,
                beginning_of_pass_write_index: Some(local),
                end_of_pass_write_index: Some(local + 1),
            }),
        });
        pass.set_pipeline(&pipe.pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
    }

    fn uniform_buffer(&self, bytes: &[u8]) -> wgpu::Buffer {
        // Uniform blocks are padded to 16 bytes so any std140-style struct fits.
        let size = (bytes.len() as u64).div_ceil(16).max(1) * 16;
        let buf = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("params"),
            size,
            usage: wgpu::BufferUsages::UNIFORM,
            mapped_at_creation: true,
        });
        buf.get_mapped_range_mut(..)
            .expect("freshly mapped uniform")
            .slice(..bytes.len())
            .copy_from_slice(bytes);
        buf.unmap();
        buf
    }

    /// Submits everything recorded so far.
    pub fn flush(&self) -> wgpu::SubmissionIndex {
        // Submit while holding the lock: a second thread must not record and submit a newer
        // encoder before this one reaches the queue, or its work would run first.
        let mut pending = self.pending.lock().expect("pending lock");
        let buffers = pending.encoder.take().map(|e| e.finish());
        self.queue.submit(buffers)
    }

    /// Submits pending work and blocks until the GPU has finished it.
    pub fn sync(&self) -> Result<(), GpuError> {
        let index = self.flush();
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(index),
                timeout: None,
            })
            .map_err(|e| GpuError::Readback {
                bytes: 0,
                reason: e.to_string(),
            })?;
        Ok(())
    }

    /// Reads the first f32 of each buffer with one copy batch and one wait: how a training step
    /// fetches its loss and accuracy scalars.
    pub fn read_scalars(&self, buffers: &[&wgpu::Buffer]) -> Result<Vec<f32>, GpuError> {
        if buffers.is_empty() {
            return Ok(Vec::new());
        }
        let gather = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("scalars"),
            size: 4 * buffers.len() as u64,
            usage: wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.record(|enc| {
            for (i, b) in buffers.iter().enumerate() {
                enc.copy_buffer_to_buffer(b, 0, &gather, 4 * i as u64, 4);
            }
        });
        let bytes = self.read_bytes(&gather, 0, 4 * buffers.len() as u64)?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    /// Copies `size` bytes at `offset` of `buffer` back to the host, after all pending work.
    pub fn read_bytes(
        &self,
        buffer: &wgpu::Buffer,
        offset: u64,
        size: u64,
    ) -> Result<Vec<u8>, GpuError> {
        self.read_staged(size, |enc, staging| {
            enc.copy_buffer_to_buffer(buffer, offset, staging, 0, size)
        })
    }

    /// Copies the texels of an rgba32float operand texture back to the host, row after row,
    /// after all pending work.
    pub fn read_texture(&self, texture: &PooledTexture) -> Result<Vec<f32>, GpuError> {
        let t = texture.texture();
        let row_bytes = u64::from(t.width()) * pool::TEXEL_BYTES;
        let size = row_bytes * u64::from(t.height());
        let bytes = self.read_staged(size, |enc, staging| {
            enc.copy_texture_to_buffer(
                t.as_image_copy(),
                wgpu::TexelCopyBufferInfo {
                    buffer: staging,
                    layout: wgpu::TexelCopyBufferLayout {
                        offset: 0,
                        bytes_per_row: Some(row_bytes as u32),
                        rows_per_image: None,
                    },
                },
                t.size(),
            )
        })?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    /// Records `copy` into a fresh `size`-byte staging buffer, submits, and maps it back.
    fn read_staged(
        &self,
        size: u64,
        copy: impl FnOnce(&mut wgpu::CommandEncoder, &wgpu::Buffer),
    ) -> Result<Vec<u8>, GpuError> {
        if size == 0 {
            return Ok(Vec::new());
        }
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.record(|enc| copy(enc, &staging));
        self.flush();
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| GpuError::Readback {
                bytes: size,
                reason: e.to_string(),
            })?;
        rx.recv()
            .map_err(|e| GpuError::Readback {
                bytes: size,
                reason: e.to_string(),
            })?
            .map_err(|e| GpuError::Readback {
                bytes: size,
                reason: e.to_string(),
            })?;
        let out = staging
            .get_mapped_range(..)
            .map_err(|e| GpuError::Readback {
                bytes: size,
                reason: e.to_string(),
            })?
            .to_vec();
        staging.unmap();
        Ok(out)
    }
}
