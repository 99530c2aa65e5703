"""Per-process seeds derived from the run's one `seed`."""

from __future__ import annotations

import zlib

import numpy as np


def derive_seed(seed: int, role: str, *index: int, bits: int = 63) -> int:
    """A `bits`-bit seed for one use of the run's `seed` (`role`, e.g. worker 3's env resets:
    `derive_seed(seed, "worker envs", 3)`), from numpy's SeedSequence: independent streams for
    every (role, index), no overflow whatever the size of `seed`, the same for the same arguments.
    Env seeds take 31 bits: many envs (MinAtar, anything on numpy's RandomState) refuse 2**32 and
    above, and env i of a vector env is seeded with seed + i."""
    sequence = np.random.SeedSequence(seed, spawn_key=(zlib.crc32(role.encode()), *index))
    return int(sequence.generate_state(1, np.uint64)[0] >> np.uint64(64 - bits))
