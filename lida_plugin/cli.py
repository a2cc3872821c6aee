"""The ``lida`` command: a parser whose subcommands all come from plugins of lida's own hooks.

Like datasette and pytest, lida's own commands are plugins: the core ones in
:mod:`lida_plugin.commands`, ``keys``/``verify``/``watch``/``eval`` in their modules, and any
installed plugin can add more through the ``lida_register_commands`` hook. The plugin manager is
built once here and handed to every command as ``args.pm``.

Exit codes (also in the README):

* 0: every file was analysed (whatever the verdicts)
* 1: at least one file could not be analysed (its record has ``status: "error"``)
* 2: usage error (bad arguments)
* 3: setup error: no model, a model that breaks the contract, a store that cannot be used
* 130: interrupted
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from . import __version__
from .cli_options import (
    EXIT_BROKEN_PIPE,
    EXIT_FILE_ERRORS,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_SETUP,
    EXIT_USAGE,
    UsageError,
)
from .errors import LidaError

__all__ = ["EXIT_FILE_ERRORS", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_SETUP", "EXIT_USAGE", "build_parser", "main"]

log = logging.getLogger("lida")


def build_parser(pm) -> argparse.ArgumentParser:
    """The parser with every command that ``pm``'s plugins register (:class:`LidaError` naming a plugin that fails)."""
    parser = argparse.ArgumentParser(
        prog="lida",
        description="Is this image AI-generated, and by which registered generator? (LIDA: attribution as retrieval)",
        epilog="exit codes: 0 ok, 1 some files failed, 2 usage error, 3 setup error (model/store), 130 interrupted",
    )
    parser.add_argument("--version", action="version", version=f"lida-plugin {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # Called one implementation at a time, in registration order (lida's own first), so that a
    # broken plugin is named instead of vanishing or taking the whole command line down anonymously.
    for impl in pm.hook.lida_register_commands.get_hookimpls():
        try:
            impl.function(subparsers=sub, pm=pm)
        except Exception as exc:
            raise LidaError(
                f"plugin {impl.plugin_name!r} failed to register its commands: {type(exc).__name__}: {exc}"
                " (set LIDA_LOAD_PLUGINS to the plugins you want, e.g. LIDA_LOAD_PLUGINS= for none)"
            ) from exc
    return parser


def main(argv: list[str] | None = None, pm=None) -> int:
    """Run ``lida`` with ``argv``; ``pm``: a plugin manager to use (a host's own; default: a new one with
    lida's plugins and every installed one)."""
    from .cli_options import check_environment
    from .decode import png_decoder_setting
    from .manager import new_plugin_manager

    try:
        pm = pm or new_plugin_manager()
        parser = build_parser(pm)
    except LidaError as exc:
        print(f"lida: error: {exc}", file=sys.stderr)
        return EXIT_SETUP
    args = parser.parse_args(argv)
    args.pm = pm
    try:
        png_decoder_setting()
        check_environment()
    except ValueError as exc:  # an environment variable a worker process would otherwise die on
        parser.exit(EXIT_USAGE, f"lida {args.command}: error: {exc}\n")
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return args.func(args)
    except UsageError as exc:
        parser.exit(EXIT_USAGE, f"lida {args.command}: error: {exc}\n")
    except LidaError as exc:
        print(f"lida: error: {exc}", file=sys.stderr)
        return EXIT_SETUP
    except KeyboardInterrupt:
        print("lida: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # the reader went away (`lida verify X | head -1`): not success, which for verify would read as
        # "Trusted"; the status a shell gives a process that SIGPIPE ended. Output goes nowhere from now on,
        # so that flushing at exit cannot raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
