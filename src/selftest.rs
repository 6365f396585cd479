//! `cnn-wgpu selftest`: every kernel family the adapter runs, and on each every op forward and
//! backward, checked against the plain CPU references of [`crate::reference`] on small odd
//! shapes (batch 1 or 2, sizes that are no multiple of any tile). Drivers have bugs; this is how
//! a new GPU or driver is checked without the test suite, in seconds.
//!
//! Each element is held to an error bound derived from how it is computed, so a pass means the
//! kernel is right to rounding, not "close enough": a sum of K float32 products, in any order
//! and with or without fused multiply-adds, is within gamma_K * sum|terms| of the exact sum
//! (gamma_K = K u / (1 - K u), u = 2^-24; Higham, "Accuracy and Stability of Numerical
//! Algorithms", 3.1), so the bound is gamma_K times the same sum over absolute values, plus one
//! rounding of the result.

use std::time::Instant;

use rand::{Rng, SeedableRng};

use crate::gpu::Gpu;
use crate::gpu::{ConvAlgo, TiledConfig};
use crate::ops::{activation, conv, dense, pool, OpError, Padding};
use crate::reference as cpu;
use crate::tensor::Tensor;

/// One op checked on one kernel family.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Check {
    pub family: String,
    pub op: String,
    /// The shapes, as (N,H,W,C) and (KH,KW,Cin,Cout).
    pub case: String,
    /// The largest error over its element's bound: at most 1 passes.
    pub worst: f64,
    /// The element where `worst` was found, its GPU and reference values.
    pub at: (usize, f32, f64),
    pub passed: bool,
    pub millis: f64,
}

/// Unit roundoff of float32.
const U: f64 = 1.0 / 16_777_216.0;

/// gamma_K: the relative bound of a float32 sum of `k` terms.
fn gamma(k: usize) -> f64 {
    let ku = k as f64 * U;
    ku / (1.0 - ku)
}

/// The worst `|got - want| / allowed` and where it is.
fn compare(got: &[f32], want: &[f64], allowed: impl Fn(usize) -> f64) -> (f64, (usize, f32, f64)) {
    assert_eq!(got.len(), want.len(), "as many values as the reference");
    let mut worst = (0.0, (0, 0.0, 0.0));
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        // A NaN or an infinity fails whatever the bound.
        let r = if g.is_finite() {
            (f64::from(g) - w).abs() / allowed(i).max(f64::MIN_POSITIVE)
        } else {
            f64::INFINITY
        };
        if r > worst.0 || i == 0 {
            worst = (r, (i, g, w));
        }
    }
    worst
}

/// The bound of a sum of `k` products whose absolute values sum to `abs[i]`, then rounded.
fn sum_bound<'a>(k: usize, abs: &'a [f64], want: &'a [f64]) -> impl Fn(usize) -> f64 + 'a {
    move |i| gamma(k) * abs[i] + U * want[i].abs()
}

/// Transcendentals (exp in sigmoid and softmax) carry a few ulp of their own: a relative bound
/// of 2^-16 is far above any conforming exp and far below any wrong result.
fn relative_bound(want: &[f64]) -> impl Fn(usize) -> f64 + '_ {
    move |i| want[i].abs() / 65_536.0 + 1e-7
}

struct Data {
    rng: rand_chacha::ChaCha8Rng,
}

impl Data {
    fn new(seed: u64) -> Self {
        Self {
            rng: rand_chacha::ChaCha8Rng::seed_from_u64(seed),
        }
    }
    /// Values in [-1, 1), as f32 (what the GPU gets) and f64 (the same values, for the reference).
    fn values(&mut self, n: usize) -> (Vec<f32>, Vec<f64>) {
        let v: Vec<f32> = (0..n).map(|_| self.rng.random_range(-1.0..1.0)).collect();
        let w = v.iter().map(|&x| f64::from(x)).collect();
        (v, w)
    }
}

fn abs(v: &[f64]) -> Vec<f64> {
    v.iter().map(|x| x.abs()).collect()
}

/// Runs `f` and times it (the readbacks included).
fn timed<T>(f: impl FnOnce() -> Result<T, OpError>) -> Result<(T, f64), OpError> {
    let t = Instant::now();
    let v = f()?;
    Ok((v, t.elapsed().as_secs_f64() * 1e3))
}

