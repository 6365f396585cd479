//! Column sums (shaders/reduce.wgsl): bias gradients and loss / accuracy totals.

use super::{batch_chunks, shape_err, Result};
use crate::gpu::{Arg, BufferRange, Gpu, Kernel, ShaderId};
use crate::tensor::Tensor;

crate::shader_params! {
    pub(crate) struct Params {
        rows: u32,
        cols: u32,
        rows_per_group: u32,
        src_base: u32,
    }
}

/// One pass: the (rows, cols) matrix at element `base` of `src` summed in `groups` row blocks
/// into `dst` (groups, cols), added to `dst` when `accumulate`.
fn pass(
    gpu: &Gpu,
    (src, base): (BufferRange<'_>, u32),
    (rows, cols): (usize, usize),
    groups: usize,
    dst: BufferRange<'_>,
    accumulate: bool,
) {
    let rows_per_group = rows.div_ceil(groups).max(1);
    let p = Params {
        rows: rows as u32,
        cols: cols as u32,
        rows_per_group: rows_per_group as u32,
        src_base: base,
    };
    let consts = [("ACCUM", f64::from(u32::from(accumulate)))];
    let kernel = Kernel::new(ShaderId::Reduce, "sum_rows", &consts);
    gpu.dispatch(
        &kernel,
        &[
            Arg::Uniform(bytemuck::bytes_of(&p)),
            Arg::Read(src),
            Arg::Write(dst),
        ],
        // One column per invocation along x; y takes the row groups.
        [cols.div_ceil(kernel.workgroup_x()) as u32, groups as u32, 1],
    );
}

/// Sums `x` (R,C) over its rows into (C). Two passes (row blocks, then the block partials), so
/// long columns spread over many workgroups and the summation order never changes.
pub fn sum_rows(gpu: &Gpu, x: &Tensor) -> Result<Tensor> {
    let &[_, cols] = x.dims() else {
        return Err(shape_err("sum_rows", "input", "(rows, cols)", x.shape()));
    };
    let out = Tensor::uninit(gpu, [cols])?;
    sum_rows_into(gpu, x, &out, false)?;
    Ok(out)
}

/// Sums `x` (R,C) over its rows into `out` (C), adding to its contents when `accumulate`.
pub fn sum_rows_into(gpu: &Gpu, x: &Tensor, out: &Tensor, accumulate: bool) -> Result<()> {
    let &[rows, cols] = x.dims() else {
        return Err(shape_err("sum_rows", "input", "(rows, cols)", x.shape()));
    };
    if out.dims() != [cols] {
        return Err(shape_err(
            "sum_rows",
            "output",
            format!("({cols})"),
            out.shape(),
        ));
    }
    if rows == 0 {
        if !accumulate {
            out.fill_zero(gpu);
        }
        return Ok(());
    }
    let chunks = batch_chunks(gpu, "sum_rows", rows, &[("input", cols as u64 * 4)])?;
    for (i, (r0, nr)) in chunks.into_iter().enumerate() {
        let acc = accumulate || i > 0;
        let src = x.window(gpu, r0 * cols, nr * cols);
        let groups = nr.div_ceil(1024).clamp(1, 256);
        if groups == 1 {
            pass(gpu, src, (nr, cols), 1, out.all(), acc);
        } else {
            let partial = Tensor::uninit(gpu, [groups, cols])?;
            pass(gpu, src, (nr, cols), groups, partial.all(), false);
            pass(gpu, (partial.all(), 0), (groups, cols), 1, out.all(), acc);
        }
    }
    Ok(())
}

/// Sum of all elements, as a one-element tensor.
pub fn sum_all(gpu: &Gpu, x: &Tensor) -> Result<Tensor> {
    sum_rows(gpu, &x.reshape([x.numel(), 1]))
}
