//! The profiler: timestamp queries around every dispatch while on, summed per scope (a layer,
//! "loss", "optimizer") into a [`Profile`].

use super::{Gpu, GpuError};

const QUERIES_PER_SET: u32 = wgpu::QUERY_SET_MAX_QUERIES;

/// Timestamp queries around every dispatch while profiling, labelled by scope.
pub(crate) struct Profiler {
    sets: Vec<wgpu::QuerySet>,
    labels: Vec<String>,
    /// Texture operands were on and are off while profiling (see [`Gpu::begin_profile`]).
    textures_off: bool,
}

impl Profiler {
    /// The query set and its first index for the next pass, labelled `scope` (or `entry` where
    /// no scope is set); a new set is made when the last one is full.
    pub(crate) fn next_pass(
        &mut self,
        device: &wgpu::Device,
        scope: &str,
        entry: &str,
    ) -> (&wgpu::QuerySet, u32) {
        let index = self.labels.len() as u32 * 2;
        if index.is_multiple_of(QUERIES_PER_SET) {
            self.sets
                .push(device.create_query_set(&wgpu::QuerySetDescriptor {
                    label: Some("profile"),
                    ty: wgpu::QueryType::Timestamp,
                    count: QUERIES_PER_SET,
                }));
        }
        self.labels
            .push(if scope.is_empty() { entry } else { scope }.to_string());
        (
            self.sets.last().expect("query set"),
            index % QUERIES_PER_SET,
        )
    }
}

/// GPU time spent per scope while profiling.
#[derive(Clone, Debug, Default)]
pub struct Profile {
    /// (scope, total nanoseconds, dispatches), in first-seen order.
    pub scopes: Vec<(String, f64, usize)>,
}

impl Gpu {
    /// Names the work recorded from now on (a layer, "loss", "optimizer") for [`Gpu::end_profile`].
    pub fn set_scope(&self, scope: &str) {
        let mut pending = self.pending.lock().expect("pending lock");
        if pending.profiler.is_some() {
            pending.scope.clear();
            pending.scope.push_str(scope);
        }
    }

    /// True when the adapter can time dispatches (timestamp queries).
    pub fn can_profile(&self) -> bool {
        self.features.contains(wgpu::Features::TIMESTAMP_QUERY)
    }

    /// Starts timing every dispatch; false when the adapter has no timestamp queries.
    ///
    /// On a software adapter this turns texture operands off until [`Gpu::end_profile`]:
    /// lavapipe's timestamps go wrong once passes bind textures (what was seen and tried is in
    /// BENCHMARKS.md, "Operand textures"), so the profile times the buffer path instead,
    /// and says so.
    pub fn begin_profile(&self) -> bool {
        if !self.can_profile() {
            return false;
        }
        let mut pending = self.pending.lock().expect("pending lock");
        // Only the subgroup kernels read textures.
        let textures_off = self.info.device_type == wgpu::DeviceType::Cpu
            && self.subgroup_kernels()
            && self.texture_operands();
        if textures_off {
            tracing::warn!(
                "profiling with operand textures off: this adapter's timestamps miss passes that read them; unprofiled runs are faster than this profile"
            );
            self.set_texture_operands(false);
        }
        pending.profiler = Some(Profiler {
            sets: Vec::new(),
            labels: Vec::new(),
            textures_off,
        });
        true
    }

    /// Stops timing and returns the GPU time per scope (waits for the recorded work).
    pub fn end_profile(&self) -> Result<Profile, GpuError> {
        let Some(prof) = self.pending.lock().expect("pending lock").profiler.take() else {
            return Ok(Profile::default());
        };
        if prof.textures_off {
            self.set_texture_operands(true);
        }
        let period = f64::from(self.queue.get_timestamp_period());
        let mut ticks: Vec<u64> = Vec::with_capacity(prof.labels.len() * 2);
        let queries = prof.labels.len() as u32 * 2;
        for (k, set) in prof.sets.iter().enumerate() {
            let used = (queries - k as u32 * QUERIES_PER_SET).min(QUERIES_PER_SET);
            let size = u64::from(used) * 8;
            let resolve = self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("timestamps"),
                size,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            self.record(|enc| enc.resolve_query_set(set, 0..used, &resolve, 0));
            ticks.extend(bytemuck::pod_collect_to_vec::<u8, u64>(
                &self.read_bytes(&resolve, 0, size)?,
            ));
        }
        let mut profile = Profile::default();
        for (i, label) in prof.labels.iter().enumerate() {
            let ns = ticks[2 * i + 1].saturating_sub(ticks[2 * i]) as f64 * period;
            match profile.scopes.iter_mut().find(|(s, _, _)| s == label) {
                Some(e) => {
                    e.1 += ns;
                    e.2 += 1;
                }
                None => profile.scopes.push((label.clone(), ns, 1)),
            }
        }
        Ok(profile)
    }
}
