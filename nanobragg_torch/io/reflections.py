"""Structure factors from MTZ and mmCIF files (``-hkl x.mtz``, ``-hkl x.cif``), expanded to the C's P1 grid.

nanoBragg.c reads only P1 text ``h k l F`` files (io/hkl.py) into a dense grid and applies neither symmetry nor
Friedel's law: every (h,k,l) not in the file gets ``default_F``. A merged MTZ or mmCIF file holds an asymmetric
unit in its space group, so here every reflection is written to all of its symmetry equivalents h·R (R the
rotation parts of the space group's operators; the translations change phases only) and to their Friedel
mates -h·R. The result is the ``(F, meta)`` that ``read_hkl_file`` returns for the equivalent P1 text file
(one line per filled (h,k,l): ``meta["hkls"]`` counts them).

Rules (docs/formats.md, "MTZ and mmCIF"):

- The file kind comes from the name (``.mtz``; ``.cif``, ``.mmcif``, ``.ent``; each optionally ``.gz``) or
  from the MTZ magic bytes; anything else is a text HKL file.
- Column: ``column`` names it (MTZ label, or mmCIF ``_refln`` tag with or without the ``_refln.`` prefix);
  by default the first amplitude column in file order (MTZ type F; mmCIF ``F_meas_au``, ``F_calc`` ...),
  else the first anomalous pair. Intensities (MTZ types J, K; ``intensity_meas`` ...) are refused: convert
  them to amplitudes first (French-Wilson), as a crystallographer would.
- An anomalous amplitude (MTZ type G, mmCIF ``pdbx_F_plus``/``pdbx_F_minus``): naming either one of the pair
  uses both. F(+) of h goes to every h·R and F(-) to every -h·R; Friedel's law is not applied. Where both land
  on one index (centric reflections) F(+) wins.
- A missing value (NaN, MTZ's VALM, mmCIF ``?``/``.``) fills nothing. Precedence where entries land on one
  index: a reflection of the file (its own h, F(+)) wins over every generated symmetry or Friedel mate, whatever
  the order of the rows; among rows, or among mates, the later one in the file wins (as a repeated line of a
  text file does). Rows that a mate of another row contradicts are reported once (how many, an example).
- Unmerged data, a file without a space group, non-integral indices and infinite values are InputErrors
  naming the file.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import warnings
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from nanobragg_torch.config import SparseGrid
from nanobragg_torch.errors import InputError
from nanobragg_torch.io.hkl import HKLMeta, hkl_meta_from_bounds, read_hkl_file, store_grid

MTZ_SUFFIXES = (".mtz",)
CIF_SUFFIXES = (".cif", ".mmcif", ".ent")
MTZ_MAGIC = b"MTZ "

# MTZ column types: F amplitude, G anomalous amplitude F(+)/F(-); J intensity, K anomalous intensity I(+)/I(-)
AMPLITUDE, ANOMALOUS = "F", "G"
INTENSITY_TYPES = ("J", "K")
TYPE_NAMES = {"H": "Miller index", "J": "intensity", "F": "amplitude", "D": "anomalous difference",
              "Q": "standard deviation", "G": "anomalous amplitude", "L": "standard deviation",
              "K": "anomalous intensity", "M": "standard deviation", "E": "normalized amplitude",
              "P": "phase", "W": "weight", "A": "phase probability", "B": "batch", "Y": "M/ISYM",
              "I": "integer", "R": "real"}  # fmt: skip

# mmCIF _refln tags, typed as gemmi's cif2mtz types them (F, G, J, K); other tags are not amplitudes
CIF_TYPES = {"F_meas_au": "F", "F_meas": "F", "F_calc": "F", "F_calc_au": "F", "pdbx_FWT": "F",
             "pdbx_DELFWT": "F", "pdbx_F_plus": "G", "pdbx_F_minus": "G", "intensity_meas": "J",
             "intensity_calc": "J", "F_squared_meas": "J", "F_squared_calc": "J", "pdbx_I_plus": "K",
             "pdbx_I_minus": "K"}  # fmt: skip


@dataclass
class ReflectionTable:
    """A merged reflection file: its columns in file order and the rotations of its space group."""

    path: str
    hkl: np.ndarray  # (n, 3) float64, as stored
    labels: list[str]
    types: list[str]  # one MTZ type letter per label ("" for an untyped mmCIF tag)
    values: dict[str, np.ndarray]  # label -> (n,) float64, NaN where missing
    rotations: np.ndarray  # (ops, 3, 3) int64: h' = h @ R
    spacegroup: str = ""  # its Hermann-Mauguin symbol, for the note

    def listing(self) -> str:
        return ", ".join(f"{lab} ({t})" if t else lab for lab, t in zip(self.labels, self.types, strict=True))


def file_kind(path: str | os.PathLike[str]) -> str:
    """'mtz', 'cif' or 'text' for an ``-hkl`` file: by extension (``.gz`` aside), else MTZ's magic bytes."""
    name = os.fspath(path).lower().removesuffix(".gz")
    if name.endswith(MTZ_SUFFIXES):
        return "mtz"
    if name.endswith(CIF_SUFFIXES):
        return "cif"
    try:
        with open(path, "rb") as handle:
            if handle.read(4) == MTZ_MAGIC:
                return "mtz"
    except OSError:
        pass  # the reader names the file
    return "text"


