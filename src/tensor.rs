//! Tensors: f32 data in a pooled GPU buffer plus a shape.
//!
//! Layout is NHWC everywhere: an image batch is (N,H,W,C) with channels fastest, a sequence batch
//! (N,L,C), a dense activation (N,F). Conv kernels are HWIO (KH,KW,Cin,Cout) as Keras stores
//! them, dense kernels (in,out). Flatten is therefore free: (N,H,W,C) and (N,H*W*C) share bytes.

use std::fmt;
use std::sync::Arc;

use crate::gpu::pool::PooledBuffer;
use crate::gpu::{BufferRange, Gpu, GpuError};

/// A shape, outermost dimension first.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Shape(pub Vec<usize>);

impl Shape {
    pub fn numel(&self) -> usize {
        self.0.iter().product()
    }
    pub fn rank(&self) -> usize {
        self.0.len()
    }
    pub fn dims(&self) -> &[usize] {
        &self.0
    }
}

impl fmt::Debug for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "(")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                write!(f, ",")?;
            }
            write!(f, "{d}")?;
        }
        write!(f, ")")
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl From<&[usize]> for Shape {
    fn from(d: &[usize]) -> Self {
        Shape(d.to_vec())
    }
}

impl From<Vec<usize>> for Shape {
    fn from(d: Vec<usize>) -> Self {
        Shape(d)
    }
}

impl<const N: usize> From<[usize; N]> for Shape {
    fn from(d: [usize; N]) -> Self {
        Shape(d.to_vec())
    }
}

/// An f32 tensor on the GPU. Cloning shares the buffer; the buffer returns to the pool when the
/// last clone is dropped.
#[derive(Clone)]
pub struct Tensor {
    buf: Arc<PooledBuffer>,
    shape: Shape,
    /// Bytes past the end that the tensor's bindings take in: the NaN tail of a device with
    /// [`Gpu::nan_tail`] on, else 0.
    tail: u64,
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor{:?}", self.shape)
    }
}

/// The least bytes a tensor is bound with: one vec4, which the vec4 kernels' bindings need at
/// the least, so that an empty tensor (a batch of 0) binds as any other and the kernels'
/// bounds checks leave it unread. Pooled buffers hold at least 256 bytes.
const MIN_BINDING: u64 = 16;

/// Bytes of an f32 tensor of these dims, saturating where they pass `u64`.
pub fn f32_bytes(dims: &[usize]) -> u64 {
    dims.iter()
        .try_fold(4u64, |b, &d| b.checked_mul(d as u64))
        .unwrap_or(u64::MAX)
}

/// The bytes a tensor of `shape` takes, refused (naming `op`) where no buffer of the device
/// holds it. The product saturates, so a shape whose element count passes `usize` is refused
/// rather than wrapped; callers that fill a tensor on the host check before filling.
pub fn check_size(gpu: &Gpu, op: &'static str, shape: &Shape) -> Result<u64, GpuError> {
    let bytes = f32_bytes(&shape.0).max(4);
    if bytes > gpu.limits().max_buffer_size {
        return Err(GpuError::BufferTooLarge {
            op,
            what: format!("a tensor of shape {shape}"),
            needed: bytes,
            limit: gpu.limits().max_buffer_size,
        });
    }
    Ok(bytes)
}

impl Tensor {
    /// An uninitialised tensor (whatever the pooled buffer held); every op writes all of its
    /// output. Where [`Gpu::set_poison_uninit`] is on, it holds NaN instead.
    pub fn uninit(gpu: &Gpu, shape: impl Into<Shape>) -> Result<Self, GpuError> {
        let t = Self::alloc(gpu, shape)?;
        if gpu.poisons_uninit() {
            t.mark_written();
            gpu.record_poison(t.buffer(), t.byte_len());
        }
        Ok(t)
    }

