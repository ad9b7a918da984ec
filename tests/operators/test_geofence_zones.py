"""Zone model: GeoJSON validation, antimeridian handling, time windows, classification rule."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, time
from typing import Any

import numpy as np
import pytest
import shapely

from operators.errors import ConfigError
from operators.geofence import (
    CircleShape,
    Classification,
    PolygonShape,
    TimeWindow,
    Zone,
    classify,
    classify_array,
    zone_from_geojson,
    zone_to_geojson,
)


def feature(coords: Any, gtype: str = "Polygon", **props: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"zone_id": 1, "tenant_id": 10, "site_id": 5, "name": "gate"}
    base.update(props)
    return {
        "type": "Feature",
        "geometry": {"type": gtype, "coordinates": coords},
        "properties": base,
    }


SQUARE = [[[77.59, 12.97], [77.60, 12.97], [77.60, 12.98], [77.59, 12.98], [77.59, 12.97]]]


def test_polygon_feature_builds_zone() -> None:
    zone = zone_from_geojson(feature(SQUARE))
    assert (zone.zone_id, zone.tenant_id, zone.site_id, zone.name) == (1, 10, 5, "gate")
    assert isinstance(zone.shape, PolygonShape)
    assert zone.shape.geometry.geom_type == "Polygon"
    assert zone.windows == ()


def test_feature_id_is_used_when_properties_lack_zone_id() -> None:
    f = feature(SQUARE)
    del f["properties"]["zone_id"]
    f["id"] = 42
    assert zone_from_geojson(f).zone_id == 42


def test_circle_feature() -> None:
    zone = zone_from_geojson(feature([77.59, 12.97], "Point", radius_m=150))
    assert zone.shape == CircleShape(12.97, 77.59, 150.0)


def test_geojson_round_trip() -> None:
    f = feature(
        SQUARE,
        windows=[{"start": "22:00", "end": "06:00", "weekdays": ["fri", "sat"]}],
    )
    zone = zone_from_geojson(f)
    again = zone_from_geojson(zone_to_geojson(zone))
    assert again == zone
    circle = zone_from_geojson(feature([1.0, 2.0], "Point", radius_m=10))
    assert zone_from_geojson(zone_to_geojson(circle)) == circle


def _bad(path: list[Any], value: Any) -> dict[str, Any]:
    f = feature(copy.deepcopy(SQUARE))
    target: Any = f
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return f


@pytest.mark.parametrize(
    ("f", "message"),
    [
        (_bad(["geometry", "coordinates", 0, 4], [77.591, 12.97]), "not closed"),
        (_bad(["geometry", "coordinates", 0, 1], [77.60, 95.0]), "latitude 95.0 out of range"),
        (_bad(["geometry", "coordinates", 0, 1], [400.0, 12.0]), "longitude 400.0 out of range"),
        (_bad(["geometry", "coordinates", 0, 1], [float("nan"), 12.0]), "finite"),
        (_bad(["geometry", "coordinates", 0, 1], ["a", 12.0]), "numbers"),
        (_bad(["geometry", "coordinates", 0], [[0, 0], [1, 1], [0, 0]]), "at least 4 positions"),
        (
            _bad(["geometry", "coordinates", 0], [[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]),
            "Self-intersection",
        ),
        (_bad(["geometry", "type"], "LineString"), "expected Polygon, MultiPolygon or Point"),
        (_bad(["properties", "tenant_id"], None), "tenant_id: required"),
        (_bad(["properties", "tenant_id"], "10"), "tenant_id: must be an integer"),
        (_bad(["properties", "windows"], [{"start": "25:00", "end": "06:00"}]), "windows[0]"),
        (_bad(["properties", "windows"], [{"start": "06:00", "end": "06:00"}]), "start equals"),
        (
            _bad(["properties", "windows"], [{"start": "1:00", "end": "2:00", "weekdays": [9]}]),
            "weekday",
        ),
        (feature([1.0, 2.0], "Point"), "radius_m: required"),
        (feature([1.0, 2.0], "Point", radius_m=0), "radius must be > 0"),
        (feature([1.0, 2.0], "Point", radius_m=-5), "radius must be > 0"),
        (feature([1.0, 2.0], "Point", radius_m=2e7), "exceeds the maximum"),
        (feature([1.0, 95.0], "Point", radius_m=10), "latitude"),
        (
            feature([[[-170, 80], [-50, 80], [70, 80], [-170, 80]]]),
            "winds around a pole",
        ),
    ],
)
def test_invalid_features_are_rejected_with_a_clear_message(
    f: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        zone_from_geojson(f)
    assert message in str(info.value)
    assert str(info.value).startswith("zone 1: ")


def test_not_a_feature() -> None:
    with pytest.raises(ConfigError, match="GeoJSON Feature"):
        zone_from_geojson({"type": "Polygon", "coordinates": SQUARE})


def test_self_intersection_can_be_repaired() -> None:
    bowtie = [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]
    zone = zone_from_geojson(feature(bowtie), repair=True)
    assert isinstance(zone.shape, PolygonShape)
    assert zone.shape.geometry.is_valid
    assert zone.shape.geometry.area == pytest.approx(0.5)


@pytest.mark.parametrize(
    "ring",
    [
        # longitudes beyond 180
        [[170.0, -10.0], [190.0, -10.0], [190.0, 10.0], [170.0, 10.0], [170.0, -10.0]],
        # ring that jumps across the antimeridian
        [[170.0, -10.0], [-170.0, -10.0], [-170.0, 10.0], [170.0, 10.0], [170.0, -10.0]],
        # same, given west of -180
        [[-190.0, -10.0], [-170.0, -10.0], [-170.0, 10.0], [-190.0, 10.0], [-190.0, -10.0]],
    ],
)
def test_antimeridian_zones_are_split(ring: list[list[float]]) -> None:
    zone = zone_from_geojson(feature([ring]))
    assert isinstance(zone.shape, PolygonShape)
    geom = zone.shape.geometry
    minx, _, maxx, _ = geom.bounds
    assert minx >= -180.0 and maxx <= 180.0
    assert geom.area == pytest.approx(400.0)  # 20 x 20 degrees, not 340 x 20
    assert shapely.intersects_xy(geom, 179.5, 0.0)
    assert shapely.intersects_xy(geom, -179.5, 0.0)
    assert not shapely.intersects_xy(geom, 0.0, 0.0)
    # the real boundary excludes the cut at ±180
    (real,) = zone.shape.rings
    assert np.ptp(real[:, 0]) == pytest.approx(20.0)


def test_polar_band_along_antimeridian_is_accepted() -> None:
    cap = [[[-180, 80], [180, 80], [180, 90], [-180, 90], [-180, 80]]]
    zone = zone_from_geojson(feature(cap))
    assert isinstance(zone.shape, PolygonShape)
    assert shapely.intersects_xy(zone.shape.geometry, 45.0, 85.0)


def test_hole_in_antimeridian_polygon() -> None:
    shell = [[170.0, -10.0], [-170.0, -10.0], [-170.0, 10.0], [170.0, 10.0], [170.0, -10.0]]
    hole = [[-179.0, -1.0], [-179.0, 1.0], [179.0, 1.0], [179.0, -1.0], [-179.0, -1.0]]
    zone = zone_from_geojson(feature([shell, hole]))
    assert isinstance(zone.shape, PolygonShape)
    geom = zone.shape.geometry
    assert not shapely.intersects_xy(geom, 179.9, 0.0)
    assert not shapely.intersects_xy(geom, -179.9, 0.0)
    assert shapely.intersects_xy(geom, 179.9, 5.0)


def test_multipolygon_overlap_is_rejected() -> None:
    a = [[[0, 0], [2, 0], [2, 2], [0, 2], [0, 0]]]
    b = [[[1, 1], [3, 1], [3, 3], [1, 3], [1, 1]]]
    with pytest.raises(ConfigError, match="multipolygon is invalid"):
        zone_from_geojson(feature([a, b], "MultiPolygon"))
    zone = zone_from_geojson(feature([a, b], "MultiPolygon"), repair=True)
    assert isinstance(zone.shape, PolygonShape)
    assert zone.shape.geometry.area == pytest.approx(7.0)


def test_zone_validates_types() -> None:
    shape = CircleShape(0.0, 0.0, 10.0)
    with pytest.raises(ConfigError, match="zone_id must be an int"):
        Zone("1", 1, None, "x", shape)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="TimeWindow"):
        Zone(1, 1, None, "x", shape, ("22:00",))  # type: ignore[arg-type]


# -- time windows -------------------------------------------------------------------------


def at(day: int, hh: int, mm: int = 0, ss: int = 0) -> datetime:
    """2026-06-01 is a Monday; ``day`` 0 = Monday."""
    return datetime(2026, 6, 1 + day, hh, mm, ss, tzinfo=UTC)


NIGHT = TimeWindow(time(22, 0), time(6, 0))
FRIDAY_NIGHT = TimeWindow(time(22, 0), time(6, 0), frozenset({4}))
DAY = TimeWindow(time(8, 0), time(17, 30))


@pytest.mark.parametrize(
    ("window", "when", "expected"),
    [
        (NIGHT, at(0, 22, 0), True),
        (NIGHT, at(0, 23, 59, 59), True),
        (NIGHT, at(1, 0, 0), True),
        (NIGHT, at(1, 5, 59, 59), True),
        (NIGHT, at(1, 6, 0), False),
        (NIGHT, at(1, 12, 0), False),
        (NIGHT, at(1, 21, 59, 59), False),
        (DAY, at(2, 8, 0), True),
        (DAY, at(2, 17, 29), True),
        (DAY, at(2, 17, 30), False),
        (DAY, at(2, 7, 59), False),
        (FRIDAY_NIGHT, at(4, 23, 0), True),  # Friday evening
        (FRIDAY_NIGHT, at(5, 3, 0), True),  # Saturday early morning: Friday's window
        (FRIDAY_NIGHT, at(4, 3, 0), False),  # Friday early morning: Thursday's window
        (FRIDAY_NIGHT, at(5, 23, 0), False),  # Saturday evening
    ],
)
def test_time_window_contains(window: TimeWindow, when: datetime, expected: bool) -> None:
    assert window.contains(when) is expected
    assert bool(window.mask(np.array([when.timestamp()]))[0]) is expected


def test_zone_without_windows_is_always_active() -> None:
    zone = Zone(1, 1, None, "x", CircleShape(0.0, 0.0, 10.0))
    assert zone.active_at(at(3, 12))
    night = Zone(1, 1, None, "x", CircleShape(0.0, 0.0, 10.0), (NIGHT, DAY))
    assert night.active_at(at(3, 23)) and night.active_at(at(3, 9))
    assert not night.active_at(at(3, 7))
    with pytest.raises(ValueError, match="timezone-aware"):
        night.active_at(datetime(2026, 1, 1))


# -- classification rule ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("distance", "accuracy", "expected"),
    [
        (50.0, 10.0, Classification.INSIDE),
        (10.0, 10.0, Classification.INSIDE),  # exactly r inside
        (9.99, 10.0, Classification.UNCERTAIN),
        (3.0, 10.0, Classification.UNCERTAIN),
        (0.0, 10.0, Classification.UNCERTAIN),
        (-10.0, 10.0, Classification.UNCERTAIN),  # exactly r outside is not "more than r"
        (-10.01, 10.0, Classification.OUTSIDE),
        (-200.0, 10.0, Classification.OUTSIDE),
        (0.0, 0.0, Classification.INSIDE),  # boundary counts as inside (ST_Covers)
        (-0.001, 0.0, Classification.OUTSIDE),
        (float("-inf"), 5.0, Classification.OUTSIDE),  # no approved zone at all
        (1e6, 1e6, Classification.INSIDE),
    ],
)
def test_classification_rule(distance: float, accuracy: float, expected: Classification) -> None:
    assert classify(distance, accuracy) is expected
    code = classify_array(np.array([distance]), np.array([accuracy]))[0]
    assert ["outside", "uncertain", "inside"][code] == expected.value
