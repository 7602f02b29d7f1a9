"""Atomic operations on a shared int64 array for Numba kernels run by several threads at once.

Numba has no atomics on the CPU; these two emit LLVM's atomic instructions directly:

- ``fetch_add(counter, value)``: ``counter[0] += value`` atomically, returning the old value
  (``monotonic`` order: a shared work counter needs no ordering with other memory);
- ``load_acquire(flags, i)``: ``flags[i]`` read atomically, ordered before every later read, so
  once a thread sees another's flag set it also sees what that thread wrote before setting it.
"""
from numba import types
from numba.extending import intrinsic

__all__ = ["fetch_add", "load_acquire"]


def _int64_array(a):
    return isinstance(a, types.Array) and a.dtype == types.int64


@intrinsic
def fetch_add(typingctx, counter, value):
    """Atomically ``counter[0] += value``; returns the old value."""
    if not (_int64_array(counter) and isinstance(value, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        arr = context.make_array(signature.args[0])(context, builder, args[0])
        val = context.cast(builder, args[1], signature.args[1], types.int64)
        return builder.atomic_rmw("add", arr.data, val, "monotonic")
    return types.int64(counter, value), codegen


@intrinsic
def load_acquire(typingctx, flags, i):
    """``flags[i]``, read atomically with acquire order."""
    if not (_int64_array(flags) and isinstance(i, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        arr = context.make_array(signature.args[0])(context, builder, args[0])
        index = context.cast(builder, args[1], signature.args[1], types.intp)
        return builder.load_atomic(builder.gep(arr.data, [index]), "acquire", 8)
    return types.int64(flags, i), codegen
