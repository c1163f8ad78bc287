"""Flushing subnormal floats to zero inside a kernel, and restoring the caller's mode.

ReLU networks produce subnormal float32 values (below 1.2e-38): Adam's first moment of a
dead unit decays by beta1 every step, and deltas fade on their way back. x86 cores handle
each in microcode, at ~100 times the cost of a normal operation: the fused MLP step ran at
1,000 us instead of 380 us once they appeared. With the MXCSR's flush-to-zero and
denormals-are-zero bits set, they count as zero, as PyTorch's ``set_flush_denormal(True)``
makes them; no weight of a useful model lives there.

The mode is per thread: a kernel sets it at the start of each parallel task and restores it
at the end, so the rest of the process (NumPy, the user's code) never sees it. On other
architectures both calls do nothing.
"""

from __future__ import annotations

import platform

from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")
_FLUSH_BITS = 0x8040  # FTZ (bit 15) | DAZ (bit 6)


def _mxcsr_call(builder, name, slot):
    i8_ptr = ir.IntType(8).as_pointer()
    function = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(ir.VoidType(), [i8_ptr]), name)
    builder.call(function, [builder.bitcast(slot, i8_ptr)])


@intrinsic
def flush_subnormals(typingctx):
    """Set flush-to-zero and denormals-are-zero; return the previous mode for ``restore``."""

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        if not _X86:
            return ir.Constant(i32, 0)
        slot = cgutils.alloca_once(builder, i32)
        _mxcsr_call(builder, "llvm.x86.sse.stmxcsr", slot)
        previous = builder.load(slot)
        builder.store(builder.or_(previous, ir.Constant(i32, _FLUSH_BITS)), slot)
        _mxcsr_call(builder, "llvm.x86.sse.ldmxcsr", slot)
        return previous

    return types.uint32(), codegen


@intrinsic
def restore_fp_mode(typingctx, previous):
    """Put back the mode ``flush_subnormals`` returned."""
    if previous != types.uint32:
        return None

    def codegen(context, builder, signature, args):
        if _X86:
            slot = cgutils.alloca_once(builder, ir.IntType(32))
            builder.store(args[0], slot)
            _mxcsr_call(builder, "llvm.x86.sse.ldmxcsr", slot)
        return context.get_dummy_value()

    return types.void(previous), codegen
