//! The host side of the host-shader contract, written down once. Each entry point's bindings
//! (in binding order, as the op binds them) and its workgroup size (as the op's grid assumes
//! it) are listed in [`ENTRY_POINTS`]; the uniform `Params` blocks the ops write are declared
//! with [`shader_params!`](crate::shader_params), which records each field's name and offset.
//!
//! Two checks keep the two sides together. `tests/contract.rs` reads every shader module with
//! naga (no GPU) and compares it with this table and with every `Params` layout. The pipeline
//! cache checks each dispatch's bindings against the table when it builds the pipeline
//! ([`check_bindings`]), so the table cannot drift from what the ops really bind either.

use super::{Access, Kernel, ShaderId};

/// An entry point's workgroup size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workgroup {
    /// A literal `@workgroup_size(x, y, z)`.
    Fixed([u32; 3]),
    /// Sized by override constants the op passes with the kernel (the subgroup GEMM: 8 lanes
    /// times `SG_PER_WG`); the op sizes its grid from the same constants.
    Overridden,
}

/// What the host binds to one entry point and the workgroup size it assumes.
#[derive(Debug)]
pub struct EntryPoint {
    pub shader: ShaderId,
    pub entry: &'static str,
    /// The binding lists the host may bind, each in binding order from 0 (every entry point has
    /// one today; a list of lists leaves room for an op that binds an entry two ways).
    pub bindings: &'static [&'static [Access]],
    pub workgroup: Workgroup,
}

/// The layout of a uniform block as the host writes it: (field name, byte offset) in order, and
/// the size in bytes. Made by [`shader_params!`](crate::shader_params).
pub trait ShaderParams: bytemuck::Pod {
    const FIELDS: &'static [(&'static str, usize)];
}

/// A host `Params` type and the shader modules that read it as their uniform block.
#[derive(Debug)]
pub struct ParamsLayout {
    pub rust_type: &'static str,
    pub shaders: &'static [ShaderId],
    pub fields: &'static [(&'static str, usize)],
    pub size: usize,
}

impl ParamsLayout {
    pub fn of<P: ShaderParams>(rust_type: &'static str, shaders: &'static [ShaderId]) -> Self {
        Self {
            rust_type,
            shaders,
            fields: P::FIELDS,
            size: std::mem::size_of::<P>(),
        }
    }
}

/// Declares a `#[repr(C)]` uniform block (Pod, Zeroable) and records its fields' names and
/// offsets for the contract test: `shader_params! { pub(crate) struct Params { n: u32, .. } }`.
#[macro_export]
macro_rules! shader_params {
    ($(#[$m:meta])* $vis:vis struct $name:ident { $($field:ident : $ty:ty),* $(,)? }) => {
        $(#[$m])*
        #[repr(C)]
        #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
        $vis struct $name { $($field: $ty),* }

        impl $crate::gpu::contract::ShaderParams for $name {
            const FIELDS: &'static [(&'static str, usize)] =
                &[$((stringify!($field), std::mem::offset_of!($name, $field))),*];
        }
    };
}

use Access::{Read as R, Texture as T, Uniform as U, Unused as X, Write as W};
use ShaderId::*;

const fn fixed(
    shader: ShaderId,
    entry: &'static str,
    bindings: &'static [&'static [Access]],
    size: [u32; 3],
) -> EntryPoint {
    EntryPoint {
        shader,
        entry,
        bindings,
        workgroup: Workgroup::Fixed(size),
    }
}

const fn overridden(
    shader: ShaderId,
    entry: &'static str,
    bindings: &'static [&'static [Access]],
) -> EntryPoint {
    EntryPoint {
        shader,
        entry,
        bindings,
        workgroup: Workgroup::Overridden,
    }
}

/// The GEMM modules: uniform, A, B, bias (or a second operand), C, and at 5 the operand
/// texture, bound only where B is in one (`ops::pack::b_args`; the workgroup-memory modules
/// never read one).
const GEMM: &[&[Access]] = &[&[U, R, R, R, W, X]];
const GEMM_SG_BUFFER: &[&[Access]] = &[&[U, R, R, R, W, X]];
const GEMM_SG_TEXTURE: &[&[Access]] = &[&[U, R, R, R, W, T]];
const GEMM_TILED: &[&[Access]] = &[&[U, R, R, R, W, X]];
const ELEMENTWISE: &[&[Access]] = &[&[U, R, R, W]];
const POOL_MAX: &[&[Access]] = &[&[U, R, W, W]];
const POOL_AVG: &[&[Access]] = &[&[U, R, W]];

