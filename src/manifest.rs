//! The pipeline manifest: every pipeline a planner or a `--tune` candidate can build for the
//! bench workloads, `selftest` and the zoo models at batch 1, 20 and 32, per adapter class
//! ([`AdapterClass::ALL`]: CPU adapters and GPUs with 8-, 16-, 32- or 64-lane subgroups or
//! none, and a browser's defaults). Each class is planned on a device that simulates it
//! (`gpu::manifest`): the real ops run their real planning and record each pipeline instead of
//! dispatching it, so the manifest is what the engine would build there, not a model of it.
//! `cnn-wgpu shaders --out DIR` writes it beside the modules; Tint (`cargo xtask tint`) creates
//! every pipeline in it, and `tests/translate.rs` translates every one with naga.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use thiserror::Error;

use crate::bench::{self, BenchOptions, Workloads};
use crate::gpu::{self, AdapterClass, ClassLimits, DeviceOptions, Gpu, RecordedPipeline, ShaderId};
use crate::model::{zoo, Model, Pass};
use crate::ops::optim::Optimizer;
use crate::Tensor;

/// The batch sizes every zoo model is planned at: one image (prediction), the book's 20, and 32.
pub const ZOO_BATCHES: [usize; 3] = [1, 20, 32];

/// Errors of writing the manifest: a workload that failed to plan, or a pipeline naga cannot
/// specialise.
#[derive(Debug, Error)]
pub enum ManifestError {
    #[error("adapter class {class}: {source}")]
    Gpu {
        class: &'static str,
        #[source]
        source: gpu::GpuError,
    },
    #[error("adapter class {class}, workload {workload}: {reason}")]
    Workload {
        class: &'static str,
        workload: String,
        reason: String,
    },
    #[error("module {module}: naga rejects it: {reason}")]
    Module { module: String, reason: String },
    #[error("module {module}, entry point {entry}, constants {constants}: {reason}")]
    Constants {
        module: String,
        entry: String,
        constants: String,
        reason: String,
    },
}

/// One pipeline of a class's manifest.
#[derive(Clone, Debug)]
pub struct Pipeline {
    pub recorded: RecordedPipeline,
    /// `@workgroup_size` with the constants applied (naga's reading of the module).
    pub workgroup_size: [u32; 3],
    /// Bytes of workgroup memory the entry point uses, as WebGPU counts them.
    pub workgroup_bytes: u64,
    /// The workloads that ask for it, each with whether its plan builds it without `--tune`
    /// (false: only a `--tune` candidate does).
    pub uses: gpu::Uses,
}

impl Pipeline {
    /// The GEMM kernel family this pipeline belongs to, as the planner names it
    /// (`subgroup-32`, `tiled`, `workgroup-memory`); None for a pipeline that is no GEMM.
    pub fn family(&self) -> Option<String> {
        let r = &self.recorded;
        match r.shader {
            ShaderId::Conv2dSg
            | ShaderId::Conv2dSgTexture
            | ShaderId::MatmulSg
            | ShaderId::MatmulSgTexture => {
                let width = r
                    .constant_values()
                    .iter()
                    .find(|(k, _)| *k == "SG_W")
                    .map_or(0.0, |(_, v)| *v);
                Some(format!("subgroup-{width}"))
            }
            ShaderId::Conv2dTiled | ShaderId::MatmulTiled => Some("tiled".into()),
            ShaderId::Conv2d | ShaderId::Matmul => Some("workgroup-memory".into()),
            _ => None,
        }
    }
}

/// What one adapter class builds.
#[derive(Clone, Debug)]
pub struct ClassManifest {
    pub class: AdapterClass,
    /// The adapter the class was simulated on.
    pub simulated_on: String,
    /// The limits the class was planned under (the class's, lowered to that adapter's).
    pub limits: wgpu::Limits,
    /// Workgroups the planner assumed run at once (`Gpu::parallelism_hint`).
    pub parallelism: usize,
    pub pipelines: Vec<Pipeline>,
}

