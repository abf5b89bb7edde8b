"""The `rhapsody` command. Each subcommand lives in `rhapsody.commands.<name>`, imported only
when used, with `add_arguments(parser)` and `run(args) -> int`."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from rhapsody import __version__

SUBCOMMANDS = {
    "run": "run a workflow file (TOML, JSON or YAML) with live progress and a summary",
    "backends": "list backends: name, distribution, version, available, why not",
    "plugins": "list loaded plugins as JSON (and the broken ones)",
    "platforms": "list the platform catalog and what detect() sees here",
    "report": "summarize a trace: utilization, critical path, slowest tasks (--html: a page)",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rhapsody", description="RHAPSODY workflow runtime")
    parser.add_argument("--version", action="version", version=f"rhapsody {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in SUBCOMMANDS.items():
        module = importlib.import_module(f"rhapsody.commands.{name}")
        module.add_arguments(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    module = importlib.import_module(f"rhapsody.commands.{args.command}")
    code: int = module.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
