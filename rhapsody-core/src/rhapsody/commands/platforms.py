"""`rhapsody platforms`: the registered platform catalog, and what `detect()` sees here."""

from __future__ import annotations

import argparse

import attrs
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from rhapsody.platforms import (
    PlatformError,
    PlatformNotFoundError,
    detect,
    get_platform,
    list_platforms,
)
from rhapsody.plugins import OFFICIAL_PLATFORM_CATALOG


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", help="show every field of this platform")


def run(args: argparse.Namespace) -> int:
    console, errors = Console(), Console(stderr=True)
    if args.name:
        try:
            platform = get_platform(args.name)
        except PlatformNotFoundError as exc:
            errors.print(f"[red]{escape(str(exc))}[/red]")
            return 1
        details = Table(title=f"platform {args.name}", show_header=False)
        details.add_column("field")
        details.add_column("value", overflow="fold")
        for field, value in attrs.asdict(platform, recurse=False).items():
            details.add_row(field, _show(value))
        details.add_row("cpus_per_node", str(platform.cpus_per_node))
        console.print(details)
        return 0
    _print_catalog(console)
    try:
        allocation = detect()
    except PlatformError as exc:
        # Escaped: hostlists in the message look like rich markup (`n[a-b]`).
        errors.print(f"[red]detect() failed:[/red] {escape(str(exc))}")
        return 1
    here = Table(title="detect() here", show_header=False)
    here.add_row("resource manager", allocation.resource_manager.value)
    here.add_row("job id", allocation.job_id or "")
    here.add_row("nodes", f"{len(allocation.nodes)}: {allocation.nodelist}")
    here.add_row("cores per node", str(allocation.cores_per_node))
    here.add_row("GPUs per node", str(allocation.gpus_per_node))
    here.add_row("GPU ids", ",".join(allocation.gpu_ids))
    here.add_row("total cores", str(allocation.total_cores))
    console.print(here)
    return 0


def _print_catalog(console: Console) -> None:
    names = list_platforms()
    if not names:
        console.print(f"no platform catalog installed: pip install {OFFICIAL_PLATFORM_CATALOG}")
        return
    table = Table(title="RHAPSODY platforms", box=box.SIMPLE_HEAD)
    columns = ("name", "RM", "partition", "cores", "GPUs", "mem GB", "launch", "RADICAL label")
    for column in columns:
        # Fold rather than truncate: every figure must stay readable in a narrow terminal.
        table.add_column(column, overflow="fold", no_wrap=column == "name")
    for name in names:
        p = get_platform(name)
        table.add_row(
            name,
            p.resource_manager.value,
            p.partition or "",
            str(p.cores_per_node),
            str(p.gpus_per_node),
            str(p.mem_per_node or ""),
            p.launch_method.value,
            p.radical_resource or "",
        )
    console.print(table)


def _show(value: object) -> str:
    if isinstance(value, tuple):
        return "\n".join(str(item) for item in value)
    return "" if value is None else str(getattr(value, "value", value))