/// Every entry point the host dispatches.
pub const ENTRY_POINTS: &[EntryPoint] = &[
    fixed(Conv2d, "gemm", GEMM, [16, 16, 1]),
    overridden(Conv2dSg, "gemm_sg", GEMM_SG_BUFFER),
    overridden(Conv2dSg, "gemm_sg_m", GEMM_SG_BUFFER),
    overridden(Conv2dSgTexture, "gemm_sg", GEMM_SG_TEXTURE),
    overridden(Conv2dSgTexture, "gemm_sg_m", GEMM_SG_TEXTURE),
    overridden(Conv2dTiled, "gemm_tiled", GEMM_TILED),
    overridden(Conv2dTiled, "gemm_tiled_m", GEMM_TILED),
    fixed(Matmul, "gemm", GEMM, [16, 16, 1]),
    overridden(MatmulSg, "gemm_sg", GEMM_SG_BUFFER),
    overridden(MatmulSg, "gemm_sg_m", GEMM_SG_BUFFER),
    overridden(MatmulSgTexture, "gemm_sg", GEMM_SG_TEXTURE),
    overridden(MatmulSgTexture, "gemm_sg_m", GEMM_SG_TEXTURE),
    overridden(MatmulTiled, "gemm_tiled", GEMM_TILED),
    overridden(MatmulTiled, "gemm_tiled_m", GEMM_TILED),
    fixed(Pack, "pack_b", &[&[U, R, W]], [64, 1, 1]),
    fixed(Pack, "pack_b4", &[&[U, X, W, R]], [64, 1, 1]),
    fixed(Winograd, "kernel_transform", &[&[U, R, X, W]], [64, 1, 1]),
    fixed(Winograd, "input_transform", &[&[U, R, X, W]], [64, 1, 1]),
    fixed(Winograd, "output_transform", &[&[U, R, R, W]], [64, 1, 1]),
    fixed(
        Winograd,
        "kernel_transform4",
        &[&[U, R, X, X, R, X, W]],
        [64, 1, 1],
    ),
    fixed(
        Winograd,
        "input_transform4",
        &[&[U, X, X, X, R, X, W]],
        [64, 1, 1],
    ),
    fixed(
        Winograd,
        "output_transform4",
        &[&[U, X, X, X, R, R, W]],
        [64, 1, 1],
    ),
    fixed(Pool, "max_forward", POOL_MAX, [256, 1, 1]),
    fixed(Pool, "max_backward", POOL_MAX, [256, 1, 1]),
    fixed(Pool, "max_forward_4", POOL_MAX, [256, 1, 1]),
    fixed(Pool, "max_backward_4", POOL_MAX, [256, 1, 1]),
    fixed(Pool, "avg_forward", POOL_AVG, [256, 1, 1]),
    fixed(Pool, "avg_backward", POOL_AVG, [256, 1, 1]),
    fixed(Activation, "relu_forward", ELEMENTWISE, [256, 1, 1]),
    fixed(Activation, "relu_backward", ELEMENTWISE, [256, 1, 1]),
    fixed(Activation, "relu_forward_4", ELEMENTWISE, [256, 1, 1]),
    fixed(Activation, "relu_backward_4", ELEMENTWISE, [256, 1, 1]),
    fixed(Activation, "sigmoid_forward", ELEMENTWISE, [256, 1, 1]),
    fixed(Activation, "sigmoid_backward", ELEMENTWISE, [256, 1, 1]),
    fixed(Activation, "softmax_forward", ELEMENTWISE, [64, 1, 1]),
    fixed(Activation, "softmax_backward", ELEMENTWISE, [64, 1, 1]),
    fixed(Dropout, "apply", &[&[U, R, W]], [256, 1, 1]),
    fixed(Loss, "bce_logits", &[&[U, R, R, W, W]], [64, 1, 1]),
    fixed(Loss, "cce_logits", &[&[U, R, R, W, W]], [64, 1, 1]),
    fixed(Loss, "accuracy_binary", &[&[U, R, R, W]], [64, 1, 1]),
    fixed(Loss, "accuracy_categorical", &[&[U, R, R, W]], [64, 1, 1]),
    fixed(Reduce, "sum_rows", &[&[U, R, W]], [64, 4, 1]),
    fixed(Optim, "sgd", &[&[U, R, W, W]], [256, 1, 1]),
    fixed(Optim, "rmsprop", &[&[U, R, W, W]], [256, 1, 1]),
    fixed(Optim, "adam", &[&[U, R, W, W, W]], [256, 1, 1]),
    fixed(Optim, "penalty", &[&[U, X, W, W]], [256, 1, 1]),
    fixed(Peak, "fma_peak", &[&[U, W]], [256, 1, 1]),
    overridden(SubgroupProbe, "probe", &[&[W]]),
];

/// The table's row for `shader`'s `entry`.
pub fn entry_point(shader: ShaderId, entry: &str) -> Option<&'static EntryPoint> {
    ENTRY_POINTS
        .iter()
        .find(|e| e.shader == shader && e.entry == entry)
}

impl Kernel<'_> {
    /// The workgroup's x size the contract gives this entry point, for 1-D grids.
    ///
    /// Panics where the entry point is not in [`ENTRY_POINTS`] or is sized by overrides: a
    /// programming error that any test dispatching the kernel shows.
    pub fn workgroup_x(&self) -> usize {
        match entry_point(self.shader, self.entry).map(|e| e.workgroup) {
            Some(Workgroup::Fixed([x, _, _])) => x as usize,
            other => panic!(
                "host-shader contract: {:?}::{} has no fixed workgroup size in gpu::contract::ENTRY_POINTS ({other:?})",
                self.shader, self.entry
            ),
        }
    }
}

/// Panics unless `access` is one of the binding lists the contract gives `kernel`'s entry point:
/// called once per pipeline, when the cache builds it.
pub(crate) fn check_bindings(kernel: &Kernel<'_>, access: &[Access]) {
    let Some(e) = entry_point(kernel.shader, kernel.entry) else {
        panic!(
            "host-shader contract: {:?}::{} is dispatched but not listed in gpu::contract::ENTRY_POINTS",
            kernel.shader, kernel.entry
        );
    };
    assert!(
        e.bindings.contains(&access),
        "host-shader contract: {:?}::{} was bound {access:?}, but gpu::contract::ENTRY_POINTS allows {:?}",
        kernel.shader,
        kernel.entry,
        e.bindings
    );
}
