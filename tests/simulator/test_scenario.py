"""The simulated estate and its traffic: pure, deterministic, realistic, contract-true."""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from functools import cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.geometry import Point, Polygon

from operators.decode import decode
from operators.enrich import enrich
from operators.records import DeadLetter
from operators.registry import DeviceEntry, GuardEntry, RegistrySnapshot, SiteEntry
from simulator.errors import ScenarioError
from simulator.scenario import (
    MALFORMED_KINDS,
    VALID_KINDS,
    Scenario,
    ScenarioConfig,
    SimMessage,
)
from storage.registry_seed import RegistrySeed, ZoneSeed
from tests.simulator.contract import EXACT_KEYS, decode_object, topic_family, violation

START = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
M_PER_DEG = 111_320.0


@cache
def scenario(**kwargs: object) -> Scenario:
    return ScenarioConfig(**kwargs).build()  # type: ignore[arg-type]


@cache
def traffic(count: int, rate: float = 200.0, **kwargs: object) -> tuple[SimMessage, ...]:
    return tuple(scenario(**kwargs).messages(START, rate, count=count))


# --- determinism ----------------------------------------------------------------------------


def test_same_seed_gives_same_estate_and_traffic() -> None:
    a, b = ScenarioConfig(seed=7).build(), ScenarioConfig(seed=7).build()
    assert a.registry == b.registry
    assert list(a.messages(START, 500, count=3000)) == list(b.messages(START, 500, count=3000))
    # The same scenario object replays its traffic from the beginning on every call.
    assert list(a.messages(START, 500, count=500)) == list(a.messages(START, 500, count=500))


def test_other_seed_gives_other_estate_and_traffic() -> None:
    a, b = ScenarioConfig(seed=1).build(), ScenarioConfig(seed=2).build()
    assert a.registry != b.registry
    assert list(a.messages(START, 200, count=100)) != list(b.messages(START, 200, count=100))


def test_count_duration_and_timestamps() -> None:
    sc = scenario()
    assert len(list(sc.messages(START, 200, duration_s=3))) == 600
    assert len(list(sc.messages(START, 200, duration_s=3, count=10))) == 10
    assert len(list(sc.messages(START, 200, count=0))) == 0
    stamps = []
    for m in sc.messages(START, 50, count=400):
        if m.valid:
            body = decode_object(m.payload)
            assert isinstance(body, dict)
            stamps.append(datetime.fromisoformat(body["timestamp"]))
    assert stamps[0] == START
    assert stamps == sorted(stamps)
    assert stamps[-1] <= START + timedelta(seconds=399 / 50)


# --- the estate -----------------------------------------------------------------------------


def test_registry_shape() -> None:
    reg = scenario().registry
    assert [t.tenant_id for t in reg.tenants] == [1, 2]
    assert [s.site_id for s in reg.sites] == list(range(1, 7))
    assert [z.zone_id for z in reg.zones] == list(range(1, len(reg.zones) + 1))
    assert [g.guard_id for g in reg.guards] == list(range(1, 21))
    sites = {s.site_id: s for s in reg.sites}
    zones = {z.zone_id: z for z in reg.zones}
    for site in reg.sites:
        n = sum(1 for z in reg.zones if z.site_id == site.site_id)
        assert 1 <= n <= 3
    per_site = Counter(g.site_id for g in reg.guards)
    assert max(per_site.values()) - min(per_site.values()) <= 1  # spread over the sites
    for g in reg.guards:
        assert sites[g.site_id].tenant_id == g.tenant_id
        assert g.zone_ids
        for zid in g.zone_ids:
            assert zones[zid].site_id == g.site_id
    devices = {d.device_id: d for d in reg.devices}
    for g in reg.guards:
        d = devices[f"gd-{g.tenant_id}-{g.guard_id}"]
        assert (d.kind, d.guard_id, d.tenant_id) == ("guard_device", g.guard_id, g.tenant_id)
    for site in reg.sites:
        for kind in ("door", "motion", "smoke", "temperature"):
            assert devices[f"sn-{site.site_id}-{kind}-1"].kind == "sensor"
        assert devices[f"pb-{site.site_id}-1"].kind == "panic_button"
    assert {d.kind for d in reg.devices} == {"guard_device", "sensor", "panic_button"}
    assert all(d.reporting_interval_s > 0 for d in reg.devices)
    assert {(r.tenant_id, r.channel) for r in reg.recipients} >= {
        (t, c) for t in (1, 2) for c in ("sms", "email", "push")
    }
    assert all(r.apprise_url.startswith("json://127.0.0.1:") for r in reg.recipients)
    assert len({s.name for s in reg.sites}) == len(reg.sites)
    assert len({z.name for z in reg.zones}) == len(reg.zones)


