"""Process settings the command line makes before onnxruntime loads (imported first by quantkit.cli).

onnxruntime 1.32 starts a telemetry client when its environment is created; with an unwritable
$HOME it prints a coloured warning on every command ("Failed to persist telemetry device ID"),
and a CI step or an offline machine has no use for it. The command line turns it off unless the
user set ORT_DISABLE_TELEMETRY themselves; the Python API leaves the process environment alone.
"""

from __future__ import annotations

import os

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
