"""`rhapsody plugins`: loaded plugins as JSON, broken ones with their error."""

from __future__ import annotations

import argparse
import json

from rhapsody.plugins import get_plugin_manager


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--all", action="store_true", help="include core's built-in plugins")


def run(args: argparse.Namespace) -> int:
    info = get_plugin_manager().plugins_info()
    if not args.all:
        info = [p for p in info if p.get("distribution") != "rhapsody-core"]
    print(json.dumps(info, indent=2))
    return 0