def read_structure_factors(
    path: str | os.PathLike[str], column: str | None = None, default_F: float = 0.0,
    notes: list[str] | None = None,
) -> tuple[np.ndarray | SparseGrid, HKLMeta]:
    """Read ``-hkl`` structure factors from a text HKL, MTZ or mmCIF file into the C's P1 grid.

    Returns ``(F, meta)`` as ``read_hkl_file`` does. ``column`` picks the amplitude column of an MTZ or mmCIF
    file (None: the default, see the module docstring); it is an error for a text file. ``notes``: for an
    MTZ/mmCIF file, one line saying which column and space group were used is appended, and one warning line
    where explicit rows and mates disagree (without ``notes``: a Python warning); a sparse store adds a line.
    """
    name = os.fspath(path)
    kind = file_kind(path)
    if kind == "text":
        if column is not None:
            raise InputError(f"{name}: a text HKL file has one F column; a column name is for MTZ and mmCIF files")
        return read_hkl_file(path, default_F=default_F, notes=notes)
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:  # the one-line message of io.atomic.read_input
        raise InputError(f"{name}: cannot read: {exc.strerror or exc}") from exc
    table = read_mtz(name) if kind == "mtz" else read_mmcif(name)
    hkl, F_plus, F_minus, chosen = select_amplitudes(table, column)
    idx, F, explicit, source = expand_to_p1(table, hkl, F_plus, F_minus)
    conflicts = mate_conflicts(idx, F, explicit, source)
    grid, meta = p1_grid(name, idx, F, default_F, notes)
    if conflicts is not None:
        if notes is None:
            warnings.warn(f"{name}: {conflicts}", stacklevel=2)
        else:
            notes.append(f"warning: {name}: {conflicts}")
    if notes is not None:
        notes.append(
            f"reading {'/'.join(chosen)} from {name}: {len(hkl)} reflections in {table.spacegroup} "
            f"({len(table.rotations)} rotations{'' if len(chosen) > 1 else ' and Friedel mates'}) -> "
            f"{meta['hkls']} indices in P1"
        )
    return grid, meta


def _gemmi(name: str) -> ModuleType:
    try:
        import gemmi
    except ImportError:
        raise InputError(f"{name}: reading MTZ/mmCIF needs gemmi: pip install 'nanobragg-torch[formats]'") from None
    return gemmi


def _one_line(exc: BaseException, name: str) -> str:
    """gemmi's message on one line, without the file name we print first."""
    text = " ".join(str(exc).replace(name + ":", "").replace(name, "").split()).strip(" :")
    return text or type(exc).__name__


