"""The ``xvision`` command: one group, one module per command.

Every command raises :class:`xvision.errors.XvisionError` for user mistakes; :func:`main` prints such
errors on one line (``Error: ...``) and exits with status 2, never with a traceback. Exit statuses: 0 done;
1 the file system refused (disk full, read-only), or a command's own partial failure (`predict`: some files
unreadable; `fetch`: items to retry); 2 a user mistake or a damaged input; 70 (EX_SOFTWARE) an error no check
foresaw, said in one line too (``xvision -v`` shows the traceback; ``XVISION_TRACEBACK=1`` re-raises it, as the
test suite sets); 130/143 interrupted (Ctrl-C, SIGTERM).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections import Counter
from typing import TextIO

import click

from xvision._version import __version__
from xvision.errors import ImageWarning, XvisionError


class LazyGroup(click.Group):
    """A group that imports a command's module only when that command runs (see xvision.cli.commands)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        from xvision.cli.commands import COMMANDS

        return [entry.name for entry in COMMANDS]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        import importlib

        from xvision.cli.commands import COMMANDS

        for entry in COMMANDS:
            if entry.name == cmd_name:
                return getattr(importlib.import_module(entry.module), entry.name)
        return None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        from xvision.cli.commands import COMMANDS, short_help

        width = max(len(entry.name) for entry in COMMANDS)
        limit = formatter.width - 6 - width
        rows = [(entry.name, short_help(entry, limit)) for entry in COMMANDS]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="xvision")
@click.option("-v", "--verbose", is_flag=True, help="Show debug logging.")
def cli(verbose: bool) -> None:
    """Xvision: transfer learning on chest X-rays.

    Typical flow: manifest -> split -> extract -> train -> evaluate -> predict.
    Run `xvision demo` for a complete example on synthetic data.
    """
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s: %(message)s",
        handlers=[_BarSafeHandler()],
    )
    # huggingface_hub prints its records (a timm download's retries) through its own handler: once is enough.
    logging.getLogger("huggingface_hub").propagate = False
    # timm says "Loaded  from checkpoint ..." at INFO for every weights file; Xvision names the weights itself.
    logging.getLogger("timm").setLevel(logging.NOTSET if verbose else logging.WARNING)
    _warnings_as_log_lines(verbose)


class _BarSafeHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Log lines to stderr through ``tqdm.write``: a warning said while a progress bar runs gets a line of its
    own, and the bar is drawn again below it, instead of the warning starting at the end of the bar's line."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # noqa: BLE001 - logging's own rule: a failing handler must not raise
            self.handleError(record)


def _warnings_as_log_lines(verbose: bool) -> None:
    """Python warnings (a MONOCHROME1 film, a library's deprecation) as ``WARNING: message`` lines: the
    source file and line that ``warnings`` prints mean nothing to a user; ``-v`` adds them back."""
    import warnings

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        if isinstance(message, ImageWarning):
            if str(message) in _image_warnings_said:  # a file read again (a heatmap, a thumbnail): said already
                return
            _image_warnings_said.add(str(message))
            if not verbose:
                _image_warnings[message.kind] += 1
                if _image_warnings[message.kind] > SAID_PER_KIND:
                    return
        where = f" ({category.__name__} at {filename}:{lineno})" if verbose else ""
        logging.getLogger("py.warnings").warning("%s%s", message, where)

    warnings.showwarning = show
    # Once per message, wherever it comes from: `predict --grid --heatmaps` reads a MONOCHROME1 film three
    # times (prediction, heatmap, thumbnail) and said so three times. Messages name their file, so every file
    # is still reported.
    warnings.simplefilter("once", UserWarning)


# A folder of MONOCHROME1 films would print one line per film: each kind of image warning is shown for this
# many files, then counted, and the count said when the command ends (`-v` shows every one).
SAID_PER_KIND = 3
_image_warnings: Counter[str] = Counter()
_image_warnings_said: set[str] = set()


def _say_counted_warnings() -> None:
    for kind, n in _image_warnings.items():
        if n > SAID_PER_KIND:
            logging.getLogger("py.warnings").warning("%d more files: %s (-v lists them)", n - SAID_PER_KIND, kind)
    _image_warnings.clear()
    _image_warnings_said.clear()


#: Exit status of an error no check foresaw (sysexits' EX_SOFTWARE): apart from 1, which `fetch` uses for "run
#: again to retry", so that a retry loop does not spin on it.
UNFORESEEN = 70

_signals: list[int] = []


def _interrupted() -> int:
    return 128 + _signals[-1] if _signals else 130  # 130: Ctrl-C (SIGINT)


def _interrupt_on_sigterm() -> None:
    # Long jobs save finished work when interrupted; treat a polite kill like Ctrl-C so they do so here too.
    def handler(signum: int, frame: object) -> None:
        _signals.append(signum)  # main() then exits 143, the status a shell expects after SIGTERM
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not in the main thread (e.g. called from a server worker)
        pass


def main(argv: list[str] | None = None) -> int:
    """Entry point for the console script and ``python -m xvision``."""
    _interrupt_on_sigterm()
    try:
        return _run(argv)
    finally:
        _say_counted_warnings()


def _run(argv: list[str] | None) -> int:
    try:
        # With standalone_mode=False click returns a command's Exit code instead of calling sys.exit.
        status = cli.main(args=argv, prog_name="xvision", standalone_mode=False)
    except XvisionError as error:
        click.echo(f"Error: {error}", err=True)
        return 2
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("Interrupted.", err=True)
        return _interrupted()
    except click.ClickException as error:
        error.show()
        return error.exit_code
    except click.exceptions.Exit as exit_:
        return exit_.exit_code
    except OSError as error:  # the file system refused (disk full, read-only, no permission): say so in one line
        logging.getLogger(__name__).debug("file system error", exc_info=True)  # -v shows where
        where = f": {error.filename}" if error.filename else ""
        click.echo(f"Error: {error.strerror or error}{where}", err=True)
        return 1
    except Exception as error:
        # What no check above foresaw: most often a damaged or hand-made input (a bundle.json of other types, a
        # table of odd values), sometimes a bug. One line, as for every other error; -v shows the traceback.
        if os.environ.get("XVISION_TRACEBACK"):  # the test suite's own runs: show where
            raise
        logging.getLogger(__name__).debug("unexpected error", exc_info=True)
        message = " ".join(str(error).split())
        message = message if len(message) <= 300 else message[:297] + "..."
        click.echo(
            f"Error: {type(error).__name__}: {message} (unexpected: an input Xvision does not understand, or a bug; "
            "`xvision -v ...` shows where, for a report)",
            err=True,
        )
        return UNFORESEEN
    return status if isinstance(status, int) else 0


if __name__ == "__main__":
    sys.exit(main())
