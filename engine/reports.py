"""Read-only reports over a run's data: judge agreement, training-data export."""

from __future__ import annotations

COMMANDS: list = []
