"""Several OpenAI-compatible endpoints shared by the caption threads: who gets the next request.

Each endpoint has an in-flight limit that adapts (halved when a request times out, raised
again one step per `limit` answers), backs off after a failure (one probe at a time until
it answers again), and leaves the run after `max_retries + 1` failure rounds in a row.
A request times out when its endpoint makes no progress, not when it merely waits in the
server's queue: a server that answers one request at a time still answers them all.
"""

from __future__ import annotations

import math
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Optional

from ..errors import Cancelled, EngineError, ModelError
from .http_transport import Target

# Answers in a row that fail validation (fewer variants, not the schema, no choices) before an
# endpoint leaves the run, once another endpoint has given a valid one (issue 22).
INVALID_BEFORE_GONE = 3
MAX_DELAY_S = 60.0  # a Retry-After of an hour must not freeze indexing silently
_WAIT_SLICE_S = 0.1  # waits poll the cancel event this often (no lock is taken to cancel)


@dataclass
class Endpoint:
    index: int
    url: str  # redacted: safe in messages
    target: Target
    max_limit: int
    limit: int = 0
    in_flight: int = 0
    rounds: int = 0  # failure rounds since the last answer
    round_started: float = -math.inf
    backoff_until: float = 0.0
    reached: bool = False  # it answered once: a refused connection is now a restart
    gone: Optional[str] = None  # why it left the run
    last_progress: float = -math.inf  # when it last answered anything
    good_in_a_row: int = 0
    invalid_in_a_row: int = 0  # answers that failed validation since its last valid one
    sustained: Optional[float] = None  # requests it serves at once, measured (EWMA)
    served: Optional[float] = None  # share of a request's time the server spent on it (EWMA)
    counts: dict = field(default_factory=lambda: dict.fromkeys(
        ("sent", "answered", "failed", "abandoned", "refused", "peak", "valid", "invalid"), 0))

    def __post_init__(self):
        self.limit = self.limit or self.max_limit

    def ready(self, now: float) -> bool:
        # While failing, one probe at a time: a broken server is not sent a whole batch.
        allowed = 1 if self.rounds or self.invalid_in_a_row else self.limit
        return self.gone is None and self.backoff_until <= now and self.in_flight < allowed


@dataclass(frozen=True)
class Ticket:
    """One request's claim on an endpoint."""

    endpoint: Endpoint
    sent_at: float
    ahead: int  # requests already in flight there: it may queue behind them


