//! Reading results back to the host. Every readback submits the pending work and waits for it:
//! [`Gpu::read_bytes`] (what `Tensor::to_vec` uses), [`Gpu::read_scalars`] (a training step's
//! loss and accuracy in one copy) and [`Gpu::read_texture`] (operand textures, for tests).

use super::{pool, Gpu, GpuError, PooledTexture};

impl Gpu {
    /// Reads the first f32 of each buffer with one copy batch and one wait: how a training step
    /// fetches its loss and accuracy scalars.
    pub fn read_scalars(&self, buffers: &[&wgpu::Buffer]) -> Result<Vec<f32>, GpuError> {
        if buffers.is_empty() {
            return Ok(Vec::new());
        }
        let gather = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("scalars"),
            size: 4 * buffers.len() as u64,
            usage: wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.record(|enc| {
            for (i, b) in buffers.iter().enumerate() {
                enc.copy_buffer_to_buffer(b, 0, &gather, 4 * i as u64, 4);
            }
        });
        let bytes = self.read_bytes(&gather, 0, 4 * buffers.len() as u64)?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    /// Copies `size` bytes at `offset` of `buffer` back to the host, after all pending work.
    pub fn read_bytes(
        &self,
        buffer: &wgpu::Buffer,
        offset: u64,
        size: u64,
    ) -> Result<Vec<u8>, GpuError> {
        self.read_staged(size, |enc, staging| {
            enc.copy_buffer_to_buffer(buffer, offset, staging, 0, size)
        })
    }

    /// Copies the texels of an rgba32float operand texture back to the host, row after row,
    /// after all pending work.
    pub fn read_texture(&self, texture: &PooledTexture) -> Result<Vec<f32>, GpuError> {
        let t = texture.texture();
        let row_bytes = u64::from(t.width()) * pool::TEXEL_BYTES;
        let size = row_bytes * u64::from(t.height());
        let bytes = self.read_staged(size, |enc, staging| {
            enc.copy_texture_to_buffer(
                t.as_image_copy(),
                wgpu::TexelCopyBufferInfo {
                    buffer: staging,
                    layout: wgpu::TexelCopyBufferLayout {
                        offset: 0,
                        bytes_per_row: Some(row_bytes as u32),
                        rows_per_image: None,
                    },
                },
                t.size(),
            )
        })?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    /// Records `copy` into a fresh `size`-byte staging buffer, submits, and maps it back.
    fn read_staged(
        &self,
        size: u64,
        copy: impl FnOnce(&mut wgpu::CommandEncoder, &wgpu::Buffer),
    ) -> Result<Vec<u8>, GpuError> {
        if size == 0 {
            return Ok(Vec::new());
        }
        let failed = |reason: String| GpuError::Readback {
            bytes: size,
            reason,
        };
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.record(|enc| copy(enc, &staging));
        self.flush();
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| failed(e.to_string()))?;
        rx.recv()
            .map_err(|e| failed(e.to_string()))?
            .map_err(|e| failed(e.to_string()))?;
        let out = staging
            .get_mapped_range(..)
            .map_err(|e| failed(e.to_string()))?
            .to_vec();
        staging.unmap();
        Ok(out)
    }
}
