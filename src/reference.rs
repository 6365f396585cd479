//! Plain CPU references, in f64, straight from the definitions: what the kernels are checked
//! against, by the test suite and by `cnn-wgpu selftest` on the adapter in use. Loops, no
//! cleverness: each is meant to be read beside its formula. Shapes are (N,H,W,C) and kernels
//! (KH,KW,Cin,Cout).

use crate::ops::Padding;

/// The output size and the leading padding of one spatial axis, as Keras computes them.
pub fn resolve(input: usize, k: usize, s: usize, padding: Padding) -> (usize, usize) {
    match padding {
        Padding::Valid => ((input - k) / s + 1, 0),
        Padding::Same => {
            let out = input.div_ceil(s);
            let total = ((out - 1) * s + k).saturating_sub(input);
            (out, total / 2)
        }
    }
}

/// Direct convolution from the definition: y[n,oy,ox,co] = b[co] + sum x[n, oy*s+ky-pt, ox*s+kx-pl, ci] w[ky,kx,ci,co].
#[allow(clippy::too_many_arguments)]
pub fn conv2d_ref(
    x: &[f64],
    xs: [usize; 4],
    w: &[f64],
    ws: [usize; 4],
    b: &[f64],
    stride: (usize, usize),
    padding: Padding,
    relu: bool,
) -> (Vec<f64>, [usize; 4]) {
    let [n, h, wd, ci] = xs;
    let [kh, kw, _, co] = ws;
    let (oh, pt) = resolve(h, kh, stride.0, padding);
    let (ow, pl) = resolve(wd, kw, stride.1, padding);
    let mut y = vec![0.0; n * oh * ow * co];
    for b_ in 0..n {
        for oy in 0..oh {
            for ox in 0..ow {
                for o in 0..co {
                    let mut s = b[o];
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let iy = (oy * stride.0 + ky) as isize - pt as isize;
                            let ix = (ox * stride.1 + kx) as isize - pl as isize;
                            if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                continue;
                            }
                            for c in 0..ci {
                                s += x[((b_ * h + iy as usize) * wd + ix as usize) * ci + c]
                                    * w[((ky * kw + kx) * ci + c) * co + o];
                            }
                        }
                    }
                    y[((b_ * oh + oy) * ow + ox) * co + o] = if relu { s.max(0.0) } else { s };
                }
            }
        }
    }
    (y, [n, oh, ow, co])
}

pub fn dense_ref(
    x: &[f64],
    rows: usize,
    inp: usize,
    w: &[f64],
    out: usize,
    b: Option<&[f64]>,
    relu: bool,
) -> Vec<f64> {
    let mut y = vec![0.0; rows * out];
    for r in 0..rows {
        for o in 0..out {
            let mut s = b.map_or(0.0, |b| b[o]);
            for i in 0..inp {
                s += x[r * inp + i] * w[i * out + o];
            }
            y[r * out + o] = if relu { s.max(0.0) } else { s };
        }
    }
    y
}

/// Max (or average over in-image taps) pooling from the definition.
pub fn pool_ref(
    x: &[f64],
    xs: [usize; 4],
    window: (usize, usize),
    stride: (usize, usize),
    padding: Padding,
    max: bool,
) -> (Vec<f64>, [usize; 4]) {
    let [n, h, w, c] = xs;
    let (oh, pt) = resolve(h, window.0, stride.0, padding);
    let (ow, pl) = resolve(w, window.1, stride.1, padding);
    let mut y = vec![0.0; n * oh * ow * c];
    for b in 0..n {
        for oy in 0..oh {
            for ox in 0..ow {
                for ch in 0..c {
                    let mut best = f64::NEG_INFINITY;
                    let mut sum = 0.0;
                    let mut count = 0.0;
                    for ky in 0..window.0 {
                        for kx in 0..window.1 {
                            let iy = (oy * stride.0 + ky) as isize - pt as isize;
                            let ix = (ox * stride.1 + kx) as isize - pl as isize;
                            if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                continue;
                            }
                            let v = x[((b * h + iy as usize) * w + ix as usize) * c + ch];
                            best = best.max(v);
                            sum += v;
                            count += 1.0;
                        }
                    }
                    y[((b * oh + oy) * ow + ox) * c + ch] = if max { best } else { sum / count };
                }
            }
        }
    }
    (y, [n, oh, ow, c])
}

