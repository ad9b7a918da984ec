"""A simulated security-services estate and the MQTT traffic it produces (DESIGN.md §4.1).

Pure: no I/O, no clock. Everything is derived from the seed, and time is passed in, so
``ScenarioConfig(seed=s).build().messages(start, rate, count=n)`` is the same list of messages
on every run and machine. Tests and benchmarks use :attr:`SimMessage.valid` and
:attr:`SimMessage.kind` to know exactly what they sent.

The estate: tenants (ids from 1) with sites around real city centres; each site has 1-3
approved zones (a convex polygon 150-400 m across, sometimes a circle), door / motion / smoke /
temperature sensors, a panic button and an edge gateway (``system/gateway-<site>/health``);
guards are spread over the sites, each with a GPS phone (``gd-<tenant>-<guard>``) and approved
for one or two of their site's zones.

The traffic: message ``i`` is stamped ``start + i / rate``. Guards walk patrol routes between
waypoints inside their post zone at about 1.4 m/s, pausing at checkpoints; now and then (1 % of
legs by default: a few per cent of the time) they step 25-90 m outside every approved zone,
linger for 30-120 s and come back. GPS fixes carry phone-like accuracy (3-25 m, sometimes
50-100 m) and noise drawn to match it. Devices report slowly draining batteries, signal
strength and temperature; sensors report doors opening and closing, motion, temperature and
(rarely) smoke; panic buttons occasionally fire. A configurable
fraction of messages is malformed in one of the ways listed in :data:`MALFORMED_KINDS`.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from itertools import accumulate
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from simulator.errors import ScenarioError
from storage.registry_seed import (
    DeviceSeed,
    GuardSeed,
    RegistrySeed,
    SiteSeed,
    TenantSeed,
    ZoneSeed,
    example_recipients,
)

__all__ = [
    "DEFAULT_MIX",
    "MALFORMED_KINDS",
    "SENSOR_KINDS",
    "VALID_KINDS",
    "Scenario",
    "ScenarioConfig",
    "SimMessage",
]

VALID_KINDS = ("gps", "telemetry", "sensor", "alert", "health")
"""``SimMessage.kind`` of a valid message (the contract's message families)."""

MALFORMED_KINDS = (
    "broken_json",  # truncated JSON or bytes that are not UTF-8
    "not_an_object",  # JSON, but an array / string / number / null
    "lat_out_of_range",  # GPS lat beyond ±90 or lon beyond ±180
    "battery_out_of_range",  # telemetry battery 150 (or below 0)
    "nan_value",  # "NaN" / "Infinity" strings or bare NaN tokens where numbers belong
    "missing_field",  # GPS without lat/lon, sensor reading without value and state
    "bad_timestamp",  # not ISO-8601, or without a UTC offset
    "bad_topic",  # a topic outside the contract
    "tenant_mismatch",  # GPS client_id names another tenant than the guard's
    "unknown_device",  # a device or guard the registry does not know
)
"""``SimMessage.kind`` of an invalid message: how it is broken."""

SENSOR_KINDS = ("door", "motion", "smoke", "temperature")

DEFAULT_MIX: tuple[tuple[str, float], ...] = (
    ("gps", 0.50),
    ("telemetry", 0.22),
    ("sensor", 0.2638),
    ("health", 0.016),
    ("alert", 0.0002),
)
"""Share of each valid kind among valid messages (normalised; order does not matter)."""

# Per-site sensor set: kind -> how many.
_SENSORS_PER_SITE = (("door", 2), ("motion", 2), ("smoke", 1), ("temperature", 1))
_REPORTING_INTERVAL_S = {"guard_device": 10, "sensor": 60, "panic_button": 300}
_M_PER_DEG = 111_320.0  # metres per degree of latitude (and of longitude at the equator)
_WALK_SPEED = 1.4  # m/s
_WAYPOINT_SCALE = 0.6  # waypoints lie in the zone shrunk by this factor around its centre
_SIGMA_PER_ACCURACY = 1 / 1.51  # a phone's accuracy is the 68 % radius: sigma = acc / 1.51


@dataclass(frozen=True, slots=True)
class SimMessage:
    """One MQTT message: ``valid`` says whether the pipeline must accept it; ``kind`` is one of
    :data:`VALID_KINDS` (valid) or :data:`MALFORMED_KINDS` (invalid)."""

    topic: str
    payload: bytes
    valid: bool
    kind: str


@dataclass(frozen=True, slots=True)
class _City:
    name: str
    lat: float
    lon: float
    timezone: str
    districts: tuple[str, ...]


_CITIES = (
    _City(
        "Bengaluru",
        12.9716,
        77.5946,
        "Asia/Kolkata",
        ("Whitefield", "Koramangala", "Electronic City", "Hebbal", "Indiranagar", "Peenya"),
    ),
    _City(
        "London",
        51.5074,
        -0.1278,
        "Europe/London",
        ("Canary Wharf", "Southwark", "King's Cross", "Stratford", "Croydon", "Park Royal"),
    ),
    _City(
        "New York",
        40.7128,
        -74.0060,
        "America/New_York",
        ("Midtown", "Financial District", "Long Island City", "Red Hook", "Hudson Yards", "Bronx"),
    ),
)
_COMPANIES = (
    "Northwind Security",
    "Sentinel Guarding",
    "Aegis Protective Services",
    "Blue Line Patrol",
    "Citadel Facility Security",
)
_SITE_KINDS = (
    "Tech Park",
    "Data Centre",
    "Warehouse",
    "Hospital",
    "Mall",
    "Logistics Hub",
    "Office Campus",
)
_ZONE_LABELS = ("Loading bay", "Car park", "Annex", "Generator yard", "Gate house")
_FIRST_NAMES = (
    "Aarav", "Priya", "Ravi", "Ananya", "James", "Olivia", "Tom", "Amara", "Carlos", "Mei",
    "Kwame", "Sofia", "Daniel", "Fatima", "Liam", "Noor", "Vikram", "Grace", "Mateo", "Zara",
)  # fmt: skip
_LAST_NAMES = (
    "Sharma", "Reddy", "Iyer", "Smith", "Okafor", "Patel", "Garcia", "Chen", "Williams",
    "Mensah", "Khan", "Brown", "Rossi", "Nair", "Johnson", "Ali", "Murphy", "Silva",
)  # fmt: skip


@dataclass(frozen=True)
class ScenarioConfig:
    """What to simulate. Validated on construction (:class:`ScenarioError` names the field)."""

    seed: int = 1
    tenants: int = 2
    sites_per_tenant: int = 3
    guards: int = 20
    malformed: float = 0.01
    """Fraction of messages that are malformed (0-1)."""
    excursion_probability: float = 0.01
    """Chance that a guard's next patrol leg takes them outside their zones for a while."""
    mix: tuple[tuple[str, float], ...] = DEFAULT_MIX

    def __post_init__(self) -> None:
        _check_range("tenants", self.tenants, 1, 100)
        _check_range("sites_per_tenant", self.sites_per_tenant, 1, 100)
        _check_range("guards", self.guards, 1, 100_000)
        if not 0.0 <= self.malformed <= 1.0:
            raise ScenarioError(f"malformed={self.malformed}: must be a fraction from 0 to 1")
        if not 0.0 <= self.excursion_probability <= 1.0:
            raise ScenarioError("excursion_probability must be from 0 to 1")
        kinds = [k for k, _ in self.mix]
        if set(kinds) - set(VALID_KINDS) or len(set(kinds)) != len(kinds):
            raise ScenarioError(f"mix kinds must be distinct names from {VALID_KINDS}")
        if any(not (w >= 0 and math.isfinite(w)) for _, w in self.mix):
            raise ScenarioError("mix weights must be finite and >= 0")
        if sum(w for _, w in self.mix) <= 0:
            raise ScenarioError("mix weights must not all be 0")

    def build(self) -> Scenario:
        """The estate this configuration describes (deterministic for the seed)."""
        return Scenario(self)


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise ScenarioError(f"{name}={value}: must be from {low} to {high}")


# --- geometry (site-local metres: x east, y north, origin at the site centre) ---------------


@dataclass(frozen=True, slots=True)
class _Zone:
    zone_id: int
    cx: float
    cy: float
    vertices: tuple[tuple[float, float], ...] | None  # convex, counter-clockwise; None: circle
    radius: float  # circle radius, or the polygon's largest centre-vertex distance
    fan: tuple[float, ...] = ()  # cumulative triangle areas of the fan from the centre

    def waypoint(self, rng: random.Random) -> tuple[float, float]:
        """A point well inside the zone (in the zone shrunk by _WAYPOINT_SCALE)."""
        if self.vertices is None:
            r = self.radius * _WAYPOINT_SCALE * math.sqrt(rng.random())
            a = rng.uniform(0, 2 * math.pi)
            return self.cx + r * math.cos(a), self.cy + r * math.sin(a)
        i = bisect.bisect_left(self.fan, rng.random() * self.fan[-1])
        i = min(i, len(self.vertices) - 1)
        (ax, ay), (bx, by) = self.vertices[i], self.vertices[(i + 1) % len(self.vertices)]
        u, v = rng.random(), rng.random()
        if u + v > 1:
            u, v = 1 - u, 1 - v
        s = _WAYPOINT_SCALE
        return (
            self.cx + s * (u * (ax - self.cx) + v * (bx - self.cx)),
            self.cy + s * (u * (ay - self.cy) + v * (by - self.cy)),
        )

    def outside_point(self, rng: random.Random) -> tuple[float, float]:
        """A point 25-90 m beyond the zone's farthest extent (so outside it)."""
        a = rng.uniform(0, 2 * math.pi)
        r = self.radius + rng.uniform(25.0, 90.0)
        return self.cx + r * math.cos(a), self.cy + r * math.sin(a)


def _polygon_zone(zone_id: int, cx: float, cy: float, rng: random.Random) -> _Zone:
    rot = rng.uniform(0, math.pi)
    if rng.random() < 0.4:  # a rectangular compound
        w = rng.uniform(150, 360)
        h = rng.uniform(150, min(w, 260))
        corners = [(w / 2, h / 2), (-w / 2, h / 2), (-w / 2, -h / 2), (w / 2, -h / 2)]
    else:  # an irregular convex perimeter: points on an ellipse, in angular order
        a = rng.uniform(75, 200)
        b = rng.uniform(max(75.0, 0.55 * a), a)
        n = rng.randint(6, 10)
        step = 2 * math.pi / n
        angles = [k * step + rng.uniform(-0.25, 0.25) * step for k in range(n)]
        corners = [(a * math.cos(t), b * math.sin(t)) for t in angles]
    cos_r, sin_r = math.cos(rot), math.sin(rot)
    verts = tuple((cx + x * cos_r - y * sin_r, cy + x * sin_r + y * cos_r) for x, y in corners)
    areas = []
    for i, (ax, ay) in enumerate(verts):
        bx, by = verts[(i + 1) % len(verts)]
        areas.append(abs((ax - cx) * (by - cy) - (bx - cx) * (ay - cy)) / 2)
    radius = max(math.hypot(x - cx, y - cy) for x, y in verts)
    return _Zone(zone_id, cx, cy, verts, radius, tuple(accumulate(areas)))


def _circle_zone(zone_id: int, cx: float, cy: float, rng: random.Random) -> _Zone:
    return _Zone(zone_id, cx, cy, None, rng.uniform(75, 175))


@dataclass(slots=True)
class _Site:
    site_id: int
    tenant_id: int
    name: str
    lat: float
    lon: float
    tz: tzinfo
    zones: list[_Zone] = field(default_factory=list)
    sensors: list[tuple[str, str]] = field(default_factory=list)  # (sensor_id, kind)
    panic_button: str = ""

    def to_latlon(self, x: float, y: float) -> tuple[float, float]:
        lat = self.lat + y / _M_PER_DEG
        lon = self.lon + x / (_M_PER_DEG * math.cos(math.radians(self.lat)))
        return lat, lon


@dataclass(frozen=True, slots=True)
class _Guard:
    guard_id: int
    tenant_id: int
    site: _Site
    post: _Zone
    zone_ids: tuple[int, ...]
    device_id: str


def _zone_tz(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except ZoneInfoNotFoundError:  # no tz database: UTC offsets are still correct instants
        return UTC


class Scenario:
    """The estate of one :class:`ScenarioConfig`; :meth:`messages` is its traffic."""

    def __init__(self, config: ScenarioConfig) -> None:
        self.config = config
        rng = random.Random(_derive(config.seed, "estate"))
        self._sites: list[_Site] = []
        self._guards: list[_Guard] = []
        self._build_sites(rng)
        self._build_guards(rng)
        self.registry: RegistrySeed = self._registry()
        """The estate as rows for :func:`storage.registry_seed.seed_registry`."""

    # -- the estate -------------------------------------------------------------------------

    def _build_sites(self, rng: random.Random) -> None:
        zone_id = 0
        for t in range(1, self.config.tenants + 1):
            home = _CITIES[(t - 1) % len(_CITIES)]
            for s in range(self.config.sites_per_tenant):
                city = home if s % 3 != 2 else _CITIES[(t + s) % len(_CITIES)]
                site_id = len(self._sites) + 1
                dist = rng.uniform(1_500, 12_000)
                bearing = rng.uniform(0, 2 * math.pi)
                lat = city.lat + dist * math.cos(bearing) / _M_PER_DEG
                lon = city.lon + dist * math.sin(bearing) / (
                    _M_PER_DEG * math.cos(math.radians(city.lat))
                )
                name = f"{rng.choice(city.districts)} {rng.choice(_SITE_KINDS)} #{site_id}"
                site = _Site(
                    site_id, t, name, round(lat, 6), round(lon, 6), _zone_tz(city.timezone)
                )
                self._sites.append(site)
                base = rng.uniform(0, 2 * math.pi)
                for k in range(rng.randint(1, 3)):
                    zone_id += 1
                    if k == 0:
                        cx, cy = rng.uniform(-60, 60), rng.uniform(-60, 60)
                        site.zones.append(_polygon_zone(zone_id, cx, cy, rng))
                        continue
                    # Secondary zones sit 560-700 m away, 120 degrees apart: they never overlap
                    # the others, and an excursion from one never lands in another.
                    r = rng.uniform(560, 700)
                    a = base + k * 2 * math.pi / 3 + rng.uniform(-0.3, 0.3)
                    cx, cy = r * math.cos(a), r * math.sin(a)
                    make = _circle_zone if rng.random() < 0.4 else _polygon_zone
                    site.zones.append(make(zone_id, cx, cy, rng))
                for kind, n in _SENSORS_PER_SITE:
                    for j in range(1, n + 1):
                        site.sensors.append((f"sn-{site_id}-{kind}-{j}", kind))
                site.panic_button = f"pb-{site_id}-1"

    def _build_guards(self, rng: random.Random) -> None:
        per_site: dict[int, int] = {}
        for g in range(1, self.config.guards + 1):
            site = self._sites[(g - 1) % len(self._sites)]
            nth = per_site.get(site.site_id, 0)
            per_site[site.site_id] = nth + 1
            post = site.zones[nth % len(site.zones)]
            zone_ids = [post.zone_id]
            others = [z for z in site.zones if z is not post]
            if others and rng.random() < 0.3:
                zone_ids.append(rng.choice(others).zone_id)
            device_id = f"gd-{site.tenant_id}-{g}"
            self._guards.append(
                _Guard(g, site.tenant_id, site, post, tuple(sorted(zone_ids)), device_id)
            )

    def _registry(self) -> RegistrySeed:
        tenants = tuple(
            TenantSeed(t, f"{_COMPANIES[(t - 1) % len(_COMPANIES)]} (tenant {t})")
            for t in range(1, self.config.tenants + 1)
        )
        sites = []
        zones = []
        devices = []
        for site in self._sites:
            tz_name = getattr(site.tz, "key", "UTC")
            sites.append(
                SiteSeed(site.site_id, site.tenant_id, site.name, tz_name, site.lat, site.lon)
            )
            labels = ["Main perimeter", *_ZONE_LABELS]
            for k, z in enumerate(site.zones):
                name = f"{site.name} – {labels[k]} (Z{z.zone_id})"
                if z.vertices is None:
                    lat, lon = site.to_latlon(z.cx, z.cy)
                    zones.append(
                        ZoneSeed(
                            z.zone_id,
                            site.tenant_id,
                            site.site_id,
                            name,
                            center_lat=round(lat, 7),
                            center_lon=round(lon, 7),
                            radius_m=round(z.radius, 1),
                        )
                    )
                else:
                    ring = [site.to_latlon(x, y) for x, y in z.vertices]
                    closed = (*((round(lo, 7), round(la, 7)) for la, lo in ring),)
                    zones.append(
                        ZoneSeed(
                            z.zone_id,
                            site.tenant_id,
                            site.site_id,
                            name,
                            ring=(*closed, closed[0]),
                        )
                    )
            for sensor_id, _kind in site.sensors:
                devices.append(
                    DeviceSeed(
                        sensor_id,
                        site.tenant_id,
                        "sensor",
                        site_id=site.site_id,
                        reporting_interval_s=_REPORTING_INTERVAL_S["sensor"],
                    )
                )
            devices.append(
                DeviceSeed(
                    site.panic_button,
                    site.tenant_id,
                    "panic_button",
                    site_id=site.site_id,
                    reporting_interval_s=_REPORTING_INTERVAL_S["panic_button"],
                )
            )
        guards = []
        name_rng = random.Random(_derive(self.config.seed, "names"))
        for g in self._guards:
            name = f"{name_rng.choice(_FIRST_NAMES)} {name_rng.choice(_LAST_NAMES)}"
            guards.append(GuardSeed(g.guard_id, g.tenant_id, g.site.site_id, name, g.zone_ids))
            devices.append(
                DeviceSeed(
                    g.device_id,
                    g.tenant_id,
                    "guard_device",
                    site_id=g.site.site_id,
                    guard_id=g.guard_id,
                    reporting_interval_s=_REPORTING_INTERVAL_S["guard_device"],
                )
            )
        return RegistrySeed(
            tenants=tenants,
            sites=tuple(sites),
            zones=tuple(zones),
            guards=tuple(guards),
            devices=tuple(devices),
            recipients=example_recipients(tenants),
        )

    # -- the traffic ------------------------------------------------------------------------

    def messages(
        self,
        start: datetime,
        rate: float,
        duration_s: float | None = None,
        count: int | None = None,
    ) -> Iterator[SimMessage]:
        """The traffic from ``start`` (timezone-aware) at ``rate`` messages per simulated second.

        Message ``i`` is stamped ``start + i / rate``. Stops after ``count`` messages or when
        ``duration_s`` has elapsed, whichever comes first; endless when both are None. The same
        arguments always give the same messages; ``message_id`` values differ between runs with
        different ``start`` or seed.
        """
        if start.tzinfo is None or start.utcoffset() is None:
            raise ScenarioError("start must be a timezone-aware datetime")
        if not (rate > 0 and math.isfinite(rate)):
            raise ScenarioError(f"rate={rate}: must be a positive number of messages per second")
        limit: int | None = None
        if duration_s is not None:
            if not duration_s >= 0:
                raise ScenarioError(f"duration={duration_s}: must be >= 0 seconds")
            limit = math.ceil(rate * duration_s - 1e-9)
        if count is not None:
            if count < 0:
                raise ScenarioError(f"count={count}: must be >= 0")
            limit = count if limit is None else min(limit, count)
        return _Run(self, start, rate, limit).run()


def _derive(seed: int, purpose: str, *more: object) -> int:
    """A stable integer seed for one purpose (independent of PYTHONHASHSEED)."""
    text = "/".join([str(seed), purpose, *map(str, more)])
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


class _Walker:
    """A guard's true position over time (site-local metres). Query with increasing ``t``."""

    __slots__ = (
        "_phase",
        "_rng",
        "_speed",
        "_tx",
        "_ty",
        "_zone",
        "p_out",
        "pause_until",
        "t",
        "x",
        "y",
    )

    def __init__(self, zone: _Zone, rng: random.Random, p_out: float) -> None:
        self._zone = zone
        self._rng = rng
        self.p_out = p_out
        self._speed = _WALK_SPEED * rng.uniform(0.85, 1.15)
        self.t = 0.0
        if rng.random() < p_out * 3:  # already outside (about the long-run share), back soon
            self.x, self.y = zone.outside_point(rng)
            self.pause_until = rng.uniform(5.0, 90.0)
            self._phase = "back"
            self._tx, self._ty = zone.waypoint(rng)
        else:
            self.x, self.y = zone.waypoint(rng)
            self.pause_until = rng.uniform(0.0, 10.0)
            self._phase = "patrol"
            self._tx, self._ty = zone.waypoint(rng)

    def position(self, t: float) -> tuple[float, float]:
        while True:
            if t <= self.pause_until:
                return self.x, self.y
            begin = max(self.t, self.pause_until)
            dx, dy = self._tx - self.x, self._ty - self.y
            dist = math.hypot(dx, dy)
            travel = (t - begin) * self._speed
            if travel < dist:
                f = travel / dist
                self.x += dx * f
                self.y += dy * f
                self.t = t
                return self.x, self.y
            self.x, self.y = self._tx, self._ty
            self.t = begin + dist / self._speed
            self._arrive()

    def _arrive(self) -> None:
        rng = self._rng
        if self._phase == "out":  # reached the spot outside: linger, then walk back
            self.pause_until = self.t + rng.uniform(30.0, 120.0)
            self._phase = "back"
            self._tx, self._ty = self._zone.waypoint(rng)
            return
        self.pause_until = self.t + rng.uniform(0.0, 15.0)  # a checkpoint
        if rng.random() < self.p_out:
            self._phase = "out"
            self._tx, self._ty = self._zone.outside_point(rng)
        else:
            self._phase = "patrol"
            self._tx, self._ty = self._zone.waypoint(rng)


@dataclass(slots=True)
class _DeviceState:
    device_id: str
    tenant_id: int
    battery0: float
    drain_per_s: float
    signal_base: float
    temp_base: float


_dumps = msgspec.json.Encoder().encode  # compact JSON, keys in insertion order


class _Run:
    """The mutable state of one :meth:`Scenario.messages` call."""

    def __init__(self, scenario: Scenario, start: datetime, rate: float, limit: int | None):
        cfg = scenario.config
        self.sc = scenario
        self.start = start
        self.rate = rate
        self.limit = limit
        self.rng = random.Random(_derive(cfg.seed, "traffic"))
        token = f"{start.astimezone(UTC).isoformat()}/{rate!r}"
        self.run_id = hashlib.blake2b(f"{cfg.seed}/{token}".encode(), digest_size=5).hexdigest()
        self.walkers = {
            g.guard_id: _Walker(
                g.post,
                random.Random(_derive(cfg.seed, "walk", g.guard_id)),
                cfg.excursion_probability,
            )
            for g in scenario._guards
        }
        kinds = [(k, w) for k, w in cfg.mix if w > 0]
        self.kinds = [k for k, _ in kinds]
        self.cum = list(accumulate(w for _, w in kinds))
        rng = self.rng
        self.devices: list[_DeviceState] = []
        for g in scenario._guards:
            self.devices.append(
                _DeviceState(
                    g.device_id,
                    g.tenant_id,
                    rng.uniform(45, 100),
                    100 / (10 * 3600),  # a phone lasts about 10 hours
                    rng.uniform(-95, -60),
                    rng.uniform(30, 36),
                )
            )
        for site in scenario._sites:
            for sensor_id, _ in site.sensors:
                self.devices.append(
                    _DeviceState(
                        sensor_id,
                        site.tenant_id,
                        rng.uniform(60, 100),
                        1e-5,
                        rng.uniform(-100, -65),
                        rng.uniform(19, 27),
                    )
                )
            self.devices.append(
                _DeviceState(
                    site.panic_button,
                    site.tenant_id,
                    rng.uniform(70, 100),
                    2e-6,
                    rng.uniform(-95, -60),
                    rng.uniform(19, 27),
                )
            )
        rng.shuffle(self.devices)
        self.site_of: dict[str, _Site] = {}
        for site in scenario._sites:
            for sensor_id, _ in site.sensors:
                self.site_of[sensor_id] = site
            self.site_of[site.panic_button] = site
        for g in scenario._guards:
            self.site_of[g.device_id] = g.site
        self.guard_order = list(scenario._guards)
        rng.shuffle(self.guard_order)
        self.sensors = [(sid, kind, site) for site in scenario._sites for sid, kind in site.sensors]
        rng.shuffle(self.sensors)
        self.sensor_base = {sid: rng.uniform(19.0, 26.0) for sid, _, _ in self.sensors}
        self.door_open: dict[str, bool] = {}
        self.components = [f"gateway-{s.site_id}" for s in scenario._sites] + ["radio-bridge-1"]
        self.uptime0 = {c: rng.randint(600, 30 * 86400) for c in self.components}
        self.cursor = {"gps": 0, "telemetry": 0, "sensor": 0, "health": 0}
        self.i = 0
        self.elapsed = 0.0

    # -- helpers ----------------------------------------------------------------------------

    def _ts(self, tz: tzinfo) -> str:
        when = self.start + timedelta(seconds=self.elapsed)
        return when.astimezone(tz).isoformat(timespec="microseconds")

    def _mid(self) -> str:
        return f"{self.run_id}-{self.i:08d}"

    def _next(self, kind: str, n: int) -> int:
        c = self.cursor[kind]
        self.cursor[kind] = c + 1
        return c % n

    def run(self) -> Iterator[SimMessage]:
        rng = self.rng
        malformed = self.sc.config.malformed
        builders = {
            "gps": self._gps,
            "telemetry": self._telemetry,
            "sensor": self._sensor,
            "health": self._health,
            "alert": self._alert,
        }
        total = self.cum[-1]
        while self.limit is None or self.i < self.limit:
            self.elapsed = self.i / self.rate
            if malformed and rng.random() < malformed:
                yield self._malformed(rng.choice(MALFORMED_KINDS))
            else:
                kind = self.kinds[bisect.bisect_right(self.cum, rng.random() * total)]
                topic, body = builders[kind]()
                yield SimMessage(topic, _dumps(body), True, kind)
            self.i += 1

    # -- valid messages ---------------------------------------------------------------------

    def _fix(self, guard: _Guard) -> dict[str, Any]:
        rng = self.rng
        x, y = self.walkers[guard.guard_id].position(self.elapsed)
        # Mostly open sky (3-25 m, skewed low); sometimes indoors or in an urban canyon.
        acc = rng.uniform(50.0, 100.0) if rng.random() < 0.05 else 3.0 + 22.0 * rng.random() ** 2
        sigma = acc * _SIGMA_PER_ACCURACY
        lat, lon = guard.site.to_latlon(x + rng.gauss(0, sigma), y + rng.gauss(0, sigma))
        return {
            "lat": round(lat, 7),
            "lon": round(lon, 7),
            "accuracy": round(acc, 1),
            "guard_id": guard.guard_id,
            "client_id": guard.tenant_id,
            "timestamp": self._ts(guard.site.tz),
            "message_id": self._mid(),
        }

    def _gps(self) -> tuple[str, dict[str, Any]]:
        guard = self.guard_order[self._next("gps", len(self.guard_order))]
        return f"guard/{guard.guard_id}/gps", self._fix(guard)

    def _telemetry_body(self, dev: _DeviceState) -> dict[str, Any]:
        rng = self.rng
        level = dev.battery0 - dev.drain_per_s * self.elapsed
        if level < 8.0:  # swapped for a charged one
            level = 100.0 - (8.0 - level) % 92.0
        signal = min(-50.0, max(-110.0, dev.signal_base + rng.gauss(0, 4)))
        return {
            "battery": round(level),
            "signal": round(signal),
            "temperature": round(dev.temp_base + rng.gauss(0, 0.6), 1),
            "timestamp": self._ts(self.site_of[dev.device_id].tz),
            "message_id": self._mid(),
        }

    def _telemetry(self) -> tuple[str, dict[str, Any]]:
        dev = self.devices[self._next("telemetry", len(self.devices))]
        return f"device/{dev.device_id}/telemetry", self._telemetry_body(dev)

    def _sensor(self) -> tuple[str, dict[str, Any]]:
        rng = self.rng
        sensor_id, kind, site = self.sensors[self._next("sensor", len(self.sensors))]
        value: float
        if kind == "door":
            is_open = self.door_open.get(sensor_id, False)
            if rng.random() < 0.3:
                is_open = not is_open
                self.door_open[sensor_id] = is_open
            value, state = (1, "open") if is_open else (0, "closed")
        elif kind == "motion":
            value, state = (1, "motion") if rng.random() < 0.25 else (0, "clear")
        elif kind == "smoke":
            value, state = (1, "alarm") if rng.random() < 0.003 else (0, "clear")
        else:
            day = math.sin(2 * math.pi * self.elapsed / 86_400.0)
            value = round(self.sensor_base[sensor_id] + 2.5 * day + rng.gauss(0, 0.2), 1)
            state = "normal"
        body = {
            "value": value,
            "state": state,
            "timestamp": self._ts(site.tz),
            "message_id": self._mid(),
        }
        return f"sensor/{sensor_id}/{kind}", body

    def _health(self) -> tuple[str, dict[str, Any]]:
        rng = self.rng
        component = self.components[self._next("health", len(self.components))]
        body = {
            "status": "ok" if rng.random() < 0.97 else "degraded",
            "uptime_s": self.uptime0[component] + int(self.elapsed),
            "cpu_pct": round(rng.uniform(3, 60), 1),
            "mem_pct": round(rng.uniform(20, 80), 1),
            "connected_devices": rng.randint(5, 40),
            "timestamp": self._ts(UTC),
            "message_id": self._mid(),
        }
        return f"system/{component}/health", body

    def _alert(self) -> tuple[str, dict[str, Any]]:
        rng = self.rng
        if rng.random() < 0.3:  # the SOS key of a guard's phone, where the guard is
            guard = rng.choice(self.guard_order)
            fix = self._fix(guard)
            source, site = guard.device_id, guard.site
            location = {"lat": fix["lat"], "lon": fix["lon"]}
            message = f"SOS pressed by guard {guard.guard_id}"
        else:  # a fixed panic button in the site's main building
            site = rng.choice(self.sc._sites)
            source = site.panic_button
            lat, lon = site.to_latlon(site.zones[0].cx, site.zones[0].cy)
            location = {"lat": round(lat, 7), "lon": round(lon, 7)}
            message = "Panic button pressed"
        body = {
            "alert_type": "panic",
            "severity": "critical",
            "message": message,
            "location": location,
            "timestamp": self._ts(site.tz),
            "message_id": self._mid(),
        }
        return f"alert/panic/{source}", body

    # -- malformed messages -----------------------------------------------------------------

    def _malformed(self, kind: str) -> SimMessage:
        rng = self.rng
        guard = self.guard_order[rng.randrange(len(self.guard_order))]
        gps_topic = f"guard/{guard.guard_id}/gps"
        topic: str
        payload: bytes
        if kind == "broken_json":
            topic, body = rng.choice((self._gps, self._telemetry, self._sensor))()
            raw = _dumps(body)
            if rng.random() < 0.2:
                payload = raw[:-1] + b',"note":"\xff\xfe"}'  # not UTF-8
            else:
                payload = raw[: rng.randint(1, len(raw) - 1)]
        elif kind == "not_an_object":
            topic = rng.choice((gps_topic, f"device/{guard.device_id}/telemetry"))
            payload = rng.choice((b"[1,2,3]", b'"hello"', b"42", b"null", b'[{"lat":1}]'))
        elif kind == "lat_out_of_range":
            body = self._fix(guard)
            if rng.random() < 0.5:
                body["lat"] = round(rng.choice((1, -1)) * rng.uniform(90.5, 200.0), 5)
            else:
                body["lon"] = round(rng.choice((1, -1)) * rng.uniform(180.5, 400.0), 5)
            topic, payload = gps_topic, _dumps(body)
        elif kind == "battery_out_of_range":
            dev = rng.choice(self.devices)
            body = self._telemetry_body(dev)
            body["battery"] = rng.choice((150, 101, -5))
            topic, payload = f"device/{dev.device_id}/telemetry", _dumps(body)
        elif kind == "nan_value":
            variant = rng.randrange(3)
            if variant == 0:
                body = self._fix(guard)
                body[rng.choice(("lat", "lon"))] = rng.choice(("NaN", "nan", "Infinity"))
                topic, payload = gps_topic, _dumps(body)
            elif variant == 1:
                dev = rng.choice(self.devices)
                body = self._telemetry_body(dev)
                body["battery"] = rng.choice(("NaN", "n/a", "-Infinity"))
                topic, payload = f"device/{dev.device_id}/telemetry", _dumps(body)
            else:  # a bare NaN token: not JSON at all
                body = self._fix(guard)
                body["accuracy"] = float("nan")
                topic, payload = gps_topic, json.dumps(body).encode()
        elif kind == "missing_field":
            if rng.random() < 0.6:
                body = self._fix(guard)
                for key in rng.choice((("lat",), ("lon",), ("lat", "lon"))):
                    del body[key]
                topic = gps_topic
            else:
                topic, body = self._sensor()
                del body["value"], body["state"]
            if rng.random() < 0.5:
                del body["message_id"]
            payload = _dumps(body)
        elif kind == "bad_timestamp":
            dev = rng.choice(self.devices)
            body = self._telemetry_body(dev)
            body["timestamp"] = rng.choice(
                (
                    "yesterday",
                    "2026-13-45T99:00:00+00:00",
                    self._ts(UTC)[:-6],  # no offset
                    "",
                )
            )
            topic, payload = f"device/{dev.device_id}/telemetry", _dumps(body)
        elif kind == "bad_topic":
            topic, body = self._telemetry()
            topic = rng.choice(
                (
                    "bogus/x",
                    f"device/{guard.device_id}/status",
                    f"guard/{guard.device_id}/gps",  # a device id where the guard id belongs
                    f"sensors/{guard.device_id}",
                    "alert/panic",
                )
            )
            payload = _dumps(body)
        elif kind == "tenant_mismatch":
            body = self._fix(guard)
            tenants = self.sc.config.tenants
            body["client_id"] = guard.tenant_id % tenants + 1 if tenants > 1 else tenants + 1
            topic, payload = gps_topic, _dumps(body)
        elif kind == "unknown_device":
            variant = rng.randrange(3)
            ghost = 900_000 + rng.randrange(99_999)
            if variant == 0:
                topic = f"device/gd-{guard.tenant_id}-{ghost}/telemetry"
                payload = _dumps(self._telemetry_body(rng.choice(self.devices)))
            elif variant == 1:
                body = self._fix(guard)
                body["guard_id"] = ghost
                topic, payload = f"guard/{ghost}/gps", _dumps(body)
            else:
                _, body = self._sensor()
                topic, payload = f"sensor/sn-{ghost}-door-1/door", _dumps(body)
        else:  # pragma: no cover - MALFORMED_KINDS is closed
            raise AssertionError(kind)
        return SimMessage(topic, payload, False, kind)
