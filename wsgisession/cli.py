"""``python -m wsgisession``: operate on a session store from the command line.

Exit codes: 0 success, 1 the store failed while working, 2 bad usage, a bad
URL or an unreachable store.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__
from .errors import ConfigurationError, StoreError
from .stores import from_url


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wsgisession",
        description="Operate on a wsgisession store.",
        epilog="Store URLs: memory://, file:///abs/dir, sqlite:///relative.db, sqlite:////abs/path.db, "
        "redis://host:6379/0, postgresql://user@host/db. Exit codes: 0 ok, 1 store failure, 2 usage or bad URL.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    prune = commands.add_parser(
        "prune", help="remove expired sessions and print how many", description="Remove expired sessions."
    )
    prune.add_argument("store_url", metavar="STORE_URL", help="the store, as a URL")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    args = _parser().parse_args(argv)
    try:
        store = from_url(args.store_url)
    except ConfigurationError as exc:
        print(f"wsgisession: {exc}", file=sys.stderr)
        return 2
    try:
        if args.command == "prune":
            removed = store.prune()
            print(f"removed {removed} expired session{'s' if removed != 1 else ''}")
        return 0
    except StoreError as exc:
        print(f"wsgisession: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
