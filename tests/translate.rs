//! Every module through every translator naga has, as wgpu's backends use them (no GPU): SPIR-V
//! (Vulkan) checked by `spirv-val`, GLSL ES 3.1 compute (wgpu's GL backend) checked by
//! `glslangValidator`, MSL (Metal) and HLSL shader model 6.0 (DX12) translated. No Metal or
//! DirectX compiler runs here, so for those two the check is that naga translates every entry
//! point. Each module is specialised with its override constants at their defaults and, for
//! the subgroup GEMM, at every subgroup width it is offered (8 to 64 lanes). A failure names
//! the module, the entry point and the constants.
//!
//! The validators come from Debian's spirv-tools and glslang-tools; without them the
//! translations are still made and the rest skipped, saying so (CI installs both and sets
//! `CNN_WGPU_REQUIRE_VALIDATORS`, which makes a missing one a failure).

use std::path::Path;
use std::process::Command;

mod common;

use cnn_wgpu::gpu::{AdapterClass, ShaderId};
use cnn_wgpu::manifest;

/// The specialisations checked: the defaults, and for the subgroup GEMM each subgroup width
/// (`SG_W`) the planner offers it at.
fn specialisations(id: ShaderId) -> Vec<naga::back::PipelineConstants> {
    let mut all = vec![naga::back::PipelineConstants::default()];
    let source = id.source();
    if source.contains("override SG_W") {
        for w in [8.0, 16.0, 32.0, 64.0] {
            all.push([("SG_W".to_string(), w)].into_iter().collect());
        }
    }
    all
}

fn describe(c: &naga::back::PipelineConstants) -> String {
    if c.is_empty() {
        "defaults".into()
    } else {
        let mut v: Vec<String> = c.iter().map(|(k, v)| format!("{k}={v}")).collect();
        v.sort();
        v.join(",")
    }
}

/// A validator on PATH, or None (failing where `CNN_WGPU_REQUIRE_VALIDATORS` is set).
fn tool(name: &str, package: &str) -> Option<String> {
    let found = Command::new(name)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return Some(name.to_string());
    }
    let required =
        std::env::var("CNN_WGPU_REQUIRE_VALIDATORS").is_ok_and(|v| !v.is_empty() && v != "0");
    assert!(
        !required,
        "CNN_WGPU_REQUIRE_VALIDATORS is set but {name} is missing (apt-get install -y {package})"
    );
    eprintln!("skipped {name}: not installed (apt-get install -y {package}); the translations are still made");
    None
}

