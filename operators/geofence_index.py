"""Batch geofence queries: which approved zones contain each fix, and how far the boundary is.

:class:`ZoneIndexConfig` builds a :class:`ZoneIndex`. :meth:`ZoneIndex.query` takes a
:class:`FixBatch` (numpy arrays: tenant, lat, lon, accuracy, event time, and per fix an index
into a tuple of approved zone-id sets) and returns a :class:`BatchResult` with, per fix, the
classification (see :mod:`operators.geofence`), the containing/nearest approved zone and the
signed distance in metres.

Contracts:

- A fix only matches zones that are in its approved set, belong to its tenant and are active
  (time windows) at its event time; ids not in the index are ignored.
- Containment follows RFC 7946 / PostGIS geometry semantics (edges straight in lon/lat,
  boundary points covered); circles are great-circle caps.
- Distances are great-circle metres (sphere of radius ``EARTH_RADIUS_M``) to the real zone
  boundary (antimeridian cuts are not boundary). For polygons up to ``local_max_extent_m``
  within ``local_max_abs_lat`` and fixes within ``_LOCAL_REACH_M`` of them, the nearest
  boundary point is found on a plane around the fix and its haversine distance taken
  (centimetre-level agreement with an exact search); everything else is projected azimuthal
  equidistant around the fix (boundary densified to ``densify_deg``) to pick the nearest
  segments, then minimised exactly along them. Not raw degrees anywhere; poles and the
  antimeridian need no special casing.
- ``BatchResult`` pairs cover every approved zone that contains the fix, lies within its
  accuracy radius, or is its nearest; a zone whose bounding box is farther than the accuracy
  from a fix already covered by another approved zone may be left out (not evaluated).
- Small approved sets (``<= tree_min_approved`` zones) are evaluated zone by zone, fully
  vectorised; larger ones go through the R-tree (an immutable shapely ``STRtree`` for the
  bulk plus a small delta list, compacted past ``compact_threshold`` changes).
- ``upsert`` / ``remove`` take effect for the next query. The index is not thread-safe.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import shapely
from numpy.typing import NDArray
from shapely.geometry.base import BaseGeometry

from operators.errors import ConfigError
from operators.geo import (
    EARTH_RADIUS_M,
    HALF_CIRCUMFERENCE_M,
    METRES_PER_DEGREE,
    azimuthal_equidistant,
    densify_ring,
    haversine_m,
    segment_distance_m,
)
from operators.geofence import (
    CLASS_BY_CODE,
    CircleShape,
    FixResult,
    PolygonShape,
    Zone,
    classify_array,
)

__all__ = ["BatchResult", "Fix", "FixBatch", "ZoneIndex", "ZoneIndexConfig"]

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
B = NDArray[np.bool_]

_KIND_NONE = 0
_KIND_CIRCLE = 1
_KIND_LOCAL = 2
_KIND_GENERAL = 3

_LOCAL_REACH_M = 20_000.0
"""Fixes within this distance of a local zone's centre use the local plane."""
_LOCAL_CHUNK = 32_768
"""Target number of (pair, vertex) elements per vectorised chunk (keeps arrays in cache)."""
_GENERAL_CHUNK = 1_000_000
_QUERY_CHUNK = 65536
"""Fixes per internal chunk of :meth:`ZoneIndex.query`."""
_WIDTHS = (4, 6, 8, 10, 12, 16, 20, 24, 32, 48, 64, 96, 128, 192, 256)
"""Row widths (segments) of the local-polygon buckets; larger polygons use powers of two."""


# ---------------------------------------------------------------------------------------------
# batches


@dataclass(frozen=True, slots=True)
class Fix:
    """One position fix with what the guard is approved for (input to :meth:`FixBatch.of`)."""

    tenant_id: int
    lat: float
    lon: float
    accuracy_m: float
    time: datetime
    approved_zone_ids: frozenset[int]


@dataclass(frozen=True, eq=False)
class FixBatch:
    """A batch of fixes as parallel arrays.

    ``approved[i]`` indexes ``approved_sets``: many fixes share a set (a site's zones), so
    sets are given once. ``time_s`` is epoch seconds UTC. Latitudes must be in [-90, 90],
    longitudes finite (wrapped to [-180, 180)), accuracies finite and >= 0; violations raise
    ``ValueError``.
    """

    tenant_id: I64
    lat: F64
    lon: F64
    accuracy_m: F64
    time_s: F64
    approved: I64
    approved_sets: tuple[frozenset[int], ...]

    def __post_init__(self) -> None:
        n = len(np.asarray(self.lat))
        for name, dtype in (
            ("tenant_id", np.int64),
            ("lat", np.float64),
            ("lon", np.float64),
            ("accuracy_m", np.float64),
            ("time_s", np.float64),
            ("approved", np.int64),
        ):
            arr = np.ascontiguousarray(getattr(self, name), dtype=dtype)
            if arr.shape != (n,):
                raise ValueError(f"FixBatch.{name}: expected shape ({n},), got {arr.shape}")
            object.__setattr__(self, name, arr)
        object.__setattr__(self, "approved_sets", tuple(frozenset(s) for s in self.approved_sets))
        if n:
            if not (np.all(np.abs(self.lat) <= 90.0)):
                raise ValueError("FixBatch.lat: latitudes must be finite and within [-90, 90]")
            if not np.all(np.isfinite(self.lon)):
                raise ValueError("FixBatch.lon: longitudes must be finite")
            if not np.all(self.accuracy_m >= 0.0) or not np.all(np.isfinite(self.accuracy_m)):
                raise ValueError("FixBatch.accuracy_m: accuracies must be finite and >= 0")
            if not np.all(np.isfinite(self.time_s)):
                raise ValueError("FixBatch.time_s: times must be finite")
            if self.approved.min() < 0 or self.approved.max() >= len(self.approved_sets):
                raise ValueError("FixBatch.approved: index out of range of approved_sets")
            if self.lon.min() < -180.0 or self.lon.max() >= 180.0:
                object.__setattr__(self, "lon", (self.lon + 180.0) % 360.0 - 180.0)

    def __len__(self) -> int:
        return len(self.lat)

    @classmethod
    def of(cls, fixes: Sequence[Fix]) -> FixBatch:
        """Batch from :class:`Fix` records (timezone-aware times; sets are de-duplicated)."""
        sets: dict[frozenset[int], int] = {}
        approved = [sets.setdefault(f.approved_zone_ids, len(sets)) for f in fixes]
        for f in fixes:
            if f.time.tzinfo is None:
                raise ValueError("Fix.time must be timezone-aware (UTC)")
        return cls(
            tenant_id=np.array([f.tenant_id for f in fixes], dtype=np.int64),
            lat=np.array([f.lat for f in fixes], dtype=np.float64),
            lon=np.array([f.lon for f in fixes], dtype=np.float64),
            accuracy_m=np.array([f.accuracy_m for f in fixes], dtype=np.float64),
            time_s=np.array([f.time.timestamp() for f in fixes], dtype=np.float64),
            approved=np.array(approved, dtype=np.int64),
            approved_sets=tuple(sets),
        )


