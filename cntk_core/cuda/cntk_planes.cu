// Fused CNTK kernels: one thread block runs every layer of one "shift block" of displacement planes of
// one image pair on chip (shared memory), and writes one float64 partial readout sum.
//
// Math: docs/math.md; the CPU statement of the same fused algorithm is cntk_core/cpu_planes.py
// (shift blocks by one flat shift there), and tests/gpu_emulator.py:emulate_shift_block is a NumPy
// copy of one thread block.
//
// Shift blocks. tr3 and the ReLU map never mix entries of different displacement delta = p - p'.
// Along one axis of length P, plane di (|di| < P) has P - |di| rows. For g = 1..P-1 the planes di = g
// and di = g - P have g' = P - g and g rows: together exactly P. So a "row group" g in 0..P-1 is the
// set {(i, i') : i = (i' + g) mod P}, with i' = r the shift block's row: rows r < P - g belong to
// plane g, the rest to plane g - P (for g = 0 only plane 0). Likewise for columns. Shift block
// (gi, gj) of a pair is the P x Q map T[r, c] = entry [i, j, i', j'] with i' = r, j' = c,
// i = (r + gi) mod P, j = (c + gj) mod Q. The P*Q shift blocks of a pair partition its (PQ)^2
// entries, and every shift block has exactly P*Q entries, so all thread blocks do the same work.
// tr3 inside a shift block: the neighbour (r + a, c + b) is added iff both positions stay inside the
// image, 0 <= i + a < P and 0 <= r + a < P (same for columns); that is the zero padding of tr3 and
// also the boundary between the two planes of a shift block. The vanilla readout only needs shift
// block (0, 0) (= the delta = 0 plane).
//
// Readouts. GAP and vanilla add the last layer's entries unweighted (lap_c < 0); the caller scales
// the pair's sum (1 / (PQ)^2, 1). LAP with window c (lap_c = c >= 0, zero padding; docs/math.md)
// weights entry [i, j, i', j'] by the integer n_P(i, i') * n_Q(j, j'), n_P(u, u') = the number of
// window centres m in 0..P-1 with |u - m| <= c and |u' - m| <= c (lap_count), and the caller
// scales by (2c + 1)^-4. Only entries with |i - i'| <= 2c and |j - j'| <= 2c weigh anything, so the
// caller launches only the shift blocks (gi, gj) with gi in 0..2c or P-2c..P-1 (same for gj):
// c = 0 is shift block (0, 0) alone, with weight 1 on every entry (the vanilla readout exactly).
//
// One thread block = one (pair, shift block). Shared memory: 2 buffers x (Sigma, Theta) x P*Q entries
// of T, plus one double per thread for the readout reduction. One __syncthreads per layer: layer h
// reads the previous layer's K and Theta (box sums of neighbours) and writes its own into the other
// buffer. Record mode (self pair, shift block (0,0)) writes Sigma^(h)(x, x)[p, p] for h = 0..L-1 into
// vrec and uses rho = S / sqrt(S * S), so that later pair launches of an exact self pair see
// rho == 1 exactly.
//
// Compiles four ways: NVRTC (CuPy RawModule, name_expressions "cntk_shift_blocks<float>" ..., with
// CuPy's -ftz=true), nvcc -ptx / -cubin / -c (tests/test_cuda_compile.py), and as plain host C++ (g++ -x c++,
// tests/cuda_host.py): there both kernels run on the CPU, each block's threads emulated one at a time
// between barriers, in an order the caller picks (forward, reverse, shuffled per phase), on shared
// memory poisoned with NaN, reporting divergent barriers and shared-memory overruns. A missing or
// misplaced barrier, or a wrong split of entries among threads, changes the result under one of the
// orders (tests/test_cuda_host.py checks all of them against cntk_core/testing.py).
//
// Range (float32): every value the kernel forms is at most 9 C peak^2 for images whose largest |pixel|
// is `peak` (layer 1's box sum of C-channel products; the ReLU map and later box sums do not grow
// it), and the products va * vb, s * s reach 81 C^2 peak^4. cntk_core.scaling.exponent_window chooses
// which images go in unscaled (every engine shares it), and FusedGPUEngine.prepare refuses the
// variance maps whose significant entries -ftz=true would flush (see cntk_core/gpu.py).

