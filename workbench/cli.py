"""The ``workbench`` command: a thin dispatcher over :mod:`workbench.commands`.

Each verb is a module in ``workbench/commands/`` exposing ``NAME``, ``HELP``,
``add_arguments(parser)``, ``run(args) -> dict`` (the JSON-able result) and
``render(result) -> str`` (the human-readable text). This file only parses, dispatches, prints
and turns user errors into one-line messages with a non-zero exit status.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import pkgutil
import signal
import sys
import threading
import warnings
from types import ModuleType

from workbench.errors import WorkbenchError
from workbench.model.load import model_defaults


def _commands() -> list[ModuleType]:
    import workbench.commands as pkg

    mods = [
        importlib.import_module(f"workbench.commands.{m.name}")
        for m in pkgutil.iter_modules(pkg.__path__)
        if not m.name.startswith("_")
    ]
    return sorted((m for m in mods if hasattr(m, "NAME")), key=lambda m: str(m.NAME))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="workbench",
        description="Find, build, apply, compose and measure activation-steering vectors.",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="show library log messages")
    sub = parser.add_subparsers(dest="command", metavar="VERB")
    for mod in _commands():
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        _add_model_flags(p)
        p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
        p.set_defaults(_module=mod)
    return parser


def _add_model_flags(parser: argparse.ArgumentParser) -> None:
    """``--device`` and ``--dtype`` on every (sub)command that takes ``--model``."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _add_model_flags(child)
    if any("--model" in a.option_strings for a in parser._actions):
        parser.add_argument(
            "--device",
            default=None,
            help="auto (default: cuda, then mps, then cpu), cpu, cuda[:N] or mps",
        )
        parser.add_argument(
            "--dtype", default=None, help="float32 (default), bfloat16 or float16 (not on cpu)"
        )


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so it unwinds like Ctrl-C: every ``finally`` runs
    and temporary outputs are removed."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated()


def _interrupt_behind(error: BaseException) -> KeyboardInterrupt | None:
    """The Ctrl-C or SIGTERM that ``error`` was raised while handling, if any."""
    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        if isinstance(e, KeyboardInterrupt):
            return e
        seen.add(id(e))
        e = e.__context__
    return None


def _stopped(name: str, e: KeyboardInterrupt) -> int:
    how = "terminated" if isinstance(e, Terminated) else "interrupted"
    print(f"workbench {name}: {how}; completed work was kept", file=sys.stderr)
    return 128 + (signal.SIGTERM if isinstance(e, Terminated) else signal.SIGINT)


def _quiet_transformers() -> None:
    # transformers may be imported already (command modules import it), so environment
    # variables come too late: switch its logging and weight-loading progress bars off directly.
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_module", None):
        parser.print_help()
        return 0
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s"
    )
    if not args.verbose:
        warnings.filterwarnings("ignore")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        _quiet_transformers()
    mod = args._module
    # Only the main thread may set handlers (main() also runs in threads, e.g. in tests).
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
    try:
        with model_defaults(
            device=getattr(args, "device", None), dtype=getattr(args, "dtype", None)
        ):
            result = mod.run(args)
    except WorkbenchError as e:
        print(f"workbench {mod.NAME}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        return _stopped(mod.NAME, e)
    except Exception as e:
        # An interrupt that lands inside library cleanup code can be replaced by the error that
        # code raises while unwinding (e.g. rmtree closing a descriptor twice): still a stop.
        interrupt = _interrupt_behind(e)
        if interrupt is None:
            raise
        return _stopped(mod.NAME, interrupt)
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    if args.json:
        print(json.dumps(result, default=str))
    else:
        print(mod.render(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
