"""An indexer's heartbeat: its leases renewed every lease/3 while it works, however long a tile takes.

Claims and saves renew the leases too, but a tile captioned for longer than the lease (a slow CPU
box, a huge tile) would otherwise lapse under its live indexer and be captioned a second time by
another. The heartbeat is a daemon thread of the indexer's own process with its own connection:
the main connection may be inside a long transaction, and a thread cannot outlive its process, so
a process that dies (SIGKILL, power lost) stops renewing at once and its tiles lapse as before.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Iterator

from ..target import ServerTarget
from .connection import connect

# Renewed this often within a lease: two beats may be missed (a slow server, a busy CPU) before
# the lease lapses.
BEATS_PER_LEASE = 3
STOP_WAIT_S = 5.0


class LeaseHeartbeat:
    """Renews the pending tiles `me` holds every `lease_s / 3` until stopped."""

    def __init__(self, target: ServerTarget, me: str):
        self.target, self.me = target, me
        self.interval_s = target.lease_s / BEATS_PER_LEASE
        self.beats = 0  # renewals sent (tests read it)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"tilescribe-lease-{me}", daemon=True)
        self._conn = None

    def start(self) -> "LeaseHeartbeat":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            # Waits for a renewal under way, never for the next one; a daemon thread stuck on a
            # server gone away is left behind rather than holding up the indexer's exit.
            self._thread.join(timeout=STOP_WAIT_S)

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.interval_s):
                self._beat()
        finally:
            self._close()

    def _beat(self) -> None:
        """One renewal; a failure (server restarting, network) is retried at the next beat on a new
        connection: the indexer's own connection says what is wrong, in its own words."""
        try:
            conn = self._conn
            if conn is None or conn.closed or conn.broken:
                self._close()
                conn = self._conn = connect(self.target, readonly=False)
            # SKIP LOCKED: a tile the indexer is saving right now is locked by its own transaction,
            # which renews or releases it; waiting on it could deadlock against that transaction.
            conn.execute(
                "update tiles set lease_until = now() + make_interval(secs => %(lease)s) where id in (select id"
                " from tiles where claimed_by = %(me)s and status = 'pending' for update skip locked)",
                {"lease": self.target.lease_s, "me": self.me})
            self.beats += 1
        except Exception:  # psycopg.Error, TileScribeError from connect: try again at the next beat
            self._close()

    def _close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None


@contextlib.contextmanager
def heartbeat(target: ServerTarget, me: str) -> Iterator[LeaseHeartbeat]:
    """A running LeaseHeartbeat for the body of the with-statement, stopped on the way out."""
    beat = LeaseHeartbeat(target, me).start()
    try:
        yield beat
    finally:
        beat.stop()
