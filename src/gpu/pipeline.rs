//! Shader sources and the one pipeline cache, keyed by (shader, entry point, override constants,
//! binding access).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Every shader module the engine has. A closed enum: sources are compiled in with
/// `include_str!`, so a missing or misnamed file is a build error, not a runtime one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ShaderId {
    Conv2d,
    /// conv2d_sg.wgsl on gemm_sg.wgsl: the subgroup-broadcast GEMM, for 8-lane subgroups,
    /// reading a packed B from a storage buffer (gemm_sg_b_buffer.wgsl).
    Conv2dSg,
    /// The same reading a packed B from an operand texture (gemm_sg_b_texture.wgsl). A separate
    /// module because a texture binding must not be declared where none is bound: on lavapipe
    /// even an unread placeholder texture threw off the timestamps of every pass.
    Conv2dSgTexture,
    /// conv2d_sg.wgsl on gemm_tiled.wgsl: the GPU-class workgroup-memory GEMM (no subgroups),
    /// B read from a buffer.
    Conv2dTiled,
    Matmul,
    /// matmul_sg.wgsl on gemm_sg.wgsl: dense layers on the subgroup GEMM, B as for Conv2dSg.
    MatmulSg,
    /// The same with B in an operand texture.
    MatmulSgTexture,
    /// matmul_sg.wgsl on gemm_tiled.wgsl, as Conv2dTiled.
    MatmulTiled,
    /// pack.wgsl: B operands of the subgroup GEMM repacked into contiguous column tiles.
    Pack,
    /// winograd.wgsl: the kernel, input and output transforms of Winograd's 3x3 convolution,
    /// whose batched products run on the matmul modules.
    Winograd,
    Pool,
    Activation,
    Dropout,
    Loss,
    Reduce,
    Optim,
    Peak,
    /// subgroup_probe.wgsl: what the adapter's subgroups really are, checked before the
    /// subgroup GEMM is trusted with them (`gpu::subgroups`).
    SubgroupProbe,
}

/// Every file under `shaders/`, compiled in: the one table that the names in
/// [`ShaderId::files`] resolve in (a name missing here fails every module that lists it, in
/// `tests/shaders_validate.rs`).
const SHADER_FILES: [(&str, &str); 21] = [
    (
        "activation.wgsl",
        include_str!("../../shaders/activation.wgsl"),
    ),
    ("conv2d.wgsl", include_str!("../../shaders/conv2d.wgsl")),
    (
        "conv2d_params.wgsl",
        include_str!("../../shaders/conv2d_params.wgsl"),
    ),
    (
        "conv2d_sg.wgsl",
        include_str!("../../shaders/conv2d_sg.wgsl"),
    ),
    ("dropout.wgsl", include_str!("../../shaders/dropout.wgsl")),
    (
        "gemm_core.wgsl",
        include_str!("../../shaders/gemm_core.wgsl"),
    ),
    ("gemm_sg.wgsl", include_str!("../../shaders/gemm_sg.wgsl")),
    (
        "gemm_sg_b_buffer.wgsl",
        include_str!("../../shaders/gemm_sg_b_buffer.wgsl"),
    ),
    (
        "gemm_sg_b_texture.wgsl",
        include_str!("../../shaders/gemm_sg_b_texture.wgsl"),
    ),
    (
        "gemm_tiled.wgsl",
        include_str!("../../shaders/gemm_tiled.wgsl"),
    ),
    ("loss.wgsl", include_str!("../../shaders/loss.wgsl")),
    ("matmul.wgsl", include_str!("../../shaders/matmul.wgsl")),
    (
        "matmul_params.wgsl",
        include_str!("../../shaders/matmul_params.wgsl"),
    ),
    (
        "matmul_sg.wgsl",
        include_str!("../../shaders/matmul_sg.wgsl"),
    ),
    ("optim.wgsl", include_str!("../../shaders/optim.wgsl")),
    ("pack.wgsl", include_str!("../../shaders/pack.wgsl")),
    ("peak.wgsl", include_str!("../../shaders/peak.wgsl")),
    ("pool.wgsl", include_str!("../../shaders/pool.wgsl")),
    ("reduce.wgsl", include_str!("../../shaders/reduce.wgsl")),
    (
        "subgroup_probe.wgsl",
        include_str!("../../shaders/subgroup_probe.wgsl"),
    ),
    ("winograd.wgsl", include_str!("../../shaders/winograd.wgsl")),
];

/// The text of `shaders/<name>` as compiled in.
pub fn shader_file(name: &str) -> Option<&'static str> {
    SHADER_FILES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, text)| *text)
}

