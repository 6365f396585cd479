//! The runtime: reductions, buffer reuse, the pipeline cache, half-precision uploads, and tensors
//! larger than a storage binding.

mod common;

use cnn_wgpu::ops::conv::{self, Conv2dSpec};
use cnn_wgpu::ops::Padding;
use cnn_wgpu::ops::{pool, reduce};
use cnn_wgpu::Tensor;
use common::*;

#[test]
fn sum_rows_matches_host_sums() {
    let gpu = gpu_or_skip!();
    // One pass (few rows), two passes (many rows), and columns over one 64-wide workgroup.
    for (rows, cols) in [(1usize, 1usize), (5, 70), (5000, 3), (70_001, 1)] {
        let x = rand_vec(rows * cols, rows as u64);
        let got = read(
            gpu,
            &reduce::sum_rows(gpu, &upload(gpu, &[rows, cols], &x)).unwrap(),
        );
        let want: Vec<f64> = (0..cols)
            .map(|c| (0..rows).map(|r| f64::from(x[r * cols + c])).sum())
            .collect();
        assert_close(&format!("sum_rows {rows}x{cols}"), &got, &want, 1e-5, 1e-4);
    }
}

#[test]
fn freed_buffers_are_reused() {
    let Some(gpu) = common::fresh_gpu() else {
        return;
    };
    let gpu = &gpu;
    let shape = [3, 333, 77];
    let first = Tensor::zeros(gpu, shape).unwrap();
    drop(first);
    let before = gpu.pool_stats();
    let again = Tensor::zeros(gpu, shape).unwrap();
    let after = gpu.pool_stats();
    assert_eq!(
        after.created, before.created,
        "a freed buffer of the same class must be reused"
    );
    assert!(after.reused > before.reused);
    assert_eq!(read(gpu, &again), vec![0.0; 3 * 333 * 77]);
}

#[test]
fn pipelines_are_built_once_per_specialisation() {
    let Some(gpu) = common::fresh_gpu() else {
        return;
    };
    let gpu = &gpu;
    let spec = Conv2dSpec::new(1, Padding::Same, true);
    let run = |cin: usize| {
        let x = upload(gpu, &[1, 6, 6, cin], &rand_vec(36 * cin, 1));
        let w = upload(gpu, &[3, 3, cin, 4], &rand_vec(36 * cin, 2));
        let b = upload(gpu, &[4], &[0.0; 4]);
        conv::conv2d_forward(gpu, &x, &w, &b, &spec).unwrap();
        gpu.sync().unwrap();
    };
    run(11);
    let built = gpu.pipeline_count();
    assert!(built >= 1);
    run(11);
    run(11);
    assert_eq!(
        gpu.pipeline_count(),
        built,
        "same (shader, entry, constants) must hit the cache"
    );
    run(12);
    assert!(
        gpu.pipeline_count() > built,
        "another channel count is another specialisation"
    );
}

#[test]
fn half_precision_uploads_widen_exactly() {
    let gpu = gpu_or_skip!();
    let v = [0.5f32, -2.25, 1024.0, 3.0e-3];
    let h: Vec<half::f16> = v.iter().map(|&x| half::f16::from_f32(x)).collect();
    let b: Vec<half::bf16> = v.iter().map(|&x| half::bf16::from_f32(x)).collect();
    let th = Tensor::from_f16(gpu, [4], &h).unwrap();
    let tb = Tensor::from_bf16(gpu, [4], &b).unwrap();
    assert_eq!(
        read(gpu, &th),
        h.iter().map(|x| x.to_f32()).collect::<Vec<_>>()
    );
    assert_eq!(
        read(gpu, &tb),
        b.iter().map(|x| x.to_f32()).collect::<Vec<_>>()
    );
}

