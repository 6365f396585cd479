//! Repacking of the subgroup GEMM's B operand (shaders/pack.wgsl) into contiguous column tiles
//! (ceil(N/T), K, T) of T = 64 (or 32) columns, zero-padded past N. The conv and dense modules
//! pack their kernels (and, for the kernel gradients, the output gradients) before running
//! `gemm_sg`, into an rgba32float texture where the adapter takes one ([`BSource`]), else
//! into a storage buffer.

use super::Result;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use crate::gpu::pool::{Derivation, Kept, TEXEL_BYTES};
use crate::gpu::{Arg, BufferRange, Gpu, Kernel, PooledTexture, ShaderId};
use crate::tensor::Tensor;

/// Where the subgroup GEMM reads B from; [`BSource::constants`] tells the shader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BSource {
    /// The op's own row-major tensor: one row tile reads B once, so packing would not pay.
    Plain,
    /// Packed into column tiles in a storage buffer.
    Packed,
    /// Packed into column tiles held as the texels of a texture `1 << shift` texels wide:
    /// vec4 t of the packed tensor at texel (t mod width, t / width).
    Texture { shift: u32 },
}

impl BSource {
    /// Plain unless `pack`; packed into a texture where [`Gpu::operand_texture_shift`] finds
    /// room for B (K,N) in `tile`-column tiles, else into a buffer.
    pub fn choose(gpu: &Gpu, pack: bool, (k, n): (usize, usize), tile: usize) -> Self {
        if !pack {
            return Self::Plain;
        }
        match gpu.operand_texture_shift(packed_vec4s(k, n, tile)) {
            Some(shift) => Self::Texture { shift },
            None => Self::Packed,
        }
    }

    /// The override constants saying so: PACKED_B, and TEX_SHIFT for a texture.
    pub fn constants(self) -> Vec<(&'static str, f64)> {
        match self {
            Self::Plain => vec![("PACKED_B", 0.0)],
            Self::Packed => vec![("PACKED_B", 1.0)],
            Self::Texture { shift } => vec![("PACKED_B", 1.0), ("TEX_SHIFT", f64::from(shift))],
        }
    }

    /// The op's subgroup module for this source: `buffer` (B bound as a storage buffer), or
    /// `texture`, its twin that reads packed B from an operand texture.
    pub fn shader(self, buffer: ShaderId, texture: ShaderId) -> ShaderId {
        match self {
            Self::Texture { .. } => texture,
            _ => buffer,
        }
    }
}

/// A packed B operand: a tensor (ceil(N/tile), K, tile) or the same vec4s in a texture (which
/// the kernel's tensor may also keep, see [`pack_kernel`]).
pub enum PackedB {
    Buffer(Tensor),
    Texture(Arc<PooledTexture>),
}

impl PackedB {
    /// The packed tensor's `len` values back on the host, in order (tests read both forms).
    pub fn to_vec(&self, gpu: &Gpu, len: usize) -> Result<Vec<f32>> {
        let mut v = match self {
            Self::Buffer(t) => t.to_vec(gpu)?,
            Self::Texture(t) => gpu.read_texture(t)?,
        };
        v.truncate(len);
        Ok(v)
    }
}

/// vec4s of B (K,N) packed into `tile`-column tiles.
fn packed_vec4s(k: usize, n: usize, tile: usize) -> usize {
    n.div_ceil(tile) * k * tile / 4
}

/// Bytes of the buffer a B (K,N) packed into `tile`-column tiles is written to, at most: the
/// packed tensor, and for a texture up to one more row of its widest texels. It is bound
/// whole, so packing is only for a B where this fits one binding.
pub(crate) fn packed_bytes((k, n): (usize, usize), tile: usize) -> u64 {
    (packed_vec4s(k, n, tile) as u64 + 4096) * TEXEL_BYTES
}

