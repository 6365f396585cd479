//! The tuning cache: a measured choice is saved per adapter, read back by the next device, and a
//! damaged file is reported and replaced, never fatal; results equal the CPU definition
//! whatever was chosen. Every device here is opened with its tuning cache at a temporary file
//! (`DeviceOptions::tune_cache`).

mod common;

use std::collections::BTreeMap;

use cnn_wgpu::gpu::{ConvAlgo, TuneMode};
use cnn_wgpu::ops::conv::{self, Conv2dSpec};
use cnn_wgpu::ops::Padding;
use cnn_wgpu::Tensor;
use common::*;

/// dw[ky,kx,ci,co] = sum over n, oy, ox of x[n, oy+ky, ox+kx, ci] * dy[n, oy, ox, co] (valid,
/// stride 1): the kernel gradient straight from its definition.
fn kernel_grad_ref(x: &[f32], xs: [usize; 4], dy: &[f32], k: usize, co: usize) -> Vec<f64> {
    let [n, h, w, ci] = xs;
    let (oh, ow) = (h - k + 1, w - k + 1);
    let mut dw = vec![0.0; k * k * ci * co];
    for b in 0..n {
        for oy in 0..oh {
            for ox in 0..ow {
                for ky in 0..k {
                    for kx in 0..k {
                        for c in 0..ci {
                            let xv = f64::from(x[((b * h + oy + ky) * w + ox + kx) * ci + c]);
                            for o in 0..co {
                                let g = f64::from(dy[((b * oh + oy) * ow + ox) * co + o]);
                                dw[((ky * k + kx) * ci + c) * co + o] += xv * g;
                            }
                        }
                    }
                }
            }
        }
    }
    dw
}

fn read_cache(path: &std::path::Path) -> BTreeMap<String, u32> {
    let text = std::fs::read_to_string(path).expect("the tuning cache was written");
    serde_json::from_str(&text).expect("the tuning cache is a JSON map")
}

/// A device that tunes as `mode` says, its cache at `path`; None without an adapter.
fn tuning_at(path: &std::path::Path, mode: TuneMode) -> Option<cnn_wgpu::Gpu> {
    open_with(|o| {
        o.tune = mode;
        o.tune_cache = Some(path.to_path_buf());
    })
}

/// A frozen 3x3 layer, x (1,12,12,16) -> (1,12,12,32) with `same` padding, on which the
/// kept-kernel tests call the forward again and again.
struct FrozenLayer {
    x: Vec<f32>,
    w: Vec<f32>,
    b: Vec<f32>,
    spec: Conv2dSpec,
}

impl FrozenLayer {
    const X: [usize; 4] = [1, 12, 12, 16];
    const W: [usize; 4] = [3, 3, 16, 32];

    fn new(seed: u64) -> Self {
        Self {
            x: rand_vec(Self::X.iter().product(), seed),
            w: rand_vec(Self::W.iter().product(), seed + 1),
            b: rand_vec(32, seed + 2),
            spec: Conv2dSpec::new(1, Padding::Same, false),
        }
    }

    /// x, w and b on `gpu`.
    fn upload(&self, gpu: &cnn_wgpu::Gpu) -> (Tensor, Tensor, Tensor) {
        (
            upload(gpu, &Self::X, &self.x),
            upload(gpu, &Self::W, &self.w),
            upload(gpu, &[32], &self.b),
        )
    }
}

