// Fused kernel of networks with 2x2 average pooling between conv stages (the Myrtle networks):
// cntk_core/gpu_stages.py drives it, one launch per stage; the CPU statement of the same algorithm is
// cntk_core/cpu_stages.py. It reuses the shift-block machinery of cntk_planes.cu (read that header
// first): a stage of P x Q positions runs its layers on one (pair, shift block (gi, gj)) per thread
// block, on chip, exactly as the unpooled kernel does.
//
// Pooling couples shift blocks, so a stage that is not the last one stores its blocks' final values in
// global memory, per pair, and the next stage's thread blocks gather their input from there.
// Stored tensor of one pair: n_slots shift blocks of Pp*Qp entries (the previous stage's grid), block
// `slot` at slot * Pp*Qp, its entry e = r*Qp + c pairing position (r, c) of the second image with
// ((r + gi) mod Pp, (c + gj) mod Qp) of the first; with Theta (mode 2), its blocks follow the Sigma ones
// (at (n_slots + slot) * Pp*Qp). Which block sits in which slot: prev_slots[gi * Qp + gj] (-1: not
// stored).
//
// Gather: entry (r, c) of the pooled shift block (gi, gj) pairs pooled positions (i, j) of the first
// image (i = (r + gi) mod P) and (r, c) of the second; its value is the mean over a, a', b, b' in
// {0, 1} of the previous stage's entry [2i + a, 2j + b, 2r + a', 2c + b'] (P = Pp / 2 rounded down: a
// trailing odd row or column is dropped, as cntk_core.layers.AvgPool does), which lies in the
// previous stage's shift block ((2i + a - 2r - a') mod Pp, (2j + b - 2c - b') mod Qp) at entry
// (2r + a') Qp + 2c + b'. The driver stores every block within the radius that the next stage reads
// (2R + 1 for the next stage's R); a block that is not stored reads as NaN, so a wrong list shows in
// the result instead of giving a plausible number. (With an odd Pp the wrapped part of the outermost
// blocks reads one block beyond 2R + 1: those entries are NaN, but no needed entry depends on them:
// tr3 never mixes the two planes of a shift block, the next gather does not read them, and the LAP
// readout skips entries of weight 0.)
//
// Record mode (prepare): the self pairs (x, x), shift block (0, 0), rho = S / sqrt(S * S) exactly as in
// cntk_shift_blocks, writing this stage's variance maps; the stage's other blocks that the next
// stage's variances need run after it in a plain launch of the same self pairs.

#ifndef CNTK_PLANES_INCLUDED
#include "cntk_planes.cu"
#endif

namespace cntk {

// Thread tid's entries of the pooled shift block (gi, gj) of a P x Q stage, gathered (mean of 16) from
// the previous stage's stored tensor `prev` of one pair into dst (and from its Theta blocks into
// t_dst when `two`).
template <typename T>
CNTK_HD void gather_thread(int tid, int nt, const T* prev, const int* prev_slots, int n_slots, int Pp, int Qp,
                           bool two, T* dst, T* t_dst, int gi, int gj, int P, int Q, unsigned long long qinv) {
    const int PQp = Pp * Qp;
    const T sixteenth = T(0.0625);
    for (int e = tid; e < P * Q; e += nt) {
        int r, c, i, j;
        shift_block_position(e, qinv, gi, gj, P, Q, r, c, i, j);
        T acc = T(0), t_acc = T(0);
        bool missing = false;
        for (int a = 0; a < 2; ++a)
            for (int a2 = 0; a2 < 2; ++a2) {
                int g = 2 * i + a - 2 * r - a2;
                if (g < 0) g += Pp;
                for (int b = 0; b < 2; ++b)
                    for (int b2 = 0; b2 < 2; ++b2) {
                        int h = 2 * j + b - 2 * c - b2;
                        if (h < 0) h += Qp;
                        const int slot = prev_slots[g * Qp + h];
                        if (slot < 0) {
                            missing = true;
                            continue;
                        }
                        const int at = (2 * r + a2) * Qp + 2 * c + b2;
                        acc += prev[(long long)slot * PQp + at];
                        if (two) t_acc += prev[(long long)(n_slots + slot) * PQp + at];
                    }
            }
        const T nan = sqrt(T(-1));  // NaN without a header (NVRTC has none)
        dst[e] = missing ? nan : acc * sixteenth;
        if (two) t_dst[e] = missing ? nan : t_acc * sixteenth;
    }
}

}  // namespace cntk

