"""Publish simulated messages to the broker, rate-limited, confirmed, never silently lost.

:func:`publish` sends every message of an iterable with paho-mqtt 2 and returns only when the
broker has confirmed all of them (QoS 1: PUBACK, QoS 2: PUBCOMP; QoS 0: written to the
socket, which is all QoS 0 can promise). The rate is capped by a token bucket on a monotonic
clock (bursts up to ``burst_s`` worth of messages). At most ``max_inflight`` messages are
unconfirmed at any time, which bounds memory.

If the broker drops the connection the publisher reconnects with backoff; paho resends the
QoS 1/2 messages it holds (with the DUP flag), and QoS 0 messages not known to be written are
published again. When the broker stays away (or confirms nothing) for longer than
``reconnect_timeout_s`` a :class:`PublishError` says how many messages are unconfirmed: a
failure is loud, never a silent loss.
"""

from __future__ import annotations

import contextlib
import math
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from simulator.errors import PublishError, ScenarioError
from simulator.scenario import SimMessage

__all__ = ["PublishResult", "PublisherConfig", "TokenBucket", "publish"]


class TokenBucket:
    """Allow ``rate`` events per second on average, bursts up to ``burst`` events.

    ``clock`` and ``sleep`` are injectable (tests use a fake clock). Not thread-safe.
    """

    def __init__(
        self,
        rate: float,
        burst: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not (rate > 0 and burst >= 1):
            raise ScenarioError("token bucket needs rate > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._tokens = burst
        self._last = clock()

    def acquire(self) -> None:
        """Take one token, sleeping until the bucket is out of debt.

        ``sleep`` may return early (the publisher passes its network loop, which returns when
        packets arrive); the debt is then carried into the next call, so the long-run rate holds.
        """
        self._refill()
        self._tokens -= 1.0
        while self._tokens < 0.0:
            before = self._tokens
            self._sleep(-self._tokens / self.rate)
            self._refill()
            if self._tokens <= before:  # the clock did not move: carry the debt forward
                return

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now


@dataclass(frozen=True)
class PublisherConfig:
    """Where and how to publish. Validated on construction."""

    host: str = "127.0.0.1"
    port: int = 1883
    username: str = ""
    password: str = ""
    client_id: str = field(default_factory=lambda: f"noc-sim-{uuid.uuid4().hex[:12]}")
    qos: int = 1
    rate: float | None = 200.0
    """Messages per second; None publishes as fast as the broker confirms."""
    burst_s: float = 0.1
    """The token bucket holds this many seconds' worth of messages."""
    max_inflight: int = 1000
    """Most messages sent but not yet confirmed."""
    keepalive_s: int = 30
    connect_timeout_s: float = 10.0
    reconnect_timeout_s: float = 30.0
    """Give up (PublishError) when the broker stays unreachable this long."""

    def __post_init__(self) -> None:
        if self.qos not in (0, 1, 2):
            raise ScenarioError(f"qos={self.qos}: must be 0, 1 or 2")
        if self.rate is not None and not (self.rate > 0 and math.isfinite(self.rate)):
            raise ScenarioError(f"rate={self.rate}: must be a positive number of messages/s")
        if not 0 < self.port < 65536:
            raise ScenarioError(f"port={self.port}: must be a TCP port")
        if self.max_inflight < 1 or self.max_inflight > 65_000:
            raise ScenarioError("max_inflight must be from 1 to 65000")
        if not (self.burst_s > 0 and self.connect_timeout_s > 0 and self.reconnect_timeout_s > 0):
            raise ScenarioError("burst_s and the timeouts must be > 0")


@dataclass
class PublishResult:
    """What :func:`publish` confirmed."""

    sent: int = 0
    valid: int = 0
    invalid: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)
    elapsed_s: float = 0.0
    qos: int = 1
    reconnects: int = 0
    republished: int = 0
    """QoS 0 messages published again because there was no connection the first time."""

    @property
    def rate(self) -> float:
        """Confirmed messages per second of wall time."""
        return self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def summary(self) -> str:
        """One line for the terminal."""
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.by_kind.items(), key=_by_count))
        return (
            f"published {self.sent} messages ({self.valid} valid, {self.invalid} malformed) "
            f"in {self.elapsed_s:.2f} s = {self.rate:.0f} msg/s at QoS {self.qos}, "
            f"{self.reconnects} reconnects [{kinds}]"
        )


