// Optimizer updates, in place on the GPU, with Keras' formulas and defaults. g is the gradient of
// the data loss; weight penalties add their own gradient first:
//   g' = g + l1 * sign(w) + 2 * l2 * w         (Keras L1L2: loss += l1*sum|w| + l2*sum w^2)
// sgd      m = momentum*m - lr*g';  w += m   (nesterov: w += momentum*m - lr*g')
// rmsprop  v = rho*v + (1-rho)*g'^2;  w -= lr * g' / sqrt(v + eps)       (eps inside the root)
// adam     m += (g'-m)(1-b1);  v += (g'^2-v)(1-b2);  w -= alpha * m / (sqrt(v) + eps)
//          with alpha = lr * sqrt(1-b2^t) / (1-b1^t) folded on the host (the "epsilon hat" form)

struct Params {
    len: u32,
    nesterov: u32,
    _p0: u32,
    _p1: u32,
    lr: f32,       // adam: alpha
    beta1: f32,    // sgd: momentum, rmsprop: rho, adam: beta1
    beta2: f32,
    eps: f32,
    l1: f32,
    l2: f32,
    _p2: f32,
    _p3: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> grad: array<f32>;
@group(0) @binding(2) var<storage, read_write> param: array<f32>;
@group(0) @binding(3) var<storage, read_write> slot1: array<f32>;
@group(0) @binding(4) var<storage, read_write> slot2: array<f32>;

fn linear_id(gid: vec3<u32>, groups: vec3<u32>) -> u32 {
    return gid.x + gid.y * groups.x * 256u;
}

fn penalised(i: u32) -> f32 {
    let w = param[i];
    return grad[i] + p.l1 * sign(w) + 2.0 * p.l2 * w;
}

@compute @workgroup_size(256)
fn sgd(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_id(gid, groups);
    if (i >= p.len) {
        return;
    }
    let g = penalised(i);
    let m = p.beta1 * slot1[i] - p.lr * g;
    slot1[i] = m;
    if (p.nesterov == 1u) {
        param[i] = param[i] + p.beta1 * m - p.lr * g;
    } else {
        param[i] = param[i] + m;
    }
}

@compute @workgroup_size(256)
fn rmsprop(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_id(gid, groups);
    if (i >= p.len) {
        return;
    }
    let g = penalised(i);
    let v = p.beta1 * slot1[i] + (1.0 - p.beta1) * g * g;
    slot1[i] = v;
    param[i] = param[i] - p.lr * g / sqrt(v + p.eps);
}

@compute @workgroup_size(256)
fn adam(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_id(gid, groups);
    if (i >= p.len) {
        return;
    }
    let g = penalised(i);
    let m = slot1[i] + (g - slot1[i]) * (1.0 - p.beta1);
    let v = slot2[i] + (g * g - slot2[i]) * (1.0 - p.beta2);
    slot1[i] = m;
    slot2[i] = v;
    param[i] = param[i] - p.lr * m / (sqrt(v) + p.eps);
}

// slot1 = l1*|w| + l2*w^2 per element; summed by reduce.wgsl into the penalty added to the loss.
@compute @workgroup_size(256)
fn penalty(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_id(gid, groups);
    if (i >= p.len) {
        return;
    }
    let w = param[i];
    slot1[i] = p.l1 * abs(w) + p.l2 * w * w;
}
