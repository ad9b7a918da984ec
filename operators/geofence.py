"""Geofence zones, approval windows and the accuracy-aware classification rule.

A :class:`Zone` is a tenant's polygon (GeoJSON Polygon/MultiPolygon, lon/lat WGS84, edges
straight in the lon/lat plane as in RFC 7946) or circle (great-circle radius in metres),
optionally approved only during daily UTC :class:`TimeWindow` s. Build zones from GeoJSON with
:func:`zone_from_geojson`; every constructor validates eagerly and raises
:class:`~operators.errors.ConfigError` naming what is wrong.

The spatial index lives in :mod:`operators.geofence_index` and the per-guard hysteresis in
:mod:`operators.geofence_hysteresis`.

Classification of one fix with accuracy radius ``r`` and signed distance ``s`` (metres,
positive inside, to the boundary of the approved zone it is deepest in, or negative to the
nearest approved zone): ``inside`` if ``s >= r``, ``outside`` if ``s < -r``, else
``uncertain``. With ``r == 0`` a fix is never uncertain; boundary points count as inside
(``ST_Covers`` semantics).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from enum import StrEnum
from typing import Any

import numpy as np
import shapely
from numpy.typing import NDArray
from shapely.geometry.base import BaseGeometry

from operators.errors import ConfigError
from operators.geo import HALF_CIRCUMFERENCE_M, cap_bounds

__all__ = [
    "CLASS_BY_CODE",
    "CLASS_INSIDE",
    "CLASS_OUTSIDE",
    "CLASS_UNCERTAIN",
    "CircleShape",
    "Classification",
    "FixResult",
    "PolygonShape",
    "TimeWindow",
    "Zone",
    "classify",
    "classify_array",
    "zone_from_geojson",
    "zone_to_geojson",
]

MAX_CIRCLE_RADIUS_M = 10_000_000.0
"""Largest accepted circle radius (a quarter of the globe is ~10,000 km)."""

_DAY_S = 86_400
_WEEKDAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

Ring = tuple[tuple[float, float], ...]
PolygonCoords = tuple[Ring, ...]


# ---------------------------------------------------------------------------------------------
# classification


class Classification(StrEnum):
    """Where a fix is relative to its approved zones, given its accuracy radius."""

    INSIDE = "inside"
    OUTSIDE = "outside"
    UNCERTAIN = "uncertain"


CLASS_OUTSIDE = 0
CLASS_UNCERTAIN = 1
CLASS_INSIDE = 2
CLASS_BY_CODE = (Classification.OUTSIDE, Classification.UNCERTAIN, Classification.INSIDE)
"""Array code → :class:`Classification` (codes used in batch results)."""


def classify(distance_m: float, accuracy_m: float) -> Classification:
    """Classify a fix from its signed distance ``s`` and accuracy radius ``r`` (module rule)."""
    if distance_m >= accuracy_m:
        return Classification.INSIDE
    if distance_m < -accuracy_m:
        return Classification.OUTSIDE
    return Classification.UNCERTAIN


def classify_array(distance_m: NDArray[np.float64], accuracy_m: NDArray[np.float64]) -> Any:
    """Vectorised :func:`classify`: int8 codes ``CLASS_*`` per element."""
    out = np.full(distance_m.shape, CLASS_UNCERTAIN, dtype=np.int8)
    out[distance_m >= accuracy_m] = CLASS_INSIDE
    out[distance_m < -accuracy_m] = CLASS_OUTSIDE
    return out


@dataclass(frozen=True, slots=True)
class FixResult:
    """The geofence answer for one fix.

    ``zone_id``/``distance_m``: the containing approved zone the fix is deepest in (distance
    positive) or else the nearest approved zone (distance negative); ``None``/``-inf`` when
    the fix has no approved zone active at its time. ``zones`` lists ``(zone_id, signed
    distance)`` for every approved zone evaluated: at least all that contain the fix or lie
    within ``accuracy_m`` of it, and the nearest; an approved zone absent from it is more
    than ``accuracy_m`` away.
    """

    classification: Classification
    zone_id: int | None
    distance_m: float
    accuracy_m: float
    zones: tuple[tuple[int, float], ...] = ()

    @property
    def containing(self) -> tuple[int, ...]:
        """Ids of the approved zones that contain (cover) the fix."""
        return tuple(z for z, s in self.zones if s >= 0.0)


# ---------------------------------------------------------------------------------------------
# time windows


def _time_seconds(t: time) -> float:
    return t.hour * 3600 + t.minute * 60 + t.second + t.microsecond / 1e6


@dataclass(frozen=True)
class TimeWindow:
    """A daily UTC window ``[start, end)`` in which a zone is approved.

    ``end < start`` wraps past midnight (22:00–06:00). ``weekdays`` (Monday = 0) restricts the
    window to the days on which it *starts*: a Friday 22:00–06:00 window covers Saturday
    03:00. ``None`` means every day.
    """

    start: time
    end: time
    weekdays: frozenset[int] | None = None

    def __post_init__(self) -> None:
        for name, t in (("start", self.start), ("end", self.end)):
            if not isinstance(t, time):
                raise ConfigError(f"time window {name} must be a datetime.time, got {t!r}")
            if t.tzinfo is not None and t.utcoffset() != timedelta(0):
                raise ConfigError(f"time window {name} must be UTC, got offset {t.utcoffset()}")
        if self.start.replace(tzinfo=None) == self.end.replace(tzinfo=None):
            raise ConfigError(
                f"time window start equals end ({self.start}); omit windows for 'always'"
            )
        if self.weekdays is not None:
            days = frozenset(self.weekdays)
            if not days or any(not isinstance(d, int) or not 0 <= d <= 6 for d in days):
                raise ConfigError(
                    f"time window weekdays must be a non-empty set of 0..6 (Monday = 0), "
                    f"got {sorted(days)!r}"
                )
            object.__setattr__(self, "weekdays", days)

    @property
    def start_s(self) -> float:
        """Start as seconds after midnight UTC."""
        return _time_seconds(self.start)

    @property
    def end_s(self) -> float:
        """End as seconds after midnight UTC."""
        return _time_seconds(self.end)

    def contains(self, at: datetime) -> bool:
        """Whether the timezone-aware ``at`` falls in the window."""
        if at.tzinfo is None:
            raise ValueError("time must be timezone-aware (UTC)")
        return bool(self.mask(np.array([at.timestamp()]))[0])

    def mask(self, time_s: NDArray[np.float64]) -> NDArray[np.bool_]:
        """Vectorised :meth:`contains` for epoch seconds (UTC)."""
        day = np.floor(time_s / _DAY_S)
        sod = time_s - day * _DAY_S
        weekday = (day.astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday
        start, end = self.start_s, self.end_s
        if start < end:
            hit = (sod >= start) & (sod < end)
            start_day = weekday
        else:
            late = sod >= start
            early = sod < end
            hit = late | early
            start_day = np.where(early & ~late, (weekday + 6) % 7, weekday)
        if self.weekdays is not None:
            hit &= np.isin(start_day, np.fromiter(self.weekdays, dtype=np.int64))
        return np.asarray(hit, dtype=np.bool_)


# ---------------------------------------------------------------------------------------------
# shapes


def _check_lonlat(path: str, lon: float, lat: float) -> None:
    if not (isinstance(lon, int | float) and isinstance(lat, int | float)):
        raise ConfigError(f"{path}: coordinates must be numbers, got {lon!r}, {lat!r}")
    if not (math.isfinite(lon) and math.isfinite(lat)):
        raise ConfigError(f"{path}: coordinates must be finite, got ({lon}, {lat})")
    if not -90.0 <= lat <= 90.0:
        raise ConfigError(f"{path}: latitude {lat} out of range [-90, 90]")
    if not -360.0 <= lon <= 360.0:
        raise ConfigError(f"{path}: longitude {lon} out of range [-360, 360]")


def _unwrap_ring(path: str, ring: Ring) -> NDArray[np.float64]:
    """Ring as an ``(n, 2)`` array whose longitudes are continuous across the antimeridian."""
    arr = np.array(ring, dtype=np.float64)
    lon = arr[:, 0]
    step = np.diff(lon)
    both_on_180 = (np.abs(lon[:-1]) == 180.0) & (np.abs(lon[1:]) == 180.0)
    jump = (np.abs(step) > 180.0) & ~both_on_180
    step = np.where(jump, step - 360.0 * np.round(step / 360.0), step)
    out = arr.copy()
    out[1:, 0] = lon[0] + np.cumsum(step)
    if abs(out[-1, 0] - out[0, 0]) > 1e-6:
        raise ConfigError(
            f"{path}: ring winds around a pole (its longitudes change by "
            f"{out[-1, 0] - out[0, 0]:+.0f} degrees); give polar zones with explicit edges "
            "along the antimeridian and the pole's latitude, or as a circle"
        )
    out[-1] = out[0]
    if out[:, 0].max() - out[:, 0].min() > 360.0:
        raise ConfigError(f"{path}: ring spans more than 360 degrees of longitude")
    return out


def _split_antimeridian(geom: BaseGeometry) -> BaseGeometry:
    """Cut a polygonal geometry with longitudes beyond ±180 into parts within [-180, 180]."""
    minx, _, maxx, _ = geom.bounds
    if minx >= -180.0 and maxx <= 180.0:
        return geom
    parts: list[BaseGeometry] = []
    k_lo = math.floor((minx + 180.0) / 360.0)
    k_hi = math.floor((maxx + 180.0) / 360.0)
    for k in range(k_lo, k_hi + 1):
        cut = shapely.intersection(
            geom, shapely.box(-180.0 + 360.0 * k, -90.0, 180.0 + 360.0 * k, 90.0)
        )
        for part in shapely.get_parts(cut):
            for poly in _polygonal_parts(part):
                parts.append(shapely.transform(poly, lambda c, k=k: c - np.array([360.0 * k, 0.0])))
    return shapely.union_all(parts)


def _polygonal_parts(geom: BaseGeometry) -> list[BaseGeometry]:
    out: list[BaseGeometry] = []
    for part in shapely.get_parts(geom):
        if part.geom_type == "Polygon" and not part.is_empty and part.area > 0.0:
            out.append(part)
        elif part.geom_type in ("MultiPolygon", "GeometryCollection"):
            out.extend(_polygonal_parts(part))
    return out


@dataclass(frozen=True)
class PolygonShape:
    """A polygonal zone: GeoJSON MultiPolygon coordinates ``polygons[p][ring][i] = (lon, lat)``.

    Rings must be closed (first position equals last) with at least four positions; the first
    ring of each polygon is its shell, the rest are holes. Longitudes may lie in
    ``[-360, 360]``; a ring whose consecutive longitudes jump by more than 180 degrees crosses
    the antimeridian. Invalid (e.g. self-intersecting) polygons are rejected unless
    ``repair`` is true, in which case shapely's ``make_valid`` is applied and its polygonal
    parts kept.
    """

    polygons: tuple[PolygonCoords, ...]
    repair: bool = False
    geometry: BaseGeometry = field(init=False, repr=False, compare=False)
    """Containment geometry: a (Multi)Polygon within lon [-180, 180], cut at the antimeridian."""
    rings: tuple[NDArray[np.float64], ...] = field(init=False, repr=False, compare=False)
    """Real boundary rings as ``(n, 2)`` lon/lat arrays, continuous across the antimeridian."""

    def __post_init__(self) -> None:
        if not self.polygons:
            raise ConfigError("polygon zone has no polygons")
        polys: list[BaseGeometry] = []
        rings: list[NDArray[np.float64]] = []
        for p, poly in enumerate(self.polygons):
            if not poly:
                raise ConfigError(f"polygon {p} has no rings")
            unwrapped: list[NDArray[np.float64]] = []
            for r, ring in enumerate(poly):
                path = f"polygon {p} ring {r}"
                if len(ring) < 4:
                    raise ConfigError(f"{path}: needs at least 4 positions, got {len(ring)}")
                for i, pos in enumerate(ring):
                    if len(pos) < 2:
                        raise ConfigError(f"{path} position {i}: needs [lon, lat], got {pos!r}")
                    _check_lonlat(f"{path} position {i}", pos[0], pos[1])
                if tuple(ring[0][:2]) != tuple(ring[-1][:2]):
                    raise ConfigError(
                        f"{path}: ring is not closed (first {tuple(ring[0])} != last "
                        f"{tuple(ring[-1])})"
                    )
                arr = _unwrap_ring(path, tuple((float(q[0]), float(q[1])) for q in ring))
                if unwrapped:  # align holes with the shell's longitude frame
                    shell_mid = 0.5 * (unwrapped[0][:, 0].min() + unwrapped[0][:, 0].max())
                    mid = 0.5 * (arr[:, 0].min() + arr[:, 0].max())
                    arr[:, 0] -= 360.0 * round((mid - shell_mid) / 360.0)
                unwrapped.append(arr)
            shape = shapely.Polygon(unwrapped[0], unwrapped[1:])
            if not shape.is_valid:
                if not self.repair:
                    raise ConfigError(
                        f"polygon {p} is invalid: {shapely.is_valid_reason(shape)} "
                        "(fix the ring, or build with repair=True to apply make_valid)"
                    )
                fixed = _polygonal_parts(shapely.make_valid(shape))
                if not fixed:
                    raise ConfigError(f"polygon {p} has no area after make_valid")
                polys.extend(fixed)
                rings.extend(_rings_of(fixed))
                continue
            if shape.area <= 0.0:
                raise ConfigError(f"polygon {p} has zero area")
            polys.append(shape)
            rings.extend(unwrapped)
        whole = shapely.MultiPolygon(polys) if len(polys) > 1 else polys[0]
        if len(polys) > 1 and not whole.is_valid:
            if not self.repair:
                raise ConfigError(
                    f"multipolygon is invalid: {shapely.is_valid_reason(whole)} (polygons "
                    "overlap? merge them, or build with repair=True)"
                )
            whole = shapely.union_all(polys)
            rings = _rings_of(_polygonal_parts(whole))
        object.__setattr__(self, "geometry", _split_antimeridian(whole))
        object.__setattr__(self, "rings", tuple(rings))

    @property
    def tree_parts(self) -> list[BaseGeometry]:
        """Geometries within lon [-180, 180] whose union covers the zone (for the R-tree)."""
        return _polygonal_parts(self.geometry)


def _rings_of(polys: Sequence[BaseGeometry]) -> list[NDArray[np.float64]]:
    out: list[NDArray[np.float64]] = []
    for poly in polys:
        out.append(np.asarray(poly.exterior.coords, dtype=np.float64)[:, :2])
        out.extend(np.asarray(r.coords, dtype=np.float64)[:, :2] for r in poly.interiors)
    return out


@dataclass(frozen=True)
class CircleShape:
    """A circular zone: every point within ``radius_m`` great-circle metres of the centre."""

    lat: float
    lon: float
    radius_m: float

    def __post_init__(self) -> None:
        _check_lonlat("circle centre", self.lon, self.lat)
        if not isinstance(self.radius_m, int | float) or not math.isfinite(self.radius_m):
            raise ConfigError(f"circle radius must be a finite number, got {self.radius_m!r}")
        if self.radius_m <= 0.0:
            raise ConfigError(f"circle radius must be > 0 metres, got {self.radius_m}")
        if self.radius_m > min(MAX_CIRCLE_RADIUS_M, HALF_CIRCUMFERENCE_M):
            raise ConfigError(
                f"circle radius {self.radius_m} m exceeds the maximum {MAX_CIRCLE_RADIUS_M} m"
            )
        object.__setattr__(self, "lon", float((self.lon + 180.0) % 360.0 - 180.0))

    @property
    def tree_parts(self) -> list[BaseGeometry]:
        """Boxes within lon [-180, 180] whose union covers the circle (for the R-tree)."""
        minx, miny, maxx, maxy = cap_bounds(self.lat, self.lon, self.radius_m)
        if maxx - minx >= 360.0:
            return [shapely.box(-180.0, miny, 180.0, maxy)]
        return _polygonal_parts(_split_antimeridian(shapely.box(minx, miny, maxx, maxy)))


Shape = PolygonShape | CircleShape


# ---------------------------------------------------------------------------------------------
# zones


@dataclass(frozen=True)
class Zone:
    """A tenant's geofence zone; approved always, or only within ``windows`` (UTC)."""

    zone_id: int
    tenant_id: int
    site_id: int | None
    name: str
    shape: Shape
    windows: tuple[TimeWindow, ...] = ()

    def __post_init__(self) -> None:
        for name in ("zone_id", "tenant_id"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConfigError(f"zone {name} must be an int, got {value!r}")
        if self.site_id is not None and (
            not isinstance(self.site_id, int) or isinstance(self.site_id, bool)
        ):
            raise ConfigError(f"zone site_id must be an int or None, got {self.site_id!r}")
        if not isinstance(self.name, str):
            raise ConfigError(f"zone name must be a string, got {self.name!r}")
        if not isinstance(self.shape, PolygonShape | CircleShape):
            raise ConfigError(
                f"zone shape must be a PolygonShape or CircleShape, got {self.shape!r}"
            )
        windows = tuple(self.windows)
        for w in windows:
            if not isinstance(w, TimeWindow):
                raise ConfigError(f"zone windows must be TimeWindow objects, got {w!r}")
        object.__setattr__(self, "windows", windows)

    def active_at(self, at: datetime) -> bool:
        """Whether the zone is approved at the timezone-aware time ``at``."""
        if at.tzinfo is None:
            raise ValueError("time must be timezone-aware (UTC)")
        return not self.windows or any(w.contains(at) for w in self.windows)

    def active_mask(self, time_s: NDArray[np.float64]) -> NDArray[np.bool_]:
        """Vectorised :meth:`active_at` for epoch seconds (UTC)."""
        if not self.windows:
            return np.ones(time_s.shape, dtype=np.bool_)
        hit = np.zeros(time_s.shape, dtype=np.bool_)
        for w in self.windows:
            hit |= w.mask(time_s)
        return hit


_TIME_RE = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2}))?$")


