"""TCP connection states and their transitions, in one place (RFC 9293 §3.3.2, Figure 5).

The theory the close probes show on a real kernel:

- Opening takes three segments: SYN, SYN/ACK, ACK. The side that sends the first SYN goes
  CLOSED → SYN-SENT → ESTABLISHED; the listener LISTEN → SYN-RECEIVED → ESTABLISHED.
- Closing takes four segments, because each direction is closed on its own: a FIN says "I
  will send no more", and the other side may still have data to send (a half-close) before
  its own FIN. The FIN of the second closer may carry the ACK of the first FIN, making it
  three segments; both may close at once (simultaneous close, FIN-WAIT-1 → CLOSING).
- Who closes first decides who holds TIME-WAIT: the active closer (FIN-WAIT-1 → FIN-WAIT-2 →
  TIME-WAIT) waits 2 MSL before CLOSED, so a retransmitted FIN of the peer (its ACK was lost)
  is answered with an ACK, not a RST, and old duplicates of this connection die out before
  the 4-tuple is reused. The passive closer (CLOSE-WAIT → LAST-ACK) is CLOSED as soon as its
  FIN is acknowledged.
- A RST ends the connection on either side, from any state.
- A listener under SYN cookies (RFC 4987) answers a SYN without leaving LISTEN: it keeps no
  request, and rebuilds the connection from the cookie if the final ACK comes. prober infers
  SYN-RECEIVED from a SYN/ACK (what a kept request would be in) until something shows a
  cookie (the cookie check's second SYN/ACK); then the peer's inferred state returns to
  LISTEN (``COOKIE_SHOWN``). RFC 9293's Figure 5 has the same edge for a request that ends
  while its listener stays: SYN-RECEIVED returns to LISTEN after a passive open.

Transitions are data: ``TRANSITIONS[(state, event)]``. The same table serves our own side
(driven by what we send and receive) and the peer's side, inferred by mirroring: what we
send is what the peer receives, and the other way round.
"""

from __future__ import annotations

from enum import Enum, StrEnum


class TcpState(StrEnum):
    CLOSED = "CLOSED"
    LISTEN = "LISTEN"
    SYN_SENT = "SYN-SENT"
    SYN_RECEIVED = "SYN-RECEIVED"
    ESTABLISHED = "ESTABLISHED"
    FIN_WAIT_1 = "FIN-WAIT-1"
    FIN_WAIT_2 = "FIN-WAIT-2"
    CLOSE_WAIT = "CLOSE-WAIT"
    CLOSING = "CLOSING"
    LAST_ACK = "LAST-ACK"
    TIME_WAIT = "TIME-WAIT"


class TcpEvent(Enum):
    SEND_SYN = "send SYN"
    RECEIVE_SYN = "receive SYN"
    RECEIVE_SYN_ACK = "receive SYN/ACK"  # (and send the ACK that completes the handshake)
    RECEIVE_ACK_OF_SYN = "receive ACK of SYN"
    SEND_FIN = "send FIN"
    RECEIVE_FIN = "receive FIN"
    RECEIVE_ACK_OF_FIN = "receive ACK of FIN"
    RECEIVE_FIN_ACKING_FIN = "receive FIN that ACKs our FIN"
    TIMEOUT_2MSL = "2MSL timeout"
    SEND_RST = "send RST"
    RECEIVE_RST = "receive RST"
    # Not a segment: evidence that the peer answered with a SYN cookie, so it kept no request.
    COOKIE_SHOWN = "SYN cookie shown"


S, E = TcpState, TcpEvent

TRANSITIONS: dict[tuple[TcpState, TcpEvent], TcpState] = {
    # Opening.
    (S.CLOSED, E.SEND_SYN): S.SYN_SENT,
    (S.LISTEN, E.RECEIVE_SYN): S.SYN_RECEIVED,
    (S.SYN_SENT, E.RECEIVE_SYN_ACK): S.ESTABLISHED,
    (S.SYN_SENT, E.RECEIVE_SYN): S.SYN_RECEIVED,  # simultaneous open
    (S.SYN_RECEIVED, E.RECEIVE_ACK_OF_SYN): S.ESTABLISHED,
    (S.SYN_RECEIVED, E.COOKIE_SHOWN): S.LISTEN,  # it kept no request (see above)
    # Active close: we send the first FIN.
    (S.SYN_RECEIVED, E.SEND_FIN): S.FIN_WAIT_1,
    (S.ESTABLISHED, E.SEND_FIN): S.FIN_WAIT_1,
    (S.FIN_WAIT_1, E.RECEIVE_ACK_OF_FIN): S.FIN_WAIT_2,
    (S.FIN_WAIT_1, E.RECEIVE_FIN): S.CLOSING,  # simultaneous close
    (S.FIN_WAIT_1, E.RECEIVE_FIN_ACKING_FIN): S.TIME_WAIT,  # three-segment close
    (S.FIN_WAIT_2, E.RECEIVE_FIN): S.TIME_WAIT,
    (S.FIN_WAIT_2, E.RECEIVE_FIN_ACKING_FIN): S.TIME_WAIT,
    (S.CLOSING, E.RECEIVE_ACK_OF_FIN): S.TIME_WAIT,
    (S.TIME_WAIT, E.RECEIVE_FIN): S.TIME_WAIT,  # a retransmitted FIN: ACK it again
    (S.TIME_WAIT, E.RECEIVE_FIN_ACKING_FIN): S.TIME_WAIT,
    (S.TIME_WAIT, E.TIMEOUT_2MSL): S.CLOSED,
    # Passive close: the peer sends the first FIN.
    (S.ESTABLISHED, E.RECEIVE_FIN): S.CLOSE_WAIT,
    (S.ESTABLISHED, E.RECEIVE_FIN_ACKING_FIN): S.CLOSE_WAIT,
    (S.CLOSE_WAIT, E.SEND_FIN): S.LAST_ACK,
    (S.LAST_ACK, E.RECEIVE_ACK_OF_FIN): S.CLOSED,
}
# A RST ends every state.
for _state in TcpState:
    TRANSITIONS[(_state, E.SEND_RST)] = S.CLOSED
    TRANSITIONS[(_state, E.RECEIVE_RST)] = S.CLOSED


def transition(state: TcpState, event: TcpEvent) -> TcpState:
    """The state after ``event``; an event the table does not list leaves the state as it is
    (a retransmission, a duplicate, or a segment of a peer that breaks the rules)."""
    return TRANSITIONS.get((state, event), state)


def mirrored(event: TcpEvent) -> TcpEvent:
    """What an event of ours is for the peer: our send is its receive, and the other way."""
    return _MIRROR.get(event, event)


_MIRROR: dict[TcpEvent, TcpEvent] = {
    E.SEND_SYN: E.RECEIVE_SYN,
    E.SEND_FIN: E.RECEIVE_FIN,
    E.SEND_RST: E.RECEIVE_RST,
    E.RECEIVE_RST: E.SEND_RST,
    E.RECEIVE_FIN: E.SEND_FIN,
    E.RECEIVE_FIN_ACKING_FIN: E.SEND_FIN,
}

ACTIVE_CLOSE_PATH = (S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2, S.TIME_WAIT, S.CLOSED)
PASSIVE_CLOSE_PATH = (S.ESTABLISHED, S.CLOSE_WAIT, S.LAST_ACK, S.CLOSED)
