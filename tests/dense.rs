//! Dense / matmul against the CPU product, backward against finite differences.

mod common;

use cnn_wgpu::ops::dense;
use common::*;

#[test]
fn dense_forward_matches_cpu_reference() {
    gpu_or_skip!();
    for (family, gpu) in kernel_families() {
        // (rows, in, out): batch 1, sizes off the 64x64x16 tile, a K that needs many slices; the
        // last three have IN and OUT multiples of 4, which the subgroup kernels take.
        for (i, (rows, inp, out, bias, relu)) in [
            (1usize, 1usize, 1usize, true, false),
            (1, 37, 5, true, true),
            (20, 300, 1, true, false),
            (65, 17, 129, false, false),
            (3, 1000, 70, true, true),
            (1, 4, 4, true, false),
            (70, 36, 132, true, true),
            (33, 1028, 68, false, false),
        ]
        .into_iter()
        .enumerate()
        {
            let x = rand_vec(rows * inp, i as u64);
            let w = rand_vec(inp * out, 100 + i as u64);
            let b = rand_vec(out, 200 + i as u64);
            let bt = upload(gpu, &[out], &b);
            let y = dense::dense_forward(
                gpu,
                &upload(gpu, &[rows, inp], &x),
                &upload(gpu, &[inp, out], &w),
                bias.then_some(&bt),
                relu,
            )
            .unwrap();
            let want = dense_ref(
                &to_f64(&x),
                rows,
                inp,
                &to_f64(&w),
                out,
                bias.then_some(&to_f64(&b)[..]),
                relu,
            );
            // K up to 1000 terms in [-1,1]: f32 sums drift ~ sqrt(K) * 6e-8 * K.
            assert_close(
                &format!("{family}: dense case {i}"),
                &read(gpu, &y),
                &want,
                1e-4,
                1e-4 * (inp as f64).sqrt(),
            );
        }
    }
}

#[test]
fn dense_backward_matches_finite_differences() {
    gpu_or_skip!();
    for (family, gpu) in kernel_families() {
        for (i, (rows, inp, out)) in [
            (1usize, 3usize, 2usize),
            (5, 7, 3),
            (3, 4, 67),
            (1, 4, 8),
            (7, 12, 68),
        ]
        .into_iter()
        .enumerate()
        {
            let x = to_f64(&rand_vec(rows * inp, 10 + i as u64));
            let w = to_f64(&rand_vec(inp * out, 20 + i as u64));
            let b = to_f64(&rand_vec(out, 30 + i as u64));
            let r = to_f64(&rand_vec(rows * out, 40 + i as u64));
            // L = sum(y * r): dL/dx = r w^T, dL/dw = x^T r, dL/db = column sums of r.
            let loss = |x: &[f64], w: &[f64], b: &[f64]| {
                dot(&dense_ref(x, rows, inp, w, out, Some(b), false), &r)
            };
            let nx = numeric_grad(&x, 1e-3, |v| loss(v, &w, &b));
            let nw = numeric_grad(&w, 1e-3, |v| loss(&x, v, &b));
            let nb = numeric_grad(&b, 1e-3, |v| loss(&x, &w, v));
            let f = |v: &[f64]| v.iter().map(|&a| a as f32).collect::<Vec<_>>();
            let g = dense::dense_backward(
                gpu,
                &upload(gpu, &[rows, inp], &f(&x)),
                &upload(gpu, &[inp, out], &f(&w)),
                &upload(gpu, &[rows, out], &f(&r)),
                true,
            )
            .unwrap();
            // dL/dx = r w^T, dL/dw = x^T r, dL/db = column sums of r, against finite differences.
            let what = |t: &str| format!("{family}: case {i} dense {t}");
            assert_close(
                &what("dx"),
                &read(gpu, g.dx.as_ref().unwrap()),
                &nx,
                1e-3,
                1e-4,
            );
            assert_close(&what("dw"), &read(gpu, &g.dw), &nw, 1e-3, 1e-4);
            assert_close(&what("db"), &read(gpu, &g.db), &nb, 1e-3, 1e-4);
        }
    }
}

#[test]
fn dense_backward_matches_cpu_products_on_large_shapes() {
    gpu_or_skip!();
    for (family, gpu) in kernel_families() {
        let (rows, inp, out) = (20, 8192 / 4, 256);
        let x = rand_vec(rows * inp, 1);
        let w = rand_vec(inp * out, 2);
        let dy = rand_vec(rows * out, 3);
        let g = dense::dense_backward(
            gpu,
            &upload(gpu, &[rows, inp], &x),
            &upload(gpu, &[inp, out], &w),
            &upload(gpu, &[rows, out], &dy),
            true,
        )
        .unwrap();
        let (x, w, dy) = (to_f64(&x), to_f64(&w), to_f64(&dy));
        let mut dx = vec![0.0; rows * inp];
        let mut dw = vec![0.0; inp * out];
        for r in 0..rows {
            for i in 0..inp {
                for o in 0..out {
                    dx[r * inp + i] += dy[r * out + o] * w[i * out + o];
                    dw[i * out + o] += x[r * inp + i] * dy[r * out + o];
                }
            }
        }
        assert_close(
            &format!("{family}: dx"),
            &read(gpu, g.dx.as_ref().unwrap()),
            &dx,
            1e-4,
            1e-4 * (out as f64).sqrt(),
        );
        assert_close(
            &format!("{family}: dw"),
            &read(gpu, &g.dw),
            &dw,
            1e-4,
            1e-4 * (rows as f64).sqrt(),
        );
    }
}

#[test]
fn dense_rejects_mismatched_kernel() {
    let gpu = gpu_or_skip!();
    let x = upload(gpu, &[2, 3], &rand_vec(6, 1));
    let w = upload(gpu, &[4, 5], &rand_vec(20, 2));
    let err = dense::dense_forward(gpu, &x, &w, None, false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("dense_forward") && err.contains("(4,5)") && err.contains("(2,3)"),
        "{err}"
    );
}
