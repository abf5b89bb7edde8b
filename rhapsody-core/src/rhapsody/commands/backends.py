"""`rhapsody backends`: what is installed, where it comes from, and why a backend can't run."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from rhapsody.plugins import OFFICIAL_BACKENDS, discover_backends, get_plugin_manager


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser  # no options


def run(args: argparse.Namespace) -> int:
    manager = get_plugin_manager()
    table = Table(title="RHAPSODY backends")
    for column in ("name", "distribution", "version", "available", "why not"):
        table.add_column(column)
    versions = {p["name"]: p.get("version") for p in manager.plugins_info()}
    for name, available in sorted(discover_backends().items()):
        spec = manager.backends.get(name)
        if spec is None:
            dist, version = OFFICIAL_BACKENDS.get(name, "?"), ""
            why = f"not installed: pip install {dist}"
        else:
            dist, version = spec.distribution, versions.get(spec.plugin) or ""
            missing = spec.missing_requirements()
            conflict = manager.conflict(name)
            why = conflict or (f"missing module(s): {', '.join(missing)}" if missing else "")
        table.add_row(name, dist, version, "yes" if available else "no", why)
    Console().print(table)
    for failure in manager.failures:
        Console(stderr=True).print(
            f"[red]broken plugin[/red] {failure.plugin} ({failure.distribution}): {failure.error}"
        )
    return 0