#[test]
fn tuning_cache_measures_saves_reuses_and_survives_damage() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tune.json");
    let Some(gpu) = fresh_gpu_tuned_at(&path) else {
        return;
    };
    assert_eq!(gpu.tune_cache_path(), Some(path.as_path()));

    // 2 x 20 x 20: 648 output positions, so the weight gradient's sum may split into 1 or 2
    // slices (256 terms each at least).
    let xs = [2, 20, 20, 8];
    let (k, co) = (3, 8);
    let x = rand_vec(xs.iter().product(), 1);
    let w = rand_vec(k * k * 8 * co, 2);
    let dy = rand_vec(2 * 18 * 18 * co, 3);
    let want = kernel_grad_ref(&x, xs, &dy, k, co);
    let spec = Conv2dSpec::new(1, Padding::Valid, false);
    let dw_on = |g: &cnn_wgpu::Gpu| {
        let grads = conv::conv2d_backward(
            g,
            &upload(g, &xs, &x),
            &upload(g, &[k, k, 8, co], &w),
            &upload(g, &[2, 18, 18, co], &dy),
            &spec,
            false,
        )
        .unwrap();
        read(g, &grads.dw)
    };

    // Cached mode with no file: defaults, nothing written.
    assert_eq!(gpu.tune_mode(), TuneMode::Cached);
    assert_close("dw, defaults", &dw_on(&gpu), &want, 1e-4, 1e-4);
    assert!(!path.exists(), "cached mode must not write the cache");

    // Measure mode: the choice is timed, saved, and the result is still the definition's.
    gpu.set_tune_mode(TuneMode::Measure);
    assert_close("dw, measured", &dw_on(&gpu), &want, 1e-4, 1e-4);
    // One kernel-gradient split; where the adapter runs the tiled kernels alone (no subgroup
    // GEMM: lavapipe at 128 bits), the product's tiled configuration is measured too.
    let saved = read_cache(&path);
    let only_splits_and_tiles = |saved: &BTreeMap<String, u32>| {
        let (splits, other): (Vec<_>, Vec<_>) = saved
            .iter()
            .partition(|(k, _)| k.contains("conv2d kernel gradient"));
        assert_eq!(splits.len(), 1, "{saved:?}");
        assert!(
            other.iter().all(|(k, _)| k.contains("tiled configuration")),
            "{saved:?}"
        );
        (splits[0].0.clone(), *splits[0].1)
    };
    let (key, slices) = only_splits_and_tiles(&saved);
    let key = &key;
    assert!([1, 2].contains(&slices), "{key} = {slices}");
    // `devices` reports the file and what it holds.
    let mut request = cnn_wgpu::AdapterRequest::from_env().unwrap();
    request.options.tune_cache = Some(path.clone());
    let listed = cnn_wgpu::gpu::select::list(&request);
    let this = listed
        .iter()
        .find(|a| a.name == gpu.adapter_name())
        .expect("the open adapter is listed");
    assert_eq!(this.tune_cache.as_deref(), Some(path.to_str().unwrap()));
    assert_eq!(this.tuned_choices, saved.len());

    // Another device reads the file. Profiled, a split shows as one more dispatch (the
    // reduction of the partial kernels): find the default's count with tuning off, then force
    // the other split through the file and check that it is the one that runs.
    let dispatches = |g: &cnn_wgpu::Gpu| {
        assert!(g.begin_profile());
        g.set_scope("dw");
        assert_close("dw, profiled", &dw_on(g), &want, 1e-4, 1e-4);
        g.end_profile().unwrap().scopes[0].2
    };
    let off = fresh_gpu_tuned_at(&path).unwrap();
    off.set_tune_mode(TuneMode::Off);
    if off.can_profile() {
        let unsplit_or_default = dispatches(&off);
        let mut file = saved.clone();
        file.insert(key.clone(), 1);
        std::fs::write(&path, serde_json::to_string(&file).unwrap()).unwrap();
        let one = dispatches(&fresh_gpu_tuned_at(&path).unwrap());
        file.insert(key.clone(), 2);
        std::fs::write(&path, serde_json::to_string(&file).unwrap()).unwrap();
        let two = dispatches(&fresh_gpu_tuned_at(&path).unwrap());
        assert_eq!(two, one + 1, "2 slices add the reduction's dispatch");
        assert!([one, two].contains(&unsplit_or_default));
    } else {
        eprintln!(
            "skipped the dispatch counts: {} has no timestamp queries",
            off.adapter_name()
        );
    }

    // A damaged file is ignored (with a warning naming it) and rewritten once a choice is
    // measured; the run goes on.
    std::fs::write(&path, "{ not json").unwrap();
    let third = fresh_gpu_tuned_at(&path).unwrap();
    third.set_tune_mode(TuneMode::Measure);
    assert_close("dw, damaged cache", &dw_on(&third), &want, 1e-4, 1e-4);
    only_splits_and_tiles(&read_cache(&path));

    // Off: the file is not consulted, the defaults give the definition's dw too.
    assert_close("dw, tuning off", &dw_on(&off), &want, 1e-4, 1e-4);
}

