//! `devices`, `summary` and `features`: what the machine and the models look like.

use std::path::PathBuf;

use cnn_wgpu::gpu::{select, AdapterRequest};

#[derive(clap::Args)]
pub struct DevicesArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn devices(request: &AdapterRequest, a: DevicesArgs) -> Result<(), Box<dyn std::error::Error>> {
    let DevicesArgs { json } = a;
    let list = select::list(request);
    if list.is_empty() {
        return Err(Box::new(cnn_wgpu::GpuError::NoAdapter {
            backends: format!("{:?}", request.backend),
        }));
    }
    if json {
        for a in &list {
            println!("{}", serde_json::to_string(a)?);
        }
    } else {
        for (i, a) in list.iter().enumerate() {
            println!("[{i}] {} ({}, {})", a.name, a.backend, a.device_type);
            println!("    driver: {} {}", a.driver, a.driver_info);
            println!(
                "    max storage binding {} MiB, max buffer {} MiB, workgroup storage {} KiB, {} invocations/workgroup, {} workgroups/dim",
                a.max_storage_buffer_binding_size >> 20,
                a.max_buffer_size >> 20,
                a.max_compute_workgroup_storage_size >> 10,
                a.max_compute_invocations_per_workgroup,
                a.max_compute_workgroups_per_dimension
            );
            let subgroups = match (a.subgroup_sizes, a.subgroup_gemm_width) {
                (Some(_), Some(w)) if a.operand_textures => format!(
                    "{w} lanes (subgroup GEMM kernels where a probe confirms the width as a device opens; packed weights read from textures of up to {} rows)",
                    a.max_texture_dimension_2d
                ),
                (Some(_), Some(w)) => format!(
                    "{w} lanes (subgroup GEMM kernels where a probe confirms the width as a device opens; packed weights in buffers: CNN_WGPU_NO_TEXTURES)"
                ),
                (Some((lo, hi)), None) if lo == hi => {
                    format!("{lo} lanes (no subgroup GEMM: it takes 8 to 64)")
                }
                (Some((lo, hi)), None) => format!(
                    "{lo}-{hi} lanes (no subgroup GEMM: it needs one fixed width)"
                ),
                (None, _) => "none (no subgroup GEMM)".to_string(),
            };
            println!(
                "    timestamp queries: {}, shader f16: {}, subgroups: {subgroups}",
                a.timestamp_query, a.shader_f16
            );
            println!(
                "    GEMM kernels: {} for vec4 operands; tiled configurations {}",
                a.gemm_family,
                if a.tiled_configs.is_empty() {
                    "none (CNN_WGPU_NO_TILED, or the limits allow none)".to_string()
                } else {
                    a.tiled_configs.join(", ")
                }
            );
            if let Some(path) = &a.tune_cache {
                println!(
                    "    tuning cache: {path} ({} choices; `--tune` measures new shapes)",
                    a.tuned_choices
                );
            }
        }
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct SummaryArgs {
    /// small-convnet, small-convnet-dropout, convnet-180, vgg16-base, vgg16-classifier,
    /// mnist-convnet or conv1d-net.
    #[arg(long)]
    model: String,
    /// Image side for the image models (default: the model's own).
    #[arg(long)]
    image_size: Option<usize>,
    /// Sequence length and channels for conv1d-net.
    #[arg(long, num_args = 2, value_names = ["LEN", "CHANNELS"])]
    sequence: Option<Vec<usize>>,
    /// Freeze every layer before this one (e.g. flatten, block5_conv1).
    #[arg(long)]
    trainable_from: Option<String>,
}

pub fn summary(a: SummaryArgs) -> Result<(), Box<dyn std::error::Error>> {
    let SummaryArgs {
        model,
        image_size,
        sequence,
        trainable_from,
    } = a;
    let seq = sequence.map(|v| (v[0], v[1]));
    let spec = cnn_wgpu::model::zoo::by_name(&model, image_size, seq)?;
    let first = match &trainable_from {
        Some(name) => spec.require_layer(name)?,
        None => 0,
    };
    let mask: Vec<bool> = (0..spec.layers.len()).map(|i| i >= first).collect();
    print!("{}", spec.summary(&mask)?);
    Ok(())
}

#[derive(clap::Args)]
pub struct FeaturesArgs {
    #[arg(long)]
    weights: PathBuf,
    /// A VGG16 layer name, e.g. block1_conv1, block3_pool, block5_pool.
    #[arg(long)]
    layer: String,
    /// Image files, or folders whose images (sub-folders included) are all taken, in order.
    #[arg(long, required = true, num_args = 1..)]
    images: Vec<PathBuf>,
    /// Images per forward pass.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..))]
    batch: u64,
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 150)]
    image_size: usize,
}

