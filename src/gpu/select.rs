//! Finding adapters and opening a device on one: the "get a device" half of the runtime.

use std::str::FromStr;

use super::{DeviceOptions, Gpu, GpuError};

/// A backend restriction given by the user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendChoice {
    Vulkan,
    Metal,
    Dx12,
    Gl,
}

impl BackendChoice {
    pub fn backends(self) -> wgpu::Backends {
        match self {
            BackendChoice::Vulkan => wgpu::Backends::VULKAN,
            BackendChoice::Metal => wgpu::Backends::METAL,
            BackendChoice::Dx12 => wgpu::Backends::DX12,
            BackendChoice::Gl => wgpu::Backends::GL,
        }
    }
}

impl FromStr for BackendChoice {
    type Err = GpuError;
    fn from_str(s: &str) -> Result<Self, GpuError> {
        match s.to_ascii_lowercase().as_str() {
            "vulkan" | "vk" => Ok(Self::Vulkan),
            "metal" | "mtl" => Ok(Self::Metal),
            "dx12" | "d3d12" => Ok(Self::Dx12),
            "gl" | "gles" | "opengl" => Ok(Self::Gl),
            _ => Err(GpuError::UnknownBackend(s.to_string())),
        }
    }
}

/// Which adapter to open, and the options to open its device with. `Default` asks for the best
/// adapter with default options and reads nothing; [`AdapterRequest::from_env`] reads the
/// environment.
#[derive(Clone, Debug, Default)]
pub struct AdapterRequest {
    /// Case-insensitive substring of the adapter name.
    pub name: Option<String>,
    pub backend: Option<BackendChoice>,
    pub options: DeviceOptions,
}

impl AdapterRequest {
    /// The request the environment asks for: `CNN_WGPU_ADAPTER`, `CNN_WGPU_BACKEND`, and
    /// [`DeviceOptions::from_env`].
    pub fn from_env() -> Result<Self, GpuError> {
        let name = std::env::var("CNN_WGPU_ADAPTER")
            .ok()
            .filter(|s| !s.is_empty());
        let backend = match std::env::var("CNN_WGPU_BACKEND") {
            Ok(s) if !s.is_empty() => Some(s.parse()?),
            _ => None,
        };
        Ok(Self {
            name,
            backend,
            options: DeviceOptions::from_env()?,
        })
    }

    fn backends(&self) -> wgpu::Backends {
        // GL is opt-in: its compute support is the weakest and it would shadow Vulkan's
        // software adapter in the default choice.
        self.backend
            .map_or(wgpu::Backends::PRIMARY, BackendChoice::backends)
    }
}

/// What `cnn-wgpu devices` prints for one adapter.
#[derive(Clone, Debug, serde::Serialize)]
pub struct AdapterSummary {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub driver_info: String,
    pub max_storage_buffer_binding_size: u64,
    pub max_buffer_size: u64,
    pub max_compute_workgroup_storage_size: u32,
    pub max_compute_invocations_per_workgroup: u32,
    pub max_compute_workgroups_per_dimension: u32,
    pub timestamp_query: bool,
    pub shader_f16: bool,
    /// Subgroup sizes (min, max) where the adapter has subgroup operations.
    pub subgroup_sizes: Option<(u32, u32)>,
    /// The width the subgroup GEMM kernels run at here, where they do (see
    /// [`super::subgroup_gemm_width`]).
    pub subgroup_gemm_width: Option<u32>,
    /// Whether the subgroup GEMM kernels would read their packed weights from textures here
    /// (subgroup GEMM width, [`DeviceOptions::textures`] on; see `Gpu::texture_operands`).
    pub operand_textures: bool,
    pub max_texture_dimension_2d: u32,
    /// The tiled kernels' configurations this adapter's limits allow (none where
    /// [`DeviceOptions::tiled`] is off).
    pub tiled_configs: Vec<&'static str>,
    /// The family GEMM products with vec4 operands run on here by default: `subgroup-W`,
    /// `tiled` or `workgroup-memory` (the rule is `ops::gemm`'s; a subgroup width that fails its
    /// probe as a device opens drops to the next).
    pub gemm_family: String,
    /// This adapter's tuning cache file (see `gpu::tune`) and how many choices it holds.
    pub tune_cache: Option<String>,
    pub tuned_choices: usize,
}

