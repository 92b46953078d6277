"""Fit and check the division-free asin of ``wavefront.py``: asin(s) = s + s z g(z), z = s^2 in
[0, 1/4], g a polynomial of degree ``--degree`` (11 there).

g is the least-squares fit, in 40-digit arithmetic, of ``(asin(sqrt z) / sqrt z - 1) / z`` on
200 Chebyshev nodes of [0, 1/4]. The check evaluates s + s z g(z) in float64 (Horner) at 2,001
points of s in [0, 1/2] and prints the largest error relative to asin in 40 digits, then the
coefficients. Needs mpmath (``pip install mpmath``; not a dependency of the project).

Usage: python benchmarks/experiments/fit_asin.py [--degree 11]
"""

from __future__ import annotations

import argparse

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--degree", type=int, default=11)
    args = ap.parse_args(argv)
    import mpmath as mp

    mp.mp.dps = 40
    deg, n_nodes = args.degree, 200

    def g(z):
        if z == 0:
            return mp.mpf(1) / 6
        s = mp.sqrt(z)
        return (mp.asin(s) / s - 1) / z

    quarter = mp.mpf(1) / 4
    nodes = [quarter / 2 * (1 + mp.cos(mp.pi * (k + mp.mpf(1) / 2) / n_nodes)) for k in range(n_nodes)]
    design, target = mp.matrix(n_nodes, deg + 1), mp.matrix(n_nodes, 1)
    for i, z in enumerate(nodes):
        for j in range(deg + 1):
            design[i, j] = (4 * z) ** j  # in t = 4 z, for conditioning
        target[i] = g(z)
    coef_t = mp.lu_solve(design.T * design, design.T * target)
    coef = [float(coef_t[j] * mp.mpf(4) ** j) for j in range(deg + 1)]
    worst = 0.0
    for s in np.linspace(0.0, 0.5, 2001)[1:]:
        z = s * s
        gz = 0.0
        for c in reversed(coef):
            gz = gz * z + c
        approx = s + s * (z * gz)
        exact = mp.asin(mp.mpf(float(s)))
        worst = max(worst, float(abs((mp.mpf(approx) - exact) / exact)))
    print(f"degree {deg}: largest relative error of the float64 evaluation on (0, 1/2]: {worst:.2e}")
    print("coefficients g_0 .. g_n:", ", ".join(repr(c) for c in coef))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
