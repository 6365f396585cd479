//! A pool of storage buffers: a freed tensor's buffer goes back to a free list of its size class
//! and the next allocation of a fitting size takes it, so a training step allocates nothing
//! after the first one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Allocator accounting, in bytes of GPU memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Bytes held by live tensors.
    pub in_use: u64,
    /// Bytes held by freed buffers waiting for reuse.
    pub cached: u64,
    /// Highest `in_use + cached` seen since the last reset: what the device really had to hold.
    pub peak: u64,
    /// Buffers created since the device was opened.
    pub created: u64,
    /// Allocations served from the free lists.
    pub reused: u64,
}

#[derive(Default)]
struct Inner {
    free: HashMap<u64, Vec<wgpu::Buffer>>,
    stats: PoolStats,
}

#[derive(Clone)]
pub(crate) struct BufferPool {
    device: wgpu::Device,
    inner: Arc<Mutex<Inner>>,
}

/// A buffer on loan from the pool; it returns itself when dropped.
pub struct PooledBuffer {
    buffer: Option<wgpu::Buffer>,
    class: u64,
    pool: Arc<Mutex<Inner>>,
}

impl PooledBuffer {
    pub fn buffer(&self) -> &wgpu::Buffer {
        self.buffer.as_ref().expect("buffer present until drop")
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        if let Some(buf) = self.buffer.take() {
            let mut inner = self.pool.lock().expect("pool lock");
            inner.stats.in_use -= self.class;
            inner.stats.cached += self.class;
            inner.free.entry(self.class).or_default().push(buf);
        }
    }
}

/// Rounds a request up to its size class: multiples of 256 bytes up to 4 KiB, then steps of an
/// eighth of a power of two, so reuse wastes at most 12.5%.
pub fn size_class(bytes: u64) -> u64 {
    let bytes = bytes.max(4);
    if bytes <= 4096 {
        return bytes.div_ceil(256) * 256;
    }
    let top = 63 - bytes.leading_zeros() as u64;
    let step = 1u64 << (top - 3);
    bytes.div_ceil(step) * step
}

impl BufferPool {
    pub fn new(device: wgpu::Device) -> Self {
        Self {
            device,
            inner: Arc::new(Mutex::new(Inner::default())),
        }
    }

    pub fn alloc(&self, bytes: u64) -> PooledBuffer {
        let class = size_class(bytes);
        let mut inner = self.inner.lock().expect("pool lock");
        let reused = inner.free.get_mut(&class).and_then(|v| v.pop());
        let buffer = match reused {
            Some(b) => {
                inner.stats.cached -= class;
                inner.stats.reused += 1;
                b
            }
            None => {
                inner.stats.created += 1;
                self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("tensor"),
                    size: class,
                    usage: wgpu::BufferUsages::STORAGE
                        | wgpu::BufferUsages::COPY_SRC
                        | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                })
            }
        };
        inner.stats.in_use += class;
        inner.stats.peak = inner
            .stats
            .peak
            .max(inner.stats.in_use + inner.stats.cached);
        PooledBuffer {
            buffer: Some(buffer),
            class,
            pool: self.inner.clone(),
        }
    }

    pub fn stats(&self) -> PoolStats {
        self.inner.lock().expect("pool lock").stats
    }

    pub fn trim(&self) {
        let mut inner = self.inner.lock().expect("pool lock");
        inner.free.clear();
        inner.stats.cached = 0;
    }

    pub fn reset_peak(&self) {
        let mut inner = self.inner.lock().expect("pool lock");
        inner.stats.peak = inner.stats.in_use + inner.stats.cached;
    }
}

#[cfg(test)]
mod tests {
    use super::size_class;

    #[test]
    fn size_classes_fit_and_waste_little() {
        for bytes in [
            1u64,
            255,
            256,
            257,
            4096,
            4097,
            10_000,
            1 << 20,
            (1 << 20) + 1,
            123_456_789,
        ] {
            let c = size_class(bytes);
            assert!(c >= bytes, "class {c} below request {bytes}");
            assert!(
                c.is_multiple_of(256) || bytes > 4096,
                "small classes are 256-byte multiples"
            );
            // At most an eighth of waste above 4 KiB.
            if bytes > 4096 {
                assert!(
                    (c - bytes) * 8 <= bytes,
                    "class {c} wastes too much for {bytes}"
                );
            }
        }
        assert_eq!(
            size_class(5000),
            size_class(5100),
            "nearby sizes share a class"
        );
    }
}