/// On the tiled kernels, `--tune` times each configuration the adapter allows on a product and
/// saves the fastest; a later device runs the cached one (seen in the pipelines it builds), a
/// cached value that names no configuration is ignored, and every choice computes the
/// definition's product.
#[test]
fn tiled_configuration_is_measured_saved_and_reused() {
    use cnn_wgpu::gpu::{ShaderId, TiledConfig};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tune.json");
    let open = || {
        open_with(|o| {
            o.subgroups = false;
            o.tune_cache = Some(path.clone());
        })
    };
    let Some(gpu) = open() else {
        return;
    };
    if !gpu.tiled_kernels() {
        eprintln!(
            "skipped: no tiled configuration fits {}",
            gpu.adapter_name()
        );
        return;
    }
    let (rows, inp, out) = (150, 36, 132);
    let x = rand_vec(rows * inp, 11);
    let w = rand_vec(inp * out, 12);
    // y = x w: the definition.
    let mut want = vec![0.0; rows * out];
    for r in 0..rows {
        for k in 0..inp {
            for o in 0..out {
                want[r * out + o] += f64::from(x[r * inp + k]) * f64::from(w[k * out + o]);
            }
        }
    }
    let y_on = |g: &cnn_wgpu::Gpu| {
        let y = cnn_wgpu::ops::dense::dense_forward(
            g,
            &upload(g, &[rows, inp], &x),
            &upload(g, &[inp, out], &w),
            None,
            false,
        )
        .unwrap();
        read(g, &y)
    };
    // The configuration of each tiled pipeline built, as [TL_WX, TL_WY, TL_TM, TL_TN4, TL_BK].
    let tiled_built = |g: &cnn_wgpu::Gpu| -> Vec<[u32; 5]> {
        g.built_pipelines()
            .into_iter()
            .filter(|(s, _, _)| *s == ShaderId::MatmulTiled)
            .map(|(_, _, c)| {
                ["TL_WX", "TL_WY", "TL_TM", "TL_TN4", "TL_BK"]
                    .map(|name| c.iter().find(|(n, _)| *n == name).map_or(0, |v| v.1 as u32))
            })
            .collect()
    };

    gpu.set_tune_mode(TuneMode::Measure);
    assert_close("y, measured", &y_on(&gpu), &want, 1e-4, 1e-4);
    let saved = read_cache(&path);
    let (key, &choice) = saved
        .iter()
        .find(|(k, _)| k.contains("tiled configuration"))
        .unwrap_or_else(|| panic!("no tiled configuration was saved: {saved:?}"));
    assert!(
        (choice as usize) < TiledConfig::ALL.len(),
        "{key} = {choice} (no subgroup GEMM with subgroups off)"
    );

    // Each configuration, written into the file, is the one the next device runs.
    for (i, config) in TiledConfig::ALL.iter().enumerate() {
        if !config.fits(gpu.limits()) {
            continue;
        }
        let mut file = saved.clone();
        file.insert(key.clone(), i as u32);
        std::fs::write(&path, serde_json::to_string(&file).unwrap()).unwrap();
        let next = open().unwrap();
        assert_close(
            &format!("y, cached {}", config.name),
            &y_on(&next),
            &want,
            1e-4,
            1e-4,
        );
        assert_eq!(
            tiled_built(&next),
            [[config.wx, config.wy, config.tm, config.tn4, config.bk]],
            "cached {}",
            config.name
        );
    }
    // A value that names no configuration: the default runs, nothing breaks.
    let mut file = saved.clone();
    file.insert(key.clone(), 57);
    std::fs::write(&path, serde_json::to_string(&file).unwrap()).unwrap();
    let next = open().unwrap();
    assert_close("y, bad cached value", &y_on(&next), &want, 1e-4, 1e-4);
    assert_eq!(tiled_built(&next).len(), 1);
}