pub fn features(
    request: &AdapterRequest,
    a: FeaturesArgs,
) -> Result<(), Box<dyn std::error::Error>> {
    let FeaturesArgs {
        weights,
        layer,
        images,
        out,
        image_size,
        batch,
    } = a;
    // Paths first: a missing file or an empty folder is refused before the weights load.
    let files = cnn_wgpu::data::FileList::open(&images)?.sized((image_size, image_size), 3)?;
    let gpu = select::open(request)?;
    let mut model =
        cnn_wgpu::model::Model::new(&gpu, cnn_wgpu::model::zoo::vgg16_base(image_size), 0)?;
    let loaded = cnn_wgpu::model::weights::load_vgg16(&gpu, &mut model, &weights)?;
    eprintln!(
        "{:?} weights, {:?} preprocessing (from the {})",
        loaded.naming, loaded.preprocessing, loaded.preprocessing_source
    );
    // The layer's name is checked before any image is decoded.
    let mut dims = model.spec.checked_shapes()?[model.spec.require_layer(&layer)?].clone();
    let n = cnn_wgpu::data::Dataset::len(&files);
    let files = std::sync::Arc::new(files);
    // Features cover every image or none: an undecodable one is an error naming it.
    let mut cfg =
        cnn_wgpu::data::LoaderConfig::evaluation(usize::try_from(batch)?, loaded.preprocessing);
    cfg.strict = true;
    let loader = cnn_wgpu::data::Loader::new(files.clone(), cfg)?;
    let bar = cnn_wgpu::train::images_bar("features", n);
    let mut data = Vec::new();
    for b in loader.epoch(0) {
        let b = b?;
        let x = cnn_wgpu::Tensor::from_slice(&gpu, b.shape, &b.images)?;
        data.extend(model.features(&gpu, &x, &layer)?.to_vec(&gpu)?);
        bar.inc(b.len() as u64);
    }
    bar.finish_and_clear();
    dims.insert(0, n);
    let view = safetensors::tensor::TensorView::new(
        safetensors::Dtype::F32,
        dims.clone(),
        bytemuck::cast_slice(&data),
    )?;
    let files: Vec<String> = (0..n)
        .map(|i| files.path(i).display().to_string())
        .collect();
    let meta = std::collections::HashMap::from([
        ("layout".to_string(), "NHWC".to_string()),
        ("files".to_string(), serde_json::to_string(&files)?),
        (
            "preprocessing".to_string(),
            format!("{:?}", loaded.preprocessing).to_lowercase(),
        ),
        ("weights".to_string(), weights.display().to_string()),
    ]);
    cnn_wgpu::atomic_file::write_atomic(
        &out,
        &safetensors::serialize([(layer.as_str(), view)], Some(meta))?,
    )
    .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    println!("wrote {} {:?} to {}", layer, dims, out.display());
    Ok(())
}

#[derive(clap::Args)]
pub struct SelftestArgs {
    /// One JSON object per check (family, op, case, worst error over its bound, passed, ms)
    /// instead of the table.
    #[arg(long)]
    json: bool,
}

