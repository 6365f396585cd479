// The uniform block of conv2d.wgsl and conv2d_sg.wgsl, one definition for both (prepended to
// each module by gpu::ShaderId::source); the host writes it as ops::conv::Params.

struct Params {
    n: u32,        // batch items in this dispatch
    h: u32,
    w: u32,
    oh: u32,
    ow: u32,
    pad_top: u32,
    pad_left: u32,
    a_base: u32,   // element offset of this chunk inside binding a
    c_base: u32,   // element offset of this chunk inside binding c
    b_base: u32,   // element offset of this chunk inside binding b (dy in mode 2)
    slices: u32,   // K slices (mode 2), 1 otherwise
    _p0: u32,
}