def _local(zone_site_lat: float, lat: float, lon: float, lat0: float, lon0: float) -> Point:
    k = M_PER_DEG * math.cos(math.radians(zone_site_lat))
    return Point((lon - lon0) * k, (lat - lat0) * M_PER_DEG)


def _shape_m(zone: ZoneSeed, lat0: float, lon0: float) -> Polygon:
    """The zone in metres around (lat0, lon0); circles as buffered points."""
    if zone.ring is not None:
        return Polygon([_local(lat0, la, lo, lat0, lon0).coords[0] for lo, la in zone.ring])
    assert zone.center_lat is not None and zone.center_lon is not None and zone.radius_m
    centre = _local(lat0, zone.center_lat, zone.center_lon, lat0, lon0)
    return centre.buffer(zone.radius_m, quad_segs=64)


@pytest.mark.parametrize("seed", range(1, 6))
def test_zones_are_150_to_400_m_across_and_sometimes_circles(seed: int) -> None:
    reg = scenario(seed=seed).registry
    sites = {s.site_id: s for s in reg.sites}
    for z in reg.zones:
        s = sites[z.site_id]
        shape = _shape_m(z, s.lat, s.lon)
        assert shape.is_valid
        minx, miny, maxx, maxy = shape.bounds
        across = max(maxx - minx, maxy - miny)
        assert 150 <= across <= 420, (z.name, across)
        if z.ring is not None:
            assert shape.exterior.is_ccw  # GeoJSON exterior rings are counter-clockwise
    circles = sum(
        1 for s in range(1, 6) for z in scenario(seed=s).registry.zones if z.radius_m is not None
    )
    assert circles > 0


def test_zones_of_a_site_do_not_overlap() -> None:
    reg = scenario(sites_per_tenant=5).registry
    sites = {s.site_id: s for s in reg.sites}
    for site_id, site in sites.items():
        shapes = [_shape_m(z, site.lat, site.lon) for z in reg.zones if z.site_id == site_id]
        for i, a in enumerate(shapes):
            for b in shapes[i + 1 :]:
                assert not a.intersects(b)


# --- the traffic ----------------------------------------------------------------------------


def test_valid_messages_follow_the_contract() -> None:
    reg = scenario().registry
    msgs = traffic(40_000, 200.0)
    kinds = Counter(m.kind for m in msgs if m.valid)
    assert set(kinds) == set(VALID_KINDS)
    for m in msgs:
        if not m.valid:
            continue
        assert m.kind in VALID_KINDS
        assert violation(m.topic, m.payload, reg) is None, (m.topic, m.payload)
        body = decode_object(m.payload)
        assert isinstance(body, dict)
        family = topic_family(m.topic)
        assert family is not None and family[0] == m.kind
        if m.kind in EXACT_KEYS:
            assert set(body) == EXACT_KEYS[m.kind], m.payload
        assert isinstance(body["message_id"], str) and body["message_id"]
        ts = datetime.fromisoformat(body["timestamp"])
        assert ts.utcoffset() is not None
        if m.kind == "telemetry":
            assert 0 <= body["battery"] <= 100
            assert -110 <= body["signal"] <= -50
            assert 0 < body["temperature"] < 60
        elif m.kind == "gps":
            assert 3 <= body["accuracy"] <= 100
            assert isinstance(body["guard_id"], int) and isinstance(body["client_id"], int)
        elif m.kind == "sensor":
            kind = m.topic.rsplit("/", 1)[1]
            allowed = {
                "door": {"open", "closed"},
                "motion": {"motion", "clear"},
                "smoke": {"alarm", "clear"},
                "temperature": {"normal"},
            }[kind]
            assert body["state"] in allowed
            if kind == "smoke":
                assert (body["value"] == 1) == (body["state"] == "alarm")
        elif m.kind == "alert":
            assert m.topic.startswith("alert/panic/")
            assert body["alert_type"] == "panic" and body["severity"] == "critical"
            assert set(body["location"]) == {"lat", "lon"}


