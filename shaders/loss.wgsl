// Losses from logits, their gradients, and per-sample accuracy. The model's last activation
// (sigmoid / softmax) is folded into the loss, as Keras' TensorFlow backend does when it finds
// the logits behind a sigmoid/softmax output, so no probability ever rounds to 0 or 1.
//
//   binary:      loss = max(z,0) - z*y + log(1 + exp(-|z|))          dL/dz = sigmoid(z) - y
//   categorical: loss = logsumexp(z) * sum_j y_j - sum_j y_j z_j     dL/dz = softmax(z) * sum(y) - y
//
// CLIP = 1 gives Keras' probability path instead (from_logits=False on the JAX/torch backends):
// p is clipped to [EPS, 1 - EPS] with EPS = 1e-7 before the log, which caps the per-sample loss
// at -ln(1e-7) = 16.118 and gives zero gradient through a clipped probability.
// Gradients are scaled by `grad_scale` (1/batch for a mean loss).

override CLIP: u32 = 0u;
const EPS: f32 = 1e-7;

struct Params {
    rows: u32,
    cols: u32,
    grad_scale: f32,
    _p0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<f32>;
@group(0) @binding(3) var<storage, read_write> per_sample: array<f32>;
@group(0) @binding(4) var<storage, read_write> grad: array<f32>;

fn softplus(x: f32) -> f32 {
    return max(x, 0.0) + log(1.0 + exp(-abs(x)));
}

fn sigmoid(x: f32) -> f32 {
    if (x >= 0.0) {
        return 1.0 / (1.0 + exp(-x));
    }
    let e = exp(x);
    return e / (1.0 + e);
}

// logits (N,1) or (N,), labels the same; per_sample (N,); grad like logits.
@compute @workgroup_size(64)
fn bce_logits(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= p.rows) {
        return;
    }
    let z = logits[i];
    let y = labels[i];
    let prob = sigmoid(z);
    // ln p = -softplus(-z), ln(1-p) = -softplus(z)
    var log_p = -softplus(-z);
    var log_q = -softplus(z);
    var g = prob - y;
    if (CLIP == 1u) {
        let lo = log(EPS);
        let hi = log(1.0 - EPS);
        if (prob < EPS) {
            log_p = lo;
            log_q = hi;
            g = 0.0;
        } else if (prob > 1.0 - EPS) {
            log_p = hi;
            log_q = lo;
            g = 0.0;
        }
    }
    per_sample[i] = -(y * log_p + (1.0 - y) * log_q);
    grad[i] = g * p.grad_scale;
}

// logits (N,C), labels (N,C) one-hot or soft; per_sample (N,); grad (N,C).
@compute @workgroup_size(64)
fn cce_logits(@builtin(global_invocation_id) gid: vec3<u32>) {
    let r = gid.x;
    if (r >= p.rows) {
        return;
    }
    let base = r * p.cols;
    var m = -3.402823e38;
    for (var j = 0u; j < p.cols; j++) {
        m = max(m, logits[base + j]);
    }
    var s = 0.0;
    for (var j = 0u; j < p.cols; j++) {
        s += exp(logits[base + j] - m);
    }
    let lse = m + log(s);
    var loss = 0.0;
    // Sum of the labels whose probability was not clipped: the softmax part of the gradient.
    var y_in = 0.0;
    for (var j = 0u; j < p.cols; j++) {
        let y = labels[base + j];
        var log_pj = logits[base + j] - lse;
        if (CLIP == 1u) {
            let clipped = clamp(log_pj, log(EPS), log(1.0 - EPS));
            if (clipped == log_pj) {
                y_in += y;
            }
            log_pj = clipped;
        } else {
            y_in += y;
        }
        loss -= y * log_pj;
    }
    per_sample[r] = loss;
    for (var j = 0u; j < p.cols; j++) {
        let y = labels[base + j];
        let log_pj = logits[base + j] - lse;
        var y_own = y;
        if (CLIP == 1u && (log_pj < log(EPS) || log_pj > log(1.0 - EPS))) {
            y_own = 0.0;
        }
        grad[base + j] = (exp(log_pj) * y_in - y_own) * p.grad_scale;
    }
}

// 1 where sigmoid(z) > 0.5 (z > 0) agrees with y > 0.5, as Keras' binary_accuracy.
@compute @workgroup_size(64)
fn accuracy_binary(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= p.rows) {
        return;
    }
    per_sample[i] = select(0.0, 1.0, (logits[i] > 0.0) == (labels[i] > 0.5));
}

// 1 where argmax(z) == argmax(y) (first maximum wins, as tf.argmax).
@compute @workgroup_size(64)
fn accuracy_categorical(@builtin(global_invocation_id) gid: vec3<u32>) {
    let r = gid.x;
    if (r >= p.rows) {
        return;
    }
    let base = r * p.cols;
    var zi = 0u;
    var yi = 0u;
    for (var j = 1u; j < p.cols; j++) {
        if (logits[base + j] > logits[base + zi]) {
            zi = j;
        }
        if (labels[base + j] > labels[base + yi]) {
            yi = j;
        }
    }
    per_sample[r] = select(0.0, 1.0, zi == yi);
}
