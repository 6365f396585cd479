// Column sums of a row-major (ROWS, COLS) matrix: bias gradients (sum of dy over N*OH*OW) and
// loss / accuracy totals (COLS = 1). A dispatch of (ceil(COLS/64), G) workgroups writes G
// partial rows; the host runs it again on the partials until one row is left, so long reductions
// spread over many workgroups without atomics and the sum order is fixed (deterministic).

override ACCUM: u32 = 0u;

struct Params {
    rows: u32,
    cols: u32,
    rows_per_group: u32,
    src_base: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

var<workgroup> partial: array<f32, 256>;

@compute @workgroup_size(64, 4)
fn sum_rows(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let col = wg.x * 64u + lid.x;
    let r0 = wg.y * p.rows_per_group;
    let r1 = min(r0 + p.rows_per_group, p.rows);
    var s = 0.0;
    if (col < p.cols) {
        for (var r = r0 + lid.y; r < r1; r += 4u) {
            s += src[p.src_base + r * p.cols + col];
        }
    }
    partial[lid.y * 64u + lid.x] = s;
    workgroupBarrier();
    if (lid.y == 0u && col < p.cols) {
        let total = partial[lid.x] + partial[64u + lid.x] + partial[128u + lid.x] + partial[192u + lid.x];
        let o = wg.y * p.cols + col;
        if (ACCUM == 1u) {
            dst[o] = dst[o] + total;
        } else {
            dst[o] = total;
        }
    }
}
