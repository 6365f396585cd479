// Pooling over NHWC (N,H,W,C) -> (N,OH,OW,C): max and average, forward and backward.
// Window (PH,PW), strides and padding are uniforms, so one pipeline serves every pool layer;
// global pooling is the window (H,W) with stride (H,W). 1-D pooling is the H = 1 case.
// Max forward records which tap of its window won (0..PH*PW-1, stored as an exact small f32) so
// backward can route the gradient there. Both backwards gather from the outputs whose windows
// cover an input position: deterministic and free of atomics even when windows overlap.
// Average pooling divides by the taps inside the image, as Keras 'same' padding does.

struct Params {
    n: u32,
    h: u32,
    w: u32,
    c: u32,
    oh: u32,
    ow: u32,
    ph: u32,
    pw: u32,
    sh: u32,
    sw: u32,
    pad_top: u32,
    pad_left: u32,
    src_base: u32, // element offset of this batch chunk in `src`
    dst_base: u32, // element offset of this batch chunk in `dst` (and `arg`)
    aux_base: u32, // element offset of this batch chunk in `arg`
    _p0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;
@group(0) @binding(3) var<storage, read_write> arg: array<f32>;

fn linear_id(gid: vec3<u32>, groups: vec3<u32>) -> u32 {
    return gid.x + gid.y * groups.x * 256u;
}

// Flat NHWC index -> (n, y, x, c) for an (N, rows, cols, C) tensor.
fn split_index(i: u32, rows: u32, cols: u32) -> vec4<u32> {
    let c = i % p.c;
    let t = i / p.c;
    let t2 = t / cols;
    return vec4<u32>(t2 / rows, t2 % rows, t % cols, c);
}

// y (N,OH,OW,C) = max over the window of x; arg = winning tap.
@compute @workgroup_size(256)
fn max_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_id(gid, groups);
    if (i >= p.n * p.oh * p.ow * p.c) {
        return;
    }
    let o = split_index(i, p.oh, p.ow);
    let n = o.x;
    let oy = o.y;
    let ox = o.z;
    let c = o.w;
    var best = -3.402823e38;
    var best_tap = 0u;
    for (var ky = 0u; ky < p.ph; ky++) {
        let iy = i32(oy * p.sh + ky) - i32(p.pad_top);
        if (iy < 0 || iy >= i32(p.h)) {
            continue;
        }
        for (var kx = 0u; kx < p.pw; kx++) {
            let ix = i32(ox * p.sw + kx) - i32(p.pad_left);
            if (ix < 0 || ix >= i32(p.w)) {
                continue;
            }
            let v = src[p.src_base + ((n * p.h + u32(iy)) * p.w + u32(ix)) * p.c + c];
            if (v > best) {
                best = v;
                best_tap = ky * p.pw + kx;
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
    if (i >= p.n * p.h * p.w * p.c) {
        return;
    }
    let q = split_index(i, p.h, p.w);
    let n = q.x;
    let iy = q.y;
    let ix = q.z;
    let c = q.w;
    let ry = covering(iy, p.ph, p.sh, p.pad_top, p.oh);
    let rx = covering(ix, p.pw, p.sw, p.pad_left, p.ow);
    var g = 0.0;
    for (var oy = ry.x; oy <= ry.y; oy++) {
        for (var ox = rx.x; ox <= rx.y; ox++) {
            let tap = (u32(i32(iy + p.pad_top) - oy * i32(p.sh))) * p.pw
                + u32(i32(ix + p.pad_left) - ox * i32(p.sw));
            let o = ((n * p.oh + u32(oy)) * p.ow + u32(ox)) * p.c + c;
            if (u32(arg[p.aux_base + o]) == tap) {
                g += src[p.src_base + o];
            }
        }
    }
    dst[p.dst_base + i] = g;
}

// Taps of output (oy, ox)'s window that fall inside the image.
fn window_count(oy: u32, ox: u32) -> f32 {
    let y0 = max(i32(oy * p.sh) - i32(p.pad_top), 0);
    let y1 = min(i32(oy * p.sh + p.ph) - i32(p.pad_top), i32(p.h));
    let x0 = max(i32(ox * p.sw) - i32(p.pad_left), 0);
    let x1 = min(i32(ox * p.sw + p.pw) - i32(p.pad_left), i32(p.w));
    return f32(max(y1 - y0, 0) * max(x1 - x0, 0));
}

// y = mean of the window's taps inside the image.
@compute @workgroup_size(256)
fn avg_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_id(gid, groups);
    if (i >= p.n * p.oh * p.ow * p.c) {
        return;
    }
    let o = split_index(i, p.oh, p.ow);
    let n = o.x;
    let oy = o.y;
    let ox = o.z;
    let c = o.w;
    var s = 0.0;
    for (var ky = 0u; ky < p.ph; ky++) {
        let iy = i32(oy * p.sh + ky) - i32(p.pad_top);
        if (iy < 0 || iy >= i32(p.h)) {
            continue;
        }
        for (var kx = 0u; kx < p.pw; kx++) {
            let ix = i32(ox * p.sw + kx) - i32(p.pad_left);
            if (ix < 0 || ix >= i32(p.w)) {
                continue;
            }
            s += src[p.src_base + ((n * p.h + u32(iy)) * p.w + u32(ix)) * p.c + c];
        }
    }
    dst[p.dst_base + i] = s / window_count(oy, ox);
}

// dx = sum over covering windows of dy / taps(window). src = dy, dst = dx.
@compute @workgroup_size(256)
fn avg_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_id(gid, groups);
    if (i >= p.n * p.h * p.w * p.c) {
        return;
    }
    let q = split_index(i, p.h, p.w);
    let n = q.x;
    let iy = q.y;
    let ix = q.z;
    let c = q.w;
    let ry = covering(iy, p.ph, p.sh, p.pad_top, p.oh);
    let rx = covering(ix, p.pw, p.sw, p.pad_left, p.ow);
    var g = 0.0;
    for (var oy = ry.x; oy <= ry.y; oy++) {
        for (var ox = rx.x; ox <= rx.y; ox++) {
            let o = ((n * p.oh + u32(oy)) * p.ow + u32(ox)) * p.c + c;
            g += src[p.src_base + o] / window_count(u32(oy), u32(ox));
        }
    }
    dst[p.dst_base + i] = g;
}
