"""Sub-commands that start components (simulator, flow, API, demo). Wired from ``noc.cli``."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from noc.settings import Settings


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the component sub-commands to the ``noc`` parser."""
    _register_simulate(sub)
    from notifier.cli import register as register_notifier  # noc alerts ..., noc notify

    register_notifier(sub)
    from api.cli import register as register_api  # noc api, noc token

    register_api(sub)


# --- noc simulate -------------------------------------------------------------------------


def _register_simulate(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sim = sub.add_parser(
        "simulate",
        help="seed the registry with a simulated estate and publish its MQTT traffic",
        description=(
            "Seed the registry with a simulated estate (tenants, sites, zones, guards, devices, "
            "loopback-only recipients), then publish realistic device traffic, including a "
            "fraction of malformed messages, and wait until the broker has confirmed all of it."
        ),
    )
    sim.add_argument("--rate", type=float, default=200.0, help="messages per second (200)")
    sim.add_argument("--duration", type=float, default=60.0, help="seconds of traffic (60)")
    sim.add_argument("--count", type=int, default=None, help="publish this many, not --duration")
    sim.add_argument("--seed", type=int, default=1, help="random seed: same seed, same estate (1)")
    sim.add_argument("--guards", type=int, default=20, help="number of guards (20)")
    sim.add_argument("--tenants", type=int, default=2, help="number of tenants (2)")
    sim.add_argument("--sites", type=int, default=3, help="sites per tenant (3)")
    sim.add_argument(
        "--malformed", type=float, default=0.01, help="fraction of malformed messages (0.01)"
    )
    sim.add_argument("--qos", type=int, default=1, choices=(0, 1, 2), help="MQTT QoS (1)")
    sim.add_argument(
        "--start",
        type=datetime.fromisoformat,
        default=None,
        help="simulated time of the first message, ISO-8601 with offset (default: now)",
    )
    sim.add_argument(
        "--notify-url",
        default=None,
        help="loopback Apprise URL of the example recipients (json://127.0.0.1:8025/notify)",
    )
    sim.add_argument(
        "--no-seed-registry",
        action="store_true",
        help="do not touch the database (the registry is already seeded)",
    )
    sim.set_defaults(handler=_cmd_simulate)


def _cmd_simulate(args: argparse.Namespace, settings: Settings) -> int:
    from simulator.errors import ScenarioError
    from simulator.publisher import PublisherConfig, publish
    from simulator.scenario import ScenarioConfig

    scenario = ScenarioConfig(
        seed=args.seed,
        tenants=args.tenants,
        sites_per_tenant=args.sites,
        guards=args.guards,
        malformed=args.malformed,
    ).build()
    if args.count is None and not args.duration >= 0:
        raise ScenarioError(f"--duration {args.duration}: must be >= 0 seconds")
    publisher = PublisherConfig(
        host=settings.mqtt.host,
        port=settings.mqtt.port,
        username=settings.mqtt.username,
        password=settings.mqtt.password,
        keepalive_s=settings.mqtt.keepalive_s,
        qos=args.qos,
        rate=args.rate,
    )
    start: datetime = args.start or datetime.now(UTC)
    messages = scenario.messages(
        start,
        args.rate,
        duration_s=None if args.count is not None else args.duration,
        count=args.count,
    )  # validates rate, count and start before anything is written

    if not args.no_seed_registry:
        from dataclasses import replace

        from storage.db import connect, redact
        from storage.registry_seed import check_migrated, example_recipients, seed_registry

        registry = scenario.registry
        if args.notify_url is not None:
            recipients = example_recipients(registry.tenants, args.notify_url)
            registry = replace(registry, recipients=recipients)
        with connect(settings.database.url, autocommit=True, application_name="noc-simulate") as c:
            check_migrated(c)
            seed_registry(c, registry)
        counts = ", ".join(f"{n} {table}" for table, n in registry.counts().items())
        print(f"registry seeded in {redact(settings.database.url)}: {counts}", flush=True)

    result = publish(messages, publisher)
    print(result.summary(), flush=True)
    return 0