impl ClassManifest {
    /// The GEMM families the plans of the bench workloads and the zoo models run without
    /// `--tune`, and those only `--tune` candidates add, each sorted. (`selftest` runs every
    /// family the adapter has on purpose, so it is left out.)
    pub fn families(&self) -> (Vec<String>, Vec<String>) {
        let mut planned = BTreeSet::new();
        let mut all = BTreeSet::new();
        for p in &self.pipelines {
            let Some(f) = p.family() else { continue };
            for (source, by_plan) in &p.uses {
                if source == SELFTEST {
                    continue;
                }
                if *by_plan {
                    planned.insert(f.clone());
                }
                all.insert(f.clone());
            }
        }
        let tuned = all.difference(&planned).cloned().collect();
        (planned.into_iter().collect(), tuned)
    }
}

/// Plans every workload on a device simulating `class`, opened on `adapter` with `options`
/// (`select::choose` picks the adapter once for all the classes). `progress` hears each
/// workload's name as it starts.
pub fn plan_class(
    adapter: &wgpu::Adapter,
    options: &DeviceOptions,
    class: AdapterClass,
    progress: &mut dyn FnMut(&str),
) -> Result<ClassManifest, ManifestError> {
    let options = DeviceOptions {
        simulate: Some(class),
        ..options.clone()
    };
    let gpu =
        gpu::select::open_adapter(adapter, &options).map_err(|source| ManifestError::Gpu {
            class: class.name,
            source,
        })?;
    for (name, work) in workloads() {
        progress(&name);
        let started = std::time::Instant::now();
        gpu.set_manifest_source(&name);
        work(&gpu).map_err(|reason| ManifestError::Workload {
            class: class.name,
            workload: name.clone(),
            reason,
        })?;
        // What a workload leaves in the pool is not the next one's.
        gpu.sync().map_err(|source| ManifestError::Gpu {
            class: class.name,
            source,
        })?;
        gpu.trim_pool();
        tracing::info!(
            class = class.name,
            workload = name,
            seconds = started.elapsed().as_secs_f64(),
            "planned"
        );
    }
    let mut modules = Modules::default();
    let pipelines = gpu
        .recorded_pipelines()
        .into_iter()
        .map(|(recorded, uses)| {
            let (workgroup_size, workgroup_bytes) = modules.workgroup(&recorded)?;
            Ok(Pipeline {
                workgroup_size,
                workgroup_bytes,
                recorded,
                uses,
            })
        })
        .collect::<Result<Vec<_>, ManifestError>>()?;
    Ok(ClassManifest {
        class,
        simulated_on: format!(
            "{} ({:?})",
            adapter.get_info().name,
            adapter.get_info().backend
        ),
        limits: gpu.limits().clone(),
        parallelism: gpu.parallelism_hint(),
        pipelines,
    })
}

/// The names of the workloads every class is planned for, in order.
pub fn workload_names() -> Vec<String> {
    workloads().into_iter().map(|(n, _)| n).collect()
}

/// Runs the workload called `name` (one of [`workload_names`]) on `gpu`, simulated or real: on
/// a real device it builds the pipelines the manifest says its plan builds there, which is how
/// `tests/manifest.rs` checks the simulation against the adapter it stands for.
pub fn run_workload(gpu: &Gpu, name: &str) -> Result<(), String> {
    let (_, work) = workloads()
        .into_iter()
        .find(|(n, _)| n == name)
        .ok_or_else(|| format!("no manifest workload {name:?}"))?;
    work(gpu)
}

const SELFTEST: &str = "selftest";

type Work = Box<dyn Fn(&Gpu) -> Result<(), String>>;

/// The workloads every class is planned for, by name.
fn workloads() -> Vec<(String, Work)> {
    let mut all: Vec<(String, Work)> = vec![
        (
            SELFTEST.into(),
            Box::new(|gpu: &Gpu| {
                // Nothing runs, so the checks' verdicts mean nothing here; only the pipelines
                // they build count.
                crate::selftest::run(gpu, &mut |_| {})
                    .map(drop)
                    .map_err(|e| e.to_string())
            }),
        ),
        (
            "bench".into(),
            Box::new(|gpu: &Gpu| {
                let opts = BenchOptions {
                    warmup: 0,
                    runs: 1,
                    ..BenchOptions::default()
                };
                bench::run(gpu, &Workloads::reference(), &opts, |_| {})
                    .map_err(|e| e.to_string())?;
                bench::measure_peak_best(gpu).map_err(|e| e.to_string())?;
                Ok(())
            }),
        ),
    ];
    for name in zoo::NAMES {
        for n in ZOO_BATCHES {
            all.push((
                format!("{name} n{n}"),
                Box::new(move |gpu: &Gpu| zoo_model(gpu, name, n).map_err(|e| e.to_string())),
            ));
        }
    }
    all
}

