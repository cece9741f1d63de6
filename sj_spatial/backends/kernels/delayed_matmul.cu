// The delayed matmul's kernels: sj_spatial/backends/cuda.py computes their launches, and
// its docstring describes the algorithm.
//
// Compile-time constants are defined once, in Python (cuda.MACROS), and reach this file as
// -D options (cuda.DEFINES) from every compiler that builds it: CuPy's NVRTC, nvcc and the
// tests' CPU emulator.
//   SJS_STRIDE                   elements per shared-memory row (8 batch entries + padding)
//   SJS_GATHER_OUTPUTS_PER_WARP  outputs one warp of sjs_gather accumulates (OW)
//   SJS_WGRAD_OUTPUTS_PER_WARP   outputs one warp of sjs_wgrad reduces (OG)
//   SJS_MAX_THREADS              threads per block, the kernels' __launch_bounds__
#ifndef SJS_STRIDE
#error "SJS_STRIDE is not defined: compile with sj_spatial.backends.cuda.DEFINES"
#endif
#ifndef SJS_GATHER_OUTPUTS_PER_WARP
#error "SJS_GATHER_OUTPUTS_PER_WARP is not defined: compile with sj_spatial.backends.cuda.DEFINES"
#endif
#ifndef SJS_WGRAD_OUTPUTS_PER_WARP
#error "SJS_WGRAD_OUTPUTS_PER_WARP is not defined: compile with sj_spatial.backends.cuda.DEFINES"
#endif
#ifndef SJS_MAX_THREADS
#error "SJS_MAX_THREADS is not defined: compile with sj_spatial.backends.cuda.DEFINES"
#endif

// Synapse record read by every lane of a warp at once (one 16-byte shared load).
template <typename T>
struct __align__(16) SjsSynapse {
    T c0;  // coefficient of src row u + s
    T c1;  // coefficient of src row u + s + 1
    int shift;
    int pad;
};

template <typename T>
__device__ __forceinline__ T sjs_warp_sum(T v) {
    for (int offset = 16; offset > 0; offset >>= 1) {
        v += __shfl_down_sync(0xffffffffu, v, offset);
    }
    return v;
}

