// The fused LIF recurrence's kernels: sj_spatial/backends/cuda_lif.py computes their
// launches (one block per sample, one thread per neuron) and describes the algorithm.
// The file reads no compile-time constants (cuda_lif.MACROS is empty).

template <typename T>
__device__ __forceinline__ T sjs_surrogate_grad(T x, int kind, T alpha)
{
    if (kind == 0) {  // Sigmoid: alpha * sg * (1 - sg), sg = sigmoid(alpha * x)
        const T sg = (T)1 / ((T)1 + exp(-alpha * x));
        return alpha * sg * ((T)1 - sg);
    }
    // ATan: alpha / 2 / (1 + (pi / 2 * alpha * x)^2)
    const T ax = (T)1.5707963267948966 * alpha * x;
    return alpha / (T)2 / ((T)1 + ax * ax);
}

// One block per sample b, one thread per neuron j. s_hist: [window + T, N, n], rows 0..window-1
// are zeros (the time before the sequence) and row window + t receives s[t]; h_seq: [T, N, n]
// membrane potential before reset. w_near_t/w_far_t/taps_t are [in, out] (coalesced over j).
template <typename T>
__device__ void sjs_lif_forward(
    const T* __restrict__ x, const T* __restrict__ w_near_t, const T* __restrict__ w_far_t,
    const int* __restrict__ taps_t, const T* __restrict__ bias, const T* __restrict__ v0,
    T* __restrict__ s_hist, T* __restrict__ h_seq, T* __restrict__ v_last, T* __restrict__ c_last,
    int steps, int N, int n, int window, T tau, T v_threshold, T v_reset, int hard_reset,
    int decay_input, T syn_decay)
{
    const int b = blockIdx.x;
    const int j = threadIdx.x;
    const bool active = j < n;
    const long long row = (long long)N * n;
    const T v_rest = hard_reset ? v_reset : (T)0;
    T v = active ? v0[b * n + j] : (T)0;
    T c = (T)0;  // synaptic current (syn_decay 0: no synapse, c is the input itself)
    for (int t = 0; t < steps; ++t) {
        if (active) {
            T r = bias[j];
            const long long now = (long long)(window + t) * row + (long long)b * n;
            for (int i = 0; i < n; ++i) {
                const int k = taps_t[i * n + j];
                const long long at = now - (long long)(k + 1) * row + i;  // s[t - 1 - k, i]
                r += w_near_t[i * n + j] * s_hist[at] + w_far_t[i * n + j] * s_hist[at - row];
            }
            c = syn_decay * c + (x[(long long)t * row + (long long)b * n + j] + r);
            const T in = c;
            const T h = decay_input ? v + (in - (v - v_rest)) / tau : v - (v - v_rest) / tau + in;
            const T spike = (h - v_threshold) >= (T)0 ? (T)1 : (T)0;
            h_seq[(long long)t * row + (long long)b * n + j] = h;
            s_hist[now + j] = spike;
            v = hard_reset ? (spike != (T)0 ? v_reset : h) : h - spike * v_threshold;
        }
        __syncthreads();  // s[t] is complete before any thread reads it
    }
    if (active) {
        v_last[b * n + j] = v;
        c_last[b * n + j] = c;
    }
}

// Reverse time loop, one block per sample, one thread per neuron i. grad_in: [T + window, N, n]
// with rows T.. zero, so reads of later steps need no bounds checks; row t receives
// dL/d(input current)[t], which is dL/dx[t] and dL/dr[t]. w_near/w_far/taps are [out, in].
template <typename T>
__device__ void sjs_lif_backward(
    const T* __restrict__ grad_s, const T* __restrict__ grad_v_last,
    const T* __restrict__ grad_c_last, const T* __restrict__ w_near,
    const T* __restrict__ w_far, const int* __restrict__ taps, const T* __restrict__ s_hist,
    const T* __restrict__ h_seq, T* __restrict__ grad_in, T* __restrict__ grad_v0,
    int steps, int N, int n, int window, T tau, T v_threshold, T v_reset, int hard_reset,
    int decay_input, int detach_reset, int surrogate, T alpha, T syn_decay)
{
    const int b = blockIdx.x;
    const int i = threadIdx.x;
    const bool active = i < n;
    const long long row = (long long)N * n;
    T gv = active ? grad_v_last[b * n + i] : (T)0;  // dL/dv[t]
    T gc = active ? grad_c_last[b * n + i] : (T)0;  // dL/dc[t] from later steps
    for (int t = steps - 1; t >= 0; --t) {
        if (active) {
            const long long here = (long long)t * row + (long long)b * n;
            // s[t, i] reaches r[t + 1 + k, j] with weight w_near and r[t + 2 + k, j] with w_far.
            T gs = grad_s[here + i];
            for (int j = 0; j < n; ++j) {
                const int k = taps[j * n + i];
                const long long at = here + (long long)(k + 1) * row + j;
                gs += w_near[j * n + i] * grad_in[at] + w_far[j * n + i] * grad_in[at + row];
            }
            const T h = h_seq[here + i];
            const T spike = s_hist[(long long)window * row + here + i];
            const T dv_dh = hard_reset ? (T)1 - spike : (T)1;
            const T dv_ds = detach_reset ? (T)0 : (hard_reset ? v_reset - h : -v_threshold);
            const T gh = gv * dv_dh
                + (gs + gv * dv_ds) * sjs_surrogate_grad(h - v_threshold, surrogate, alpha);
            gc += decay_input ? gh / tau : gh;  // c[t] = syn_decay * c[t-1] + x[t] + r[t]
            grad_in[here + i] = gc;
            gc *= syn_decay;
            gv = gh * ((T)1 - (T)1 / tau);
        }
        __syncthreads();  // grad_in[t] is complete before step t - 1 reads it
    }
    if (active) grad_v0[b * n + i] = gv;
}

#define SJS_LIF(TAG, T)                                                                     \
    extern "C" __global__ void sjs_lif_forward_##TAG(                                       \
        const T* x, const T* w_near_t, const T* w_far_t, const int* taps_t, const T* bias,  \
        const T* v0, T* s_hist, T* h_seq, T* v_last, T* c_last, int steps, int N, int n,    \
        int window, T tau, T v_threshold, T v_reset, int hard_reset, int decay_input,       \
        T syn_decay)                                                                        \
    {                                                                                       \
        sjs_lif_forward<T>(x, w_near_t, w_far_t, taps_t, bias, v0, s_hist, h_seq, v_last,   \
                           c_last, steps, N, n, window, tau, v_threshold, v_reset,          \
                           hard_reset, decay_input, syn_decay);                             \
    }                                                                                       \
    extern "C" __global__ void sjs_lif_backward_##TAG(                                      \
        const T* grad_s, const T* grad_v_last, const T* grad_c_last, const T* w_near,       \
        const T* w_far, const int* taps, const T* s_hist, const T* h_seq, T* grad_in,       \
        T* grad_v0, int steps, int N, int n, int window, T tau, T v_threshold, T v_reset,   \
        int hard_reset, int decay_input, int detach_reset, int surrogate, T alpha,          \
        T syn_decay)                                                                        \
    {                                                                                       \
        sjs_lif_backward<T>(grad_s, grad_v_last, grad_c_last, w_near, w_far, taps, s_hist,  \
                            h_seq, grad_in, grad_v0, steps, N, n, window, tau,              \
                            v_threshold, v_reset, hard_reset, decay_input, detach_reset,    \
                            surrogate, alpha, syn_decay);                                   \
    }

SJS_LIF(f32, float)
SJS_LIF(f64, double)
