"""End-to-end ingest throughput: MQTT publish -> flow -> committed rows.

    python -m benchmarks.bench_ingest [--count 50000] [--publishers 2] [--batch 1000]

Starts a private Mosquitto (the project's broker limits) and the real flow process against a
scratch database on the local PostgreSQL/TimescaleDB, seeds a simulated estate, publishes the
simulator's traffic (QoS 1) as fast as the publishers can, and reports messages/s from the first
publish to the last committed row; then stops the flow, queues as many messages again and
reports how fast the restarted flow stores that backlog (its own throughput). Then compares
the two batch-write strategies on the same
rows: what BatchWriter does (one INSERT ... SELECT FROM unnest(binary arrays) ... ON CONFLICT
per table, alerts, outbox and events included), COPY into temporary staging tables followed by
INSERT ... SELECT ... ON CONFLICT, and a multi-row INSERT ... VALUES ... ON CONFLICT.
"""

from __future__ import annotations

import argparse
import threading
import time
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql

from operators.decode import decode
from operators.enrich import enrich
from operators.records import DeadLetter, Enriched
from storage.migrate import migrate
from storage.registry import load_registry
from storage.rows import TABLES, columns_of, rows_by_table
from storage.writer import BatchWriter, insert_rows_sql
from tests.integration.harness import FlowProcess, PrivateBroker, Publisher, wait_until
from tests.integration.traffic import Traffic, seeded_traffic, stored_rows
from tests.services import PG_ADMIN_URL, scratch_database


def _migrated(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn)


def end_to_end(count: int, publishers: int) -> dict[str, float]:
    """Two phases of ``count`` messages each; rates in messages/s.

    Live: publish while the flow runs and wait until all are stored (bounded by how fast the
    publishers go, too). Backlog: stop the flow, publish the second half into its persistent
    sessions, start the flow again and time how fast it stores what waited: the flow's own
    throughput, from its start to the last committed row."""
    broker = PrivateBroker().start()
    try:
        with scratch_database(PG_ADMIN_URL, prefix="noc_bench") as url:
            _migrated(url)
            traffic = seeded_traffic(url, count=2 * count, malformed=0.01, guards=200)
            pairs = traffic.pairs()
            live, backlog = pairs[:count], pairs[count:]
            flow = FlowProcess(url, broker.port).start()
            try:
                wait_until(lambda: flow.output().count("connected to") >= 2, 60, "sessions")
                started = time.perf_counter()
                _publish(broker.port, live, publishers)
                published = time.perf_counter()
                _wait_stored(url, count)
                stored = time.perf_counter()
                flow.stop()
                _publish(broker.port, backlog, publishers)
                restarted = time.perf_counter()
                flow.start()
                _wait_stored(url, count + 1)
                first = time.perf_counter()  # started, sessions resumed, windows rebuilt
                _wait_stored(url, 2 * count)
                drained = time.perf_counter()
            finally:
                flow.stop()
                flow.drop_sessions(broker.port)
    finally:
        broker.close()
    return {
        "publish_rate": count / (published - started),
        "end_to_end_rate": count / (stored - started),
        "seconds": stored - started,
        "backlog_rate": count / (drained - first),
        "backlog_seconds": drained - restarted,
        "backlog_first_row_s": first - restarted,
    }


