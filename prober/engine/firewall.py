"""RST suppression: keep the local kernel from answering a conversation prober runs itself.

The local kernel knows nothing of the connections prober builds in user space, so it answers
the peer's SYN/ACK, ACKs and FINs with RSTs (a bare RST even kills the peer's TIME-WAIT). For
the half-open and close probes, prober installs a table of its own that drops every RST from a
probe's source port to the target's address and port, whatever its other flags, in an output
chain earlier than anything else (priority -500, before raw and conntrack). prober's own RSTs
carry SO_MARK ``PROBER_MARK`` and pass.

The table is created with the ``owner`` flag through libnftables' netlink socket, which this
process keeps open: the kernel deletes the table when the process ends, even on ``kill -9``.
(With the ``nft`` command the table would vanish as soon as ``nft`` exits.) libnftables is
reached through ctypes, so prober's virtualenv needs no system site-packages (Debian's
python3-nftables serves only the system Python and is not on PyPI).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import ipaddress
import os
from dataclasses import dataclass

from prober.errors import ProberError

PROBER_MARK = 0x70726F62  # "prob": the SO_MARK of every packet prober sends
CHAIN_PRIORITY = -500


class FirewallUnavailable(ProberError):
    """nftables (libnftables) is missing or refuses prober's table."""


@dataclass(frozen=True, slots=True)
class Conversation:
    """One suppressed 4-tuple: our port, the target's address and port."""

    local_port: int
    remote: ipaddress.IPv4Address | ipaddress.IPv6Address
    remote_port: int

    def element(self) -> str:
        return f"{self.remote} . {self.remote_port} . {self.local_port}"


class _Libnftables:
    def __init__(self) -> None:
        path = ctypes.util.find_library("nftables") or "libnftables.so.1"
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            raise FirewallUnavailable(
                "RST suppression needs nftables' library (libnftables.so.1): "
                "apt-get install nftables, or pass --kernel-rst"
            ) from None
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
        self.lib = lib


class RstSuppression:
    """prober's own nftables table, alive exactly as long as this process (or ``close``)."""

    def __init__(self) -> None:
        self.table = f"prober_{os.getpid()}"
        self._nft = _Libnftables()
        self._ctx: int | None = None
        self._active: set[Conversation] = set()

    def open(self) -> None:
        lib = self._nft.lib
        ctx = lib.nft_ctx_new(0)
        if not ctx:
            raise FirewallUnavailable("libnftables could not create a context")
        self._ctx = ctx
        lib.nft_ctx_buffer_output(ctx)
        lib.nft_ctx_buffer_error(ctx)
        t = self.table
        self._run(
            f"add table inet {t} {{ flags owner; }}\n"
            f"add set inet {t} v4 {{ type ipv4_addr . inet_service . inet_service; }}\n"
            f"add set inet {t} v6 {{ type ipv6_addr . inet_service . inet_service; }}\n"
            f"add chain inet {t} out {{ type filter hook output priority {CHAIN_PRIORITY}; }}\n"
            f"add rule inet {t} out meta mark != {PROBER_MARK:#x} tcp flags rst "
            f"ip daddr . tcp dport . tcp sport @v4 drop\n"
            f"add rule inet {t} out meta mark != {PROBER_MARK:#x} tcp flags rst "
            f"ip6 daddr . tcp dport . tcp sport @v6 drop\n"
        )

    def add(self, conversation: Conversation) -> None:
        """Drop the kernel's RSTs on ``conversation`` from now on."""
        if conversation in self._active:
            return
        family = "v4" if conversation.remote.version == 4 else "v6"
        self._run(f"add element inet {self.table} {family} {{ {conversation.element()} }}")
        self._active.add(conversation)

    def remove(self, conversation: Conversation) -> None:
        if conversation not in self._active:
            return
        family = "v4" if conversation.remote.version == 4 else "v6"
        self._run(f"delete element inet {self.table} {family} {{ {conversation.element()} }}")
        self._active.discard(conversation)

    def close(self) -> None:
        """Delete the table now (the kernel would at exit anyway) and free the context."""
        if self._ctx is None:
            return
        try:
            self._run(f"delete table inet {self.table}")
        except FirewallUnavailable:
            pass  # already gone: the owner flag ties it to a socket that may have closed
        finally:
            self._nft.lib.nft_ctx_free(self._ctx)
            self._ctx = None
            self._active.clear()

    def _run(self, command: str) -> None:
        if self._ctx is None:
            raise FirewallUnavailable("RST suppression is not open")
        lib = self._nft.lib
        if lib.nft_run_cmd_from_buffer(self._ctx, command.encode()) != 0:
            error = (lib.nft_ctx_get_error_buffer(self._ctx) or b"").decode(errors="replace")
            first = next((line for line in error.splitlines() if line.strip()), "unknown error")
            raise FirewallUnavailable(f"nftables refused prober's RST suppression: {first}")
