"""``python -m wsgisession`` (or ``wsgisession``): operate on a session store.

Exit codes:

* 0 -- done (``check``: no problem found);
* 1 -- the store failed while working, or ``check`` found a problem;
* 2 -- bad usage, a bad store URL, or a store that cannot be reached.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from . import __version__
from .errors import ConfigurationError, StoreError, StoreTimeoutError, StoreUnavailableError
from .ids import new_id, store_key
from .session import USER_AGENT_KEY
from .signing import MIN_SECRET_BYTES
from .stores import from_url
from .stores.base import BatchedPrune, Countable, ProcessLocal, Store, UserIndex

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

#: The environment variable ``check`` reads the secret file's path from.
SECRET_FILE_ENV = "SESSION_SECRET_FILE"  # noqa: S105 - a variable's name, not a secret
# A secret file is a line of text; anything much longer is the wrong file.
_MAX_SECRET_FILE = 64 * 1024

_URLS = (
    "Store URLs: memory://, file:///abs/dir, sqlite:///relative.db, sqlite:////abs/path.db, "
    "redis://host:6379/0, redis+cluster://host:port,host:port, redis+sentinel://host:port/service, "
    "postgresql://user@host/db, mysql://user@host/db. No command creates a missing store."
)
_EXITS = (
    "Exit codes: 0 done, 1 the store failed (check: a problem was found), 2 bad usage, bad URL or unreachable store."
)


class _Fail(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wsgisession", description="Operate on a wsgisession store.", epilog=f"{_URLS} {_EXITS}"
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, summary: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=summary, description=summary, epilog=_EXITS)
        sub.add_argument("store_url", metavar="STORE_URL", help="the store, as a URL")
        return sub

    prune = command("prune", "remove expired sessions and print how many")
    prune.add_argument("--batch-size", type=_positive, default=1000, metavar="N", help="rows per batch (default 1000)")
    command("count", "print how many live sessions the store holds")
    listing = command("list", "list a user's live sessions")
    listing.add_argument("--user", required=True, metavar="ID", help="the user ID given to session.login()")
    end = command("end", "end every session of a user (after a password reset, say)")
    end.add_argument("--user", required=True, metavar="ID", help="the user ID given to session.login()")
    check = command("check", "check a deployment: store reachable, schema present, secret strength, cookie flags")
    secret = check.add_mutually_exclusive_group()
    secret.add_argument(
        "--secret-env",
        default="SESSION_SECRET",
        metavar="NAME",
        help="environment variable holding the secret (default SESSION_SECRET); its value is never printed",
    )
    secret.add_argument(
        "--secret-file",
        metavar="PATH",
        help=(
            "file holding the secret (surrounding whitespace ignored), such as the reference app's"
            " session-secret.txt; default $SESSION_SECRET_FILE when the secret's variable is unset"
        ),
    )
    check.add_argument("--cookie-name", default="session", help="the cookie_name the app uses")
    check.add_argument(
        "--samesite", default="Lax", choices=["Strict", "Lax", "None", "omit"], help="the samesite the app uses"
    )
    check.add_argument("--secure", default="auto", choices=["auto", "true", "false"], help="the secure setting")
    check.add_argument("--domain", default=None, help="the domain the app uses")
    check.add_argument("--path", default="/", help="the path the app uses")
    return parser


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    args = _parser().parse_args(argv)
    # Errors reach the user as one line from here; connection pools' own
    # retry chatter would only bury it.
    logging.basicConfig(level=logging.ERROR, format="wsgisession: %(name)s: %(message)s")
    logging.getLogger("psycopg.pool").setLevel(logging.CRITICAL)
    try:
        # Every command reads or changes sessions that exist: none creates a
        # missing database, directory or table, so a mistyped URL is an error.
        store = from_url(args.store_url, create=False)
    except ConfigurationError as exc:
        print(f"wsgisession: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except StoreUnavailableError as exc:
        print(f"wsgisession: store unreachable: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return int(_COMMANDS[args.command](store, args, sys.stdout))
    except _Fail as exc:
        print(f"wsgisession: {exc}", file=sys.stderr)
        return exc.code
    except (StoreUnavailableError, StoreTimeoutError) as exc:
        print(f"wsgisession: store unreachable: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except StoreError as exc:
        print(f"wsgisession: {_one_line(exc)}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        store.close()


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _index(store: Store) -> UserIndex:
    if not isinstance(store, UserIndex):
        raise _Fail(f"{type(store).__name__} keeps no index of users' sessions", EXIT_USAGE)
    return store


def _prune(store: Store, args: argparse.Namespace, out: TextIO) -> int:
    batches = store.prune_batches(args.batch_size) if isinstance(store, BatchedPrune) else None
    removed = 0
    if batches is None:
        removed = store.prune()
    else:
        progress = sys.stderr.isatty()
        started = time.monotonic()
        for count in batches:
            removed += count
            if progress:
                rate = removed / max(time.monotonic() - started, 1e-6)
                print(f"\rpruning: {removed:,} removed ({rate:,.0f}/s)", end="", file=sys.stderr, flush=True)
        if progress:
            print(file=sys.stderr)
    print(f"removed {removed} expired session{'' if removed == 1 else 's'}", file=out)
    return EXIT_OK


def _count(store: Store, args: argparse.Namespace, out: TextIO) -> int:
    if not isinstance(store, Countable):
        raise _Fail(f"{type(store).__name__} cannot count its sessions", EXIT_USAGE)
    print(store.count(), file=out)
    return EXIT_OK


def _when(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch))


def _list(store: Store, args: argparse.Namespace, out: TextIO) -> int:
    from .session import _handle

    sessions = _index(store).sessions_of(args.user)
    if not sessions:
        print(f"no live sessions for user {args.user!r}", file=out)
        return EXIT_OK
    print(f"{'handle':<32}  {'created (UTC)':<19}  {'expires (UTC)':<19}  user agent", file=out)
    for key, record in sessions:
        agent = record.data.get(USER_AGENT_KEY)
        agent = " ".join(agent.split())[:80] if isinstance(agent, str) else "-"
        print(f"{_handle(key):<32}  {_when(record.created_at)}  {_when(record.expires_at)}  {agent}", file=out)
    return EXIT_OK


def _end(store: Store, args: argparse.Namespace, out: TextIO) -> int:
    ended = _index(store).destroy_user(args.user)
    print(f"ended {ended} session{'' if ended == 1 else 's'} of user {args.user!r}", file=out)
    return EXIT_OK


def _check(store: Store, args: argparse.Namespace, out: TextIO) -> int:
    import warnings

    from .middleware import SessionMiddleware

    problems: list[str] = []

    def report(ok: bool, what: str) -> None:
        print(f"{'ok ' if ok else 'BAD'}  {what}", file=out)
        if not ok:
            problems.append(what)

    # The store: reachable, and its schema in place (a read creates it if missing).
    started = time.monotonic()
    store.load(store_key(new_id()))
    report(True, f"store reachable: {store!r} ({(time.monotonic() - started) * 1000:.1f} ms)")
    if isinstance(store, Countable):
        report(True, f"schema present: {store.count()} live session(s)")
    if isinstance(store, ProcessLocal):
        report(False, f"{type(store).__name__} keeps sessions in one process: not for production")

    secret = _check_secret(args, report)

    secure: Any = {"auto": "auto", "true": True, "false": False}[args.secure]
    samesite = None if args.samesite == "omit" else args.samesite
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            middleware = SessionMiddleware(
                _no_app,
                secret or "x" * MIN_SECRET_BYTES,
                store,
                cookie_name=args.cookie_name,
                secure=secure,
                samesite=samesite,
                domain=args.domain,
                path=args.path,
            )
    except ConfigurationError as exc:
        report(False, f"cookie settings: {exc}")
    else:
        for scheme in ("http", "https"):
            attributes = middleware._attributes + (
                "; Secure" if middleware._is_secure({"wsgi.url_scheme": scheme}) else ""
            )
            print(
                f"     cookie over {scheme}: {args.cookie_name}=<id>.<signature>; Max-Age=86400{attributes}", file=out
            )
        if secure is False:
            report(False, "cookie: secure=False sends the session cookie over plain http")
    print(f"{len(problems)} problem{'' if len(problems) == 1 else 's'} found", file=out)
    return EXIT_FAILED if problems else EXIT_OK


def _check_secret(args: argparse.Namespace, report: Callable[[bool, str], None]) -> str:
    """Find the secret the way ``check`` was told to, report on it, and return it ("" if none)."""
    path = args.secret_file
    if path is None:
        secret = os.environ.get(args.secret_env, "")
        if secret:
            origin = f"${args.secret_env}"
        elif os.environ.get(SECRET_FILE_ENV):
            path = os.environ[SECRET_FILE_ENV]
        else:
            report(False, f"secret: ${args.secret_env} is not set (or pass --secret-file PATH)")
            return ""
    if path is not None:
        origin = f"file {path}" if args.secret_file is not None else f"file {path} (${SECRET_FILE_ENV})"
        try:
            secret = _read_secret_file(path)
        except _BadSecretFile as exc:
            report(False, f"secret: {origin} {exc}")
            return ""
        _check_secret_file_mode(path, origin, report)
    size = len(secret.encode("utf-8", "surrogateescape"))
    report(size >= MIN_SECRET_BYTES, f"secret: {origin} is {size} bytes (at least {MIN_SECRET_BYTES})")
    return secret


class _BadSecretFile(Exception):
    pass


def _read_secret_file(path: str) -> str:
    """The secret in the file at *path*, whitespace around it removed.

    :raises _BadSecretFile: saying, without the file's content, why there is none.
    """
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_SECRET_FILE + 1)
    except FileNotFoundError:
        raise _BadSecretFile("does not exist") from None
    except IsADirectoryError:
        raise _BadSecretFile("is a directory, not a file") from None
    except PermissionError:
        raise _BadSecretFile("cannot be read: permission denied") from None
    except OSError as exc:
        raise _BadSecretFile(f"cannot be read: {exc.strerror or type(exc).__name__}") from None
    if len(data) > _MAX_SECRET_FILE:
        raise _BadSecretFile(f"is over {_MAX_SECRET_FILE} bytes: not a secret file")
    try:
        secret = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise _BadSecretFile("is not UTF-8 text (the app reads the secret as text)") from None
    if not secret:
        raise _BadSecretFile("is empty")
    return secret


def _check_secret_file_mode(path: str, origin: str, report: Callable[[bool, str], None]) -> None:
    try:
        mode = os.stat(path).st_mode
    except OSError:  # pragma: no cover - it was read a moment ago
        return
    if os.name == "posix" and mode & 0o007:
        report(False, f"secret: {origin} is open to every user (mode {mode & 0o777:04o}): chmod 600 or 640 it")


def _no_app(environ: Any, start_response: Any) -> list[bytes]:  # pragma: no cover - never called
    return []


_COMMANDS = {"prune": _prune, "count": _count, "list": _list, "end": _end, "check": _check}
