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

/// The reference workloads the binary carries (the shared folder's bench/workloads.json);
/// `CNN_WGPU_BENCH_WORKLOADS=FILE` runs another file's, such as benches/smoke_workloads.json for a
/// quick look.
pub fn workloads() -> Workloads {
    match std::env::var_os("CNN_WGPU_BENCH_WORKLOADS") {
        Some(path) => Workloads::load(std::path::Path::new(&path)).expect("workloads file parses"),
        None => Workloads::reference(),
    }
}