@dataclass(frozen=True, eq=False)
class BatchResult:
    """Per-fix answers as arrays, plus every evaluated (fix, zone) pair in CSR form.

    ``classification``: int8 codes (``operators.geofence.CLASS_*``); ``zone_id``: containing
    zone the fix is deepest in, else nearest approved zone, ``-1`` for none; ``distance_m``:
    signed metres (``-inf`` for none). Pairs of fix ``i`` are
    ``pair_zone_id[pair_offsets[i]:pair_offsets[i + 1]]`` with ``pair_distance_m``.
    """

    classification: NDArray[np.int8]
    zone_id: I64
    distance_m: F64
    accuracy_m: F64
    pair_offsets: I64
    pair_zone_id: I64
    pair_distance_m: F64

    def __len__(self) -> int:
        return len(self.classification)

    def containing(self, i: int) -> tuple[int, ...]:
        """Ids of the approved zones that contain fix ``i``."""
        lo, hi = int(self.pair_offsets[i]), int(self.pair_offsets[i + 1])
        hit = self.pair_distance_m[lo:hi] >= 0.0
        return tuple(int(z) for z in self.pair_zone_id[lo:hi][hit])

    def result(self, i: int) -> FixResult:
        """The record for fix ``i``."""
        lo, hi = int(self.pair_offsets[i]), int(self.pair_offsets[i + 1])
        zone = int(self.zone_id[i])
        return FixResult(
            classification=CLASS_BY_CODE[int(self.classification[i])],
            zone_id=None if zone < 0 else zone,
            distance_m=float(self.distance_m[i]),
            accuracy_m=float(self.accuracy_m[i]),
            zones=tuple(
                zip(
                    (int(z) for z in self.pair_zone_id[lo:hi]),
                    (float(d) for d in self.pair_distance_m[lo:hi]),
                    strict=True,
                )
            ),
        )

    def results(self) -> list[FixResult]:
        """Records for every fix, in batch order."""
        return [self.result(i) for i in range(len(self))]


# ---------------------------------------------------------------------------------------------
# config


@dataclass(frozen=True)
class ZoneIndexConfig:
    """Settings of a :class:`ZoneIndex`; :meth:`build` makes one."""

    compact_threshold: int = 256
    """Upserts/removals held in the delta before the bulk STRtree is rebuilt."""
    tree_min_approved: int = 32
    """Approved sets with more zones than this are searched through the R-tree."""
    local_max_extent_m: float = 10_000.0
    """Polygons up to this size (bounding box, metres) use the fast local-plane path."""
    local_max_abs_lat: float = 75.0
    """...and only when they lie within this latitude (degrees) of the equator."""
    densify_deg: float = 0.05
    """Boundary step (degrees) for the azimuthal path; bounds its edge-curvature error."""

    def __post_init__(self) -> None:
        if self.compact_threshold < 1:
            raise ConfigError(f"compact_threshold must be >= 1, got {self.compact_threshold}")
        if self.tree_min_approved < 0:
            raise ConfigError(f"tree_min_approved must be >= 0, got {self.tree_min_approved}")
        if not 0.0 < self.local_max_extent_m <= 10_000.0:
            raise ConfigError(
                f"local_max_extent_m must be in (0, 10000], got {self.local_max_extent_m}"
            )
        if not 0.0 <= self.local_max_abs_lat <= 80.0:
            raise ConfigError(f"local_max_abs_lat must be in [0, 80], got {self.local_max_abs_lat}")
        if not 0.0 < self.densify_deg <= 1.0:
            raise ConfigError(f"densify_deg must be in (0, 1], got {self.densify_deg}")

    def build(self, zones: Iterable[Zone] = ()) -> ZoneIndex:
        """A new index holding ``zones`` (later duplicates of a zone id replace earlier)."""
        return ZoneIndex(self, zones)


# ---------------------------------------------------------------------------------------------
# storage helpers


class _Columns:
    """Named numpy columns with amortised O(1) row append (capacity doubling)."""

    def __init__(self, spec: dict[str, tuple[Any, tuple[int, ...], Any]]) -> None:
        self._spec = spec
        self.cap = 16
        self.cols: dict[str, NDArray[Any]] = {
            name: np.full((self.cap, *shape), fill, dtype=dtype)
            for name, (dtype, shape, fill) in spec.items()
        }

    def ensure(self, rows: int) -> None:
        if rows <= self.cap:
            return
        cap = self.cap
        while cap < rows:
            cap *= 2
        for name, (dtype, shape, fill) in self._spec.items():
            grown = np.full((cap, *shape), fill, dtype=dtype)
            grown[: self.cap] = self.cols[name]
            self.cols[name] = grown
        self.cap = cap