impl ShaderId {
    pub const ALL: [ShaderId; 18] = [
        ShaderId::Conv2d,
        ShaderId::Conv2dSg,
        ShaderId::Conv2dSgTexture,
        ShaderId::Conv2dTiled,
        ShaderId::Matmul,
        ShaderId::MatmulSg,
        ShaderId::MatmulSgTexture,
        ShaderId::MatmulTiled,
        ShaderId::Pack,
        ShaderId::Winograd,
        ShaderId::Pool,
        ShaderId::Activation,
        ShaderId::Dropout,
        ShaderId::Loss,
        ShaderId::Reduce,
        ShaderId::Optim,
        ShaderId::Peak,
        ShaderId::SubgroupProbe,
    ];

    /// The files under `shaders/` this module is assembled from, in order.
    pub fn files(self) -> &'static [&'static str] {
        match self {
            ShaderId::Conv2d => &["conv2d_params.wgsl", "conv2d.wgsl", "gemm_core.wgsl"],
            ShaderId::Conv2dSg => &[
                "conv2d_params.wgsl",
                "conv2d_sg.wgsl",
                "gemm_sg.wgsl",
                "gemm_sg_b_buffer.wgsl",
            ],
            ShaderId::Conv2dSgTexture => &[
                "conv2d_params.wgsl",
                "conv2d_sg.wgsl",
                "gemm_sg.wgsl",
                "gemm_sg_b_texture.wgsl",
            ],
            ShaderId::Conv2dTiled => &[
                "conv2d_params.wgsl",
                "conv2d_sg.wgsl",
                "gemm_tiled.wgsl",
                "gemm_sg_b_buffer.wgsl",
            ],
            ShaderId::Matmul => &["matmul_params.wgsl", "matmul.wgsl", "gemm_core.wgsl"],
            ShaderId::MatmulSg => &[
                "matmul_params.wgsl",
                "matmul_sg.wgsl",
                "gemm_sg.wgsl",
                "gemm_sg_b_buffer.wgsl",
            ],
            ShaderId::MatmulSgTexture => &[
                "matmul_params.wgsl",
                "matmul_sg.wgsl",
                "gemm_sg.wgsl",
                "gemm_sg_b_texture.wgsl",
            ],
            ShaderId::MatmulTiled => &[
                "matmul_params.wgsl",
                "matmul_sg.wgsl",
                "gemm_tiled.wgsl",
                "gemm_sg_b_buffer.wgsl",
            ],
            ShaderId::Pack => &["pack.wgsl"],
            ShaderId::Winograd => &["winograd.wgsl"],
            ShaderId::Pool => &["pool.wgsl"],
            ShaderId::Activation => &["activation.wgsl"],
            ShaderId::Dropout => &["dropout.wgsl"],
            ShaderId::Loss => &["loss.wgsl"],
            ShaderId::Reduce => &["reduce.wgsl"],
            ShaderId::Optim => &["optim.wgsl"],
            ShaderId::Peak => &["peak.wgsl"],
            ShaderId::SubgroupProbe => &["subgroup_probe.wgsl"],
        }
    }

    /// The module's name in files and messages: `conv2d_sg_texture` for `Conv2dSgTexture`.
    pub fn name(self) -> String {
        let mut out = String::new();
        for (i, ch) in format!("{self:?}").chars().enumerate() {
            if ch.is_ascii_uppercase() && i > 0 {
                out.push('_');
            }
            out.push(ch.to_ascii_lowercase());
        }
        out
    }

    /// Whether the module uses subgroup built-ins and functions: wgpu compiles it only where the
    /// device has the SUBGROUP feature, and WGSL as the spec (and Tint) reads it needs
    /// `enable subgroups;`, which naga refuses.
    pub fn uses_subgroups(self) -> bool {
        matches!(
            self,
            ShaderId::Conv2dSg
                | ShaderId::Conv2dSgTexture
                | ShaderId::MatmulSg
                | ShaderId::MatmulSgTexture
                | ShaderId::SubgroupProbe
        )
    }

    /// The full WGSL source. The GEMM-shaped ops share one tiled core (`gemm_core.wgsl`) that
    /// calls the op's own `load_a`/`load_b`/`store_c`; composing modules this way keeps shapes
    /// out of the source text (they arrive as uniforms and override constants).
    pub fn source(self) -> String {
        self.files()
            .iter()
            .map(|f| shader_file(f).unwrap_or_else(|| panic!("shaders/{f} is not compiled in")))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// How a shader uses one binding; part of the pipeline layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Access {
    Uniform,
    Read,
    Write,
    /// An rgba32float texture read with textureLoad.
    Texture,
    /// Not used by the entry point; no layout entry.
    Unused,
}