    /// A pooled buffer as it comes, for constructors that overwrite all of it at once; with
    /// [`Gpu::nan_tail`] on, followed by NaN up to the buffer's end (within the binding limit),
    /// which its bindings take in.
    fn alloc(gpu: &Gpu, shape: impl Into<Shape>) -> Result<Self, GpuError> {
        let shape = shape.into();
        let bytes = check_size(gpu, "alloc", &shape)?;
        let want = gpu.nan_tail();
        let buf = gpu.pool().alloc(bytes + want);
        let mut tail = 0;
        if want > 0 {
            // A tensor past the binding limit is bound in windows, whose last one may still
            // take the tail in; one within it keeps its whole binding within it.
            let room = if bytes <= gpu.binding_limit() {
                gpu.binding_limit() - bytes
            } else {
                u64::MAX
            };
            tail = (buf.buffer().size() - bytes).min(room) / 4 * 4;
            if tail > 0 {
                gpu.record_poison_at(buf.buffer(), bytes, tail);
            }
        }
        Ok(Self {
            buf: Arc::new(buf),
            shape,
            tail,
        })
    }

    pub fn zeros(gpu: &Gpu, shape: impl Into<Shape>) -> Result<Self, GpuError> {
        let t = Self::alloc(gpu, shape)?;
        t.fill_zero(gpu);
        Ok(t)
    }

    /// Uploads `data`. The copy is recorded in the pending encoder, so it is ordered after any
    /// earlier op that still reads a recycled buffer.
    pub fn from_slice(gpu: &Gpu, shape: impl Into<Shape>, data: &[f32]) -> Result<Self, GpuError> {
        let shape = shape.into();
        assert_eq!(
            shape.numel(),
            data.len(),
            "Tensor::from_slice: shape {shape} holds {} values, got {}",
            shape.numel(),
            data.len()
        );
        let t = Self::alloc(gpu, shape)?;
        t.write(gpu, data);
        Ok(t)
    }

    /// Uploads half-precision data, widened to f32 on the host.
    pub fn from_f16(
        gpu: &Gpu,
        shape: impl Into<Shape>,
        data: &[half::f16],
    ) -> Result<Self, GpuError> {
        let wide: Vec<f32> = data.iter().map(|v| v.to_f32()).collect();
        Self::from_slice(gpu, shape, &wide)
    }

    /// Uploads bfloat16 data, widened to f32 on the host.
    pub fn from_bf16(
        gpu: &Gpu,
        shape: impl Into<Shape>,
        data: &[half::bf16],
    ) -> Result<Self, GpuError> {
        let wide: Vec<f32> = data.iter().map(|v| v.to_f32()).collect();
        Self::from_slice(gpu, shape, &wide)
    }

