"""Experiment: the first, hard-coded form of ``wavefront.py`` (16x16-style tiles, GAP, fix=False
NTK, depth 3 only), timed against the engine's ``cpu_planes.pair_sums`` on the same 32 pairs.

One loop over the tile's 8-entry vectors runs three stages: S0 and its row sums at vector j, layer
1 at ``j - Q/8 - lb`` (its K and Theta row sums from registers) and layer 2 at ``lc`` vectors
further behind (accumulated into the readout). asin is fdlibm's rational as in the engine. Prints
cycles per covariance entry of both (min and median of alternating rounds), the median ratio and
the largest relative difference. ``--no-divider`` replaces square roots by |x| and divisions by
products (timing only, results wrong) to show what the rest of the loop costs.

Usage: python benchmarks/experiments/prototype_d3.py [--lags 1,1] [--rounds 15] [--no-divider]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from numba import njit

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import simd as v  # noqa: E402
from wavefront import angle_from_asin, mask_bits  # noqa: E402

from cntk_core import cpu_planes as cp  # noqa: E402

_INLINE = {"cache": False, "error_model": "numpy", "inline": "always"}
_KERNEL = {"cache": False, "error_model": "numpy"}


@njit(**_INLINE)
def _pi_minus_arccos(x, c, nonneg):
    one, half = c[2], c[3]
    ax = x if nonneg else v.fabs(x)
    big = v.greater(ax, v.splat(half))
    z = v.where(big, v.mul(v.sub(v.splat(one), ax), v.splat(half)), v.mul(ax, ax))
    z2 = v.mul(z, z)
    p = v.mul(
        z,
        v.fma(
            z2,
            v.fma(z2, v.fma(z, v.splat(c[9]), v.splat(c[8])), v.fma(z, v.splat(c[7]), v.splat(c[6]))),
            v.fma(z, v.splat(c[5]), v.splat(c[4])),
        ),
    )
    q = v.fma(
        z2, v.fma(z2, v.splat(c[13]), v.fma(z, v.splat(c[12]), v.splat(c[11]))), v.fma(z, v.splat(c[10]), v.splat(one))
    )
    s = v.where(big, v.sqrt(z), ax)
    a = v.fma(s, v.div(p, q), s)
    return angle_from_asin(x, a, big, c, nonneg)


@njit(**_INLINE)
def _relu(rho, norm, theta, c, nonneg):
    one = v.splat(c[2])
    rho = v.where(v.greater(rho, v.splat(c[2] - c[14])), one, rho if nonneg else v.maximum(rho, v.splat(-c[2])))
    phi = _pi_minus_arccos(rho, c, nonneg)
    k = v.mul(norm, v.fma(rho, phi, v.sqrt(v.fma(v.sub(v.zeros(), rho), rho, one))))
    return k, v.fma(phi, v.mul(v.splat(c[1]), theta), k)


@njit(**_KERNEL)
def depth3_tile(xa2, oa, xb, ob, ma, oma, mb, omb, k, mbits, n, q_, c, hs0, hs1, ht1, lb, lc, C):
    """GAP Theta sum (fix=False NTK, two conv layers) of shift tile ``k`` of one pair: xa2, xb: flat
    images of all pairs' first (each channel stored twice) and second sides, ``oa``, ``ob`` this
    pair's offsets; ma, mb: flat maps with offsets; mbits: the tile's mask bits; hs0, hs1, ht1:
    zeroed rows of ``n + 2q`` (row sums of Sigma^(0), Sigma^(1), Theta^(1)); lb, lc: the lags."""
    nv = n // 8
    qv = q_ // 8
    zero = v.zeros()
    acc = zero
    # S0 rolling
    s_prev = zero
    s_cur = zero
    for ch in range(C):
        s_cur = v.fma(v.load(xa2, oa + ch * 2 * n + k), v.load(xb, ob + ch * n), s_cur)
    k_prev = zero
    k_cur = zero
    t_prev = zero
    t_cur = zero
    for j in range(nv + 2 * qv + 2 + lb + lc):
        if j < nv:
            s_next = zero
            if j + 1 < nv:
                o = 8 * (j + 1)
                for ch in range(C):
                    s_next = v.fma(v.load(xa2, oa + ch * 2 * n + k + o), v.load(xb, ob + ch * n + o), s_next)
            f = 8 * j
            h = v.add_where(
                v.load_mask(mbits, j),
                v.add_where(v.load_mask(mbits, nv + j), s_cur, v.shift_next(s_cur, s_next)),
                v.shift_prev(s_prev, s_cur),
            )
            v.store(hs0, q_ + f, h)
            s_prev = s_cur
            s_cur = s_next
        i = j - qv - lb
        if i >= 0:
            if i < nv:
                f = 8 * i
                e = q_ + f
                sin = v.add_where(
                    v.load_mask(mbits, 2 * nv + i),
                    v.add_where(v.load_mask(mbits, 3 * nv + i), v.load(hs0, e), v.load(hs0, e + q_)),
                    v.load(hs0, e - q_),
                )
                rho = v.mul(sin, v.mul(v.load(ma, oma + 2 * n + k + f), v.load(mb, omb + 2 * n + f)))
                norm = v.mul(v.load(ma, oma + k + f), v.load(mb, omb + f))
                k_new, t_new = _relu(rho, norm, sin, c, False)
            else:
                k_new = zero
                t_new = zero
            i1 = i - 1
            if 0 <= i1 < nv:
                f = 8 * i1
                m0 = v.load_mask(mbits, i1)
                m1 = v.load_mask(mbits, nv + i1)
                v.store(
                    hs1,
                    q_ + f,
                    v.add_where(m0, v.add_where(m1, k_cur, v.shift_next(k_cur, k_new)), v.shift_prev(k_prev, k_cur)),
                )
                v.store(
                    ht1,
                    q_ + f,
                    v.add_where(m0, v.add_where(m1, t_cur, v.shift_next(t_cur, t_new)), v.shift_prev(t_prev, t_cur)),
                )
            k_prev = k_cur
            k_cur = k_new
            t_prev = t_cur
            t_cur = t_new
            i2 = i1 - qv - lc
            if 0 <= i2 < nv:
                f = 8 * i2
                e = q_ + f
                m2 = v.load_mask(mbits, 2 * nv + i2)
                m3 = v.load_mask(mbits, 3 * nv + i2)
                sin = v.add_where(m2, v.add_where(m3, v.load(hs1, e), v.load(hs1, e + q_)), v.load(hs1, e - q_))
                tin = v.add_where(m2, v.add_where(m3, v.load(ht1, e), v.load(ht1, e + q_)), v.load(ht1, e - q_))
                rho = v.mul(sin, v.mul(v.load(ma, oma + 6 * n + k + f), v.load(mb, omb + 6 * n + f)))
                norm = v.mul(v.load(ma, oma + 4 * n + k + f), v.load(mb, omb + 4 * n + f))
                k2, t2 = _relu(rho, norm, tin, c, True)
                acc = v.add(acc, t2)
    return v.lane_sum(acc)


@njit(**_KERNEL)
def run(x2, x, maps, p_, rows, cols, c, out, lb, lc, hs0, hs1, ht1):
    """out[i, k]: the tile sums of all pairs (rows[i], cols[i]) and tiles k."""
    n = x.shape[2]
    q_ = n // p_
    n_ch = x.shape[1]
    x2f, xf, mf = x2.ravel(), x.ravel(), maps.ravel()
    ms = maps.shape[1] * maps.shape[2] * maps.shape[3]
    for k in range(n):
        mbits = mask_bits(cp.tile_masks(p_, q_, k, 1.0))
        for i in range(rows.shape[0]):
            a, b = rows[i], cols[i]
            oa, ob = a * n_ch * 2 * n, b * n_ch * n
            out[i, k] = depth3_tile(
                x2f, oa, xf, ob, mf, a * ms, mf, b * ms, k, mbits, n, q_, c, hs0, hs1, ht1, lb, lc, n_ch
            )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lags", default="1,1")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--no-divider", action="store_true")
    args = ap.parse_args(argv)
    if args.no_divider:  # the kernels read these globals when first compiled, below
        v.sqrt = v.fabs
        v.div = v.mul
    import numba
    from bench_fused import clock_ghz

    numba.set_num_threads(1)
    lb, lc = map(int, args.lags.split(","))
    ghz = clock_ghz()
    p, n_img = 16, 16
    x = np.random.default_rng(1).standard_normal((n_img, 3, p * p))
    x2 = np.concatenate([x, x], axis=2)
    c = cp.constants(np.float64)
    maps = cp.image_maps(x, p, 2, c)
    iu = np.triu_indices(n_img, 1)
    rows, cols = iu[0][:32].astype(np.int64), iu[1][:32].astype(np.int64)
    tiles, weights, outs = np.arange(p * p, dtype=np.int64), np.ones(p * p), np.array([2], np.int64)
    out = np.zeros((32, p * p))
    hs0, hs1, ht1 = np.zeros((3, p * p + 2 * p))
    run(x2, x, maps, p, rows, cols, c, out, lb, lc, hs0, hs1, ht1)
    ref = cp.pair_sums(x, x, maps, maps, p, rows, cols, tiles, weights, outs, False, False, True, c)[:, 0]
    diff = float(np.max(np.abs(out.sum(1) - ref) / np.abs(ref)))
    tf, tp = [], []
    for _ in range(args.rounds):
        t = time.perf_counter()
        run(x2, x, maps, p, rows, cols, c, out, lb, lc, hs0, hs1, ht1)
        tf.append(time.perf_counter() - t)
        t = time.perf_counter()
        cp.pair_sums(x, x, maps, maps, p, rows, cols, tiles, weights, outs, False, False, True, c)
        tp.append(time.perf_counter() - t)
    cyc = ghz * 1e9 / (32 * (p * p) ** 2)
    ratio = np.median(np.array(tp) / np.array(tf))
    print(
        f"# prototype_d3  {time.strftime('%Y-%m-%d %H:%M')}  lags {lb},{lc}  clock {ghz:.2f} GHz"
        f"{'  NO DIVIDER (results wrong)' if args.no_divider else ''}"
    )
    print(
        f"prototype {min(tf) * cyc:.2f} min {np.median(tf) * cyc:.2f} median; planes {min(tp) * cyc:.2f} min "
        f"{np.median(tp) * cyc:.2f} median cycles per entry; x (median round) {ratio:.3f}; max rel diff {diff:.1e}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