#ifndef CNTK_PLANES_INCLUDED
#define CNTK_PLANES_INCLUDED  // cntk_stages.cu includes this file unless it comes first in one text

#if defined(__CUDACC__)
#define CNTK_HD __device__
#define CNTK_GLOBAL __global__
#define CNTK_SYNC() __syncthreads()
#define CNTK_DYNAMIC_SMEM(name) extern __shared__ double name[]
#else  // host build: tests/cuda_host_driver.cpp includes this file and defines cntk_host::*
#include <cmath>
#define CNTK_HD
#define CNTK_GLOBAL
#define CNTK_SYNC() cntk_host::barrier(__LINE__)
#define CNTK_DYNAMIC_SMEM(name) double* name = cntk_host::shared_memory()
namespace cntk_host {
struct Dim3 {
    unsigned x, y, z;
};
void barrier(int site);  // CNTK_SYNC: the calling emulated thread waits for the others
double* shared_memory();  // the running block's dynamic shared memory
}  // namespace cntk_host
static thread_local cntk_host::Dim3 threadIdx, blockIdx, blockDim;
namespace cntk {
// test hook: asin/acos results moved by up to host_ulp_noise ulps (CUDA's asinf/acosf are 2-ulp)
extern thread_local int host_ulp_noise;
template <typename T>
inline T host_noisy(T y, T x) {
    if (host_ulp_noise <= 0 || x == T(0)) return y;  // asin(0) == 0 on the GPU too
    unsigned long long h = 0x9E3779B97F4A7C15ull;
    const unsigned char* b = reinterpret_cast<const unsigned char*>(&x);
    for (unsigned k = 0; k < sizeof(T); ++k) h = (h ^ b[k]) * 0x100000001B3ull;
    int steps = int(h >> 40) % (2 * host_ulp_noise + 1) - host_ulp_noise;
    for (; steps > 0; --steps) y = std::nextafter(y, T(INFINITY));
    for (; steps < 0; ++steps) y = std::nextafter(y, T(-INFINITY));
    return y;
}
inline float asin(float x) { return host_noisy(std::asin(x), x); }
inline double asin(double x) { return host_noisy(std::asin(x), x); }
inline float acos(float x) { return host_noisy(std::acos(x), x); }
inline double acos(double x) { return host_noisy(std::acos(x), x); }
using std::sqrt;
}  // namespace cntk
#endif

