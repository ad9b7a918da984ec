"""Geofence benchmark: ZoneIndex vs a brute-force loop vs PostGIS, fixes per second.

Run ``python -m benchmarks.bench_geofence`` (``--quick`` for a short run, ``--help`` for the
sizes). The workload is printed with the results: sites of a few polygon zones (50-500 m
across) spread over a region, guards' fixes mostly inside their own site's zones, each fix's
approved set being its site's zones.

Columns:

- ``index``: :meth:`operators.geofence_index.ZoneIndex.query` on the whole batch
  (containment + signed metre distances + classification), process pinned to one core.
- ``brute``: per fix, a Python loop over every zone (tenant and approval checked first, then
  shapely ``intersects_xy`` on a prepared polygon); containment only. Capped by
  ``--brute-seconds``: the rate is measured on the fixes done within that time.
- ``PostGIS``: one statement per batch, ``unnest`` of the fix arrays joined to the zones with
  ``ST_Covers`` (GiST index on the geometry) and the fix's tenant and site, rows fetched;
  containment only. Timed twice, as the planner chooses and with hash/merge joins off (a
  GiST nested loop), best of up to 3 runs each; the table shows the faster. The server is
  a separate process. The
  database ``noc_bench_geofence`` is created and dropped.

Rates are fixes per second of wall-clock time (best and median run) and per CPU-second (this
process's CPU time; for PostGIS also the server backend's, read from ``/proc``): on a shared,
loaded machine the CPU-second figures are the steadier ones. Every column's containment
answers are checked against the index's and the agreement printed.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import shapely

from operators.geo import METRES_PER_DEGREE
from operators.geofence import CLASS_INSIDE, CLASS_OUTSIDE, CLASS_UNCERTAIN, PolygonShape, Zone
from operators.geofence_index import FixBatch, ZoneIndexConfig

BENCH_DB = "noc_bench_geofence"
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
CENTRE = (12.9716, 77.5946)  # lat, lon
TENANTS = 20


# -- workload -------------------------------------------------------------------------------


@dataclass
class Workload:
    zones: list[Zone]
    site_of_zone: np.ndarray
    site_sets: tuple[frozenset[int], ...]
    batch: FixBatch
    region_km: float
    description: str
    approved_by: str


def make_workload(n_zones: int, n_fixes: int, seed: int, approved_by: str = "site") -> Workload:
    """Sites of 1-5 star-shaped polygon zones (50-500 m across), fixes mostly inside.

    ``approved_by``: ``site`` (a fix is approved for its site's zones) or ``tenant`` (for all
    its tenant's zones, like a mobile patrol: large sets, answered through the R-tree).
    """
    rng = np.random.default_rng(seed)
    sizes: list[int] = []
    while sum(sizes) < n_zones:
        sizes.append(min(int(rng.integers(1, 6)), n_zones - sum(sizes)))
    n_sites = len(sizes)
    region_km = max(1.0, math.sqrt(n_sites))  # about one site per km^2
    lat0, lon0 = CENTRE
    coslat = math.cos(math.radians(lat0))
    site_lat = lat0 + rng.uniform(-0.5, 0.5, n_sites) * region_km * 1000 / METRES_PER_DEGREE
    site_lon = lon0 + rng.uniform(-0.5, 0.5, n_sites) * region_km * 1000 / (
        METRES_PER_DEGREE * coslat
    )
    site_tenant = rng.integers(1, TENANTS + 1, n_sites)
    zones: list[Zone] = []
    centres: list[tuple[float, float, float]] = []  # lat, lon, inner radius (m)
    site_of_zone: list[int] = []
    site_sets: list[frozenset[int]] = []
    for site, count in enumerate(sizes):
        ids: list[int] = []
        for _ in range(count):
            zone_id = len(zones) + 1
            radius = float(rng.uniform(25.0, 250.0))
            n = int(rng.integers(4, 13))
            angles = (np.arange(n) + rng.uniform(-0.3, 0.3, n)) * (2.0 * math.pi / n)
            radii = radius * rng.uniform(0.7, 1.0, n)
            zlat = site_lat[site] + rng.uniform(-300, 300) / METRES_PER_DEGREE
            zlon = site_lon[site] + rng.uniform(-300, 300) / (METRES_PER_DEGREE * coslat)
            lat = zlat + radii * np.sin(angles) / METRES_PER_DEGREE
            lon = zlon + radii * np.cos(angles) / (METRES_PER_DEGREE * coslat)
            ring = tuple(zip(lon.tolist(), lat.tolist(), strict=True))
            shape = PolygonShape(((ring + ring[:1],),))
            zones.append(Zone(zone_id, int(site_tenant[site]), site, f"z{zone_id}", shape))
            # distance from the centre that is surely inside: the polygon's inradius
            inner = float(shape.geometry.exterior.distance(shapely.Point(zlon, zlat)))
            centres.append((zlat, zlon, inner * METRES_PER_DEGREE * coslat * 0.9))
            site_of_zone.append(site)
            ids.append(zone_id)
        site_sets.append(frozenset(ids))
    # fixes: 85% inside a zone of the guard's site, 10% within 20 m of a boundary, 5% away
    fix_site = rng.integers(0, n_sites, n_fixes)
    pick = rng.random(n_fixes)
    members = [sorted(s) for s in site_sets]
    zone_idx = np.array(
        [
            members[s][int(p * len(members[s]))] - 1
            for s, p in zip(fix_site.tolist(), pick.tolist(), strict=True)
        ]
    )
    c = np.array(centres)[zone_idx]
    kind = rng.random(n_fixes)
    bearing = rng.uniform(0, 2 * math.pi, n_fixes)
    dist = np.where(
        kind < 0.85,
        c[:, 2] * np.sqrt(rng.random(n_fixes)),
        np.where(
            kind < 0.95,
            c[:, 2] / 0.9 * 0.7 + rng.uniform(-20, 20, n_fixes),
            rng.uniform(300, 1000, n_fixes),
        ),
    )
    lat = c[:, 0] + dist * np.cos(bearing) / METRES_PER_DEGREE
    lon = c[:, 1] + dist * np.sin(bearing) / (METRES_PER_DEGREE * coslat)
    accuracy = np.clip(rng.lognormal(math.log(8.0), 0.5, n_fixes), 2.0, 50.0)
    tenant_sets = tuple(
        frozenset(z.zone_id for z in zones if z.tenant_id == t) for t in range(1, TENANTS + 1)
    )
    batch = FixBatch(
        tenant_id=site_tenant[fix_site],
        lat=lat,
        lon=lon,
        accuracy_m=accuracy,
        time_s=1.78e9 + rng.uniform(0, 86_400, n_fixes),
        approved=fix_site if approved_by == "site" else site_tenant[fix_site] - 1,
        approved_sets=tuple(site_sets) if approved_by == "site" else tenant_sets,
    )
    approval = (
        "its site's zones (1-5)"
        if approved_by == "site"
        else f"all its tenant's zones (~{n_zones // TENANTS} each: R-tree path)"
    )
    description = (
        f"{n_zones} zones in {n_sites} sites over ~{region_km:.0f} x {region_km:.0f} km around "
        f"{CENTRE}; {TENANTS} tenants; star polygons 4-12 vertices, 50-500 m across; "
        f"{n_fixes} fixes, each approved for {approval}; placement 85% inside a "
        "zone, 10% within 20 m of a boundary, 5% 300-1000 m away; accuracy lognormal "
        "(median 8 m)"
    )
    return Workload(
        zones,
        np.array(site_of_zone),
        tuple(site_sets),
        batch,
        region_km,
        description,
        approved_by,
    )


# -- measurements ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Rate:
    """Items per second: wall clock (best and median run) and per CPU-second (best run)."""

    best: float
    median: float
    cpu: float | None

    def wall(self) -> str:
        return f"{self.best:,.0f} ({self.median:,.0f})"

    def per_cpu(self) -> str:
        return "n/a" if self.cpu is None else f"{self.cpu:,.0f}"


def measure(
    n: int, fn: Callable[[], Any], repeat: int, cpu_clock: Callable[[], float | None]
) -> tuple[Rate, Any]:
    """Run ``fn`` ``repeat`` times; the rates and the last result."""
    walls: list[float] = []
    cpus: list[float] = []
    out: Any = None
    for _ in range(repeat):
        c0 = cpu_clock()
        t0 = time.perf_counter()
        out = fn()
        walls.append(time.perf_counter() - t0)
        c1 = cpu_clock()
        if c0 is not None and c1 is not None and c1 > c0:
            cpus.append(c1 - c0)
    cpu = n / min(cpus) if len(cpus) == repeat else None
    return Rate(n / min(walls), n / statistics.median(walls), cpu), out


def process_cpu() -> float | None:
    return time.process_time()


def backend_cpu(pid: int) -> Callable[[], float | None]:
    """CPU seconds of this process plus the PostgreSQL backend ``pid`` (same machine)."""
    ticks = os.sysconf("SC_CLK_TCK")

    def clock() -> float | None:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return time.process_time() + (int(fields[11]) + int(fields[12])) / ticks

    return clock


def brute_force(work: Workload, seconds: float, max_fixes: int) -> tuple[Rate, int, int]:
    """Rate of a per-fix loop over every zone; (rate, fixes done, covered pairs)."""
    zones = [(z.zone_id, z.tenant_id, z.shape.geometry) for z in work.zones]  # type: ignore[union-attr]
    for _, _, geom in zones:
        shapely.prepare(geom)
    b = work.batch
    sets = b.approved_sets
    done = 0
    pairs = 0
    c0 = time.process_time()
    t0 = time.perf_counter()
    deadline = t0 + seconds
    for i in range(min(len(b), max_fixes)):
        tenant = int(b.tenant_id[i])
        approved = sets[int(b.approved[i])]
        lon = float(b.lon[i])
        lat = float(b.lat[i])
        for zone_id, zone_tenant, geom in zones:
            if (
                zone_tenant == tenant
                and zone_id in approved
                and shapely.intersects_xy(geom, lon, lat)
            ):
                pairs += 1
        done += 1
        if time.perf_counter() > deadline:
            break
    wall = done / (time.perf_counter() - t0)
    return Rate(wall, wall, done / max(time.process_time() - c0, 1e-9)), done, pairs


@contextmanager
def postgis_database(url: str) -> Iterator[Any]:
    """A scratch PostGIS database (dropped afterwards); raises RuntimeError if unavailable."""
    import psycopg
    from psycopg import sql

    try:
        admin = psycopg.connect(url, autocommit=True, connect_timeout=5)
    except psycopg.Error as exc:
        raise RuntimeError(f"cannot connect to {url}: {exc}".strip()) from exc
    with admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(BENCH_DB)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(BENCH_DB)))
        try:
            with psycopg.connect(psycopg.conninfo.make_conninfo(url, dbname=BENCH_DB)) as conn:
                try:
                    conn.execute("CREATE EXTENSION postgis")
                    conn.commit()
                except psycopg.Error as exc:
                    raise RuntimeError(
                        "install postgresql-15-postgis-3 "
                        f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
                    ) from exc
                yield conn
        finally:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(BENCH_DB))
            )


POSTGIS_QUERY = """
SELECT f.i, z.zone_id
FROM unnest(%(i)s::int4[], %(lon)s::float8[], %(lat)s::float8[], %(tenant)s::int4[],
            %(site)s::int4[]) AS f(i, lon, lat, tenant, site)
JOIN zones z
  ON ST_Covers(z.geom, ST_SetSRID(ST_MakePoint(f.lon, f.lat), 4326))
 AND z.tenant_id = f.tenant
"""
SITE_CONDITION = " AND z.site_id = f.site\n"


def postgis_rates(
    conn: Any, work: Workload, n_fixes: int, repeat: int
) -> list[tuple[str, Rate, int]]:
    """Load zones, then time the bulk ST_Covers join as the planner likes it and as a GiST
    nested loop; ``(label, rate, pairs)`` per variant (CPU: client + server backend)."""
    conn.execute(
        "CREATE TABLE zones (zone_id int4 PRIMARY KEY, tenant_id int4 NOT NULL, "
        "site_id int4 NOT NULL, geom geometry(Polygon, 4326) NOT NULL)"
    )
    with conn.cursor().copy("COPY zones (zone_id, tenant_id, site_id, geom) FROM STDIN") as copy:
        for zone in work.zones:
            geom = zone.shape.geometry  # type: ignore[union-attr]
            copy.write_row((zone.zone_id, zone.tenant_id, zone.site_id, f"SRID=4326;{geom.wkt}"))
    conn.execute("CREATE INDEX zones_geom_gist ON zones USING gist (geom)")
    conn.execute("ANALYZE zones")
    conn.commit()
    b = work.batch
    n = min(n_fixes, len(b))
    params = {
        "i": list(range(n)),
        "lon": b.lon[:n].tolist(),
        "lat": b.lat[:n].tolist(),
        "tenant": b.tenant_id[:n].tolist(),
        "site": b.approved[:n].tolist(),  # the site in "site" mode; unused otherwise
    }
    query = POSTGIS_QUERY + (SITE_CONDITION if work.approved_by == "site" else "")
    variants: list[tuple[str, Rate, int]] = []
    clock = backend_cpu(conn.info.backend_pid)
    for label, settings in (
        ("planner's choice", ()),
        ("GiST nested loop", ("SET enable_hashjoin = off", "SET enable_mergejoin = off")),
    ):
        for stmt in settings:
            conn.execute(stmt)
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + query, params))
        uses = "GiST" if "zones_geom_gist" in plan else "no GiST"

        def run() -> int:
            return len(conn.execute(query, params).fetchall())

        rate, pairs = measure(n, run, repeat, clock)
        variants.append((f"{label} ({uses})", rate, pairs))
        conn.execute("RESET ALL")
    return variants


# -- main -----------------------------------------------------------------------------------


def pin_one_core() -> str:
    try:
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpus[-1]})
        return f"pinned to CPU {cpus[-1]}"
    except (AttributeError, OSError) as exc:  # pragma: no cover - non-Linux
        return f"not pinned ({exc})"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_geofence", description=__doc__.split("\n")[0]
    )
    p.add_argument(
        "--zones", default=None, help="comma-separated zone counts (default 1,100,10000,100000)"
    )
    p.add_argument("--fixes", type=int, default=None, help="fixes per batch (default 200000)")
    p.add_argument(
        "--repeat", type=int, default=None, help="timed runs per measurement, best kept (default 5)"
    )
    p.add_argument(
        "--brute-seconds",
        type=float,
        default=None,
        help="time cap per brute-force measurement (default 3)",
    )
    p.add_argument(
        "--brute-max-fixes", type=int, default=20_000, help="fixes cap for the brute-force loop"
    )
    p.add_argument(
        "--postgis-fixes",
        type=int,
        default=None,
        help="fixes per PostGIS statement (default: --fixes)",
    )
    p.add_argument("--no-postgis", action="store_true", help="skip the PostGIS column")
    p.add_argument(
        "--database-url",
        default=DEFAULT_URL,
        help=f"admin connection for PostGIS (default {DEFAULT_URL})",
    )
    p.add_argument("--seed", type=int, default=20260601)
    p.add_argument(
        "--approved",
        choices=("site", "tenant"),
        default="site",
        help="approved set per fix: its site's zones (default) or all its tenant's zones",
    )
    p.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    args = p.parse_args(argv)
    quick = args.quick
    args.zones = [
        int(z)
        for z in (args.zones or ("1,100,10000" if quick else "1,100,10000,100000")).split(",")
    ]
    args.fixes = args.fixes or (20_000 if quick else 200_000)
    args.repeat = args.repeat or (2 if quick else 5)
    args.brute_seconds = (
        args.brute_seconds if args.brute_seconds is not None else (0.5 if quick else 3.0)
    )
    args.postgis_fixes = args.postgis_fixes or args.fixes
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    pinned = pin_one_core()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"geofence benchmark: python {sys.version.split()[0]}, numpy {np.__version__}, "
        f"shapely {shapely.__version__}; {os.cpu_count()} CPUs, load average {load}; this "
        f"process {pinned}; {args.repeat} runs each (PostGIS up to 3)"
    )
    rows: list[list[str]] = []
    notes: list[str] = []
    for n_zones in args.zones:
        t0 = time.perf_counter()
        work = make_workload(n_zones, args.fixes, args.seed, args.approved)
        gen_s = time.perf_counter() - t0
        print(f"\nworkload: {work.description} (generated in {gen_s:.1f} s)")
        t0 = time.perf_counter()
        index = ZoneIndexConfig().build(work.zones)
        build_s = time.perf_counter() - t0
        batch = work.batch
        index.query(batch)  # warm-up
        rate, result = measure(len(batch), partial(index.query, batch), args.repeat, process_cpu)
        mix = np.bincount(result.classification, minlength=3) / len(result)
        covered = int((result.pair_distance_m >= 0).sum())
        print(
            f"  index: built in {build_s:.2f} s; classes inside {mix[CLASS_INSIDE]:.1%}, "
            f"uncertain {mix[CLASS_UNCERTAIN]:.1%}, outside {mix[CLASS_OUTSIDE]:.1%}; "
            f"{covered} covered (fix, zone) pairs"
        )
        brute, b_done, b_pairs = brute_force(work, args.brute_seconds, args.brute_max_fixes)
        b_expected = int((result.pair_distance_m[: result.pair_offsets[b_done]] >= 0).sum())
        agree = "agrees" if b_pairs == b_expected else f"DISAGREES ({b_pairs} vs {b_expected})"
        print(f"  brute force: {b_done} fixes in the time cap; containment {agree} with the index")
        pg_wall = pg_cpu = ratio_wall = ratio_cpu = "n/a"
        if args.no_postgis:
            pg_wall = pg_cpu = "skipped"
        else:
            try:
                with postgis_database(args.database_url) as conn:
                    variants = postgis_rates(conn, work, args.postgis_fixes, min(args.repeat, 3))
                n_pg = min(args.postgis_fixes, len(batch))
                p_expected = int((result.pair_distance_m[: result.pair_offsets[n_pg]] >= 0).sum())
                for label, p_rate, p_pairs in variants:
                    agree = (
                        "agrees"
                        if p_pairs == p_expected
                        else f"DISAGREES ({p_pairs} vs {p_expected})"
                    )
                    print(
                        f"  PostGIS {label}: {p_rate.wall()} fixes/s, {p_rate.per_cpu()} per "
                        f"CPU-s; {n_pg} fixes per statement; containment {agree} with the index"
                    )
                best = max((v[1] for v in variants), key=lambda r: r.best)
                pg_wall, pg_cpu = best.wall(), best.per_cpu()
                ratio_wall = f"{rate.best / best.best:,.1f}x"
                if rate.cpu is not None and best.cpu is not None:
                    ratio_cpu = f"{rate.cpu / best.cpu:,.1f}x"
            except RuntimeError as exc:
                notes.append(f"PostGIS not available: {exc}")
                print(f"  PostGIS not available: {exc}")
        rows.append(
            [
                f"{n_zones:,}",
                rate.wall(),
                rate.per_cpu(),
                f"{brute.best:,.0f} (n={b_done})",
                brute.per_cpu(),
                pg_wall,
                pg_cpu,
                ratio_wall,
                ratio_cpu,
            ]
        )
    header = [
        "zones",
        "index/s wall",
        "index/CPU-s",
        "brute/s wall",
        "brute/CPU-s",
        "PostGIS/s wall",
        "PostGIS/CPU-s",
        "index:PostGIS wall",
        "CPU",
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print()
    print("fixes per second; wall: best (median) run; CPU-s: per CPU-second of the best run")
    print("  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True)))
    for r in rows:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)))
    for note in dict.fromkeys(notes):
        print(note)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
