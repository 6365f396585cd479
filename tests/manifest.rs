//! The pipeline manifest (`cnn_wgpu::manifest`): what a simulated adapter class plans is what
//! the real adapter of that class builds, and every class's pipelines fit the limits it was
//! planned under and use only the kernel families it has.

mod common;

use std::collections::BTreeSet;

use cnn_wgpu::gpu::{select, AdapterClass, ClassLimits, ShaderId, TuneMode};
use cnn_wgpu::manifest::{self, ClassManifest};

/// The class the test adapter itself belongs to: a CPU adapter (lavapipe, or llvmpipe's
/// OpenGL) with its subgroup GEMM width or none, under its own limits or, where the tests run
/// under WebGPU's (`CNN_WGPU_WEBGPU_LIMITS`), those.
fn own_class(gpu: &cnn_wgpu::Gpu, webgpu_limits: bool) -> AdapterClass {
    let name = match gpu.subgroup_width() {
        Some(8) => "cpu-sg8",
        Some(16) => "cpu-sg16",
        None => "cpu-none",
        Some(w) => panic!("a CPU adapter with {w}-lane subgroups: no class stands for it"),
    };
    let class = AdapterClass::named(name).unwrap();
    if webgpu_limits {
        AdapterClass {
            limits: ClassLimits::WebGpu,
            ..class
        }
    } else {
        class
    }
}

type Key = (ShaderId, &'static str, Vec<(&'static str, u64)>);

fn planned_by(m: &ClassManifest, source: &str) -> BTreeSet<Key> {
    m.pipelines
        .iter()
        .filter(|p| p.uses.get(source) == Some(&true))
        .map(|p| {
            let r = &p.recorded;
            (r.shader, r.entry, r.constants.clone())
        })
        .collect()
}

#[test]
fn a_simulated_class_plans_exactly_what_its_real_adapter_builds() {
    let Some(probe) = common::gpu() else {
        return;
    };
    if probe.info().device_type != wgpu::DeviceType::Cpu {
        eprintln!(
            "skipped: the adapter is no CPU adapter, so no simulated class stands for it exactly"
        );
        return;
    }
    let request = common::request().unwrap();
    let adapter = select::choose(&request).unwrap();
    let class = own_class(probe, request.options.webgpu_limits);
    let simulated = manifest::plan_class(&adapter, &request.options, class, &mut |_| {}).unwrap();
    for workload in [
        "mnist-convnet n20",
        "conv1d-net n1",
        "small-convnet-dropout n1",
        "vgg16-classifier n1",
        "vgg16-base n20",
    ] {
        // A fresh real device, its tuning cache off: the plan alone, as the manifest's
        // `planned` marks it. (The test devices' NaN fills change no pipeline.)
        let real = common::open_with(|o| o.tune = TuneMode::Off).unwrap();
        manifest::run_workload(&real, workload).unwrap();
        let built: BTreeSet<Key> = real
            .built_pipelines()
            .into_iter()
            .map(|(shader, entry, constants)| {
                let mut c: Vec<(&'static str, u64)> =
                    constants.iter().map(|&(k, v)| (k, v.to_bits())).collect();
                c.sort_unstable();
                (shader, entry, c)
            })
            // The subgroup probe runs when a device opens, before any workload.
            .filter(|(s, _, _)| *s != ShaderId::SubgroupProbe)
            .collect();
        let planned = planned_by(&simulated, workload);
        assert!(!built.is_empty(), "{workload}: nothing ran");
        let missing: Vec<_> = built.difference(&planned).collect();
        let extra: Vec<_> = planned.difference(&built).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{workload} on {} ({}): built but not in the manifest: {missing:?}; in the manifest but not built: {extra:?}",
            real.adapter_name(),
            class.name
        );
    }
}

