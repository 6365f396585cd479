//! Recording work: the pending command encoder, compute dispatches with their bind groups, and
//! submission. Nothing reaches the GPU queue until [`Gpu::flush`] or a readback, so the ops of
//! one training step become one submission with no host round trip between them.

use std::sync::atomic::{AtomicU64, Ordering};

use super::{Access, Gpu, GpuError, Kernel, Pending};

/// One argument of a dispatch, in binding order (binding 0 first).
#[derive(Clone, Copy)]
pub enum Arg<'a> {
    /// A small uniform block (binding-local copy, created per dispatch).
    Uniform(&'a [u8]),
    /// A byte range of a storage buffer, read-only in the shader.
    Read(BufferRange<'a>),
    /// A byte range of a storage buffer, read-write in the shader.
    Write(BufferRange<'a>),
    /// An rgba32float texture read with textureLoad (`texture_2d<f32>`).
    Texture(&'a wgpu::TextureView),
    /// A binding the entry point never touches: left out of the layout and the bind group.
    Unused,
}

/// A byte range of a buffer; `offset` must be a multiple of the storage offset alignment.
#[derive(Clone, Copy)]
pub struct BufferRange<'a> {
    pub buffer: &'a wgpu::Buffer,
    pub offset: u64,
    pub size: u64,
    /// The pooled buffer's write counter, bumped when the range is bound for writing.
    pub(crate) writes: &'a AtomicU64,
}

impl BufferRange<'_> {
    /// The range grown to a multiple of `align` bytes where the buffer (and `limit`) allow:
    /// a shader reading the range as `array<vec4<f32>>` then sees its last partial vec4.
    /// Pool buffers are whole multiples of 256 bytes, so for them this always succeeds.
    pub fn padded_to(self, align: u64, limit: u64) -> Self {
        let want = self.size.div_ceil(align) * align;
        let room = self.buffer.size() - self.offset;
        Self {
            size: want.min(room).min(limit.max(self.size)),
            ..self
        }
    }
}

impl Arg<'_> {
    /// How the entry point binds this argument (the pipeline layout's key).
    fn access(&self) -> Access {
        match self {
            Arg::Uniform(_) => Access::Uniform,
            Arg::Read(_) => Access::Read,
            Arg::Write(_) => Access::Write,
            Arg::Texture(_) => Access::Texture,
            Arg::Unused => Access::Unused,
        }
    }
}

