//! Adapter classes and the pipeline recorder: what the planner would build on an adapter that
//! is not here. A device opened with [`DeviceOptions::simulate`] takes a class's facts (device
//! type, subgroup width, limits) in place of the adapter's and runs nothing: each dispatch
//! records its pipeline (module, entry point, override constants, bindings) and returns, and
//! each tuned choice tries every candidate once and keeps the default. Driving the real ops
//! through such a device (`crate::manifest`) writes down every pipeline a planner or a `--tune`
//! candidate can build there, with no second copy of the planner's rules to drift.
//!
//! [`DeviceOptions::simulate`]: super::DeviceOptions::simulate

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use super::{Access, Gpu, Kernel, ShaderId};

/// The limits an adapter class plans under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClassLimits {
    /// The opened adapter's own (a software adapter's class: lavapipe's limits).
    Adapter,
    /// What every desktop and laptop GPU of the last decade offers on Vulkan, Metal and DX12:
    /// 32 KiB of workgroup memory, 1024 invocations per workgroup, 1 GiB per storage binding,
    /// 16384-texel textures, WebGPU's defaults elsewhere ([`desktop_limits`]).
    Desktop,
    /// WebGPU's defaults (`wgpu::Limits::default()`): what a browser gives a page that asks
    /// for nothing more.
    WebGpu,
}

/// A kind of adapter the planner plans for: a CPU adapter (lavapipe, where the subgroup GEMM
/// comes first) or a GPU (where the tiled kernels do), its fixed subgroup width where the
/// subgroup GEMM can run (8, 16, 32 or 64 lanes) or none, and its limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdapterClass {
    pub name: &'static str,
    /// Planned as a GPU (`wgpu::DeviceType::DiscreteGpu`) rather than a CPU adapter.
    pub gpu: bool,
    pub subgroup_width: Option<u32>,
    pub limits: ClassLimits,
    /// Which real adapters fall in the class.
    pub about: &'static str,
}

impl AdapterClass {
    /// Every class the manifest is written for.
    pub const ALL: [AdapterClass; 9] = [
        AdapterClass::new(
            "cpu-sg8",
            false,
            Some(8),
            ClassLimits::Adapter,
            "lavapipe at 256 bits (AVX2, its default)",
        ),
        AdapterClass::new(
            "cpu-sg16",
            false,
            Some(16),
            ClassLimits::Adapter,
            "lavapipe at 512 bits (AVX-512)",
        ),
        AdapterClass::new(
            "cpu-none",
            false,
            None,
            ClassLimits::Adapter,
            "lavapipe at 128 bits (4-lane subgroups), llvmpipe's OpenGL (no subgroups)",
        ),
        AdapterClass::new(
            "gpu-sg8",
            true,
            Some(8),
            ClassLimits::Desktop,
            "a GPU with fixed 8-lane subgroups",
        ),
        AdapterClass::new(
            "gpu-sg16",
            true,
            Some(16),
            ClassLimits::Desktop,
            "a GPU with fixed 16-lane subgroups (Intel where its driver fixes the width)",
        ),
        AdapterClass::new(
            "gpu-sg32",
            true,
            Some(32),
            ClassLimits::Desktop,
            "NVIDIA, Apple silicon, AMD RDNA in wave32",
        ),
        AdapterClass::new(
            "gpu-sg64",
            true,
            Some(64),
            ClassLimits::Desktop,
            "AMD GCN and RDNA in wave64",
        ),
        AdapterClass::new(
            "gpu-none",
            true,
            None,
            ClassLimits::Desktop,
            "a GPU without subgroup operations, or whose subgroup width varies (most Intel, Adreno, Mali)",
        ),
        AdapterClass::new(
            "webgpu-none",
            true,
            None,
            ClassLimits::WebGpu,
            "a browser's WebGPU with no subgroups and only the default limits",
        ),
    ];

    const fn new(
        name: &'static str,
        gpu: bool,
        subgroup_width: Option<u32>,
        limits: ClassLimits,
        about: &'static str,
    ) -> Self {
        Self {
            name,
            gpu,
            subgroup_width,
            limits,
            about,
        }
    }

    /// The class called `name` in [`AdapterClass::ALL`].
    pub fn named(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name == name)
    }

    /// The limits a device simulating this class is opened with, on an adapter that offers
    /// `adapter`: the class's, lowered to the adapter's where it offers less.
    pub fn limits(&self, adapter: &wgpu::Limits) -> wgpu::Limits {
        match self.limits {
            ClassLimits::Adapter => adapter.clone(),
            ClassLimits::Desktop => desktop_limits().or_worse_values_from(adapter),
            ClassLimits::WebGpu => wgpu::Limits::default().or_worse_values_from(adapter),
        }
    }

    /// The adapter facts the class stands for, in place of `real`'s: device type, subgroup
    /// sizes (a fixed width, or none) and name.
    pub(crate) fn info(&self, real: &wgpu::AdapterInfo) -> wgpu::AdapterInfo {
        let mut info = real.clone();
        info.name = format!("simulated {} ({})", self.name, self.about);
        info.device_type = if self.gpu {
            wgpu::DeviceType::DiscreteGpu
        } else {
            wgpu::DeviceType::Cpu
        };
        let width = self.subgroup_width.unwrap_or(0);
        info.subgroup_min_size = width;
        info.subgroup_max_size = width;
        info
    }

    /// The features a device of the class has, from the opened device's: subgroups only
    /// where the class has a width.
    pub(crate) fn features(&self, real: wgpu::Features) -> wgpu::Features {
        if self.subgroup_width.is_some() {
            real | wgpu::Features::SUBGROUP
        } else {
            real - wgpu::Features::SUBGROUP
        }
    }
}