def _parse_time(path: str, value: Any) -> time:
    if isinstance(value, time):
        return value
    if not isinstance(value, str) or not (m := _TIME_RE.match(value)):
        raise ConfigError(f"{path}: expected 'HH:MM' or 'HH:MM:SS' (UTC), got {value!r}")
    h, mi, s = int(m[1]), int(m[2]), int(m[3] or 0)
    if h == 24 and mi == 0 and s == 0:
        return time(0, 0)
    if h > 23 or mi > 59 or s > 59:
        raise ConfigError(f"{path}: not a valid time of day: {value!r}")
    return time(h, mi, s)


def _parse_weekdays(path: str, value: Any) -> frozenset[int] | None:
    if value is None:
        return None
    if not isinstance(value, list | tuple):
        raise ConfigError(f"{path}: expected a list of weekdays, got {value!r}")
    days: set[int] = set()
    for d in value:
        if isinstance(d, str) and d[:3].lower() in _WEEKDAY_NAMES:
            days.add(_WEEKDAY_NAMES.index(d[:3].lower()))
        elif isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= 6:
            days.add(d)
        else:
            raise ConfigError(f"{path}: weekday must be 0..6 (Monday = 0) or a name, got {d!r}")
    return frozenset(days)


def _parse_windows(value: Any) -> tuple[TimeWindow, ...]:
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        raise ConfigError(f"properties.windows: expected a list, got {value!r}")
    out: list[TimeWindow] = []
    for i, w in enumerate(value):
        path = f"properties.windows[{i}]"
        if not isinstance(w, Mapping):
            raise ConfigError(f"{path}: expected an object with start/end, got {w!r}")
        if "start" not in w or "end" not in w:
            raise ConfigError(f"{path}: needs 'start' and 'end'")
        try:
            out.append(
                TimeWindow(
                    _parse_time(f"{path}.start", w["start"]),
                    _parse_time(f"{path}.end", w["end"]),
                    _parse_weekdays(f"{path}.weekdays", w.get("weekdays")),
                )
            )
        except ConfigError as exc:
            if str(exc).startswith(path):
                raise
            raise ConfigError(f"{path}: {exc}") from None
    return tuple(out)


