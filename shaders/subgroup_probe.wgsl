// What the adapter's subgroups really are, checked once when a device opens and before the
// subgroup GEMM (gemm_sg.wgsl) is trusted with them: that kernel names lanes 0..W-1 of each
// subgroup and sizes its tiles for W lanes, so a driver whose subgroups are narrower than it
// reports (lavapipe at 1024 bits reports 32 lanes) would compute wrong results, not slow ones.
// Each invocation of a 2-subgroup workgroup writes what it sees; src/gpu/subgroups.rs compares.

override W: u32 = 8u;

@group(0) @binding(0) var<storage, read_write> seen: array<u32>;

@compute @workgroup_size(W * 2u, 1, 1)
fn probe(
    @builtin(local_invocation_index) i: u32,
    @builtin(subgroup_size) size: u32,
    @builtin(subgroup_invocation_id) lane: u32,
    @builtin(subgroup_id) sg: u32,
) {
    let o = i * 6u;
    seen[o] = size;
    seen[o + 1u] = sg;
    seen[o + 2u] = lane;
    // Every lane of the subgroup active together.
    seen[o + 3u] = subgroupAdd(1u);
    // Lane 0's and lane W-1's invocation index, as the GEMM's broadcasts read them.
    seen[o + 4u] = subgroupBroadcast(i, 0u);
    seen[o + 5u] = subgroupShuffle(i, W - 1u);
}
