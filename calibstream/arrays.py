"""Array plumbing between frozen exposure planes and sep."""

from __future__ import annotations

import numpy as np


def writable_alias(array: np.ndarray) -> np.ndarray:
    """The same memory, flagged writable, for sep only.

    sep's Cython signatures demand writable buffers although sep never writes
    to its inputs; aliasing avoids copying a 64 MB read-only plane.
    """
    if array.flags.writeable:
        return array
    interface = dict(array.__array_interface__)
    interface["data"] = (interface["data"][0], False)

    class _Alias:
        __array_interface__ = interface
        owner = array  # keeps the memory alive as long as the alias

    return np.asarray(_Alias())
