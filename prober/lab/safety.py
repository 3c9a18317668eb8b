"""A last check before raw packets leave: is this address really behind a lab link?"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection

from .addresses import POOLS, IPAddress, is_lab_address, parse_address
from .errors import LabError
from .netns import route_get

# Any lab topology's interface: pool code, two hex digits of index, a dash, a label.
LAB_DEVICE_NAME = re.compile(
    "^(" + "|".join(re.escape(pool.code) for pool in POOLS) + r")[0-9a-f]{2}-"
)


def is_lab_device(name: str) -> bool:
    return LAB_DEVICE_NAME.match(name) is not None


def route_check(
    address: str | IPAddress,
    *,
    devices: Collection[str] | None = None,
    namespace: str | None = None,
) -> str:
    """Confirm `address` is a lab or loopback address routed over loopback or a lab link.

    `devices` narrows "a lab link" to those interfaces (e.g. one topology's). Returns the
    outgoing device; raises LabError otherwise, e.g. when the route is the default one.
    """
    try:
        parsed = parse_address(address)
    except ValueError as exc:
        raise LabError(f"route check: {address!r} is not an IP address") from exc
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        parsed = parsed.ipv4_mapped  # a v6 socket sends these as IPv4
    if not (is_lab_address(parsed) or parsed.is_loopback):
        raise LabError(f"route check: {parsed} is neither a lab nor a loopback address")
    route = route_get(str(parsed), namespace)
    device = route.get("dev")
    if not isinstance(device, str):
        raise LabError(f"route check: no outgoing device for {parsed}: {route}")
    if device == "lo":
        return device
    allowed = is_lab_device(device) if devices is None else device in devices
    if not allowed:
        raise LabError(
            f"route check: {parsed} is routed via {device}"
            + (f" (gateway {route['gateway']})" if "gateway" in route else "")
            + ", not over a lab link"
        )
    return device