/// With a 64 KiB binding limit every op below must split its batch; results must equal the
/// unsplit run on the normal device bit for bit where the arithmetic order is the same
/// (forward, input gradient, pooling) and closely for the chunk-accumulated weight gradient.
#[test]
fn batch_splitting_gives_the_unsplit_results() {
    gpu_or_skip!();
    let whole = common::kernel_families();
    let split = common::families_with(Some(common::SMALL_BINDING), None);
    assert_eq!(whole.len(), split.len());
    for ((family, gpu), (_, small)) in whole.into_iter().zip(split) {
        batch_splitting_on(family, gpu, small);
    }
}

fn batch_splitting_on(family: &str, gpu: &cnn_wgpu::Gpu, small: &cnn_wgpu::Gpu) {
    assert_eq!(small.binding_limit(), 64 * 1024);
    // (5,20,20,16) f32 = 128000 bytes: two images per binding at most.
    let xs = [5, 20, 20, 16];
    let ws = [3, 3, 16, 8];
    let x = rand_vec(xs.iter().product(), 1);
    let w = rand_vec(ws.iter().product(), 2);
    let b = rand_vec(8, 3);
    let dy = rand_vec(5 * 10 * 10 * 8, 4);
    let spec = Conv2dSpec::new(2, Padding::Same, false);
    let run = |g: &cnn_wgpu::Gpu| {
        let xt = upload(g, &xs, &x);
        let wt = upload(g, &ws, &w);
        let y = conv::conv2d_forward(g, &xt, &wt, &upload(g, &[8], &b), &spec).unwrap();
        let grads =
            conv::conv2d_backward(g, &xt, &wt, &upload(g, &[5, 10, 10, 8], &dy), &spec, true)
                .unwrap();
        let (p, taps) = pool::max_pool2d(g, &xt, pool::PoolSpec::square(2)).unwrap();
        let pdx = pool::max_pool2d_backward(g, &p, &taps, &xs, pool::PoolSpec::square(2)).unwrap();
        [
            read(g, &y),
            read(g, grads.dx.as_ref().unwrap()),
            read(g, &grads.dw),
            read(g, &grads.db),
            read(g, &p),
            read(g, &pdx),
        ]
    };
    let whole = run(gpu);
    let split = run(small);
    let names = ["forward", "dx", "dw", "db", "pool", "pool dx"];
    for i in [0, 1, 4, 5] {
        assert_eq!(
            whole[i], split[i],
            "{family}: {} differs when split",
            names[i]
        );
    }
    for i in [2, 3] {
        assert_close(
            &format!("{family}: {}", names[i]),
            &split[i],
            &to_f64(&whole[i]),
            1e-5,
            1e-5,
        );
    }
    // The dispatch really was split: one image more than fits would fail outright.
    let big = Tensor::zeros(small, [1, 100, 100, 16]).unwrap();
    let err = conv::conv2d_forward(
        small,
        &big,
        &upload(small, &ws, &w),
        &upload(small, &[8], &b),
        &spec,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("max_storage_buffer_binding_size") && err.contains("input"),
        "{err}"
    );
}

/// A conv2d whose input passes the adapter's real max_storage_buffer_binding_size (128 MiB on
/// lavapipe): the input buffer is bound in windows of whole images. Checked against the CPU
/// reference at sampled output positions of every image.
#[test]
fn conv2d_input_over_the_binding_limit() {
    let gpu = gpu_or_skip!();
    let limit = gpu.binding_limit();
    let (h, w, c) = (128usize, 128usize, 64usize);
    let per_image = (h * w * c * 4) as u64;
    let n = (limit / per_image + 2) as usize;
    let bytes = n as u64 * per_image;
    if bytes > gpu.limits().max_buffer_size || bytes > (1 << 31) {
        eprintln!("skipped: a {bytes}-byte tensor passes this adapter's buffer limits");
        return;
    }
    assert!(bytes > limit, "input must exceed the binding limit");
    let x: Vec<f32> = (0..n * h * w * c)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
        .collect();
    let wv = rand_vec(3 * 3 * c * 2, 5);
    let xt = upload(gpu, &[n, h, w, c], &x);
    let y = conv::conv2d_forward(
        gpu,
        &xt,
        &upload(gpu, &[3, 3, c, 2], &wv),
        &upload(gpu, &[2], &[0.1, -0.2]),
        &Conv2dSpec::new(1, Padding::Same, false),
    )
    .unwrap();
    let got = read(gpu, &y);
    for img in 0..n {
        for &(oy, ox) in &[(0usize, 0usize), (63, 64), (127, 127), (5, 120)] {
            for o in 0..2 {
                let mut s = [0.1f64, -0.2][o];
                for ky in 0..3 {
                    for kx in 0..3 {
                        let (iy, ix) =
                            (oy as isize + ky as isize - 1, ox as isize + kx as isize - 1);
                        if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                            continue;
                        }
                        for ci in 0..c {
                            s += f64::from(x[((img * h + iy as usize) * w + ix as usize) * c + ci])
                                * f64::from(wv[((ky * 3 + kx) * c + ci) * 2 + o]);
                        }
                    }
                }
                let g = got[((img * h + oy) * w + ox) * 2 + o];
                assert!(
                    (f64::from(g) - s).abs() < 1e-3,
                    "image {img} ({oy},{ox},{o}): {g} vs {s}"
                );
            }
        }
    }
}

