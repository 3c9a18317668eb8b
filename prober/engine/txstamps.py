"""Pairing each kernel TX timestamp with the send it belongs to.

A raw send socket with ``SO_TIMESTAMPING`` and ``SOF_TIMESTAMPING_OPT_ID`` gets each
transmit timestamp back on its error queue with an id in ``sock_extended_err.ee_data``
(Documentation/networking/timestamping.rst, 1.3.3). Kernels give that id in one of two ways,
and prober probes once, per send socket, which one it has (``sockets.per_send_ids_supported``):

- ``per-send`` (Linux 6.13+): every sendmsg carries its own id in an ``SCM_TS_OPT_ID``
  control message and the stamp comes back with exactly that id (``_sock_tx_timestamp`` in
  include/net/sock.h: ``*tskey = sockc->ts_opt_id``). Nothing to count, nothing to get wrong.
- ``per-socket`` (Linux 5.0+, and 4.19.238+ where the fix was backported): the id is the
  socket's own u32 counter, ``*tskey = sk->sk_tskey++`` (``atomic_inc_return(...) - 1`` in
  later kernels), which starts at 0 when OPT_ID is set on the socket. Raw sockets that write
  their own IP header only got a key with commit 8f932f762e79 ("net: add missing
  SOF_TIMESTAMPING_OPT_ID support", December 2018); before it every stamp carries key 0.
  The counter is advanced in ``skb_setup_tx_timestamp``, which ``raw_send_hdrinc`` (and
  ``rawv6_send_hdrinc``) call after routing and allocation and before the netfilter hooks. So
  a failed send takes a key or not depending on where it failed: a routing error
  (EHOSTUNREACH, ENETUNREACH), EMSGSIZE, EACCES or an allocation failure (EAGAIN, ENOBUFS)
  returns before the key is taken; a packet dropped by netfilter (EPERM) or a header that
  could not be copied (EFAULT) had already taken one. A qdisc drop (ENOBUFS) is reported as
  success to a socket without IP_RECVERR (``raw_send_hdrinc``: ``err = 0``), so it took a key
  like any send and its stamp never comes. ``KEY_TAKEN_BY_FAILED_SEND`` is that list. One
  case cannot be told apart: an skb allocation that fails (out of memory) also ends in
  ENOBUFS, reported as success, without a key; after one the count runs one ahead. It is
  not detected (rare: the allocation may sleep), so it is documented in docs/syn.md.

The id reaches user space in ``__skb_complete_tx_timestamp`` (net/core/skbuff.c), which
copies ``skb_shinfo(skb)->tskey`` into ``ee_data`` when OPT_ID is on (made relative only for
TCP) and queues the stamp with ``sock_queue_err_skb``; a stamp that does not fit the error
queue's budget (SO_RCVBUF) is dropped there, which is one more reason entries expire.

Either way a stamp is accepted only if it is not earlier than the user-space clock read just
before its send (both are CLOCK_REALTIME): a stamp paired with a later send than its own is
refused and counted, never used. A stamp whose id nobody waits for is counted as unmatched
(on a 4.19 kernel before 4.19.238 every stamp after the first is). Entries whose stamp never
comes (a driver without software TX stamps, a qdisc drop) expire after ``STAMP_WAIT_S``, so
a device that gives none cannot grow memory: in-flight entries are bounded by the send rate
times that wait. Expiry is O(1) per entry: ids are issued in order, so the oldest are first.
"""

from __future__ import annotations

import errno
import os
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, TypeVar

from prober.errors import UsageError

ENVIRONMENT_VARIABLE = "PROBER_TX_STAMP_ID"
# Software TX stamps come back within microseconds of the send (the driver's xmit); a
# queueing discipline can hold a packet longer, never seconds.
STAMP_WAIT_S = 2.0
KEY_TAKEN_BY_FAILED_SEND = frozenset({errno.EPERM, errno.EFAULT})
_U32 = 0xFFFFFFFF

Owner = TypeVar("Owner")


class TxStampId(StrEnum):
    """How a kernel numbers TX timestamps (see the module docstring)."""

    PER_SEND = "per-send"
    PER_SOCKET = "per-socket"


