//! Dense layers and plain matmul (shaders/matmul.wgsl): x (N,IN), kernel (IN,OUT) as Keras
//! stores it, bias (OUT), y (N,OUT); both backward products and the bias gradient.

use super::gemm::{ARead, GemmPlan, GemmShaders, Product};
use super::pack::{b_args, Layout};
use super::{check_binding, reduce, shape_err, Result};
use crate::gpu::{Arg, Gpu, ShaderId};
use crate::tensor::Tensor;

crate::shader_params! {
    pub(crate) struct Params {
        rows: u32,
        inp: u32,
        out: u32,
        a_base: u32,
        b_row: u32,
        b_rows: u32,
        c_base: u32,
        products: u32,
    }
}

impl Params {
    /// One product over the whole of its operands; `run` fills in B's depth.
    pub(crate) fn new(rows: usize, inp: usize, out: usize) -> Self {
        Self {
            rows: rows as u32,
            inp: inp as u32,
            out: out as u32,
            a_base: 0,
            b_row: 0,
            b_rows: 0,
            c_base: 0,
            products: 1,
        }
    }
}

fn dims(op: &'static str, x: &Tensor, w: &Tensor) -> Result<(usize, usize, usize)> {
    let &[rows, inp] = x.dims() else {
        return Err(shape_err(op, "input", "(N,IN)", x.shape()));
    };
    let &[win, out] = w.dims() else {
        return Err(shape_err(op, "kernel", "(IN,OUT)", w.shape()));
    };
    if win != inp {
        return Err(shape_err(
            op,
            "kernel",
            format!("({inp},OUT) for input {}", x.shape()),
            w.shape(),
        ));
    }
    Ok((rows, inp, out))
}

/// dense's modules on the two GEMM families.
pub(crate) const SHADERS: GemmShaders = GemmShaders {
    core: ShaderId::Matmul,
    sg_buffer: ShaderId::MatmulSg,
    sg_texture: ShaderId::MatmulSgTexture,
    tiled: ShaderId::MatmulTiled,
};