#[test]
fn profiler_times_dispatches_by_scope() {
    let Some(gpu) = common::fresh_gpu() else {
        return;
    };
    if !gpu.can_profile() {
        eprintln!("skipped: {} has no timestamp queries", gpu.adapter_name());
        return;
    }
    let textures = gpu.texture_operands();
    assert!(gpu.begin_profile());
    // A software adapter's timestamps miss passes that read operand textures, so profiling
    // there runs the buffer path.
    if gpu.info().device_type == wgpu::DeviceType::Cpu && gpu.subgroup_kernels() {
        assert!(
            !gpu.texture_operands(),
            "operand textures off while profiling"
        );
    }
    let x = upload(&gpu, &[2, 16, 16, 8], &rand_vec(4096, 1));
    let w = upload(&gpu, &[3, 3, 8, 8], &rand_vec(576, 2));
    let b = upload(&gpu, &[8], &[0.0; 8]);
    gpu.set_scope("first");
    let y =
        conv::conv2d_forward(&gpu, &x, &w, &b, &Conv2dSpec::new(1, Padding::Same, true)).unwrap();
    gpu.set_scope("second");
    pool::max_pool2d(&gpu, &y, pool::PoolSpec::square(2)).unwrap();
    pool::max_pool2d(&gpu, &y, pool::PoolSpec::square(2)).unwrap();
    let p = gpu.end_profile().unwrap();
    assert_eq!(gpu.texture_operands(), textures, "restored after profiling");
    let names: Vec<&str> = p.scopes.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(names, ["first", "second"]);
    // The subgroup conv first packs its kernel (pack.wgsl), then runs the GEMM.
    let conv_dispatches = if gpu.subgroup_kernels() { 2 } else { 1 };
    assert_eq!(
        (p.scopes[0].2, p.scopes[1].2),
        (conv_dispatches, 2),
        "dispatch counts per scope"
    );
    assert!(p.scopes.iter().all(|s| s.1 > 0.0), "{p:?}");
}

/// The device options a device is opened with are the ones it runs with: every switch arrives
/// in the one `DeviceOptions` value of the request, none from deeper down.
#[test]
fn device_options_are_applied_at_open() {
    let Some(plain) = fresh_gpu() else { return };
    let Some(gpu) = open_with(|o| {
        o.subgroups = false;
        o.textures = false;
        o.subgroup_tile_rows = Some(24);
        o.kernel_gradient_slices = Some(3);
        o.tune = cnn_wgpu::gpu::TuneMode::Off;
        o.binding_limit = Some(SMALL_BINDING);
    }) else {
        return;
    };
    assert!(!gpu.subgroup_kernels());
    assert!(!gpu.texture_operands());
    assert_eq!(gpu.forced_subgroup_tile_rows(), Some(24));
    assert_eq!(gpu.forced_kernel_gradient_slices(), Some(3));
    assert_eq!(gpu.tune_mode(), cnn_wgpu::gpu::TuneMode::Off);
    assert_eq!(gpu.binding_limit(), SMALL_BINDING);
    // Unset options leave the adapter's own choices.
    assert_eq!(plain.forced_subgroup_tile_rows(), None);
    assert_eq!(plain.forced_kernel_gradient_slices(), None);
    assert!(plain.binding_limit() > SMALL_BINDING);
}

