"""Measures as aligned lines for the terminal."""

from __future__ import annotations

from typing import Any


def format_metrics(metrics: dict[str, Any]) -> list[str]:
    """One aligned ``name value`` line per measure, for printing; warnings each on a line."""
    lines = []
    for key, value in metrics.items():
        if key == "warnings":
            lines.extend(f"WARNING: {warning}" for warning in value)
            continue
        if key == "absent_because":
            continue
        if key == "absent":
            reason = metrics.get("absent_because", "")
            lines.append(f"{key:<18} {' '.join(value)}" + (f" ({reason})" if reason else ""))
            continue
        if isinstance(value, list):
            shown = " ".join(f"{item:.2f}" for item in value)
        elif isinstance(value, dict):
            shown = "  ".join(f"{name} {item:.3f}" for name, item in value.items())
        else:
            shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        lines.append(f"{key:<18} {shown}")
    return lines