impl Gpu {
    /// Records `f` into the pending command encoder.
    pub fn record<R>(&self, f: impl FnOnce(&mut wgpu::CommandEncoder) -> R) -> R {
        if self.simulated() {
            // A simulated device runs nothing: copies and clears go to an encoder that is
            // never submitted (a real one would touch every page of every tensor).
            let mut scratch = self
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("simulated"),
                });
            return f(&mut scratch);
        }
        let mut pending = self.pending.lock().expect("pending lock");
        f(self.encoder(&mut pending.encoder))
    }

    /// The pending encoder in `slot`, begun if there is none.
    fn encoder<'p>(
        &self,
        slot: &'p mut Option<wgpu::CommandEncoder>,
    ) -> &'p mut wgpu::CommandEncoder {
        slot.get_or_insert_with(|| {
            self.device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("step"),
                })
        })
    }

    /// Records one compute dispatch of `kernel` with `args` bound in order: its pipeline (from
    /// the cache), a bind group over the arguments, and one compute pass (timed when profiling).
    pub fn dispatch(&self, kernel: &Kernel<'_>, args: &[Arg<'_>], groups: [u32; 3]) {
        let access: Vec<Access> = args.iter().map(Arg::access).collect();
        for arg in args {
            if let Arg::Write(r) = arg {
                // Packed copies kept of this buffer's contents are stale from here on.
                r.writes.fetch_add(1, Ordering::Relaxed);
            }
        }
        for (i, arg) in args.iter().enumerate() {
            if let Arg::Read(r) | Arg::Write(r) = arg {
                // wgpu refuses such a binding on a device whose real limit this is; a lowered
                // limit (tests) and a simulated class must refuse it as loudly.
                assert!(
                    r.size <= self.binding_limit,
                    "{}: binding {i} covers {} bytes, over the device's {}-byte binding limit",
                    kernel.entry,
                    r.size,
                    self.binding_limit
                );
            }
        }
        if self.record_simulated(kernel, &access) {
            return;
        }
        let pipe = self.pipelines.get(kernel, &access);
        let bind_group = self.bind_group(kernel.entry, &pipe.layout, args);
        let mut pending = self.pending.lock().expect("pending lock");
        pending.dispatches += 1;
        let Pending {
            encoder,
            scope,
            profiler,
            ..
        } = &mut *pending;
        let timestamps = profiler
            .as_mut()
            .map(|prof| prof.next_pass(&self.device, scope, kernel.entry));
        let mut pass = self
            .encoder(encoder)
            .begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(kernel.entry),
                timestamp_writes: timestamps.map(|(set, local)| wgpu::ComputePassTimestampWrites {
                    query_set: set,
                    beginning_of_pass_write_index: Some(local),
                    end_of_pass_write_index: Some(local + 1),
                }),
            });
        pass.set_pipeline(&pipe.pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
    }

    /// A bind group of `args` at bindings 0, 1, ... (unused ones left out), with a fresh
    /// uniform buffer for each uniform block.
    fn bind_group(
        &self,
        label: &str,
        layout: &wgpu::BindGroupLayout,
        args: &[Arg<'_>],
    ) -> wgpu::BindGroup {
        let uniforms: Vec<Option<wgpu::Buffer>> = args
            .iter()
            .map(|a| match a {
                Arg::Uniform(bytes) => Some(self.uniform_buffer(bytes)),
                _ => None,
            })
            .collect();
        let entries: Vec<wgpu::BindGroupEntry> = args
            .iter()
            .zip(&uniforms)
            .enumerate()
            .filter(|(_, (a, _))| !matches!(a, Arg::Unused))
            .map(|(i, (a, u))| {
                let resource = match a {
                    Arg::Uniform(_) | Arg::Unused => {
                        u.as_ref().expect("uniform buffer").as_entire_binding()
                    }
                    Arg::Texture(view) => wgpu::BindingResource::TextureView(view),
                    Arg::Read(r) | Arg::Write(r) => {
                        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                            buffer: r.buffer,
                            offset: r.offset,
                            size: wgpu::BufferSize::new(r.size),
                        })
                    }
                };
                wgpu::BindGroupEntry {
                    binding: i as u32,
                    resource,
                }
            })
            .collect();
        self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(label),
            layout,
            entries: &entries,
        })
    }

    fn uniform_buffer(&self, bytes: &[u8]) -> wgpu::Buffer {
        // Uniform blocks are padded to 16 bytes so any std140-style struct fits.
        let size = (bytes.len() as u64).div_ceil(16).max(1) * 16;
        let buf = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("params"),
            size,
            usage: wgpu::BufferUsages::UNIFORM,
            mapped_at_creation: true,
        });
        buf.get_mapped_range_mut(..)
            .expect("freshly mapped uniform")
            .slice(..bytes.len())
            .copy_from_slice(bytes);
        buf.unmap();
        buf
    }

    /// Submits everything recorded so far.
    pub fn flush(&self) -> wgpu::SubmissionIndex {
        // Submit while holding the lock: a second thread must not record and submit a newer
        // encoder before this one reaches the queue, or its work would run first.
        let mut pending = self.pending.lock().expect("pending lock");
        let buffers = pending.encoder.take().map(|e| e.finish());
        self.queue.submit(buffers)
    }

    /// Submits pending work and blocks until the GPU has finished it.
    pub fn sync(&self) -> Result<(), GpuError> {
        let index = self.flush();
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(index),
                timeout: None,
            })
            .map_err(|e| GpuError::Readback {
                bytes: 0,
                reason: e.to_string(),
            })?;
        Ok(())
    }
}
