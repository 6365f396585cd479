//! Criterion benches of the conv2d kernels on the reference workloads (forward and backward).
//! `cargo bench --bench conv2d -- block3` picks workloads by name.

mod support;

use cnn_wgpu::ops::conv;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn conv2d(c: &mut Criterion) {
    let Some(gpu) = support::gpu() else { return };
    let w = support::workloads();
    let mut group = c.benchmark_group(format!("conv2d/{}", gpu.adapter_name()));
    group.sample_size(10);
    for wl in &w.conv2d_forward {
        let s = wl.setup(&gpu).expect("setup");
        group.throughput(Throughput::Elements(s.forward_flops as u64));
        group.bench_function(format!("forward/{}", wl.name), |b| {
            b.iter(|| {
                conv::conv2d_forward(&gpu, &s.x, &s.w, &s.b, &s.spec).unwrap();
                gpu.sync().unwrap();
            })
        });
    }
    for wl in &w.conv2d_backward {
        let s = wl.setup(&gpu).expect("setup");
        group.throughput(Throughput::Elements(2 * s.forward_flops as u64));
        group.bench_function(format!("backward/{}", wl.name), |b| {
            b.iter(|| {
                conv::conv2d_backward(&gpu, &s.x, &s.w, &s.dy, &s.spec, true).unwrap();
                gpu.sync().unwrap();
            })
        });
    }
    group.finish();
}

criterion_group!(benches, conv2d);
criterion_main!(benches);