/// Every kernel family and op on the adapter in use against the CPU references; fails where any
/// check does.
pub fn selftest(
    request: &AdapterRequest,
    a: SelftestArgs,
) -> Result<(), Box<dyn std::error::Error>> {
    let gpu = select::open(request)?;
    let info = gpu.info();
    if !a.json {
        println!(
            "selftest on {} ({:?}, driver {} {}); error shown as a share of its rounding bound",
            gpu.adapter_name(),
            info.backend,
            info.driver,
            info.driver_info
        );
    }
    let t = std::time::Instant::now();
    let mut print = |c: &cnn_wgpu::selftest::Check| {
        if a.json {
            println!("{}", serde_json::to_string(c).expect("a check serialises"));
        } else {
            println!(
                "{:<4} {:<28} {:<28} {:<44} {:>9.3} {:>8.1} ms",
                if c.passed { "ok" } else { "FAIL" },
                c.family,
                c.op,
                c.case,
                c.worst,
                c.millis
            );
            if !c.passed {
                let (i, got, want) = c.at;
                println!("     element {i}: got {got}, the reference {want}");
            }
        }
    };
    let checks = cnn_wgpu::selftest::run(&gpu, &mut print)?;
    let failed = checks.iter().filter(|c| !c.passed).count();
    let families = cnn_wgpu::selftest::families(&gpu).len();
    if !a.json {
        println!(
            "{} checks on {families} kernel families in {:.1} s: {}",
            checks.len(),
            t.elapsed().as_secs_f64(),
            if failed == 0 {
                "all passed".to_string()
            } else {
                format!("{failed} FAILED")
            }
        );
    }
    if failed > 0 {
        return Err(format!(
            "{failed} of {} checks failed on {}: this adapter or driver computes some kernels wrongly; please report it with this output",
            checks.len(),
            gpu.adapter_name()
        )
        .into());
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct ShadersArgs {
    /// The folder the modules and the manifest go to (made where missing).
    #[arg(long)]
    out: PathBuf,
    /// Plan only these adapter classes (comma-separated names) for manifest.json [default:
    /// every class].
    #[arg(long, value_delimiter = ',')]
    classes: Vec<String>,
    /// Write the modules only, no manifest (which needs an adapter to simulate the classes on).
    #[arg(long)]
    no_manifest: bool,
}

/// Writes each `ShaderId`'s module as the engine hands it to wgpu, one `<name>.wgsl` per module,
/// and `modules.json`: per module its name, the `shaders/` files it is assembled from and
/// whether it uses subgroups (where a WGSL compiler other than naga needs `enable subgroups;`).
/// Then, unless `--no-manifest`, `manifest.json`: every pipeline each adapter class builds
/// (`cnn_wgpu::manifest`), the classes simulated one after another on the adapter `request` picks.
pub fn shaders(request: &AdapterRequest, a: ShadersArgs) -> Result<(), Box<dyn std::error::Error>> {
    use cnn_wgpu::gpu::{AdapterClass, ShaderId};
    let classes = if a.classes.is_empty() {
        AdapterClass::ALL.to_vec()
    } else {
        a.classes
            .iter()
            .map(|name| {
                AdapterClass::named(name.trim()).ok_or_else(|| {
                    let names: Vec<&str> = AdapterClass::ALL.iter().map(|c| c.name).collect();
                    format!(
                        "--classes: no adapter class {name:?}; the classes are {}",
                        names.join(", ")
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?
    };
    std::fs::create_dir_all(&a.out)
        .map_err(|e| format!("cannot create {}: {e}", a.out.display()))?;
    let mut modules = Vec::new();
    for id in ShaderId::ALL {
        let path = a.out.join(format!("{}.wgsl", id.name()));
        cnn_wgpu::atomic_file::write_atomic(&path, id.source().as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        modules.push(serde_json::json!({
            "name": id.name(),
            "file": path.file_name().map(|f| f.to_string_lossy().into_owned()),
            "assembled_from": id.files(),
            "first_lines": first_lines(id)?,
            "uses_subgroups": id.uses_subgroups(),
        }));
    }
    let index = a.out.join("modules.json");
    cnn_wgpu::atomic_file::write_atomic(
        &index,
        serde_json::to_string_pretty(&serde_json::json!({ "modules": modules }))?.as_bytes(),
    )
    .map_err(|e| format!("cannot write {}: {e}", index.display()))?;
    println!(
        "{} modules and modules.json in {}",
        modules.len(),
        a.out.display()
    );
    if a.no_manifest {
        return Ok(());
    }
    let workloads = cnn_wgpu::manifest::workload_names().len();
    let bar = indicatif::ProgressBar::new((classes.len() * workloads) as u64).with_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}")
            .expect("progress template"),
    );
    let adapter = select::choose(request)?;
    let mut planned = Vec::new();
    for class in classes {
        let m = cnn_wgpu::manifest::plan_class(&adapter, &request.options, class, &mut |w| {
            bar.set_message(format!("{}: {w}", class.name));
            bar.inc(1);
        })?;
        let (families, tuned) = m.families();
        bar.suspend(|| {
            println!(
                "{:<12} {:>4} pipelines; GEMM families: {}{}",
                class.name,
                m.pipelines.len(),
                families.join(", "),
                if tuned.is_empty() {
                    String::new()
                } else {
                    format!("; --tune also tries {}", tuned.join(", "))
                }
            )
        });
        planned.push(m);
    }
    bar.finish_and_clear();
    let path = a.out.join("manifest.json");
    cnn_wgpu::atomic_file::write_atomic(
        &path,
        serde_json::to_string_pretty(&cnn_wgpu::manifest::to_json(&planned))?.as_bytes(),
    )
    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    println!(
        "manifest.json in {}: {} adapter classes, {} pipelines",
        a.out.display(),
        planned.len(),
        planned.iter().map(|m| m.pipelines.len()).sum::<usize>()
    );
    Ok(())
}

/// The line of the module `id` on which each of its `shaders/` files starts (from 1), so that a
/// compiler's message about the module can name the file and line that a person edits.
fn first_lines(id: cnn_wgpu::gpu::ShaderId) -> Result<Vec<usize>, String> {
    let source = id.source();
    let shaders = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let mut from = 0;
    let mut lines = Vec::new();
    for file in id.files() {
        // The files are compiled in; only their text is looked for, in the order assembled.
        let text = cnn_wgpu::gpu::shader_file(file).ok_or_else(|| {
            format!(
                "{}: not a compiled-in shader file",
                shaders.join(file).display()
            )
        })?;
        let at = source[from..]
            .find(text)
            .map(|i| from + i)
            .ok_or_else(|| format!("module {}: {file} is not in its source", id.name()))?;
        lines.push(source[..at].matches('\n').count() + 1);
        from = at + text.len();
    }
    Ok(lines)
}
