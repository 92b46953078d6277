// Host build of cntk_core/cuda/cntk_planes.cu and cntk_stages.cu for the CPU tests (tests/cuda_host.py
// builds it with g++).
//
// Both kernels run as written: a launch runs its blocks one after the other, and each block's nt
// threads as coroutines (ucontext) of which one runs at a time. A thread runs until it reaches a
// barrier (CNTK_SYNC) or returns; when every live thread of the block waits at a barrier, the next
// phase starts. Within a phase the threads run in the order the caller picks: 0 forward, 1 reverse,
// 2 a new pseudo-random permutation each phase. A kernel whose result depends on that order reads
// an entry another thread writes in the same phase (a missing or misplaced barrier, or a wrong split
// of entries among threads), and the tests see it as a wrong value under one of the orders.
// Dynamic shared memory is filled with NaN bytes, so an entry read before any thread wrote it shows.
//
// Each launch returns flags: 1 a barrier reached from different source lines in one phase
// (divergent __syncthreads), 2 a thread returned while others waited at a barrier, 4 a write past
// the dynamic shared memory, 8 bad launch arguments, 16 flush-to-zero asked for but not available.
// ftz = 1 runs the launch with the SSE flush-to-zero and denormals-are-zero modes, as NVRTC's
// -ftz=true (which CuPy always adds) does for float arithmetic on the GPU.
//
// Not thread-safe: one launch at a time per process (ctypes calls from one Python thread).

#ifndef CNTK_PLANES_SOURCE
#error "compile with -DCNTK_PLANES_SOURCE='\"path/to/cntk_planes.cu\"'"
#endif
#include CNTK_PLANES_SOURCE
#ifdef CNTK_STAGES_SOURCE
#include CNTK_STAGES_SOURCE
#endif

#include <ucontext.h>

#include <cstdint>
#include <cstring>
#include <functional>
#include <vector>
#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#define CNTK_HOST_FTZ 1
#endif

namespace cntk {
thread_local int host_ulp_noise = 0;
}

namespace cntk_host {

enum : int { DIVERGENT = 1, EXIT_AT_BARRIER = 2, SMEM_OVERRUN = 4, BAD_ARGS = 8, NO_FTZ = 16 };

constexpr std::size_t kStack = 64 * 1024;
constexpr std::size_t kGuard = 256;  // bytes checked past the dynamic shared memory

enum State : char { RUNNABLE, WAITING, DONE };

struct Block {
    ucontext_t main;
    std::vector<ucontext_t> ctx;
    std::vector<std::vector<char>> stacks;
    std::vector<char> state;
    std::function<void()>* body = nullptr;
    double* smem = nullptr;
    int current = 0;
    int site = -1;
    int flags = 0;
};

static thread_local Block* running = nullptr;

void barrier(int site) {
    Block& b = *running;
    if (b.site < 0)
        b.site = site;
    else if (b.site != site)
        b.flags |= DIVERGENT;
    b.state[b.current] = WAITING;
    swapcontext(&b.ctx[b.current], &b.main);
}

double* shared_memory() { return running->smem; }

static void thread_entry() {
    Block& b = *running;
    (*b.body)();
    b.state[b.current] = DONE;  // returns to b.main through uc_link
}

struct Lcg {
    std::uint64_t s;
    unsigned next(unsigned n) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        return unsigned((s >> 33) % n);
    }
};