/// Gradients of [`conv2d_ref`] (without the ReLU) given dL/dy (N,OH,OW,Cout), from
/// y[n,oy,ox,co] = b[co] + sum x[n,iy,ix,ci] w[ky,kx,ci,co] with iy = oy*s+ky-pt, ix = ox*s+kx-pl:
/// dx[n,iy,ix,ci] = sum dy[n,oy,ox,co] w[ky,kx,ci,co], dw[ky,kx,ci,co] = sum x[n,iy,ix,ci] dy[n,oy,ox,co],
/// db[co] = sum dy[n,oy,ox,co]. Returns (dx, dw, db).
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward_ref(
    x: &[f64],
    xs: [usize; 4],
    w: &[f64],
    ws: [usize; 4],
    dy: &[f64],
    stride: (usize, usize),
    padding: Padding,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let [n, h, wd, ci] = xs;
    let [kh, kw, _, co] = ws;
    let (oh, pt) = resolve(h, kh, stride.0, padding);
    let (ow, pl) = resolve(wd, kw, stride.1, padding);
    let (mut dx, mut dw, mut db) = (vec![0.0; x.len()], vec![0.0; w.len()], vec![0.0; co]);
    for b_ in 0..n {
        for oy in 0..oh {
            for ox in 0..ow {
                for o in 0..co {
                    let g = dy[((b_ * oh + oy) * ow + ox) * co + o];
                    db[o] += g;
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let iy = (oy * stride.0 + ky) as isize - pt as isize;
                            let ix = (ox * stride.1 + kx) as isize - pl as isize;
                            if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                continue;
                            }
                            for c in 0..ci {
                                let xi = ((b_ * h + iy as usize) * wd + ix as usize) * ci + c;
                                let wi = ((ky * kw + kx) * ci + c) * co + o;
                                dx[xi] += g * w[wi];
                                dw[wi] += g * x[xi];
                            }
                        }
                    }
                }
            }
        }
    }
    (dx, dw, db)
}

/// Gradients of [`dense_ref`] given dL/dy (rows,out): dx = dy w^T, dw = x^T dy, db = sum over
/// rows of dy. Returns (dx, dw, db).
pub fn dense_backward_ref(
    x: &[f64],
    rows: usize,
    inp: usize,
    w: &[f64],
    out: usize,
    dy: &[f64],
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (mut dx, mut dw, mut db) = (vec![0.0; rows * inp], vec![0.0; inp * out], vec![0.0; out]);
    for r in 0..rows {
        for o in 0..out {
            let g = dy[r * out + o];
            db[o] += g;
            for i in 0..inp {
                dx[r * inp + i] += g * w[i * out + o];
                dw[i * out + o] += g * x[r * inp + i];
            }
        }
    }
    (dx, dw, db)
}

/// Gradient of max pooling given dL/dy: each window's dy goes to the first input that holds the
/// window's maximum (summed where windows overlap); of average pooling: spread evenly over the
/// window's in-image taps.
pub fn pool_backward_ref(
    x: &[f64],
    xs: [usize; 4],
    dy: &[f64],
    window: (usize, usize),
    stride: (usize, usize),
    padding: Padding,
    max: bool,
) -> Vec<f64> {
    let [n, h, w, c] = xs;
    let (oh, pt) = resolve(h, window.0, stride.0, padding);
    let (ow, pl) = resolve(w, window.1, stride.1, padding);
    let mut dx = vec![0.0; x.len()];
    for b in 0..n {
        for oy in 0..oh {
            for ox in 0..ow {
                for ch in 0..c {
                    let taps: Vec<usize> = (0..window.0)
                        .flat_map(|ky| (0..window.1).map(move |kx| (ky, kx)))
                        .filter_map(|(ky, kx)| {
                            let iy = (oy * stride.0 + ky) as isize - pt as isize;
                            let ix = (ox * stride.1 + kx) as isize - pl as isize;
                            (iy >= 0 && ix >= 0 && iy < h as isize && ix < w as isize)
                                .then(|| ((b * h + iy as usize) * w + ix as usize) * c + ch)
                        })
                        .collect();
                    let g = dy[((b * oh + oy) * ow + ox) * c + ch];
                    if max {
                        let best =
                            taps.iter()
                                .copied()
                                .fold(taps[0], |a, t| if x[t] > x[a] { t } else { a });
                        dx[best] += g;
                    } else {
                        for &t in &taps {
                            dx[t] += g / taps.len() as f64;
                        }
                    }
                }
            }
        }
    }
    dx
}