class InvalidTxStampId(UsageError):
    """PROBER_TX_STAMP_ID holds a value that is not a method."""


def forced_method(environ: Mapping[str, str] = os.environ) -> TxStampId | None:
    """The method PROBER_TX_STAMP_ID forces, or None to probe the kernel.

    Raises:
        InvalidTxStampId: the variable is set to anything but the methods' names (or empty).
    """
    value = environ.get(ENVIRONMENT_VARIABLE, "").strip()
    if not value:
        return None
    try:
        return TxStampId(value)
    except ValueError:
        names = ", ".join(method.value for method in TxStampId)
        raise InvalidTxStampId(
            f"invalid {ENVIRONMENT_VARIABLE}={value!r}: must be one of {names} (or unset)"
        ) from None


@dataclass(slots=True)
class TxStampStats:
    stamps: int = 0  # stamps read
    unmatched: int = 0  # stamps whose id no send waits for
    refused: int = 0  # stamps earlier than their send: the pairing was wrong, not used
    expired: int = 0  # sends whose stamp never came


@dataclass(frozen=True, slots=True)
class _Pending(Generic[Owner]):
    owner: Owner
    index: int
    user_ns: int  # the user-space clock just before the send
    issued: float  # loop time of the send, for expiry


class TxStampPairing(Generic[Owner]):
    """The sends of one socket waiting for their TX stamps, keyed by the id the kernel
    will return. ``Owner`` is whatever the engine wants back with the stamp (a flight)."""

    def __init__(self, method: TxStampId, wait_s: float = STAMP_WAIT_S) -> None:
        self.method = method
        self.wait_s = wait_s
        self.stats = TxStampStats()
        self._pending: dict[int, _Pending[Owner]] = {}
        self._order: deque[tuple[float, int]] = deque()
        self._next = 0  # the next id: ours (per-send) or the socket's counter (per-socket)

    def __len__(self) -> int:
        return len(self._pending)

    @property
    def tracked(self) -> int:
        """Entries kept for expiry (waiting or already stamped): bounded like the waiting."""
        return len(self._order)

    def next_id(self) -> int:
        """The id the next send will carry (per-send) or take from the counter."""
        return self._next

    def sent(self, owner: Owner, index: int, user_ns: int, now: float) -> None:
        """The send that ``next_id`` was for succeeded."""
        key = self._next
        self._next = (key + 1) & _U32
        self._pending[key] = _Pending(owner, index, user_ns, now)
        self._order.append((now, key))

    def failed(self, error: int) -> None:
        """The send that ``next_id`` was for failed with ``errno`` ``error``."""
        if self.method is TxStampId.PER_SOCKET and error in KEY_TAKEN_BY_FAILED_SEND:
            self._next = (self._next + 1) & _U32

    def stamped(self, key: int, kernel_ns: int) -> tuple[Owner, int, bool] | None:
        """The kernel's stamp ``kernel_ns`` for id ``key``: whose send it was, which segment,
        and whether the stamp may be used (False: it is earlier than the send, so it is some
        other send's); None if no send waits for ``key``."""
        self.stats.stamps += 1
        pending = self._pending.pop(key, None)
        if pending is None:
            self.stats.unmatched += 1
            return None
        if not self._pending:
            # Nothing waits: the expiry order's entries are all stale (amortized O(1) per
            # send; without this, a long run whose stamps all come would keep every one).
            self._order.clear()
        if kernel_ns < pending.user_ns:
            self.stats.refused += 1
            return pending.owner, pending.index, False
        return pending.owner, pending.index, True

    def expire(self, now: float) -> list[Owner]:
        """Forget sends older than ``wait_s`` whose stamp never came; return their owners."""
        order, pending = self._order, self._pending
        horizon = now - self.wait_s
        expired: list[Owner] = []
        while order and order[0][0] <= horizon:
            _, key = order.popleft()
            gone = pending.pop(key, None)
            if gone is not None:
                expired.append(gone.owner)
        self.stats.expired += len(expired)
        return expired
