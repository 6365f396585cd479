// 2-D convolution on the subgroup GEMM (gemm_sg.wgsl), for channel counts that are multiples of
// 4 so that every operand is read and written as whole vec4s along channels. Same layouts and
// products as conv2d.wgsl (NHWC input, HWIO kernel):
//   MODE 0 forward     y  (N*OH*OW, COUT) = im2col(x) * w + bias (then ReLU when RELU = 1);
//                      entry gemm_sg, A read along K = (kh, kw, ci)
//   MODE 1 input grad  dx (N*H*W, CIN) = gather(dy) (N*H*W, KH*KW*COUT) * w'; entry gemm_sg,
//                      w'[(kh,kw,co), ci] = w[kh,kw,ci,co]
//   MODE 2 weight grad dw (KH*KW*CIN, COUT) = im2col(x)^T * dy; entry gemm_sg_m, A read along
//                      M = (kh, kw, ci) at one output position k; ACCUM and slices as conv2d.wgsl
// B (w, w' or dy) is bound packed into 64-column tiles by pack.wgsl when PACKED_B = 1 (always
// for MODE 1; the host skips packing when only one row tile would read B).
// Element offsets in Params (a_base, c_base) are multiples of 4 here, except a_base in
// MODES 0 and 2 with CIN not a multiple of 4 (an RGB input): those gather A's four values one
// by one, each from its own tap. (The input gradient of such a layer, MODE 1, would write
// partial vec4s and runs on conv2d.wgsl.)

override MODE: u32 = 0u;
override KH: u32 = 3u;
override KW: u32 = 3u;
override SH: u32 = 1u;
override SW: u32 = 1u;
override CIN: u32 = 4u;
override COUT: u32 = 4u;
override RELU: u32 = 0u;
override ACCUM: u32 = 0u;
override PACKED_B: u32 = 1u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src_a: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> src_b: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> bias: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> dst: array<vec4<f32>>;

fn gemm_dims() -> vec3<u32> {
    switch MODE {
        case 0u: { return vec3<u32>(p.n * p.oh * p.ow, COUT, KH * KW * CIN); }
        case 1u: { return vec3<u32>(p.n * p.h * p.w, CIN, KH * KW * COUT); }
        default: { return vec3<u32>(KH * KW * CIN, COUT, p.n * p.oh * p.ow); }
    }
}

fn gemm_slices() -> u32 {
    return max(p.slices, 1u);
}

fn gemm_products() -> u32 {
    return 1u;
}

// One row of A, decoded once: the image's first row index `img` (in rows of the tensor A reads)
// and the row's anchor (y, x) that each tap offsets.
struct ARow {
    img: u32,
    y: i32,
    x: i32,
}

fn a_row(m: u32) -> ARow {
    if (MODE == 0u) {
        // Output position (n, oh, ow); tap (kh, kw) reads x[n, oh*SH + kh - pad, ow*SW + kw - pad].
        let ow = m % p.ow;
        let t = m / p.ow;
        return ARow((t / p.oh) * p.h, i32((t % p.oh) * SH) - i32(p.pad_top),
                    i32(ow * SW) - i32(p.pad_left));
    }
    // Input position (n, ih, iw); tap (kh, kw) was fed to output ((ih + pad - kh) / SH, ...).
    let iw = m % p.w;
    let t = m / p.w;
    return ARow((t / p.h) * p.oh, i32(t % p.h + p.pad_top), i32(iw + p.pad_left));
}

// x at tap (kh, kw) of row r, channel ci, as a scalar (MODE 0 with CIN % 4 != 0).
fn x_scalar(r: ARow, k: u32) -> f32 {
    if (k >= KH * KW * CIN) {
        return 0.0;
    }
    let tap = k / CIN;
    let ih = r.y + i32(tap / KW);
    let iw = r.x + i32(tap % KW);
    if (ih < 0 || iw < 0 || ih >= i32(p.h) || iw >= i32(p.w)) {
        return 0.0;
    }
    let e = p.a_base + ((r.img + u32(ih)) * p.w + u32(iw)) * CIN + k % CIN;
    return src_a[e / 4u][e % 4u];
}