namespace cntk {

template <typename T>
CNTK_HD inline T const_pi() { return T(3.141592653589793238462643383279502884); }

template <typename T>
CNTK_HD inline T const_inv9pi() { return T(0.035367765131532296838); }  // 1 / (9 pi)

// arccos without the cancellation of acos near rho = 1: acos(rho) = 2 asin(sqrt((1 - rho) / 2)),
// where 1 - rho is exact for rho in [0.5, 1]. acos(1) == 0 exactly.
template <typename T>
CNTK_HD inline T acos_stable(T rho) {
    if (rho > T(0.5)) return T(2) * asin(sqrt((T(1) - rho) * T(0.5)));
    return acos(rho);
}

// 3x3 box sum of src at shift block entry (r, c); ok_* say whether the row/column shifts -1 and +1 stay
// inside the image. Terms with the row shift outer and the column shift inner.
template <typename T>
CNTK_HD inline T box3(const T* src, int r, int c, int Q, bool up, bool down, bool left, bool right) {
    T acc = T(0);
    if (up) {
        const T* row = src + (r - 1) * Q + c;
        if (left) acc += row[-1];
        acc += row[0];
        if (right) acc += row[1];
    }
    {
        const T* row = src + r * Q + c;
        if (left) acc += row[-1];
        acc += row[0];
        if (right) acc += row[1];
    }
    if (down) {
        const T* row = src + (r + 1) * Q + c;
        if (left) acc += row[-1];
        acc += row[0];
        if (right) acc += row[1];
    }
    return acc;
}

// The ReLU dual of one entry (cntk_core.recurrence.relu_dual): K and K_dot from Sigma and the
// product of the two positions' variances; rho = S / sqrt(prod) with one square root.
template <typename T>
CNTK_HD inline void relu_dual(T s, T prod, T& k, T& k_dot) {
    T norm = T(0), rho = T(0);
    if (prod > T(0)) {
        norm = sqrt(prod);
        rho = s / norm;
        rho = rho < T(-1) ? T(-1) : (rho > T(1) ? T(1) : rho);
    }
    const T angle = acos_stable(rho);
    k = norm * (rho * (const_pi<T>() - angle) + sqrt(T(1) - rho * rho)) * const_inv9pi<T>();
    k_dot = (const_pi<T>() - angle) * const_inv9pi<T>();
}

// LAP weight along one axis of length n (zero padding): the number of window centres m in 0..n-1
// with u and v both in [m - c, m + c], i.e. |[max(u, v) - c, min(u, v) + c] & [0, n - 1]|. The caller
// keeps c <= max(P, Q) - 1 (a larger c counts the same: every centre), so nothing overflows.
CNTK_HD inline int lap_count(int u, int v, int n, int c) {
    const int lo = (u > v ? u : v) - c, hi = (u < v ? u : v) + c;
    const int a = lo > 0 ? lo : 0, b = hi < n - 1 ? hi : n - 1;
    return b >= a ? b - a + 1 : 0;
}

// Entry e of shift block (gi, gj): position (r, c) of the second image and (i, j) = (r + gi, c + gj)
// modulo (P, Q) of the first one. r = e / Q as a multiply by qinv = ceil(2^32 / Q) (reciprocal_q):
// floor(e * qinv / 2^32) == e / Q whenever e * Q < 2^32, true here since e < P * Q and P * Q * Q
// < 2^32 for every image whose shift block fits in shared memory (FusedGPUEngine checks it). A 32-bit
// division per entry and layer was ~30 SASS instructions with three on the slow conversion and
// MUFU pipes (sm_90, nvcc 13); this is two multiplies (benchmarks/RESULTS.md, issue 28).
CNTK_HD inline unsigned long long reciprocal_q(int Q) { return ((1ull << 32) + unsigned(Q) - 1) / unsigned(Q); }

CNTK_HD inline void shift_block_position(int e, unsigned long long qinv, int gi, int gj, int P, int Q, int& r,
                                         int& c, int& i, int& j) {
    r = int((unsigned long long)unsigned(e) * qinv >> 32);
    c = e - r * Q;
    i = r + gi;
    if (i >= P) i -= P;
    j = c + gj;
    if (j >= Q) j -= Q;
}

// Layers h = h0 + 1 .. h1 (1-based, of L in the network) of one shift block, thread `tid` of `nt` on
// the entries e = tid, tid + nt, ...; the block's input is in s_src (Sigma) and, for the NTK past the
// first layer, t_src (Theta); the pointers come back swapped so that s_src (t_src) holds the output.
// One barrier per layer: layer h reads the previous layer's box sums and writes the other buffer.
//   va, vb: the two images' variance maps of these layers ((h1 - h0) x P x Q, layer h at
//   (h - 1 - h0) P Q); vrec: where record mode writes them instead. Past layer L (the network's last),
//   s_src holds the readout's operand (Theta for the NTK, else K) and t_src nothing.
template <typename T>
CNTK_HD void layers_thread(int tid, int nt, const T* va, const T* vb, T* vrec, T*& s_src, T*& t_src, T*& s_dst,
                           T*& t_dst, int gi, int gj, int P, int Q, unsigned long long qinv, int h0, int h1,
                           int L, bool fix_first, bool fix_last, bool ntk, bool record) {
    const int PQ = P * Q;
    for (int h = h0 + 1; h <= h1; ++h) {
        const bool add_k = !(fix_last && h == L);
        const int vo = (h - 1 - h0) * PQ;
        for (int e = tid; e < PQ; e += nt) {
            int r, c, i, j;
            shift_block_position(e, qinv, gi, gj, P, Q, r, c, i, j);
            const bool up = r > 0 && i > 0, down = r < P - 1 && i < P - 1;
            const bool left = c > 0 && j > 0, right = c < Q - 1 && j < Q - 1;
            const T s = box3(s_src, r, c, Q, up, down, left, right);  // Sigma^(h-1)
            T t = T(0);
            if (ntk) {
                if (h == 1)
                    t = fix_first ? T(0) : s;  // Theta^(0) = Sigma^(0)
                else
                    t = box3(t_src, r, c, Q, up, down, left, right);
            }
            T prod;
            if (record) {
                vrec[vo + e] = s;
                prod = s * s;
            } else {
                prod = va[vo + i * Q + j] * vb[vo + e];
            }
            T k, k_dot;
            relu_dual(s, prod, k, k_dot);
            t = k_dot * t;
            if (add_k) t += k;
            if (h < L) {
                s_dst[e] = k;
                t_dst[e] = t;
            } else {
                s_dst[e] = ntk ? t : k;  // the readout's operand
            }
        }
        CNTK_SYNC();
        T* tmp = s_src;
        s_src = s_dst;
        s_dst = tmp;
        tmp = t_src;
        t_src = t_dst;
        t_dst = tmp;
    }
}

// This thread's float64 share of the readout of the shift block held in src: its own entries (no other
// thread's), in the order it wrote them, each times its LAP weight (lap_count) if lap_c >= 0. Entries of
// weight 0 are not read at all (a pooled stage leaves NaN in entries it was not given; cntk_stages.cu).
template <typename T>
CNTK_HD double readout_thread(int tid, int nt, const T* src, int gi, int gj, int P, int Q, unsigned long long qinv,
                              int lap_c) {
    double total = 0.0;
    for (int e = tid; e < P * Q; e += nt) {
        if (lap_c >= 0) {
            int r, c, i, j;
            shift_block_position(e, qinv, gi, gj, P, Q, r, c, i, j);
            const int weight = lap_count(i, r, P, lap_c) * lap_count(j, c, Q, lap_c);
            if (weight != 0) total += double(src[e]) * double(weight);
        } else {
            total += double(src[e]);
        }
    }
    return total;
}

// S0 of shift block (gi, gj) into s0: S0[r, c] = sum_c xa[i, j, :] . xb[r, c, :] (thread tid's entries).
template <typename T>
CNTK_HD void input_thread(int tid, int nt, const T* xa, const T* xb, T* s0, int gi, int gj, int P, int Q, int C,
                          unsigned long long qinv) {
    for (int e = tid; e < P * Q; e += nt) {
        int r, c, i, j;
        shift_block_position(e, qinv, gi, gj, P, Q, r, c, i, j);
        const T* pa = xa + (i * Q + j) * C;
        const T* pb = xb + e * C;
        T acc = pa[0] * pb[0];
        for (int ch = 1; ch < C; ++ch) acc += pa[ch] * pb[ch];
        s0[e] = acc;
    }
}

// Everything one thread block does for one (pair, shift block). Thread `tid` of `nt` handles the entries
// e = tid, tid + nt, ...; no phase reads an entry that another thread writes in the same phase.
//   xa, xb: P x Q x C images; va, vb: L x P x Q variance maps (unused in record mode);
//   buf: 4 * P * Q entries of T (S/K ping, Theta ping, S/K pong, Theta pong); vrec: L x P x Q
//   output of record mode; lap_c: the LAP window (< 0: GAP or vanilla, no weights). Returns this
//   thread's float64 sum of Theta (ntk) or K over its entries, each times its LAP weight (lap_count).
template <typename T>
CNTK_HD double shift_block_thread(int tid, int nt, const T* xa, const T* xb, const T* va, const T* vb, T* vrec,
                                  T* buf, int gi, int gj, int P, int Q, int C, int L, bool fix_first,
                                  bool fix_last, bool ntk, bool record, int lap_c) {
    const int PQ = P * Q;
    T* s_src = buf;
    T* t_src = buf + PQ;
    T* s_dst = buf + 2 * PQ;
    T* t_dst = buf + 3 * PQ;
    const unsigned long long qinv = reciprocal_q(Q);
    input_thread(tid, nt, xa, xb, s_src, gi, gj, P, Q, C, qinv);
    CNTK_SYNC();
    layers_thread(tid, nt, va, vb, vrec, s_src, t_src, s_dst, t_dst, gi, gj, P, Q, qinv, 0, L, L, fix_first,
                  fix_last, ntk, record);
    return readout_thread(tid, nt, s_src, gi, gj, P, Q, qinv, lap_c);
}

}  // namespace cntk

