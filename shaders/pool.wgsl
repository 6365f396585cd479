// Pooling over NHWC (N,H,W,C) -> (N,OH,OW,C): max and average, forward and backward.
// Global pooling is the window (H,W) with stride (H,W); 1-D pooling is the H = 1 case.
// Max forward records which tap of its window won (0..PH*PW-1, stored as an exact small f32) so
// backward can route the gradient there. Both backwards gather from the outputs whose windows
// cover an input position: deterministic and free of atomics even when windows overlap.
// Average pooling divides by the taps inside the image, as Keras 'same' padding does.

// The layer's geometry, as override constants: one pipeline per pool layer, and every index
// split below divides by a constant (a multiply and shift) instead of a runtime value, which on
// lavapipe is a scalar division per lane; the window loops unroll.
override H: u32 = 1u;
override W: u32 = 1u;
override C: u32 = 1u;
override OH: u32 = 1u;
override OW: u32 = 1u;
override PH: u32 = 1u;
override PW: u32 = 1u;
override SH: u32 = 1u;
override SW: u32 = 1u;
override PAD_TOP: u32 = 0u;
override PAD_LEFT: u32 = 0u;

struct Params {
    n: u32,        // images in this batch chunk
    src_base: u32, // element offset of this batch chunk in `src`
    dst_base: u32, // element offset of this batch chunk in `dst`
    aux_base: u32, // element offset of this batch chunk in `arg`
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;
@group(0) @binding(3) var<storage, read_write> arg: array<f32>;

// The same tensors seen as vec4s, for the max-pooling entries `*_4` that move four channels at
// once: on lavapipe each per-lane load or store is a loop over the lanes, so a vec4 costs what a
// scalar does. Used when C and every base offset are multiples of 4.
@group(0) @binding(1) var<storage, read> src4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> dst4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> arg4: array<vec4<f32>>;

fn linear_id(gid: vec3<u32>, groups: vec3<u32>) -> u32 {
    return gid.x + gid.y * groups.x * 256u;
}

// Input row (or column) that tap k of output o's window reads, given the stride, the padding
// before and the input size; -1 where the tap falls in the padding.
fn tap_input(o: u32, k: u32, stride: u32, pad: u32, size: u32) -> i32 {
    let i = i32(o * stride + k) - i32(pad);
    return select(-1, i, i >= 0 && i < i32(size));
}

// The tap (ky * PW + kx) through which output (oy, ox)'s window reads input (iy, ix).
fn tap_of(iy: u32, ix: u32, oy: i32, ox: i32) -> u32 {
    return u32(i32(iy + PAD_TOP) - oy * i32(SH)) * PW + u32(i32(ix + PAD_LEFT) - ox * i32(SW));
}

// Flat NHWC index -> (n, y, x, c) for an (N, rows, cols, chans) tensor (chans = C / 4 where
// the index counts vec4s).
fn split_index(i: u32, rows: u32, cols: u32, chans: u32) -> vec4<u32> {
    let c = i % chans;
    let t = i / chans;
    let t2 = t / cols;
    return vec4<u32>(t2 / rows, t2 % rows, t % cols, c);
}

// y (N,OH,OW,C) = max over the window of x; arg = winning tap.
@compute @workgroup_size(256)
fn max_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_id(gid, groups);
    if (i >= p.n * OH * OW * C) {
        return;
    }
    let o = split_index(i, OH, OW, C);
    let n = o.x;
    let oy = o.y;
    let ox = o.z;
    let c = o.w;
    var best = -3.402823e38;
    var best_tap = 0u;
    for (var ky = 0u; ky < PH; ky++) {
        let iy = tap_input(oy, ky, SH, PAD_TOP, H);
        if (iy < 0) {
            continue;
        }
        for (var kx = 0u; kx < PW; kx++) {
            let ix = tap_input(ox, kx, SW, PAD_LEFT, W);
            if (ix < 0) {
                continue;
            }
            let v = src[p.src_base + ((n * H + u32(iy)) * W + u32(ix)) * C + c];
            if (v > best) {
                best = v;
                best_tap = ky * PW + kx;
            }
        }
    }
    dst[p.dst_base + i] = best;
    arg[p.aux_base + i] = f32(best_tap);
}

// Range of output rows whose window covers input row `i` with window `k`, stride `s`, pad `pad`:
// o*s - pad <= i <= o*s - pad + k - 1.
fn covering(i: u32, k: u32, s: u32, pad: u32, count: u32) -> vec2<i32> {
    let hi = i32(i + pad) / i32(s);
    let lo_num = i32(i + pad) - i32(k) + 1;
    var lo = 0;
    if (lo_num > 0) {
        lo = (lo_num + i32(s) - 1) / i32(s);
    }
    return vec2<i32>(lo, min(hi, i32(count) - 1));
}

// dx (N,H,W,C): dy of every output whose winning tap is this input position.
// src = dy, dst = dx, arg = taps from max_forward.
@compute @workgroup_size(256)
fn max_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_id(gid, groups);
    if (i >= p.n * H * W * C) {
        return;
    }
    let q = split_index(i, H, W, C);
    let n = q.x;
    let iy = q.y;
    let ix = q.z;
    let c = q.w;
    let ry = covering(iy, PH, SH, PAD_TOP, OH);
    let rx = covering(ix, PW, SW, PAD_LEFT, OW);
    var g = 0.0;
    for (var oy = ry.x; oy <= ry.y; oy++) {
        for (var ox = rx.x; ox <= rx.y; ox++) {
            let tap = tap_of(iy, ix, oy, ox);
            let o = ((n * OH + u32(oy)) * OW + u32(ox)) * C + c;
            if (u32(arg[p.aux_base + o]) == tap) {
                g += src[p.src_base + o];
            }
        }
    }
    dst[p.dst_base + i] = g;
}