def _int_prop(
    props: Mapping[str, Any], name: str, *, default: Any = ..., fallback: Any = None
) -> Any:
    value = props.get(name, fallback)
    if value is None:
        if default is ...:
            raise ConfigError(f"properties.{name}: required")
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"properties.{name}: must be an integer, got {value!r}")
    return value


def _polygon_coords(path: str, coords: Any) -> PolygonCoords:
    if not isinstance(coords, list | tuple):
        raise ConfigError(f"{path}: expected a list of rings, got {type(coords).__name__}")
    rings: list[Ring] = []
    for r, ring in enumerate(coords):
        if not isinstance(ring, list | tuple):
            raise ConfigError(f"{path}[{r}]: expected a list of positions")
        positions: list[tuple[float, float]] = []
        for i, pos in enumerate(ring):
            if not isinstance(pos, list | tuple) or len(pos) < 2:
                raise ConfigError(f"{path}[{r}][{i}]: expected [lon, lat], got {pos!r}")
            lon, lat = pos[0], pos[1]
            if isinstance(lon, bool) or isinstance(lat, bool):
                raise ConfigError(f"{path}[{r}][{i}]: coordinates must be numbers")
            _check_lonlat(f"{path}[{r}][{i}]", lon, lat)
            positions.append((float(lon), float(lat)))
        rings.append(tuple(positions))
    return tuple(rings)