/// |B^T|, |G| and |A^T| of F(m x m, 3x3), as (rows, columns, values): the magnitudes the
/// error bound below is built from (Lavin & Gray's matrices for m = 2 and 4, and for m = 6
/// those of the points 0, 1, -1, 2, -2, 1/2, -1/2 and infinity; the shader's term-by-term
/// transforms are checked by their values against the direct convolution, not by these).
fn winograd_abs_matrices(m: usize) -> ([Vec<f64>; 3], usize) {
    if m == 2 {
        (
            [
                vec![
                    1., 0., 1., 0., //
                    0., 1., 1., 0., //
                    0., 1., 1., 0., //
                    0., 1., 0., 1.,
                ],
                vec![1., 0., 0., 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0., 0., 1.],
                vec![1., 1., 1., 0., 0., 1., 1., 1.],
            ],
            4,
        )
    } else if m == 4 {
        let (a, b, c) = (1. / 24., 1. / 12., 1. / 6.);
        (
            [
                vec![
                    4., 0., 5., 0., 1., 0., //
                    0., 4., 4., 1., 1., 0., //
                    0., 4., 4., 1., 1., 0., //
                    0., 2., 1., 2., 1., 0., //
                    0., 2., 1., 2., 1., 0., //
                    0., 4., 0., 5., 0., 1.,
                ],
                vec![0.25, 0., 0., c, c, c, c, c, c, a, b, c, a, b, c, 0., 0., 1.],
                vec![
                    1., 1., 1., 1., 1., 0., //
                    0., 1., 1., 2., 2., 0., //
                    0., 1., 1., 4., 4., 0., //
                    0., 1., 1., 8., 8., 1.,
                ],
            ],
            6,
        )
    } else {
        // Points 0, 1, -1, 2, -2, 1/2, -1/2 and infinity (the shader's F(6x6) comment).
        let (p, q) = (2. / 9., 1. / 90.);
        let (r, t, v) = (32. / 45., 16. / 45., 8. / 45.);
        (
            [
                vec![
                    1., 0., 5.25, 0., 5.25, 0., 1., 0., //
                    0., 1., 1., 4.25, 4.25, 1., 1., 0., //
                    0., 1., 1., 4.25, 4.25, 1., 1., 0., //
                    0., 0.5, 0.25, 2.5, 1.25, 2., 1., 0., //
                    0., 0.5, 0.25, 2.5, 1.25, 2., 1., 0., //
                    0., 2., 4., 2.5, 5., 0.5, 1., 0., //
                    0., 2., 4., 2.5, 5., 0.5, 1., 0., //
                    0., 1., 0., 5.25, 0., 5.25, 0., 1.,
                ],
                [
                    [1., 0., 0.],
                    [p, p, p],
                    [p, p, p],
                    [q, 2. * q, 4. * q],
                    [q, 2. * q, 4. * q],
                    [r, t, v],
                    [r, t, v],
                    [0., 0., 1.],
                ]
                .concat(),
                vec![
                    1., 1., 1., 1., 1., 1., 1., 0., //
                    0., 1., 1., 2., 2., 0.5, 0.5, 0., //
                    0., 1., 1., 4., 4., 0.25, 0.25, 0., //
                    0., 1., 1., 8., 8., 0.125, 0.125, 0., //
                    0., 1., 1., 16., 16., 0.0625, 0.0625, 0., //
                    0., 1., 1., 32., 32., 0.03125, 0.03125, 1.,
                ],
            ],
            8,
        )
    }
}