// Run one block of nt emulated threads to completion; returns its flags.
static int run_block(Block& b, int nt, int order, std::uint64_t seed) {
    b.state.assign(nt, RUNNABLE);
    b.flags = 0;
    for (int t = 0; t < nt; ++t) {
        getcontext(&b.ctx[t]);
        b.ctx[t].uc_stack.ss_sp = b.stacks[t].data();
        b.ctx[t].uc_stack.ss_size = kStack;
        b.ctx[t].uc_link = &b.main;
        makecontext(&b.ctx[t], thread_entry, 0);
    }
    std::vector<int> seq(nt);
    Lcg rng{seed * 0x9E3779B97F4A7C15ull + 1};
    for (;;) {
        for (int t = 0; t < nt; ++t) seq[t] = order == 1 ? nt - 1 - t : t;
        if (order == 2)
            for (int t = nt - 1; t > 0; --t) std::swap(seq[t], seq[rng.next(unsigned(t + 1))]);
        b.site = -1;
        bool waiting = false, exited = false;
        for (int t : seq) {
            if (b.state[t] != RUNNABLE) continue;
            b.current = t;
            threadIdx.x = unsigned(t);
            swapcontext(&b.main, &b.ctx[t]);
            (b.state[t] == DONE ? exited : waiting) = true;
        }
        if (!waiting) break;
        if (exited) b.flags |= EXIT_AT_BARRIER;
        for (char& s : b.state)
            if (s == WAITING) s = RUNNABLE;
    }
    return b.flags;
}

struct FtzScope {
#ifdef CNTK_HOST_FTZ
    unsigned saved = _mm_getcsr();
    explicit FtzScope(bool on) {
        if (on) _mm_setcsr(saved | 0x8040u);  // FTZ | DAZ
    }
    ~FtzScope() { _mm_setcsr(saved); }
#else
    explicit FtzScope(bool) {}
#endif
};

// Run `body` as the kernel of a grid x nt launch with smem_bytes of dynamic shared memory.
static int launch(int grid, int nt, int smem_bytes, int order, int ftz, std::function<void()> body) {
    if (grid < 0 || nt < 1 || nt > 1024 || smem_bytes < 0 || order < 0 || order > 2) return BAD_ARGS;
#ifndef CNTK_HOST_FTZ
    if (ftz) return NO_FTZ;
#endif
    FtzScope scope(ftz != 0);  // before getcontext: every emulated thread starts in this mode
    Block b;
    b.ctx.resize(nt);
    b.stacks.assign(nt, std::vector<char>(kStack));
    b.body = &body;
    const std::size_t words = (std::size_t(smem_bytes) + kGuard + 7) / 8;
    std::vector<double> smem(words);
    b.smem = smem.data();
    running = &b;
    blockDim.x = unsigned(nt);
    int flags = 0;
    for (int blk = 0; blk < grid; ++blk) {
        std::memset(smem.data(), 0xFF, words * 8);  // NaN in float and double
        blockIdx.x = unsigned(blk);
        flags |= run_block(b, nt, order, std::uint64_t(blk));
        const unsigned char* guard = reinterpret_cast<const unsigned char*>(smem.data()) + smem_bytes;
        for (std::size_t k = 0; k < kGuard; ++k)
            if (guard[k] != 0xFF) {
                flags |= SMEM_OVERRUN;
                break;
            }
    }
    running = nullptr;
    return flags;
}

template <typename T>
static int shift_blocks(int grid, int nt, int smem_bytes, int order, int ftz, const T* x1, const T* x2, T* v1,
                        const T* v2, const int* rows, const int* cols, const int* sb, int n_shift_blocks, int P,
                        int Q, int C, int L, int fix_first, int fix_last, int ntk, int record, int lap_c,
                        double* partial) {
    return launch(grid, nt, smem_bytes, order, ftz, [&] {
        cntk_shift_blocks<T>(x1, x2, v1, v2, rows, cols, sb, n_shift_blocks, P, Q, C, L, fix_first, fix_last, ntk,
                             record, lap_c, partial);
    });
}

