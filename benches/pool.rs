//! Criterion benches of max pooling, forward and backward, on the pool layers of the book's
//! small convnet (batch 20) and of VGG16 (batch 2) at 150x150. Throughput counts the bytes of
//! the layer's input (these passes are memory-bound). `cargo bench --bench pool -- vgg16`
//! picks shapes by name.

// This bench opens the device through `support` but has no workloads-file section.
#[allow(dead_code)]
mod support;

use cnn_wgpu::ops::pool::{self, PoolSpec};
use cnn_wgpu::Tensor;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// (name, input (N,H,W,C)) of every 2x2 max pool in the two networks.
const SHAPES: [(&str, [usize; 4]); 9] = [
    ("small_convnet/max_pooling2d", [20, 148, 148, 32]),
    ("small_convnet/max_pooling2d_1", [20, 72, 72, 64]),
    ("small_convnet/max_pooling2d_2", [20, 34, 34, 128]),
    ("small_convnet/max_pooling2d_3", [20, 15, 15, 128]),
    ("vgg16/block1_pool", [2, 150, 150, 64]),
    ("vgg16/block2_pool", [2, 75, 75, 128]),
    ("vgg16/block3_pool", [2, 37, 37, 256]),
    ("vgg16/block4_pool", [2, 18, 18, 512]),
    ("vgg16/block5_pool", [2, 9, 9, 512]),
];

fn max_pool(c: &mut Criterion) {
    let Some(gpu) = support::gpu() else { return };
    let mut group = c.benchmark_group(format!("max_pool2d/{}", gpu.adapter_name()));
    group.sample_size(20);
    let spec = PoolSpec::square(2);
    for (name, dims) in SHAPES {
        let n: usize = dims.iter().product();
        let values: Vec<f32> = (0..n).map(|i| ((i * 7919) % 1000) as f32).collect();
        let x = Tensor::from_slice(&gpu, dims, &values).expect("upload");
        let (y, taps) = pool::max_pool2d(&gpu, &x, spec).expect("forward");
        group.throughput(Throughput::Bytes(4 * n as u64));
        group.bench_function(format!("forward/{name}"), |b| {
            b.iter(|| {
                pool::max_pool2d(&gpu, &x, spec).unwrap();
                gpu.sync().unwrap();
            })
        });
        group.bench_function(format!("backward/{name}"), |b| {
            b.iter(|| {
                pool::max_pool2d_backward(&gpu, &y, &taps, &dims, spec).unwrap();
                gpu.sync().unwrap();
            })
        });
    }
    group.finish();
}

criterion_group!(benches, max_pool);
criterion_main!(benches);