/// Planned as on a GPU (the tiled kernels first, the subgroup GEMM as the alternative `--tune`
/// times), a convolution's algorithm is measured once: when the GEMM under it is then cached
/// as the subgroup GEMM, the next device finds the algorithm under the same key instead of
/// measuring it again under a new family label; and it computes the definition's output on
/// the subgroup GEMM it was given.
#[test]
fn on_a_gpu_plan_a_cached_subgroup_choice_keeps_the_algorithm_key() {
    use cnn_wgpu::gpu::ShaderId;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tune.json");
    let open = || {
        open_with(|o| {
            o.plan_as_gpu = true;
            o.tune = TuneMode::Measure;
            o.tune_cache = Some(path.clone());
        })
    };
    let Some(gpu) = open() else {
        return;
    };
    assert!(gpu.plans_as_gpu());
    if !(gpu.subgroup_kernels() && gpu.tiled_kernels()) {
        assert!(
            !subgroup_family_expected(),
            "CNN_WGPU_EXPECT_KERNELS lists a subgroup family, but {} runs no subgroup kernels",
            gpu.adapter_name()
        );
        eprintln!(
            "skipped: {} runs no subgroup and tiled kernels both",
            gpu.adapter_name()
        );
        return;
    }
    let (xs, ws) = ([1usize, 10, 10, 16], [3usize, 3, 16, 16]);
    let x = rand_vec(xs.iter().product(), 21);
    let w = rand_vec(ws.iter().product(), 22);
    let b = rand_vec(16, 23);
    let spec = Conv2dSpec::new(1, Padding::Same, false);
    let (want, _) = conv2d_ref(
        &to_f64(&x),
        xs,
        &to_f64(&w),
        ws,
        &to_f64(&b),
        (1, 1),
        Padding::Same,
        false,
    );
    let y_on = |g: &cnn_wgpu::Gpu| {
        let y = conv::conv2d_forward(
            g,
            &upload(g, &xs, &x),
            &upload(g, &ws, &w),
            &upload(g, &[16], &b),
            &spec,
        )
        .unwrap();
        read(g, &y)
    };
    // Winograd F(4x4)'s bound at these sizes is looser than direct's.
    assert_close("y, measured", &y_on(&gpu), &want, 1e-3, 1e-3);
    let mut saved = read_cache(&path);
    assert!(
        saved.keys().any(|k| k.contains(": algorithm")),
        "the algorithm was measured: {saved:?}"
    );
    let gemm_keys: Vec<String> = saved
        .keys()
        .filter(|k| k.contains("tiled configuration"))
        .cloned()
        .collect();
    assert!(!gemm_keys.is_empty(), "no GEMM was tuned: {saved:?}");
    // As if the subgroup GEMM had won every product.
    for k in &gemm_keys {
        saved.insert(k.clone(), 100);
    }
    std::fs::write(&path, serde_json::to_string(&saved).unwrap()).unwrap();
    let next = open().unwrap();
    assert_close("y, subgroup GEMM cached", &y_on(&next), &want, 1e-3, 1e-3);
    let shaders: Vec<ShaderId> = next.built_pipelines().into_iter().map(|p| p.0).collect();
    assert!(
        shaders.iter().any(|s| matches!(
            s,
            ShaderId::Conv2dSg
                | ShaderId::Conv2dSgTexture
                | ShaderId::MatmulSg
                | ShaderId::MatmulSgTexture
        )) && !shaders
            .iter()
            .any(|s| matches!(s, ShaderId::Conv2dTiled | ShaderId::MatmulTiled)),
        "the cached subgroup choice runs: {shaders:?}"
    );
    let after = read_cache(&path);
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        saved.keys().collect::<Vec<_>>(),
        "nothing was measured again under a new key"
    );
}

/// While `--tune` times a layer's candidates on the first call (direct and each Winograd
/// tile, each run several times), none of them keeps its derived kernel: after the measuring
/// call the layer holds what the chosen algorithm keeps on a device that only read the choice.
#[test]
fn measuring_keeps_no_candidate_derivation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tune.json");
    let open = |mode| tuning_at(&path, mode);
    let Some(measuring) = open(TuneMode::Measure) else {
        return;
    };
    let layer = FrozenLayer::new(31);
    // Bytes a frozen layer holds beyond its tensors after `calls` calls.
    let kept_after = |gpu: &cnn_wgpu::Gpu, calls: usize| {
        let (x, w, b) = layer.upload(gpu);
        let before = gpu.pool_stats().in_use;
        for _ in 0..calls {
            let y = conv::conv2d_forward(gpu, &x, &w, &b, &layer.spec).unwrap();
            read(gpu, &y);
        }
        gpu.pool_stats().in_use - before
    };
    // One call measures every candidate, then runs the chosen one, which finds the kernel
    // unchanged since the measurement asked and keeps its derivation.
    let measured = kept_after(&measuring, 1);
    let saved = read_cache(&path);
    assert!(
        saved.keys().any(|k| k.contains(": algorithm")),
        "the algorithm was measured: {saved:?}"
    );
    // The choice the measuring call made, forced on a device that measures nothing: from
    // its second call on, the kernel unchanged, the cache would otherwise send it to the
    // kept-kernel key, which one call did not measure (its default may be another algorithm
    // with a derivation of another size).
    let cached = open(TuneMode::Cached).unwrap();
    let (x, w, _) = layer.upload(&cached);
    let algo = conv::conv2d_algorithm(&cached, &x, &w, &layer.spec, false).unwrap();
    cached.set_conv_algo(algo);
    let chosen = kept_after(&cached, 3);
    // A frozen Winograd layer always keeps its transformed kernel, and the direct convolution
    // a packed one on the subgroup GEMM; on the tiled kernels alone (GL) the timing may choose
    // direct, which derives nothing.
    if cnn_wgpu::gpu::ConvAlgo::WINOGRAD.contains(&algo) || cached.subgroup_width().is_some() {
        assert!(
            chosen > 0,
            "a frozen {algo:?} kernel keeps its derived kernel"
        );
    }
    assert_eq!(
        measured, chosen,
        "after measuring, the layer holds only the chosen algorithm's ({algo:?}) derived kernel"
    );
}