#[test]
fn every_class_fits_its_limits_and_runs_only_the_families_it_has() {
    let Some(request) = common::request() else {
        return;
    };
    let adapter = select::choose(&request).unwrap();
    if common::gpu().unwrap().info().backend == wgpu::Backend::Gl {
        // A class's plan depends on the adapter it is simulated on only through the limits;
        // the Vulkan passes check every class, and wgpu's GL backend creates each buffer
        // eagerly, which makes simulating all nine a matter of minutes there.
        eprintln!("skipped on the GL backend: every class is checked on Vulkan");
        return;
    }
    for class in AdapterClass::ALL {
        let m = manifest::plan_class(&adapter, &request.options, class, &mut |_| {}).unwrap();
        assert!(!m.pipelines.is_empty(), "{}: no pipelines", class.name);
        let limits = &m.limits;
        for p in &m.pipelines {
            let r = &p.recorded;
            let what = format!("{}: {} {}", class.name, r.shader.name(), r.entry);
            let [x, y, z] = p.workgroup_size;
            assert!(
                x * y * z <= limits.max_compute_invocations_per_workgroup
                    && x <= limits.max_compute_workgroup_size_x
                    && y <= limits.max_compute_workgroup_size_y
                    && z <= limits.max_compute_workgroup_size_z,
                "{what}: workgroup {:?} over the class's limits",
                p.workgroup_size
            );
            assert!(
                p.workgroup_bytes <= u64::from(limits.max_compute_workgroup_storage_size),
                "{what}: {} bytes of workgroup memory, over the class's {}",
                p.workgroup_bytes,
                limits.max_compute_workgroup_storage_size
            );
            let storage = r
                .bindings
                .iter()
                .filter(|a| {
                    matches!(
                        a,
                        cnn_wgpu::gpu::Access::Read | cnn_wgpu::gpu::Access::Write
                    )
                })
                .count() as u32;
            assert!(
                storage <= limits.max_storage_buffers_per_shader_stage,
                "{what}: {storage} storage buffers"
            );
            // Subgroup modules only where the class has subgroups, at its width.
            if r.shader.uses_subgroups() {
                let width = class.subgroup_width.unwrap_or_else(|| {
                    panic!("{what}: a subgroup module on a class without subgroups")
                });
                if let Some((_, w)) = r.constant_values().into_iter().find(|(k, _)| *k == "SG_W") {
                    assert_eq!(w, f64::from(width), "{what}: SG_W");
                }
            }
        }
        // The planner's rule (ops::gemm): a CPU adapter with the subgroup GEMM runs it and
        // never the tiled kernels outside selftest; a GPU runs the tiled kernels, with the
        // subgroup GEMM only as a `--tune` candidate; without subgroups, tiled.
        let (planned, tune_only) = m.families();
        let subgroup = class.subgroup_width.map(|w| format!("subgroup-{w}"));
        match (class.gpu, &subgroup) {
            (false, Some(sg)) => {
                assert_eq!(
                    planned,
                    [sg.clone(), "workgroup-memory".into()],
                    "{}",
                    class.name
                );
                assert!(tune_only.is_empty(), "{}: {tune_only:?}", class.name);
            }
            (true, Some(sg)) => {
                assert_eq!(planned, ["tiled", "workgroup-memory"], "{}", class.name);
                assert_eq!(tune_only, std::slice::from_ref(sg), "{}", class.name);
            }
            (_, None) => {
                assert_eq!(planned, ["tiled", "workgroup-memory"], "{}", class.name);
                assert!(tune_only.is_empty(), "{}: {tune_only:?}", class.name);
            }
        }
    }
}

#[test]
fn the_command_writes_the_manifest_and_names_a_class_it_lacks() {
    if common::request().is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let run = |classes: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_cnn-wgpu"))
            .args(["shaders", "--out"])
            .arg(tmp.path())
            .args(["--classes", classes])
            .output()
            .unwrap()
    };
    let out = run("gpu-sg32,webgpu-none");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(tmp.path().join("manifest.json")).unwrap();
    let m: serde_json::Value = serde_json::from_str(&text).unwrap();
    let classes = m["classes"].as_array().unwrap();
    let names: Vec<&str> = classes
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["gpu-sg32", "webgpu-none"]);
    for c in classes {
        let pipelines = c["pipelines"].as_array().unwrap();
        assert!(!pipelines.is_empty());
        // What another compiler needs to create each one.
        for p in pipelines {
            for field in [
                "module",
                "entry",
                "constants",
                "workgroup_size",
                "bindings",
                "sources",
            ] {
                assert!(
                    !p[field].is_null(),
                    "{}: a pipeline without {field}: {p}",
                    c["name"]
                );
            }
        }
        assert_eq!(
            c["limits"]["maxStorageBuffersPerShaderStage"]
                .as_u64()
                .map(|v| v >= 8),
            Some(true)
        );
    }
    assert_eq!(
        classes[1]["limits"]["maxComputeWorkgroupStorageSize"].as_u64(),
        Some(16384),
        "the WebGPU class plans under WebGPU's defaults"
    );
    assert_eq!(
        classes[0]["families"]["tune_only"],
        serde_json::json!(["subgroup-32"])
    );

    let out = run("gpu-sg32,gpu-sg128");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("\"gpu-sg128\"") && err.contains("cpu-sg8") && err.contains("webgpu-none"),
        "{err}"
    );
}