/// A pipeline the cache built: its shader, entry point and override constants.
pub type BuiltPipeline = (ShaderId, &'static str, Vec<(&'static str, f64)>);

/// A specialised entry point: the unit the pipeline cache stores.
#[derive(Clone, Debug)]
pub struct Kernel<'a> {
    pub shader: ShaderId,
    pub entry: &'static str,
    /// WGSL `override` constants by name.
    pub constants: &'a [(&'static str, f64)],
}

impl<'a> Kernel<'a> {
    pub fn new(
        shader: ShaderId,
        entry: &'static str,
        constants: &'a [(&'static str, f64)],
    ) -> Self {
        Self {
            shader,
            entry,
            constants,
        }
    }
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    shader: ShaderId,
    entry: &'static str,
    constants: Vec<(&'static str, u64)>,
    access: Vec<Access>,
}

pub(crate) struct CachedPipeline {
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
}

pub(crate) struct PipelineCache {
    device: wgpu::Device,
    modules: Mutex<HashMap<ShaderId, wgpu::ShaderModule>>,
    pipelines: Mutex<HashMap<Key, Arc<CachedPipeline>>>,
}

impl PipelineCache {
    pub fn new(device: wgpu::Device) -> Self {
        Self {
            device,
            modules: Mutex::new(HashMap::new()),
            pipelines: Mutex::new(HashMap::new()),
        }
    }

    pub fn len(&self) -> usize {
        self.pipelines.lock().expect("pipeline lock").len()
    }

    pub fn built(&self) -> Vec<BuiltPipeline> {
        let pipelines = self.pipelines.lock().expect("pipeline lock");
        pipelines
            .keys()
            .map(|k| {
                let constants = k
                    .constants
                    .iter()
                    .map(|&(name, bits)| (name, f64::from_bits(bits)))
                    .collect();
                (k.shader, k.entry, constants)
            })
            .collect()
    }

    pub fn get(&self, kernel: &Kernel<'_>, access: &[Access]) -> Arc<CachedPipeline> {
        let mut constants: Vec<(&'static str, u64)> = kernel
            .constants
            .iter()
            .map(|(k, v)| (*k, v.to_bits()))
            .collect();
        constants.sort_unstable();
        let key = Key {
            shader: kernel.shader,
            entry: kernel.entry,
            constants,
            access: access.to_vec(),
        };
        if let Some(p) = self.pipelines.lock().expect("pipeline lock").get(&key) {
            return p.clone();
        }
        super::contract::check_bindings(kernel, access);
        let module = {
            let mut modules = self.modules.lock().expect("module lock");
            modules
                .entry(kernel.shader)
                .or_insert_with(|| {
                    tracing::debug!(shader = ?kernel.shader, "compiling shader module");
                    self.device
                        .create_shader_module(wgpu::ShaderModuleDescriptor {
                            label: Some(kernel.shader.files()[0]),
                            source: wgpu::ShaderSource::Wgsl(kernel.shader.source().into()),
                        })
                })
                .clone()
        };
        let entries: Vec<wgpu::BindGroupLayoutEntry> = access
            .iter()
            .enumerate()
            .filter(|(_, a)| **a != Access::Unused)
            .map(|(i, a)| wgpu::BindGroupLayoutEntry {
                binding: i as u32,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: match a {
                    Access::Uniform => wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    Access::Read | Access::Write | Access::Unused => wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Storage {
                            read_only: *a == Access::Read,
                        },
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    Access::Texture => wgpu::BindingType::Texture {
                        sample_type: wgpu::TextureSampleType::Float { filterable: false },
                        view_dimension: wgpu::TextureViewDimension::D2,
                        multisampled: false,
                    },
                },
                count: None,
            })
            .collect();
        let layout = self
            .device
            .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some(kernel.entry),
                entries: &entries,
            });
        let pipeline_layout = self
            .device
            .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(kernel.entry),
                bind_group_layouts: &[Some(&layout)],
                immediate_size: 0,
            });
        tracing::debug!(shader = ?kernel.shader, entry = kernel.entry, constants = ?kernel.constants, "building pipeline");
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(kernel.entry),
                layout: Some(&pipeline_layout),
                module: &module,
                entry_point: Some(kernel.entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: kernel.constants,
                    // Every kernel writes workgroup memory before reading it.
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            });
        let cached = Arc::new(CachedPipeline { pipeline, layout });
        self.pipelines
            .lock()
            .expect("pipeline lock")
            .insert(key, cached.clone());
        cached
    }
}
