"""Pairing TX stamps with sends (prober/engine/txstamps.py) on virtual time, without root."""

from __future__ import annotations

import errno

import pytest
from typer.testing import CliRunner

from prober.cli import Exit, app
from prober.engine.txstamps import (
    ENVIRONMENT_VARIABLE,
    InvalidTxStampId,
    TxStampId,
    TxStampPairing,
    forced_method,
)


def test_per_socket_keys_follow_the_kernels_counter_across_failed_sends() -> None:
    pairing: TxStampPairing[str] = TxStampPairing(TxStampId.PER_SOCKET)
    pairing.sent("a", 0, user_ns=100, now=0.0)  # key 0
    pairing.failed(errno.ENETUNREACH)  # routing fails before skb_setup_tx_timestamp: no key
    pairing.sent("b", 0, user_ns=200, now=0.0)  # key 1
    pairing.failed(errno.EPERM)  # netfilter drops after the key was taken: key 2 is gone
    pairing.sent("c", 0, user_ns=300, now=0.0)  # key 3
    assert pairing.stamped(0, 150) == ("a", 0, True)
    assert pairing.stamped(1, 250) == ("b", 0, True)
    assert pairing.stamped(3, 350) == ("c", 0, True)
    assert len(pairing) == 0 and pairing.stats.unmatched == 0


def test_per_send_ids_do_not_move_on_failure() -> None:
    pairing: TxStampPairing[str] = TxStampPairing(TxStampId.PER_SEND)
    assert pairing.next_id() == 0
    pairing.failed(errno.EPERM)
    assert pairing.next_id() == 0
    pairing.sent("a", 0, user_ns=1, now=0.0)
    assert pairing.next_id() == 1


def test_a_stamp_earlier_than_its_send_is_refused_not_used() -> None:
    pairing: TxStampPairing[str] = TxStampPairing(TxStampId.PER_SOCKET)
    pairing.sent("a", 0, user_ns=1_000, now=0.0)
    assert pairing.stamped(0, 999) == ("a", 0, False)
    assert pairing.stats.refused == 1 and len(pairing) == 0


def test_a_stamp_nobody_waits_for_is_counted() -> None:
    pairing: TxStampPairing[str] = TxStampPairing(TxStampId.PER_SOCKET)
    assert pairing.stamped(7, 5) is None
    assert pairing.stats.unmatched == 1


def test_sends_without_a_stamp_expire_so_memory_stays_bounded() -> None:
    pairing: TxStampPairing[int] = TxStampPairing(TxStampId.PER_SOCKET, wait_s=2.0)
    now = 0.0
    most = 0
    for number in range(100_000):  # 10 s at 10,000 sends/s from a device that never stamps
        now = number / 10_000
        pairing.sent(number, 0, user_ns=number, now=now)
        if number % 100 == 0:
            pairing.expire(now)
        most = max(most, len(pairing))
    assert most <= 2.0 * 10_000 + 100
    pairing.expire(now + 2.0)
    assert len(pairing) == 0
    assert pairing.stats.expired == 100_000


def test_a_long_run_whose_stamps_all_come_keeps_nothing() -> None:
    pairing: TxStampPairing[int] = TxStampPairing(TxStampId.PER_SOCKET, wait_s=2.0)
    for number in range(100_000):  # stamps come at once; nothing ever expires
        pairing.sent(number, 0, user_ns=number, now=number / 10_000)
        assert pairing.stamped(number, number + 1) is not None
    assert len(pairing) == 0 and pairing.tracked == 0


def test_the_counter_wraps_at_32_bits() -> None:
    pairing: TxStampPairing[str] = TxStampPairing(TxStampId.PER_SOCKET)
    pairing._next = 0xFFFFFFFF
    pairing.sent("a", 0, user_ns=1, now=0.0)
    assert pairing.next_id() == 0
    assert pairing.stamped(0xFFFFFFFF, 2) == ("a", 0, True)


@pytest.mark.parametrize(
    ("value", "method"),
    [("", None), ("per-socket", TxStampId.PER_SOCKET), (" per-send ", TxStampId.PER_SEND)],
)
def test_the_environment_forces_a_method(value: str, method: TxStampId | None) -> None:
    assert forced_method({ENVIRONMENT_VARIABLE: value}) is method
    assert forced_method({}) is None


def test_a_bad_value_is_one_line_and_exit_status_2(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InvalidTxStampId, match="per-send, per-socket"):
        forced_method({ENVIRONMENT_VARIABLE: "per-packet"})
    monkeypatch.setenv(ENVIRONMENT_VARIABLE, "per-packet")
    result = CliRunner().invoke(app, ["syn", "198.18.0.2:80", "-c", "1"])
    assert result.exit_code == Exit.USAGE
    assert result.output.strip().count("\n") == 0
    assert "PROBER_TX_STAMP_ID" in result.output and "Traceback" not in result.output