/// One product of matmul.wgsl / matmul_sg.wgsl: `mode` as there (0 forward, 1 input gradient,
/// 2 kernel gradient), `epilogue` the forward's HAS_BIAS / RELU constants.
#[allow(clippy::too_many_arguments)]
fn run(
    gpu: &Gpu,
    op: &'static str,
    mode: u32,
    epilogue: &[(&'static str, f64)],
    p: Params,
    a: &Tensor,
    b: &Tensor,
    bias: &Tensor,
    c: &Tensor,
    m: usize,
    n: usize,
) -> Result<()> {
    for (t, name) in [(a, "a"), (b, "b"), (c, "output")] {
        check_binding(gpu, op, name, t.byte_len())?;
    }
    let consts = [&[("MODE", f64::from(mode))], epilogue].concat();
    let (inp, out, rows) = (p.inp as usize, p.out as usize, p.rows as usize);
    // B is w (IN,OUT), w read as (OUT,IN), or dy (ROWS,OUT).
    let (k, layout) = match mode {
        0 => (inp, Layout::RowMajor),
        1 => (out, Layout::TapTransposed { r: out }),
        _ => (rows, Layout::RowMajor),
    };
    let product = dense_product(
        mode,
        m,
        k,
        n,
        inp.is_multiple_of(4) && out.is_multiple_of(4),
    );
    let mut p = p;
    p.b_rows = k as u32;
    // B is the layer's kernel in the forward and the input gradient: a frozen one keeps its
    // packed texture between calls (pack::pack_kernel). dy changes every call.
    let dispatch = |plan: &GemmPlan| -> Result<()> {
        let mut plan = *plan;
        let packed = if mode == 2 {
            plan.pack_operand(gpu, b.all(), 0, layout)?
        } else {
            plan.pack_kernel(gpu, b, layout)?
        };
        let mut consts = consts.clone();
        let kernel = plan.kernel(&mut consts);
        let [b_buf, b_tex] = b_args(packed.as_ref(), b.all());
        gpu.dispatch(
            &kernel,
            &[
                Arg::Uniform(bytemuck::bytes_of(&p)),
                Arg::Read(a.all()),
                b_buf,
                Arg::Read(bias.all()),
                Arg::Write(c.all()),
                b_tex,
            ],
            plan.grid(gpu, m, n),
        );
        Ok(())
    };
    // Every mode overwrites c, so a candidate may run more than once.
    let plan = GemmPlan::new(gpu, SHADERS, &product).tune(gpu, &product, true, dispatch)?;
    dispatch(&plan)
}

/// The GEMM kernel `matmul` of an (M,K) by a (K,N) matrix runs on this device now, as `bench`
/// reports it (see `GemmPlan::describe`). Measures nothing.
pub fn matmul_gemm(gpu: &Gpu, m: usize, k: usize, n: usize) -> String {
    let vec4 = k.is_multiple_of(4) && n.is_multiple_of(4);
    GemmPlan::new(gpu, SHADERS, &dense_product(0, m, k, n, vec4)).describe()
}

/// Product `mode` of matmul.wgsl (0 forward, 1 input gradient, 2 kernel gradient) as the
/// planner sees it: C (M,N) = A (M,K) B (K,N), `vec4` where IN and OUT are multiples of 4.
fn dense_product(mode: u32, m: usize, k: usize, n: usize, vec4: bool) -> Product {
    Product {
        m,
        k,
        n,
        a: if mode == 2 {
            ARead::AlongM
        } else {
            ARead::Plain
        },
        vec4,
        b_transposed: mode == 1,
        batch: 1,
    }
}

/// The product [`batched_products`] plans.
pub(crate) fn batched_product(batch: usize, m: usize, k: usize, n: usize) -> Product {
    Product {
        m,
        k,
        n,
        a: ARead::Plain,
        vec4: k.is_multiple_of(4) && n.is_multiple_of(4),
        b_transposed: false,
        batch,
    }
}

/// The `batch` products C_t (M,N) = A_t (M,K) B_t (K,N), t < batch, of Winograd's
/// convolution: A (batch,M,K) and C (batch,M,N) are whole tensors, B (batch*K,N) is made from
/// the layer's kernel `w` by `derive` and kept with `w` while `w` is unchanged (`tag` names the
/// derivation). One plan and one dispatch for all of them, the product in workgroup z: one
/// dispatch per product left each one's few workgroups (block5 at batch 8: 16) to finish
/// before the next could start.
#[allow(clippy::too_many_arguments)]
pub(crate) fn batched_products(
    gpu: &Gpu,
    op: &'static str,
    a: &Tensor,
    c: &Tensor,
    (batch, m, k, n): (usize, usize, usize, usize),
    w: &Tensor,
    tag: u64,
    derive: &dyn Fn() -> Result<Tensor>,
) -> Result<()> {
    check_binding(gpu, op, "transformed input", a.byte_len())?;
    check_binding(gpu, op, "transformed output", c.byte_len())?;
    check_binding(gpu, op, "transformed kernel", (batch * k * n * 4) as u64)?;
    let product = batched_product(batch, m, k, n);
    let mut p = Params::new(m, k, n);
    p.b_rows = (batch * k) as u32;
    p.products = batch as u32;
    let dispatch = |plan: &GemmPlan| -> Result<()> {
        let mut plan = *plan;
        let (packed, derived) = plan.pack_derived_kernel(gpu, w, tag, derive)?;
        let mut consts = vec![("MODE", 0.0), ("HAS_BIAS", 0.0), ("RELU", 0.0)];
        let kernel = plan.kernel(&mut consts);
        // The plain B where it is read as it is; otherwise the texture is read and this
        // binding, which the module still declares, stays unread.
        let plain = derived.as_ref().unwrap_or(w);
        let [b_buf, b_tex] = b_args(packed.as_ref(), plain.all());
        let mut grid = plan.grid(gpu, m, n);
        grid[2] *= batch as u32;
        gpu.dispatch(
            &kernel,
            &[
                Arg::Uniform(bytemuck::bytes_of(&p)),
                Arg::Read(a.all()),
                b_buf,
                // The bias binding, unread without HAS_BIAS.
                Arg::Read(a.all()),
                Arg::Write(c.all()),
                b_tex,
            ],
            grid,
        );
        Ok(())
    };
    // c is overwritten, so a candidate may run more than once.
    let plan = GemmPlan::new(gpu, SHADERS, &product).tune(gpu, &product, true, dispatch)?;
    dispatch(&plan)
}

/// y = x w (+ b), then ReLU if `relu`.
pub fn dense_forward(
    gpu: &Gpu,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    relu: bool,
) -> Result<Tensor> {
    const OP: &str = "dense_forward";
    let (rows, inp, out) = dims(OP, x, w)?;
    if let Some(b) = b {
        if b.dims() != [out] {
            return Err(shape_err(OP, "bias", format!("({out})"), b.shape()));
        }
    }
    let y = Tensor::uninit(gpu, [rows, out])?;
    let epilogue = [
        ("HAS_BIAS", f64::from(u32::from(b.is_some()))),
        ("RELU", f64::from(u32::from(relu))),
    ];
    let p = Params::new(rows, inp, out);
    run(
        gpu,
        OP,
        0,
        &epilogue,
        p,
        x,
        w,
        b.unwrap_or(w),
        &y,
        rows,
        out,
    )?;
    Ok(y)
}

/// C (M,N) = A (M,K) B (K,N).
pub fn matmul(gpu: &Gpu, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    dense_forward(gpu, a, b, None, false)
}

/// Gradients of a dense layer.
pub struct DenseGrads {
    pub dx: Option<Tensor>,
    pub dw: Tensor,
    pub db: Tensor,
}

/// Backward of [`dense_forward`] from dL/dy (N,OUT) after the activation's backward:
/// dx = dy w^T (N,IN), dw = x^T dy (IN,OUT), db = sum over N of dy.
pub fn dense_backward(
    gpu: &Gpu,
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
    need_dx: bool,
) -> Result<DenseGrads> {
    const OP: &str = "dense_backward";
    let (rows, inp, out) = dims(OP, x, w)?;
    if dy.dims() != [rows, out] {
        return Err(shape_err(
            OP,
            "output gradient",
            format!("({rows},{out})"),
            dy.shape(),
        ));
    }
    let p = Params::new(rows, inp, out);
    let dx = if need_dx {
        let dx = Tensor::uninit(gpu, [rows, inp])?;
        run(gpu, OP, 1, &[], p, dy, w, w, &dx, rows, inp)?;
        Some(dx)
    } else {
        None
    };
    let dw = Tensor::uninit(gpu, [inp, out])?;
    run(gpu, OP, 2, &[], p, x, dy, w, &dw, inp, out)?;
    let db = reduce::sum_rows(gpu, dy)?;
    Ok(DenseGrads { dx, dw, db })
}