/// The two B bindings of a GEMM dispatch, (storage buffer, texture): the packed operand where
/// there is one, else `plain`; a texture binding only where B is in one (a module reading B
/// from a buffer declares none), with `plain` bound, unread, as the storage buffer.
pub fn b_args<'a>(packed: Option<&'a PackedB>, plain: BufferRange<'a>) -> [Arg<'a>; 2] {
    match packed {
        None => [Arg::Read(plain), Arg::Unused],
        Some(PackedB::Buffer(t)) => [Arg::Read(t.all()), Arg::Unused],
        Some(PackedB::Texture(t)) => [Arg::Read(plain), Arg::Texture(t.view())],
    }
}

crate::shader_params! {
    pub(crate) struct Params {
        k: u32,
        n: u32,
        r: u32,
        src_base: u32,
    }
}

/// How B (K,N) sits in the source buffer.
#[derive(Clone, Copy, Debug, Hash)]
pub enum Layout {
    /// Row-major (K,N): a conv kernel (KH*KW*CIN, COUT), a dense kernel, an output gradient.
    RowMajor,
    /// K = taps * r, and per tap an (N, r) row-major block read transposed: B[k, n] =
    /// src[((k / r) * N + n) * r + k % r]. A conv kernel as its input gradient reads it
    /// (r = COUT, N = CIN), or a dense kernel (IN,OUT) as (OUT,IN) (r = OUT, N = IN).
    TapTransposed { r: usize },
}

/// B (K,N) read from `src` starting at element `src_base`, packed as `source` says into
/// (ceil(N/tile), K, tile), `tile` being the GEMM's columns per workgroup (64 or 32); None
/// for [`BSource::Plain`].
pub fn pack_b(
    gpu: &Gpu,
    src: BufferRange<'_>,
    src_base: u32,
    dims: (usize, usize),
    layout: Layout,
    tile: usize,
    source: BSource,
) -> Result<Option<PackedB>> {
    pack_b_once(gpu, src, src_base, dims, layout, tile, source, false)
}

/// [`pack_b`]; with `kept`, for a texture that is kept, whose staging buffer is a one-off and
/// is discarded rather than cached by the pool.
#[allow(clippy::too_many_arguments)]
fn pack_b_once(
    gpu: &Gpu,
    src: BufferRange<'_>,
    src_base: u32,
    (k, n): (usize, usize),
    layout: Layout,
    tile: usize,
    source: BSource,
    kept: bool,
) -> Result<Option<PackedB>> {
    let tiles = n.div_ceil(tile);
    let vec4s = packed_vec4s(k, n, tile);
    // A texture is filled by copying whole rows of texels from a buffer: the packed tensor is
    // written to a buffer padded to whole rows, then copied (a memcpy; writing the texture from
    // the shader with textureStore was far slower, see BENCHMARKS.md, "Operand textures").
    let buffer_len = match source {
        BSource::Plain => return Ok(None),
        BSource::Packed => vec4s * 4,
        BSource::Texture { shift } => vec4s.div_ceil(1 << shift) * (4 << shift),
    };
    let buffer = Tensor::uninit(gpu, [buffer_len])?;
    let (transposed, r) = match layout {
        Layout::RowMajor => (0.0, 1),
        Layout::TapTransposed { r } => (1.0, r),
    };
    let p = Params {
        k: k as u32,
        n: n as u32,
        r: r as u32,
        src_base,
    };
    let consts = [("TRANSPOSED", transposed), ("TILE_N", tile as f64)];
    // A row-major B whose rows are whole vec4s is read a vec4 at a time (pack_b4): one load
    // per packed vec4 instead of four.
    let whole = matches!(layout, Layout::RowMajor)
        && n.is_multiple_of(4)
        && src_base.is_multiple_of(4)
        && src.size.is_multiple_of(16);
    let (kernel, args) = if whole {
        let kernel = Kernel::new(ShaderId::Pack, "pack_b4", &consts);
        let args = vec![
            Arg::Uniform(bytemuck::bytes_of(&p)),
            Arg::Unused,
            Arg::Write(buffer.all()),
            Arg::Read(src),
        ];
        (kernel, args)
    } else {
        let kernel = Kernel::new(ShaderId::Pack, "pack_b", &consts);
        let args = vec![
            Arg::Uniform(bytemuck::bytes_of(&p)),
            Arg::Read(src),
            Arg::Write(buffer.all()),
        ];
        (kernel, args)
    };
    let groups = vec4s.div_ceil(kernel.workgroup_x()).max(1) as u32;
    let x = groups.min(gpu.limits().max_compute_workgroups_per_dimension);
    gpu.dispatch(&kernel, &args, [x, groups.div_ceil(x), 1]);
    let BSource::Texture { shift } = source else {
        return Ok(Some(PackedB::Buffer(buffer.reshape([tiles, k, tile]))));
    };
    if kept {
        buffer.pooled().discard_on_drop();
    }
    let texture = gpu.operand_texture(shift, vec4s);
    let width = 1u32 << shift;
    let rows = vec4s.div_ceil(width as usize) as u32;
    gpu.record(|encoder| {
        encoder.copy_buffer_to_texture(
            wgpu::TexelCopyBufferInfo {
                buffer: buffer.buffer(),
                layout: wgpu::TexelCopyBufferLayout {
                    offset: 0,
                    bytes_per_row: Some(width * TEXEL_BYTES as u32),
                    rows_per_image: None,
                },
            },
            wgpu::TexelCopyTextureInfo {
                texture: texture.texture(),
                mip_level: 0,
                origin: wgpu::Origin3d::ZERO,
                aspect: wgpu::TextureAspect::All,
            },
            wgpu::Extent3d {
                width,
                height: rows,
                depth_or_array_layers: 1,
            },
        );
    });
    Ok(Some(PackedB::Texture(Arc::new(texture))))
}

