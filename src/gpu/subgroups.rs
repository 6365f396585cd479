//! The adapter's subgroups, checked once when a device opens: the subgroup GEMM
//! (shaders/gemm_sg.wgsl) is built for one fixed width W and broadcasts from lanes it names, so
//! a driver whose subgroups are not the W lanes it reports would make it compute wrong results,
//! silently. lavapipe built for 1024-bit vectors is one: it reports 32-lane subgroups and runs
//! 16 (BENCHMARKS.md, "Subgroup widths"). One small dispatch of shaders/subgroup_probe.wgsl says
//! what the subgroups really are; where that is not what the adapter reported, the device keeps
//! the tiled and workgroup-memory kernels and says why.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;

use super::{Arg, BufferRange, Gpu, GpuError, Kernel, ShaderId};

/// Words each probe invocation writes (see shaders/subgroup_probe.wgsl).
const WORDS: usize = 6;

impl Gpu {
    /// Runs the probe for `width`-lane subgroups and compares what each invocation saw with
    /// what a `width`-lane subgroup must see. Err names the first difference.
    pub(crate) fn probe_subgroups(&self, width: u32) -> Result<(), SubgroupMismatch> {
        let seen = self.run_probe(width).map_err(SubgroupMismatch::Probe)?;
        check(width, &seen)
    }

    fn run_probe(&self, width: u32) -> Result<Vec<u32>, GpuError> {
        let invocations = 2 * width as usize;
        let bytes = (invocations * WORDS * 4) as u64;
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("subgroup probe"),
            size: bytes,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let writes = AtomicU64::new(0);
        let consts = [("W", f64::from(width))];
        self.dispatch(
            &Kernel::new(ShaderId::SubgroupProbe, "probe", &consts),
            &[Arg::Write(BufferRange {
                buffer: &buffer,
                offset: 0,
                size: bytes,
                writes: &writes,
            })],
            [1, 1, 1],
        );
        let out = self.read_bytes(&buffer, 0, bytes)?;
        Ok(bytemuck::pod_collect_to_vec(&out))
    }
}

/// How an adapter's subgroups differ from the width it reports.
#[derive(Debug, thiserror::Error)]
pub enum SubgroupMismatch {
    #[error("the subgroup probe did not run: {0}")]
    Probe(GpuError),
    #[error("invocation {invocation} saw subgroup_size {saw}, not the {width} lanes reported")]
    Size {
        invocation: usize,
        saw: u32,
        width: u32,
    },
    #[error("invocation {invocation} is lane {lane} of subgroup {subgroup}, outside 2 subgroups of {width}")]
    Lane {
        invocation: usize,
        subgroup: u32,
        lane: u32,
        width: u32,
    },
    #[error(
        "lane {lane} of subgroup {subgroup} is held by two invocations ({first} and {second})"
    )]
    Duplicate {
        subgroup: u32,
        lane: u32,
        first: usize,
        second: usize,
    },
    #[error("only {active} lanes of invocation {invocation}'s subgroup ran together, not {width}")]
    Active {
        invocation: usize,
        active: u32,
        width: u32,
    },
    #[error("invocation {invocation} read {got} from lane {lane} of its subgroup, which is invocation {want}")]
    Exchange {
        invocation: usize,
        lane: u32,
        got: u32,
        want: usize,
    },
}

/// Whether `seen` (the probe's words for 2 * `width` invocations) is what two subgroups of
/// exactly `width` lanes produce: every invocation sees the width, holds its own (subgroup,
/// lane) of the 2 x width, runs with all width lanes, and reads lane 0's and lane width-1's
/// invocation index through broadcast and shuffle.
pub(crate) fn check(width: u32, seen: &[u32]) -> Result<(), SubgroupMismatch> {
    let rows: Vec<&[u32]> = seen.chunks_exact(WORDS).collect();
    let mut holder: HashMap<(u32, u32), usize> = HashMap::new();
    for (i, r) in rows.iter().enumerate() {
        let (size, subgroup, lane, active) = (r[0], r[1], r[2], r[3]);
        if size != width {
            return Err(SubgroupMismatch::Size {
                invocation: i,
                saw: size,
                width,
            });
        }
        if subgroup >= 2 || lane >= width {
            return Err(SubgroupMismatch::Lane {
                invocation: i,
                subgroup,
                lane,
                width,
            });
        }
        if let Some(&first) = holder.get(&(subgroup, lane)) {
            return Err(SubgroupMismatch::Duplicate {
                subgroup,
                lane,
                first,
                second: i,
            });
        }
        holder.insert((subgroup, lane), i);
        if active != width {
            return Err(SubgroupMismatch::Active {
                invocation: i,
                active,
                width,
            });
        }
    }
    for (i, r) in rows.iter().enumerate() {
        for (lane, got) in [(0, r[4]), (width - 1, r[5])] {
            let want = holder[&(r[1], lane)];
            if got as usize != want {
                return Err(SubgroupMismatch::Exchange {
                    invocation: i,
                    lane,
                    got,
                    want,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What two subgroups of `width` lanes write, lanes in invocation order.
    fn honest(width: u32) -> Vec<u32> {
        (0..2 * width)
            .flat_map(|i| {
                let (sg, lane) = (i / width, i % width);
                [width, sg, lane, width, sg * width, sg * width + width - 1]
            })
            .collect()
    }

    #[test]
    fn honest_subgroups_pass() {
        for w in [8, 16, 32, 64] {
            check(w, &honest(w)).unwrap();
        }
    }

    #[test]
    fn narrower_subgroups_than_reported_fail() {
        // A 32-lane report run as four 16-lane subgroups: subgroup ids 2 and 3 appear, and
        // lanes 16..31 never do.
        let seen: Vec<u32> = (0..64u32)
            .flat_map(|i| [32, i / 16, i % 16, 16, (i / 16) * 16, (i / 16) * 16 + 15])
            .collect();
        assert!(matches!(
            check(32, &seen),
            Err(SubgroupMismatch::Active { .. })
        ));
        // The same with subgroup_size itself telling the truth.
        let mut honest16 = seen.clone();
        for r in honest16.chunks_exact_mut(WORDS) {
            r[0] = 16;
        }
        assert!(matches!(
            check(32, &honest16),
            Err(SubgroupMismatch::Size { saw: 16, .. })
        ));
    }

    #[test]
    fn wrong_exchange_and_lane_layout_fail() {
        let mut seen = honest(16);
        seen[3 * WORDS + 5] = 0; // invocation 3 read lane 15 wrongly
        assert!(matches!(
            check(16, &seen),
            Err(SubgroupMismatch::Exchange {
                invocation: 3,
                lane: 15,
                ..
            })
        ));
        let mut seen = honest(8);
        seen[WORDS + 2] = 0; // invocation 1 claims lane 0 too
        assert!(matches!(
            check(8, &seen),
            Err(SubgroupMismatch::Duplicate {
                lane: 0,
                first: 0,
                second: 1,
                ..
            })
        ));
        // A lane order other than the invocation order is fine where it is consistent.
        let w = 8u32;
        let perm = |i: u32| (i % w + 3) % w;
        let inv_of_lane = |sg: u32, lane: u32| sg * w + (lane + w - 3) % w;
        let seen: Vec<u32> = (0..2 * w)
            .flat_map(|i| {
                let sg = i / w;
                [
                    w,
                    sg,
                    perm(i),
                    w,
                    inv_of_lane(sg, 0),
                    inv_of_lane(sg, w - 1),
                ]
            })
            .collect();
        check(w, &seen).unwrap();
    }
}