// dst[o][u][n] = sum_c coef0[o][c] * src[c][u + s[o][c]][n]
//                    + coef1[o][c] * src[c][u + s[o][c] + 1][n]
// for o < O, u < U, n < N, with 0 <= s < D and src holding at least
// ceil(U / 4R) * 4R + D rows per channel (zero where there is no data).
// Block (32, W): lane = 8 batch entries x 4 groups of R consecutive rows; warp w owns
// outputs o = ot * OW * W + w * OW + [0, OW). Grid x enumerates (output tile ot, row tile,
// batch tile), output tiles fastest, so that blocks running together read the same input
// rows through L2; grid z: slices of c_slice inputs, slice z writing its partial sums to
// dst + z O U N.
// Shared memory: CC channels x (4R + D) rows x SJS_STRIDE, then OW * W x CC synapses.
template <typename T, int R, int OW>
__device__ __forceinline__ void sjs_gather(
    const T* __restrict__ src, const T* __restrict__ coef0, const T* __restrict__ coef1,
    const int* __restrict__ shift, T* __restrict__ dst, int C, int O, int N, int U,
    int src_rows, int D, int CC, int c_slice)
{
    extern __shared__ __align__(16) unsigned char sjs_smem[];
    const int H = 4 * R + D;
    const int win_bytes = ((CC * H * SJS_STRIDE * (int)sizeof(T) + 15) / 16) * 16;
    T* win = reinterpret_cast<T*>(sjs_smem);
    SjsSynapse<T>* syn = reinterpret_cast<SjsSynapse<T>*>(sjs_smem + win_bytes);

    const int lane = threadIdx.x;
    const int warp = threadIdx.y;
    const int tid = warp * 32 + lane;
    const int nthreads = 32 * blockDim.y;
    const int OB = OW * blockDim.y;
    const int o_tiles = (O + OB - 1) / OB;
    const int u_tiles = (U + 4 * R - 1) / (4 * R);
    const int tile = blockIdx.x / o_tiles;
    const int ob = (blockIdx.x % o_tiles) * OB;
    const int u0 = (tile % u_tiles) * 4 * R;
    const int n0 = (tile / u_tiles) * 8;
    const int nl = lane & 7;
    const int ug = lane >> 3;
    const int c_begin = blockIdx.z * c_slice;
    const int c_end = min(C, c_begin + c_slice);
    dst += (long long)blockIdx.z * O * U * N;

    T acc[OW][R];
#pragma unroll
    for (int ow = 0; ow < OW; ++ow) {
#pragma unroll
        for (int r = 0; r < R; ++r) acc[ow][r] = T(0);
    }

    for (int c0 = c_begin; c0 < c_end; c0 += CC) {
        const int cn = min(CC, c_end - c0);
        __syncthreads();
        for (int e = tid; e < cn * H * 8; e += nthreads) {
            const int col = e & 7;
            const int rowc = e >> 3;
            const int cc = rowc / H;
            const int row = rowc - cc * H;
            const int n = n0 + col;
            T v = T(0);
            if (n < N) v = src[((long long)(c0 + cc) * src_rows + u0 + row) * N + n];
            win[rowc * SJS_STRIDE + col] = v;
        }
        for (int e = tid; e < OB * cn; e += nthreads) {
            const int ol = e / cn;
            const int cc = e - ol * cn;
            const int o = ob + ol;
            SjsSynapse<T> p;
            p.c0 = T(0);
            p.c1 = T(0);
            p.shift = 0;
            p.pad = 0;
            if (o < O) {
                const long long i = (long long)o * C + c0 + cc;
                p.c0 = coef0[i];
                p.c1 = coef1[i];
                p.shift = shift[i];
            }
            syn[ol * CC + cc] = p;
        }
        __syncthreads();
        for (int cc = 0; cc < cn; ++cc) {
            const T* rows = win + (cc * H + ug * R) * SJS_STRIDE + nl;
#pragma unroll
            for (int ow = 0; ow < OW; ++ow) {
                const SjsSynapse<T> p = syn[(warp * OW + ow) * CC + cc];
                if (p.c0 == T(0) && p.c1 == T(0)) continue;  // pruned synapse: same for the warp
                const T* q = rows + p.shift * SJS_STRIDE;
                T v[R + 1];
#pragma unroll
                for (int r = 0; r <= R; ++r) v[r] = q[r * SJS_STRIDE];
#pragma unroll
                for (int r = 0; r < R; ++r) {
                    acc[ow][r] += p.c0 * v[r];  // two separate FMAs, not FMUL + FFMA + FADD
                    acc[ow][r] += p.c1 * v[r + 1];
                }
            }
        }
    }

    const int n = n0 + nl;
#pragma unroll
    for (int ow = 0; ow < OW; ++ow) {
        const int o = ob + warp * OW + ow;
        if (o >= O || n >= N) continue;
#pragma unroll
        for (int r = 0; r < R; ++r) {
            const int u = u0 + ug * R + r;
            if (u < U) dst[((long long)o * U + u) * N + n] = acc[ow][r];
        }
    }
}

