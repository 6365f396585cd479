// The uniform block of matmul.wgsl and matmul_sg.wgsl, one definition for both (prepended to
// each module by gpu::ShaderId::source); the host writes it as ops::dense::Params.

struct Params {
    rows: u32,
    inp: u32,
    out: u32,
    _p0: u32,
}