struct Checks<'a> {
    gpu: &'a Gpu,
    family: String,
    out: Vec<Check>,
    report: &'a mut dyn FnMut(&Check),
}

impl Checks<'_> {
    fn push(&mut self, op: &str, case: &str, (worst, at): (f64, (usize, f32, f64)), millis: f64) {
        let c = Check {
            family: self.family.clone(),
            op: op.to_string(),
            case: case.to_string(),
            worst,
            at,
            passed: worst <= 1.0,
            millis,
        };
        (self.report)(&c);
        self.out.push(c);
    }

    fn read(&self, t: &Tensor) -> Result<Vec<f32>, OpError> {
        Ok(t.to_vec(self.gpu)?)
    }

    fn upload(&self, shape: &[usize], v: &[f32]) -> Result<Tensor, OpError> {
        Ok(Tensor::from_slice(self.gpu, shape.to_vec(), v)?)
    }

    /// Conv2d forward (bias, ReLU) and backward (dx, dw, db) on `xs` * `ws`.
    fn conv2d(
        &mut self,
        xs: [usize; 4],
        ws: [usize; 4],
        stride: usize,
        padding: Padding,
    ) -> Result<(), OpError> {
        let mut d = Data::new(11);
        let (x, x64) = d.values(xs.iter().product());
        let (w, w64) = d.values(ws.iter().product());
        let (b, b64) = d.values(ws[3]);
        let case = format!("{xs:?} * {ws:?}, stride {stride}, {padding:?}");
        let spec = conv::Conv2dSpec::new(stride, padding, true);
        let (xt, wt, bt) = (
            self.upload(&xs, &x)?,
            self.upload(&ws, &w)?,
            self.upload(&[ws[3]], &b)?,
        );
        let (y, ms) = timed(|| {
            let y = conv::conv2d_forward(self.gpu, &xt, &wt, &bt, &spec)?;
            self.read(&y)
        })?;
        let st = (stride, stride);
        let (want, ys) = cpu::conv2d_ref(&x64, xs, &w64, ws, &b64, st, padding, true);
        let (scale, _) = cpu::conv2d_ref(
            &abs(&x64),
            xs,
            &abs(&w64),
            ws,
            &abs(&b64),
            st,
            padding,
            false,
        );
        let k = ws[0] * ws[1] * ws[2] + 1;
        let r = compare(&y, &want, sum_bound(k, &scale, &want));
        self.push("conv2d forward (+bias, relu)", &case, r, ms);

        let (dy, dy64) = d.values(ys.iter().product());
        let dyt = self.upload(&ys, &dy)?;
        let linear = conv::Conv2dSpec::new(stride, padding, false);
        let (grads, ms) = timed(|| {
            let g = conv::conv2d_backward(self.gpu, &xt, &wt, &dyt, &linear, true)?;
            let dx = self.read(g.dx.as_ref().expect("asked for dx"))?;
            Ok((dx, self.read(&g.dw)?, self.read(&g.db)?))
        })?;
        let (dx, dw, db) = cpu::conv2d_backward_ref(&x64, xs, &w64, ws, &dy64, st, padding);
        let (sx, sw, sb) =
            cpu::conv2d_backward_ref(&abs(&x64), xs, &abs(&w64), ws, &abs(&dy64), st, padding);
        let positions = ys[0] * ys[1] * ys[2];
        // dx sums over the output taps that read an input (at most KH*KW*Cout terms), dw over
        // every output position, db likewise.
        let k_dx = ws[0] * ws[1] * ws[3];
        self.push(
            "conv2d backward dx",
            &case,
            compare(&grads.0, &dx, sum_bound(k_dx, &sx, &dx)),
            ms,
        );
        self.push(
            "conv2d backward dw",
            &case,
            compare(&grads.1, &dw, sum_bound(positions, &sw, &dw)),
            0.0,
        );
        self.push(
            "conv2d backward db",
            &case,
            compare(&grads.2, &db, sum_bound(positions, &sb, &db)),
            0.0,
        );
        Ok(())
    }

    /// Conv2d forward (bias, ReLU) and input gradient on Winograd `algo` (3x3, stride 1), each
    /// within the componentwise bound of its transforms (`reference::winograd_error_bound`).
    fn winograd(
        &mut self,
        algo: ConvAlgo,
        xs: [usize; 4],
        cout: usize,
        padding: Padding,
    ) -> Result<(), OpError> {
        let m = algo
            .winograd_side()
            .expect("selftest's Winograd checks run a Winograd algorithm");
        let ws = [3, 3, xs[3], cout];
        let mut d = Data::new(13);
        let (x, x64) = d.values(xs.iter().product());
        let (w, w64) = d.values(ws.iter().product());
        let (b, b64) = d.values(cout);
        let case = format!("{xs:?} * {ws:?}, {padding:?}");
        let (xt, wt, bt) = (
            self.upload(&xs, &x)?,
            self.upload(&ws, &w)?,
            self.upload(&[cout], &b)?,
        );
        let spec = conv::Conv2dSpec::new(1, padding, true);
        let linear = conv::Conv2dSpec::new(1, padding, false);
        let (want, ys) = cpu::conv2d_ref(&x64, xs, &w64, ws, &b64, (1, 1), padding, true);
        let (dy, dy64) = d.values(ys.iter().product());
        let (forward, backward) = self.gpu.with_conv_algo(algo, || {
            let forward = timed(|| {
                let y = conv::conv2d_forward(self.gpu, &xt, &wt, &bt, &spec)?;
                self.read(&y)
            });
            let backward = self.upload(&ys, &dy).and_then(|dyt| {
                timed(|| {
                    let g = conv::conv2d_backward(self.gpu, &xt, &wt, &dyt, &linear, true)?;
                    self.read(g.dx.as_ref().expect("asked for dx"))
                })
            });
            (forward, backward)
        });
        let (y, ms) = forward?;
        let pad = usize::from(padding == Padding::Same);
        let mut bound =
            cpu::winograd_error_bound(&x64, xs, &w64, cout, (pad, pad), (ys[1], ys[2]), m);
        // The bias adds one rounding of a value at most |y| + |b|.
        for (i, e) in bound.iter_mut().enumerate() {
            *e += 2.0 * U * (want[i].abs() + b64[i % cout].abs());
        }
        let name = format!("conv2d forward {} (+bias, relu)", algo.name());
        self.push(&name, &case, compare(&y, &want, |i| bound[i]), ms);
        let (dx, ms) = backward?;
        let (want_dx, _, _) = cpu::conv2d_backward_ref(&x64, xs, &w64, ws, &dy64, (1, 1), padding);
        // dx is the convolution of dy with the flipped kernel, padded by 2 - pad.
        let bound_dx = cpu::winograd_error_bound(
            &dy64,
            ys,
            &cpu::flipped_kernel(&w64, xs[3], cout),
            xs[3],
            (2 - pad, 2 - pad),
            (xs[1], xs[2]),
            m,
        );
        let name = format!("conv2d backward dx {}", algo.name());
        self.push(
            &name,
            &case,
            compare(&dx, &want_dx, |i| bound_dx[i] + 1e-7),
            ms,
        );
        Ok(())
    }

    /// Dense forward (bias, ReLU) and backward on (rows, inp) x (inp, out).
    fn dense(&mut self, rows: usize, inp: usize, out: usize) -> Result<(), OpError> {
        let mut d = Data::new(12);
        let (x, x64) = d.values(rows * inp);
        let (w, w64) = d.values(inp * out);
        let (b, b64) = d.values(out);
        let case = format!("({rows},{inp}) x ({inp},{out})");
        let (xt, wt, bt) = (
            self.upload(&[rows, inp], &x)?,
            self.upload(&[inp, out], &w)?,
            self.upload(&[out], &b)?,
        );
        let (y, ms) = timed(|| {
            let y = dense::dense_forward(self.gpu, &xt, &wt, Some(&bt), true)?;
            self.read(&y)
        })?;
        let want = cpu::dense_ref(&x64, rows, inp, &w64, out, Some(&b64), true);
        let scale = cpu::dense_ref(
            &abs(&x64),
            rows,
            inp,
            &abs(&w64),
            out,
            Some(&abs(&b64)),
            false,
        );
        self.push(
            "dense forward (+bias, relu)",
            &case,
            compare(&y, &want, sum_bound(inp + 1, &scale, &want)),
            ms,
        );

        let (dy, dy64) = d.values(rows * out);
        let dyt = self.upload(&[rows, out], &dy)?;
        let (g, ms) = timed(|| {
            let g = dense::dense_backward(self.gpu, &xt, &wt, &dyt, true)?;
            let dx = self.read(g.dx.as_ref().expect("asked for dx"))?;
            Ok((dx, self.read(&g.dw)?, self.read(&g.db)?))
        })?;
        let (dx, dw, db) = cpu::dense_backward_ref(&x64, rows, inp, &w64, out, &dy64);
        let (sx, sw, sb) =
            cpu::dense_backward_ref(&abs(&x64), rows, inp, &abs(&w64), out, &abs(&dy64));
        self.push(
            "dense backward dx",
            &case,
            compare(&g.0, &dx, sum_bound(out, &sx, &dx)),
            ms,
        );
        self.push(
            "dense backward dw",
            &case,
            compare(&g.1, &dw, sum_bound(rows, &sw, &dw)),
            0.0,
        );
        self.push(
            "dense backward db",
            &case,
            compare(&g.2, &db, sum_bound(rows, &sb, &db)),
            0.0,
        );
        Ok(())
    }

    /// Max and average pooling, forward and backward, on `xs` with a `k` x `k` window.
    fn pool(
        &mut self,
        xs: [usize; 4],
        k: usize,
        stride: usize,
        padding: Padding,
    ) -> Result<(), OpError> {
        let mut d = Data::new(13);
        let (x, x64) = d.values(xs.iter().product());
        let xt = self.upload(&xs, &x)?;
        let spec = pool::PoolSpec {
            window: (k, k),
            stride: (stride, stride),
            padding,
        };
        let case = format!("{xs:?}, window {k}, stride {stride}, {padding:?}");
        let (win, st) = ((k, k), (stride, stride));
        for max in [true, false] {
            let name = if max { "max_pool2d" } else { "avg_pool2d" };
            let (want, ys) = cpu::pool_ref(&x64, xs, win, st, padding, max);
            let (dy, dy64) = d.values(ys.iter().product());
            let dyt = self.upload(&ys, &dy)?;
            let ((y, dx), ms) = timed(|| {
                let (y, dx) = if max {
                    let (y, taps) = pool::max_pool2d(self.gpu, &xt, spec)?;
                    (
                        y,
                        pool::max_pool2d_backward(self.gpu, &dyt, &taps, &xs, spec)?,
                    )
                } else {
                    let y = pool::avg_pool2d(self.gpu, &xt, spec)?;
                    (y, pool::avg_pool2d_backward(self.gpu, &dyt, &xs, spec)?)
                };
                Ok((self.read(&y)?, self.read(&dx)?))
            })?;
            // A maximum is one of the inputs, exactly; an average is a sum of up to k*k terms
            // and a division.
            let (scale, _) = cpu::pool_ref(&abs(&x64), xs, win, st, padding, false);
            let taps = k * k + 1;
            self.push(
                &format!("{name} forward"),
                &case,
                compare(&y, &want, sum_bound(taps, &scale, &want)),
                ms,
            );
            let want = cpu::pool_backward_ref(&x64, xs, &dy64, win, st, padding, max);
            let scale = cpu::pool_backward_ref(&x64, xs, &abs(&dy64), win, st, padding, max);
            // An input gathers the gradients of the windows that cover it: at most
            // ceil(k/stride)^2 of them.
            let covers = k.div_ceil(stride).pow(2) + 1;
            self.push(
                &format!("{name} backward"),
                &case,
                compare(&dx, &want, sum_bound(covers, &scale, &want)),
                0.0,
            );
        }
        Ok(())
    }

    /// ReLU, sigmoid and softmax, forward and backward, on (rows, cols).
    fn activations(&mut self, rows: usize, cols: usize) -> Result<(), OpError> {
        let mut d = Data::new(14);
        let (x, x64) = d.values(rows * cols);
        let x: Vec<f32> = x.iter().map(|v| v * 6.0).collect();
        let x64: Vec<f64> = x64.iter().map(|v| v * 6.0).collect();
        let (dy, dy64) = d.values(rows * cols);
        let (xt, dyt) = (
            self.upload(&[rows, cols], &x)?,
            self.upload(&[rows, cols], &dy)?,
        );
        let case = format!("({rows},{cols})");
        // relu: y = max(x, 0), dx = dy [x > 0]; exact.
        let ((y, dx), ms) = timed(|| {
            let y = activation::relu(self.gpu, &xt)?;
            let dx = activation::relu_backward(self.gpu, &dyt, &y)?;
            Ok((self.read(&y)?, self.read(&dx)?))
        })?;
        let want: Vec<f64> = x64.iter().map(|v| v.max(0.0)).collect();
        self.push("relu forward", &case, compare(&y, &want, |_| U), ms);
        let want: Vec<f64> = x64
            .iter()
            .zip(&dy64)
            .map(|(x, g)| if *x > 0.0 { *g } else { 0.0 })
            .collect();
        self.push("relu backward", &case, compare(&dx, &want, |_| U), 0.0);
        // sigmoid: y = 1 / (1 + e^-x), dx = dy y (1 - y).
        let ((y, dx), ms) = timed(|| {
            let y = activation::sigmoid(self.gpu, &xt)?;
            let dx = activation::sigmoid_backward(self.gpu, &dyt, &y)?;
            Ok((self.read(&y)?, self.read(&dx)?))
        })?;
        let s: Vec<f64> = x64.iter().map(|v| 1.0 / (1.0 + (-v).exp())).collect();
        self.push(
            "sigmoid forward",
            &case,
            compare(&y, &s, relative_bound(&s)),
            ms,
        );
        let want: Vec<f64> = s
            .iter()
            .zip(&dy64)
            .map(|(y, g)| g * y * (1.0 - y))
            .collect();
        self.push(
            "sigmoid backward",
            &case,
            compare(&dx, &want, relative_bound(&want)),
            0.0,
        );
        // softmax over a row: y_j = e^(x_j - max) / sum_k e^(x_k - max),
        // dx_j = y_j (dy_j - sum_k dy_k y_k).
        let ((y, dx), ms) = timed(|| {
            let y = activation::softmax(self.gpu, &xt)?;
            let dx = activation::softmax_backward(self.gpu, &dyt, &y)?;
            Ok((self.read(&y)?, self.read(&dx)?))
        })?;
        let mut sm = vec![0.0; rows * cols];
        let mut want = vec![0.0; rows * cols];
        let mut scale = vec![0.0; rows * cols];
        for r in 0..rows {
            let row = &x64[r * cols..(r + 1) * cols];
            let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = row.iter().map(|v| (v - m).exp()).sum();
            for j in 0..cols {
                sm[r * cols + j] = (row[j] - m).exp() / z;
            }
            let y = &sm[r * cols..(r + 1) * cols];
            let g = &dy64[r * cols..(r + 1) * cols];
            let dot: f64 = y.iter().zip(g).map(|(a, b)| a * b).sum();
            let dot_abs: f64 = y.iter().zip(g).map(|(a, b)| (a * b).abs()).sum();
            for j in 0..cols {
                want[r * cols + j] = y[j] * (g[j] - dot);
                // The row sum cancels: bound it by its terms, each carrying y's own error.
                scale[r * cols + j] = y[j] * (g[j].abs() + dot_abs);
            }
        }
        self.push(
            "softmax forward",
            &case,
            compare(&y, &sm, relative_bound(&sm)),
            ms,
        );
        self.push(
            "softmax backward",
            &case,
            compare(&dx, &want, |i| scale[i] / 65_536.0 + 1e-7),
            0.0,
        );
        Ok(())
    }
}