def test_every_message_id_is_unique() -> None:
    msgs = traffic(40_000, 200.0)
    ids = []
    for m in msgs:
        body = decode_object(m.payload)
        if isinstance(body, dict) and isinstance(body.get("message_id"), str):
            ids.append(body["message_id"])
    assert len(ids) == len(set(ids)) >= sum(m.valid for m in msgs)
    # Another run (another start) never reuses them: redelivery dedup keys stay distinct.
    later = scenario().messages(START + timedelta(hours=1), 200.0, count=2000)
    other = {decode_object(m.payload)["message_id"] for m in later if m.valid}  # type: ignore[index]
    assert not other & set(ids)


def test_every_malformed_message_breaks_the_contract() -> None:
    reg = scenario(malformed=0.3).registry
    msgs = traffic(10_000, 200.0, malformed=0.3)
    bad = [m for m in msgs if not m.valid]
    assert {m.kind for m in bad} == set(MALFORMED_KINDS)
    for m in bad:
        assert violation(m.topic, m.payload, reg) is not None, (m.kind, m.topic, m.payload)
    assert any(m.topic == "bogus/x" for m in bad)
    # Some malformed messages lack the id; all valid ones have it (checked above).
    assert any(
        isinstance(b := decode_object(m.payload), dict) and "message_id" not in b for m in bad
    )


@pytest.mark.parametrize("fraction", [0.0, 0.01, 0.1, 0.5])
def test_malformed_fraction_is_roughly_as_asked(fraction: float) -> None:
    n = 20_000
    msgs = traffic(n, 200.0, malformed=fraction)
    invalid = sum(not m.valid for m in msgs)
    sigma = math.sqrt(n * fraction * (1 - fraction))
    assert abs(invalid - n * fraction) <= 4 * sigma + 1


def test_the_pipeline_decoder_agrees_with_the_simulator() -> None:
    """operators.decode + operators.enrich accept exactly the valid messages."""
    sc = scenario(malformed=0.2)
    reg = sc.registry
    device_of = {d.guard_id: d.device_id for d in reg.devices if d.guard_id is not None}
    snapshot = RegistrySnapshot(
        version=1,
        devices={
            d.device_id: DeviceEntry(
                d.device_id, d.tenant_id, d.site_id, d.guard_id, d.kind, d.reporting_interval_s
            )
            for d in reg.devices
        },
        guards={
            g.guard_id: GuardEntry(
                g.guard_id, g.tenant_id, g.site_id, device_of[g.guard_id], frozenset(g.zone_ids)
            )
            for g in reg.guards
        },
        sites={s.site_id: SiteEntry(s.site_id, s.tenant_id, s.name, s.timezone) for s in reg.sites},
    )
    received = START + timedelta(seconds=30)
    for m in traffic(5000, 200.0, malformed=0.2):
        decoded = decode(m.topic, m.payload, received)
        outcome = (
            decoded
            if isinstance(decoded, DeadLetter)
            else enrich(decoded, m.topic, m.payload, snapshot)
        )
        assert isinstance(outcome, DeadLetter) != m.valid, (m.kind, m.topic, m.payload, outcome)


def _fixes_by_guard(
    reg: RegistrySeed, msgs: tuple[SimMessage, ...]
) -> dict[int, list[tuple[float, float, float]]]:
    out: dict[int, list[tuple[float, float, float]]] = {}
    for m in msgs:
        if m.kind == "gps":
            b = decode_object(m.payload)
            assert isinstance(b, dict)
            out.setdefault(b["guard_id"], []).append((b["lat"], b["lon"], b["accuracy"]))
    return out


def test_guards_are_mostly_inside_their_zones_and_sometimes_step_out() -> None:
    # 2 hours of traffic at 20 msg/s: about 3600 fixes per guard.
    reg = scenario().registry
    msgs = traffic(144_000, 20.0)
    sites = {s.site_id: s for s in reg.sites}
    zones = {z.zone_id: z for z in reg.zones}
    fixes = _fixes_by_guard(reg, msgs)
    inside = outside = far_outside = 0
    guards_outside = set()
    for g in reg.guards:
        site = sites[g.site_id]
        shapes = [_shape_m(zones[z], site.lat, site.lon) for z in g.zone_ids]
        for lat, lon, acc in fixes[g.guard_id]:
            p = _local(site.lat, lat, lon, site.lat, site.lon)
            if any(s.contains(p) for s in shapes):
                inside += 1
                continue
            outside += 1
            guards_outside.add(g.guard_id)
            # Clearly out (not GPS noise): farther than twice the stated accuracy + 10 m.
            if min(s.exterior.distance(p) for s in shapes) > 2 * acc + 10:
                far_outside += 1
    share_out = outside / (inside + outside)
    assert share_out < 0.10, share_out
    assert far_outside > 0.005 * (inside + outside)  # real excursions happen ...
    assert len(guards_outside) > 1  # ... by more than one guard