impl AdapterSummary {
    fn of(adapter: &wgpu::Adapter, options: &DeviceOptions) -> Self {
        let info = adapter.get_info();
        let limits = requested_limits(adapter, options);
        let features = adapter.features();
        let tune_cache = super::tune::cache_path(&info, options.tune_cache.as_deref());
        let subgroup_gemm_width = super::subgroup_gemm_width(&info, features);
        let tiled_configs: Vec<&'static str> = super::TiledConfig::ALL
            .iter()
            .filter(|c| options.tiled && c.fits(&limits))
            .map(|c| c.name)
            .collect();
        let subgroup = subgroup_gemm_width
            .filter(|_| options.subgroups)
            .map(|w| format!("subgroup-{w}"));
        let tiled = (!tiled_configs.is_empty()).then(|| "tiled".to_string());
        let gemm_family = if super::prefers_subgroup_gemm(info.device_type) && !options.plan_as_gpu
        {
            subgroup.or(tiled)
        } else {
            tiled.or(subgroup)
        }
        .unwrap_or_else(|| "workgroup-memory".to_string());
        Self {
            tiled_configs,
            gemm_family,
            tuned_choices: tune_cache.as_deref().map_or(0, super::tune::cached_choices),
            tune_cache: tune_cache.map(|p| p.display().to_string()),
            name: info.name,
            backend: format!("{:?}", info.backend),
            device_type: format!("{:?}", info.device_type),
            driver: info.driver,
            driver_info: info.driver_info,
            max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size,
            max_buffer_size: limits.max_buffer_size,
            max_compute_workgroup_storage_size: limits.max_compute_workgroup_storage_size,
            max_compute_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
            max_compute_workgroups_per_dimension: limits.max_compute_workgroups_per_dimension,
            timestamp_query: features.contains(wgpu::Features::TIMESTAMP_QUERY),
            shader_f16: features.contains(wgpu::Features::SHADER_F16),
            subgroup_sizes: features
                .contains(wgpu::Features::SUBGROUP)
                .then_some((info.subgroup_min_size, info.subgroup_max_size)),
            subgroup_gemm_width,
            operand_textures: subgroup_gemm_width.is_some() && options.textures,
            max_texture_dimension_2d: limits.max_texture_dimension_2d,
        }
    }
}

fn instance(backends: wgpu::Backends) -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = backends;
    wgpu::Instance::new(desc)
}

fn compute_capable(adapter: &wgpu::Adapter) -> bool {
    adapter
        .get_downlevel_capabilities()
        .flags
        .contains(wgpu::DownlevelFlags::COMPUTE_SHADERS)
}

/// Every adapter on the requested backends.
pub fn list(request: &AdapterRequest) -> Vec<AdapterSummary> {
    let instance = instance(request.backends());
    pollster::block_on(instance.enumerate_adapters(request.backends()))
        .iter()
        .map(|a| AdapterSummary::of(a, &request.options))
        .collect()
}

fn rank(t: wgpu::DeviceType) -> u8 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

/// Picks an adapter: the named one, else the best hardware GPU, else a software adapter.
pub fn choose(request: &AdapterRequest) -> Result<wgpu::Adapter, GpuError> {
    let instance = instance(request.backends());
    let mut adapters: Vec<wgpu::Adapter> =
        pollster::block_on(instance.enumerate_adapters(request.backends()))
            .into_iter()
            .filter(compute_capable)
            .collect();
    if adapters.is_empty() {
        return Err(GpuError::NoAdapter {
            backends: format!("{:?}", request.backends()),
        });
    }
    if let Some(wanted) = &request.name {
        let lower = wanted.to_lowercase();
        let names: Vec<String> = adapters.iter().map(|a| a.get_info().name).collect();
        return adapters
            .into_iter()
            .find(|a| a.get_info().name.to_lowercase().contains(&lower))
            .ok_or_else(|| GpuError::AdapterNotFound {
                wanted: wanted.clone(),
                available: names.join(", "),
            });
    }
    adapters.sort_by_key(|a| rank(a.get_info().device_type));
    let best = adapters.swap_remove(0);
    let info = best.get_info();
    if info.device_type == wgpu::DeviceType::Cpu {
        tracing::warn!(
            "no hardware GPU found; using the software adapter {:?} ({:?}), expect it to be slow",
            info.name,
            info.backend
        );
    }
    Ok(best)
}

/// The limits a device on `adapter` is opened with: the adapter's real ones, or with
/// [`DeviceOptions::webgpu_limits`] WebGPU's defaults (`wgpu::Limits::default()`), each
/// lowered to the adapter's where the adapter offers less.
pub fn requested_limits(adapter: &wgpu::Adapter, options: &DeviceOptions) -> wgpu::Limits {
    let real = adapter.limits();
    if let Some(class) = options.simulate {
        class.limits(&real)
    } else if options.webgpu_limits {
        wgpu::Limits::default().or_worse_values_from(&real)
    } else {
        real
    }
}

/// Opens a device on `adapter` with its real limits (or WebGPU's defaults, as `options` says)
/// and the optional features that help.
pub fn open_adapter(adapter: &wgpu::Adapter, options: &DeviceOptions) -> Result<Gpu, GpuError> {
    let wanted = wgpu::Features::TIMESTAMP_QUERY
        | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS
        | wgpu::Features::SHADER_F16
        | wgpu::Features::SUBGROUP;
    let features = adapter.features() & wanted;
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("cnn-wgpu"),
        required_features: features,
        required_limits: requested_limits(adapter, options),
        experimental_features: wgpu::ExperimentalFeatures::disabled(),
        memory_hints: wgpu::MemoryHints::Performance,
        trace: wgpu::Trace::Off,
    }))
    .map_err(|source| GpuError::RequestDevice {
        adapter: adapter.get_info().name,
        source,
    })?;
    let gpu = Gpu::from_parts(adapter, device, queue, options);
    tracing::info!(
        adapter = gpu.adapter_name(),
        backend = ?gpu.info().backend,
        binding_limit = gpu.binding_limit(),
        "opened device"
    );
    Ok(gpu)
}

/// Chooses an adapter as `request` says and opens it.
pub fn open(request: &AdapterRequest) -> Result<Gpu, GpuError> {
    let adapter = choose(request)?;
    open_adapter(&adapter, &request.options)
}
