"""The memory budget: how many bytes of temporaries one call may hold at a time.

Set it with the environment variable ``FASTSIM_CHUNK_MB`` (MiB, default 256) or assign
``fastsim.core.budget.CHUNK_BYTES``. Every chunked loop in fastsim sizes its row chunks, kernel
blocks and accumulator groups from it, so no call holds an n x n matrix.
"""

from __future__ import annotations

import math
import os

DEFAULT_MB = 256


def chunk_bytes_from_env(raw: str | None) -> int:
    """Bytes for a FASTSIM_CHUNK_MB value (None: the default); a clear error for anything else."""
    if raw is None:
        return DEFAULT_MB * 2**20
    try:
        mb = float(raw)
    except ValueError:
        raise ValueError(f"FASTSIM_CHUNK_MB must be a number of MiB, got {raw!r}") from None
    if not (mb > 0 and math.isfinite(mb)) or mb * 2**20 < 1:
        raise ValueError(f"FASTSIM_CHUNK_MB must be a finite number of MiB > 0 (at least one byte); got {raw!r}")
    return int(mb * 2**20)


#: Upper bound, in bytes, on the temporary blocks (slices of n x n matrices, converted row chunks)
#: one call allocates at a time.
CHUNK_BYTES = chunk_bytes_from_env(os.environ.get("FASTSIM_CHUNK_MB"))


def rows_per_chunk(bytes_per_row: int, total_rows: int, minimum: int = 1) -> int:
    """How many rows of `bytes_per_row` bytes fit in the chunk budget (at least `minimum`)."""
    rows = CHUNK_BYTES // max(int(bytes_per_row), 1)
    return int(max(minimum, min(total_rows, rows)))


def row_chunks(n: int, bytes_per_row: int):
    """(start, end) row ranges whose temporaries, `bytes_per_row` each, fit the chunk budget."""
    step = rows_per_chunk(bytes_per_row, n)
    for start in range(0, n, step):
        yield start, min(n, start + step)
