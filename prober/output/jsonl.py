"""JSON lines: one object per probe and one summary object; field names are documented in
docs/json.md and stable."""

from __future__ import annotations

import json
from typing import Any


def dumps(record: dict[str, Any]) -> str:
    return json.dumps(record, separators=(",", ":"), sort_keys=False)