def _rotations(gemmi: ModuleType, sg) -> np.ndarray:
    """The distinct rotation parts of the space group's operators, as integer matrices acting on row hkl."""
    rots = {tuple(tuple(v // gemmi.Op.DEN for v in row) for row in op.rot) for op in sg.operations().sym_ops}
    return np.array(sorted(rots), dtype=np.int64).reshape(-1, 3, 3)


def _check_mtz_header(name: str) -> None:
    """The header record must start inside the file: gemmi sizes its data buffer from that pointer before it
    reads, so 12 garbage bytes after the magic made it allocate (and zero) gigabytes for a 100-byte file.
    Bytes 4-8 are the header's position in 4-byte words (1-based), in the byte order of the machine stamp at
    bytes 8-12 (high nibble of its first byte 1: big-endian, else little-endian)."""
    opener = gzip.open if name.lower().endswith(".gz") else open
    try:
        with opener(name, "rb") as handle:
            first = handle.read(12)
            size = len(first) + sum(len(chunk) for chunk in iter(lambda: handle.read(1 << 20), b""))
    except (OSError, EOFError, gzip.BadGzipFile):
        return  # gemmi names what is wrong with the file
    if len(first) < 12 or first[:4] != MTZ_MAGIC:
        return
    order = ">" if first[8] >> 4 == 1 else "<"
    (words,) = struct.unpack(order + "i", first[4:8])
    if not 0 < (words - 1) * 4 < size:
        raise InputError(f"{name}: not a readable MTZ file: its header record is at byte {(words - 1) * 4}, "
                         f"outside the file ({size} bytes)")


def read_mtz(name: str) -> ReflectionTable:
    """A merged MTZ file (gemmi.read_mtz_file) as a ReflectionTable."""
    gemmi = _gemmi(name)
    _check_mtz_header(name)
    try:
        mtz = gemmi.read_mtz_file(name)
    except (RuntimeError, OSError, ValueError) as exc:
        raise InputError(f"{name}: not a readable MTZ file: {_one_line(exc, name)}") from None
    types = [c.type for c in mtz.columns]
    if len(mtz.batches) or "Y" in types or "B" in types:
        raise InputError(f"{name}: unmerged MTZ (batches, M/ISYM); merge it first: one F per reflection is needed")
    if mtz.spacegroup is None:
        raise InputError(f"{name}: no space group in the MTZ header")
    data = np.array(mtz, copy=True, dtype=np.float64).reshape(-1, len(types))
    if not math.isnan(mtz.valm):  # MTZ's "missing number flag" other than NaN
        data[:, 3:][data[:, 3:] == np.float32(mtz.valm)] = np.nan
    labels = [c.label for c in mtz.columns]
    first = {}
    for i, lab in enumerate(labels):  # a label repeated in several datasets: its first column
        first.setdefault(lab, i)
    keep = sorted(first.values())[3:]  # H, K, L come first in every MTZ
    return ReflectionTable(
        path=name,
        hkl=data[:, :3],
        labels=[labels[i] for i in keep],
        types=[types[i] for i in keep],
        values={labels[i]: data[:, i] for i in keep},
        rotations=_rotations(gemmi, mtz.spacegroup),
        spacegroup=mtz.spacegroup.xhm(),
    )


def read_mmcif(name: str) -> ReflectionTable:
    """The first merged ``_refln`` block of an mmCIF structure-factor file (gemmi.as_refln_blocks)."""
    gemmi = _gemmi(name)
    try:
        blocks = gemmi.as_refln_blocks(gemmi.cif.read(name))
    except (RuntimeError, OSError, ValueError) as exc:
        raise InputError(f"{name}: not a readable mmCIF file: {_one_line(exc, name)}") from None
    merged = [b for b in blocks if b.is_merged()]
    if not merged:
        unmerged = any(b.is_unmerged() for b in blocks)
        what = "only unmerged reflections (_diffrn_refln)" if unmerged else "no _refln loop"
        raise InputError(f"{name}: {what}; a merged _refln loop (one F per reflection) is needed")
    block = merged[0]
    if block.spacegroup is None:
        raise InputError(f"{name}: no space group (_symmetry.space_group_name_H-M) in block {block.block.name}")
    tags = [t for t in block.column_labels() if t not in ("index_h", "index_k", "index_l")]
    try:
        hkl = np.array(block.make_miller_array(), dtype=np.float64).reshape(-1, 3)
        values = {t: np.array(block.make_float_array(t), dtype=np.float64) for t in tags}
    except (RuntimeError, ValueError) as exc:
        raise InputError(f"{name}: bad _refln loop: {_one_line(exc, name)}") from None
    return ReflectionTable(
        path=name, hkl=hkl, labels=tags, types=[CIF_TYPES.get(t, "") for t in tags], values=values,
        rotations=_rotations(gemmi, block.spacegroup), spacegroup=block.spacegroup.xhm(),
    )


_PAIRS = (("(+)", "(-)"), ("plus", "minus"), ("PLUS", "MINUS"), ("Plus", "Minus"), ("+", "-"))


def anomalous_pair(table: ReflectionTable, label: str) -> tuple[str, str]:
    """(F(+) label, F(-) label) of the anomalous pair that ``label`` belongs to, found by its name."""
    for plus, minus in _PAIRS:
        for mine, other, chosen_plus in ((plus, minus, True), (minus, plus, False)):
            at = label.rfind(mine)
            if at < 0:
                continue
            partner = label[:at] + other + label[at + len(mine):]
            if partner in table.values and table.types[table.labels.index(partner)] == ANOMALOUS:
                return (label, partner) if chosen_plus else (partner, label)
    raise InputError(f"{table.path}: no F(+)/F(-) partner for anomalous column {label!r}; columns: {table.listing()}")


def select_amplitudes(
    table: ReflectionTable, column: str | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
    """(hkl, F(+), F(-), the labels used) of the chosen column; for a plain amplitude F(-) is F(+) (Friedel's
    law) and the labels are that one column's."""
    if column is None:
        label = next((lab for lab, t in zip(table.labels, table.types, strict=True) if t == AMPLITUDE), None)
        label = label or next((lab for lab, t in zip(table.labels, table.types, strict=True) if t == ANOMALOUS), None)
        if label is None:
            raise InputError(f"{table.path}: no amplitude column (MTZ type F or G); columns: {table.listing()}")
    else:
        label = column.removeprefix("_refln.")
        if label not in table.values:
            raise InputError(f"{table.path}: no column {column!r}; columns: {table.listing()}")
    kind = table.types[table.labels.index(label)]
    if kind in INTENSITY_TYPES:
        raise InputError(
            f"{table.path}: column {label!r} holds intensities; nanoBragg needs amplitudes: convert them first "
            f"(French-Wilson, e.g. ctruncate) or name an amplitude column; columns: {table.listing()}"
        )
    if kind not in (AMPLITUDE, ANOMALOUS):
        what = TYPE_NAMES.get(kind, "not an amplitude") if kind else "not an amplitude"
        raise InputError(f"{table.path}: column {label!r} is a {what} column; columns: {table.listing()}")
    hkl = table.hkl
    bad = ~np.isfinite(hkl).all(axis=1) | (hkl != np.round(hkl)).any(axis=1) | (np.abs(hkl) > 2**31 - 1).any(axis=1)
    if bad.any():
        row = int(np.argmax(bad))
        raise InputError(f"{table.path}: reflection {row + 1}: Miller indices must be integers, got "
                         f"{' '.join(f'{v:g}' for v in hkl[row])}")
    if kind == AMPLITUDE:
        F_plus = F_minus = table.values[label]
        chosen: tuple[str, ...] = (label,)
    else:
        chosen = anomalous_pair(table, label)
        F_plus, F_minus = (table.values[lab] for lab in chosen)
    for lab in chosen:
        inf = np.isinf(table.values[lab])
        if inf.any():
            row = int(np.argmax(inf))
            raise InputError(f"{table.path}: column {lab!r}, reflection {' '.join(f'{v:g}' for v in hkl[row])}: "
                             f"value is not finite")
    return hkl, F_plus, F_minus, chosen


def expand_to_p1(
    table: ReflectionTable, hkl: np.ndarray, F_plus: np.ndarray, F_minus: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every reflection to all its equivalents h·R (F(+)) and their Friedel mates -h·R (F(-)).

    Returns (idx (m, 3) int64, F (m,), explicit (m,) bool, source (m,) the row each came from) in write order,
    NaN values left out: first every generated entry (reflections in file order, for each its -h·R then its
    h·R), then the file's own rows (h with F(+)), so that where indices repeat (the last wins: ``p1_grid``) an
    explicit row wins over any generated mate, and a later row over an earlier one of its kind."""
    h = hkl.astype(np.int64)
    n, ops = len(h), table.rotations.shape[0]
    hR = np.einsum("ni,oij->noj", h, table.rotations)  # (n, ops, 3)
    idx = np.concatenate([-hR, hR], axis=1).reshape(-1, 3)
    F = np.concatenate([np.repeat(F_minus[:, None], ops, axis=1), np.repeat(F_plus[:, None], ops, axis=1)],
                       axis=1).reshape(-1)
    identity = (table.rotations == np.eye(3, dtype=np.int64)).all(axis=(1, 2))
    explicit = np.broadcast_to(np.concatenate([np.zeros(ops, dtype=bool), identity]), (n, 2 * ops)).reshape(-1)
    source = np.repeat(np.arange(n), 2 * ops)
    keep = np.flatnonzero(~np.isnan(F))
    keep = keep[np.argsort(explicit[keep], kind="stable")]
    return idx[keep], F[keep], explicit[keep], source[keep]


def mate_conflicts(idx: np.ndarray, F: np.ndarray, explicit: np.ndarray, source: np.ndarray) -> str | None:
    """One line on the explicit rows that a symmetry or Friedel mate of another row contradicts (a different
    F for the same index): how many, and the first as an example; None when there is none."""
    if explicit.all() or not explicit.any():
        return None
    lo = idx.min(axis=0)
    shape = tuple(int(x) for x in idx.max(axis=0) - lo + 1)
    if float(np.prod(shape, dtype=np.float64)) >= 2**62:
        return None  # store_grid refuses such a box
    key = np.ravel_multi_index(tuple((idx - lo).T), shape)
    ek, first_rev = np.unique(key[explicit][::-1], return_index=True)  # the winning (last) explicit row per index
    e_F = F[explicit][::-1][first_rev]
    e_src = source[explicit][::-1][first_rev]
    gen = ~explicit
    g_key, g_F, g_src = key[gen], F[gen], source[gen]
    pos = np.clip(np.searchsorted(ek, g_key), 0, len(ek) - 1)
    clash = (ek[pos] == g_key) & (e_F[pos] != g_F) & (e_src[pos] != g_src)
    if not clash.any():
        return None
    count = len(np.unique(g_key[clash]))
    first = int(np.flatnonzero(clash)[0])
    at = idx[gen][first]
    return (f"{count} reflection{'s' if count != 1 else ''} of the file disagree{'s' if count == 1 else ''} with "
            f"a symmetry or Friedel mate of another reflection (e.g. {at[0]} {at[1]} {at[2]}: F {e_F[pos[first]]:g} "
            f"in the file, {g_F[first]:g} from reflection {int(g_src[first]) + 1}); the file's own values are kept")


def p1_grid(name: str, idx: np.ndarray, F: np.ndarray, default_F: float,
            notes: list[str] | None = None) -> tuple[np.ndarray | SparseGrid, HKLMeta]:
    """The C's grid over the index ranges of ``idx`` (io.hkl.store_grid: dense, or sparse when it would be
    almost empty); the last of repeated indices wins."""
    if len(F) == 0:
        raise InputError(f"{name}: no reflection with a value in the chosen column")
    grid, lo, hi, filled = store_grid(idx, F, default_F, name, notes)
    return grid, hkl_meta_from_bounds((lo[0], hi[0], lo[1], hi[1], lo[2], hi[2]), filled)


__all__ = ["ReflectionTable", "anomalous_pair", "expand_to_p1", "file_kind", "mate_conflicts", "p1_grid",
           "read_mmcif", "read_mtz", "read_structure_factors", "select_amplitudes"]