// grid.x = n_pairs * n_shift_blocks, blockDim.x = nt (a power of two <= 1024).
// Dynamic shared memory: nt doubles, then 4 * P * Q entries of T.
// Pair k = blockIdx.x / n_shift_blocks uses images rows[k] of x1 and cols[k] of x2, shift block
// (shift_blocks[2t], shift_blocks[2t+1]) with t = blockIdx.x % n_shift_blocks. partial[blockIdx.x] =
// the thread block's sum. Record mode: x2 == x1, rows == cols, n_shift_blocks == 1, shift block (0, 0);
// v1 receives the variance maps. lap_c: the LAP window, or -1 for GAP and vanilla (see the header).
template <typename T>
CNTK_GLOBAL void cntk_shift_blocks(const T* __restrict__ x1, const T* __restrict__ x2, T* v1, const T* v2,
                                   const int* __restrict__ rows, const int* __restrict__ cols,
                                   const int* __restrict__ shift_blocks, int n_shift_blocks, int P, int Q, int C,
                                   int L, int fix_first, int fix_last, int ntk, int record, int lap_c,
                                   double* __restrict__ partial) {
    CNTK_DYNAMIC_SMEM(cntk_smem);
    const int nt = blockDim.x, tid = threadIdx.x;
    double* red = cntk_smem;
    T* buf = reinterpret_cast<T*>(cntk_smem + nt);
    const long long pair = blockIdx.x / n_shift_blocks;
    const int sb = blockIdx.x - int(pair) * n_shift_blocks;
    const long long a = rows[pair], b = cols[pair];
    const long long img = (long long)P * Q * C, vmap = (long long)L * P * Q;
    T* va = v1 + a * vmap;
    const T* vb = (record ? v1 : v2) + b * vmap;
    const double part = cntk::shift_block_thread<T>(tid, nt, x1 + a * img, x2 + b * img, va, vb, va, buf,
                                                    shift_blocks[2 * sb], shift_blocks[2 * sb + 1], P, Q, C, L,
                                                    fix_first != 0, fix_last != 0, ntk != 0, record != 0,
                                                    lap_c);
    // fixed-order tree reduction: the result does not depend on other blocks or on the launch size
    red[tid] = part;
    CNTK_SYNC();
    for (int half = nt / 2; half > 0; half /= 2) {
        if (tid < half) red[tid] += red[tid + half];
        CNTK_SYNC();
    }
    if (tid == 0) partial[blockIdx.x] = red[0];
}

