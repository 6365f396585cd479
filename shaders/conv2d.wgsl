// 2-D convolution, NHWC input (N,H,W,CIN), HWIO kernel (KH,KW,CIN,COUT), output (N,OH,OW,COUT).
// All three products are implicit GEMMs run by gemm_core.wgsl; MODE picks the index maps:
//   MODE 0 forward      y  (N*OH*OW, COUT) = im2col(x) (N*OH*OW, KH*KW*CIN) * w (KH*KW*CIN, COUT)
//                       + bias, then ReLU when RELU = 1.
//   MODE 1 input grad   dx (N*H*W, CIN) = gather(dy) (N*H*W, KH*KW*COUT) * w' (KH*KW*COUT, CIN)
//                       where w'[(kh,kw,co), ci] = w[kh,kw,ci,co] and gather(dy) picks the output
//                       position each (input position, tap) fed: dx = sum over taps of dy * w.
//   MODE 2 weight grad  dw (KH*KW*CIN, COUT) = im2col(x)^T (KH*KW*CIN, N*OH*OW) * dy (N*OH*OW, COUT)
//                       added to dw's old value when ACCUM = 1 (batch chunks of a big tensor).
//                       With p.slices > 1 the sum over N*OH*OW is split: slice s writes its
//                       partial dw to c[s * KH*KW*CIN*COUT ..], and the host adds the slices.
// Bindings: a = x (modes 0, 2) or dy (mode 1); b = w (modes 0, 1) or dy (mode 2); bias (mode 0);
// c = output. Shapes that change with the batch are uniforms; the kernel geometry and channel
// counts are override constants so index divisions compile to constants.

override MODE: u32 = 0u;
override KH: u32 = 3u;
override KW: u32 = 3u;
override SH: u32 = 1u;
override SW: u32 = 1u;
override CIN: u32 = 1u;
override COUT: u32 = 1u;
override RELU: u32 = 0u;
override ACCUM: u32 = 0u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src_a: array<f32>;
@group(0) @binding(2) var<storage, read> src_b: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> dst: array<f32>;

fn gemm_dims() -> vec3<u32> {
    switch MODE {
        case 0u: { return vec3<u32>(p.n * p.oh * p.ow, COUT, KH * KW * CIN); }
        case 1u: { return vec3<u32>(p.n * p.h * p.w, CIN, KH * KW * COUT); }
        default: { return vec3<u32>(KH * KW * CIN, COUT, p.n * p.oh * p.ow); }
    }
}

// x[n, oh*SH + kh - pad_top, ow*SW + kw - pad_left, ci], zero in the padding.
fn x_tap(n: u32, oh: u32, ow: u32, kh: u32, kw: u32, ci: u32) -> f32 {
    let ih = i32(oh * SH + kh) - i32(p.pad_top);
    let iw = i32(ow * SW + kw) - i32(p.pad_left);
    if (ih < 0 || iw < 0 || ih >= i32(p.h) || iw >= i32(p.w)) {
        return 0.0;
    }
    return src_a[p.a_base + ((n * p.h + u32(ih)) * p.w + u32(iw)) * CIN + ci];
}

fn load_a(m: u32, k: u32) -> f32 {
    switch MODE {
        case 0u: {
            let ow = m % p.ow;
            let t = m / p.ow;
            let ci = k % CIN;
            let tk = k / CIN;
            return x_tap(t / p.oh, t % p.oh, ow, tk / KW, tk % KW, ci);
        }
        case 1u: {
            // Input position (n, ih, iw) and tap (kh, kw, co): the output row that read this
            // input through this tap is oh = (ih + pad_top - kh) / SH when that divides exactly.
            let iw = m % p.w;
            let t = m / p.w;
            let ih = t % p.h;
            let n = t / p.h;
            let co = k % COUT;
            let tk = k / COUT;
            let kw = tk % KW;
            let kh = tk / KW;
            let th = i32(ih + p.pad_top) - i32(kh);
            let tw = i32(iw + p.pad_left) - i32(kw);
            if (th < 0 || tw < 0) {
                return 0.0;
            }
            let uh = u32(th);
            let uw = u32(tw);
            if (uh % SH != 0u || uw % SW != 0u) {
                return 0.0;
            }
            let oh = uh / SH;
            let ow = uw / SW;
            if (oh >= p.oh || ow >= p.ow) {
                return 0.0;
            }
            return src_a[p.a_base + ((n * p.oh + oh) * p.ow + ow) * COUT + co];
        }
        default: {
            let ci = m % CIN;
            let tm = m / CIN;
            let ow = k % p.ow;
            let t = k / p.ow;
            return x_tap(t / p.oh, t % p.oh, ow, tm / KW, tm % KW, ci);
        }
    }
}

fn load_b(k: u32, n: u32) -> f32 {
    switch MODE {
        case 0u: { return src_b[k * COUT + n]; }
        case 1u: {
            let co = k % COUT;
            let tap = k / COUT;
            return src_b[(tap * CIN + n) * COUT + co];
        }
        default: { return src_b[p.b_base + k * COUT + n]; }
    }
}

fn gemm_slices() -> u32 {
    return max(p.slices, 1u);
}

fn gemm_products() -> u32 {
    return 1u;
}

fn store_c(m: u32, n: u32, acc: f32, slice: u32) {
    switch MODE {
        case 0u: {
            var v = acc + bias[n];
            if (RELU == 1u) {
                v = max(v, 0.0);
            }
            dst[p.c_base + m * COUT + n] = v;
        }
        case 1u: { dst[p.c_base + m * CIN + n] = acc; }
        default: {
            let i = slice * (KH * KW * CIN * COUT) + m * COUT + n;
            if (ACCUM == 1u) {
                dst[i] = dst[i] + acc;
            } else {
                dst[i] = acc;
            }
        }
    }
}
