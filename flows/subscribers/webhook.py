"""``pipetwin alerts webhook URL``: relay every alert revision to another system by HTTP POST.

The body is the alert's JSON (``Alert.to_json``), with headers ``Idempotency-Key: <id>:<revision>``,
``X-Pipetwin-Alert-Id`` and ``X-Pipetwin-Alert-Revision`` so the receiver can drop the repeats that
at-least-once delivery allows. 5xx answers, 408/429, timeouts and connection errors are retried
with exponential backoff; other 4xx answers will not improve with retrying and go straight to the
dead-letter stream, as does an alert still failing after the last retry. Alerts are relayed one at
a time and in stream order, so a failing receiver delays the ones behind it. Only the standard
library speaks HTTP here.
"""

from __future__ import annotations

import http.client
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

import redis

from pipetwin.flows.sinks.redis_sink import dead_stream
from pipetwin.flows.subscribers import AlertGroupReader, Entry, client_for, consume, default_consumer

log = logging.getLogger(__name__)

RETRYABLE_4XX = (408, 429)


@dataclass
class WebhookStats:
    """``retried`` counts repeated attempts (not alerts); ``dead`` counts dead-lettered alerts."""

    delivered: int = 0
    retried: int = 0
    dead: int = 0


@dataclass
class Outcome:
    ok: bool
    retryable: bool
    detail: str


def post_json(target_url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> Outcome:
    """One POST; never raises for HTTP or network trouble, it says what happened instead."""
    request = urllib.request.Request(target_url, data=body, method="POST",
                                     headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            response.read()
            return Outcome(True, False, f"HTTP {response.status}")
    except urllib.error.HTTPError as exc:
        retryable = exc.code >= 500 or exc.code in RETRYABLE_4XX
        return Outcome(False, retryable, f"HTTP {exc.code} {exc.reason}")
    except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException, OSError) as exc:
        return Outcome(False, True, f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}")


def delivery_headers(entry: Entry) -> dict[str, str]:
    alert_id, revision = entry.fields.get("id", ""), entry.fields.get("revision", "")
    return {"Idempotency-Key": f"{alert_id}:{revision}", "X-Pipetwin-Alert-Id": alert_id,
            "X-Pipetwin-Alert-Revision": revision}


class WebhookRelay:
    """Delivers entries to ``target_url``; what it gives up on goes to ``dead_letter_stream``."""

    def __init__(self, r: redis.Redis, target_url: str, dead_letter_stream: str, *, retries: int = 5,
                 backoff_s: float = 0.5, max_backoff_s: float = 60.0, timeout_s: float = 10.0,
                 headers: dict[str, str] | None = None, sleep: Callable[[float], None] = time.sleep):
        self.redis, self.target_url, self.dead_letter_stream = r, target_url, dead_letter_stream
        self.retries, self.backoff_s, self.max_backoff_s = retries, backoff_s, max_backoff_s
        self.timeout_s, self.headers, self.sleep = timeout_s, dict(headers or {}), sleep
        self.stats = WebhookStats()

    def delay(self, attempt: int) -> float:
        """Wait before retry ``attempt`` (1, 2, ...): backoff_s, 2 backoff_s, 4 backoff_s ..."""
        return min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))

    def deliver(self, entry: Entry) -> bool:
        """POST with retries; True if delivered, False if dead-lettered."""
        body = entry.fields.get("json", "").encode()
        headers = {**self.headers, **delivery_headers(entry)}
        outcome = post_json(self.target_url, body, headers, self.timeout_s)
        attempt = 0
        while not outcome.ok and outcome.retryable and attempt < self.retries:
            attempt += 1
            self.stats.retried += 1
            self.sleep(self.delay(attempt))
            outcome = post_json(self.target_url, body, headers, self.timeout_s)
        if outcome.ok:
            self.stats.delivered += 1
            return True
        self.dead_letter(entry, outcome.detail, attempt + 1)
        return False

    def dead_letter(self, entry: Entry, reason: str, attempts: int) -> None:
        """Keep the alert with why and how often it failed; the caller acks the original."""
        fields = {**entry.fields, "source_id": entry.entry_id, "target": self.target_url,
                  "reason": reason, "attempts": str(attempts), "failed_ns": str(time.time_ns())}
        self.redis.xadd(self.dead_letter_stream, fields)
        self.stats.dead += 1
        log.warning("webhook %s: alert %s r%s dead-lettered after %d attempt(s): %s", self.target_url,
                    entry.fields.get("id"), entry.fields.get("revision"), attempts, reason)


def run_webhook(url: str | redis.Redis, network: str, target_url: str, group: str = "webhook",
                retries: int = 5, backoff: float = 0.5, timeout: float = 10.0,
                dead_letter_stream: str | None = None, *, consumer: str | None = None,
                from_start: bool = False, max_backoff: float = 60.0, headers: dict[str, str] | None = None,
                max_items: int | None = None, idle_timeout_s: float | None = None,
                stop: Callable[[], bool] | None = None, sleep: Callable[[float], None] = time.sleep) -> WebhookStats:
    """Relay ``network``'s alerts to ``target_url`` until ``max_items`` entries were handled,
    ``idle_timeout_s`` without news, ``stop()``, or Ctrl-C. Each entry is acknowledged once it was
    delivered or dead-lettered (default stream ``pipetwin:N:alerts:dead``), so a crash mid-delivery
    means the relay sends it again after a restart. Returns the counts."""
    r = client_for(url)
    relay = WebhookRelay(r, target_url, dead_letter_stream or dead_stream(network), retries=retries,
                         backoff_s=backoff, max_backoff_s=max_backoff, timeout_s=timeout, headers=headers,
                         sleep=sleep)
    reader = AlertGroupReader(r, network, group, consumer or default_consumer(), from_start=from_start)

    def handle(entry: Entry) -> bool:
        relay.deliver(entry)
        return True

    consume(reader, handle, max_items=max_items, idle_timeout_s=idle_timeout_s, stop=stop)
    return relay.stats


__all__ = ["run_webhook", "WebhookRelay", "WebhookStats", "post_json", "Outcome"]
