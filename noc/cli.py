"""The ``noc`` command: one entry point for every process and admin task.

Errors the user can fix are printed as one line (``noc: error: ...``) with exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from noc.errors import NocError
from noc.settings import Settings, describe, load_settings

Handler = Callable[[argparse.Namespace, Settings], int]


def _cmd_config(args: argparse.Namespace, settings: Settings) -> int:
    del args, settings
    for name, doc, default in describe():
        print(f"{name:<30} default {default!r}\n    {doc}")
    return 0


def _cmd_db_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from storage.db import connect, redact
    from storage.migrate import migrate

    with connect(settings.database.url, autocommit=True) as conn:
        report = migrate(conn, target=args.target)
    print(f"database: {redact(settings.database.url)}")
    if report.created_extension:
        print("created extension timescaledb")
    for m in report.applied:
        print(f"applied {m.version:04d}_{m.name}")
    if not report.applied:
        print(f"schema is up to date at version {report.version_after}; nothing to do")
    else:
        print(f"schema version {report.version_before} -> {report.version_after}")
    print(f"edition: {report.server.edition.value}")
    return 0


def _cmd_db_status(args: argparse.Namespace, settings: Settings) -> int:
    del args
    from storage.db import connect, redact
    from storage.migrate import status

    with connect(settings.database.url, autocommit=True) as conn:
        st = status(conn)
    server = st.server
    tsdb = server.timescaledb_version or "not installed"
    print(f"database:        {redact(settings.database.url)}")
    print(f"postgresql:      {server.server_version}")
    print(f"timescaledb:     {tsdb}")
    print(f"edition:         {server.edition.value}")
    print(f"schema version:  {st.current_version} (latest {st.latest_version})")
    pending = ", ".join(f"{m.version:04d}_{m.name}" for m in st.pending) or "none"
    print(f"pending:         {pending}")
    print(f"hypertables:     {', '.join(st.hypertables) or 'none'}")
    return 0


def _cmd_db_refresh(args: argparse.Namespace, settings: Settings) -> int:
    from datetime import timedelta

    from storage.analytics import apply_retention, refresh
    from storage.db import connect, redact

    with connect(settings.database.url, autocommit=True) as conn:
        report = refresh(conn, lookback=timedelta(days=args.days))
        dropped = apply_retention(conn) if args.retention else []
    stamp = "%Y-%m-%d %H:%M UTC"
    print(f"database: {redact(settings.database.url)}")
    print(f"edition:  {report.edition.value}")
    clamped = " (clamped to the raw-data retention horizon)" if report.clamped else ""
    print(f"refreshed {', '.join(report.rollups)} from {report.window_start:{stamp}}{clamped}")
    if report.rows_written is not None:
        print(f"rollup rows written: {report.rows_written}")
    for r in dropped:
        print(f"retention {r.table}: dropped {r.removed} {r.unit} older than {r.cutoff:{stamp}}")
    return 0


def _cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from noc.demo import run_demo

    return run_demo(settings, rate=args.rate, duration=args.duration, inbox_port=args.inbox_port)


def _cmd_inbox(args: argparse.Namespace, settings: Settings) -> int:
    del settings
    from noc.inbox import make_server

    server = make_server("127.0.0.1", args.port)
    print(f"inbox listening on http://127.0.0.1:{args.port}/", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


def _cmd_zones_import(args: argparse.Namespace, settings: Settings) -> int:
    import json

    from storage.db import connect
    from storage.zones import ZoneImportError, import_zones

    try:
        with open(args.file, encoding="utf-8") as fh:
            doc = json.load(fh)
    except OSError as exc:
        raise ZoneImportError(f"cannot read {args.file}: {exc.strerror}") from None
    except ValueError as exc:
        raise ZoneImportError(f"{args.file} is not JSON: {exc}") from None
    with connect(settings.database.url) as conn:
        report = import_zones(conn, args.tenant, doc)
    print(
        f"imported {report.created + report.updated} zone(s) for tenant {args.tenant}: "
        f"{report.created} new, {report.updated} updated, {report.approvals} guard approval(s)"
    )
    return 0


def _cmd_zones_list(args: argparse.Namespace, settings: Settings) -> int:
    from storage.db import connect

    with connect(settings.database.url) as conn:
        rows = conn.execute(
            "SELECT z.zone_id, z.site_id, z.name, CASE WHEN z.geometry IS NULL THEN"
            " format('circle %%s m', z.radius_m) ELSE z.geometry->>'type' END, z.windows,"
            " z.active, count(gz.guard_id) FROM zones z"
            " LEFT JOIN guard_zones gz ON gz.zone_id = z.zone_id"
            " WHERE z.tenant_id = %s GROUP BY z.zone_id ORDER BY z.zone_id",
            (args.tenant,),
        ).fetchall()
    print(f"{'zone':>6} {'site':>5}  {'name':<24} {'shape':<16} {'guards':>6}  windows")
    for zone_id, site_id, name, shape, windows, active, guards in rows:
        flag = "" if active else " (inactive)"
        print(
            f"{zone_id:>6} {site_id if site_id is not None else '-':>5}  {name[:24]:<24} "
            f"{shape:<16} {guards:>6}  {windows or 'always'}{flag}"
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; each sub-command sets ``handler``."""
    parser = argparse.ArgumentParser(prog="noc", description="NOC Stream command line.")
    sub = parser.add_subparsers(dest="command", required=True)

    config = sub.add_parser("config", help="list every NOC_* setting with its default")
    config.set_defaults(handler=_cmd_config)

    db = sub.add_parser("db", help="database schema")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    mig = db_sub.add_parser("migrate", help="apply pending schema migrations (idempotent)")
    mig.add_argument("--target", type=int, default=None, help="stop at this schema version")
    mig.set_defaults(handler=_cmd_db_migrate)
    st = db_sub.add_parser("status", help="schema version, TimescaleDB edition, hypertables")
    st.set_defaults(handler=_cmd_db_status)
    ref = db_sub.add_parser("refresh", help="refresh analyst rollups; --retention drops old rows")
    ref.add_argument("--days", type=float, default=3.0, help="recompute the last N days (3)")
    ref.add_argument("--retention", action="store_true", help="also drop raw rows past retention")
    ref.set_defaults(handler=_cmd_db_refresh)

    zones = sub.add_parser("zones", help="geofence zones")
    zones_sub = zones.add_subparsers(dest="zones_command", required=True)
    zimp = zones_sub.add_parser("import", help="import zones from a GeoJSON FeatureCollection")
    zimp.add_argument("file", help="GeoJSON file (properties: zone_id, site_id, name, guards...)")
    zimp.add_argument("--tenant", type=int, required=True, help="tenant the zones belong to")
    zimp.set_defaults(handler=_cmd_zones_import)
    zlist = zones_sub.add_parser("list", help="list a tenant's zones")
    zlist.add_argument("--tenant", type=int, required=True)
    zlist.set_defaults(handler=_cmd_zones_list)

    demo = sub.add_parser("demo", help="run flow, API, notifier and simulator together")
    demo.add_argument("--rate", type=float, default=100.0, help="simulated messages/s (100)")
    demo.add_argument("--duration", type=float, default=None, help="stop after N seconds")
    demo.add_argument("--inbox-port", type=int, default=8025, help="notification inbox port")
    demo.set_defaults(handler=_cmd_demo)
    inbox = sub.add_parser("inbox", help="loopback inbox that prints demo notifications")
    inbox.add_argument("--port", type=int, default=8025)
    inbox.set_defaults(handler=_cmd_inbox)

    _register_extensions(sub)
    return parser


def _register_extensions(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Sub-commands defined next to the components they run."""
    from noc import commands

    commands.register(sub)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        handler: Handler = args.handler
        return handler(args, settings)
    except NocError as exc:
        print(f"noc: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
