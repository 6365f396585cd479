//! Shared set-up of the criterion benches: the device and the workloads file.

use cnn_wgpu::bench::Workloads;
use cnn_wgpu::gpu::select;
use cnn_wgpu::{AdapterRequest, Gpu};

/// Opens the device the environment asks for, or explains why the bench is skipped.
pub fn gpu() -> Option<Gpu> {
    let request = AdapterRequest::from_env().ok()?;
    match select::open(&request) {
        Ok(g) => Some(g),
        Err(e) => {
            eprintln!("skipped: no GPU adapter ({e})");
            None
        }
    }
}

/// The reference workloads (shared/bench/workloads.json), or the tiny smoke set when the shared
/// folder is not there.
pub fn workloads() -> Workloads {
    let shared = cnn_wgpu::bench::shared_dir().join("bench/workloads.json");
    let path = if shared.exists() {
        shared
    } else {
        eprintln!(
            "{} not found; using benches/smoke_workloads.json",
            shared.display()
        );
        std::path::PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/benches/smoke_workloads.json"
        ))
    };
    Workloads::load(&path).expect("workloads file parses")
}