/// One zoo model at batch `n`: a training step with every layer trainable, evaluation and
/// prediction; for VGG16 also the main job's stages (block5_pool features, the frozen base
/// with its head training, block5 fine-tuning); for the MNIST convnet each optimizer.
fn zoo_model(gpu: &Gpu, name: &str, n: usize) -> Result<(), Box<dyn std::error::Error>> {
    let spec = zoo::by_name(name, None, None)?;
    let mut model = Model::new(gpu, spec, 1)?;
    model.check_batch(gpu, n)?;
    let dims: Vec<usize> = std::iter::once(n)
        .chain(model.spec.input.iter().copied())
        .collect();
    let x = Tensor::zeros(gpu, dims)?;
    let Ok(_) = model.spec.loss() else {
        // The base alone (no classifier): the features stage 1 caches.
        model.predict(gpu, &x)?;
        model.features(gpu, &x, "block5_pool")?;
        return Ok(());
    };
    let mut out = model.shapes().last().cloned().unwrap_or_default();
    out.insert(0, n);
    let y = Tensor::zeros(gpu, out)?;
    model.train_step(gpu, &Optimizer::rmsprop(1e-4), &x, &y, 1)?;
    model.evaluate_batch(gpu, &x, &y)?;
    model.predict(gpu, &x)?;
    if name == "mnist-convnet" {
        for opt in [Optimizer::sgd(1e-2), Optimizer::adam(1e-3)] {
            let mut m = Model::new(gpu, model.spec.clone(), 1)?;
            m.train_step(gpu, &opt, &x, &y, 1)?;
        }
    }
    if name == "vgg16-classifier" {
        let head = model.spec.layer_index("block5_pool").map_or(0, |i| i + 1);
        for first in [head, model.spec.require_layer("block5_conv1")?] {
            let mut m = Model::new(gpu, model.spec.clone(), 1)?;
            m.set_trainable_from(first);
            m.train_step(gpu, &Optimizer::rmsprop(1e-5), &x, &y, 1)?;
            m.forward(gpu, &x, Pass::Inference)?;
        }
    }
    Ok(())
}

/// naga's reading of each module, parsed once.
#[derive(Default)]
struct Modules {
    parsed: HashMap<ShaderId, (naga::Module, naga::valid::ModuleInfo)>,
}

impl Modules {
    /// The workgroup size of `p`'s entry point with its constants applied, and the bytes of
    /// workgroup memory it uses.
    fn workgroup(&mut self, p: &RecordedPipeline) -> Result<([u32; 3], u64), ManifestError> {
        let module = p.shader.name();
        let (parsed, info) = match self.parsed.entry(p.shader) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(parse(p.shader)?),
        };
        let (parsed, info) = (&*parsed, &*info);
        let constants: naga::back::PipelineConstants = p
            .constant_values()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let fail = |reason: String| ManifestError::Constants {
            module: module.clone(),
            entry: p.entry.to_string(),
            constants: describe_constants(p),
            reason,
        };
        let (specialised, info) = naga::back::pipeline_constants::process_overrides(
            parsed,
            info,
            Some((naga::ShaderStage::Compute, p.entry)),
            &constants,
        )
        .map_err(|e| fail(e.to_string()))?;
        let (index, entry) = specialised
            .entry_points
            .iter()
            .enumerate()
            .find(|(_, e)| e.name == p.entry)
            .ok_or_else(|| fail("no such entry point".into()))?;
        // Workgroup memory as WebGPU counts it against maxComputeWorkgroupStorageSize: each
        // workgroup variable the entry point uses, at its size rounded to 16 bytes.
        let mut layouter = naga::proc::Layouter::default();
        layouter
            .update(specialised.to_ctx())
            .map_err(|e| fail(e.to_string()))?;
        let uses = info.get_entry_point(index);
        let workgroup_bytes = specialised
            .global_variables
            .iter()
            .filter(|(h, v)| v.space == naga::AddressSpace::WorkGroup && !uses[*h].is_empty())
            .map(|(_, v)| u64::from(layouter[v.ty].size).div_ceil(16) * 16)
            .sum();
        Ok((entry.workgroup_size, workgroup_bytes))
    }
}

