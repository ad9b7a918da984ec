"""Geodesy helpers on a spherical Earth, vectorised with numpy.

Contracts: angles in the public functions are degrees (WGS84 latitude/longitude), distances
are metres on a sphere of radius :data:`EARTH_RADIUS_M` (great-circle). Functions never
mutate their inputs and accept scalars or numpy arrays (broadcast together).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

EARTH_RADIUS_M = 6_371_008.8
"""Mean Earth radius (IUGG), metres."""

METRES_PER_DEGREE = EARTH_RADIUS_M * math.pi / 180.0
"""Length of one degree of latitude (and of longitude at the equator), metres."""

HALF_CIRCUMFERENCE_M = EARTH_RADIUS_M * math.pi
"""Largest possible great-circle distance, metres."""

FloatArray = NDArray[np.float64]


def wrap_lon(lon: ArrayLike) -> FloatArray:
    """Longitude(s) in degrees wrapped to ``[-180, 180)``."""
    arr = np.asarray(lon, dtype=np.float64)
    return np.asarray((arr + 180.0) % 360.0 - 180.0, dtype=np.float64)


def wrap_rad(angle: ArrayLike) -> FloatArray:
    """Angle(s) in radians wrapped to ``[-pi, pi)``."""
    arr = np.asarray(angle, dtype=np.float64)
    return np.asarray((arr + math.pi) % (2.0 * math.pi) - math.pi, dtype=np.float64)


def haversine_m(lat1: ArrayLike, lon1: ArrayLike, lat2: ArrayLike, lon2: ArrayLike) -> FloatArray:
    """Great-circle distance in metres between points given in degrees (any longitudes)."""
    p1 = np.radians(np.asarray(lat1, dtype=np.float64))
    p2 = np.radians(np.asarray(lat2, dtype=np.float64))
    dp = p2 - p1
    dl = np.radians(np.asarray(lon2, dtype=np.float64) - np.asarray(lon1, dtype=np.float64))
    h = np.sin(dp * 0.5) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl * 0.5) ** 2
    return np.asarray(
        2.0 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0))), dtype=np.float64
    )


def azimuthal_equidistant(
    lat0: ArrayLike, lon0: ArrayLike, lat: ArrayLike, lon: ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Project points onto the azimuthal equidistant plane centred on ``(lat0, lon0)``.

    Returns ``(x, y, c)``: east and north coordinates in metres and the angular distance ``c``
    (radians) from the centre. Distances from the centre are exact (``hypot(x, y) == R * c``);
    the plane is well-behaved for ``c < pi / 2`` and degenerate at the antipode.
    """
    p0 = np.radians(np.asarray(lat0, dtype=np.float64))
    p = np.radians(np.asarray(lat, dtype=np.float64))
    dl = np.radians(np.asarray(lon, dtype=np.float64) - np.asarray(lon0, dtype=np.float64))
    cos_p = np.cos(p)
    sin_p0 = np.sin(p0)
    cos_p0 = np.cos(p0)
    xe = cos_p * np.sin(dl)
    yn = cos_p0 * np.sin(p) - sin_p0 * cos_p * np.cos(dl)
    sin_c = np.hypot(xe, yn)
    cos_c = sin_p0 * np.sin(p) + cos_p0 * cos_p * np.cos(dl)
    c = np.arctan2(sin_c, cos_c)
    with np.errstate(invalid="ignore", divide="ignore"):
        k = np.where(sin_c > 1e-300, EARTH_RADIUS_M * c / sin_c, EARTH_RADIUS_M)
    return (
        np.asarray(xe * k, dtype=np.float64),
        np.asarray(yn * k, dtype=np.float64),
        np.asarray(c, dtype=np.float64),
    )


def cap_bounds(lat: float, lon: float, radius_m: float) -> tuple[float, float, float, float]:
    """Bounding box ``(min_lon, min_lat, max_lon, max_lat)`` of a spherical cap, degrees.

    Longitudes may extend beyond ±180 when the cap crosses the antimeridian; a cap that
    contains a pole spans all longitudes ``[-180, 180]`` and reaches that pole.
    """
    d = radius_m / EARTH_RADIUS_M
    if d >= math.pi:
        return (-180.0, -90.0, 180.0, 90.0)
    phi = math.radians(lat)
    lat_lo = phi - d
    lat_hi = phi + d
    if lat_hi >= math.pi / 2 or lat_lo <= -math.pi / 2:
        return (
            -180.0,
            max(math.degrees(lat_lo), -90.0),
            180.0,
            min(math.degrees(lat_hi), 90.0),
        )
    dlon = math.asin(min(1.0, math.sin(d) / math.cos(phi)))
    return (
        lon - math.degrees(dlon),
        math.degrees(lat_lo),
        lon + math.degrees(dlon),
        math.degrees(lat_hi),
    )


def densify_ring(coords: NDArray[np.float64], max_step_deg: float) -> NDArray[np.float64]:
    """Insert points along a ``(n, 2)`` lon/lat ring so no step exceeds ``max_step_deg``.

    Edges are straight lines in the lon/lat plane (GeoJSON, RFC 7946); the result contains
    the original vertices and is closed if the input was.
    """
    if len(coords) < 2:
        return coords.copy()
    start = coords[:-1]
    delta = coords[1:] - start
    steps = np.maximum(1, np.ceil(np.max(np.abs(delta), axis=1) / max_step_deg)).astype(np.int64)
    if int(steps.max()) == 1:
        return coords.copy()
    seg = np.repeat(np.arange(len(start)), steps)
    offsets = np.cumsum(steps) - steps
    frac = (np.arange(int(steps.sum())) - offsets[seg]) / steps[seg]
    out = start[seg] + delta[seg] * frac[:, None]
    return np.vstack([out, coords[-1:]])


def segment_distance_m(
    lat: FloatArray,
    lon: FloatArray,
    lat0: FloatArray,
    lon0: FloatArray,
    lat1: FloatArray,
    lon1: FloatArray,
    iterations: int = 60,
) -> FloatArray:
    """Great-circle metres from points to lon/lat-straight segments (degrees, element-wise).

    The segment is the straight line from ``(lon0, lat0)`` to ``(lon1, lat1)`` in the lon/lat
    plane (RFC 7946 edges). Minimises the haversine distance along it by ternary search, so it
    assumes the distance is unimodal along the segment: true for short segments (a fraction of
    a degree), which is how callers use it.
    """
    lo = np.zeros(np.broadcast(lat, lat0).shape)
    hi = np.ones_like(lo)
    dlat = lat1 - lat0
    dlon = lon1 - lon0
    for _ in range(iterations):
        m1 = lo + (hi - lo) / 3.0
        m2 = hi - (hi - lo) / 3.0
        d1 = haversine_m(lat, lon, lat0 + m1 * dlat, lon0 + m1 * dlon)
        d2 = haversine_m(lat, lon, lat0 + m2 * dlat, lon0 + m2 * dlon)
        closer = d1 < d2
        hi = np.where(closer, m2, hi)
        lo = np.where(closer, lo, m1)
    t = 0.5 * (lo + hi)
    best = haversine_m(lat, lon, lat0 + t * dlat, lon0 + t * dlon)
    ends = np.minimum(haversine_m(lat, lon, lat0, lon0), haversine_m(lat, lon, lat1, lon1))
    return np.asarray(np.minimum(best, ends), dtype=np.float64)