/// A kernel unchanged since its last call (a frozen layer, inference) has its Winograd
/// transform and packing kept, so its candidates are measured again under a key of their own,
/// each timed with its derivations kept as it would run: past its warm-up and first timed run
/// a candidate neither transforms nor packs. What a candidate kept is released after its
/// timing: afterwards the layer holds only the chosen algorithm's derivation.
#[test]
fn a_kept_kernel_is_measured_with_its_derivations_kept_and_keeps_only_the_choice() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tune.json");
    let open = |mode| tuning_at(&path, mode);
    let Some(measuring) = open(TuneMode::Measure) else {
        return;
    };
    let layer = FrozenLayer::new(41);
    let want = conv2d_ref(
        &to_f64(&layer.x),
        FrozenLayer::X,
        &to_f64(&layer.w),
        FrozenLayer::W,
        &to_f64(&layer.b),
        (1, 1),
        Padding::Same,
        false,
    )
    .0;
    // Dispatches of each of three calls on one unchanged kernel, and the bytes the layer
    // holds beyond its tensors after them.
    let run = |gpu: &cnn_wgpu::Gpu| {
        let (x, w, b) = layer.upload(gpu);
        let before = gpu.pool_stats().in_use;
        let mut dispatches = Vec::new();
        for call in 0..3 {
            let start = gpu.dispatch_count();
            let y = conv::conv2d_forward(gpu, &x, &w, &b, &layer.spec).unwrap();
            dispatches.push(gpu.dispatch_count() - start);
            assert_close(&format!("call {call}"), &read(gpu, &y), &want, 1e-3, 1e-3);
        }
        (dispatches, gpu.pool_stats().in_use - before)
    };
    let (measured, held) = run(&measuring);
    let saved = read_cache(&path);
    assert!(
        saved.keys().any(|k| k.ends_with(": algorithm")),
        "the first call measured as for a trainable layer: {saved:?}"
    );
    assert!(
        saved
            .keys()
            .any(|k| k.ends_with(": algorithm, kernel kept")),
        "the second call, the kernel unchanged, measured again: {saved:?}"
    );
    // A device that reads both choices runs the same algorithms, deriving where the
    // measuring device's chosen run derived: the same dispatches. Past those, the second
    // call dispatched its measurement.
    let cached = open(TuneMode::Cached).unwrap();
    let (ran, chosen) = run(&cached);
    let measurement = measured[1] - ran[1];
    // Each candidate forced on a device that measures nothing (and reads the same cache, so
    // its products run as the measured ones did): its first call derives (a full run), its
    // third reads what its second kept.
    let plain = open(TuneMode::Cached).unwrap();
    let runs: Vec<(ConvAlgo, u64, u64)> = [
        ConvAlgo::Direct,
        ConvAlgo::F2x2,
        ConvAlgo::F4x4,
        ConvAlgo::F6x6,
    ]
    .into_iter()
    .map(|algo| {
        plain.set_conv_algo(algo);
        let (d, _) = run(&plain);
        (algo, d[0], d[2])
    })
    .collect();
    // Timed as it runs, a candidate derives in at most its warm-up and first timed run (the
    // second of those keeps) and reads what it kept in the other two. Timed with nothing
    // kept, every run of every candidate derives, except the first candidate's where the
    // first call's choice left its derivation kept (released after that candidate).
    let as_kept: u64 = runs
        .iter()
        .map(|&(_, full, kept)| 2 * full + 2 * kept)
        .sum();
    let none_kept: u64 =
        runs[1..].iter().map(|&(_, full, _)| 4 * full).sum::<u64>() + 4 * runs[0].2;
    assert!(as_kept < none_kept, "{runs:?}");
    assert!(
        measurement <= as_kept,
        "the kept kernel's candidates were timed with their derivations kept: {measurement} dispatches, at most {as_kept} ({none_kept} or more with none kept; per algorithm, a full run's and a kept run's: {runs:?})"
    );
    // On the subgroup GEMM every algorithm derives a kernel (Winograd's transform, or the
    // direct convolution's packed one), which the layer holds; on the tiled kernels alone (GL)
    // the timing may choose direct, which derives nothing.
    if cached.subgroup_width().is_some() {
        assert!(
            chosen > 0,
            "a frozen kernel keeps its derived kernel: {ran:?}"
        );
    }
    assert_eq!(
        held, chosen,
        "after measuring, the layer holds only the chosen algorithm's derivation"
    );
}
