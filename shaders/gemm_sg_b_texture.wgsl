// How the subgroup GEMM (gemm_sg.wgsl) reads a packed B: from an rgba32float operand texture,
// filled by copying pack.wgsl's output into it, vec4 t at texel (t mod 2^TEX_SHIFT,
// t / 2^TEX_SHIFT). On lavapipe a texel fetch is one branch-free gather of a lane's vec4, where a
// storage load whose address differs per lane is a loop over the lanes with two branches per
// component. Appended for ShaderId::Conv2dSgTexture and MatmulSgTexture; the op module's src_b
// is then a placeholder (or the plain B it reads where PACKED_B is 0).

override TEX_SHIFT: u32 = 12u;

@group(0) @binding(5) var tex_b: texture_2d<f32>;

// vec4 t of B packed by pack.wgsl (t from packed_b_index).
fn packed_b4(t: u32) -> vec4<f32> {
    return textureLoad(tex_b, vec2<u32>(t & ((1u << TEX_SHIFT) - 1u), t >> TEX_SHIFT), 0);
}