class EndpointPool:
    def __init__(self, endpoints: list[Endpoint], *, timeout_s: float, max_retries: int,
                 backoff_s: float, cancel: threading.Event, start_hint: str):
        self.endpoints = endpoints
        self.timeout_s, self.max_retries, self.backoff_s = timeout_s, max_retries, backoff_s
        self.cancel = cancel
        self.start_hint = start_hint
        self._cond = threading.Condition()

    @property
    def total_limit(self) -> int:
        return sum(e.max_limit for e in self.endpoints)

    def acquire(self, tried_out: set[int]) -> Optional[Ticket]:
        """An endpoint with room, waiting for one as long as needed; None when every endpoint
        still up is in `tried_out` (this tile failed there too often). Raises Cancelled, or
        the run-ending error once every endpoint has left."""
        with self._cond:
            while True:
                if self.cancel.is_set():
                    raise Cancelled("captioning was cancelled")
                live = [e for e in self.endpoints if e.gone is None]
                if not live:
                    raise self._all_gone()
                usable = [e for e in live if e.index not in tried_out]
                if not usable:
                    return None
                now = time.monotonic()
                ready = [e for e in usable if e.ready(now)]
                if ready:
                    chosen = min(ready, key=lambda e: (e.in_flight / e.limit, e.index))
                    ticket = Ticket(chosen, now, chosen.in_flight)
                    chosen.in_flight += 1
                    chosen.counts["sent"] += 1
                    chosen.counts["peak"] = max(chosen.counts["peak"], chosen.in_flight)
                    return ticket
                wake = min((e.backoff_until for e in usable if e.backoff_until > now), default=now + 1)
                self._cond.wait(min(_WAIT_SLICE_S, max(0.001, wake - now)))

    def answered(self, ticket: Ticket, refused: bool = False, service_s: Optional[float] = None) -> None:
        """The endpoint answered (any answer that is not a retryable error): it is alive.
        `service_s`: the time the server says it spent on the request (llama-server's timings)."""
        with self._cond:
            e = ticket.endpoint
            self._release(e)
            now = time.monotonic()
            e.reached = True
            e.last_progress = now
            e.rounds, e.round_started, e.backoff_until = 0, -math.inf, 0.0
            e.counts["refused" if refused else "answered"] += 1
            keeps_up = self._measure(e, ticket, now, service_s)
            e.good_in_a_row += 1
            if keeps_up and e.good_in_a_row >= e.limit and e.limit < e.max_limit:
                e.limit += 1  # probe upward: the server kept up with this many
                e.good_in_a_row = 0

    @staticmethod
    def _measure(e: Endpoint, ticket: Ticket, now: float, service_s: Optional[float]) -> bool:
        """Whether the server keeps up with what we send. From its own service time: a request
        that waited behind `ahead` others for `latency` s was served by about
        (ahead + 1) x service / latency slots. More in flight than that + 1 only wait in its
        queue (where another server could have taken them), so the limit comes down to it."""
        latency = now - ticket.sent_at
        if not service_s or service_s <= 0 or latency <= 0:
            return True  # the server does not say (vLLM, Ollama): only timeouts lower the limit
        served = min(service_s / latency, 1.0)
        slots = (ticket.ahead + 1) * served
        e.sustained = slots if e.sustained is None else 0.7 * e.sustained + 0.3 * slots
        e.served = served if e.served is None else 0.7 * e.served + 0.3 * served
        # Only when most of the time went to waiting: a server's own figure may leave out
        # some of its work, and that must not cut a server that serves all we send.
        if e.served < 0.5:
            target = max(1, min(e.max_limit, math.ceil(e.sustained - 0.25) + 1))
            if target < e.limit:
                e.limit, e.good_in_a_row = target, 0
            return False
        return True

    def failed(self, ticket: Ticket, reason: str, *, retry_after: Optional[float] = None,
               timed_out: bool = False, answered: bool = False, connected: bool = True) -> None:
        """A retryable failure: back off this endpoint; after too many rounds it leaves the run."""
        with self._cond:
            e = ticket.endpoint
            self._release(e)
            now = time.monotonic()
            e.counts["failed"] += 1
            e.good_in_a_row = 0
            e.reached = e.reached or connected  # it was there: a refusal later is a restart
            if answered:  # an HTTP error status is an answer: the server made progress
                e.last_progress = now
            if timed_out:
                e.counts["abandoned"] += 1  # closed before resending: never two copies running
            if ticket.sent_at < e.round_started:
                return  # in flight before this round began: the same outage, not a new round
            if timed_out:
                e.limit = max(1, e.limit // 2)  # once per round: it sustains fewer than we sent
            e.rounds += 1
            e.round_started = now
            if e.rounds > self.max_retries:
                e.gone = (f"The captioning server at {e.url} failed {e.rounds} times in a row "
                          f"(last: {reason}). Check the server's log; if it is overloaded, lower "
                          "--parallel (parallel_requests) or raise --timeout (timeout_s).")
                return
            delay = self.backoff_s * 2 ** (e.rounds - 1) * random.uniform(0.5, 1.5)
            e.backoff_until = now + min(max(delay, retry_after or 0.0), MAX_DELAY_S)

    def valid_answer(self, e: Endpoint) -> None:
        with self._cond:
            e.counts["valid"] += 1
            e.invalid_in_a_row = 0
            self._cond.notify_all()

    def invalid_answer(self, e: Endpoint, reason: str) -> None:
        """An answer that failed validation: one probe at a time, backed off; after
        INVALID_BEFORE_GONE in a row, while another endpoint answers validly, it leaves the run."""
        with self._cond:
            e.counts["invalid"] += 1
            e.invalid_in_a_row += 1
            now = time.monotonic()
            others_valid = any(o is not e and o.gone is None and o.counts["valid"] for o in self.endpoints)
            if e.invalid_in_a_row >= INVALID_BEFORE_GONE and others_valid:
                e.gone = (f"The captioning server at {e.url} gave {e.invalid_in_a_row} answers in a row that "
                          f"failed validation (last: {reason}) while another server's answers were valid: it "
                          "may serve another model or ignore the answer schema. It left this run; check what it "
                          "serves.")
            elif others_valid:  # another server answers well: send it this one's share for a while
                delay = self.backoff_s * 2 ** (e.invalid_in_a_row - 1) * random.uniform(0.5, 1.5)
                e.backoff_until = max(e.backoff_until, now + min(delay, MAX_DELAY_S))
            else:  # the only server with answers: backing off would only stall the run (up to 60 s a try)
                e.invalid_in_a_row = 0
            self._cond.notify_all()

    def leave(self, e: Endpoint, message: str) -> None:
        """The endpoint leaves the run before any request (it serves another model)."""
        with self._cond:
            e.gone = message
            self._cond.notify_all()

    def drop(self, ticket: Ticket, message: str) -> None:
        """The endpoint cannot be used in this run (no such host, nobody listening, TLS)."""
        with self._cond:
            self._release(ticket.endpoint)
            ticket.endpoint.gone = message

    def released(self, ticket: Ticket) -> None:
        """The request ended without telling anything about the endpoint (cancelled)."""
        with self._cond:
            self._release(ticket.endpoint)

    def _release(self, e: Endpoint) -> None:
        e.in_flight -= 1
        self._cond.notify_all()

    def refused_connection(self, ticket: Ticket) -> str:
        return (f"Cannot connect to the captioning server at {ticket.endpoint.url}: connection refused. "
                f"Is the server running? Start it with, for example: {self.start_hint} "
                "and check the URL and port in the settings.")

    def still_waiting(self, ticket: Ticket):
        """The give-up rule while a request waits for its first byte: no answer from this
        endpoint for timeout_s (it is stuck, not queueing), or longer than timeout_s for
        each request that was ahead of it (a total bound)."""
        e, t = ticket.endpoint, self.timeout_s
        cap = t * (ticket.ahead + 2)  # one timeout of slack: others' requests may be queued too

        def check(now: float) -> Optional[str]:
            if now - max(ticket.sent_at, e.last_progress) > t:
                return f"no answer within timeout_s={t:g} s, and no other answer from the server meanwhile"
            if now - ticket.sent_at > cap:
                return (f"no answer within {cap:g} s (timeout_s={t:g} s for it, for each of the "
                        f"{ticket.ahead} requests sent before it, and one more)")
            return None
        return check

    def _all_gone(self) -> ModelError:
        if len(self.endpoints) == 1:
            message = self.endpoints[0].gone
        else:
            message = (f"All {len(self.endpoints)} captioning servers left the run: "
                       + " | ".join(e.gone for e in self.endpoints))
        if any(e.reached for e in self.endpoints):
            return EngineError(message + " Tiles captioned so far are kept: run the same command "
                               "again once a server is back.")
        return ModelError(message)

    def stats(self) -> list[dict]:
        with self._cond:
            return [{"url": e.url, "limit": e.limit, "gone": e.gone, **e.counts,
                     "sustained": None if e.sustained is None else round(e.sustained, 2)}
                    for e in self.endpoints]
