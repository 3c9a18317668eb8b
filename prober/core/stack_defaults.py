"""Which known stack's defaults a peer's measured properties match (docs/stack-defaults.md).

``STACKS`` is a table of TCP stacks, each with the default value(s) it has per
``PropertyName`` and the numbered references (``REFERENCES``) the values were read from. A
default that could not be read from a source, or that depends on configuration or hardware
(macOS's window scale follows the socket buffer, its ECN the interface), is listed with
``used=False``: the docs show it, the matcher ignores it.

``match_stack`` compares a profile against every stack. Only properties whose basis is
MEASURED or INFERRED and whose value is not None are compared; a stack agrees or disagrees
only on properties it has a (used) expectation for. The policy:

- fewer than ``MIN_AGREEMENTS`` comparable properties in all: "unknown", too few properties;
- a *candidate* disagrees on nothing and agrees on at least ``MIN_AGREEMENTS`` properties;
- ``stack`` is the single candidate with the most agreements (None when none qualifies, or
  when two stacks tie for the most: the explanation says so);
- ``closest`` is the stack with the fewest disagreements on *fixed* (hard-wired) behaviour,
  then the fewest on *tunable* defaults (``Expectation.tunable``: a sysctl, registry key or
  compile-time option), then the most agreements (None on a tie): "Linux, with
  synack_retries changed" and "Linux with six sysctls changed", not lwIP with two;
- ``agree``/``disagree`` are those of ``stack`` or else of ``closest``; the explanation
  names each disagreement with both values and its knob or "(fixed)" ("synack_retries 2,
  Linux default 5 [tcp_synack_retries]").

A match names a stack's *defaults*, not an operating system: many defaults here are
tunable, and a middlebox on the path can rewrite TTL, options and MSS, or answer in the
peer's place. Pure data and functions, stdlib only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from prober.core.challenge import RATE_SPACING_S, ChallengeAnswer
from prober.core.profile import Basis, CookieMode, Property, PropertyName, StackMatch, Value

MIN_AGREEMENTS: Final = 4  # a candidate agrees on at least this many properties
_COMPARED_BASES: Final = frozenset({Basis.MEASURED, Basis.INFERRED})
_PADDING: Final = frozenset("NE")  # NOP and end-of-list: layout, not options
_MAX_NAMED: Final = 4  # disagreements named in the explanation before "and N more"


@dataclass(frozen=True, slots=True)
class Reference:
    """A source a value was read from: ``number`` is its [n] in docs/stack-defaults.md."""

    number: int
    text: str


REFERENCES: Final[tuple[Reference, ...]] = (
    Reference(
        1,
        "Linux include/net/tcp.h (torvalds/linux 0f2cb7cf8033): TCP_TIMEOUT_INIT "
        "((unsigned)(1*HZ), 'RFC6298 2.1 initial RTO value'), TCP_SYNACK_RETRIES 5 ('31secs "
        "of retransmission'), TCP_TIMEWAIT_LEN (60*HZ), TCP_RTO_MAX (120*HZ)",
    ),
    Reference(
        2,
        "Linux Documentation/networking/ip-sysctl.rst (torvalds/linux a8729efbbb84): "
        "ip_default_ttl 'Default: 64'; tcp_ecn 'Default: 2' (ECN when requested by incoming "
        "connections); tcp_invalid_ratelimit 'Default: 500 (milliseconds)'; tcp_rfc1337 "
        "'Default: 0'; tcp_rmem max 'between 131072 and 6MB, depending on RAM size'; "
        "tcp_synack_retries 'Default value is 5 ... 31seconds till the last retransmission'; "
        "tcp_syncookies 'Default: 1' (cookies when the SYN backlog overflows; 2: always)",
    ),
    Reference(
        3,
        "Linux net/ipv4/tcp_input.c, read as recent mainline patches via the code index "
        "(kernel versions not read): tcp_validate_incoming sends tcp_send_challenge_ack for "
        "a RST in the window but not at rcv_nxt, and at 'RFC 5961 4.2 : Send a challenge "
        "ack' (syn_challenge) for a SYN; an out-of-window segment with RST goes to discard "
        "silently; tcp_send_challenge_ack: 'First check our per-socket dupack rate limit' "
        "(__tcp_oow_rate_limited against tcp_invalid_ratelimit) before the host-wide limit, "
        "whose default went 100 -> 1000 (randomised, the CVE-2016-5696 fix) -> INT_MAX "
        "('TCP stack implements per TCP socket limits anyway')",
    ),
    Reference(
        4,
        "p0f 3 fingerprint database p0f.fp (p0f/p0f 4abbd20), [tcp:response]: Linux 3.x "
        "(:361) 'mss,sok,ts,nop,ws' TTL 64; Windows 7 or 8 (:412-418) '*:128:0:*:8192,8:"
        "mss,nop,ws,sok,ts'; FreeBSD 9.x (:426-430) '65535,6:mss,nop,ws,sok,ts' TTL 64; "
        "Mac OS X 10.x (:463-470) 'mss,nop,ws,nop,nop,ts,sok,eol+1' TTL 64",
    ),
    Reference(
        5,
        "FreeBSD 13.0 as carried by F-Stack (F-Stack/f-stack 5cb586b, freebsd/sys/param.h:63 "
        "__FreeBSD_version 1300139), freebsd/netinet/: ip.h:212 IPDEFTTL 64; tcp_timer.h:77 "
        "TCPTV_MSL (30*hz), :80 TCPTV_RTOBASE (1*hz); tcp_subr.c:1184-1185 tcp_msl = "
        "TCPTV_MSL, tcp_rexmit_initial = TCPTV_RTOBASE; tcp_subr.c:254 tcp_do_rfc1323 1; "
        "tcp_sack.c:133 tcp_do_sack 1; tcp_timewait.c:668 tw_time = ticks + 2 * tcp_msl",
    ),
    Reference(
        6,
        "FreeBSD 13.0 (as [5]) tcp_syncache.c:166 SYNCACHE_MAXREXMTS 3 ('1000 ms * (1 + 2 + "
        "4 + 8)'), :444-450 syncache_timeout (first after tcp_rexmit_initial, then "
        "tcp_rexmit_initial * tcp_backoff[n] + tcp_rexmit_slop 200 ms, tcp_subr.c:1193); "
        ":1764-1766 window scale: the smallest shift with TCP_MAXWIN << shift >= sb_max, "
        "sys/sockbuf.h:67 SB_MAX (2*1024*1024): shift 6; :1787-1789 SCF_ECN for an ECN-setup "
        "SYN when tcp_do_ecn (tcp_input.c:205, default 2)",
    ),
    Reference(
        7,
        "FreeBSD 13.0 (as [5]) tcp_output.c:1747 tcp_addoptions: options in TOF_ bit order "
        "(tcp_var.h:453-460: MSS, SCALE, SACKPERM, TS), NOP-padded so WS starts at an odd "
        "offset and TS at 2 mod 4: MSS, NOP, WS, SACK-permitted, TS",
    ),
    Reference(
        8,
        "FreeBSD 13.0 (as [5]) tcp_input.c:215/:220 tcp_insecure_syn / tcp_insecure_rst 0; "
        ":2166-2185 a RST in window but not at last_ack_sent draws a challenge ACK; "
        ":2199-2215 'RFC5961 Section 4.2 Send challenge ACK for any SYN in synchronized "
        "state'; tcp_timewait.c:409-415 'If the segment contains RST: Drop the segment - see "
        "Stevens, vol. 2, p. 964 and RFC 1337'",
    ),
    Reference(
        9,
        "F-Stack config.ini:291-316 [freebsd.sysctl] as shipped (F-Stack/f-stack 5cb586b): "
        "kern.ipc.maxsockbuf=16777216 (window scale 9 by [6]'s rule), net.inet.tcp.msl=2000 "
        "(TIME-WAIT 2 x 2 s), net.inet.tcp.maxtcptw=128, net.inet.tcp.sack.enable=1, "
        "net.inet.tcp.rfc1323=1",
    ),
    Reference(
        10,
        "XNU xnu-11417.101.15 (apple-oss-distributions/xnu e3723e1) bsd/netinet/: ip.h:247 "
        "IPDEFTTL 64; tcp_timer.h:175 TCPTV_MSL (15*TCP_RETRANSHZ), :177 TCPTV_RTOBASE "
        "(1*TCP_RETRANSHZ), tcp_var.h:91 TCP_RETRANSHZ 1000 (ms); tcp_input.c:5628 "
        "add_to_time_wait(tp, 2 * tcp_msl); tcp_subr.c:206 tcp_do_timestamps 1; "
        "tcp_sack.c:103 tcp_do_sack 1; tcp_output.c:1873-1937 SYN options MSS, NOP+WS, "
        "NOP+NOP+TS, SACK-permitted 'last', :2069-2078 padded with EOL",
    ),
    Reference(
        11,
        "XNU (as [10]) tcp_input.c:4265 'case TCPS_TIME_WAIT: break' (a RST in TIME-WAIT is "
        "dropped, 'RFC 1337'); :4271-4276 bad RST in window: challenge ACK unless "
        "tcp_is_ack_ratelimited; :4567-4580 'RFC 5961 Section 4.2 Send challenge ACK for any "
        "SYN in synchronized state'; :240-242 tcp_challengeack_limit 10 per connection per "
        "second; tcp_output.c:249 tcp_ecn_inbound 2, :505-525 ECN per interface flags; no "
        "SYN cookie code (git grep -i syncookie bsd/netinet: nothing)",
    ),
    Reference(
        12,
        "Windows TcpTimedWaitDelay: Windows Server 2003 default 0x78 (120 s), range 0-300 s "
        "(http://technet.microsoft.com/en-us/library/cc757512.aspx); Windows 2000 default "
        "0xF0 (240 s) (http://technet.microsoft.com/library/cc938217)",
    ),
    Reference(
        13,
        "Windows 2000 registry reference (learn.microsoft.com cc938208, cc938207): "
        "TcpMaxConnectResponseRetransmissions 2, TcpInitialRTT 3 s, doubling; as cited by "
        "prober/core/synack_schedules.py, not re-read for this table, and not shown to hold "
        "for Windows 10/11",
    ),
    Reference(
        14,
        "lwIP (lwip-tcpip/lwip 3d896ba) src/include/lwip/opt.h:826 IP_DEFAULT_TTL 255, "
        ":1288 TCP_TTL IP_DEFAULT_TTL; :1328 LWIP_TCP_SACK_OUT 0; :1353 TCP_MSS 536; :1375 "
        "LWIP_TCP_RTO_TIME 3000 (ms); :1499 LWIP_TCP_TIMESTAMPS 0; :1538 LWIP_WND_SCALE 0; "
        "src/core/tcp_out.c:1050-1076 a SYN/ACK carries MSS, and WS/SACK-permitted/TS only "
        "when compiled in; src/include/lwip/priv/tcp_priv.h:134 TCP_MSL 60000 ms, "
        "src/core/tcp.c:1449 TIME-WAIT ends after 2 * TCP_MSL; tcp.c:163-164 tcp_backoff "
        "shifts {1, 2, 3, ...}, :1291-1292 rto << tcp_backoff[n]; 500 ms slow timer",
    ),
    Reference(
        15,
        "lwIP (as [14]) src/core/tcp_in.c:744-750 'RFC 1337: in TIME_WAIT, ignore RST'; "
        ":817-824 a RST in window but not at rcv_nxt: 'we send a challenge ACK ... RFC 5961 "
        "section 3.2'; :840-844 a SYN in a synchronized state is ACKed; no ECN: TCP_ECE is "
        "never set on output (its only use, tcp.c:2482, prints flags)",
    ),
    Reference(
        16,
        "prober/core/parse.py: the fast path for Linux's SYN/ACK options returns order "
        "'MSTNW' (MSS, SACK-permitted, TS, NOP, WS); the default Linux 6.x peer of the lab "
        "answers so (tests/integration)",
    ),
    Reference(
        17,
        "Linux net/ipv4/tcp_output.c tcp_options_write (read via the code index, a git-blame "
        "listing of mainline, lines 648-666 there): MSS; then SACK-permitted+TS in one word "
        "when both (else NOP, NOP, TS); NOP, NOP, SACK-permitted when SACK without TS; "
        "NOP, WS last",
    ),
    Reference(
        18,
        "'netsh int tcp show global' as printed on a current Windows (third-party page "
        "http://www.wmrh.cn/Thetrip/33722.html, Windows version not named): 'ECN capability: "
        "disabled', 'RFC 1323 timestamps: disabled', 'Initial RTO: 1000', 'Max SYN "
        "retransmissions: 4'",
    ),
    Reference(
        19,
        "Linux commit 282f23c6ee34 'tcp: implement RFC 5961 3.2' (challenge ACK for an "
        "in-window RST, new sysctl tcp_challenge_ack_limit 'Default: 100'), "
        "https://android-kvm.googlesource.com/linux/+/282f23c6ee343126156dd41218b22ece96d747e3"
        " (its release, 3.6, is not stated there)",
    ),
    Reference(
        20,
        "FreeBSD 'tcp: implement challenge ACK throttling for the base stack' "
        "(https://reviews.freebsd.org/D46066, 2024): later FreeBSD rate-limits challenge ACKs",
    ),
    Reference(
        21,
        "Linux net/ipv4/tcp_output.c tcp_select_initial_window (read as mainline patches via "
        "the code index): space = max(space, tcp_rmem[2], rmem_max), clamped to the window "
        "clamp; rcv_wscale = ilog2(space) - 15: 6 MB gives 22 - 15 = 7",
    ),
    Reference(
        22,
        "Linux net/ipv4/tcp_minisocks.c tcp_timewait_state_process (read as mainline patches "
        "via the code index): a SYN without RST or ACK, not PAWS-rejected, with 'after(seq, "
        "tw_rcv_nxt)' or a newer TSval returns TCP_TW_SYN: the 4-tuple is reopened",
    ),
    Reference(
        23,
        "lwIP (as [14]) src/core/tcp_in.c:286-308 TIME-WAIT pcbs are looked up before the "
        "listeners (:318); :742-776 tcp_timewait_input: a SYN in the window draws a RST, "
        "any other is ACKed ('Acknowledge data, FIN or out-of-window SYN'): never reopened",
    ),
)


@dataclass(frozen=True, slots=True)
class Expectation:
    """What a stack's default is for one property.

    Either ``allowed`` (exact values: flags, enum strings, counts, option layouts) or a
    numeric range ``low``..``high`` (inclusive, widened by the measurement's ``error``).
    An ``option_order`` layout is compared exactly when the peer offered the same options,
    else by the relative order of the options present (docs/stack-defaults.md).
    ``refs`` are ``REFERENCES`` numbers; ``used`` False keeps an uncertain or unsourced
    value out of the matching (it is shown, with ``note`` saying why).
    """

    name: PropertyName
    allowed: tuple[Value, ...] = ()
    low: float | None = None
    high: float | None = None
    refs: tuple[int, ...] = ()
    note: str = ""
    used: bool = True
    # A default users change (a sysctl, registry key or compile-time option: ``knob``) as
    # opposed to hard-wired code; closest ranks fixed disagreements first.
    tunable: bool = False
    knob: str = ""

    def accepts(self, value: Value, error: float | None = None) -> bool:
        """Whether a measured ``value`` agrees with this default.

        Args:
            value: the property's value (not None).
            error: the measurement's ± (``Property.error``), widening a numeric range.

        Returns:
            True when it agrees.
        """
        if self.name is PropertyName.OPTION_ORDER:
            return isinstance(value, str) and any(
                isinstance(layout, str) and _layout_agrees(value, layout)
                for layout in self.allowed
            )
        if self.low is not None and self.high is not None:
            if isinstance(value, bool) or not isinstance(value, int | float):
                return False
            slack = abs(error) if error is not None else 0.0
            return self.low - slack <= float(value) <= self.high + slack
        return any(_same_value(value, allowed) for allowed in self.allowed)

    def describe(self) -> str:
        """The default for people: "5", "yes", "1 s (0.9-1.35)", "MSTNW"."""
        if self.low is not None and self.high is not None:
            return _range_text(self.name, self.low, self.high)
        return " or ".join(_value_text(value) for value in self.allowed)


@dataclass(frozen=True, slots=True)
class StackDefaults:
    """One known stack: its defaults per property, where they come from, and what they
    assume (``notes``: version boundaries, configuration that changes them)."""

    name: str
    description: str
    expectations: tuple[Expectation, ...]
    notes: tuple[str, ...] = ()

    def expectation(self, name: PropertyName) -> Expectation | None:
        """The (used) expectation for ``name``, None when this stack has none."""
        return next((e for e in self.expectations if e.name is name and e.used), None)


def _same_value(value: Value, allowed: Value) -> bool:
    # bool is an int in Python, and window_scale False ("not offered") is not shift 0.
    if isinstance(value, bool) or isinstance(allowed, bool):
        return isinstance(value, bool) and isinstance(allowed, bool) and value is allowed
    if isinstance(value, int | float) and isinstance(allowed, int | float):
        return float(value) == float(allowed)
    return value == allowed


def _kinds(order: str) -> list[str]:
    """The option kinds of a ``TcpOptions.order``, padding dropped (``?<kind>`` kept)."""
    kinds: list[str] = []
    i = 0
    while i < len(order):
        if order[i] == "?":
            j = i + 1
            while j < len(order) and order[j].isdigit():
                j += 1
            kinds.append(order[i:j])
            i = j
            continue
        if order[i] not in _PADDING:
            kinds.append(order[i])
        i += 1
    return kinds


def _layout_agrees(measured: str, layout: str) -> bool:
    """Exact layout when the same options were offered; else the same relative order.

    A stack's table layout is its SYN/ACK with every default option on. With fewer
    options (say timestamps turned off) the padding changes in ways the table does not
    record, so only the order of the options present is compared then. MSS is never
    turned off by a sysctl, so a SYN/ACK without it disagrees with a layout that has it;
    options the layout does not know (MPTCP, TCP-AO, Fast Open) are left out of the order.
    """
    got, want = _kinds(measured), _kinds(layout)
    if sorted(got) == sorted(want):
        return measured == layout
    if "M" in want and "M" not in got:
        return False
    positions = [want.index(kind) for kind in got if kind in want]
    return positions == sorted(positions)


def _value_text(value: Value) -> str:
    if value is True:
        return "yes"
    if value is False:
        return "no"
    if value is None:
        return "unknown"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


_UNITS: Final[dict[PropertyName, str]] = {
    PropertyName.INITIAL_RTO_S: "s",
    PropertyName.SYNACK_GIVE_UP_S: "s",
    PropertyName.TIME_WAIT_S: "s",
    PropertyName.CHALLENGE_ACK_INTERVAL_S: "s",
    PropertyName.FIN_RTO_S: "s",
}


def _range_text(name: PropertyName, low: float, high: float) -> str:
    unit = _UNITS.get(name, "")
    suffix = f" {unit}" if unit else ""
    return f"{low:g}-{high:g}{suffix}"


def _exact(name: PropertyName, *allowed: Value, refs: tuple[int, ...], note: str = "",
           used: bool = True, knob: str = "") -> Expectation:
    # A knob makes the default tunable; no knob: hard-wired in the code.
    return Expectation(name, allowed=allowed, refs=refs, note=note, used=used,
                       tunable=bool(knob), knob=knob)


def _between(name: PropertyName, low: float, high: float, *, refs: tuple[int, ...],
             note: str = "", used: bool = True, knob: str = "") -> Expectation:
    return Expectation(name, low=low, high=high, refs=refs, note=note, used=used,
                       tunable=bool(knob), knob=knob)


# Resolution of the measurements the ranges allow for (docs/stack-defaults.md):
# - an RTO: -10 % .. +10 % + 0.35 s (timer ticks, FreeBSD's 200 ms slop, lwIP's 500 ms tick);
# - TIME-WAIT: -1 s .. +2.5 s before the probe's own step (Linux measured 60.4-62.0 s);
# - the backoff ratio: 1.6 .. 2.5 (FreeBSD's slop makes 2.2 then 1.9).
_P = PropertyName
_CA = ChallengeAnswer.CHALLENGE_ACK.value
_IGNORED = ChallengeAnswer.IGNORED.value
_LONE = CookieMode.NOT_FOR_A_LONE_SYN.value
_BACKOFF_2 = (1.6, 2.5)
# A stack that does not space its challenge ACKs (none, or a count per second) answers the
# rate probe's SYNs at their own spacing; Linux's per-socket limit spaces them >= 0.5 s.
_UNLIMITED = (0.0, 5 * RATE_SPACING_S)

LINUX: Final = StackDefaults(
    "Linux",
    "Linux 3.6 and later with default sysctls (the lab's peer is 6.x)",
    (
        _exact(_P.INITIAL_TTL, 64, refs=(2,), knob="ip_default_ttl"),
        _exact(_P.WINDOW_SCALE, 7, 8, 9, 10, refs=(2, 21, 4), knob="tcp_window_scaling, tcp_rmem",
               note="ilog2(max(tcp_rmem max, rmem_max)) - 15: 7 for the long-standing 6 MB "
                    "tcp_rmem max, 10 for the 32 MB of recent kernels (the lab's 6.18); a "
                    "host with little RAM gets a smaller max and shift"),
        _exact(_P.SACK, True, refs=(2, 4), knob="tcp_sack"),
        _exact(_P.TIMESTAMPS, True, refs=(4, 16, 17), knob="tcp_timestamps"),
        _exact(_P.OPTION_ORDER, "MSTNW", refs=(17, 4, 16)),
        _exact(_P.ECN, True, refs=(2,), knob="tcp_ecn", note="tcp_ecn=2 answers an ECN-setup SYN"),
        _between(_P.INITIAL_RTO_S, 0.9, 1.45, refs=(1,), note="3 s before 3.1"),
        _between(_P.SYNACK_BACKOFF, *_BACKOFF_2, refs=(1,)),
        _exact(_P.SYNACK_RETRIES, 5, refs=(1, 2), knob="tcp_synack_retries"),
        _between(_P.SYNACK_GIVE_UP_S, 28.0, 34.5, refs=(2,), knob="tcp_synack_retries",
                 note="last SYN/ACK at 1+2+4+8+16 = 31 s"),
        _exact(_P.SYN_COOKIES, _LONE, refs=(2,), knob="tcp_syncookies",
               note="tcp_syncookies=1: cookies only when the SYN queue overflows"),
        _exact(_P.TIME_WAIT, True, refs=(1,), knob="tcp_max_tw_buckets"),
        _between(_P.TIME_WAIT_S, 59.0, 62.5, refs=(1,), note="fixed, no sysctl"),
        _exact(_P.RFC1337, False, refs=(2,), knob="tcp_rfc1337"),
        _exact(_P.CHALLENGE_RST, _CA, refs=(3, 19), note="RFC 5961 since 3.6"),
        _exact(_P.CHALLENGE_SYN, _CA, refs=(3,), note="RFC 5961 since 3.6"),
        _between(_P.CHALLENGE_ACK_INTERVAL_S, 0.45, 1.0, refs=(2, 3), knob="tcp_invalid_ratelimit",
                 note="per-socket tcp_invalid_ratelimit; the first SYN after the 500 ms is "
                      "answered, so the spacing is 0.5 s plus up to one probe interval "
                      "(a probe spacing up to 0.5 s fits)"),
        _exact(_P.RST_OUT_OF_WINDOW, _IGNORED, refs=(3,)),
        _exact(_P.TIME_WAIT_REOPEN_ABOVE_ISN, True, refs=(22,)),
    ),
    notes=(
        "TCP_TIMEOUT_INIT was 3 s before 3.1 (commit 9ad7c049f0f7, cited by "
        "prober/core/synack_schedules.py): an older kernel disagrees on initial_rto_s.",
        "RFC 5961 challenge ACKs (RST and SYN) came in 3.6 (not read here); an older kernel "
        "resets on an in-window RST or SYN.",
        "Challenge ACKs are limited per socket by tcp_invalid_ratelimit (500 ms) and, on "
        "older kernels, host-wide by tcp_challenge_ack_limit (100, then 1000 per second, "
        "now unlimited by default) [3].",
        "tcp_syncookies=2 answers every SYN with a cookie and keeps no state: no SYN/ACK "
        "retransmissions at all (syn_cookies 'always', synack_retries 0).",
    ),
)

FREEBSD: Final = StackDefaults(
    "FreeBSD",
    "FreeBSD 13 with default sysctls (syncache), as in F-Stack's copy of 13.0",
    (
        _exact(_P.INITIAL_TTL, 64, refs=(5,), knob="net.inet.ip.ttl"),
        _exact(_P.WINDOW_SCALE, 6, refs=(6, 4),
               knob="kern.ipc.maxsockbuf, net.inet.tcp.rfc1323",
               note="from sb_max (kern.ipc.maxsockbuf) 2 MB"),
        _exact(_P.SACK, True, refs=(5,), knob="net.inet.tcp.sack.enable"),
        _exact(_P.TIMESTAMPS, True, refs=(5,), knob="net.inet.tcp.rfc1323"),
        _exact(_P.OPTION_ORDER, "MNWST", refs=(7, 4)),
        _exact(_P.ECN, True, refs=(6,),
               knob="net.inet.tcp.ecn.enable",
               note="net.inet.tcp.ecn.enable=2 accepts incoming ECN"),
        _between(_P.INITIAL_RTO_S, 0.9, 1.45, refs=(5, 6),
                 knob="net.inet.tcp.rexmit_initial", note="3 s before 13 (D18941)"),
        _between(_P.SYNACK_BACKOFF, *_BACKOFF_2, refs=(6,)),
        _exact(_P.SYNACK_RETRIES, 3, refs=(6,), knob="net.inet.tcp.syncache.rexmtlimit"),
        _exact(_P.SYN_COOKIES, _LONE, refs=(6,), knob="net.inet.tcp.syncookies",
               note="syncache keeps state; cookies when it overflows"),
        _exact(_P.TIME_WAIT, True, refs=(5,), knob="net.inet.tcp.maxtcptw"),
        _between(_P.TIME_WAIT_S, 59.0, 62.5, refs=(5,),
                 knob="net.inet.tcp.msl", note="2 x net.inet.tcp.msl (30 s)"),
        _exact(_P.RFC1337, True, refs=(8,)),
        _exact(_P.CHALLENGE_RST, _CA, refs=(8,), knob="net.inet.tcp.insecure_rst"),
        _exact(_P.CHALLENGE_SYN, _CA, refs=(8,), knob="net.inet.tcp.insecure_syn"),
        _exact(_P.RST_OUT_OF_WINDOW, _IGNORED, refs=(8,)),
        _between(_P.CHALLENGE_ACK_INTERVAL_S, *_UNLIMITED, refs=(8, 20),
                 note="13.0 sends challenge ACKs unthrottled; the later throttle [20] counts "
                      "per window (from memory), so the spacing stays the probe's own"),
    ),
    notes=(
        "Read in FreeBSD 13.0 as F-Stack carries it; 14 and later were not read, and later "
        "versions rate-limit challenge ACKs [20], so no interval is listed.",
        "Before 13 the initial RTO was 3 s (TCPTV_RTOBASE; reviews.freebsd.org/D18941, cited "
        "by prober/core/synack_schedules.py).",
    ),
)

FSTACK: Final = StackDefaults(
    "F-Stack",
    "F-Stack (FreeBSD 13.0's stack over DPDK) with the config.ini it ships",
    (
        _exact(_P.INITIAL_TTL, 64, refs=(5,), knob="net.inet.ip.ttl (config.ini)"),
        _exact(_P.WINDOW_SCALE, 9, refs=(6, 9),
               knob="kern.ipc.maxsockbuf, net.inet.tcp.rfc1323 (config.ini)",
               note="sb_max 16 MB from config.ini"),
        _exact(_P.SACK, True, refs=(5, 9), knob="net.inet.tcp.sack.enable (config.ini)"),
        _exact(_P.TIMESTAMPS, True, refs=(5, 9), knob="net.inet.tcp.rfc1323 (config.ini)"),
        _exact(_P.OPTION_ORDER, "MNWST", refs=(7,)),
        _exact(_P.ECN, True, refs=(6,), knob="net.inet.tcp.ecn.enable (config.ini)"),
        _between(_P.INITIAL_RTO_S, 0.9, 1.45, refs=(5, 6),
                 knob="net.inet.tcp.rexmit_initial (config.ini)",
                 note="with config.ini's freebsd.boot.hz; timers tick at hz"),
        _between(_P.SYNACK_BACKOFF, *_BACKOFF_2, refs=(6,)),
        _exact(_P.SYNACK_RETRIES, 3, refs=(6,),
               knob="net.inet.tcp.syncache.rexmtlimit (config.ini)"),
        _exact(_P.SYN_COOKIES, _LONE, refs=(6,), knob="net.inet.tcp.syncookies (config.ini)"),
        _exact(_P.TIME_WAIT, True, refs=(5, 9),
               knob="net.inet.tcp.maxtcptw (config.ini)", note="at most maxtcptw=128 at once"),
        _between(_P.TIME_WAIT_S, 3.0, 6.5, refs=(5, 9),
                 knob="net.inet.tcp.msl (config.ini)", note="2 x net.inet.tcp.msl=2000 ms"),
        _exact(_P.RFC1337, True, refs=(8,)),
        _exact(_P.CHALLENGE_RST, _CA, refs=(8,), knob="net.inet.tcp.insecure_rst (config.ini)"),
        _exact(_P.CHALLENGE_SYN, _CA, refs=(8,), knob="net.inet.tcp.insecure_syn (config.ini)"),
        _exact(_P.RST_OUT_OF_WINDOW, _IGNORED, refs=(8,)),
        _between(_P.CHALLENGE_ACK_INTERVAL_S, *_UNLIMITED, refs=(8, 20),
                 note="13.0 sends challenge ACKs unthrottled; the later throttle [20] counts "
                      "per window (from memory), so the spacing stays the probe's own"),
    ),
    notes=(
        "Every F-Stack value is FreeBSD's code with the shipped config.ini: an application "
        "with its own config.ini (msl, maxsockbuf) looks like FreeBSD or anything between.",
    ),
)

MACOS: Final = StackDefaults(
    "macOS (XNU)",
    "macOS / iOS (XNU 11417, 2025) with default sysctls",
    (
        _exact(_P.INITIAL_TTL, 64, refs=(10, 4), knob="net.inet.ip.ttl"),
        _exact(_P.WINDOW_SCALE, 6, refs=(4,), knob="net.inet.tcp.win_scale_factor", used=False,
               note="follows the socket buffer (tcp_win_scale 3 is only a minimum); p0f's "
                    "10.x responses show 0"),
        _exact(_P.SACK, True, refs=(10,), knob="net.inet.tcp.sack"),
        _exact(_P.TIMESTAMPS, True, refs=(10,), knob="net.inet.tcp.rfc1323"),
        _exact(_P.OPTION_ORDER, "MNWNNTSE", refs=(10, 4)),
        _exact(_P.ECN, True, refs=(11,), knob="net.inet.tcp.ecn_negotiate_in", used=False,
               note="decided per interface (IFEF_ECN_ENABLE) and by heuristics"),
        _between(_P.INITIAL_RTO_S, 0.9, 1.45, refs=(10,)),
        _between(_P.SYNACK_BACKOFF, *_BACKOFF_2, refs=(10,)),
        _exact(_P.SYN_COOKIES, _LONE, refs=(11,), note="XNU has no SYN cookies"),
        _exact(_P.TIME_WAIT, True, refs=(10,)),
        _between(_P.TIME_WAIT_S, 29.0, 32.5, refs=(10,),
                 knob="net.inet.tcp.msl", note="2 x net.inet.tcp.msl (15 s)"),
        _exact(_P.RFC1337, True, refs=(11,)),
        _exact(_P.CHALLENGE_RST, _CA, refs=(11,)),
        _exact(_P.CHALLENGE_SYN, _CA, refs=(11,)),
        _exact(_P.RST_OUT_OF_WINDOW, _IGNORED, refs=(11,)),
        _between(_P.CHALLENGE_ACK_INTERVAL_S, *_UNLIMITED, refs=(11,),
                 note="10 per connection per second, counted per second: a burst at the "
                      "probe's own spacing"),
    ),
    notes=(
        "Challenge ACKs are limited to 10 per connection per second: the shortest spacing "
        "is the probe's own, so no interval is listed.",
        "SYN/ACK retransmissions run until the 75 s connection-establishment timer "
        "(TCPTV_KEEP_INIT, cited by prober/core/synack_schedules.py): no retry count listed.",
    ),
)

WINDOWS: Final = StackDefaults(
    "Windows",
    "Windows (7/8 in p0f's signatures; 10/11 and Server 2016+ assumed alike, not shown)",
    (
        _exact(_P.INITIAL_TTL, 128, refs=(4,), knob="DefaultTTL"),
        _exact(_P.WINDOW_SCALE, 8, refs=(4,), knob="netsh autotuninglevel"),
        _exact(_P.SACK, True, refs=(4,),
               note="fixed: SackOpts is Windows 2000/XP's; no knob known for Vista and later "
                    "(uncertain)"),
        _exact(_P.TIMESTAMPS, True, refs=(4,), knob="netsh timestamps",
               note="answers timestamps when the SYN offers them (p0f's 'sok,ts' response)"),
        _exact(_P.OPTION_ORDER, "MNWST", refs=(4,)),
        _exact(_P.ECN, False, refs=(18,), knob="netsh ecncapability", used=False,
               note="netsh shows 'ECN capability: disabled' on one current Windows "
                    "(third-party page); Server editions not read"),
        _between(_P.INITIAL_RTO_S, 2.7, 3.65, refs=(13, 18), knob="netsh initialRto", used=False,
                 note="3 s in the Windows 2000 reference, but a current netsh shows "
                      "'Initial RTO: 1000'; which applies to SYN/ACKs was not found"),
        _exact(_P.SYNACK_RETRIES, 2, refs=(13,),
               knob="TcpMaxConnectResponseRetransmissions", used=False,
               note="Windows 2000 reference; later versions not read"),
        _exact(_P.TIME_WAIT, True, refs=(12,)),
        _between(_P.TIME_WAIT_S, 119.0, 122.5, refs=(12,), knob="TcpTimedWaitDelay",
                 note="TcpTimedWaitDelay 120 s since Server 2003 (240 s in Windows 2000)"),
    ),
    notes=(
        "RFC 5961 behaviour, RFC 1337 and ECN of current Windows were not found in a source "
        "read here: nothing is listed for them.",
    ),
)

LWIP: Final = StackDefaults(
    "lwIP",
    "lwIP 2.x with opt.h defaults (embedded devices; builds usually change them)",
    (
        _exact(_P.INITIAL_TTL, 255, refs=(14,), knob="IP_DEFAULT_TTL"),
        _exact(_P.WINDOW_SCALE, False, refs=(14,), knob="LWIP_WND_SCALE"),
        _exact(_P.SACK, False, refs=(14,), knob="LWIP_TCP_SACK_OUT"),
        _exact(_P.TIMESTAMPS, False, refs=(14,), knob="LWIP_TCP_TIMESTAMPS"),
        _exact(_P.OPTION_ORDER, "M", refs=(14,)),
        _exact(_P.ECN, False, refs=(15,)),
        _between(_P.INITIAL_RTO_S, 2.7, 3.85, refs=(14,),
                 knob="LWIP_TCP_RTO_TIME", note="3 s on 500 ms ticks"),
        _between(_P.SYNACK_BACKOFF, *_BACKOFF_2, refs=(14,)),
        _exact(_P.SYN_COOKIES, _LONE, refs=(14,), note="lwIP has no SYN cookies"),
        _exact(_P.TIME_WAIT, True, refs=(14,)),
        _between(_P.TIME_WAIT_S, 119.0, 123.0, refs=(14,),
                 knob="TCP_MSL", note="2 x TCP_MSL (60 s)"),
        _exact(_P.RFC1337, True, refs=(15,)),
        _exact(_P.CHALLENGE_RST, _CA, refs=(15,)),
        _exact(_P.CHALLENGE_SYN, _CA, refs=(15,)),
        _exact(_P.RST_OUT_OF_WINDOW, _IGNORED, refs=(15,)),
        _between(_P.CHALLENGE_ACK_INTERVAL_S, *_UNLIMITED, refs=(15,),
                 note="not rate-limited: the probe's own spacing"),
        _exact(_P.TIME_WAIT_REOPEN_ABOVE_ISN, False, refs=(23,)),
    ),
    notes=(
        "A SYN_RCVD request is dropped after TCP_SYN_RCVD_TIMEOUT (20 s, tcp_priv.h:129): "
        "with 3 s doubling that is about two retransmissions, not listed (timer details "
        "not followed through).",
        "Challenge ACKs are not rate-limited: no interval is listed.",
    ),
)

STACKS: Final[tuple[StackDefaults, ...]] = (LINUX, FREEBSD, FSTACK, MACOS, WINDOWS, LWIP)


def _comparable(properties: Sequence[Property]) -> list[Property]:
    seen: set[PropertyName] = set()
    out: list[Property] = []
    for prop in properties:
        if prop.basis in _COMPARED_BASES and prop.value is not None and prop.name not in seen:
            seen.add(prop.name)
            out.append(prop)
    return out


@dataclass(frozen=True, slots=True)
class _Score:
    stack: StackDefaults
    agree: tuple[PropertyName, ...]
    disagree: tuple[Property, ...]  # fixed ones first, then tunable ones

    def tunable(self, prop: Property) -> bool:
        expectation = self.stack.expectation(prop.name)
        return expectation is not None and expectation.tunable

    @property
    def fixed_count(self) -> int:
        return sum(1 for prop in self.disagree if not self.tunable(prop))

    @property
    def rank(self) -> tuple[int, int, int]:
        # Hard-wired behaviour identifies the code; a tunable default may just be changed.
        fixed = self.fixed_count
        return (fixed, len(self.disagree) - fixed, -len(self.agree))


def _score(stack: StackDefaults, props: Sequence[Property]) -> _Score:
    agree: list[PropertyName] = []
    fixed: list[Property] = []
    tunable: list[Property] = []
    for prop in props:
        expectation = stack.expectation(prop.name)
        if expectation is None:
            continue
        if expectation.accepts(prop.value, prop.error):
            agree.append(prop.name)
        else:
            (tunable if expectation.tunable else fixed).append(prop)
    return _Score(stack, tuple(agree), tuple(fixed + tunable))


def _disagreement_text(score: _Score) -> str:
    parts: list[str] = []
    for prop in score.disagree[:_MAX_NAMED]:
        expectation = score.stack.expectation(prop.name)
        default = expectation.describe() if expectation is not None else "?"
        shown = ("not offered" if prop.name is _P.WINDOW_SCALE and prop.value is False
                 else _value_text(prop.value))
        how = (f" [{expectation.knob}]" if expectation is not None and expectation.tunable
               else " (fixed)")
        parts.append(f"{prop.name.value} {shown}, {score.stack.name} default {default}{how}")
    more = len(score.disagree) - _MAX_NAMED
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)


def _plural(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def _closest_text(score: _Score) -> str:
    fixed = score.fixed_count
    tunable = len(score.disagree) - fixed
    listed = _disagreement_text(score)
    head = f"Unknown: closest to {score.stack.name} defaults"
    if fixed == 0:
        return (f"{head}: {_plural(tunable, 'tunable setting differs', 'tunable settings differ')}"
                f" ({listed}); no fixed behaviour disagrees.")
    text = f"{head}, but {_plural(fixed, 'fixed behaviour disagrees', 'fixed behaviours disagree')}"
    if tunable:
        text += f" and {_plural(tunable, 'tunable setting differs', 'tunable settings differ')}"
    return f"{text} ({listed})."


def match_stack(properties: Sequence[Property]) -> StackMatch:
    """Which known stack's defaults the properties match (policy: the module docstring).

    Args:
        properties: the profile's properties; only MEASURED and INFERRED ones with a value
            are compared (the first of a repeated name counts).

    Returns:
        The ``StackMatch``: the matching stack or None, the closest stack, the properties
        that agree and disagree with it, the candidates, and a one- or two-sentence
        explanation.
    """
    props = _comparable(properties)
    known = {e.name for stack in STACKS for e in stack.expectations if e.used}
    compared = [prop for prop in props if prop.name in known]
    if len(compared) < MIN_AGREEMENTS:
        return StackMatch(
            None, None, (), (),
            f"Unknown: too few properties to compare ({len(compared)} measured that any "
            f"known stack has a default for; at least {MIN_AGREEMENTS} needed).",
        )
    scores = [_score(stack, compared) for stack in STACKS]
    candidates = [s for s in scores if not s.disagree and len(s.agree) >= MIN_AGREEMENTS]
    candidates.sort(key=lambda s: -len(s.agree))
    ranked = sorted(scores, key=lambda s: s.rank)
    best_closest = ranked[0]
    closest_tied = len(ranked) > 1 and ranked[1].rank == best_closest.rank
    closest = None if closest_tied else best_closest
    names = tuple(s.stack.name for s in candidates)

    if candidates and (len(candidates) == 1 or len(candidates[1].agree) < len(candidates[0].agree)):
        best = candidates[0]
        text = (f"Matches {best.stack.name} defaults: {len(best.agree)} properties agree, "
                f"none disagrees.")
        if len(candidates) > 1:
            text += " Also consistent, on fewer properties: " + ", ".join(names[1:]) + "."
        return StackMatch(best.stack.name, best.stack.name, best.agree, (), text, names)

    if candidates:
        tied = [s.stack.name for s in candidates if len(s.agree) == len(candidates[0].agree)]
        shown = candidates[0]
        return StackMatch(
            None, closest.stack.name if closest is not None else None, shown.agree, (),
            f"Unknown: consistent with the defaults of {' and '.join(tied)} alike "
            f"({len(shown.agree)} properties each); the measured properties do not tell "
            f"them apart.",
            names,
        )

    if closest is None:
        tied_names = [s.stack.name for s in ranked if s.rank == best_closest.rank]
        return StackMatch(
            None, None, best_closest.agree, tuple(p.name for p in best_closest.disagree),
            f"Unknown: no known stack's defaults fit; {' and '.join(tied_names)} come "
            f"equally close ({_disagreement_text(best_closest)}).",
        )
    if not closest.disagree:
        text = (f"Unknown: nothing disagrees with {closest.stack.name} defaults, but only "
                f"{len(closest.agree)} properties agree (at least {MIN_AGREEMENTS} needed).")
    else:
        text = _closest_text(closest)
    return StackMatch(
        None, closest.stack.name, closest.agree, tuple(p.name for p in closest.disagree), text,
    )


def _near(value: Value, target: float, tolerance: float) -> bool:
    return (not isinstance(value, bool) and isinstance(value, int | float)
            and abs(float(value) - target) <= tolerance)


_EXACT_MEANINGS: Final[dict[tuple[PropertyName, Value], str]] = {
    (_P.INITIAL_TTL, 64): "Linux, BSD, macOS",
    (_P.INITIAL_TTL, 128): "Windows",
    (_P.INITIAL_TTL, 255): "many embedded stacks (lwIP's default), Solaris",
    (_P.INITIAL_TTL, 32): "old Windows (95/98) and some embedded stacks",
    (_P.WINDOW_SCALE, False): "not offered: lwIP's default (LWIP_WND_SCALE 0), or turned off",
    (_P.WINDOW_SCALE, 7): "Linux default (tcp_rmem max 6 MB)",
    (_P.WINDOW_SCALE, 10): "recent Linux default (tcp_rmem max 32 MB)",
    (_P.WINDOW_SCALE, 6): "FreeBSD default (kern.ipc.maxsockbuf 2 MB)",
    (_P.WINDOW_SCALE, 8): "Windows",
    (_P.SACK, False): "no SACK: lwIP's default, or turned off (Linux tcp_sack=0)",
    (_P.TIMESTAMPS, False): "no timestamps: lwIP's default, or turned off (Linux "
                            "tcp_timestamps=0)",
    (_P.OPTION_ORDER, "MSTNW"): "Linux's SYN/ACK layout",
    (_P.OPTION_ORDER, "MNWST"): "FreeBSD's and Windows's SYN/ACK layout",
    (_P.OPTION_ORDER, "MNWNNTSE"): "macOS (XNU) SYN/ACK layout",
    (_P.OPTION_ORDER, "M"): "MSS only: lwIP's default, or SACK, timestamps and window "
                            "scaling all off",
    (_P.ECN, True): "answers ECN-setup SYNs: Linux (tcp_ecn=2), FreeBSD (ecn.enable=2)",
    (_P.ECN, False): "no ECN: lwIP, or turned off (Linux tcp_ecn=0)",
    (_P.SYNACK_RETRIES, 5): "Linux default (tcp_synack_retries)",
    (_P.SYNACK_RETRIES, 3): "FreeBSD syncache default (SYNCACHE_MAXREXMTS)",
    (_P.SYNACK_RETRIES, 2): "Windows default (TcpMaxConnectResponseRetransmissions)",
    (_P.SYNACK_RETRIES, 0): "no retransmission: a SYN cookie (Linux tcp_syncookies=2) or a "
                            "stateless listener",
    (_P.SYN_COOKIES, CookieMode.ALWAYS.value): "every SYN gets a cookie (Linux "
                                               "tcp_syncookies=2): no state, no "
                                               "retransmissions",
    (_P.SYN_COOKIES, CookieMode.NOT_FOR_A_LONE_SYN.value): "state kept for a lone SYN: "
                                                           "every stack's default",
    (_P.TIME_WAIT, False): "keeps no TIME-WAIT (some user-space stacks; Linux when "
                           "tcp_max_tw_buckets is reached)",
    (_P.RFC1337, False): "TIME-WAIT can be assassinated (RFC 1337 hazard; Linux default "
                         "tcp_rfc1337=0)",
    (_P.RFC1337, True): "RSTs in TIME-WAIT ignored (RFC 1337): BSD, macOS, lwIP, Linux "
                        "tcp_rfc1337=1",
    (_P.CHALLENGE_RST, _CA): "RFC 5961 §3.2 (Linux ≥ 3.6, FreeBSD, macOS, lwIP)",
    (_P.CHALLENGE_RST, ChallengeAnswer.RESET.value): "a RST in window resets: RFC 793, "
                                                     "before RFC 5961",
    (_P.CHALLENGE_RST, _IGNORED): "neither reset nor challenged (a rate limit, or a "
                                  "firewall in front)",
    (_P.RST_OUT_OF_WINDOW, _IGNORED): "dropped silently, as RFC 5961 §3.2 and RFC 793 say",
    (_P.RST_OUT_OF_WINDOW, ChallengeAnswer.RESET.value): "an out-of-window RST reset the "
                                                         "connection: a broken stack",
    (_P.CHALLENGE_SYN, _CA): "RFC 5961 §4.2 (Linux ≥ 3.6, FreeBSD, macOS, lwIP)",
    (_P.CHALLENGE_SYN, ChallengeAnswer.RESET.value): "a SYN in window resets: RFC 793, "
                                                     "before RFC 5961",
}


def meaning(name: PropertyName, value: Value) -> str | None:
    """What a value usually means, in a few words ("Linux default (tcp_synack_retries)").

    Args:
        name: the property.
        value: its value.

    Returns:
        The meaning, or None when there is nothing to say about the value.
    """
    if value is None:
        return None
    for (key_name, key_value), text in _EXACT_MEANINGS.items():
        if key_name is name and _same_value(value, key_value):
            return text
    if name is _P.INITIAL_RTO_S:
        if _near(value, 1.0, 0.3):
            return "1 s: RFC 6298's initial RTO (Linux ≥ 3.1, FreeBSD ≥ 13, macOS)"
        if _near(value, 3.0, 0.6):
            return "3 s: RFC 1122/2988's initial RTO (Windows, lwIP, Linux < 3.1)"
        if _near(value, 6.0, 1.0):
            return "6 s: 4.4BSD-derived (srtt 0 + 2 x the 3 s default rttvar)"
        return None
    if name is _P.SYNACK_BACKOFF and _near(value, 2.0, 0.4):
        return "doubling (RFC 6298 §5.5)"
    if name is _P.SYNACK_GIVE_UP_S and _near(value, 31.0, 3.0):
        return "Linux default (5 retries: last SYN/ACK at 31 s)"
    if name is _P.TIME_WAIT_S:
        if _near(value, 60.0, 3.0):
            return "2 MSL with MSL 30 s: Linux (fixed), FreeBSD"
        if _near(value, 120.0, 3.0):
            return "120 s: Windows (TcpTimedWaitDelay), lwIP (2 x TCP_MSL)"
        if _near(value, 30.0, 3.0):
            return "2 MSL with MSL 15 s: macOS"
        if _near(value, 240.0, 4.0):
            return "2 MSL with MSL 120 s (RFC 793): old Windows"
        if _near(value, 4.0, 2.0):
            return "2 x 2 s: F-Stack's shipped config.ini (net.inet.tcp.msl=2000)"
        return None
    if name is _P.CHALLENGE_ACK_INTERVAL_S and _near(value, 0.6, 0.2):
        return "Linux per-socket limit (tcp_invalid_ratelimit 500 ms)"
    return None