/// Runs `tool args file`; its complaint, if it has one.
fn validator_says(tool: &str, args: &[&str], file: &Path) -> Option<String> {
    let out = Command::new(tool).args(args).arg(file).output().unwrap();
    (!out.status.success()).then(|| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The validators found on PATH (either may be missing; see [`tool`]).
struct Validators {
    spirv_val: Option<String>,
    glslang: Option<String>,
}

impl Validators {
    fn find() -> Self {
        Self {
            spirv_val: tool("spirv-val", "spirv-tools"),
            glslang: tool("glslangValidator", "glslang-tools"),
        }
    }
}

/// A module parsed and validated by naga, as wgpu does before it translates.
fn parse(id: ShaderId) -> (naga::Module, naga::valid::ModuleInfo) {
    manifest::parse(id).unwrap_or_else(|e| panic!("{e}"))
}

/// Translates entry point `entry` of module `id` (parsed as `parsed`), specialised with
/// `constants`, to SPIR-V, GLSL, MSL and HLSL, validating the first two where the validators
/// are there; the failures, each naming the module, the entry point and the constants. `scratch`
/// is a file name stem for the validators' input that no other call uses.
fn translate(
    id: ShaderId,
    parsed: &(naga::Module, naga::valid::ModuleInfo),
    entry: &str,
    constants: &naga::back::PipelineConstants,
    tools: &Validators,
    scratch: &Path,
) -> Vec<String> {
    use naga::back;
    let mut failures = Vec::new();
    let what = format!("{} {entry} ({})", id.name(), describe(constants));
    let stage = naga::ShaderStage::Compute;
    let (module, info) = match back::pipeline_constants::process_overrides(
        &parsed.0,
        &parsed.1,
        Some((stage, entry)),
        constants,
    ) {
        Ok(m) => m,
        Err(e) => return vec![format!("{what}: constants: {e}")],
    };
    let file = |ext: &str| scratch.with_extension(ext);

    // SPIR-V 1.3 (subgroup operations), as wgpu's Vulkan backend asks on Vulkan 1.1.
    let spv_options = back::spv::Options {
        lang_version: (1, 3),
        ..Default::default()
    };
    let spv = back::spv::write_vec(
        &module,
        &info,
        &spv_options,
        Some(&back::spv::PipelineOptions {
            shader_stage: stage,
            entry_point: entry.to_string(),
        }),
    );
    match spv {
        Err(e) => failures.push(format!("{what}: SPIR-V: {e}")),
        Ok(words) => {
            if let Some(v) = &tools.spirv_val {
                let path = file("spv");
                std::fs::write(&path, bytemuck::cast_slice(&words)).unwrap();
                if let Some(why) = validator_says(v, &["--target-env", "vulkan1.1"], &path) {
                    failures.push(format!("{what}: spirv-val: {why}"));
                }
            }
        }
    }

    // GLSL ES 3.1 compute, what wgpu's GL backend runs; it has no subgroups, so the modules
    // that use them are never built there.
    if !id.uses_subgroups() {
        let options = back::glsl::Options {
            version: back::glsl::Version::Embedded {
                version: 310,
                is_webgl: false,
            },
            ..Default::default()
        };
        let pipeline = back::glsl::PipelineOptions {
            shader_stage: stage,
            entry_point: entry.to_string(),
            multiview: None,
        };
        let mut text = String::new();
        let written = back::glsl::Writer::new(
            &mut text,
            &module,
            &info,
            &options,
            &pipeline,
            naga::proc::BoundsCheckPolicies::default(),
        )
        .and_then(|mut w| w.write());
        match written {
            Err(e) => failures.push(format!("{what}: GLSL: {e}")),
            Ok(_) => {
                if let Some(g) = &tools.glslang {
                    let path = file("comp");
                    std::fs::write(&path, &text).unwrap();
                    if let Some(why) = validator_says(g, &[], &path) {
                        failures.push(format!("{what}: glslangValidator: {why}"));
                    }
                }
            }
        }
    }

    // MSL 2.1 (simdgroup functions) for Metal.
    let msl = back::msl::write_string(
        &module,
        &info,
        &back::msl::Options {
            lang_version: (2, 1),
            ..Default::default()
        },
        &back::msl::PipelineOptions {
            entry_point: Some((stage, entry.to_string())),
            ..Default::default()
        },
    );
    if let Err(e) = msl {
        failures.push(format!("{what}: MSL: {e}"));
    }

    // HLSL shader model 6.0 (wave intrinsics) for DX12.
    let options = back::hlsl::Options {
        shader_model: back::hlsl::ShaderModel::V6_0,
        ..Default::default()
    };
    let pipeline = back::hlsl::PipelineOptions {
        entry_point: Some((stage, entry.to_string())),
    };
    let mut text = String::new();
    if let Err(e) =
        back::hlsl::Writer::new(&mut text, &options, &pipeline).write(&module, &info, None)
    {
        failures.push(format!("{what}: HLSL: {e}"));
    }
    failures
}

fn assert_none(what: &str, checked: usize, failures: Vec<String>) {
    eprintln!("{checked} {what} translated to SPIR-V, GLSL (where no subgroups), MSL and HLSL");
    assert!(checked > 0);
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_module_translates_to_every_backend_and_validates() {
    let tools = Validators::find();
    let tmp = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    let mut checked = 0;
    for id in ShaderId::ALL {
        let parsed = parse(id);
        for constants in specialisations(id) {
            for ep in &parsed.0.entry_points {
                checked += 1;
                let scratch = tmp
                    .path()
                    .join(format!("{}-{}-{checked}", id.name(), ep.name));
                failures.extend(translate(
                    id, &parsed, &ep.name, &constants, &tools, &scratch,
                ));
            }
        }
    }
    assert_none("entry-point specialisations", checked, failures);
}

/// Every pipeline of the manifest (`cnn_wgpu::manifest`: what each adapter class builds for the
/// bench workloads, selftest and the zoo models, `--tune` candidates included), with its own
/// override constants. The classes are simulated on the test adapter, so without one this is
/// skipped, saying so.
#[test]
fn every_manifest_pipeline_translates_to_every_backend_and_validates() {
    let Some(request) = common::request() else {
        return;
    };
    let adapter = cnn_wgpu::gpu::select::choose(&request).unwrap();
    let mut unique = std::collections::BTreeMap::new();
    for class in AdapterClass::ALL {
        let m = manifest::plan_class(&adapter, &request.options, class, &mut |_| {}).unwrap();
        for p in m.pipelines {
            let r = p.recorded;
            unique.insert((r.shader, r.entry, r.constants.clone()), r);
        }
    }
    let tools = Validators::find();
    let tmp = tempfile::tempdir().unwrap();
    let work: Vec<_> = unique.into_values().collect();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let failures = std::sync::Mutex::new(Vec::new());
    let parsed: std::collections::HashMap<ShaderId, _> = ShaderId::ALL
        .into_iter()
        .map(|id| (id, parse(id)))
        .collect();
    std::thread::scope(|s| {
        for t in 0..threads {
            let (work, parsed, tools, failures, tmp) = (&work, &parsed, &tools, &failures, &tmp);
            s.spawn(move || {
                for (i, r) in work.iter().enumerate().skip(t).step_by(threads) {
                    let constants: naga::back::PipelineConstants = r
                        .constant_values()
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect();
                    let scratch = tmp
                        .path()
                        .join(format!("{}-{}-{i}", r.shader.name(), r.entry));
                    let bad = translate(
                        r.shader,
                        &parsed[&r.shader],
                        r.entry,
                        &constants,
                        tools,
                        &scratch,
                    );
                    failures.lock().unwrap().extend(bad);
                }
            });
        }
    });
    assert_none(
        "manifest pipelines",
        work.len(),
        failures.into_inner().unwrap(),
    );
}