def _publish(port: int, pairs: list[tuple[str, bytes]], publishers: int) -> None:
    chunks = [pairs[i::publishers] for i in range(publishers)]
    clients = [Publisher(port) for _ in chunks]
    threads = [
        threading.Thread(target=c.publish, args=(chunk,))
        for c, chunk in zip(clients, chunks, strict=True)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for c in clients:
        c.wait_all(timeout=600)
        c.close()


def _wait_stored(url: str, rows: int) -> None:
    wait_until(lambda: sum(stored_rows(url).values()) >= rows, 900, "all rows", step=0.05)


def _items(url: str, traffic: Traffic) -> list[Enriched | DeadLetter]:
    with psycopg.connect(url) as conn:
        registry = load_registry(conn)
    now = datetime.now(UTC)
    out: list[Enriched | DeadLetter] = []
    for topic, payload in traffic.pairs():
        record = decode(topic, payload, now)
        if isinstance(record, DeadLetter):
            out.append(record)
            continue
        out.append(enrich(record, topic, payload, registry))
    return out


def _insert_values(conn: psycopg.Connection[Any], batch: list[Enriched | DeadLetter]) -> None:
    """The alternative: one multi-row INSERT ... ON CONFLICT DO NOTHING per table."""
    with conn.transaction(), conn.cursor() as cur:
        for table, rows in rows_by_table(batch).items():
            spec = TABLES[table]
            row_sql = sql.SQL("({})").format(
                sql.SQL(", ").join(sql.Placeholder() * len(spec.columns))
            )
            query = sql.SQL("INSERT INTO {} ({}) VALUES {} ON CONFLICT DO NOTHING").format(
                sql.Identifier(table),
                sql.SQL(", ").join(map(sql.Identifier, spec.columns)),
                sql.SQL(", ").join([row_sql] * len(rows)),
            )
            cur.execute(query, [v for row in rows for v in row])


def _copy_staging(conn: psycopg.Connection[Any], batch: list[Enriched | DeadLetter]) -> None:
    """The COPY alternative: temporary staging tables, then INSERT ... SELECT ... ON CONFLICT."""
    with conn.transaction(), conn.cursor() as cur:
        for table, rows in rows_by_table(batch).items():
            spec = TABLES[table]
            stage = sql.Identifier(f"stage_{table}")
            cols = sql.SQL(", ").join(map(sql.Identifier, spec.columns))
            cur.execute(
                sql.SQL(
                    "CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {}) ON COMMIT DELETE ROWS"
                ).format(stage, sql.Identifier(table))
            )
            with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(stage, cols)) as copy:
                for row in rows:
                    copy.write_row(row)
            cur.execute(
                sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} ON CONFLICT DO NOTHING").format(
                    sql.Identifier(table), cols, cols, stage
                )
            )


def _unnest_rows(conn: psycopg.Connection[Any], batch: list[Enriched | DeadLetter]) -> None:
    """BatchWriter's row statement alone (no alerts, outbox or events): like for like."""
    with conn.transaction(), conn.cursor() as cur:
        for table, rows in rows_by_table(batch).items():
            columns = columns_of(rows, len(TABLES[table].columns))
            cur.execute(insert_rows_sql(table), columns, binary=True)


def write_strategies(count: int, batch: int) -> dict[str, float]:
    """Rows/s of each batch-write strategy on the same decoded, enriched messages."""
    results: dict[str, float] = {}
    for name in ("batch_writer", "unnest_rows_only", "copy_staging", "multi_row_insert"):
        with scratch_database(PG_ADMIN_URL, prefix="noc_bench") as url:
            _migrated(url)
            items = _items(url, seeded_traffic(url, count=count, malformed=0.01, guards=200))
            batches = [items[i : i + batch] for i in range(0, len(items), batch)]
            if name == "batch_writer":
                writer = BatchWriter(url)
                started = time.perf_counter()
                for b in batches:
                    writer.write(b)
                elapsed = time.perf_counter() - started
                writer.close()
            else:
                write = {
                    "unnest_rows_only": _unnest_rows,
                    "copy_staging": _copy_staging,
                    "multi_row_insert": _insert_values,
                }[name]
                with psycopg.connect(url, autocommit=True) as conn:
                    started = time.perf_counter()
                    for b in batches:
                        write(conn, b)
                    elapsed = time.perf_counter() - started
            results[name] = len(items) / elapsed
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=50_000, help="messages end to end")
    parser.add_argument("--publishers", type=int, default=2, help="publishing clients")
    parser.add_argument("--batch", type=int, default=1000, help="rows per batch (writers)")
    parser.add_argument("--write-count", type=int, default=50_000, help="rows per writer test")
    args = parser.parse_args()

    print(
        f"end to end: {args.count} simulated messages (1% malformed), QoS 1, "
        f"{args.publishers} publishers, 1 flow worker, private Mosquitto, local TimescaleDB"
    )
    e2e = end_to_end(args.count, args.publishers)
    print(f"  publish rate       {e2e['publish_rate']:>10,.0f} msg/s")
    print(
        f"  end-to-end rate    {e2e['end_to_end_rate']:>10,.0f} msg/s "
        f"({e2e['seconds']:.1f} s to the last committed row)"
    )
    print(
        f"  backlog drained    {e2e['backlog_rate']:>10,.0f} msg/s "
        f"({args.count} queued while the flow was stopped; first row"
        f" {e2e['backlog_first_row_s']:.1f} s after its start, last row"
        f" {e2e['backlog_seconds']:.1f} s)"
    )
    print(f"batch writers: {args.write_count} rows in batches of {args.batch}")
    for name, rate in write_strategies(args.write_count, args.batch).items():
        print(f"  {name:<20} {rate:>10,.0f} rows/s")


if __name__ == "__main__":
    main()