/// The peak kernel does the work its FLOP count claims, however its loop is unrolled: every
/// invocation's stored value equals the same FMA chains run on the CPU (c <- c * m + a, `iters`
/// times, for eight chains starting at s, s+1, ..., s+7 with s = 1 + i * 1e-9).
#[test]
fn peak_kernel_does_the_counted_work_at_every_unroll() {
    let gpu = gpu_or_skip!();
    let iters = 48;
    let m = [0.9999f32, 0.9998, 0.9997, 0.9996];
    let a = [1e-4f32, 2e-4, 3e-4, 4e-4];
    let want: Vec<f64> = (0..256 * 3)
        .map(|i| {
            let s = 1.0f32 + i as f32 * 1e-9;
            let mut total = 0.0f64;
            for chain in 0..8 {
                for lane in 0..4 {
                    let mut c = s + chain as f32;
                    for _ in 0..iters {
                        c = c.mul_add(m[lane], a[lane]);
                    }
                    total += f64::from(c);
                }
            }
            total
        })
        .collect();
    for unroll in [1, 2, 4, 8] {
        let got = cnn_wgpu::bench::peak_values(gpu, iters, unroll, 3).unwrap();
        // Each value sums 32 chains of ~8 that went through 48 roundings each.
        assert_close(&format!("unroll {unroll}"), &got, &want, 1e-4, 1e-5);
    }
    assert!(
        cnn_wgpu::bench::peak_values(gpu, 10, 4, 1).is_err(),
        "10 steps in loops of 4"
    );
}

/// `selftest` really switches families: each family after the first builds pipelines of its own
/// (a switch that changed nothing would check one family several times over).
#[test]
fn selftest_runs_each_family_on_kernels_of_its_own() {
    let Some(gpu) = fresh_gpu() else {
        return;
    };
    let families = cnn_wgpu::selftest::families(&gpu);
    let mut seen: Vec<(String, usize)> = Vec::new();
    let checks = cnn_wgpu::selftest::run(&gpu, &mut |c| {
        seen.push((c.family.clone(), gpu.pipeline_count()))
    })
    .unwrap();
    assert!(checks.iter().all(|c| c.passed), "{checks:#?}");
    for pair in families.windows(2) {
        let last_of = |f: &str| seen.iter().rev().find(|(g, _)| g == f).unwrap().1;
        assert!(
            last_of(&pair[1].name) > last_of(&pair[0].name),
            "{} built no pipelines of its own after {}",
            pair[1].name,
            pair[0].name
        );
    }
    // The device's switches are as they were.
    assert_eq!(cnn_wgpu::selftest::families(&gpu), families);
}

/// `bench --against`'s speed-up is the median of each pair's own ratio, so a slow spell that
/// stretches both runs of a pair leaves it alone, where the ratio of the two medians would not.
#[test]
fn paired_speedup_is_the_median_of_the_pairs_ratios() {
    use cnn_wgpu::bench::paired_speedup;
    // Ratios 2, 1, 3: median 2.
    assert_eq!(paired_speedup(&[2.0, 4.0, 1.0], &[4.0, 4.0, 3.0]), 2.0);
    // The machine slows 10x over the run; every pair ran the baseline 3x longer. The medians'
    // ratio (baseline 30 over main 1, or similar) would mix slow and fast moments.
    let main = [1.0, 1.0, 10.0, 10.0, 10.0];
    let base = [3.0, 3.0, 30.0, 30.0, 30.0];
    assert_eq!(paired_speedup(&main, &base), 3.0);
}

