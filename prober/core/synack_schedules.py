"""When a peer retransmits an unanswered SYN/ACK, by stack, and when silence means it gave up.

A listener that keeps a request (SYN-RECEIVED) retransmits its SYN/ACK until the final ACK
comes or its retry limit is reached, then drops the request silently. The wire never shows
that moment, only that no copy came when one was due. *When* one is due depends on the stack:
the first retransmission comes 1 s (Linux, FreeBSD 13+, macOS, RFC 6298), 3 s (RFC 1122/2988,
Windows, lwIP, Linux before 3.1, older FreeBSD) or 6 s (4.4BSD-derived stacks, whose first RTO
is srtt + 2 * rttvar of the default 3 s RTT) after the SYN/ACK, and the intervals then grow by
a factor of 2 at most, up to a cap (64 s on BSDs, 120 s on Linux, 240 s = 2 MSL in RFC 1122).

The silence rule (``silence_needed``) therefore does not assume one schedule. Before any
retransmission it waits ``SILENCE_FACTOR`` times the largest known first interval plus
``SILENCE_SLACK`` (9.5 s): a quiet peer whose copies follow any schedule below would have
shown one by then, even on a coarse 500 ms timer tick. After a retransmission it waits the
same factor times the next interval a doubling schedule allows (twice the last observed one
plus the slack, at most the largest known cap), plus the slack. A silence shorter than that
proves nothing, and a watch that ends first (``--max-wait``, Ctrl-C) says so
(``unsafe_caveat``).

``KNOWN_STACKS`` is the table behind those numbers, each row with its source. It is data for
the rule and for docs/halfopen.md, not a fingerprint: prober does not guess the peer's stack.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, slots=True)
class SynAckSchedule:
    """How one stack retransmits an unanswered SYN/ACK by default.

    ``first_s`` is the time from the SYN/ACK to its first retransmission, ``factor`` how each
    interval grows, ``cap_s`` the longest interval, ``retries`` the default number of
    retransmissions and ``drop_s`` when the request is dropped (since the first SYN/ACK; None
    when the source does not say). ``source`` names the file, line or document.
    """

    name: str
    first_s: float
    factor: float
    cap_s: float | None
    retries: int | None
    drop_s: float | None
    source: str

    def retransmission_times(self) -> tuple[float, ...]:
        """Seconds after the first SYN/ACK at which its default retransmissions come."""
        times: list[float] = []
        interval, at = self.first_s, 0.0
        for _ in range(self.retries or 0):
            at += interval
            times.append(at)
            interval *= self.factor
            if self.cap_s is not None:
                interval = min(interval, self.cap_s)
        return tuple(times)


KNOWN_STACKS: Final[tuple[SynAckSchedule, ...]] = (
    SynAckSchedule(
        "Linux 3.1 and later",
        1.0,
        2.0,
        120.0,
        5,
        63.0,
        "include/net/tcp.h TCP_TIMEOUT_INIT (1*HZ, 'RFC6298 2.1 initial RTO value') and "
        "TCP_RTO_MAX (120*HZ); net/ipv4/inet_connection_sock.c reqsk_timer_handler (timeout "
        "<< num_timeout, capped); Documentation/networking/ip-sysctl.rst tcp_synack_retries "
        "(default 5: the last retransmission at 31 s, the final timeout after 63 s)",
    ),
    SynAckSchedule(
        "Linux before 3.1",
        3.0,
        2.0,
        120.0,
        5,
        189.0,
        "include/net/tcp.h TCP_TIMEOUT_INIT was 3*HZ (RFC 2988) until commit 9ad7c049f0f7 "
        "('tcp: RFC2988bis + taking RTT sample from 3WHS for the passive open side', 3.1); "
        "the 3 s value survives as TCP_TIMEOUT_FALLBACK",
    ),
    SynAckSchedule(
        "FreeBSD 13 and later (syncache)",
        1.0,
        2.0,
        64.0,
        3,
        15.0,
        "sys/netinet/tcp_syncache.c (freebsd-src 003f1eb) syncache_timeout: tcp_rexmit_initial "
        "(1000 ms), then tcp_rexmit_initial * tcp_backoff[n] within tcp_rexmit_min.."
        "TCPTV_REXMTMAX (64 s); SYNCACHE_MAXREXMTS 3 ('1000 ms * (1 + 2 + 4 + 8)')",
    ),
    SynAckSchedule(
        "FreeBSD before 13 (syncache)",
        3.0,
        2.0,
        64.0,
        3,
        45.0,
        "sys/netinet/tcp_syncache.c syncache_timeout with TCPTV_RTOBASE 3 s "
        "(sys/netinet/tcp_timer.h), lowered to 1 s by https://reviews.freebsd.org/D18941",
    ),
    SynAckSchedule(
        "macOS (XNU)",
        1.0,
        2.0,
        64.0,
        None,
        75.0,
        "xnu-11417.101.15 bsd/netinet/tcp_timer.h:177 TCPTV_RTOBASE 1 s, :189 TCPTV_REXMTMAX "
        "64 s, :184 TCPTV_KEEP_INIT 75 s; bsd/netinet/tcp_subr.c:1154 t_rxtcur = "
        "TCPTV_RTOBASE; bsd/netinet/tcp_timer.c:886 tcp_backoff {1, 2, 4, ...}",
    ),
    SynAckSchedule(
        "Mac OS X 10.0 (xnu-123.5)",
        3.0,
        2.0,
        64.0,
        None,
        75.0,
        "xnu-123.5 bsd/netinet/tcp_timer.h:113 TCPTV_RTOBASE 3*PR_SLOWHZ, :125 TCPTV_REXMTMAX; "
        "bsd/netinet/tcp_subr.c:551 t_rxtcur = TCPTV_RTOBASE",
    ),
    SynAckSchedule(
        "4.4BSD-derived (NetBSD, OpenBSD, 4.4BSD-Lite)",
        6.0,
        2.0,
        64.0,
        None,
        75.0,
        "4.4BSD-Lite sys/netinet/tcp_subr.c tcp_newtcpcb: t_rxtcur = ((TCPTV_SRTTBASE >> 2) + "
        "(TCPTV_SRTTDFLT << 2)) >> 1 with TCPTV_SRTTDFLT 3 s (tcp_timer.h): 6 s, on 500 ms "
        "ticks; TCPTV_REXMTMAX 64 s; TCPTV_KEEP_INIT 75 s. NetBSD's RFC 6298 patch "
        "(https://www.netbsd.org/~kbowling/tcp-rfc6298.patch): the pre-measurement RTO 'was "
        "2*TCPTV_SRTTDFLT'",
    ),
    SynAckSchedule(
        "Windows",
        3.0,
        2.0,
        None,
        2,
        21.0,
        "TcpMaxConnectResponseRetransmissions, default 2: 'The delay between the first and "
        "second retransmission is three seconds. This delay doubles after each attempt' "
        "(learn.microsoft.com, windows-2000-server cc938208); TcpInitialRTT default 3 s "
        "(cc938207); later versions: Set-NetTCPSetting -InitialRtoMs",
    ),
    SynAckSchedule(
        "lwIP",
        3.0,
        2.0,
        None,
        None,
        20.0,
        "lwip 3d896ba src/include/lwip/opt.h:1375 LWIP_TCP_RTO_TIME 3000 ms; src/core/tcp.c:"
        "1291-1293 rto = ((sa >> 3) + sv) << tcp_backoff[nrtx], tcp_backoff {1, 2, 3, ...} "
        "(:163); src/include/lwip/priv/tcp_priv.h:129 TCP_SYN_RCVD_TIMEOUT 20000 ms; "
        "500 ms ticks (TCP_SLOW_INTERVAL)",
    ),
    SynAckSchedule(
        "RFC 6298",
        1.0,
        2.0,
        60.0,
        None,
        None,
        "RFC 6298 §2.1 (initial RTO 1 s), §5.5 (back off: double), §2.5 (a maximum of at "
        "least 60 s may be placed)",
    ),
    SynAckSchedule(
        "RFC 1122 / RFC 2988",
        3.0,
        2.0,
        240.0,
        None,
        None,
        "RFC 1122 §4.2.3.1 (initial RTO 3 s; upper bound 2*MSL = 240 s); RFC 2988 §2.1 "
        "(initial RTO 3 s)",
    ),
)

SILENCE_FACTOR: Final = 1.5  # wait this many due intervals for the next SYN/ACK ...
SILENCE_SLACK: Final = 0.5  # ... plus this many seconds (timer ticks of 500 ms, path jitter)
LARGEST_FIRST_S: Final = max(s.first_s for s in KNOWN_STACKS)  # 6 s: 4.4BSD-derived
LARGEST_FACTOR: Final = max(s.factor for s in KNOWN_STACKS)  # 2: every stack doubles
LARGEST_CAP_S: Final = max(s.cap_s for s in KNOWN_STACKS if s.cap_s is not None)  # 240 s
# Linux's default (5 retries: last SYN/ACK at 31 s, interval 16 s) is judged silent
# 31 + 1.5 * 2 * (16 + 0.5) + 0.5 = 81 s after the first SYN/ACK, within this.
DEFAULT_MAX_WAIT: Final = 90.0


def next_interval_bound(last_interval: float | None, first_interval: float) -> float:
    """The longest interval any known schedule allows before the next SYN/ACK.

    Args:
        last_interval: seconds between the last two SYN/ACKs of the request (None before
            the first retransmission).
        first_interval: the largest first interval to allow for (``LARGEST_FIRST_S``
            unless the caller knows the stack).
    """
    if last_interval is None:
        return first_interval
    # The interval just seen bounds the stack's: no known schedule more than doubles it. The
    # slack covers an interval seen short by a timer tick (500 ms on 4.4BSD and lwIP).
    return min(LARGEST_FACTOR * (last_interval + SILENCE_SLACK), LARGEST_CAP_S)


def silence_needed(last_interval: float | None, first_interval: float = LARGEST_FIRST_S) -> float:
    """Seconds of silence after the last SYN/ACK before "the peer gave up" is safe."""
    return SILENCE_FACTOR * next_interval_bound(last_interval, first_interval) + SILENCE_SLACK


def stacks_not_due(waited: float) -> tuple[SynAckSchedule, ...]:
    """The known stacks whose first retransmission could still be coming after ``waited``
    seconds of silence since the SYN/ACK (first interval plus the slack not yet over)."""
    return tuple(s for s in KNOWN_STACKS if s.first_s + SILENCE_SLACK > waited)


def unsafe_caveat(
    waited: float, retransmissions: int, last_interval: float | None, needed: float
) -> str:
    """Why a watch that ended after ``waited`` s of silence cannot say the peer gave up.

    Args:
        waited: seconds from the last SYN/ACK to the end of the watch.
        retransmissions: SYN/ACK retransmissions seen.
        last_interval: between the last two SYN/ACKs (None without a retransmission).
        needed: ``silence_needed`` for that state.
    """
    if retransmissions == 0:
        pending = stacks_not_due(waited)
        firsts = sorted({s.first_s for s in pending})
        if firsts:
            named = " or ".join(f"{f:g} s" for f in firsts)
            return (
                f"no retransmission within {waited:.1f} s of the SYN/ACK; stacks with a "
                f"{named} first timeout would not have retransmitted yet "
                f"({needed:.1f} s of silence are needed to conclude)"
            )
        return (
            f"no retransmission within {waited:.1f} s of the SYN/ACK; a copy lost on the "
            f"path would not show yet ({needed:.1f} s of silence are needed to conclude)"
        )
    assert last_interval is not None
    bound = next_interval_bound(last_interval, LARGEST_FIRST_S)
    return (
        f"the last SYN/ACK came {waited:.1f} s before the watch ended; after an interval of "
        f"{last_interval:.1f} s a doubling schedule may send the next up to {bound:.1f} s "
        f"later ({needed:.1f} s of silence are needed to conclude)"
    )