    /// Overwrites the whole tensor with `data`.
    pub fn write(&self, gpu: &Gpu, data: &[f32]) {
        assert_eq!(
            data.len(),
            self.numel(),
            "Tensor::write: length mismatch for {:?}",
            self.shape
        );
        if data.is_empty() {
            return;
        }
        if gpu.simulated() {
            // Nothing runs on a simulated device, so nothing needs the values.
            self.mark_written();
            return;
        }
        let bytes: &[u8] = bytemuck::cast_slice(data);
        let staging = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("upload"),
            size: bytes.len() as u64,
            usage: wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: true,
        });
        staging
            .get_mapped_range_mut(..)
            .expect("freshly mapped staging buffer")
            .copy_from_slice(bytes);
        staging.unmap();
        self.mark_written();
        gpu.record(|enc| {
            enc.copy_buffer_to_buffer(&staging, 0, self.buffer(), 0, bytes.len() as u64)
        });
    }

    pub fn fill_zero(&self, gpu: &Gpu) {
        let size = self.byte_len();
        self.mark_written();
        gpu.record(|enc| enc.clear_buffer(self.buffer(), 0, Some(size)));
    }

    /// Counts a recorded write, so packed copies kept of the old contents are not reused.
    fn mark_written(&self) {
        self.buf
            .writes()
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// The pooled buffer behind this tensor (shared by its reshapes and clones).
    pub(crate) fn pooled(&self) -> &PooledBuffer {
        &self.buf
    }

    /// A second owner of the buffer, for the pool to keep as a derived operand.
    pub(crate) fn shared_buffer(&self) -> Arc<PooledBuffer> {
        self.buf.clone()
    }

    /// The tensor of `shape` held by `buf`, a buffer kept by the pool ([`Tensor::shared_buffer`]
    /// of a tensor of that shape).
    pub(crate) fn from_shared(buf: Arc<PooledBuffer>, shape: impl Into<Shape>) -> Self {
        let shape = shape.into();
        assert!(
            (shape.numel() as u64 * 4) <= buf.buffer().size(),
            "Tensor::from_shared: {shape} does not fit a {}-byte buffer",
            buf.buffer().size()
        );
        Self {
            buf,
            shape,
            tail: 0,
        }
    }

    /// Copies the data back to the host (flushes pending work first).
    pub fn to_vec(&self, gpu: &Gpu) -> Result<Vec<f32>, GpuError> {
        let bytes = gpu.read_bytes(self.buffer(), 0, self.byte_len())?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    /// A copy of this tensor in a fresh buffer.
    pub fn duplicate(&self, gpu: &Gpu) -> Result<Self, GpuError> {
        let t = Self::alloc(gpu, self.shape.clone())?;
        t.mark_written();
        gpu.record(|enc| {
            enc.copy_buffer_to_buffer(self.buffer(), 0, t.buffer(), 0, self.byte_len())
        });
        Ok(t)
    }

    /// The same data under another shape with as many elements.
    pub fn reshape(&self, shape: impl Into<Shape>) -> Self {
        let shape = shape.into();
        assert_eq!(
            shape.numel(),
            self.numel(),
            "reshape {:?} -> {shape:?} changes the element count",
            self.shape
        );
        Self {
            buf: self.buf.clone(),
            shape,
            tail: self.tail,
        }
    }

    pub fn shape(&self) -> &Shape {
        &self.shape
    }
    pub fn dims(&self) -> &[usize] {
        &self.shape.0
    }
    pub fn numel(&self) -> usize {
        self.shape.numel()
    }
    pub fn byte_len(&self) -> u64 {
        (self.numel() as u64 * 4).max(4)
    }
    /// The raw buffer, for reading (copies out, readback). Write through the ops or
    /// [`Tensor::write`] only: those count the write, so that a packed copy kept of the old
    /// contents (`ops::pack::pack_kernel`) is not used again.
    pub fn buffer(&self) -> &wgpu::Buffer {
        self.buf.buffer()
    }

    /// True when both tensors live in the same buffer.
    pub fn shares_buffer(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.buf, &other.buf)
    }

    /// Binds elements `[start, start+len)`: the range starts at the aligned byte offset at or
    /// below `start`, and the returned base is the element index of `start` inside the binding.
    pub fn window(&self, gpu: &Gpu, start: usize, len: usize) -> (BufferRange<'_>, u32) {
        let align = gpu.offset_alignment();
        let begin = start as u64 * 4;
        let aligned = begin / align * align;
        let mut end = ((start + len) as u64 * 4).max(aligned + MIN_BINDING);
        if start + len == self.numel() && self.tail > 0 {
            // The window that ends the tensor takes in its NaN tail, within the binding limit.
            let limit = aligned + gpu.binding_limit().max(end - aligned);
            end = (end + self.tail).min(limit).min(self.buffer().size());
        }
        (
            BufferRange {
                buffer: self.buffer(),
                offset: aligned,
                size: end - aligned,
                writes: self.buf.writes(),
            },
            ((begin - aligned) / 4) as u32,
        )
    }

    /// Binds the whole tensor.
    pub fn all(&self) -> BufferRange<'_> {
        BufferRange {
            buffer: self.buffer(),
            offset: 0,
            size: (self.byte_len() + self.tail).max(MIN_BINDING),
            writes: self.buf.writes(),
        }
    }
}