template <typename T>
static int stage_blocks(int grid, int nt, int smem_bytes, int order, int ftz, const T* x1, const T* x2, T* v1,
                        const T* v2, const int* ints, const int* rows, const int* cols, const int* sb,
                        const T* prev, const int* prev_slots, const long long* strides, T* next,
                        double* partial) {
    // ints: vstride, voff, n_shift_blocks, P, Q, C, h0, h1, L, fix_first, fix_last, ntk, record, lap_c,
    //       n_prev_slots, Pp, Qp, prev_mode, slot0, n_next_slots, next_mode; strides: prev, next
#ifdef CNTK_STAGES_SOURCE
    const int* k = ints;
    return launch(grid, nt, smem_bytes, order, ftz, [&] {
        cntk_stage_blocks<T>(x1, x2, v1, v2, k[0], k[1], rows, cols, sb, k[2], k[3], k[4], k[5], k[6], k[7], k[8],
                             k[9], k[10], k[11], k[12], k[13], prev, prev_slots, k[14], k[15], k[16], strides[0],
                             k[17], next, k[18], k[19], strides[1], k[20], partial);
    });
#else
    return BAD_ARGS;
#endif
}

}  // namespace cntk_host

extern "C" {

int cntk_host_ftz_supported() {
#ifdef CNTK_HOST_FTZ
    return 1;
#else
    return 0;
#endif
}

void cntk_host_set_ulp_noise(int ulps) { cntk::host_ulp_noise = ulps; }

int cntk_host_shift_blocks_f32(int grid, int nt, int smem_bytes, int order, int ftz, const float* x1,
                               const float* x2, float* v1, const float* v2, const int* rows, const int* cols,
                               const int* sb, int n_shift_blocks, int P, int Q, int C, int L, int fix_first,
                               int fix_last, int ntk, int record, int lap_c, double* partial) {
    return cntk_host::shift_blocks<float>(grid, nt, smem_bytes, order, ftz, x1, x2, v1, v2, rows, cols, sb,
                                          n_shift_blocks, P, Q, C, L, fix_first, fix_last, ntk, record, lap_c,
                                          partial);
}

int cntk_host_shift_blocks_f64(int grid, int nt, int smem_bytes, int order, int ftz, const double* x1,
                               const double* x2, double* v1, const double* v2, const int* rows, const int* cols,
                               const int* sb, int n_shift_blocks, int P, int Q, int C, int L, int fix_first,
                               int fix_last, int ntk, int record, int lap_c, double* partial) {
    return cntk_host::shift_blocks<double>(grid, nt, smem_bytes, order, ftz, x1, x2, v1, v2, rows, cols, sb,
                                           n_shift_blocks, P, Q, C, L, fix_first, fix_last, ntk, record, lap_c,
                                           partial);
}

int cntk_host_stage_blocks_f32(int grid, int nt, int smem_bytes, int order, int ftz, const float* x1, const float* x2,
                               float* v1, const float* v2, const int* ints, const int* rows, const int* cols,
                               const int* sb, const float* prev, const int* prev_slots, const long long* strides,
                               float* next, double* partial) {
    return cntk_host::stage_blocks<float>(grid, nt, smem_bytes, order, ftz, x1, x2, v1, v2, ints, rows, cols, sb,
                                          prev, prev_slots, strides, next, partial);
}

int cntk_host_stage_blocks_f64(int grid, int nt, int smem_bytes, int order, int ftz, const double* x1,
                               const double* x2, double* v1, const double* v2, const int* ints, const int* rows,
                               const int* cols, const int* sb, const double* prev, const int* prev_slots,
                               const long long* strides, double* next, double* partial) {
    return cntk_host::stage_blocks<double>(grid, nt, smem_bytes, order, ftz, x1, x2, v1, v2, ints, rows, cols, sb,
                                           prev, prev_slots, strides, next, partial);
}

int cntk_host_reduce(int grid, int nt, int order, const double* partial, int n_pairs, int n_shift_blocks,
                     double scale, double* out) {
    return cntk_host::launch(grid, nt, 0, order, 0,
                             [&] { cntk_reduce(partial, n_pairs, n_shift_blocks, scale, out); });
}

}  // extern "C"