// One stage of a pooled network. grid.x = n_pairs * n_shift_blocks, blockDim.x = nt (a power of two
// <= 1024); dynamic shared memory: nt doubles, then 4 * P * Q entries of T (as cntk_shift_blocks).
// Thread block k * n_shift_blocks + t runs pair k (images rows[k] and cols[k]) on shift block
// (shift_blocks[2t], shift_blocks[2t + 1]) of this stage's P x Q grid through the layers h0 + 1 .. h1
// (1-based, of L in the network; none for a last stage after a final pooling).
//   Input: prev_mode 0: S0 of the images x1, x2 (P x Q x C); 1 (Sigma, or the readout's operand past
//     the last layer) or 2 (Sigma and Theta): the gather (header) from pair k's stored tensor at
//     prev + k * prev_stride.
//   Variance maps: v1, v2 hold vstride numbers per image; this stage's layers at voff (layer h at
//     voff + (h - 1 - h0) P Q); record mode writes v1's (x2 == x1, v2 == v1, rows == cols).
//   Output: next_mode 1 (Sigma, or the operand) or 2 (Sigma and Theta): the block's values into pair
//     k's stored tensor at next + k * next_stride, slot slot0 + t of n_next_slots; 0: partial[blockIdx.x]
//     = the block's float64 readout sum (lap_c as in cntk_shift_blocks). Unused pointers point at any
//     array (no null pointers: CuPy passes arrays).
template <typename T>
CNTK_GLOBAL void cntk_stage_blocks(const T* __restrict__ x1, const T* __restrict__ x2, T* v1, const T* v2,
                                   int vstride, int voff, const int* __restrict__ rows, const int* __restrict__ cols,
                                   const int* __restrict__ shift_blocks, int n_shift_blocks, int P, int Q, int C,
                                   int h0, int h1, int L, int fix_first, int fix_last, int ntk, int record,
                                   int lap_c, const T* __restrict__ prev, const int* __restrict__ prev_slots,
                                   int n_prev_slots, int Pp, int Qp, long long prev_stride, int prev_mode, T* next,
                                   int slot0, int n_next_slots, long long next_stride, int next_mode,
                                   double* __restrict__ partial) {
    CNTK_DYNAMIC_SMEM(cntk_smem);
    const int nt = blockDim.x, tid = threadIdx.x;
    const int PQ = P * Q;
    double* red = cntk_smem;
    T* buf = reinterpret_cast<T*>(cntk_smem + nt);
    T* s_src = buf;
    T* t_src = buf + PQ;
    T* s_dst = buf + 2 * PQ;
    T* t_dst = buf + 3 * PQ;
    const long long pair = blockIdx.x / n_shift_blocks;
    const int sb = blockIdx.x - int(pair) * n_shift_blocks;
    const int gi = shift_blocks[2 * sb], gj = shift_blocks[2 * sb + 1];
    const long long a = rows[pair], b = cols[pair];
    const unsigned long long qinv = cntk::reciprocal_q(Q);
    if (prev_mode == 0) {
        const long long img = (long long)P * Q * C;
        cntk::input_thread(tid, nt, x1 + a * img, x2 + b * img, s_src, gi, gj, P, Q, C, qinv);
    } else {
        cntk::gather_thread(tid, nt, prev + pair * prev_stride, prev_slots, n_prev_slots, Pp, Qp, prev_mode == 2,
                            s_src, t_src, gi, gj, P, Q, qinv);
    }
    CNTK_SYNC();
    T* va = v1 + a * vstride + voff;
    const T* vb = (record ? v1 : v2) + b * vstride + voff;
    cntk::layers_thread(tid, nt, va, vb, va, s_src, t_src, s_dst, t_dst, gi, gj, P, Q, qinv, h0, h1, L,
                        fix_first != 0, fix_last != 0, ntk != 0, record != 0);
    if (next_mode != 0) {  // each thread stores the entries it wrote last (no barrier needed)
        T* out = next + pair * next_stride;
        const int slot = slot0 + sb;
        for (int e = tid; e < PQ; e += nt) {
            out[(long long)slot * PQ + e] = s_src[e];
            if (next_mode == 2) out[(long long)(n_next_slots + slot) * PQ + e] = t_src[e];
        }
        return;  // uniform across the block: no thread waits at a barrier below
    }
    red[tid] = cntk::readout_thread(tid, nt, s_src, gi, gj, P, Q, qinv, lap_c);
    CNTK_SYNC();
    for (int half = nt / 2; half > 0; half /= 2) {
        if (tid < half) red[tid] += red[tid + half];
        CNTK_SYNC();
    }
    if (tid == 0) partial[blockIdx.x] = red[0];
}

#if defined(__CUDACC__) && !defined(__CUDACC_RTC__)
template __global__ void cntk_stage_blocks<float>(const float*, const float*, float*, const float*, int, int,
                                                  const int*, const int*, const int*, int, int, int, int, int, int,
                                                  int, int, int, int, int, int, const float*, const int*, int, int,
                                                  int, long long, int, float*, int, int, long long, int, double*);
template __global__ void cntk_stage_blocks<double>(const double*, const double*, double*, const double*, int, int,
                                                   const int*, const int*, const int*, int, int, int, int, int,
                                                   int, int, int, int, int, int, int, const double*, const int*,
                                                   int, int, int, long long, int, double*, int, int, long long,
                                                   int, double*);
#endif
