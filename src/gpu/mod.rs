//! The GPU runtime: adapter discovery and device options ([`select`], [`options`]), the device
//! context ([`Gpu`]), the pipeline cache ([`pipeline`]), the buffer pool ([`pool`]), recording
//! and submitting work ([`dispatch`]), reading results back ([`readback`]), the profiler
//! ([`profile`]) and the tuning cache ([`tune`]).
//!
//! Getting a device ([`select::open`]) is kept apart from running on one ([`Gpu`]), so tests,
//! benches and the CLI all share one way to pick an adapter and every op only ever sees a `&Gpu`.
//! This file holds the device's facts (adapter, limits, features); each other concern is an
//! `impl Gpu` block in its own file.

pub mod contract;
pub mod dispatch;
pub mod manifest;
pub mod options;
pub mod pipeline;
pub mod pool;
pub mod profile;
pub mod readback;
pub mod select;
pub mod subgroups;
pub mod tune;

use std::sync::Mutex;

use thiserror::Error;

pub use dispatch::{Arg, BufferRange};
pub use manifest::{AdapterClass, ClassLimits, RecordedPipeline, Uses};
pub use options::{ConvAlgo, DeviceOptions, TiledConfig};
pub use pipeline::{shader_file, Access, BuiltPipeline, Kernel, ShaderId};
pub use pool::{PoolStats, PooledTexture};
pub use profile::Profile;
pub use select::{AdapterRequest, AdapterSummary, BackendChoice};
pub use tune::TuneMode;

/// Errors of the GPU runtime layer: finding an adapter, opening a device, moving data.
#[derive(Debug, Error)]
pub enum GpuError {
    #[error("no GPU adapter found on backends {backends}; on a machine without a GPU install lavapipe (Debian/Ubuntu: `apt-get install -y mesa-vulkan-drivers libvulkan1`)")]
    NoAdapter { backends: String },
    #[error("no adapter name contains {wanted:?}; available: {available}")]
    AdapterNotFound { wanted: String, available: String },
    #[error("{name}={value:?}: expected {expected}")]
    BadSetting {
        name: &'static str,
        value: String,
        expected: &'static str,
    },
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
    switches: options::Switches,
    tuner: tune::Tuner,
    pipelines: pipeline::PipelineCache,
    pool: pool::BufferPool,
    pending: Mutex<Pending>,
    /// Present on a device that simulates an adapter class: it records pipelines and runs
    /// nothing ([`DeviceOptions::simulate`]).
    recorder: Option<manifest::Recorder>,
}

/// The work recorded and not yet submitted.
#[derive(Default)]
struct Pending {
    encoder: Option<wgpu::CommandEncoder>,
    dispatches: u64,
    /// What the next dispatches belong to (a layer name), for the profiler.
    scope: String,
    profiler: Option<profile::Profiler>,
}

/// The subgroup width the subgroup GEMM (shaders/gemm_sg.wgsl) would run at on this adapter:
/// its one subgroup size, where the smallest and largest agree and are 8, 16, 32 or 64 lanes
/// (the widths gemm_sg.wgsl spreads its 24- or 32-row tiles over). None where the size varies
/// between dispatches (the kernel's broadcasts name fixed lanes) or there are no subgroup
/// operations: those adapters run the tiled and workgroup-memory kernels.
pub fn subgroup_gemm_width(info: &wgpu::AdapterInfo, features: wgpu::Features) -> Option<u32> {
    let (lo, hi) = (info.subgroup_min_size, info.subgroup_max_size);
    (features.contains(wgpu::Features::SUBGROUP) && lo == hi && matches!(lo, 8 | 16 | 32 | 64))
        .then_some(lo)
}

/// Whether GEMM products with vec4 operands prefer the subgroup GEMM to the tiled kernels on
/// an adapter of this type. On a CPU adapter (lavapipe) every workgroup-memory access is a
/// per-lane loop and the subgroup GEMM ran 8-20x faster than either workgroup-memory family
/// (BENCHMARKS.md); on a GPU the tiled kernels are what fast GEMMs are built as, and the
/// subgroup GEMM, whose broadcasts cost a shuffle per four FMAs, is the fallback (`--tune`
/// times both per shape).
pub fn prefers_subgroup_gemm(device_type: wgpu::DeviceType) -> bool {
    device_type == wgpu::DeviceType::Cpu
}

impl Gpu {
    /// Wraps an opened device, with the switches of `options` (its `binding_limit` lowers the
    /// per-binding byte limit below the adapter's).
    pub fn from_parts(
        adapter: &wgpu::Adapter,
        device: wgpu::Device,
        queue: wgpu::Queue,
        options: &DeviceOptions,
    ) -> Self {
        let limits = device.limits();
        let adapter_limit = limits.max_storage_buffer_binding_size;
        let binding_limit = options
            .binding_limit
            .map_or(adapter_limit, |b| b.min(adapter_limit));
        let (info, features, options) = match options.simulate {
            // A simulated class plans as that class would and runs nothing, so nothing it
            // would fill (poison, NaN tails) or measure (the tuning cache) is touched.
            Some(class) => (
                class.info(&adapter.get_info()),
                class.features(device.features()),
                DeviceOptions {
                    poison_uninit: false,
                    nan_tail: false,
                    tune: TuneMode::Off,
                    tune_cache: None,
                    ..options.clone()
                },
            ),
            None => (adapter.get_info(), device.features(), options.clone()),
        };
        let options = &options;
        let gpu = Self {
            switches: options::Switches::new(
                options,
                subgroup_gemm_width(&info, features),
                &limits,
            ),
            tuner: tune::Tuner::open(&info, options.tune, options.tune_cache.as_deref()),
            recorder: options.simulate.map(|_| manifest::Recorder::default()),
            features,
            pipelines: pipeline::PipelineCache::new(device.clone()),
            pool: pool::BufferPool::new(device.clone()),
            info,
            limits,
            binding_limit,
            pending: Mutex::new(Pending::default()),
            device,
            queue,
        };
        if let Some(width) = gpu.subgroup_width().filter(|_| !gpu.simulated()) {
            if let Err(why) = gpu.probe_subgroups(width) {
                tracing::warn!(
                    adapter = gpu.adapter_name(),
                    "the adapter reports {width}-lane subgroups, but {why}: its GEMMs run on the tiled and workgroup-memory kernels"
                );
                gpu.withdraw_subgroup_kernels();
            }
        }
        gpu.force_subgroup_tile_rows(options.subgroup_tile_rows);
        gpu.force_kernel_gradient_slices(options.kernel_gradient_slices);
        gpu
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

    /// The pipelines built so far, each as (shader, entry point, override constants): tests
    /// check which kernel family and configuration really ran.
    pub fn built_pipelines(&self) -> Vec<BuiltPipeline> {
        self.pipelines.built()
    }

    /// Number of compute dispatches recorded since the device was opened.
    pub fn dispatch_count(&self) -> u64 {
        self.pending.lock().expect("pending lock").dispatches
    }
}