/// B for the subgroup GEMM from the whole of `w`, a layer's kernel read as (K,N) = `dims` by
/// `layout`: packed as `source` says, except where `w` has not been written since an earlier
/// call asked for the same packing (a frozen layer, inference over many batches). Then the
/// packed texture is made once, kept with `w` until `w` is written or dropped, and reused; a
/// plain B (one row tile reads it, as in a dense head) moves into a texture the same way, since
/// a kept copy costs nothing per call. Returns where B is read from and the packed operand.
/// A kernel that changes every step (a trainable layer) is packed per call, as `pack_b` does,
/// and nothing is kept.
pub fn pack_kernel(
    gpu: &Gpu,
    w: &Tensor,
    dims: (usize, usize),
    layout: Layout,
    tile: usize,
    source: BSource,
) -> Result<(BSource, Option<PackedB>)> {
    let (source, packed, _) = pack_kept(gpu, w, 0, dims, layout, tile, source, None)?;
    Ok((source, packed))
}

/// [`pack_kernel`] for a B that `derive` makes from the layer's kernel `w` (row-major,
/// `dims`), such as Winograd's transformed kernel, `tag` naming the derivation. Returns
/// where B is read from, the packed B (None where B is read as it is) and the derived tensor
/// where it was made this call: the caller binds it where B is read as it is.
pub fn pack_derived(
    gpu: &Gpu,
    w: &Tensor,
    tag: u64,
    dims: (usize, usize),
    tile: usize,
    source: BSource,
    derive: &dyn Fn() -> Result<Tensor>,
) -> Result<(BSource, Option<PackedB>, Option<Tensor>)> {
    pack_kept(
        gpu,
        w,
        tag,
        dims,
        Layout::RowMajor,
        tile,
        source,
        Some(derive),
    )
}