fn load_a4(r: ARow, k: u32) -> vec4<f32> {
    if (MODE == 0u && CIN % 4u != 0u) {
        return vec4<f32>(x_scalar(r, k), x_scalar(r, k + 1u), x_scalar(r, k + 2u),
                         x_scalar(r, k + 3u));
    }
    if (MODE == 0u) {
        let ci = k % CIN;
        let tap = k / CIN;
        let ih = r.y + i32(tap / KW);
        let iw = r.x + i32(tap % KW);
        if (ih < 0 || iw < 0 || ih >= i32(p.h) || iw >= i32(p.w)) {
            return vec4<f32>(0.0);
        }
        return src_a[(p.a_base + ((r.img + u32(ih)) * p.w + u32(iw)) * CIN + ci) / 4u];
    }
    let co = k % COUT;
    let tap = k / COUT;
    let th = r.y - i32(tap / KW);
    let tw = r.x - i32(tap % KW);
    if (th < 0 || tw < 0) {
        return vec4<f32>(0.0);
    }
    let uh = u32(th);
    let uw = u32(tw);
    if (uh % SH != 0u || uw % SW != 0u || uh / SH >= p.oh || uw / SW >= p.ow) {
        return vec4<f32>(0.0);
    }
    return src_a[(p.a_base + ((r.img + uh / SH) * p.ow + uw / SW) * COUT + co) / 4u];
}

// MODE 2: where row m = (kh, kw, ci) of A reads x at output position k: the element index into
// src_a, and whether that tap falls inside the image (outside it A is 0, the zero padding).
struct XAt {
    e: u32,
    inside: bool,
}

fn x_at_m(m: u32, k: u32) -> XAt {
    let ci = m % CIN;
    let tap = m / CIN;
    let ow = k % p.ow;
    let t = k / p.ow;
    let ih = i32((t % p.oh) * SH + tap / KW) - i32(p.pad_top);
    let iw = i32(ow * SW + tap % KW) - i32(p.pad_left);
    if (ih < 0 || iw < 0 || ih >= i32(p.h) || iw >= i32(p.w)) {
        return XAt(0u, false);
    }
    return XAt(p.a_base + (((t / p.oh) * p.h + u32(ih)) * p.w + u32(iw)) * CIN + ci, true);
}

// MODE 2 with CIN % 4 != 0 (an RGB input): A[m, k] for the single row m, zero past the last row.
fn x_scalar_m(m: u32, k: u32) -> f32 {
    let x = x_at_m(m, k);
    if (m >= KH * KW * CIN || !x.inside) {
        return 0.0;
    }
    return src_a[x.e / 4u][x.e % 4u];
}

// MODE 2: A[m..m+3, k] = x at output position k through tap (kh, kw), channels ci..ci+3; with
// CIN not a multiple of 4 the four rows may straddle taps and are gathered one by one.
fn load_a4m(m: u32, k: u32) -> vec4<f32> {
    if (CIN % 4u != 0u) {
        return vec4<f32>(x_scalar_m(m, k), x_scalar_m(m + 1u, k), x_scalar_m(m + 2u, k),
                         x_scalar_m(m + 3u, k));
    }
    let x = x_at_m(m, k);
    if (!x.inside) {
        return vec4<f32>(0.0);
    }
    return src_a[x.e / 4u];
}

fn load_b4(k: u32, n4: u32) -> vec4<f32> {
    if (PACKED_B == 1u) {
        // From src_b or from an operand texture, as the appended gemm_sg_b_*.wgsl says.
        return packed_b4(packed_b_index(k, n4, gemm_dims().z));
    }
    if (MODE == 0u) {
        return src_b[k * (COUT / 4u) + n4];
    }
    return src_b[p.b_base / 4u + k * (COUT / 4u) + n4];
}

fn store_c4(m: u32, n4: u32, v: vec4<f32>, slice: u32) {
    switch MODE {
        case 0u: {
            var y = v + bias[n4];
            if (RELU == 1u) {
                y = max(y, vec4<f32>(0.0));
            }
            dst[p.c_base / 4u + m * (COUT / 4u) + n4] = y;
        }
        case 1u: { dst[p.c_base / 4u + m * (CIN / 4u) + n4] = v; }
        default: {
            let i = slice * (KH * KW * CIN * COUT / 4u) + m * (COUT / 4u) + n4;
            if (ACCUM == 1u) {
                dst[i] = dst[i] + v;
            } else {
                dst[i] = v;
            }
        }
    }
}
