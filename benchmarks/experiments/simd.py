"""Explicit 8-lane float64 vectors for Numba kernels: LLVM ``<8 x double>`` values and a few
operations on them, each a Numba intrinsic that emits one LLVM instruction or intrinsic call.

Used by the experiment ``wavefront.py`` (not by cntk_core). LLVM's loop vectoriser decides alone
how a Numba loop becomes vector code; the wavefront needs to decide itself: which values stay in registers between
iterations, which neighbour comes from a register shuffle instead of a reload, and in which order
several independent stages run inside one loop. On a CPU with 512-bit vectors an 8-lane value is
one register; on AVX2 LLVM splits it into two 4-lane halves, on plain SSE2 into four, so the
code is portable. All loads and stores are unaligned-safe and unchecked (the caller keeps
indices in bounds): ``load(a, i)`` reads ``a[i : i + 8]`` of a 1-D float64 array.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

LANES = 8
_F64 = ir.DoubleType()
_I32 = ir.IntType(32)
_VEC = ir.VectorType(_F64, LANES)
_MASK = ir.VectorType(ir.IntType(1), LANES)


class Vec8(types.Type):
    """Numba type of an 8-lane float64 vector (a value, like a float)."""

    def __init__(self):
        super().__init__(name="Vec8")


class Mask8(types.Type):
    """Numba type of an 8-lane boolean mask."""

    def __init__(self):
        super().__init__(name="Mask8")


vec8 = Vec8()
mask8 = Mask8()


@register_model(Vec8)
class _Vec8Model(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _VEC)


@register_model(Mask8)
class _Mask8Model(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _MASK)


def _element_ptr(context, builder, arrty, arr, idx):
    data = arr if isinstance(arrty, types.CPointer) else context.make_array(arrty)(context, builder, arr).data
    return builder.gep(data, [idx])


@intrinsic
def pointer(typingctx, arr):
    """The data pointer of a contiguous array. Pass pointers, not arrays, to helpers called in a
    hot loop: each call with an array argument costs atomic reference-count updates (NRT), a
    pointer none; the caller keeps the array alive."""

    def codegen(context, builder, sig, args):
        return context.make_array(sig.args[0])(context, builder, args[0]).data

    return types.CPointer(arr.dtype)(arr), codegen


@intrinsic
def load(typingctx, arr, idx):
    """``arr[idx : idx + 8]`` of a 1-D float64 array or pointer (unchecked, any alignment)."""

    def codegen(context, builder, sig, args):
        ptr = builder.bitcast(_element_ptr(context, builder, sig.args[0], args[0], args[1]), _VEC.as_pointer())
        return builder.load(ptr, align=8)

    return vec8(arr, idx), codegen


@intrinsic
def store(typingctx, arr, idx, value):
    """``arr[idx : idx + 8] = value`` (unchecked, any alignment)."""

    def codegen(context, builder, sig, args):
        ptr = builder.bitcast(_element_ptr(context, builder, sig.args[0], args[0], args[1]), _VEC.as_pointer())
        builder.store(args[2], ptr, align=8)
        return context.get_dummy_value()

    return types.none(arr, idx, value), codegen


@intrinsic
def load_mask(typingctx, arr, idx):
    """The 8 bits of the byte ``arr[idx]`` (a uint8 array or pointer) as a mask, lane i = bit i."""

    def codegen(context, builder, sig, args):
        byte = builder.load(_element_ptr(context, builder, sig.args[0], args[0], args[1]))
        return builder.bitcast(byte, _MASK)

    return mask8(arr, idx), codegen


@intrinsic
def splat(typingctx, x):
    """The scalar ``x`` (converted to float64) in all 8 lanes."""

    def codegen(context, builder, sig, args):
        x = context.cast(builder, args[0], sig.args[0], types.float64)
        one = builder.insert_element(ir.Constant(_VEC, ir.Undefined), x, ir.Constant(_I32, 0))
        return builder.shuffle_vector(
            one, ir.Constant(_VEC, ir.Undefined), ir.Constant(ir.VectorType(_I32, LANES), [0] * LANES)
        )

    return vec8(x), codegen


@intrinsic
def zeros(typingctx):
    """All lanes 0.0."""

    def codegen(context, builder, sig, args):
        return ir.Constant(_VEC, [0.0] * LANES)

    return vec8(), codegen


def _binary(method):
    @intrinsic
    def op(typingctx, a, b):
        def codegen(context, builder, sig, args):
            return getattr(builder, method)(args[0], args[1])

        return vec8(a, b), codegen

    return op


add = _binary("fadd")
sub = _binary("fsub")
mul = _binary("fmul")
div = _binary("fdiv")


def _llvm_call(builder, name, args):
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_VEC, [_VEC] * len(args)), name)
    return builder.call(fn, list(args))


@intrinsic
def sqrt(typingctx, a):
    """Lane-wise correctly rounded square root."""
    return vec8(a), lambda context, builder, sig, args: _llvm_call(builder, "llvm.sqrt.v8f64", args)


@intrinsic
def fabs(typingctx, a):
    """Lane-wise |a|."""
    return vec8(a), lambda context, builder, sig, args: _llvm_call(builder, "llvm.fabs.v8f64", args)


@intrinsic
def maximum(typingctx, a, b):
    """Lane-wise max (IEEE maxNum)."""
    return vec8(a, b), lambda context, builder, sig, args: _llvm_call(builder, "llvm.maxnum.v8f64", args)


@intrinsic
def fma(typingctx, a, b, c):
    """Lane-wise ``a * b + c`` with one rounding."""
    return vec8(a, b, c), lambda context, builder, sig, args: _llvm_call(builder, "llvm.fma.v8f64", args)


def _compare(op):
    @intrinsic
    def cmp(typingctx, a, b):
        def codegen(context, builder, sig, args):
            return builder.fcmp_ordered(op, args[0], args[1])

        return mask8(a, b), codegen

    return cmp


greater = _compare(">")
greater_equal = _compare(">=")


@intrinsic
def where(typingctx, m, a, b):
    """Lane-wise ``a if m else b``."""

    def codegen(context, builder, sig, args):
        return builder.select(args[0], args[1], args[2])

    return vec8(m, a, b), codegen


@intrinsic
def add_where(typingctx, m, a, b):
    """Lane-wise ``a + b if m else a`` (a masked add: no multiply by a 0/1 mask)."""

    def codegen(context, builder, sig, args):
        return builder.select(args[0], builder.fadd(args[1], args[2]), args[1])

    return vec8(m, a, b), codegen


_PREV = ir.Constant(ir.VectorType(_I32, LANES), [LANES - 1 + i for i in range(LANES)])
_NEXT = ir.Constant(ir.VectorType(_I32, LANES), [1 + i for i in range(LANES)])


@intrinsic
def shift_prev(typingctx, prev, cur):
    """Of the stream ``..., prev, cur, ...``: the 8 elements one before ``cur``'s."""

    def codegen(context, builder, sig, args):
        return builder.shuffle_vector(args[0], args[1], _PREV)

    return vec8(prev, cur), codegen


@intrinsic
def shift_next(typingctx, cur, nxt):
    """Of the stream ``..., cur, nxt, ...``: the 8 elements one after ``cur``'s."""

    def codegen(context, builder, sig, args):
        return builder.shuffle_vector(args[0], args[1], _NEXT)

    return vec8(cur, nxt), codegen


@intrinsic
def lane_sum(typingctx, a):
    """float64 sum of the 8 lanes in a fixed order: ((0+4) + (2+6)) + ((1+5) + (3+7))."""

    def codegen(context, builder, sig, args):
        x = args[0]
        for width in (4, 2, 1):
            lo = builder.shuffle_vector(x, x, ir.Constant(ir.VectorType(_I32, width), list(range(width))))
            hi = builder.shuffle_vector(x, x, ir.Constant(ir.VectorType(_I32, width), list(range(width, 2 * width))))
            x = builder.fadd(lo, hi)
        return builder.extract_element(x, ir.Constant(_I32, 0))

    return types.float64(a), codegen