// part[z][0][o][c] = sum g[o][g_row0 + u][n] * src[c][u + s[o][c]][n]
// part[z][1][o][c] = sum g[o][g_row0 + u][n] * src[c][u + s[o][c] + 1][n]
// summed over u < U, n < N in the (batch tile, row range) segments z, z + Z, ... of
// grid z. src holds at least ceil(U / 4R) * 4R + D rows per channel (zero past the data).
// Block (32, W): warp w owns outputs o = blockIdx.x * OG * W + w * OG + [0, OG) and the
// CB inputs c = blockIdx.y * CB + [0, CB) (output tiles fastest: blocks running together
// share their input rows through L2). Each block streams time through a ring of
// 4R + D rows per input (plus R mirrored rows, so R+1 consecutive reads never wrap).
// Shared memory: CB x (4R + D + R) rows x SJS_STRIDE, then OG * W x CB shifts.
template <typename T, int R, int OG, int CB>
__device__ __forceinline__ void sjs_wgrad(
    const T* __restrict__ g, int g_rows, int g_row0, const T* __restrict__ src, int src_rows,
    const int* __restrict__ shift, T* __restrict__ part, int C, int O, int N, int U, int D,
    int seg_tiles)
{
    extern __shared__ __align__(16) unsigned char sjs_smem[];
    const int UT = 4 * R;
    const int HR = UT + D;
    const int HA = HR + R;
    const int ring_bytes = ((CB * HA * SJS_STRIDE * (int)sizeof(T) + 15) / 16) * 16;
    T* ring = reinterpret_cast<T*>(sjs_smem);
    int* sh = reinterpret_cast<int*>(sjs_smem + ring_bytes);

    const int lane = threadIdx.x;
    const int warp = threadIdx.y;
    const int tid = warp * 32 + lane;
    const int nthreads = 32 * blockDim.y;
    const int OB = OG * blockDim.y;
    const int c0 = blockIdx.y * CB;
    const int ob = blockIdx.x * OB;
    const int nl = lane & 7;
    const int ug = lane >> 3;
    const int n_tiles = (N + 7) / 8;
    const int u_tiles = (U + UT - 1) / UT;
    const int segs_per_n = (u_tiles + seg_tiles - 1) / seg_tiles;
    const int n_segs = n_tiles * segs_per_n;

    for (int e = tid; e < OB * CB; e += nthreads) {
        const int ol = e / CB;
        const int cb = e - ol * CB;
        const int o = ob + ol;
        const int c = c0 + cb;
        sh[e] = (o < O && c < C) ? shift[(long long)o * C + c] : 0;
    }

    T acc_a[OG][CB];
    T acc_b[OG][CB];
#pragma unroll
    for (int og = 0; og < OG; ++og) {
#pragma unroll
        for (int cb = 0; cb < CB; ++cb) {
            acc_a[og][cb] = T(0);
            acc_b[og][cb] = T(0);
        }
    }

    for (int seg = blockIdx.z; seg < n_segs; seg += gridDim.z) {
        const int n0 = (seg / segs_per_n) * 8;
        const int n = n0 + nl;
        const int t_begin = (seg % segs_per_n) * seg_tiles;
        const int t_end = min(t_begin + seg_tiles, u_tiles);
        for (int t = t_begin; t < t_end; ++t) {
            const int u0 = t * UT;
            T gv[OG][R];
#pragma unroll
            for (int og = 0; og < OG; ++og) {
                const int o = ob + warp * OG + og;
#pragma unroll
                for (int r = 0; r < R; ++r) {
                    const int u = u0 + ug * R + r;
                    gv[og][r] = (o < O && n < N && u < U)
                        ? g[((long long)o * g_rows + g_row0 + u) * N + n] : T(0);
                }
            }
            // The ring holds rows [u0, u0 + HR); a segment's first tile loads all of them,
            // later tiles only the UT rows past the previous window.
            const int r_begin = (t == t_begin) ? u0 : u0 + D;
            const int r_count = u0 + HR - r_begin;
            __syncthreads();
            for (int e = tid; e < CB * r_count * 8; e += nthreads) {
                const int col = e & 7;
                const int k = e >> 3;
                const int cb = k / r_count;
                const int row = r_begin + (k - cb * r_count);
                const int c = c0 + cb;
                const int nn = n0 + col;
                T v = T(0);
                if (c < C && nn < N) v = src[((long long)c * src_rows + row) * N + nn];
                const int slot = row % HR;
                ring[(cb * HA + slot) * SJS_STRIDE + col] = v;
                if (slot < R) ring[(cb * HA + slot + HR) * SJS_STRIDE + col] = v;
            }
            __syncthreads();
            const int base = (u0 + ug * R) % HR;
#pragma unroll
            for (int og = 0; og < OG; ++og) {
#pragma unroll
                for (int cb = 0; cb < CB; ++cb) {
                    int s0 = base + sh[(warp * OG + og) * CB + cb];
                    if (s0 >= HR) s0 -= HR;
                    const T* q = ring + (cb * HA + s0) * SJS_STRIDE + nl;
                    T v[R + 1];
#pragma unroll
                    for (int r = 0; r <= R; ++r) v[r] = q[r * SJS_STRIDE];
                    T sa = T(0);
                    T sb = T(0);
#pragma unroll
                    for (int r = 0; r < R; ++r) {
                        sa += gv[og][r] * v[r];
                        sb += gv[og][r] * v[r + 1];
                    }
                    acc_a[og][cb] += sa;
                    acc_b[og][cb] += sb;
                }
            }
        }
    }

    const long long plane = (long long)O * C;
    T* out = part + (long long)blockIdx.z * 2 * plane;
#pragma unroll
    for (int og = 0; og < OG; ++og) {
        const int o = ob + warp * OG + og;
#pragma unroll
        for (int cb = 0; cb < CB; ++cb) {
            const int c = c0 + cb;
            const T sa = sjs_warp_sum(acc_a[og][cb]);
            const T sb = sjs_warp_sum(acc_b[og][cb]);
            if (lane == 0 && o < O && c < C) {
                out[(long long)o * C + c] = sa;
                out[plane + (long long)o * C + c] = sb;
            }
        }
    }
}