def test_gps_accuracy_is_phone_like_and_noise_matches_it() -> None:
    reg = scenario().registry
    fixes = [f for fs in _fixes_by_guard(reg, traffic(40_000, 200.0)).values() for f in fs]
    acc = [a for _, _, a in fixes]
    assert min(acc) >= 3 and max(acc) <= 100
    assert sum(a <= 25 for a in acc) / len(acc) > 0.9
    assert any(a >= 50 for a in acc)


def test_gps_noise_is_consistent_with_accuracy() -> None:
    """At 200 msg/s a guard moves < 2 m between fixes 0.1 s apart, so the spread of
    consecutive fixes is noise: about 68 % fall within the stated accuracy of the truth."""
    reg = scenario(guards=2, tenants=1, sites_per_tenant=1).registry
    msgs = traffic(20_000, 200.0, guards=2, tenants=1, sites_per_tenant=1)
    site = reg.sites[0]
    within = total = 0
    for fixes in _fixes_by_guard(reg, msgs).values():
        for (la1, lo1, a1), (la2, lo2, a2) in itertools.pairwise(fixes):
            d = _local(site.lat, la1, lo1, site.lat, site.lon).distance(
                _local(site.lat, la2, lo2, site.lat, site.lon)
            )
            # Difference of two independent errors: sigma^2 = sigma1^2 + sigma2^2.
            total += 1
            within += d <= math.hypot(a1, a2)
    assert 0.55 < within / total < 0.80, within / total


def test_batteries_drain_slowly() -> None:
    msgs = traffic(144_000, 20.0)
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for m in msgs:
        if m.kind == "telemetry" and m.topic.startswith("device/gd-"):
            b = decode_object(m.payload)
            assert isinstance(b, dict)
            first.setdefault(m.topic, b["battery"])
            last[m.topic] = b["battery"]
    drained = [first[t] - last[t] for t in first]
    # Two hours of a ten-hour phone battery: about 20 points each (or a swap to a full one).
    assert sum(15 <= d <= 25 for d in drained) >= len(drained) * 0.8


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"tenants": 0}, "tenants"),
        ({"guards": 0}, "guards"),
        ({"sites_per_tenant": 0}, "sites_per_tenant"),
        ({"malformed": 1.5}, "malformed"),
        ({"malformed": -0.1}, "malformed"),
        ({"mix": (("gps", 0.0),)}, "mix"),
        ({"mix": (("weather", 1.0),)}, "mix"),
    ],
)
def test_bad_config_is_one_line_naming_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ScenarioError, match=re.escape(field)) as info:
        ScenarioConfig(**kwargs)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)


def test_bad_messages_arguments() -> None:
    sc = scenario()
    with pytest.raises(ScenarioError, match="timezone-aware"):
        sc.messages(datetime(2026, 1, 1), 10, count=1)
    with pytest.raises(ScenarioError, match="rate"):
        sc.messages(START, 0, count=1)
    with pytest.raises(ScenarioError, match="count"):
        sc.messages(START, 10, count=-1)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    tenants=st.integers(1, 4),
    sites=st.integers(1, 4),
    guards=st.integers(1, 30),
    malformed=st.floats(0, 0.5),
)
def test_any_scenario_is_contract_true(
    seed: int, tenants: int, sites: int, guards: int, malformed: float
) -> None:
    sc = ScenarioConfig(
        seed=seed, tenants=tenants, sites_per_tenant=sites, guards=guards, malformed=malformed
    ).build()
    reg = sc.registry
    assert len(reg.guards) == guards and len(reg.tenants) == tenants
    for m in sc.messages(START, 100, count=300):
        assert (violation(m.topic, m.payload, reg) is None) == m.valid, (m.kind, m.payload)