// out[k] = scale * sum_t partial[k * n_shift_blocks + t], summed in shift-block order (one thread per
// pair). Reads are strided by n_shift_blocks; at n_shift_blocks * 8 bytes per pair against the
// shift-block kernel's n_shift_blocks * P * Q * L entries per pair this kernel is a negligible share
// of the time.
extern "C" CNTK_GLOBAL void cntk_reduce(const double* __restrict__ partial, int n_pairs, int n_shift_blocks,
                                        double scale, double* __restrict__ out) {
    const long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= n_pairs) return;
    const double* p = partial + k * n_shift_blocks;
    double acc = 0.0;
    for (int t = 0; t < n_shift_blocks; ++t) acc += p[t];
    out[k] = acc * scale;
}

#if defined(__CUDACC__) && !defined(__CUDACC_RTC__)
// explicit instantiations so that nvcc (-ptx, -cubin, -c) emits both precisions; NVRTC instantiates
// them from CuPy's name_expressions instead
template __global__ void cntk_shift_blocks<float>(const float*, const float*, float*, const float*, const int*,
                                                  const int*, const int*, int, int, int, int, int, int, int, int,
                                                  int, int, double*);
template __global__ void cntk_shift_blocks<double>(const double*, const double*, double*, const double*,
                                                   const int*, const int*, const int*, int, int, int, int, int,
                                                   int, int, int, int, int, double*);
#endif

#endif  // CNTK_PLANES_INCLUDED