/// One kernel family as the selftest selects it: its name and the device switches that give it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Family {
    pub name: String,
    subgroups: bool,
    tiled: bool,
    textures: bool,
}

/// The kernel families of `gpu`'s adapter: where the adapter runs the subgroup GEMM, that GEMM
/// with B in operand textures and with B in buffers; the tiled kernels (in the configuration
/// the planner picks per product) where a configuration fits the limits; and the
/// workgroup-memory kernels.
pub fn families(gpu: &Gpu) -> Vec<Family> {
    let mut f = Vec::new();
    let family = |name: String, subgroups, tiled, textures| Family {
        name,
        subgroups,
        tiled,
        textures,
    };
    if let Some(w) = gpu.subgroup_width() {
        if gpu.texture_operands() {
            f.push(family(
                format!("subgroup-{w}, B in textures"),
                true,
                false,
                true,
            ));
        }
        f.push(family(
            format!("subgroup-{w}, B in buffers"),
            true,
            false,
            false,
        ));
    }
    if gpu.tiled_kernels() && TiledConfig::ALL.iter().any(|c| c.fits(gpu.limits())) {
        f.push(family("tiled".to_string(), false, true, false));
    }
    f.push(family("workgroup-memory".to_string(), false, false, false));
    f
}

/// Every op on every family of `gpu` (see [`families`]), each result passed to `report` as it
/// comes. The device's switches are restored afterwards.
pub fn run(gpu: &Gpu, report: &mut dyn FnMut(&Check)) -> Result<Vec<Check>, OpError> {
    let (subgroups, tiled, textures) = (
        gpu.subgroup_kernels(),
        gpu.tiled_kernels(),
        gpu.texture_operands(),
    );
    let mut all = Vec::new();
    let result = (|| {
        for family in families(gpu) {
            gpu.set_subgroup_kernels(family.subgroups);
            gpu.set_tiled_kernels(family.tiled);
            gpu.set_texture_operands(family.textures);
            let mut c = Checks {
                gpu,
                family: family.name,
                out: Vec::new(),
                report: &mut *report,
            };
            // Batch 1 and 2, spatial sizes no multiple of any tile. Channels that are no
            // multiple of 4 take the workgroup-memory kernels on every family; multiples of 4
            // (an RGB input with 8 filters, VGG-like layers) take the subgroup GEMM where the
            // family has it, with more output rows than one tile, so B is packed (into a
            // texture or a buffer, as the family says).
            c.conv2d([2, 9, 7, 5], [3, 3, 5, 6], 1, Padding::Same)?;
            c.conv2d([1, 11, 8, 3], [3, 3, 3, 13], 2, Padding::Valid)?;
            c.conv2d([1, 10, 9, 3], [3, 3, 3, 8], 1, Padding::Same)?;
            c.conv2d([2, 9, 11, 8], [3, 3, 8, 12], 1, Padding::Same)?;
            c.conv2d([1, 6, 5, 36], [1, 1, 36, 8], 1, Padding::Valid)?;
            // Winograd's transforms and batched products: channels off the 4-multiples (the
            // workgroup-memory products) and on them (the family's own), H and W no multiple
            // of either tile.
            for algo in ConvAlgo::WINOGRAD {
                c.winograd(algo, [2, 7, 9, 5], 6, Padding::Same)?;
                c.winograd(algo, [1, 11, 10, 16], 20, Padding::Valid)?;
            }
            c.dense(3, 37, 11)?;
            c.dense(40, 36, 20)?;
            c.dense(1, 132, 8)?;
            c.pool([2, 7, 9, 3], 2, 2, Padding::Valid)?;
            c.pool([1, 6, 7, 5], 3, 2, Padding::Same)?;
            c.activations(3, 17)?;
            all.extend(c.out);
        }
        Ok(())
    })();
    gpu.set_subgroup_kernels(subgroups);
    gpu.set_tiled_kernels(tiled);
    gpu.set_texture_operands(textures);
    result.map(|()| all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_passes_rounding_and_fails_a_wrong_value() {
        // A sum of 45 products of values in [-1, 1]: the exact sum, rounded once to f32, is
        // inside the bound; one ulp of the largest term off still is; 1e-3 off is not; NaN never.
        let want = [0.123_456_789_f64, -3.5, 0.0];
        let abs = [20.0, 20.0, 20.0];
        let got: Vec<f32> = want.iter().map(|&v| v as f32).collect();
        assert!(compare(&got, &want, sum_bound(45, &abs, &want)).0 <= 1.0);
        let off = [got[0] + 1e-3, got[1], got[2]];
        let (worst, (at, _, _)) = compare(&off, &want, sum_bound(45, &abs, &want));
        assert!(worst > 1.0 && at == 0, "{worst} at {at}");
        let nan = [got[0], f32::NAN, got[2]];
        let (worst, (at, _, _)) = compare(&nan, &want, sum_bound(45, &abs, &want));
        assert!(worst.is_infinite() && at == 1);
        // gamma_K grows with K as K u does.
        assert!((gamma(1000) / (1000.0 * U) - 1.0).abs() < 1e-3);
    }
}
