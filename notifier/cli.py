"""``noc alerts ...`` (list, show, ack, resolve, false-alarm) and ``noc notify`` (dispatcher)."""

from __future__ import annotations

import argparse
import signal
import threading
from typing import TYPE_CHECKING, Any

from noc.settings import Settings

if TYPE_CHECKING:
    Sub = argparse._SubParsersAction[argparse.ArgumentParser]


def register(sub: Sub) -> None:
    """Add ``alerts`` and ``notify`` to the ``noc`` parser."""
    _register_alerts(sub)
    _register_notify(sub)


def _register_alerts(sub: Sub) -> None:
    alerts = sub.add_parser("alerts", help="list alerts and acknowledge, resolve or dismiss them")
    alerts_sub = alerts.add_subparsers(dest="alerts_command", required=True)

    ls = alerts_sub.add_parser("list", help="a tenant's alerts, newest first")
    ls.add_argument("--tenant", type=int, required=True, help="tenant id")
    ls.add_argument("--status", choices=("open", "new", "acknowledged", "resolved", "false_alarm"))
    ls.add_argument("--severity", choices=("critical", "high", "medium", "low", "info"))
    ls.add_argument("--limit", type=int, default=50, help="most alerts to list (50)")
    ls.add_argument("--before", type=int, default=None, help="only alerts with a smaller id")
    ls.set_defaults(handler=_cmd_list)

    show = alerts_sub.add_parser("show", help="one alert with its history")
    show.add_argument("alert_id", type=int)
    show.add_argument("--tenant", type=int, required=True, help="tenant id")
    show.set_defaults(handler=_cmd_show)

    for name, action, help_text in (
        ("ack", "acknowledged", "acknowledge an alert and tell its device (MQTT, QoS 1)"),
        ("resolve", "resolved", "close an alert as resolved"),
        ("false-alarm", "false_alarm", "close an alert as a false alarm"),
    ):
        p = alerts_sub.add_parser(name, help=help_text)
        p.add_argument("alert_id", type=int)
        p.add_argument("--tenant", type=int, required=True, help="tenant id")
        p.add_argument("--by", required=True, help="who is making the change")
        p.add_argument("--note", default="", help="free text for the alert's history")
        p.set_defaults(handler=_cmd_transition, action=action)


def _register_notify(sub: Sub) -> None:
    notify = sub.add_parser(
        "notify",
        help="run the notification dispatcher (outbox -> Apprise, rate limits, escalation)",
        description="Drain the notification outbox until stopped (SIGTERM/SIGINT). Several "
        "dispatchers may run at once. Settings: NOC_NOTIFY_* (see `noc config`).",
    )
    notify.add_argument("--once", action="store_true", help="exit when nothing is due")
    notify.add_argument("--name", default=None, help="dispatcher name in leases and logs")
    notify.set_defaults(handler=_cmd_notify)


def _cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    from storage.alerts import list_alerts
    from storage.db import connect

    with connect(settings.database.url, autocommit=True, application_name="noc-cli") as conn:
        alerts = _checked(
            list_alerts, conn, args.tenant, args.status, args.severity, args.limit, args.before
        )
    for a in alerts:
        print(f"{a.alert_id:>8}  {a.status:<12} {a.severity:<8} {a.alert_type:<24} "
              f"{a.source_id:<16} x{a.count:<6} {a.last_seen.isoformat(timespec='seconds')}  "
              f"{a.message}")  # fmt: skip
    if not alerts:
        print("no alerts")
    return 0


def _cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    from storage.alerts import get_alert
    from storage.db import connect

    with connect(settings.database.url, autocommit=True, application_name="noc-cli") as conn:
        detail = get_alert(conn, args.tenant, args.alert_id)
    a = detail.alert
    print(f"alert {a.alert_id}: {a.severity} {a.alert_type} from {a.source_id} ({a.status})")
    print(f"  {a.message}")
    print(f"  count {a.count}, first {a.first_seen.isoformat()}, last {a.last_seen.isoformat()}")
    print(f"  sent: sms {a.sms_sent}, email {a.email_sent}, push {a.push_sent}; "
          f"escalation tier {a.escalation_tier}")  # fmt: skip
    for h in detail.history:
        change = f"{h.from_status or '-'} -> {h.to_status or '-'}"
        note = f"  ({h.note})" if h.note else ""
        print(f"  {h.ts.isoformat()}  {h.action:<12} by {h.actor:<16} {change}{note}")
    return 0


def _cmd_transition(args: argparse.Namespace, settings: Settings) -> int:
    from notifier.errors import CommandPublishError
    from notifier.mqtt_commands import publish_command
    from storage.alerts import acknowledge, mark_false_alarm, resolve
    from storage.db import connect

    operation = {"acknowledged": acknowledge, "resolved": resolve,
                 "false_alarm": mark_false_alarm}[args.action]  # fmt: skip
    with connect(settings.database.url, autocommit=True, application_name="noc-cli") as conn:
        result = _checked(operation, conn, args.tenant, args.alert_id, args.by, args.note)
    a = result.alert
    at = a.acknowledged_at if args.action == "acknowledged" else a.closed_at
    print(f"alert {a.alert_id} {args.action} by {args.by} at {at.isoformat() if at else '?'}")
    if result.command is not None:
        m = settings.mqtt
        try:
            topic = publish_command(m.host, m.port, m.commands_topic, result.command,
                                    username=m.username, password=m.password)  # fmt: skip
        except CommandPublishError as exc:
            raise CommandPublishError(
                f"alert {a.alert_id} is {args.action}, but its device was not told: {exc}"
            ) from exc
        print(f"sent {result.command.payload['type']} to {topic}")
    return 0


def _cmd_notify(args: argparse.Namespace, settings: Settings) -> int:
    from prometheus_client import start_http_server

    from noc import logs
    from notifier.dispatcher import config_from_settings

    logs.configure(settings.log_level)
    dispatcher = config_from_settings(settings, claimer=args.name).build()
    if args.once:
        report = dispatcher.drain()
        dispatcher.close()
        print(f"sent {report.sent}, retrying {report.retried}, failed {report.failed}, "
              f"suppressed {report.suppressed}, escalated {report.escalated}")  # fmt: skip
        return 0
    if settings.notify.metrics_port:
        start_http_server(settings.notify.metrics_port, addr="127.0.0.1")
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        del signum, frame
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    dispatcher.run(stop)
    return 0


def _checked(fn: Any, *args: Any) -> Any:
    """Call ``fn``; a ValueError (bad argument) becomes a one-line CLI error."""
    from notifier.errors import NotifierError

    try:
        return fn(*args)
    except ValueError as exc:
        raise NotifierError(str(exc)) from exc