/// A componentwise bound on the rounding error of each output of a Winograd convolution of x
/// (N,H,W,C) with w (3,3,C,K) HWIO, `pad` zeros above and left, (OH,OW) outputs, tile side m:
///   |err| <= 2 u (C + 4 alpha + 8) |A^T| [ sum_c (|G| |g_c| |G^T|) .* (|B^T| |d_c| |B|) ] |A|
/// (u = 2^-24): every value passes through at most alpha + 1 additions in each of the input,
/// kernel and output transforms' two passes and C in the product's sum, each rounding once,
/// and the magnitudes are what those sums add up to with every sign made positive. The
/// direct convolution's bound is the same with only its 9C terms: F(4x4) is much looser.
pub fn winograd_error_bound(
    x: &[f64],
    xs: [usize; 4],
    w: &[f64],
    k: usize,
    pad: (usize, usize),
    (oh, ow): (usize, usize),
    m: usize,
) -> Vec<f64> {
    let ([bt, g, at], al) = winograd_abs_matrices(m);
    let [n, h, wd, c] = xs;
    let gamma = 2.0 * f64::from(f32::EPSILON) / 2.0 * (c + 4 * al + 8) as f64;
    // |U| (alpha, alpha, C, K) = |G| |g| |G^T|.
    let mut u = vec![0.0; al * al * c * k];
    for ci in 0..c {
        for ko in 0..k {
            for xi in 0..al {
                for nu in 0..al {
                    let mut s = 0.0;
                    for a in 0..3 {
                        for b in 0..3 {
                            s += g[xi * 3 + a]
                                * w[((a * 3 + b) * c + ci) * k + ko].abs()
                                * g[nu * 3 + b];
                        }
                    }
                    u[((xi * al + nu) * c + ci) * k + ko] = s;
                }
            }
        }
    }
    let mut out = vec![0.0; n * oh * ow * k];
    for img in 0..n {
        for ty in 0..oh.div_ceil(m) {
            for tx in 0..ow.div_ceil(m) {
                // |M| (alpha, alpha, K) = sum_c |U| .* |V|, |V| = |B^T| |d| |B|.
                let mut mm = vec![0.0; al * al * k];
                for ci in 0..c {
                    let d = |r: usize, s: usize| {
                        let y = (ty * m + r) as isize - pad.0 as isize;
                        let xx = (tx * m + s) as isize - pad.1 as isize;
                        if y < 0 || xx < 0 || y >= h as isize || xx >= wd as isize {
                            0.0
                        } else {
                            x[((img * h + y as usize) * wd + xx as usize) * c + ci].abs()
                        }
                    };
                    for xi in 0..al {
                        for nu in 0..al {
                            let mut v = 0.0;
                            for r in 0..al {
                                for s in 0..al {
                                    v += bt[xi * al + r] * d(r, s) * bt[nu * al + s];
                                }
                            }
                            for ko in 0..k {
                                mm[(xi * al + nu) * k + ko] +=
                                    u[((xi * al + nu) * c + ci) * k + ko] * v;
                            }
                        }
                    }
                }
                for r in 0..m {
                    for s in 0..m {
                        let (oy, ox) = (ty * m + r, tx * m + s);
                        if oy >= oh || ox >= ow {
                            continue;
                        }
                        for ko in 0..k {
                            let mut e = 0.0;
                            for xi in 0..al {
                                for nu in 0..al {
                                    e += at[r * al + xi]
                                        * mm[(xi * al + nu) * k + ko]
                                        * at[s * al + nu];
                                }
                            }
                            out[((img * oh + oy) * ow + ox) * k + ko] = gamma * e;
                        }
                    }
                }
            }
        }
    }
    out
}

/// The input gradient's kernel: w (3,3,C,K) rotated 180 degrees with its channels swapped,
/// (3,3,K,C), so that dx is the convolution of dy with it.
pub fn flipped_kernel(w: &[f64], c: usize, k: usize) -> Vec<f64> {
    let mut f = vec![0.0; w.len()];
    for a in 0..3 {
        for b in 0..3 {
            for ci in 0..c {
                for ko in 0..k {
                    f[(((2 - a) * 3 + 2 - b) * k + ko) * c + ci] =
                        w[((a * 3 + b) * c + ci) * k + ko];
                }
            }
        }
    }
    f
}
