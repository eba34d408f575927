"""Skipping zero activations: the sparse dataflow of the layer engine, counted.

A zero activation contributes nothing to a BitLinear: neither its adds nor the weight
column it multiplies are needed. A dense engine gains nothing from scattered zeros (a
beat of 32 activations at 80 % sparsity is all zero 0.08 % of the time), so the saving
has to come from the dataflow (``docs/a48-qsparse.md``):

1. **Compaction.** A token's kept activations are compacted with their column indices
   (:func:`kept_columns`), in ascending column order, and cut into ``lanes``-wide beats;
   the last beat is padded with zero activations. A token keeps at least one beat, so
   an all-zero token still yields its (zero) results.
2. **Column-major weights.** Each row tile of a layer is stored column by column
   (:func:`pack_columns`): a tile's column, its ``rows`` trits, is
   :func:`column_bytes` ``(rows)`` bytes packed 5 trits per byte
   (:func:`model.encoding.pack_trits`) and can be fetched on its own. A beat's weights
   are the ``lanes`` columns of its indices, in lane order; the padding lanes are zero
   columns that the fetcher fills in without reading memory.
3. **The same unit.** The matmul unit accumulates the compacted beats as it does dense
   ones. The sum over the kept columns equals the dense sum whenever every dropped
   activation is zero, so the results are bit-exact to the dense golden model.

Two loop orders (``order``):

* ``"tiles"`` (tile-major, output stationary, the dense engine's order): for each row
  tile, the token's beats; the unit's ``rows`` accumulator registers hold one tile.
  A tile's stored columns are contiguous (``[tile][column]``), so a kept column is a
  :func:`column_bytes` read on its own: cheap from on-chip SRAM, but from DRAM every
  burst holding a kept column is read whole (:func:`burst_bytes`).
* ``"beats"`` (beat-major, activation stationary): for each beat, every row tile; the
  unit keeps every tile's partial sums in an accumulator bank (``acc_tiles`` deep), and
  the weights are stored ``[column][tile]``, so a kept column of the whole layer is
  ``row_tiles * column_bytes`` contiguous bytes: read in whole bursts, every byte used.

Two schedules choose the kept columns:

* ``"nonzero"`` (data dependent: TopK, squared-ReLU zeros): the token's nonzero
  quantized activations. The beats per token vary with the data.
* ``"mask"`` (static: Block Q-Sparse N:M): the positions a mask keeps, whatever their
  quantized value. With N:M every token keeps exactly ``N / M`` of its columns, so every
  token has the same beats and the schedule is known before the data.

The beats and bytes of the dataflow are counted in :mod:`ternary_accel.hw.mapping`
(:class:`~ternary_accel.hw.mapping.SparseTiling`, beside the dense dataflow's
:class:`~ternary_accel.hw.mapping.LayerTiling`).
"""

import numpy as np

from ternary_accel.model.encoding import TRITS_PER_BYTE, check_ternary, pack_trits, packed_length

__all__ = ["NONZERO", "MASK", "SCHEDULES", "TILE_MAJOR", "BEAT_MAJOR", "ORDERS",
           "check_order", "column_bytes", "pack_columns", "kept_columns"]

#: Kept columns: the nonzero activations (data dependent) or a mask's (static).
NONZERO, MASK = "nonzero", "mask"
SCHEDULES = (NONZERO, MASK)
#: Loop orders: each tile's beats (output stationary), or each beat's tiles
#: (activation stationary, an accumulator bank over the tiles).
TILE_MAJOR, BEAT_MAJOR = "tiles", "beats"
ORDERS = (TILE_MAJOR, BEAT_MAJOR)


def check_order(order):
    """Return ``order`` if it is one of :data:`ORDERS`."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {', '.join(ORDERS)}, not {order!r}")
    return order


def column_bytes(rows):
    """Bytes of one stored weight column of a ``rows``-row tile: its trits, 5 per byte."""
    if isinstance(rows, bool) or not isinstance(rows, (int, np.integer)) or rows < 1:
        raise ValueError(f"rows must be a positive integer, not {rows!r}")
    return packed_length(rows)


def pack_columns(weights, rows):
    """Store ternary weights column-major per row tile, each column on its own bytes.

    Parameters
    ----------
    weights : array_like, (N_out, N_in)
        Ternary weights; ``N_out`` a multiple of ``rows``.
    rows : int
        Rows of a tile (the engine's M).

    Returns
    -------
    numpy.ndarray of uint8, (N_out / rows, N_in, column_bytes(rows))
        ``[tile, column]`` holds rows ``tile * rows ..`` of that column, row 0 first,
        padded with zero weights to whole bytes.
    """
    w = check_ternary(weights)
    if w.ndim != 2:
        raise ValueError(f"weights must be 2-D (N_out, N_in), not shape {w.shape}")
    width = column_bytes(rows)
    if w.shape[0] % rows:
        raise ValueError(f"out_features {w.shape[0]} is not a multiple of rows ({rows})")
    tiles, n_in = w.shape[0] // rows, w.shape[1]
    cols = w.reshape(tiles, rows, n_in).transpose(0, 2, 1)           # (tile, col, row)
    cols = np.pad(cols, ((0, 0), (0, 0), (0, width * TRITS_PER_BYTE - rows)))
    return pack_trits(cols.reshape(-1)).reshape(tiles, n_in, width)


def kept_columns(activations, schedule=NONZERO, mask=None):
    """The columns each token keeps, ascending.

    Parameters
    ----------
    activations : array_like of int, (T, N_in)
        Quantized activations.
    schedule : str
        ``"nonzero"``: the nonzero activations; ``"mask"``: the True entries of ``mask``.
    mask : array_like of bool, (T, N_in), optional
        With ``"mask"``: the columns kept (every activation outside it must be zero,
        or the result would not be the dense one).

    Returns
    -------
    list of numpy.ndarray of int64
        One array of column indices per token.

    Raises
    ------
    ValueError
        On a bad schedule, a mask of the wrong shape or with a nonzero activation
        outside it, or a mask given with ``"nonzero"``.
    """
    x = np.asarray(activations)
    if x.ndim != 2 or not np.issubdtype(x.dtype, np.integer):
        raise ValueError(f"activations must be a 2-D integer array (T, N_in), not "
                         f"{x.dtype} of shape {x.shape}")
    if schedule == NONZERO:
        if mask is not None:
            raise ValueError("a mask goes with schedule='mask'")
        keep = x != 0
    elif schedule == MASK:
        if mask is None:
            raise ValueError("schedule='mask' needs the mask of kept columns")
        keep = np.asarray(mask)
        if keep.shape != x.shape or keep.dtype != bool:
            raise ValueError(f"mask must be a boolean array of shape {x.shape}, not "
                             f"{keep.dtype} of shape {keep.shape}")
        outside = (x != 0) & ~keep
        if np.any(outside):
            t, c = (int(v) for v in np.argwhere(outside)[0])
            raise ValueError(f"token {t} has a nonzero activation at column {c}, "
                             f"outside the mask")
    else:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, not {schedule!r}")
    return [np.flatnonzero(row).astype(np.int64) for row in keep]