/// A module parsed and validated by naga, as wgpu does before it compiles one.
pub fn parse(id: ShaderId) -> Result<(naga::Module, naga::valid::ModuleInfo), ManifestError> {
    let source = id.source();
    let fail = |reason| ManifestError::Module {
        module: id.name(),
        reason,
    };
    let parsed =
        naga::front::wgsl::parse_str(&source).map_err(|e| fail(e.emit_to_string(&source)))?;
    let info = naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::all(),
    )
    .validate(&parsed)
    .map_err(|e| fail(e.emit_to_string(&source)))?;
    Ok((parsed, info))
}

/// `A=1,B=2`, or `defaults`.
pub fn describe_constants(p: &RecordedPipeline) -> String {
    let all: Vec<String> = p
        .constant_values()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if all.is_empty() {
        "defaults".into()
    } else {
        all.join(",")
    }
}

/// The limits a pipeline's creation is checked against, by their WebGPU names, as the
/// manifest records them for other compilers (Dawn takes these names as they are).
pub fn pipeline_limits(l: &wgpu::Limits) -> BTreeMap<&'static str, u64> {
    BTreeMap::from([
        (
            "maxComputeWorkgroupStorageSize",
            u64::from(l.max_compute_workgroup_storage_size),
        ),
        (
            "maxComputeInvocationsPerWorkgroup",
            u64::from(l.max_compute_invocations_per_workgroup),
        ),
        (
            "maxComputeWorkgroupSizeX",
            u64::from(l.max_compute_workgroup_size_x),
        ),
        (
            "maxComputeWorkgroupSizeY",
            u64::from(l.max_compute_workgroup_size_y),
        ),
        (
            "maxComputeWorkgroupSizeZ",
            u64::from(l.max_compute_workgroup_size_z),
        ),
        (
            "maxStorageBuffersPerShaderStage",
            u64::from(l.max_storage_buffers_per_shader_stage),
        ),
        (
            "maxSampledTexturesPerShaderStage",
            u64::from(l.max_sampled_textures_per_shader_stage),
        ),
        (
            "maxUniformBuffersPerShaderStage",
            u64::from(l.max_uniform_buffers_per_shader_stage),
        ),
        ("maxBindGroups", u64::from(l.max_bind_groups)),
        (
            "maxStorageBufferBindingSize",
            l.max_storage_buffer_binding_size,
        ),
        ("maxBufferSize", l.max_buffer_size),
        (
            "maxTextureDimension2D",
            u64::from(l.max_texture_dimension_2d),
        ),
    ])
}

/// The manifest as JSON: per class its facts, limits, families and pipelines.
pub fn to_json(classes: &[ClassManifest]) -> serde_json::Value {
    use serde_json::json;
    let classes: Vec<serde_json::Value> = classes
        .iter()
        .map(|m| {
            let (planned, tuned) = m.families();
            let pipelines: Vec<serde_json::Value> = m
                .pipelines
                .iter()
                .map(|p| {
                    let r = &p.recorded;
                    let constants: serde_json::Map<String, serde_json::Value> = r
                        .constant_values()
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), json!(v)))
                        .collect();
                    json!({
                        "module": r.shader.name(),
                        "entry": r.entry,
                        "constants": constants,
                        "workgroup_size": p.workgroup_size,
                        "workgroup_bytes": p.workgroup_bytes,
                        "bindings": r.bindings.iter().map(|a| format!("{a:?}").to_lowercase()).collect::<Vec<_>>(),
                        "uses_subgroups": r.shader.uses_subgroups(),
                        "planned": p.uses.values().any(|&b| b),
                        "sources": p.uses,
                    })
                })
                .collect();
            json!({
                "name": m.class.name,
                "about": m.class.about,
                "planned_as": if m.class.gpu { "gpu" } else { "cpu" },
                "subgroup_width": m.class.subgroup_width,
                "limits_from": match m.class.limits {
                    ClassLimits::Adapter => "adapter",
                    ClassLimits::Desktop => "desktop",
                    ClassLimits::WebGpu => "webgpu-defaults",
                },
                "limits": pipeline_limits(&m.limits),
                "simulated_on": m.simulated_on,
                "parallelism": m.parallelism,
                "families": { "planned": planned, "tune_only": tuned },
                "pipelines": pipelines,
            })
        })
        .collect();
    json!({
        "workloads": workload_names(),
        "classes": classes,
    })
}
