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

use cnn_wgpu::gpu::ShaderId;

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

#[test]
fn every_module_translates_to_every_backend_and_validates() {
    use naga::back;
    let spirv_val = tool("spirv-val", "spirv-tools");
    let glslang = tool("glslangValidator", "glslang-tools");
    let tmp = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    let mut checked = 0;
    for id in ShaderId::ALL {
        let source = id.source();
        let module = naga::front::wgsl::parse_str(&source)
            .unwrap_or_else(|e| panic!("{}: {}", id.name(), e.emit_to_string(&source)));
        let info = naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::all(),
        )
        .validate(&module)
        .unwrap_or_else(|e| panic!("{}: {}", id.name(), e.emit_to_string(&source)));
        for constants in specialisations(id) {
            for ep in &module.entry_points {
                let what = format!("{} {} ({})", id.name(), ep.name, describe(&constants));
                let stage = ep.stage;
                let (module, info) = match back::pipeline_constants::process_overrides(
                    &module,
                    &info,
                    Some((stage, &ep.name)),
                    &constants,
                ) {
                    Ok(m) => m,
                    Err(e) => {
                        failures.push(format!("{what}: constants: {e}"));
                        continue;
                    }
                };
                checked += 1;
                let file = |ext: &str| {
                    tmp.path()
                        .join(format!("{}-{}-{checked}.{ext}", id.name(), ep.name))
                };

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
                        entry_point: ep.name.clone(),
                    }),
                );
                match spv {
                    Err(e) => failures.push(format!("{what}: SPIR-V: {e}")),
                    Ok(words) => {
                        if let Some(v) = &spirv_val {
                            let path = file("spv");
                            std::fs::write(&path, bytemuck::cast_slice(&words)).unwrap();
                            if let Some(why) =
                                validator_says(v, &["--target-env", "vulkan1.1"], &path)
                            {
                                failures.push(format!("{what}: spirv-val: {why}"));
                            }
                        }
                    }
                }

                // GLSL ES 3.1 compute, what wgpu's GL backend runs; it has no subgroups, so the
                // modules that use them are never built there.
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
                        entry_point: ep.name.clone(),
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
                            if let Some(g) = &glslang {
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
                        entry_point: Some((stage, ep.name.clone())),
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
                    entry_point: Some((stage, ep.name.clone())),
                };
                let mut text = String::new();
                if let Err(e) = back::hlsl::Writer::new(&mut text, &options, &pipeline)
                    .write(&module, &info, None)
                {
                    failures.push(format!("{what}: HLSL: {e}"));
                }
            }
        }
    }
    eprintln!("{checked} entry-point specialisations translated to SPIR-V, GLSL (where no subgroups), MSL and HLSL");
    assert!(checked > 0);
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}