/// [`ClassLimits::Desktop`]: WebGPU's defaults, raised where Vulkan, Metal and DX12 GPUs all
/// offer more (DX12's feature level 11 and Metal's Apple and Mac families guarantee 32 KiB of
/// workgroup memory and 1024 threads per group).
pub fn desktop_limits() -> wgpu::Limits {
    wgpu::Limits {
        max_compute_workgroup_storage_size: 32 << 10,
        max_compute_invocations_per_workgroup: 1024,
        max_compute_workgroup_size_x: 1024,
        max_compute_workgroup_size_y: 1024,
        max_storage_buffer_binding_size: 1 << 30,
        max_buffer_size: 1 << 31,
        max_texture_dimension_2d: 16384,
        ..wgpu::Limits::default()
    }
}

/// One pipeline as the recorder saw it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RecordedPipeline {
    pub shader: ShaderId,
    pub entry: &'static str,
    /// Override constants by name, sorted, as f64 bits (so that the key orders and compares).
    pub constants: Vec<(&'static str, u64)>,
    pub bindings: Vec<Access>,
}

impl RecordedPipeline {
    /// The constants as values.
    pub fn constant_values(&self) -> Vec<(&'static str, f64)> {
        self.constants
            .iter()
            .map(|&(k, bits)| (k, f64::from_bits(bits)))
            .collect()
    }
}

/// Where a recorded pipeline was asked for: each workload that asked
/// (`Gpu::set_manifest_source`), with whether it asked outside any tuned choice's candidates
/// (its plan runs the pipeline without `--tune`) or only as a `--tune` candidate.
pub type Uses = BTreeMap<String, bool>;

/// The pipelines a simulated device was asked for.
#[derive(Default)]
pub(crate) struct Recorder {
    pipelines: Mutex<BTreeMap<RecordedPipeline, Uses>>,
    source: Mutex<String>,
    /// Tuned choices whose candidates are being tried (they nest).
    candidates: AtomicU32,
}

impl Recorder {
    fn record(&self, kernel: &Kernel<'_>, access: &[Access]) {
        let mut constants: Vec<(&'static str, u64)> = kernel
            .constants
            .iter()
            .map(|&(k, v)| (k, v.to_bits()))
            .collect();
        constants.sort_unstable();
        let key = RecordedPipeline {
            shader: kernel.shader,
            entry: kernel.entry,
            constants,
            bindings: access.to_vec(),
        };
        let source = self.source.lock().expect("recorder lock").clone();
        let planned = self.candidates.load(Ordering::Relaxed) == 0;
        let mut all = self.pipelines.lock().expect("recorder lock");
        *all.entry(key).or_default().entry(source).or_default() |= planned;
    }
}

/// Counts a tuned choice whose candidates are being tried while it lives.
pub(crate) struct TryingCandidates<'a>(&'a AtomicU32);

impl Drop for TryingCandidates<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Gpu {
    /// True on a device that simulates an adapter class and runs nothing
    /// ([`super::DeviceOptions::simulate`]).
    pub fn simulated(&self) -> bool {
        self.recorder.is_some()
    }

    /// Records a dispatch of `kernel` on a simulated device; false (nothing recorded) on a
    /// real one.
    pub(crate) fn record_simulated(&self, kernel: &Kernel<'_>, access: &[Access]) -> bool {
        match &self.recorder {
            Some(r) => {
                super::contract::check_bindings(kernel, access);
                r.record(kernel, access);
                true
            }
            None => false,
        }
    }

    /// Names the workload the next recorded pipelines belong to (a simulated device only).
    pub fn set_manifest_source(&self, source: &str) {
        if let Some(r) = &self.recorder {
            *r.source.lock().expect("recorder lock") = source.to_string();
        }
    }

    /// Every pipeline recorded so far, with where it was asked for (empty on a real device).
    pub fn recorded_pipelines(&self) -> Vec<(RecordedPipeline, Uses)> {
        self.recorder.as_ref().map_or_else(Vec::new, |r| {
            r.pipelines
                .lock()
                .expect("recorder lock")
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
    }

    /// Marks the pipelines recorded while the guard lives as `--tune` candidates.
    pub(crate) fn trying_candidates(&self) -> Option<TryingCandidates<'_>> {
        self.recorder.as_ref().map(|r| {
            r.candidates.fetch_add(1, Ordering::Relaxed);
            TryingCandidates(&r.candidates)
        })
    }
}
