//! Criterion benches of the conv2d kernels on the reference workloads (forward and backward).
//! `cargo bench --bench conv2d -- block3` picks workloads by name. Where the subgroup kernels
//! run, the forward also runs with B read from a buffer instead of an operand texture
//! (`forward-b-in-buffer/...`), to compare the two ways of reading it. Every 3x3 stride-1
//! workload also runs with each convolution algorithm forced (`forward-direct/...`,
//! `forward-f2x2/...`, `forward-f4x4/...`, `forward-f6x6/...`, the same for `backward-`),
//! throughput counted in the direct convolution's FLOPs.

mod support;

use cnn_wgpu::gpu::ConvAlgo;
use cnn_wgpu::ops::conv;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn conv2d(c: &mut Criterion) {
    let Some(gpu) = support::gpu() else { return };
    let w = support::workloads();
    let mut group = c.benchmark_group(format!("conv2d/{}", gpu.adapter_name()));
    group.sample_size(10);
    let variants: &[(&str, bool)] = if gpu.subgroup_kernels() && gpu.texture_operands() {
        &[("forward", true), ("forward-b-in-buffer", false)]
    } else {
        &[("forward", gpu.texture_operands())]
    };
    for wl in &w.conv2d_forward {
        let s = wl.setup(&gpu).expect("setup");
        group.throughput(Throughput::Elements(s.forward_flops as u64));
        for &(name, textures) in variants {
            gpu.set_texture_operands(textures);
            group.bench_function(format!("{name}/{}", wl.name), |b| {
                b.iter(|| {
                    conv::conv2d_forward(&gpu, &s.x, &s.w, &s.b, &s.spec).unwrap();
                    gpu.sync().unwrap();
                })
            });
        }
        gpu.set_texture_operands(variants[0].1);
        if (wl.k, wl.stride) == (3, 1) {
            for algo in [
                ConvAlgo::Direct,
                ConvAlgo::F2x2,
                ConvAlgo::F4x4,
                ConvAlgo::F6x6,
            ] {
                gpu.set_conv_algo(algo);
                group.bench_function(format!("forward-{}/{}", algo.name(), wl.name), |b| {
                    b.iter(|| {
                        conv::conv2d_forward(&gpu, &s.x, &s.w, &s.b, &s.spec).unwrap();
                        gpu.sync().unwrap();
                    })
                });
            }
            gpu.set_conv_algo(ConvAlgo::Auto);
        }
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
        if (wl.k, wl.stride) == (3, 1) {
            for algo in [
                ConvAlgo::Direct,
                ConvAlgo::F2x2,
                ConvAlgo::F4x4,
                ConvAlgo::F6x6,
            ] {
                gpu.set_conv_algo(algo);
                group.bench_function(format!("backward-{}/{}", algo.name(), wl.name), |b| {
                    b.iter(|| {
                        conv::conv2d_backward(&gpu, &s.x, &s.w, &s.dy, &s.spec, true).unwrap();
                        gpu.sync().unwrap();
                    })
                });
            }
            gpu.set_conv_algo(ConvAlgo::Auto);
        }
    }
    group.finish();
}

criterion_group!(benches, conv2d);
criterion_main!(benches);