class _Bucket:
    """Local-plane polygons with at most ``width`` segments, stored segment-major.

    ``arrays[0:4]`` are ``a0``, ``b0``, ``a1``, ``b1``: segment start and end (radians
    relative to the zone's origin), each of shape ``(width, capacity)``, so a batch gathers
    whole columns and every later operation runs on contiguous ``(width, pairs)`` arrays.
    A vertex is stored bit-identically as the end of one segment and the start of the next,
    which keeps the crossing-number test consistent. Ring breaks and padding are zero-length
    segments at a real vertex: they never cross a ray and are never nearer than the real
    segments they touch.
    """

    def __init__(self, width: int) -> None:
        self.width = width
        self.cap = 16
        self.arrays = np.zeros((4, width, self.cap), dtype=np.float64)
        self.rows = 0
        self.free: list[int] = []

    def add(self, a: F64, b: F64, brk: B) -> int:
        if self.free:
            row = self.free.pop()
        else:
            row = self.rows
            self.rows += 1
            if self.rows > self.cap:
                grown = np.zeros((4, self.width, self.cap * 2), dtype=np.float64)
                grown[:, :, : self.cap] = self.arrays
                self.arrays = grown
                self.cap *= 2
        a1 = np.where(brk, a[:-1], a[1:])
        b1 = np.where(brk, b[:-1], b[1:])
        n = len(a1)
        col = self.arrays[:, :, row]
        col[0, :n] = a[:-1]
        col[1, :n] = b[:-1]
        col[2, :n] = a1
        col[3, :n] = b1
        col[0::2, n:] = a[-1]
        col[1::2, n:] = b[-1]
        return row

    def release(self, row: int) -> None:
        self.free.append(row)


@dataclass
class _General:
    """Azimuthal-path data of a polygon zone (built lazily)."""

    prepared: BaseGeometry
    lat: F64
    lon: F64
    brk: B


@dataclass
class _Delta:
    slots: list[int] = field(default_factory=list)
    gens: list[int] = field(default_factory=list)
    boxes: list[tuple[float, float, float, float]] = field(default_factory=list)


def _ring_arrays(rings: Sequence[F64]) -> tuple[F64, F64, B]:
    """Concatenate closed rings; ``brk[i]`` marks the fake segment between two rings."""
    lon = np.concatenate([r[:, 0] for r in rings])
    lat = np.concatenate([r[:, 1] for r in rings])
    brk = np.zeros(len(lon) - 1, dtype=np.bool_)
    pos = 0
    for r in rings[:-1]:
        pos += len(r)
        brk[pos - 1] = True
    return lon, lat, brk


class _Sets:
    """The approved sets of one batch resolved to slots, with vectorised expansion/membership."""

    def __init__(self, members: list[I64], width: int) -> None:
        self.members = members
        self.width = width
        self.sizes = np.array([len(m) for m in members], dtype=np.int64)
        self.flat = np.concatenate(members) if members else np.zeros(0, dtype=np.int64)
        self.offsets = np.zeros(len(members), dtype=np.int64)
        if len(members) > 1:
            np.cumsum(self.sizes[:-1], out=self.offsets[1:])
        self._keys: I64 | None = None

    def expand(self, approved: I64) -> tuple[I64, I64]:
        """Fix-major (position in ``approved``, slot) pairs for every member of each set."""
        if not len(approved) or not len(self.flat):
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        cnt = self.sizes[approved]
        total = int(cnt.sum())
        pf = np.repeat(np.arange(len(approved), dtype=np.int64), cnt)
        start = np.cumsum(cnt) - cnt
        k = np.arange(total, dtype=np.int64) - start[pf]
        k += self.offsets[approved][pf]
        return pf, self.flat[k]

    def contains(self, set_idx: I64, slots: I64) -> B:
        """Whether each ``slots[i]`` is a member of set ``set_idx[i]``."""
        if self._keys is None:
            set_of = np.repeat(np.arange(len(self.members), dtype=np.int64), self.sizes)
            self._keys = np.sort(set_of * self.width + self.flat)
        keys = self._keys
        if not len(keys) or not len(slots):
            return np.zeros(len(slots), dtype=np.bool_)
        want = set_idx * self.width + slots
        pos = np.minimum(np.searchsorted(keys, want), len(keys) - 1)
        return np.asarray(keys[pos] == want, dtype=np.bool_)


def _slice(batch: FixBatch, lo: int, hi: int) -> FixBatch:
    """Fixes ``lo:hi`` of ``batch`` (arrays are views; the sets tuple is shared)."""
    out = object.__new__(FixBatch)
    for name in ("tenant_id", "lat", "lon", "accuracy_m", "time_s", "approved"):
        object.__setattr__(out, name, getattr(batch, name)[lo:hi])
    object.__setattr__(out, "approved_sets", batch.approved_sets)
    return out


def _metres_to_lat_deg(m: F64) -> F64:
    return np.asarray(m / METRES_PER_DEGREE, dtype=np.float64)


# ---------------------------------------------------------------------------------------------
# the index


