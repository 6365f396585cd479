//! Criterion benches of the matmul kernel on the reference workloads.

mod support;

use cnn_wgpu::ops::dense;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn matmul(c: &mut Criterion) {
    let Some(gpu) = support::gpu() else { return };
    let w = support::workloads();
    let mut group = c.benchmark_group(format!("matmul/{}", gpu.adapter_name()));
    group.sample_size(10);
    for wl in &w.matmul {
        let s = wl.setup(&gpu).expect("setup");
        group.throughput(Throughput::Elements(s.flops as u64));
        group.bench_function(&wl.name, |b| {
            b.iter(|| {
                dense::matmul(&gpu, &s.a, &s.b).unwrap();
                gpu.sync().unwrap();
            })
        });
    }
    group.finish();
}

criterion_group!(benches, matmul);
criterion_main!(benches);
