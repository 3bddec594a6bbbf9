"""The folder a `RetrievalIndex` is saved as, and its checked reader.

Files written by `write_index_folder` (atomically: a temp folder renamed into place): ``index.faiss``
(faiss.write_index), ``index.json`` (`IndexMetadata`), ``ids.json`` (dataset ids in faiss order), and the writer's
marker ``.crjepa-output.json``. `read_index_folder` trusts none of them, since the folder may come from the Hub
(docs/RELIABILITY.md): index.json is checked key by key (`IndexFileError` names the file), index.faiss is read
through a stream that accepts only the faiss structures `crjepa.search.index.build_index` writes for the recorded
kind (no memory-mapped or on-disk inverted lists, which would open other local files; every length checked against
the bytes the file really has before faiss allocates it) and the loaded object must be that class.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from crjepa.errors import CRJepaError
from crjepa.search.kinds import SEARCH_PARAMS, IndexArgumentError, apply_search_params, check_params
from crjepa.utils.atomic import atomic_dir, read_consistently

FORMAT_VERSION = 1
INDEX_FILE, META_FILE, IDS_FILE = "index.faiss", "index.json", "ids.json"
OUTPUT_KIND = "faiss-index"


@dataclass
class IndexMetadata:
    """What an index was built from: checked on load so that queries and archive come from the same model."""

    dimension: int
    kind: str
    metric: str = "ip"
    params: dict[str, Any] = field(default_factory=dict)
    fingerprint: str = ""  # e.g. model repo + revision + weights hash: identifies the embedding model
    space: str = ""  # "unified" (same-modal) or "cross" (cross-modal) head
    sensor: str = ""  # sensor of the archive vectors, e.g. "s2"
    count: int = 0
    calibration: dict[str, Any] = field(default_factory=dict)  # what `build_index(recall=...)` measured
    faiss_version: str = faiss.__version__
    format_version: int = FORMAT_VERSION


class IndexFileError(CRJepaError, ValueError):
    """A saved index folder that cannot be used as it is (corrupt, truncated, unknown structure, bad metadata)."""


def write_index_folder(
    directory: str | os.PathLike[str],
    index: faiss.Index,
    ids: np.ndarray,
    metadata: IndexMetadata,
    overwrite: bool = False,
) -> Path:
    """Write index + metadata + ids to ``directory`` atomically (temp folder beside it, then an atomic swap).

    Replaces only an earlier index folder (or an empty one) unless ``overwrite``; one writer at a time
    (`crjepa.utils.atomic.atomic_dir`: `OutputExistsError`, `LockedError`)."""
    target = Path(directory)
    with atomic_dir(target, kind=OUTPUT_KIND, overwrite=overwrite) as tmp:
        faiss.write_index(index, str(tmp / INDEX_FILE))
        (tmp / META_FILE).write_text(json.dumps(asdict(metadata), indent=2, sort_keys=True))
        (tmp / IDS_FILE).write_text(json.dumps(ids.tolist()))
    return target


def read_index_folder(directory: str | os.PathLike[str]) -> tuple[faiss.Index, np.ndarray, IndexMetadata]:
    """(faiss index with its stored search knobs, dataset ids, metadata) of a folder `write_index_folder` wrote,
    every file checked (module docstring) and all three from one version of the folder even while a writer
    replaces it (`read_consistently`); FileNotFoundError when one is missing."""
    path = Path(directory)
    missing = [name for name in (INDEX_FILE, META_FILE, IDS_FILE) if not (path / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{path} is not a saved RetrievalIndex: missing {', '.join(missing)}")
    return read_consistently(path, _read_files)


_FOURCC = {  # the faiss structures build_index writes, per kind (top level first)
    ("exact", "ip"): ({b"IxFI"}, faiss.IndexFlatIP),
    ("exact", "l2"): ({b"IxF2"}, faiss.IndexFlatL2),
    ("hnsw", "ip"): ({b"IHNf", b"IxFI"}, faiss.IndexHNSWFlat),
    ("ivfpq", "ip"): ({b"IxRF", b"IwPf", b"IxFI", b"ilbl", b"ilar"}, faiss.IndexRefineFlat),
}
_TOP = {("exact", "ip"): b"IxFI", ("exact", "l2"): b"IxF2", ("hnsw", "ip"): b"IHNf", ("ivfpq", "ip"): b"IxRF"}
_META_TYPES: dict[str, tuple[type, ...]] = {
    "dimension": (int,),
    "kind": (str,),
    "metric": (str,),
    "params": (dict,),
    "fingerprint": (str,),
    "space": (str,),
    "sensor": (str,),
    "count": (int,),
    "faiss_version": (str,),
    "format_version": (int,),
    "calibration": (dict,),
}
MAX_DIMENSION = 65_536
MAX_META_BYTES = 16 << 20
MAX_ID_BYTES = 4096
"""index.json and ids.json are read whole: a larger file than they can need is refused before it is read."""


def _check_metadata(meta: Any, file: Path) -> IndexMetadata:
    """index.json -> IndexMetadata, refusing unknown keys, wrong types and out-of-range values."""
    rebuild = f"rebuild the index (`crjepa index <archive>`) or delete {file.parent}"
    if not isinstance(meta, dict):
        raise IndexFileError(f"{file} must hold a JSON object; {rebuild}")
    unknown = sorted(set(meta) - set(_META_TYPES))
    if unknown:
        raise IndexFileError(
            f"{file}: unknown key(s) {unknown} (this crjepa knows {sorted(_META_TYPES)}); "
            f"a newer crjepa wrote it or it was edited: {rebuild}"
        )
    for key, types in _META_TYPES.items():
        if key in meta and (not isinstance(meta[key], types) or isinstance(meta[key], bool)):
            raise IndexFileError(f"{file}: {key} must be {types[0].__name__}, found {meta[key]!r}; {rebuild}")
    for key in ("dimension", "kind"):
        if key not in meta:
            raise IndexFileError(f"{file}: {key} is missing; {rebuild}")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise IndexFileError(f"{file}: format {meta['format_version']} is newer than this crjepa; upgrade crjepa")
    if not 1 <= meta["dimension"] <= MAX_DIMENSION:
        raise IndexFileError(f"{file}: dimension {meta['dimension']} is out of range [1, {MAX_DIMENSION}]; {rebuild}")
    if (meta["kind"], meta.get("metric", "ip")) not in _FOURCC:
        raise IndexFileError(
            f"{file}: kind {meta['kind']!r} with metric {meta.get('metric', 'ip')!r} is not an index "
            f"crjepa writes (exact, hnsw, ivfpq); {rebuild}"
        )
    params = meta.get("params", {})
    for name in SEARCH_PARAMS[meta["kind"]]:
        if name not in params:
            raise IndexFileError(f"{file}: search parameter {name} is missing; {rebuild}")
    try:
        check_params(meta["kind"], params)
    except IndexArgumentError as err:
        raise IndexFileError(f"{file}: {err}; {rebuild}") from None
    points = meta.get("calibration", {}).get("points", [])
    if not isinstance(points, list) or not all(
        isinstance(point, dict)
        and all(
            isinstance(point.get(name), (int, float))
            and not isinstance(point.get(name), bool)
            and 0 <= point[name] <= 1_000_000
            for name in (*SEARCH_PARAMS[meta["kind"]], "recall", "qps")
        )
        for point in points
    ):
        raise IndexFileError(
            f"{file}: calibration points must be objects with numeric search parameters, recall and qps; {rebuild}"
        )
    return IndexMetadata(**meta)


_CLASS_NAMES = {
    b"IxFI": "IndexFlatIP",
    b"IxF2": "IndexFlatL2",
    b"IHNf": "IndexHNSWFlat",
    b"IxRF": "IndexRefineFlat",
    b"IwPf": "IndexIVFPQFastScan",
}
_METRIC_CODES = {"ip": faiss.METRIC_INNER_PRODUCT, "l2": faiss.METRIC_L2}
_HEADER_DUMMY = 1 << 20  # faiss writes two constant 8-byte fields in every index header
_MAX_COUNT = 1 << 40  # faiss' own bound on a vector's length


class _Layout:
    """The reads faiss makes of an index file that `build_index` wrote, checked as they happen (`_read_faiss`).

    A generator per faiss structure (`header`, `flat`, `hnsw`, `ivfpq_fastscan`, `refine`) yields what faiss must
    read next, ``("field", n)`` (a scalar: its bytes come back through ``send``, checked before faiss sees them) or
    ``("blob", n, check)`` (the payload of a vector, whose length was checked against the bytes left in the file
    before faiss allocates it; ``check`` sees its chunks, e.g. graph neighbours must be node ids). Every size (a
    vector length, a number of lists, a code size) is checked against the file's real size and the structure's
    other fields before faiss acts on it, so a 64 KB file cannot make faiss allocate gigabytes. The layout is faiss
    1.9-1.15's; another faiss writing another layout gets a clear refusal, never an unchecked read."""

    def __init__(self, file: Path, size: int, kind: str, metric: str, dimension: int, rebuild: str) -> None:
        self.file, self.size, self.kind, self.metric, self.dimension, self.rebuild = (
            file,
            size,
            kind,
            metric,
            dimension,
            rebuild,
        )
        self.position = 0  # bytes consumed so far (updated by the reader)

    # -------------------------------------------------------------------------------- errors
    def refuse(self, why: str) -> IndexFileError:
        return IndexFileError(f"{self.file} {why}; refusing to load it: {self.rebuild}")

    def corrupt(self, why: str) -> IndexFileError:
        return IndexFileError(f"{self.file} is truncated or corrupt ({why}); {self.rebuild}")

    # -------------------------------------------------------------------------------- primitives
    def field(self, fmt: str):
        data = yield ("field", struct.calcsize(fmt))
        return struct.unpack(fmt, data)[0]

    def vector(
        self,
        element: int,
        what: str,
        exact: int | None = None,
        most: int | None = None,
        check: Callable[[bytes], None] | None = None,
    ):
        """A faiss vector: an 8-byte count, then count x element bytes (read only when the file holds them)."""
        count = yield from self.field("<Q")
        left = self.size - self.position
        if count >= _MAX_COUNT or count * element > left:
            raise self.corrupt(
                f"{what} claims {count:,} x {element} bytes at byte {self.position:,}, {left:,} bytes are left"
            )
        if exact is not None and count != exact:
            raise self.corrupt(f"{what} holds {count:,} values, the index structure needs {exact:,}")
        if most is not None and count > most:
            raise self.corrupt(f"{what} holds {count:,} values, at most {most:,} are possible")
        if count:
            yield ("blob", count * element, check)
        return count

    def int_in(self, fmt: str, what: str, low: int, high: int):
        value = yield from self.field(fmt)
        if not low <= value <= high:
            raise self.corrupt(f"{what} is {value}, outside [{low}, {high}]")
        return value

    # -------------------------------------------------------------------------------- structures
    def index(self, allowed: tuple[bytes, ...], ntotal: int | None = None):
        """One index: its fourcc (one of ``allowed``), the common header, then its own fields."""
        fourcc = yield from self.field("4s")
        if fourcc not in allowed:
            name = fourcc.decode("latin-1")
            shown = name if name.isprintable() else repr(fourcc)
            raise self.refuse(
                f"holds faiss structure {shown!r}, not a{'n' if self.kind[0] in 'aeiou' else ''} "
                f"{self.kind} index as crjepa writes it"
            )
        d = yield from self.field("<i")
        if d != self.dimension:
            raise IndexFileError(
                f"{self.file} holds a {_CLASS_NAMES[fourcc]} of dimension {d}; index.json says a "
                f"{self.kind} index of dimension {self.dimension}: {self.rebuild}"
            )
        count = yield from self.field("<q")
        if not 0 <= count <= self.size or (ntotal is not None and count != ntotal):
            raise self.corrupt(f"the {_CLASS_NAMES[fourcc]} claims {count:,} vectors")
        for _ in range(2):
            if (yield from self.field("<q")) != _HEADER_DUMMY:
                raise self.refuse("has a header faiss does not write")
        yield from self.int_in("<B", "is_trained", 0, 1)
        metric = yield from self.field("<i")
        if metric != _METRIC_CODES[self.metric]:
            raise self.refuse(f"uses metric {metric}, not the {self.metric!r} of index.json")
        body = {
            b"IxFI": self.flat,
            b"IxF2": self.flat,
            b"IHNf": self.hnsw,
            b"IxRF": self.refine,
            b"IwPf": self.ivfpq_fastscan,
        }[fourcc]
        yield from body(count)
        return count

    def flat(self, count: int):
        yield from self.vector(4, "the stored vectors", exact=count * self.dimension)

    def hnsw(self, count: int):
        levels: list[np.ndarray] = []
        offsets: list[np.ndarray] = []
        yield from self.vector(8, "assign_probas", most=64)
        cum = []
        yield from self.vector(
            4, "cum_nneighbor_per_level", most=65, check=lambda chunk: cum.append(np.frombuffer(chunk, np.int32))
        )
        yield from self.vector(
            4, "levels", exact=count, check=lambda chunk: levels.append(np.frombuffer(chunk, np.int32))
        )
        yield from self.vector(
            8, "offsets", exact=count + 1, check=lambda chunk: offsets.append(np.frombuffer(chunk, np.uint64))
        )
        per_level = np.concatenate(cum) if cum else np.zeros(0, np.int32)
        level = np.concatenate(levels) if levels else np.zeros(0, np.int32)
        offset = np.concatenate(offsets) if offsets else np.zeros(0, np.uint64)
        if len(per_level) < 2 or per_level[0] != 0 or np.any(np.diff(per_level) < 0):
            raise self.corrupt("the HNSW neighbour counts per level are not a cumulative sum")
        if count and (level.min() < 1 or level.max() >= len(per_level)):
            raise self.corrupt("an HNSW node has a level outside the graph's levels")
        if offset[0] != 0 or np.any(np.diff(offset.astype(np.int64)) != per_level[level].astype(np.int64)):
            raise self.corrupt("the HNSW neighbour lists do not match the nodes' levels")

        def neighbours(chunk: bytes) -> None:
            ids = np.frombuffer(chunk, np.int32)
            if ids.size and (ids.min() < -1 or ids.max() >= count):
                raise self.corrupt(f"an HNSW neighbour is not a node id (0..{count - 1})")

        yield from self.vector(4, "neighbors", exact=int(offset[-1]), check=neighbours)
        entry = yield from self.field("<i")
        top = yield from self.field("<i")
        if count and (not 0 <= entry < count or top != int(level.max()) - 1):
            raise self.corrupt("the HNSW entry point or top level does not fit the graph")
        for what in ("efConstruction", "efSearch", "upper_beam"):
            yield from self.int_in("<i", what, 0, 1 << 24)
        yield from self.index((b"IxFI",), ntotal=count)  # the stored vectors

    def refine(self, count: int):
        yield from self.index((b"IwPf",), ntotal=count)
        yield from self.index((b"IxFI",), ntotal=count)
        k_factor = yield from self.field("<f")
        if not 0 < k_factor <= 1e6:
            raise self.corrupt(f"k_factor is {k_factor}")

    def ivfpq_fastscan(self, count: int):
        nlist = yield from self.int_in("<Q", "nlist", 1, max(1, (self.size - self.position) // 16))
        yield from self.field("<Q")  # nprobe: the index's own setting, replaced by index.json's
        yield from self.index((b"IxFI",), ntotal=nlist)  # the coarse quantiser
        yield from self.int_in("<B", "the direct map", 0, 0)
        yield from self.vector(8, "the direct map", exact=0)
        yield from self.int_in("<B", "by_residual", 0, 0)
        yield from self.field("<Q")  # code_size, derived from the PQ below
        bbs = yield from self.int_in("<i", "bbs", 32, 1024)
        m2 = yield from self.field("<Q")
        yield from self.int_in("<i", "implem", 0, 15)
        yield from self.int_in("<Q", "qbs2", 0, 1 << 16)
        if (yield from self.field("<Q")) != self.dimension:
            raise self.corrupt("the product quantiser's dimension differs from the index's")
        m = yield from self.int_in("<Q", "the number of sub-quantisers", 1, self.dimension)
        nbits = yield from self.int_in("<Q", "the bits per code", 4, 4)
        if self.dimension % m or m2 != m + (m % 2) or bbs % 32:
            raise self.corrupt("the product quantiser's fields do not fit together")
        yield from self.vector(4, "the PQ centroids", exact=self.dimension << nbits)
        if (yield from self.field("4s")) != b"ilbl":
            raise self.refuse("holds inverted lists of another kind than the in-memory blocks crjepa writes")
        yield from self.int_in("<Q", "the number of inverted lists", nlist, nlist)
        yield from self.field("<Q")  # code_size
        per_block = yield from self.int_in("<Q", "codes per block", bbs, bbs)
        block = yield from self.int_in("<Q", "the block size", bbs * m2 // 2, bbs * m2 // 2)
        total = 0

        def list_ids(chunk: bytes) -> None:
            ids = np.frombuffer(chunk, np.int64)
            if ids.size and (ids.min() < 0 or ids.max() >= count):
                raise self.corrupt(f"an inverted list holds an id outside 0..{count - 1}")

        for _ in range(nlist):
            size = yield from self.vector(8, "an inverted list's ids", most=count - total, check=list_ids)
            total += size
            yield from self.vector(1, "an inverted list's codes", exact=-(-size // per_block) * block)
        if total != count:
            raise self.corrupt(f"the inverted lists hold {total:,} vectors, the index {count:,}")


def _read_faiss(file: Path, kind: str, metric: str, dimension: int) -> faiss.Index:
    """faiss.read_index through a Python stream that lets faiss read only what `_Layout` expects for ``kind``.

    Every field faiss reads is checked before faiss sees it: the structures must be the ones `build_index` writes
    for the recorded kind (a crafted file declaring on-disk ("ilod") or other inverted lists stops before faiss
    acts on it), every length must fit in the bytes the file really has, graph neighbours and list ids must be
    valid. No IO flags: never memory-mapped."""
    _, cls = _FOURCC[(kind, metric)]
    rebuild = f"rebuild it with `crjepa index` (or delete {file.parent})"
    layout = _Layout(file, file.stat().st_size, kind, metric, dimension, rebuild)
    plan = layout.index((_TOP[(kind, metric)],))
    step: list[Any] = [next(plan)]
    blob_left = [0]

    with file.open("rb") as stream:

        def read(n: int) -> bytes:
            want = step[0]
            if want is None:
                raise layout.refuse("holds more than the index structure crjepa writes")
            if want[0] == "field":
                if n != want[1] or blob_left[0]:
                    raise layout.refuse(
                        f"is read in a layout this crjepa cannot check (faiss {faiss.__version__} "
                        f"read {n} bytes at byte {layout.position:,})"
                    )
                data = stream.read(n)
                layout.position += len(data)
                if len(data) < n:
                    raise layout.corrupt(f"it ends at byte {layout.position:,}")
                step[0] = _advance(plan, data)
                return data
            left = blob_left[0] or want[1]
            if n > left:
                raise layout.refuse(
                    f"is read in a layout this crjepa cannot check (faiss {faiss.__version__} "
                    f"read {n} bytes at byte {layout.position:,})"
                )
            data = stream.read(n)
            layout.position += len(data)
            if want[2] is not None and data:
                want[2](data)
            blob_left[0] = left - len(data)
            if len(data) < n:
                raise layout.corrupt(f"it ends at byte {layout.position:,}")
            if not blob_left[0]:
                step[0] = _advance(plan, None)
            return data

        try:
            index = faiss.read_index(faiss.PyCallbackIOReader(read, 1 << 20))
        except IndexFileError:
            raise
        except RuntimeError as err:
            cause = err.__cause__ or err.__context__
            if isinstance(cause, IndexFileError):
                raise cause from None
            if "IndexFileError" in str(err) or "refusing to load" in str(err):
                raise IndexFileError(str(err).split("IndexFileError: ")[-1].strip().splitlines()[0]) from None
            raise IndexFileError(f"{file} is truncated or corrupt (faiss could not read it); {rebuild}") from None
    if step[0] is not None:
        raise layout.corrupt("faiss stopped before the end of the index structure")
    if type(index) is not cls or index.d != dimension:  # read_index returns the concrete class (and owns it)
        raise IndexFileError(
            f"{file} holds a {type(index).__name__} of dimension {index.d}; index.json says a "
            f"{kind} index of dimension {dimension}: {rebuild}"
        )
    return index


def _advance(plan: Any, data: bytes | None) -> Any:
    """The next expected read of a layout generator (None once it is complete)."""
    try:
        return plan.send(data)
    except StopIteration:
        return None


def _read_files(path: Path) -> tuple[faiss.Index, np.ndarray, IndexMetadata]:
    meta_file, ids_file = path / META_FILE, path / IDS_FILE
    if meta_file.stat().st_size > MAX_META_BYTES:
        raise IndexFileError(
            f"{meta_file} is {meta_file.stat().st_size:,} bytes, more than index metadata can need "
            f"({MAX_META_BYTES:,}); rebuild the index"
        )
    try:
        meta = json.loads(meta_file.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise IndexFileError(f"{meta_file} is not valid JSON ({err}); rebuild the index") from None
    metadata = _check_metadata(meta, meta_file)
    index = _read_faiss(path / INDEX_FILE, metadata.kind, metadata.metric, metadata.dimension)
    most = 16 + index.ntotal * (MAX_ID_BYTES + 8)  # JSON of ntotal ids (read whole: checked against the count first)
    if ids_file.stat().st_size > most:
        raise IndexFileError(
            f"{ids_file} is {ids_file.stat().st_size:,} bytes, more than {index.ntotal:,} ids can "
            "take; rebuild the index"
        )
    try:
        ids = json.loads(ids_file.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise IndexFileError(f"{ids_file} is not valid JSON ({err}); rebuild the index") from None
    if not isinstance(ids, list) or not all(isinstance(i, (str, int)) for i in ids) or len(ids) != index.ntotal:
        raise IndexFileError(f"{ids_file} must list one id per vector ({index.ntotal}); rebuild the index")
    apply_search_params(index, metadata.kind, metadata.params)
    return index, np.asarray(ids, dtype=str), metadata


__all__ = [
    "FORMAT_VERSION",
    "IDS_FILE",
    "INDEX_FILE",
    "META_FILE",
    "OUTPUT_KIND",
    "IndexFileError",
    "IndexMetadata",
    "read_index_folder",
    "write_index_folder",
]