class ZoneIndex:
    """Tenant-scoped geofence zones with batch containment and signed-distance queries."""

    def __init__(self, config: ZoneIndexConfig | None = None, zones: Iterable[Zone] = ()) -> None:
        self.config = config or ZoneIndexConfig()
        self._slot_of: dict[int, int] = {}
        self._zones: list[Zone | None] = []
        self._free_slots: list[int] = []
        self._slots = _Columns(
            {
                "zone_id": (np.int64, (), -1),
                "tenant": (np.int64, (), -1),
                "kind": (np.int8, (), _KIND_NONE),
                "gen": (np.int64, (), 0),
                "windows": (np.bool_, (), False),
                "lat0": (np.float64, (), 0.0),  # radians: circle centre / local-frame origin
                "lon0": (np.float64, (), 0.0),
                "cos0": (np.float64, (), 1.0),
                "sin0": (np.float64, (), 0.0),
                "radius": (np.float64, (), 0.0),  # circle radius, metres
                "bucket": (np.int64, (), -1),
                "row": (np.int64, (), -1),
                # local polygons: bounding box relative to (lon0, lat0), radians, and a lower
                # bound of cos(latitude) within reach, for the cheap distance lower bound
                "amin": (np.float64, (), 0.0),
                "amax": (np.float64, (), 0.0),
                "bmin": (np.float64, (), 0.0),
                "bmax": (np.float64, (), 0.0),
                "cmin": (np.float64, (), 0.0),
                "tol": (np.float64, (), 0.0),
            }
        )
        self._set_cache: dict[frozenset[int], I64] = {}
        self._buckets: dict[int, _Bucket] = {}
        self._general: dict[int, _General] = {}
        self._parts: dict[int, list[BaseGeometry]] = {}
        self._bulk_tree: shapely.STRtree | None = None
        self._bulk_slot: I64 = np.zeros(0, dtype=np.int64)
        self._bulk_gen: I64 = np.zeros(0, dtype=np.int64)
        self._stale = 0
        self._delta = _Delta()
        for zone in zones:
            self._upsert(zone, compact=False)
        self.compact()

    # -- mutation -------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._slot_of)

    def __contains__(self, zone_id: object) -> bool:
        return zone_id in self._slot_of

    def get(self, zone_id: int) -> Zone | None:
        """The zone with ``zone_id``, or ``None``."""
        slot = self._slot_of.get(zone_id)
        return None if slot is None else self._zones[slot]

    def zones(self) -> list[Zone]:
        """All zones, in no particular order."""
        return [z for z in self._zones if z is not None]

    def upsert(self, zone: Zone) -> None:
        """Add ``zone`` or replace the zone with the same id; visible to the next query."""
        self._upsert(zone, compact=True)

    def remove(self, zone_id: int) -> bool:
        """Remove a zone; returns whether it was present. Visible to the next query."""
        slot = self._slot_of.pop(zone_id, None)
        if slot is None:
            return False
        self._set_cache.clear()
        self._clear_slot(slot)
        self._free_slots.append(slot)
        self._stale += 1
        self._maybe_compact()
        return True

    def compact(self) -> None:
        """Rebuild the bulk STRtree from all zones and empty the delta."""
        slots: list[int] = []
        gens: list[int] = []
        geoms: list[BaseGeometry] = []
        gen = self._slots.cols["gen"]
        for slot, parts in self._parts.items():
            for part in parts:
                slots.append(slot)
                gens.append(int(gen[slot]))
                geoms.append(shapely.envelope(part))
        self._bulk_tree = shapely.STRtree(geoms) if geoms else None
        self._bulk_slot = np.array(slots, dtype=np.int64)
        self._bulk_gen = np.array(gens, dtype=np.int64)
        self._stale = 0
        self._delta = _Delta()

    def _maybe_compact(self) -> None:
        if len(self._delta.slots) + self._stale > self.config.compact_threshold:
            self.compact()

    def _upsert(self, zone: Zone, *, compact: bool) -> None:
        if not isinstance(zone, Zone):
            raise TypeError(f"expected a Zone, got {type(zone).__name__}")
        self._set_cache.clear()
        slot = self._slot_of.get(zone.zone_id)
        if slot is not None:
            self._clear_slot(slot)
            self._stale += 1
        elif self._free_slots:
            slot = self._free_slots.pop()
        else:
            slot = len(self._zones)
            self._zones.append(None)
            self._slots.ensure(len(self._zones))
        self._slot_of[zone.zone_id] = slot
        self._zones[slot] = zone
        cols = self._slots.cols
        cols["zone_id"][slot] = zone.zone_id
        cols["tenant"][slot] = zone.tenant_id
        cols["windows"][slot] = bool(zone.windows)
        shape = zone.shape
        if isinstance(shape, CircleShape):
            cols["kind"][slot] = _KIND_CIRCLE
            cols["lat0"][slot] = math.radians(shape.lat)
            cols["lon0"][slot] = math.radians(shape.lon)
            cols["radius"][slot] = shape.radius_m
        else:
            self._set_polygon(slot, shape)
        parts = shape.tree_parts
        self._parts[slot] = parts
        if compact:
            gen = int(cols["gen"][slot])
            for part in parts:
                self._delta.slots.append(slot)
                self._delta.gens.append(gen)
                self._delta.boxes.append(tuple(part.bounds))
            self._maybe_compact()

    def _set_polygon(self, slot: int, shape: PolygonShape) -> None:
        cols = self._slots.cols
        lon, lat, brk = _ring_arrays(shape.rings)
        ref = lon[0]
        rel = (lon - ref + 180.0) % 360.0 - 180.0
        lon_mid = ref + 0.5 * (rel.min() + rel.max())
        lat_mid = 0.5 * (lat.min() + lat.max())
        ext_lon = (rel.max() - rel.min()) * METRES_PER_DEGREE * math.cos(math.radians(lat_mid))
        ext_lat = (lat.max() - lat.min()) * METRES_PER_DEGREE
        local = (
            max(ext_lon, ext_lat) <= self.config.local_max_extent_m
            and float(np.abs(lat).max()) <= self.config.local_max_abs_lat
        )
        if not local:
            cols["kind"][slot] = _KIND_GENERAL
            return
        cols["kind"][slot] = _KIND_LOCAL
        phi0 = math.radians(lat_mid)
        lam0 = math.radians(lon_mid)
        cols["lat0"][slot] = phi0
        cols["lon0"][slot] = lam0
        cols["cos0"][slot] = math.cos(phi0)
        cols["sin0"][slot] = math.sin(phi0)
        a = np.radians((lon - lon_mid + 180.0) % 360.0 - 180.0)
        b = np.radians(lat) - phi0
        cols["amin"][slot] = a.min()
        cols["amax"][slot] = a.max()
        cols["bmin"][slot] = b.min()
        cols["bmax"][slot] = b.max()
        reach = _LOCAL_REACH_M / EARTH_RADIUS_M
        cols["cmin"][slot] = 0.999 * math.cos(min(math.pi / 2, abs(phi0) + 2.0 * reach))
        # relative error of the local plane's distances: the x scale is taken at the origin's
        # latitude, off by up to tan(lat) * half the zone's latitude extent, plus the plane's
        # own second-order error within reach; squared, as a factor on squared distances
        half_b = 0.5 * float(b.max() - b.min())
        tan_lat = math.tan(abs(phi0) + half_b + reach)
        rel = 2.0 * tan_lat * half_b + 2.0 * (1.0 + tan_lat**2) * reach**2 + 1e-9
        cols["tol"][slot] = (1.0 + rel) ** 2
        segs = len(a) - 1
        width = next((w for w in _WIDTHS if w >= segs), 0)
        if not width:
            width = _WIDTHS[-1]
            while width < segs:
                width *= 2
        bucket = self._buckets.get(width)
        if bucket is None:
            bucket = self._buckets[width] = _Bucket(width)
        cols["bucket"][slot] = width
        cols["row"][slot] = bucket.add(a, b, brk)

    def _clear_slot(self, slot: int) -> None:
        cols = self._slots.cols
        if cols["kind"][slot] == _KIND_LOCAL:
            self._buckets[int(cols["bucket"][slot])].release(int(cols["row"][slot]))
        cols["kind"][slot] = _KIND_NONE
        cols["tenant"][slot] = -1
        cols["zone_id"][slot] = -1
        cols["bucket"][slot] = -1
        cols["row"][slot] = -1
        cols["gen"][slot] += 1
        self._zones[slot] = None
        self._general.pop(slot, None)
        self._parts.pop(slot, None)

    # -- queries --------------------------------------------------------------------------

    def query(self, batch: FixBatch) -> BatchResult:
        """Containment, nearest approved zone, signed distance and classification per fix."""
        n = len(batch)
        sets = self._resolve_sets(batch.approved_sets)
        if n <= _QUERY_CHUNK:
            return self._query(batch, sets)
        # bounded working memory; within a chunk the local kernel visits pairs sorted by zone,
        # so its geometry gathers walk memory forwards (measured best around 64 k fixes)
        parts = [
            self._query(_slice(batch, lo, min(lo + _QUERY_CHUNK, n)), sets)
            for lo in range(0, n, _QUERY_CHUNK)
        ]
        offsets = [np.zeros(1, dtype=np.int64)]
        base = 0
        for part in parts:
            offsets.append(part.pair_offsets[1:] + base)
            base += int(part.pair_offsets[-1])
        return BatchResult(
            classification=np.concatenate([p.classification for p in parts]),
            zone_id=np.concatenate([p.zone_id for p in parts]),
            distance_m=np.concatenate([p.distance_m for p in parts]),
            accuracy_m=batch.accuracy_m,
            pair_offsets=np.concatenate(offsets),
            pair_zone_id=np.concatenate([p.pair_zone_id for p in parts]),
            pair_distance_m=np.concatenate([p.pair_distance_m for p in parts]),
        )

    def _query(self, batch: FixBatch, sets: _Sets) -> BatchResult:
        n = len(batch)
        cols = self._slots.cols
        fix_size = sets.sizes[batch.approved] if n else np.zeros(0, dtype=np.int64)
        small_fix = fix_size <= self.config.tree_min_approved
        # (fix, slot) pairs, fix-major: all members of small sets ...
        if bool(small_fix.all()):
            pf, ps = sets.expand(batch.approved)
            large = np.zeros(0, dtype=np.int64)
        else:
            small_idx = np.flatnonzero(small_fix)
            pf, ps = sets.expand(batch.approved[small_idx])
            pf = small_idx[pf]
            large = np.flatnonzero(~small_fix)
        pf, ps = self._filter_pairs(batch, pf, ps)
        # ... plus R-tree candidates near each fix of a large set
        if len(large):
            qf, qs = self._tree_pairs(batch, large, batch.accuracy_m[large], sets)
            pf = np.concatenate([pf, qf])
            ps = np.concatenate([ps, qs])
        sd = self._evaluate_needed(batch, pf, ps)
        kept = ~np.isnan(sd)
        if not bool(kept.all()):
            pf, ps, sd = pf[kept], ps[kept], sd[kept]
        if len(large):
            pf, ps, sd = self._add_nearest(batch, large, sets, pf, ps, sd)
            order = np.argsort(pf, kind="stable")
            pf, ps, sd = pf[order], ps[order], sd[order]
        # reduce per fix: deepest containing zone, else nearest
        counts = np.bincount(pf, minlength=n).astype(np.int64)
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        best = np.full(n, -np.inf)
        zone = np.full(n, -1, dtype=np.int64)
        has = np.flatnonzero(counts)
        if len(has):
            starts = offsets[has]
            best[has] = np.maximum.reduceat(sd, starts)
            idx = np.where(sd == best[pf], np.arange(len(sd)), len(sd))
            first = np.minimum.reduceat(idx, starts)
            zone[has] = cols["zone_id"][ps[first]]
        return BatchResult(
            classification=classify_array(best, batch.accuracy_m),
            zone_id=zone,
            distance_m=best,
            accuracy_m=batch.accuracy_m,
            pair_offsets=offsets,
            pair_zone_id=cols["zone_id"][ps],
            pair_distance_m=sd,
        )

    def query_one(self, fix: Fix) -> FixResult:
        """Convenience: :meth:`query` for a single fix."""
        return self.query(FixBatch.of([fix])).result(0)

    def _resolve_sets(self, sets: Sequence[frozenset[int]]) -> _Sets:
        """Slots of each approved set's zones that exist (sorted by zone id; cached)."""
        slot_of = self._slot_of
        cache = self._set_cache
        if len(cache) > 100_000:
            cache.clear()
        members: list[I64] = []
        for s in sets:
            m = cache.get(s)
            if m is None:
                ids = sorted(z for z in s if z in slot_of)
                m = cache[s] = np.array([slot_of[z] for z in ids], dtype=np.int64)
            members.append(m)
        return _Sets(members, len(self._zones) + 1)

    def _filter_pairs(self, batch: FixBatch, pf: I64, ps: I64) -> tuple[I64, I64]:
        """Keep pairs whose zone belongs to the fix's tenant and is active at its time."""
        if not len(pf):
            return pf, ps
        cols = self._slots.cols
        ok = cols["tenant"][ps] == batch.tenant_id[pf]
        windowed = cols["windows"][ps]
        if windowed.any():
            w_idx = np.flatnonzero(windowed & ok)
            w_slots = ps[w_idx]
            for slot in np.unique(w_slots):
                zone = self._zones[int(slot)]
                assert zone is not None
                sel = w_idx[w_slots == slot]
                ok[sel] = zone.active_mask(batch.time_s[pf[sel]])
        if bool(ok.all()):
            return pf, ps
        return pf[ok], ps[ok]

    # -- R-tree path ----------------------------------------------------------------------

    def _tree_candidates(self, lat: F64, lon: F64, radius_m: F64) -> tuple[I64, I64]:
        """(query index, slot) for zones whose box comes within ``radius_m`` of each point."""
        if not len(lat):
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        r = np.minimum(radius_m, HALF_CIRCUMFERENCE_M)
        dlat = _metres_to_lat_deg(r)
        lat_lo = lat - dlat
        lat_hi = lat + dlat
        polar = (lat_hi >= 90.0) | (lat_lo <= -90.0)
        d = r / EARTH_RADIUS_M
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.sin(np.minimum(d, math.pi / 2)) / np.cos(np.radians(lat))
        dlon = np.where(
            polar | (ratio >= 1.0), 180.0, np.degrees(np.arcsin(np.minimum(ratio, 1.0)))
        )
        dlon = np.where(d >= math.pi / 2, 180.0, dlon)
        lo = lon - dlon
        hi = lon + dlon
        lat_lo = np.maximum(lat_lo, -90.0)
        lat_hi = np.minimum(lat_hi, 90.0)
        full = dlon >= 180.0
        lo = np.where(full, -180.0, lo)
        hi = np.where(full, 180.0, hi)
        # boxes beyond ±180 get a wrapped twin
        qidx = [np.arange(len(lat))]
        bx = [np.stack([np.maximum(lo, -180.0), lat_lo, np.minimum(hi, 180.0), lat_hi], axis=1)]
        west = np.flatnonzero(lo < -180.0)
        if len(west):
            qidx.append(west)
            bx.append(
                np.stack(
                    [lo[west] + 360.0, lat_lo[west], np.full(len(west), 180.0), lat_hi[west]],
                    axis=1,
                )
            )
        east = np.flatnonzero(hi > 180.0)
        if len(east):
            qidx.append(east)
            bx.append(
                np.stack(
                    [np.full(len(east), -180.0), lat_lo[east], hi[east] - 360.0, lat_hi[east]],
                    axis=1,
                )
            )
        q = np.concatenate(qidx)
        boxes = np.concatenate(bx)
        out_q: list[I64] = []
        out_s: list[I64] = []
        gen = self._slots.cols["gen"]
        if self._bulk_tree is not None:
            geoms = shapely.box(boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3])
            hit = self._bulk_tree.query(geoms)
            slots = self._bulk_slot[hit[1]]
            live = gen[slots] == self._bulk_gen[hit[1]]
            out_q.append(q[hit[0][live]])
            out_s.append(slots[live])
        if self._delta.slots:
            db = np.array(self._delta.boxes, dtype=np.float64)
            dslot = np.array(self._delta.slots, dtype=np.int64)
            live = gen[dslot] == np.array(self._delta.gens, dtype=np.int64)
            db, dslot = db[live], dslot[live]
            overlap = (
                (boxes[:, None, 0] <= db[None, :, 2])
                & (boxes[:, None, 2] >= db[None, :, 0])
                & (boxes[:, None, 1] <= db[None, :, 3])
                & (boxes[:, None, 3] >= db[None, :, 1])
            )
            qi, di = np.nonzero(overlap)
            out_q.append(q[qi])
            out_s.append(dslot[di])
        if not out_q:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        qq = np.concatenate(out_q)
        ss = np.concatenate(out_s)
        # one pair per (query, slot): a zone may have several parts / twin boxes
        key = np.unique(qq * (len(self._zones) + 1) + ss)
        return key // (len(self._zones) + 1), key % (len(self._zones) + 1)

    def _tree_pairs(
        self, batch: FixBatch, fixes: I64, radius_m: F64, sets: _Sets
    ) -> tuple[I64, I64]:
        """Approved, same-tenant, active zones within ``radius_m`` (box) of ``fixes``."""
        qi, slots = self._tree_candidates(batch.lat[fixes], batch.lon[fixes], radius_m)
        pf = fixes[qi]
        if not len(pf):
            return pf, slots
        member = sets.contains(batch.approved[pf], slots)
        return self._filter_pairs(batch, pf[member], slots[member])

    def _add_nearest(
        self, batch: FixBatch, large: I64, sets: _Sets, pf: I64, ps: I64, sd: F64
    ) -> tuple[I64, I64, F64]:
        """For large-set fixes not inside any zone, add their nearest approved zone.

        Vectorised over the fixes: search boxes grow x4 until they meet an approved zone,
        then one more search with the best distance found catches any nearer zone (a zone
        nearer than ``d`` has its bounding box within ``d`` of the fix).
        """
        covered = np.zeros(len(batch), dtype=np.bool_)
        covered[pf[sd >= 0.0]] = True
        todo = large[~covered[large]]
        if not len(todo):
            return pf, ps, sd
        width = len(self._zones) + 1
        radius = np.maximum(1_000.0, 2.0 * batch.accuracy_m[todo])
        found_f: list[I64] = []
        found_s: list[I64] = []
        while len(todo):
            f, s = self._tree_pairs(batch, todo, radius, sets)
            hit = np.zeros(len(batch), dtype=np.bool_)
            hit[f] = True
            found_f.append(f)
            found_s.append(s)
            more = ~hit[todo] & (radius < HALF_CIRCUMFERENCE_M)
            todo, radius = todo[more], radius[more] * 4.0
        f = np.concatenate(found_f)
        s = np.concatenate(found_s)
        if not len(f):
            return pf, ps, sd
        d = self._evaluate(batch, f, s)
        nearest = np.full(len(batch), -np.inf)
        np.maximum.at(nearest, f, d)
        fixes = np.unique(f)
        f2, s2 = self._tree_pairs(batch, fixes, 1.0 - nearest[fixes], sets)
        f = np.concatenate([f, f2])
        s = np.concatenate([s, s2])
        keys = np.unique(f * width + s)
        fresh = keys[~np.isin(keys, pf * width + ps)]
        f, s = fresh // width, fresh % width
        return (
            np.concatenate([pf, f]),
            np.concatenate([ps, s]),
            np.concatenate([sd, self._evaluate(batch, f, s)]),
        )

    # -- exact evaluation -----------------------------------------------------------------

    def _evaluate_needed(self, batch: FixBatch, pf: I64, ps: I64) -> F64:
        """Evaluate the pairs the answer depends on; NaN for the others.

        A pair is skipped only when a cheap lower bound puts the zone more than the fix's
        accuracy away *and* the fix is covered by another approved zone: then it can neither
        contain the fix, nor be its nearest zone, nor be within its accuracy radius.
        """
        sd = np.full(len(pf), np.nan)
        if not len(pf):
            return sd
        must = self._may_matter(batch, pf, ps)
        if bool(must.all()):
            return self._evaluate(batch, pf, ps)
        first = np.flatnonzero(must)
        sd[first] = self._evaluate(batch, pf[first], ps[first])
        covered = np.zeros(len(batch), dtype=np.bool_)
        covered[pf[first][sd[first] >= 0.0]] = True
        later = np.flatnonzero(~must & ~covered[pf])
        if len(later):
            sd[later] = self._evaluate(batch, pf[later], ps[later])
        return sd

    def _relative(self, batch: FixBatch, pf: I64, ps: I64) -> tuple[F64, F64]:
        """Fix position relative to each local zone's origin: (dlon, dlat) in radians."""
        cols = self._slots.cols
        a = np.radians(batch.lon[pf])
        a -= cols["lon0"][ps]
        a[a >= math.pi] -= 2.0 * math.pi
        a[a < -math.pi] += 2.0 * math.pi
        b = np.radians(batch.lat[pf])
        b -= cols["lat0"][ps]
        return a, b

    def _may_matter(self, batch: FixBatch, pf: I64, ps: I64) -> B:
        """False for local-polygon pairs whose bounding box is farther than the accuracy."""
        cols = self._slots.cols
        local = cols["kind"][ps] == _KIND_LOCAL
        if not bool(local.all()):
            must = np.ones(len(pf), dtype=np.bool_)
            idx = np.flatnonzero(local)
            if len(idx):
                must[idx] = self._may_matter(batch, pf[idx], ps[idx])
            return must
        a, b = self._relative(batch, pf, ps)
        dx = np.maximum(cols["amin"][ps] - a, a - cols["amax"][ps])
        np.maximum(dx, 0.0, out=dx)
        dx *= cols["cmin"][ps]
        dy = np.maximum(cols["bmin"][ps] - b, b - cols["bmax"][ps])
        np.maximum(dy, 0.0, out=dy)
        dx *= dx
        dy *= dy
        dx += dy
        limit = batch.accuracy_m[pf] * (1.0 / EARTH_RADIUS_M)
        limit *= limit
        return np.asarray(dx <= limit, dtype=np.bool_)

    def _evaluate(self, batch: FixBatch, pf: I64, ps: I64) -> F64:
        """Signed distance (metres, >= 0 iff covered) for each (fix, slot) pair."""
        out = np.empty(len(pf), dtype=np.float64)
        if not len(pf):
            return out
        cols = self._slots.cols
        kind = cols["kind"][ps]
        general = kind == _KIND_GENERAL
        is_local = kind == _KIND_LOCAL
        all_local = bool(is_local.all())
        local = np.arange(len(pf)) if all_local else np.flatnonzero(is_local)
        if not all_local:
            circle = np.flatnonzero(kind == _KIND_CIRCLE)
            if len(circle):
                s = ps[circle]
                d = haversine_m(
                    np.degrees(cols["lat0"][s]),
                    np.degrees(cols["lon0"][s]),
                    batch.lat[pf[circle]],
                    batch.lon[pf[circle]],
                )
                out[circle] = cols["radius"][s] - d
        if len(local):
            s = ps if all_local else ps[local]
            a, b = self._relative(batch, pf if all_local else pf[local], s)
            reach = _LOCAL_REACH_M / EARTH_RADIUS_M
            near = (np.abs(b) <= reach) & (np.abs(a) * cols["cos0"][s] <= reach)
            if not bool(near.all()):
                general[local[~near]] = True
                local, a, b, s = local[near], a[near], b[near], s[near]
            bucket = cols["bucket"][s]
            many = len(self._buckets) > 1
            for width, store in self._buckets.items():
                sel = np.flatnonzero(bucket == width) if many else np.arange(len(s))
                if not len(sel):
                    continue
                # pairs ordered by storage row: the column gathers then walk memory forwards
                rows = cols["row"][s[sel]]
                order = np.argsort(rows)
                sel = sel[order]
                ss = s[sel]
                out[local[sel]] = self._local_kernel(
                    store,
                    rows[order],
                    a[sel],
                    b[sel],
                    cols["lat0"][ss],
                    cols["cos0"][ss],
                    cols["sin0"][ss],
                    cols["tol"][ss],
                )
        gen_idx = np.flatnonzero(general)
        if len(gen_idx):
            s = ps[gen_idx]
            for slot in np.unique(s).tolist():
                sel = gen_idx[s == slot]
                out[sel] = self._general_distance(slot, batch.lat[pf[sel]], batch.lon[pf[sel]])
        return out

    @staticmethod
    def _local_kernel(
        bucket: _Bucket,
        rows: I64,
        a_f: F64,
        b_f: F64,
        lat0: F64,
        cos0: F64,
        sin0: F64,
        tol: F64,
    ) -> F64:
        """Signed distance to local polygons, vectorised over (segment, pair).

        Containment is the crossing-number parity in the lon/lat plane (exact RFC 7946
        semantics). The nearest boundary point is found on a plane around the fix
        (``x = dlon * cos(mid latitude)``, ``y = dlat``) and its distance is then taken
        great-circle (haversine), so the plane's scale error only enters to second order.
        """
        out = np.empty(len(rows), dtype=np.float64)
        step = max(256, _LOCAL_CHUNK // bucket.width)
        store = bucket.arrays
        for lo in range(0, len(rows), step):
            hi = min(lo + step, len(rows))
            g = np.take(store, rows[lo:hi], axis=2)  # (4, width, m)
            af = a_f[lo:hi]
            bf = b_f[lo:hi]
            u0 = g[0] - af
            v0 = g[1] - bf
            u1 = g[2] - af
            v1 = g[3] - bf
            # crossing-number parity of a ray towards +lon
            cross = np.not_equal(v0 > 0.0, v1 > 0.0)
            da = u1 - u0
            db = v1 - v0
            side = u0 * v1
            side -= v0 * u1
            side *= db
            cross &= side > 0.0
            inside = np.logical_xor.reduce(cross, axis=0)
            # nearest point on the local plane; k = cos(mid latitude of fix and zone origin)
            m = 0.5 * bf
            k = cos0[lo:hi] * (1.0 - 0.5 * m * m) - sin0[lo:hi] * m
            x0 = u0
            x0 *= k
            ex = da
            ex *= k
            t = x0 * ex
            t += v0 * db
            den = ex * ex
            den += db * db
            den += 1e-300
            t /= den
            np.negative(t, out=t)
            np.clip(t, 0.0, 1.0, out=t)
            ex *= t
            ex += x0  # x of the nearest point on each segment
            db *= t
            db += v0  # y
            d2 = ex * ex
            d2 += db * db
            # great-circle distance to the nearest points of the segments that are nearest
            # within the plane's scale error (usually one)
            limit = np.min(d2, axis=0)
            limit *= tol[lo:hi]
            limit += 1e-30
            seg, col = np.nonzero(d2 <= limit)
            dlat = db[seg, col]
            dlon = ex[seg, col] / k[col]
            phi = lat0[lo:hi][col] + bf[col]
            h = np.sin(0.5 * dlat) ** 2
            h += np.cos(phi) * np.cos(phi + dlat) * np.sin(0.5 * dlon) ** 2
            d2[:] = np.inf
            d2[seg, col] = h
            h = np.min(d2, axis=0)
            d = 2.0 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.minimum(h, 1.0)))
            out[lo:hi] = np.where(inside | (d == 0.0), d, -d)
        return out

    def _general_data(self, slot: int) -> _General:
        data = self._general.get(slot)
        if data is None:
            zone = self._zones[slot]
            assert zone is not None and isinstance(zone.shape, PolygonShape)
            rings = [densify_ring(r, self.config.densify_deg) for r in zone.shape.rings]
            lon, lat, brk = _ring_arrays(rings)
            geom = zone.shape.geometry
            shapely.prepare(geom)
            data = self._general[slot] = _General(geom, lat, lon, brk)
        return data

    def _general_distance(self, slot: int, lat: F64, lon: F64) -> F64:
        """Signed distance via an azimuthal equidistant projection centred on each fix."""
        data = self._general_data(slot)
        inside = shapely.intersects_xy(data.prepared, lon, lat)
        nv = len(data.lat)
        step = max(1, _GENERAL_CHUNK // nv)
        out = np.empty(len(lat), dtype=np.float64)
        for lo in range(0, len(lat), step):
            hi = min(lo + step, len(lat))
            x, y, c = azimuthal_equidistant(
                lat[lo:hi, None], lon[lo:hi, None], data.lat[None, :], data.lon[None, :]
            )
            x0, x1, y0, y1 = x[:, :-1], x[:, 1:], y[:, :-1], y[:, 1:]
            ex = x1 - x0
            ey = y1 - y0
            len2 = np.maximum(ex * ex + ey * ey, 1e-300)
            t = np.clip(-(x0 * ex + y0 * ey) / len2, 0.0, 1.0)
            dx = x0 + t * ex
            dy = y0 + t * ey
            seg = np.sqrt(dx * dx + dy * dy)
            # far from the fix the projection distorts: use the (exact) endpoint distances
            far = np.maximum(c[:, :-1], c[:, 1:]) > math.pi / 2
            ends = np.minimum(c[:, :-1], c[:, 1:]) * EARTH_RADIUS_M
            seg = np.where(far, ends, seg)
            seg[:, data.brk] = np.inf
            # refine the near-best segments exactly (the projected chords are approximate)
            best = seg.min(axis=1, keepdims=True)
            row, idx = np.nonzero(seg <= best * 1.02 + 10.0)
            exact = segment_distance_m(
                lat[lo:hi][row],
                lon[lo:hi][row],
                data.lat[idx],
                data.lon[idx],
                data.lat[idx + 1],
                data.lon[idx + 1],
            )
            seg[:] = np.inf
            seg[row, idx] = exact
            out[lo:hi] = seg.min(axis=1)
        return np.where(inside | (out == 0.0), out, -out)
