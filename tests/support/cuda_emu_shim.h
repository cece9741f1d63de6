// CUDA's built-ins as plain C++ for the CPU emulator (tests/cuda_emu.py): included before
// the kernel source.

#include <algorithm>
#include <atomic>
#include <barrier>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace emu {
struct Dim { unsigned x = 1, y = 1, z = 1; };
inline thread_local Dim thread_idx, block_idx, block_dim, grid_dim;
inline thread_local unsigned linear_tid = 0;

struct Block {
    unsigned nthreads = 0;
    std::unique_ptr<std::barrier<>> sync;
    std::vector<std::unique_ptr<std::barrier<>>> warp_sync;
    std::vector<unsigned long long> slots;
};
inline Block* block = nullptr;
inline unsigned char* dyn_smem = nullptr;
inline unsigned jitter_us = 0;
inline thread_local unsigned long long rng = 0;

// After a barrier some threads sleep a little, so that a missing barrier shows up as a
// data race in the results rather than staying hidden by lock-step scheduling.
inline void jitter() {
    if (jitter_us == 0) return;
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    if ((rng & 3) == 0) std::this_thread::sleep_for(std::chrono::microseconds(rng % jitter_us));
}

inline unsigned warp_width() {
    unsigned warp = linear_tid / 32;
    return std::min(32u, block->nthreads - warp * 32);
}

inline void check_mask(unsigned mask) {
    unsigned width = warp_width();
    unsigned full = width == 32 ? 0xffffffffu : ((1u << width) - 1u);
    if ((mask & full) != full) {
        std::fprintf(stderr, "emu: partial warp masks are not emulated\n");
        std::abort();
    }
}

inline void syncwarp() { block->warp_sync[linear_tid / 32]->arrive_and_wait(); }

// Every lane publishes its value, then reads the source lane's; returns own value when
// the source lies outside the lane's segment of `width` lanes (CUDA's rule).
template <class T>
T shuffle(unsigned mask, T v, int src_lane, int width) {
    static_assert(sizeof(T) <= sizeof(unsigned long long), "shuffle of a wide type");
    check_mask(mask);
    unsigned lane = linear_tid % 32, base = linear_tid - lane;
    unsigned long long bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    block->slots[linear_tid] = bits;
    syncwarp();
    T out = v;
    int seg = (int)(lane / width * width);
    if (src_lane >= seg && src_lane < seg + width && (unsigned)src_lane < warp_width())
        std::memcpy(&out, &block->slots[base + src_lane], sizeof(T));
    syncwarp();
    return out;
}
}  // namespace emu

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __shared__ static
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define threadIdx (::emu::thread_idx)
#define blockIdx (::emu::block_idx)
#define blockDim (::emu::block_dim)
#define gridDim (::emu::grid_dim)
#define warpSize 32

inline void __syncthreads() { emu::block->sync->arrive_and_wait(); emu::jitter(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { emu::check_mask(mask); emu::syncwarp(); }
template <class T> T __shfl_sync(unsigned m, T v, int src, int w = 32) {
    return emu::shuffle(m, v, src % w + (int)(emu::linear_tid % 32) / w * w, w);
}
template <class T> T __shfl_down_sync(unsigned m, T v, unsigned d, int w = 32) {
    return emu::shuffle(m, v, (int)(emu::linear_tid % 32 + d), w);
}
template <class T> T __shfl_up_sync(unsigned m, T v, unsigned d, int w = 32) {
    return emu::shuffle(m, v, (int)(emu::linear_tid % 32) - (int)d, w);
}
template <class T> T __shfl_xor_sync(unsigned m, T v, int x, int w = 32) {
    return emu::shuffle(m, v, (int)(emu::linear_tid % 32) ^ x, w);
}
template <class T> T atomicAdd(T* p, T v) { return std::atomic_ref<T>(*p).fetch_add(v); }
template <class T> T __ldg(const T* p) { return *p; }
using std::max;
using std::min;