def _by_count(item: tuple[str, int]) -> tuple[int, str]:
    return (-item[1], item[0])


def publish(messages: Iterable[SimMessage], config: PublisherConfig) -> PublishResult:
    """Publish every message, wait until all are confirmed, return the counts.

    Raises :class:`PublishError` (one line) if the broker cannot be reached, refuses the
    connection, stays away or confirms nothing for longer than ``config.reconnect_timeout_s``.
    """
    return _Publisher(config).run(messages)


class _Publisher:
    """One connection and the bookkeeping of unconfirmed messages.

    Single-threaded on purpose: the paho network loop runs in this thread between publishes
    (``client.loop``), which is markedly faster than paho's background thread fighting the
    publisher for the GIL. paho's own in-flight limit is switched off (0) because paho rescans
    its whole queue on every PUBACK when one is set; this class enforces ``max_inflight``.
    """

    def __init__(self, config: PublisherConfig) -> None:
        self.cfg = config
        self.pending: dict[int, SimMessage] = {}  # mid -> message, sent and unconfirmed
        self.early: set[int] = set()  # QoS 0 confirmations that came inside publish()
        self.backlog: deque[SimMessage] = deque()  # to publish (again), oldest first
        self.connected = False
        self.refused: str | None = None
        self.connects = 0
        self.result = PublishResult(qos=config.qos)
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=config.client_id,
            clean_session=True,
            protocol=mqtt.MQTTv311,
        )
        if config.username:
            client.username_pw_set(config.username, config.password or None)
        client.max_inflight_messages_set(0)
        client.max_queued_messages_set(0)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        self.client = client

    # -- paho callbacks (called from client.loop / publish, in this thread) -----------------

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Any,
    ) -> None:
        del client, userdata, flags, properties
        if reason_code.is_failure:
            self.refused = str(reason_code)
        else:
            self.connected = True
            self.connects += 1

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Any,
    ) -> None:
        del client, userdata, flags, reason_code, properties
        self.connected = False

    def _on_publish(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Any,
    ) -> None:
        del client, userdata, reason_code, properties
        msg = self.pending.pop(mid, None)
        if msg is None:
            self.early.add(mid)
        else:
            self._confirmed(msg)

    def _confirmed(self, msg: SimMessage) -> None:
        r = self.result
        r.sent += 1
        if msg.valid:
            r.valid += 1
        else:
            r.invalid += 1
        r.by_kind[msg.kind] += 1

    # -- the loop ---------------------------------------------------------------------------

    def run(self, messages: Iterable[SimMessage]) -> PublishResult:
        cfg = self.cfg
        try:
            self.client.connect(cfg.host, cfg.port, keepalive=cfg.keepalive_s)
        except (OSError, ValueError) as exc:
            raise PublishError(f"cannot connect to MQTT broker {self._where}: {exc}") from None
        try:
            self._await_connack(time.monotonic() + cfg.connect_timeout_s)
            if not self.connected:
                raise PublishError(
                    f"MQTT broker {self._where} did not accept the connection within "
                    f"{cfg.connect_timeout_s:g} s"
                )
            started = time.monotonic()
            bucket = None
            if cfg.rate is not None:
                burst = max(1.0, cfg.rate * cfg.burst_s)
                bucket = TokenBucket(cfg.rate, burst, sleep=self._pump)
            for n, msg in enumerate(messages, 1):
                if bucket is not None:
                    bucket.acquire()
                self.backlog.append(msg)
                self._flush()
                if n % 32 == 0:
                    self._pump(0.0)  # read PUBACKs, answer keepalive
            self._wait_until(lambda: not self.pending and not self.backlog)
            self.result.elapsed_s = time.monotonic() - started
            self.result.reconnects = max(0, self.connects - 1)
            return self.result
        finally:
            self.client.disconnect()
            with contextlib.suppress(Exception):
                self.client.loop(0.05)  # let the DISCONNECT go out

    @property
    def _where(self) -> str:
        return f"{self.cfg.host}:{self.cfg.port}"

    def _flush(self) -> None:
        """Publish the backlog, keeping at most max_inflight messages unconfirmed."""
        cfg = self.cfg
        while self.backlog:
            if len(self.pending) >= cfg.max_inflight or not self.connected:
                self._wait_until(
                    lambda: len(self.pending) < cfg.max_inflight and self.connected, flush=False
                )
            msg = self.backlog[0]
            info = self.client.publish(msg.topic, msg.payload, qos=cfg.qos)
            rc = info.rc
            if cfg.qos > 0:
                # Queued in paho unless the queue was full: paho (re)sends it until PUBACK,
                # also across reconnects (with the DUP flag).
                if rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
                    self._pump(0.01)
                    continue
            elif rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                # QoS 0 that found no connection: publish it again once reconnected.
                self.result.republished += 1
                self._pump(0.01)
                continue
            self.backlog.popleft()
            if info.mid in self.early:
                self.early.discard(info.mid)
                self._confirmed(msg)
            else:
                self.pending[info.mid] = msg

    def _wait_until(self, done: Callable[[], bool], flush: bool = True) -> None:
        """Run the network loop until ``done()`` (publishing the backlog meanwhile if
        ``flush``). Raise PublishError if the broker confirms nothing for
        ``reconnect_timeout_s``."""
        limit = self.cfg.reconnect_timeout_s
        seen, progress_at = self.result.sent, time.monotonic()
        while not done():
            if flush and self.backlog and self.connected:
                self._flush()
                continue
            self._pump(0.05)
            now = time.monotonic()
            if self.result.sent != seen:
                seen, progress_at = self.result.sent, now
            elif now - progress_at > limit:
                raise PublishError(
                    f"MQTT broker {self._where} confirmed nothing for {limit:g} s; "
                    f"{len(self.pending) + len(self.backlog)} messages unconfirmed"
                )

    def _pump(self, timeout: float) -> None:
        """Process network events for up to ``timeout`` s; reconnect if the link is down."""
        rc = self.client.loop(timeout)
        if rc == MQTTErrorCode.MQTT_ERR_SUCCESS and self.refused is None:
            return
        if self.refused is not None:
            raise PublishError(f"MQTT broker {self._where} refused the connection: {self.refused}")
        self.connected = False
        self._reconnect()

    def _reconnect(self) -> None:
        """Reconnect with backoff until ``reconnect_timeout_s`` has passed."""
        cfg = self.cfg
        deadline = time.monotonic() + cfg.reconnect_timeout_s
        delay = 0.1
        while True:
            try:
                self.client.reconnect()
            except OSError:
                pass
            else:
                self._await_connack(min(deadline, time.monotonic() + cfg.connect_timeout_s))
                if self.connected:
                    if cfg.qos == 0:  # not known to be written: lost with the old socket
                        self.backlog.extendleft(reversed(self.pending.values()))
                        self.result.republished += len(self.pending)
                        self.pending.clear()
                        self.early.clear()
                    return
            if time.monotonic() + delay > deadline:
                raise PublishError(
                    f"MQTT broker {self._where} unreachable for {cfg.reconnect_timeout_s:g} s; "
                    f"{len(self.pending) + len(self.backlog)} messages unconfirmed"
                )
            time.sleep(delay)
            delay = min(delay * 2, 2.0)

    def _await_connack(self, deadline: float) -> None:
        """Run the network loop until CONNACK, a refusal, a lost link or ``deadline``."""
        while not self.connected and time.monotonic() < deadline:
            rc = self.client.loop(0.05)
            if self.refused is not None:
                raise PublishError(
                    f"MQTT broker {self._where} refused the connection: {self.refused}"
                )
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                return
