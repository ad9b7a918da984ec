"""ZoneIndex: agreement with a brute-force reference, tenancy, windows, in-place updates."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, time
from typing import Any

import numpy as np
import pytest
import shapely
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from operators import geofence_index
from operators.errors import ConfigError
from operators.geo import METRES_PER_DEGREE, haversine_m
from operators.geofence import (
    CircleShape,
    Classification,
    PolygonShape,
    TimeWindow,
    Zone,
    zone_from_geojson,
)
from operators.geofence_index import Fix, FixBatch, ZoneIndex, ZoneIndexConfig

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)

# -- brute-force reference (independent of the index: no splitting, no projections) -------


@dataclass(frozen=True)
class RefZone:
    """A zone as the test generated it: unwrapped rings (lon may exceed ±180) or a circle."""

    zone: Zone
    rings: tuple[np.ndarray, ...] = ()
    circle: tuple[float, float, float] | None = None  # lat, lon, radius_m

    def covers(self, lat: float, lon: float) -> bool:
        if self.circle is not None:
            clat, clon, radius = self.circle
            return bool(haversine_m(clat, clon, lat, lon) <= radius)
        poly = shapely.Polygon(self.rings[0], self.rings[1:])
        return any(shapely.intersects_xy(poly, lon + k * 360.0, lat) for k in (-2, -1, 0, 1, 2))

    def boundary_distance(self, lat: float, lon: float) -> float:
        """Great-circle metres to the boundary: dense sampling of each lon/lat-straight edge,
        then golden-section refinement around the best samples."""
        if self.circle is not None:
            clat, clon, radius = self.circle
            return abs(radius - float(haversine_m(clat, clon, lat, lon)))
        best = math.inf
        for ring in self.rings:
            p0, p1 = ring[:-1], ring[1:]
            t = np.linspace(0.0, 1.0, 257)
            pts = p0[:, None, :] + (p1 - p0)[:, None, :] * t[None, :, None]
            d = haversine_m(lat, lon, pts[..., 1], pts[..., 0])
            for e in np.argsort(d.min(axis=1))[:3]:
                k = int(np.argmin(d[e]))
                lo, hi = t[max(k - 1, 0)], t[min(k + 1, 256)]
                for _ in range(60):
                    m1 = lo + (hi - lo) * 0.382
                    m2 = lo + (hi - lo) * 0.618
                    q1 = p0[e] + (p1[e] - p0[e]) * m1
                    q2 = p0[e] + (p1[e] - p0[e]) * m2
                    if haversine_m(lat, lon, q1[1], q1[0]) < haversine_m(lat, lon, q2[1], q2[0]):
                        hi = m2
                    else:
                        lo = m1
                q = p0[e] + (p1[e] - p0[e]) * (0.5 * (lo + hi))
                best = min(best, float(haversine_m(lat, lon, q[1], q[0])), float(d[e].min()))
        return best

    def signed(self, lat: float, lon: float) -> float:
        d = self.boundary_distance(lat, lon)
        return d if self.covers(lat, lon) else -d


def tolerance(distance_m: float) -> float:
    """Allowed disagreement in metres (the reference itself is good to well under this)."""
    return 0.05 + 2e-4 * abs(distance_m)


def polygon_ref(
    zone_id: int,
    tenant: int,
    lat: float,
    lon: float,
    radius_m: float,
    n: int,
    jitter: list[float],
    wrap: bool,
) -> RefZone:
    """A star-shaped (hence simple) polygon around (lat, lon); ``wrap`` writes longitudes
    wrapped to ±180 so a ring crossing the antimeridian jumps across it."""
    angles = (np.arange(n) + np.array(jitter[:n]) * 0.4) * (2.0 * math.pi / n)
    radii = radius_m * (0.6 + 0.4 * np.abs(np.array(jitter[n : 2 * n])))
    dlat = radii * np.sin(angles) / METRES_PER_DEGREE
    dlon = radii * np.cos(angles) / (METRES_PER_DEGREE * math.cos(math.radians(lat)))
    ring = np.column_stack([lon + dlon, lat + dlat])
    ring = np.vstack([ring, ring[:1]])
    coords = ring.copy()
    if wrap:
        coords[:, 0] = (coords[:, 0] + 180.0) % 360.0 - 180.0
    feature = {
        "type": "Feature",
        "properties": {"zone_id": zone_id, "tenant_id": tenant},
        "geometry": {"type": "Polygon", "coordinates": [coords.tolist()]},
    }
    return RefZone(zone_from_geojson(feature), rings=(ring,))


def circle_ref(zone_id: int, tenant: int, lat: float, lon: float, radius_m: float) -> RefZone:
    zone = Zone(zone_id, tenant, None, f"c{zone_id}", CircleShape(lat, lon, radius_m))
    return RefZone(zone, circle=(lat, lon, radius_m))


SIZES = {
    "tiny": (3.0, 20.0),
    "site": (50.0, 500.0),
    "big": (5_000.0, 50_000.0),
    "huge": (500_000.0, 2_500_000.0),
}


@st.composite
def ref_zones(draw: st.DrawFn, zone_id: int, near_pole: bool = False) -> RefZone:
    size = draw(st.sampled_from(sorted(SIZES)))
    lo, hi = SIZES[size]
    radius = draw(st.floats(lo, hi))
    margin = radius / METRES_PER_DEGREE + 0.01
    lat_limit = 89.9 - margin
    assume(lat_limit > 0.5)
    if near_pole:
        lat = draw(st.floats(max(lat_limit - 3.0, 0.0), lat_limit))
        lat = lat if draw(st.booleans()) else -lat
    else:
        lat = draw(st.floats(-min(lat_limit, 80.0), min(lat_limit, 80.0)))
    # bias longitudes towards the antimeridian
    lon = draw(st.one_of(st.floats(-180.0, 180.0), st.floats(175.0, 185.0)))
    assume(radius / (METRES_PER_DEGREE * math.cos(math.radians(lat))) < 150.0)
    if draw(st.booleans()):
        return circle_ref(zone_id, 1, lat, (lon + 180.0) % 360.0 - 180.0, radius)
    n = draw(st.integers(4, 12))
    jitter = draw(st.lists(st.floats(-1.0, 1.0), min_size=2 * n, max_size=2 * n))
    return polygon_ref(zone_id, 1, lat, lon, radius, n, jitter, draw(st.booleans()))


@st.composite
def points_near(draw: st.DrawFn, refs: list[RefZone], count: int) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for _ in range(count):
        kind = draw(st.sampled_from(["near", "near", "near", "anywhere", "pole"]))
        if kind == "anywhere":
            out.append((draw(st.floats(-90.0, 90.0)), draw(st.floats(-180.0, 180.0))))
            continue
        if kind == "pole":
            lat = draw(st.floats(88.0, 90.0))
            out.append((lat if draw(st.booleans()) else -lat, draw(st.floats(-180.0, 180.0))))
            continue
        ref = draw(st.sampled_from(refs))
        if ref.circle is not None:
            clat, clon, radius = ref.circle
        else:
            ring = ref.rings[0]
            clat, clon = float(ring[:, 1].mean()), float(ring[:, 0].mean())
            radius = float(haversine_m(clat, clon, ring[:, 1], ring[:, 0]).max())
        dist = draw(st.floats(0.0, 2.0)) * radius
        bearing = draw(st.floats(0.0, 2.0 * math.pi))
        lat = clat + dist * math.cos(bearing) / METRES_PER_DEGREE
        lat = max(-90.0, min(90.0, lat))
        coslat = max(math.cos(math.radians(lat)), 1e-6)
        lon = clon + dist * math.sin(bearing) / (METRES_PER_DEGREE * coslat)
        out.append((lat, (lon + 180.0) % 360.0 - 180.0))
    return out


def batch_of(
    points: list[tuple[float, float]], zone_ids: set[int], accuracy: float = 5.0
) -> FixBatch:
    n = len(points)
    return FixBatch(
        tenant_id=np.ones(n, dtype=np.int64),
        lat=np.array([p[0] for p in points]),
        lon=np.array([p[1] for p in points]),
        accuracy_m=np.full(n, accuracy),
        time_s=np.full(n, T0.timestamp()),
        approved=np.zeros(n, dtype=np.int64),
        approved_sets=(frozenset(zone_ids),),
    )


def check_against_reference(
    index: ZoneIndex, refs: list[RefZone], points: list[tuple[float, float]]
) -> None:
    ids = {r.zone.zone_id for r in refs}
    result = index.query(batch_of(points, ids))
    for i, (lat, lon) in enumerate(points):
        expected = {r.zone.zone_id: r.signed(lat, lon) for r in refs}
        got = dict(result.result(i).zones)
        for zone_id, want in expected.items():
            tol = tolerance(want)
            if zone_id in got:
                assert got[zone_id] == pytest.approx(want, abs=tol), (zone_id, lat, lon)
            else:  # only zones farther than the accuracy may be left out
                assert want < -5.0 + tol, (zone_id, lat, lon, want)
            if abs(want) > tol:
                covered = zone_id in got and got[zone_id] >= 0.0
                assert covered is (want > 0.0), (zone_id, lat, lon, want)
        best = max(expected.values())
        assert result.distance_m[i] == pytest.approx(best, abs=tolerance(best))
        chosen = int(result.zone_id[i])
        assert expected[chosen] == pytest.approx(best, abs=2 * tolerance(best))


# -- property tests -----------------------------------------------------------------------


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_index_agrees_with_brute_force(data: st.DataObject) -> None:
    count = data.draw(st.integers(1, 4))
    refs = [data.draw(ref_zones(zone_id)) for zone_id in range(1, count + 1)]
    points = data.draw(points_near(refs, 12))
    check_against_reference(ZoneIndexConfig().build(r.zone for r in refs), refs, points)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_index_agrees_with_brute_force_near_the_poles(data: st.DataObject) -> None:
    count = data.draw(st.integers(1, 3))
    refs = [data.draw(ref_zones(zone_id, near_pole=True)) for zone_id in range(1, count + 1)]
    points = data.draw(points_near(refs, 10))
    check_against_reference(ZoneIndexConfig().build(r.zone for r in refs), refs, points)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_rtree_path_agrees_with_brute_force(data: st.DataObject) -> None:
    """Approved sets above ``tree_min_approved`` go through the R-tree (bulk + delta)."""
    count = data.draw(st.integers(1, 5))
    refs = [data.draw(ref_zones(zone_id)) for zone_id in range(1, count + 1)]
    points = data.draw(points_near(refs, 10))
    config = ZoneIndexConfig(tree_min_approved=0, compact_threshold=2)
    index = config.build(r.zone for r in refs[: count // 2])
    for ref in refs[count // 2 :]:  # some zones arrive as upserts: exercise the delta
        index.upsert(ref.zone)
    check_against_reference(index, refs, points)


@settings(max_examples=40, deadline=None)
@given(
    lat=st.floats(-60.0, 60.0),
    lon=st.floats(-180.0, 180.0),
    side=st.floats(20.0, 400.0),
    offsets=st.lists(
        st.tuples(st.floats(-3.0, 3.0), st.floats(-3.0, 3.0)), min_size=1, max_size=20
    ),
)
def test_local_and_azimuthal_paths_agree(
    lat: float, lon: float, side: float, offsets: list[tuple[float, float]]
) -> None:
    """The fast local-plane path and the general azimuthal path give the same answers."""
    ref = polygon_ref(1, 1, lat, lon, side, 6, [0.1, -0.2, 0.3, 0.0, 0.2, -0.1] * 2, False)
    fast = ZoneIndexConfig().build([ref.zone])
    slow = ZoneIndexConfig(local_max_extent_m=1e-3).build([ref.zone])
    points = [
        (lat + dy * side / METRES_PER_DEGREE, lon + dx * side / METRES_PER_DEGREE)
        for dx, dy in offsets
    ]
    points = [(p[0], (p[1] + 180.0) % 360.0 - 180.0) for p in points]
    a = fast.query(batch_of(points, {1}))
    b = slow.query(batch_of(points, {1}))
    np.testing.assert_allclose(a.distance_m, b.distance_m, atol=0.02, rtol=1e-4)
    assert (np.sign(a.distance_m) == np.sign(b.distance_m)).all()


# -- worked examples ----------------------------------------------------------------------


def square(zone_id: int, tenant: int, lat: float, lon: float, side_m: float, **kw: Any) -> Zone:
    h = side_m / 2 / METRES_PER_DEGREE
    w = h / math.cos(math.radians(lat))
    ring = ((lon - w, lat - h), (lon + w, lat - h), (lon + w, lat + h), (lon - w, lat + h))
    return Zone(
        zone_id,
        tenant,
        kw.get("site_id"),
        f"sq{zone_id}",
        PolygonShape(((ring + ring[:1],),)),
        kw.get("windows", ()),
    )


def east_of(lat: float, lon: float, metres: float) -> tuple[float, float]:
    return lat, lon + metres / (METRES_PER_DEGREE * math.cos(math.radians(lat)))


def fix(
    lat: float,
    lon: float,
    approved: set[int],
    *,
    tenant: int = 1,
    accuracy: float = 10.0,
    when: datetime = T0,
) -> Fix:
    return Fix(tenant, lat, lon, accuracy, when, frozenset(approved))


LAT, LON = 12.9716, 77.5946


@pytest.mark.parametrize(
    ("offset_m", "accuracy", "expected", "distance"),
    [
        (0.0, 10.0, Classification.INSIDE, 100.0),  # centre of a 200 m square
        (85.0, 10.0, Classification.INSIDE, 15.0),
        (89.9, 10.0, Classification.INSIDE, 10.1),
        (95.0, 10.0, Classification.UNCERTAIN, 5.0),
        (100.0, 10.0, Classification.UNCERTAIN, 0.0),
        (105.0, 10.0, Classification.UNCERTAIN, -5.0),
        (111.0, 10.0, Classification.OUTSIDE, -11.0),
        (300.0, 10.0, Classification.OUTSIDE, -200.0),
        (95.0, 0.0, Classification.INSIDE, 5.0),
        (105.0, 0.0, Classification.OUTSIDE, -5.0),
        (0.0, 150.0, Classification.UNCERTAIN, 100.0),  # the zone is smaller than the error
    ],
)
def test_classification_through_the_index(
    offset_m: float, accuracy: float, expected: Classification, distance: float
) -> None:
    index = ZoneIndexConfig().build([square(1, 1, LAT, LON, 200.0)])
    result = index.query_one(fix(*east_of(LAT, LON, offset_m), {1}, accuracy=accuracy))
    assert result.classification is expected
    assert result.zone_id == 1
    assert result.distance_m == pytest.approx(distance, abs=0.01)


def test_deepest_containing_zone_wins_and_nearest_when_outside() -> None:
    inner = square(1, 1, LAT, LON, 100.0)
    outer = square(2, 1, LAT, LON, 1000.0)
    far = square(3, 1, LAT + 0.05, LON, 100.0)
    index = ZoneIndexConfig().build([inner, outer, far])
    inside = index.query_one(fix(LAT, LON, {1, 2, 3}))
    assert inside.zone_id == 2 and inside.distance_m == pytest.approx(500.0, abs=0.05)
    assert set(inside.containing) == {1, 2}
    outside = index.query_one(fix(*east_of(LAT, LON, 700.0), {1, 3}))
    assert outside.zone_id == 1
    assert outside.distance_m == pytest.approx(-650.0, abs=0.05)
    assert outside.classification is Classification.OUTSIDE


def test_fix_only_matches_its_own_tenants_approved_zones() -> None:
    index = ZoneIndexConfig().build([square(1, 1, LAT, LON, 200.0), square(2, 2, LAT, LON, 200.0)])
    fixes = [
        fix(LAT, LON, {1, 2}, tenant=1),
        fix(LAT, LON, {1, 2}, tenant=2),
        fix(LAT, LON, {2}, tenant=1),  # approved for another tenant's zone: not a match
        fix(LAT, LON, set(), tenant=1),
        fix(LAT, LON, {99}, tenant=1),  # unknown zone id: ignored
    ]
    result = index.query(FixBatch.of(fixes))
    assert [result.containing(i) for i in range(5)] == [(1,), (2,), (), (), ()]
    assert result.result(2).zone_id is None
    assert result.result(2).distance_m == -math.inf
    assert result.result(2).classification is Classification.OUTSIDE


def test_tree_path_is_tenant_scoped_too() -> None:
    zones = [square(i, 1 + i % 2, LAT + 0.01 * i, LON, 200.0) for i in range(1, 41)]
    index = ZoneIndexConfig(tree_min_approved=4).build(zones)
    approved = set(range(1, 41))
    r1 = index.query_one(fix(LAT + 0.02, LON, approved, tenant=1))  # zone 2 is tenant 1
    r2 = index.query_one(fix(LAT + 0.02, LON, approved, tenant=2))
    assert r1.containing == (2,)
    assert r2.containing == ()
    assert r2.zone_id in (1, 3) and r2.distance_m == pytest.approx(-1011.9, abs=1.0)


def test_time_windows_night_only_zone() -> None:
    night = TimeWindow(time(22, 0), time(6, 0))
    index = ZoneIndexConfig().build([square(1, 1, LAT, LON, 200.0, windows=(night,))])

    def at(hh: int, mm: int = 0, ss: int = 0) -> datetime:
        return datetime(2026, 6, 1, hh, mm, ss, tzinfo=UTC)

    expectations = [
        (at(21, 59, 59), Classification.OUTSIDE),
        (at(22, 0), Classification.INSIDE),
        (at(23, 30), Classification.INSIDE),
        (at(3, 0), Classification.INSIDE),
        (at(5, 59, 59), Classification.INSIDE),
        (at(6, 0), Classification.OUTSIDE),
        (at(12, 0), Classification.OUTSIDE),
    ]
    fixes = [fix(LAT, LON, {1}, when=when) for when, _ in expectations]
    result = index.query(FixBatch.of(fixes))
    for i, (when, expected) in enumerate(expectations):
        assert result.result(i).classification is expected, when
    assert result.result(0).zone_id is None  # no approved zone active at 21:59:59


def test_upsert_and_remove_take_effect_immediately() -> None:
    index = ZoneIndexConfig(compact_threshold=3).build([square(1, 1, LAT, LON, 200.0)])
    probe = fix(*east_of(LAT, LON, 300.0), {1})
    assert index.query_one(probe).classification is Classification.OUTSIDE
    index.upsert(square(1, 1, LAT, LON, 1000.0))  # grow the zone
    grown = index.query_one(probe)
    assert grown.classification is Classification.INSIDE
    assert grown.distance_m == pytest.approx(200.0, abs=0.05)
    index.upsert(square(1, 2, LAT, LON, 1000.0))  # moved to another tenant
    assert index.query_one(probe).zone_id is None
    index.upsert(square(1, 1, LAT, LON, 1000.0))
    assert index.remove(1) is True
    assert index.remove(1) is False
    assert 1 not in index and len(index) == 0
    assert index.query_one(probe).zone_id is None


def test_many_upserts_compact_and_stay_correct() -> None:
    config = ZoneIndexConfig(compact_threshold=5, tree_min_approved=2)
    index = config.build()
    rng = np.random.default_rng(7)
    truth: dict[int, Zone] = {}
    for step in range(60):
        zone_id = int(rng.integers(1, 15))
        if rng.random() < 0.25 and zone_id in truth:
            index.remove(zone_id)
            del truth[zone_id]
        else:
            zone = square(zone_id, 1, LAT + rng.uniform(-0.01, 0.01), LON, 300.0)
            index.upsert(zone)
            truth[zone_id] = zone
        lat = LAT + rng.uniform(-0.012, 0.012)
        for approved in (set(range(1, 15)), {zone_id}):
            got = index.query_one(fix(lat, LON, approved))
            want = tuple(
                sorted(
                    z
                    for z, zone in truth.items()
                    if z in approved
                    and isinstance(zone.shape, PolygonShape)
                    and shapely.intersects_xy(zone.shape.geometry, LON, lat)
                )
            )
            assert tuple(sorted(got.containing)) == want, step
    assert sorted(z.zone_id for z in index.zones()) == sorted(truth)


def test_large_batches_are_chunked_consistently(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(geofence_index, "_QUERY_CHUNK", 4096)
    zones = [square(i, 1, LAT + 0.003 * i, LON, 200.0) for i in range(30)]
    index = ZoneIndexConfig().build(zones)
    rng = np.random.default_rng(3)
    n = 20_000
    site = rng.integers(0, 30, n)
    batch = FixBatch(
        tenant_id=np.ones(n, dtype=np.int64),
        lat=LAT + 0.003 * site + rng.normal(0, 80, n) / METRES_PER_DEGREE,
        lon=np.full(n, LON) + rng.normal(0, 80, n) / METRES_PER_DEGREE,
        accuracy_m=rng.uniform(3, 20, n),
        time_s=np.full(n, T0.timestamp()),
        approved=site,
        approved_sets=tuple(frozenset({i}) for i in range(30)),
    )
    whole = index.query(batch)
    for i in rng.integers(0, n, 200).tolist():
        single = index.query_one(
            Fix(
                1,
                float(batch.lat[i]),
                float(batch.lon[i]),
                float(batch.accuracy_m[i]),
                T0,
                batch.approved_sets[int(site[i])],
            )
        )
        assert whole.result(i) == single


def test_batch_validation() -> None:
    with pytest.raises(ValueError, match="latitudes"):
        FixBatch.of([fix(91.0, 0.0, {1})])
    with pytest.raises(ValueError, match="accuracies"):
        FixBatch.of([fix(0.0, 0.0, {1}, accuracy=-1.0)])
    with pytest.raises(ValueError, match="timezone-aware"):
        FixBatch.of([Fix(1, 0.0, 0.0, 1.0, datetime(2026, 1, 1), frozenset())])
    wrapped = FixBatch.of([fix(0.0, 190.0, {1})])
    assert wrapped.lon[0] == pytest.approx(-170.0)
    empty = ZoneIndexConfig().build().query(FixBatch.of([]))
    assert len(empty) == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"compact_threshold": 0}, "compact_threshold"),
        ({"tree_min_approved": -1}, "tree_min_approved"),
        ({"local_max_extent_m": 0.0}, "local_max_extent_m"),
        ({"local_max_abs_lat": 85.0}, "local_max_abs_lat"),
        ({"densify_deg": 0.0}, "densify_deg"),
    ],
)
def test_index_config_validates(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ZoneIndexConfig(**kwargs)