def zone_from_geojson(feature: Mapping[str, Any], *, repair: bool = False) -> Zone:
    """Build a :class:`Zone` from a GeoJSON Feature.

    ``geometry`` is a Polygon or MultiPolygon (lon/lat), or a Point with
    ``properties.radius_m`` for a circle. ``properties``: ``zone_id`` (or the feature's
    ``id``), ``tenant_id`` (required), ``site_id``, ``name``, ``windows`` (list of
    ``{"start": "22:00", "end": "06:00", "weekdays": ["mon", ...]}``, UTC). Raises
    :class:`ConfigError` naming the offending member. ``repair`` applies ``make_valid`` to
    invalid polygons instead of rejecting them.
    """
    if not isinstance(feature, Mapping):
        raise ConfigError(f"zone must be a GeoJSON Feature object, got {type(feature).__name__}")
    if feature.get("type") != "Feature":
        raise ConfigError(f"zone must be a GeoJSON Feature, got type {feature.get('type')!r}")
    props = feature.get("properties") or {}
    if not isinstance(props, Mapping):
        raise ConfigError("properties: expected an object")
    zone_id = _int_prop(props, "zone_id", fallback=feature.get("id"))
    try:
        tenant_id = _int_prop(props, "tenant_id")
        site_id = _int_prop(props, "site_id", default=None)
        name = props.get("name", f"zone {zone_id}")
        if not isinstance(name, str):
            raise ConfigError(f"properties.name: must be a string, got {name!r}")
        geometry = feature.get("geometry")
        if not isinstance(geometry, Mapping):
            raise ConfigError("geometry: required (Polygon, MultiPolygon, or Point with radius_m)")
        gtype = geometry.get("type")
        coords = geometry.get("coordinates")
        shape: Shape
        if gtype == "Polygon":
            shape = PolygonShape((_polygon_coords("geometry.coordinates", coords),), repair)
        elif gtype == "MultiPolygon":
            if not isinstance(coords, list | tuple) or not coords:
                raise ConfigError("geometry.coordinates: expected a non-empty list of polygons")
            shape = PolygonShape(
                tuple(
                    _polygon_coords(f"geometry.coordinates[{p}]", poly)
                    for p, poly in enumerate(coords)
                ),
                repair,
            )
        elif gtype == "Point":
            if not isinstance(coords, list | tuple) or len(coords) < 2:
                raise ConfigError("geometry.coordinates: expected [lon, lat]")
            radius = props.get("radius_m")
            if radius is None:
                raise ConfigError("properties.radius_m: required for a Point (circle) zone")
            if isinstance(radius, bool) or not isinstance(radius, int | float):
                raise ConfigError(f"properties.radius_m: must be a number, got {radius!r}")
            _check_lonlat("geometry.coordinates", coords[0], coords[1])
            shape = CircleShape(float(coords[1]), float(coords[0]), float(radius))
        else:
            raise ConfigError(
                f"geometry.type: expected Polygon, MultiPolygon or Point, got {gtype!r}"
            )
        return Zone(zone_id, tenant_id, site_id, name, shape, _parse_windows(props.get("windows")))
    except ConfigError as exc:
        raise ConfigError(f"zone {zone_id}: {exc}") from None


def zone_to_geojson(zone: Zone) -> dict[str, Any]:
    """The GeoJSON Feature for ``zone`` (inverse of :func:`zone_from_geojson`)."""
    props: dict[str, Any] = {
        "zone_id": zone.zone_id,
        "tenant_id": zone.tenant_id,
        "site_id": zone.site_id,
        "name": zone.name,
    }
    if zone.windows:
        props["windows"] = [
            {
                "start": w.start.strftime("%H:%M:%S"),
                "end": w.end.strftime("%H:%M:%S"),
                **({"weekdays": sorted(w.weekdays)} if w.weekdays is not None else {}),
            }
            for w in zone.windows
        ]
    geometry: dict[str, Any]
    if isinstance(zone.shape, CircleShape):
        props["radius_m"] = zone.shape.radius_m
        geometry = {"type": "Point", "coordinates": [zone.shape.lon, zone.shape.lat]}
    else:
        geometry = {
            "type": "MultiPolygon",
            "coordinates": [
                [[list(p) for p in ring] for ring in poly] for poly in zone.shape.polygons
            ],
        }
    return {"type": "Feature", "id": zone.zone_id, "geometry": geometry, "properties": props}