/// `time_paired` runs the two variants in pairs whose order alternates, as many of each, at
/// least the asked-for count; `bench --against` runs each workload's pairs with the device's
/// conv algorithm set to its own and then to the baseline, and sets it back afterwards.
#[test]
fn paired_timing_alternates_the_variants_and_the_conv_algorithm() {
    use cnn_wgpu::gpu::ConvAlgo;
    let Some(gpu) = fresh_gpu() else {
        return;
    };
    let mut seen = Vec::new();
    let p = cnn_wgpu::bench::time_paired(&gpu, 1, 4, |baseline| {
        seen.push(baseline);
        Ok(())
    })
    .unwrap();
    assert_eq!(p.main.runs, p.baseline.runs);
    assert!(p.main.runs >= 4, "{p:?}");
    assert!(p.speedup > 0.0 && p.main.ms >= 0.0 && p.baseline.ms >= 0.0);
    let timed = &seen[seen.len() - 2 * p.main.runs..];
    for (i, pair) in timed.chunks(2).enumerate() {
        let want = if i % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        assert_eq!(pair, want, "pair {i}");
    }

    // Through the bench: a 3x3 forward run as F(2x2) against the direct convolution.
    let workloads: cnn_wgpu::bench::Workloads = serde_json::from_str(
        r#"{"conv2d_forward": [{"name": "odd", "n": 1, "h": 9, "w": 7, "cin": 5, "cout": 6}]}"#,
    )
    .unwrap();
    let bench = |algo: ConvAlgo, against: Option<ConvAlgo>| {
        let gpu = fresh_gpu().unwrap();
        gpu.set_conv_algo(algo);
        let opts = cnn_wgpu::bench::BenchOptions {
            runs: 2,
            against,
            ..Default::default()
        };
        let lines = cnn_wgpu::bench::run(&gpu, &workloads, &opts, |_| {}).unwrap();
        assert_eq!(gpu.conv_algo(), algo, "the device's algorithm is set back");
        (lines, gpu.pipeline_count())
    };
    let (lines, paired) = bench(ConvAlgo::F2x2, Some(ConvAlgo::Direct));
    let l = &lines[0];
    assert_eq!(l.algorithm.as_deref(), Some("f2x2"));
    assert_eq!(l.baseline.as_deref(), Some("direct"));
    assert!(
        l.baseline_ms.unwrap() > 0.0 && l.speedup.unwrap() > 0.0,
        "{l:?}"
    );
    let table = cnn_wgpu::bench::table(&lines);
    assert!(
        table.contains("speed-up") && table.contains("direct"),
        "{table}"
    );
    // Both algorithms really ran: the paired device built every pipeline either one builds
    // alone (the transforms' and the direct convolution's), more than each.
    let (alone, f2x2) = bench(ConvAlgo::F2x2, None);
    assert!(alone[0].baseline.is_none() && alone[0].speedup.is_none());
    let (_, direct) = bench(ConvAlgo::Direct, None);
    assert!(
        paired > f2x2 && paired > direct,
        "{paired} pipelines against {f2x2} and {direct}"
    );
}

