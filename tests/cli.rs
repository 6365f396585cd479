//! The command line: adapter listing and choice, and the bench's JSON lines, run as a user would.

use std::process::Command;

fn cli() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cnn-wgpu"))
}

fn has_adapter() -> bool {
    let out = cli()
        .args(["devices", "--json"])
        .output()
        .expect("run cnn-wgpu");
    if out.status.success() {
        return true;
    }
    if std::env::var_os("CNN_WGPU_REQUIRE_GPU").is_some() {
        panic!(
            "CNN_WGPU_REQUIRE_GPU is set but `devices` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    eprintln!("skipped: no GPU adapter");
    false
}

#[test]
fn devices_lists_adapters_with_limits() {
    if !has_adapter() {
        return;
    }
    let out = cli().args(["devices", "--json"]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let first: serde_json::Value =
        serde_json::from_str(text.lines().next().expect("one adapter line")).unwrap();
    for key in [
        "name",
        "backend",
        "device_type",
        "driver",
        "max_storage_buffer_binding_size",
        "max_buffer_size",
    ] {
        assert!(
            first.get(key).is_some(),
            "devices --json lacks {key}: {first}"
        );
    }
    assert!(first["max_storage_buffer_binding_size"].as_u64().unwrap() > 0);
}

#[test]
fn unknown_adapter_is_an_error_listing_the_available_ones() {
    if !has_adapter() {
        return;
    }
    let out = cli()
        .args(["bench", "--adapter", "no-such-gpu-xyz", "--workloads"])
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/benches/smoke_workloads.json"
        ))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no-such-gpu-xyz") && err.contains("available"),
        "{err}"
    );
}

#[test]
fn unknown_backend_is_rejected() {
    let out = cli()
        .args(["devices", "--backend", "glide"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("glide") && err.contains("vulkan"), "{err}");
}

#[test]
fn bench_prints_one_json_line_per_workload() {
    if !has_adapter() {
        return;
    }
    let out = cli()
        .args(["bench", "--json", "--runs", "1", "--workloads"])
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/benches/smoke_workloads.json"
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let names: Vec<&str> = lines
        .iter()
        .map(|l| l["workload"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "conv2d_forward/tiny",
            "conv2d_backward/tiny_bwd",
            "matmul/tiny_mm"
        ]
    );
    for l in &lines {
        assert!(
            l["ms"].as_f64().unwrap() > 0.0 && l["gflops"].as_f64().unwrap() > 0.0,
            "{l}"
        );
        assert!(l["engine"].as_str().unwrap().starts_with("cnn-wgpu"));
        assert!(!l["adapter"].as_str().unwrap().is_empty());
    }
}

#[test]
fn bench_with_a_missing_workloads_file_names_it() {
    let out = cli()
        .args(["bench", "--workloads", "/nonexistent/workloads.json"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/workloads.json"), "{err}");
}