/// `derive`'s B (row-major, `dims`) made from the layer's kernel `w`, `tag` naming the
/// derivation, for the kernels that read B from a buffer: made per call, except where `w` has
/// not been written since an earlier call asked for it (a frozen layer), where it is made once
/// and kept with `w` as a buffer until `w` is written or dropped, as [`pack_derived`] keeps a
/// texture. Nothing is kept while `--tune` times candidates, so that only the chosen one's
/// derivation stays, except where they are timed as a frozen kernel runs them
/// ([`Gpu::tuned_keeping`], whose caller releases them afterwards).
pub fn derive_kept(
    gpu: &Gpu,
    w: &Tensor,
    tag: u64,
    dims: (usize, usize),
    derive: &dyn Fn() -> Result<Tensor>,
) -> Result<Tensor> {
    let mut h = std::hash::DefaultHasher::new();
    ("buffer", dims, tag).hash(&mut h);
    let key = h.finish();
    match gpu.pool().derivation(w.pooled(), key) {
        Derivation::Kept(Kept::Buffer(b)) => Ok(Tensor::from_shared(b, [dims.0, dims.1])),
        Derivation::Unchanged if gpu.keeps_derivations() => {
            let b = derive()?;
            gpu.pool()
                .keep_derived(w.pooled(), key, Kept::Buffer(b.shared_buffer()));
            Ok(b)
        }
        _ => derive(),
    }
}

#[allow(clippy::too_many_arguments)]
fn pack_kept(
    gpu: &Gpu,
    w: &Tensor,
    tag: u64,
    dims: (usize, usize),
    layout: Layout,
    tile: usize,
    source: BSource,
    derive: Option<&dyn Fn() -> Result<Tensor>>,
) -> Result<(BSource, Option<PackedB>, Option<Tensor>)> {
    // `keep` where no texture is kept, so that the derived B is kept as a buffer instead
    // (never both); `texture_kept` where the packed texture will be kept, so that the buffers
    // made on the way to it (the staging buffer, the derived B) are one-offs: while the
    // kernel is unchanged nothing asks for them again, and the pool would hold them cached,
    // and count them in the peak, for the rest of the run (F(6x6)'s transform of a 512x512
    // kernel is 64 MiB).
    let per_call = |source,
                    keep: bool,
                    texture_kept: bool|
     -> Result<(BSource, Option<PackedB>, Option<Tensor>)> {
        match derive {
            None => Ok((
                source,
                pack_b_once(gpu, w.all(), 0, dims, layout, tile, source, texture_kept)?,
                None,
            )),
            Some(derive) => {
                let b = if keep {
                    derive_kept(gpu, w, tag, dims, derive)?
                } else {
                    derive()?
                };
                if texture_kept {
                    b.pooled().discard_on_drop();
                }
                let packed =
                    pack_b_once(gpu, b.all(), 0, dims, layout, tile, source, texture_kept)?;
                Ok((source, packed, Some(b)))
            }
        }
    };
    let shift = match source {
        BSource::Texture { shift } => shift,
        // Where B does not fit a texture (or textures are off), no texture is kept.
        BSource::Packed => return per_call(source, true, false),
        BSource::Plain => match gpu.operand_texture_shift(packed_vec4s(dims.0, dims.1, tile)) {
            Some(shift) => shift,
            None => return per_call(source, true, false),
        },
    };
    let mut h = std::hash::DefaultHasher::new();
    (dims, layout, tile, shift, tag).hash(&mut h);
    let key = h.finish();
    let texture = BSource::Texture { shift };
    match gpu.pool().derivation(w.pooled(), key) {
        Derivation::Kept(Kept::Texture(t)) => Ok((texture, Some(PackedB::Texture(t)), None)),
        // Nothing is kept while `--tune` times candidates, except as `Gpu::tuned_keeping`
        // times them ([`Gpu::keeps_derivations`]).
        Derivation::Unchanged if gpu.keeps_derivations() => {
            let (_, packed, derived) = per_call(texture, false, true)?;
            if let Some(PackedB::Texture(t)) = &packed {
                gpu.pool()
                    .keep_derived(w.pooled(), key, Kept::Texture(t.clone()));
            }
            Ok((texture, packed, derived))
        }
        _ => per_call(source, false, false),
    }
}