// Taps of output (oy, ox)'s window that fall inside the image.
fn window_count(oy: u32, ox: u32) -> f32 {
    let y0 = max(i32(oy * SH) - i32(PAD_TOP), 0);
    let y1 = min(i32(oy * SH + PH) - i32(PAD_TOP), i32(H));
    let x0 = max(i32(ox * SW) - i32(PAD_LEFT), 0);
    let x1 = min(i32(ox * SW + PW) - i32(PAD_LEFT), i32(W));
    return f32(max(y1 - y0, 0) * max(x1 - x0, 0));
}

// y = mean of the window's taps inside the image.
@compute @workgroup_size(256)
fn avg_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_id(gid, groups);
    if (i >= p.n * OH * OW * C) {
        return;
    }
    let o = split_index(i, OH, OW, C);
    let n = o.x;
    let oy = o.y;
    let ox = o.z;
    let c = o.w;
    var s = 0.0;
    for (var ky = 0u; ky < PH; ky++) {
        let iy = tap_input(oy, ky, SH, PAD_TOP, H);
        if (iy < 0) {
            continue;
        }
        for (var kx = 0u; kx < PW; kx++) {
            let ix = tap_input(ox, kx, SW, PAD_LEFT, W);
            if (ix < 0) {
                continue;
            }
            s += src[p.src_base + ((n * H + u32(iy)) * W + u32(ix)) * C + c];
        }
    }
    dst[p.dst_base + i] = s / window_count(oy, ox);
}

// dx = sum over covering windows of dy / taps(window). src = dy, dst = dx.
@compute @workgroup_size(256)
fn avg_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_id(gid, groups);
    if (i >= p.n * H * W * C) {
        return;
    }
    let q = split_index(i, H, W, C);
    let n = q.x;
    let iy = q.y;
    let ix = q.z;
    let c = q.w;
    let ry = covering(iy, PH, SH, PAD_TOP, OH);
    let rx = covering(ix, PW, SW, PAD_LEFT, OW);
    var g = 0.0;
    for (var oy = ry.x; oy <= ry.y; oy++) {
        for (var ox = rx.x; ox <= rx.y; ox++) {
            let o = ((n * OH + u32(oy)) * OW + u32(ox)) * C + c;
            g += src[p.src_base + o] / window_count(u32(oy), u32(ox));
        }
    }
    dst[p.dst_base + i] = g;
}

// max_forward on four channels at once; i counts vec4s of y, C / 4 per position.
@compute @workgroup_size(256)
fn max_forward_4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_id(gid, groups);
    let c4s = C / 4u;
    if (i >= p.n * OH * OW * c4s) {
        return;
    }
    let o = split_index(i, OH, OW, c4s);
    let n = o.x;
    let oy = o.y;
    let ox = o.z;
    let c4 = o.w;
    var best = vec4<f32>(-3.402823e38);
    var best_tap = vec4<f32>(0.0);
    for (var ky = 0u; ky < PH; ky++) {
        let iy = tap_input(oy, ky, SH, PAD_TOP, H);
        if (iy < 0) {
            continue;
        }
        for (var kx = 0u; kx < PW; kx++) {
            let ix = tap_input(ox, kx, SW, PAD_LEFT, W);
            if (ix < 0) {
                continue;
            }
            let v = src4[p.src_base / 4u + ((n * H + u32(iy)) * W + u32(ix)) * c4s + c4];
            // Strictly greater, as the scalar entry: the first of equal values wins.
            let better = v > best;
            best = select(best, v, better);
            best_tap = select(best_tap, vec4<f32>(f32(ky * PW + kx)), better);
        }
    }
    dst4[p.dst_base / 4u + i] = best;
    arg4[p.aux_base / 4u + i] = best_tap;
}

// max_backward on four channels at once; i counts vec4s of dx.
@compute @workgroup_size(256)
fn max_backward_4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_id(gid, groups);
    let c4s = C / 4u;
    if (i >= p.n * H * W * c4s) {
        return;
    }
    let q = split_index(i, H, W, c4s);
    let n = q.x;
    let iy = q.y;
    let ix = q.z;
    let c4 = q.w;
    let ry = covering(iy, PH, SH, PAD_TOP, OH);
    let rx = covering(ix, PW, SW, PAD_LEFT, OW);
    var g = vec4<f32>(0.0);
    for (var oy = ry.x; oy <= ry.y; oy++) {
        for (var ox = rx.x; ox <= rx.y; ox++) {
            let tap = tap_of(iy, ix, oy, ox);
            let o = ((n * OH + u32(oy)) * OW + u32(ox)) * c4s + c4;
            let won = arg4[p.aux_base / 4u + o] == vec4<f32>(f32(tap));
            g += select(vec4<f32>(0.0), src4[p.src_base / 4u + o], won);
        }
    }
    dst4[p.dst_base / 4u + i] = g;
}