/// `bench --peak-paired` runs the peak kernel beside each workload run (the paired device builds
/// exactly one pipeline more than an unpaired one: the peak kernel's) and marks the line; a
/// peak no grid could keep busy for the pair's 20 ms is refused with the numbers.
#[test]
fn peak_paired_runs_the_peak_kernel_beside_each_workload() {
    let workloads: cnn_wgpu::bench::Workloads =
        serde_json::from_str(r#"{"matmul": [{"name": "odd", "m": 7, "n": 5, "k": 9}]}"#).unwrap();
    let bench = |peak_paired: Option<u32>, gflops: f64| {
        let gpu = fresh_gpu()?;
        let opts = cnn_wgpu::bench::BenchOptions {
            runs: 2,
            peak_gflops: Some(gflops),
            peak_paired,
            ..Default::default()
        };
        let lines = cnn_wgpu::bench::run(&gpu, &workloads, &opts, |_| {});
        Some((lines, gpu.pipeline_count()))
    };
    // 1 GFLOP/s: a peak run of a couple of workgroups.
    let Some((paired, with_peak)) = bench(Some(4), 1.0) else {
        return;
    };
    let (alone, without) = bench(None, 1.0).unwrap();
    let (paired, alone) = (paired.unwrap(), alone.unwrap());
    assert!(paired[0].peak_paired && !alone[0].peak_paired);
    let share = paired[0].peak_fraction.unwrap();
    assert!(share.is_finite() && share > 0.0, "{share}");
    assert_eq!(with_peak, without + 1, "the peak kernel's pipeline");
    let err = bench(Some(4), 1e12).unwrap().0.unwrap_err().to_string();
    assert!(
        err.contains("peak kernel") && err.contains("workgroups"),
        "{err}"
    );
}

/// A batch of 0 samples runs through every batched op on every kernel family: the outputs are
/// empty, and the parameter gradients, sums over no samples, are 0. (An empty tensor used to
/// bind 4 bytes where the vec4 kernels need 16, a wgpu validation panic.)
#[test]
fn an_empty_batch_runs_every_op_to_empty_outputs_and_zero_gradients() {
    use cnn_wgpu::gpu::{ConvAlgo, Gpu};
    use cnn_wgpu::ops::dense;
    let zero = |gpu: &Gpu, what: &str, t: &Tensor| {
        let v = read(gpu, t);
        assert!(v.iter().all(|&x| x == 0.0), "{what}: {v:?}");
    };
    let convs = |gpu: &Gpu, what: &str| {
        let (cin, cout) = (4, 8);
        let x = Tensor::zeros(gpu, [0, 7, 9, cin]).unwrap();
        let w = upload(gpu, &[3, 3, cin, cout], &rand_vec(9 * cin * cout, 1));
        let b = upload(gpu, &[cout], &rand_vec(cout, 2));
        for padding in [Padding::Same, Padding::Valid] {
            let spec = Conv2dSpec::new(1, padding, true);
            let y = conv::conv2d_forward(gpu, &x, &w, &b, &spec).unwrap();
            let dy = Tensor::zeros(gpu, y.dims()).unwrap();
            let g = conv::conv2d_backward(gpu, &x, &w, &dy, &spec, true).unwrap();
            assert_eq!(g.dx.unwrap().dims(), x.dims(), "{what}");
            zero(gpu, &format!("{what}: conv dw"), &g.dw);
            zero(gpu, &format!("{what}: conv db"), &g.db);
        }
    };
    for (family, gpu) in kernel_families() {
        convs(gpu, family);
        let x = Tensor::zeros(gpu, [0, 6, 5, 4]).unwrap();
        let (y, taps) = pool::max_pool2d(gpu, &x, pool::PoolSpec::square(2)).unwrap();
        assert_eq!(y.dims(), [0, 3, 2, 4], "{family}");
        let dx =
            pool::max_pool2d_backward(gpu, &y, &taps, x.dims(), pool::PoolSpec::square(2)).unwrap();
        assert_eq!(dx.dims(), x.dims(), "{family}");
        let x = Tensor::zeros(gpu, [0, 12]).unwrap();
        let w = upload(gpu, &[12, 8], &rand_vec(96, 3));
        let b = upload(gpu, &[8], &rand_vec(8, 4));
        let y = dense::dense_forward(gpu, &x, &w, Some(&b), true).unwrap();
        assert_eq!(y.dims(), [0, 8], "{family}");
        let g = dense::dense_backward(gpu, &x, &w, &y, true).unwrap();
        assert_eq!(g.dx.unwrap().dims(), x.dims(), "{family}");
        zero(gpu, &format!("{family}: dense dw"), &g.dw);
        zero(gpu, &format!("{family}: dense db"), &g.db);
        gpu.sync().unwrap();
    }
    // Winograd's transforms too, on a device of its own (the algorithm is a device switch).
    let Some(gpu) = fresh_gpu() else { return };
    for algo in ConvAlgo::WINOGRAD {
        gpu.with_conv_algo(algo, || convs(&gpu, algo.name()));
    }
    gpu.sync().unwrap();
}

/// The test devices' NaN tail: a tensor's binding (whole, or the window that ends it) reaches
/// past its last element into NaN, within the binding limit, whatever the pool's buffer held
/// before; a window that ends earlier does not. (That a kernel reading past a tensor's end then
/// fails is shown in README's portability section with a seeded defect.)
#[test]
fn tensors_carry_a_nan_tail_inside_their_bindings() {
    for gpu in [gpu_or_skip!(), small_binding_gpu().unwrap()] {
        assert!(
            gpu.nan_tail() >= 16,
            "the test devices have the NaN tail on"
        );
        // A recycled buffer that held numbers: its tail is NaN again once handed out.
        drop(Tensor::from_slice(gpu, [300], &vec![1.0; 300]).unwrap());
        let t = Tensor::from_slice(gpu, [5], &[2.0; 5]).unwrap();
        let all = t.all();
        assert!(
            all.size > 20,
            "the binding takes the tail in: {} bytes",
            all.size
        );
        let bytes = gpu.read_bytes(t.buffer(), 0, all.size).unwrap();
        let vals: Vec<f32> = bytemuck::pod_collect_to_vec(&bytes);
        assert_eq!(&vals[..5], &[2.0; 5]);
        assert!(vals[5..].iter().all(|v| v.is_nan()), "{:?}", &vals[5..12]);
        let (end, _) = t.window(gpu, 3, 2);
        assert!(end.offset + end.size > 20);
        let (inner, _) = t.window(gpu, 0, 3);
        assert_eq!(
            (inner.offset, inner.size),
            (0, 16),
            "the least binding, no tail"
        );
        // Within the binding limit, even for a tensor that nearly fills it.
        let near = (gpu.binding_limit() / 4 - 2) as usize;
        if near <= 1 << 22 {
            let big = Tensor::zeros(gpu, [near]).unwrap();
            assert!(big.all().size <= gpu.binding_limit());
        }
    }
}

#[test]
fn a_kernel_gradient_never_splits_into_more_slices_than_one_binding_holds() {
    // The slices' partial kernels are one tensor (slices, 7*7*8*8), bound whole: 6 slices
    // (what one image's OH*OW = 1521 allows) need 75,264 bytes, over the 64 KiB binding. Found by the
    // WebGPU class of the pipeline manifest, where block5's 32-slice candidate needed 302 MB
    // over a 256 MiB buffer limit.
    let Some(gpu) = small_binding_gpu() else {
        return;
    };
    let (xs, ws) = ([2usize, 45, 45, 8], [7usize, 7, 8, 8]);
    let spec = Conv2dSpec::new(1, Padding::Valid, false);
    let x = rand_vec(xs.iter().product(), 61);
    let w = rand_vec(ws.iter().product(), 62);
    let ys = [2usize, 39, 39, 8];
    let dy = rand_vec(ys.iter().product(), 63);
    gpu.force_kernel_gradient_slices(Some(6));
    let g = conv::conv2d_backward(
        gpu,
        &upload(gpu, &xs, &x),
        &upload(gpu, &ws, &w),
        &upload(gpu, &ys, &dy),
        &spec,
        false,
    );
    gpu.force_kernel_gradient_slices(None);
    let g = g.unwrap();
    // dw[i,j,c,k] = sum over n, oy, ox of x[n, oy+i, ox+j, c] * dy[n, oy, ox, k].
    let (_, dw, db) = cnn_wgpu::reference::conv2d_backward_ref(
        &to_f64(&x),
        xs,
        &to_f64(&w),
        ws,
        &to_f64(&dy),
        (1, 1),
        Padding::Valid,
    );
    let terms = (ys[0] * ys[1] * ys[2]) as f64;
    assert_close("dw", &read(gpu, &g.dw), &dw, 1e-4, 1e-4 * terms.sqrt());
    assert_close("db", &read(gpu, &g.db), &db, 1e-4, 1e-4 * terms.sqrt());
}