#define SJS_GATHER(NAME, T, R)                                                              \
    extern "C" __global__ void __launch_bounds__(SJS_MAX_THREADS, 2) NAME(                  \
        const T* src, const T* coef0, const T* coef1, const int* shift, T* dst, int C,      \
        int O, int N, int U, int src_rows, int D, int CC, int c_slice)                      \
    {                                                                                       \
        sjs_gather<T, R, SJS_GATHER_OUTPUTS_PER_WARP>(src, coef0, coef1, shift, dst, C, O,  \
                                                      N, U, src_rows, D, CC, c_slice);      \
    }

#define SJS_WGRAD(NAME, T, R, CB)                                                           \
    extern "C" __global__ void __launch_bounds__(SJS_MAX_THREADS, 2) NAME(                  \
        const T* g, int g_rows, int g_row0, const T* src, int src_rows, const int* shift,   \
        T* part, int C, int O, int N, int U, int D, int seg_tiles)                          \
    {                                                                                       \
        sjs_wgrad<T, R, SJS_WGRAD_OUTPUTS_PER_WARP, CB>(g, g_rows, g_row0, src, src_rows,   \
                                                        shift, part, C, O, N, U, D,         \
                                                        seg_tiles);                         \
    }

SJS_GATHER(sjs_gather_f32_r8, float, 8)
SJS_GATHER(sjs_gather_f32_r1, float, 1)
SJS_GATHER(sjs_gather_f64_r8, double, 8)
SJS_GATHER(sjs_gather_f64_r1, double, 1)
SJS_WGRAD(sjs_wgrad_f32_r8_cb8, float, 8, 8)
SJS_WGRAD(sjs_wgrad_f32_r8_cb1, float, 8, 1)
SJS_WGRAD(sjs_wgrad_f32_r1_cb8, float, 1, 8)
SJS_WGRAD(sjs_wgrad_f32_r1_cb1, float, 1, 1)
SJS_WGRAD(sjs_wgrad_f64_r8_cb8, double, 8, 8)
SJS_WGRAD(sjs_wgrad_f64_r8_cb1, double, 8, 1)
SJS_WGRAD(sjs_wgrad_f64_r1_cb8, double, 1, 8)
SJS_WGRAD(sjs_wgrad_f64_r1_cb1, double, 1, 1)
