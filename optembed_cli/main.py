"""Entry point: the ``optembed`` Typer application."""

from __future__ import annotations

import os
import signal
import sys

import typer

try:  # recent Typer vendors Click
    from typer._click import exceptions as click_exc
except ImportError:  # pragma: no cover - older Typer depends on Click
    from click import exceptions as click_exc

from optembed_cli import ui
from optembed_cli.lazy import LazyCommand, lazy_group
from optembed_cli.suggest import choice_error


def _command(name: str, module: str | None = None) -> LazyCommand:
    return LazyCommand(name, f"optembed_cli.commands.{module or name}", name)


# every command, in the order of the help page; a command's module is imported when it runs
COMMANDS = (
    _command("demo"),
    _command("synth"),
    _command("preprocess"),
    _command("supernet"),
    _command("search"),
    _command("retrain"),
    _command("compress"),
    _command("evaluate"),
    _command("export"),
    _command("predict"),
    _command("run"),
    _command("baseline"),
    _command("artifacts"),
    _command("show", "artifacts"),
    _command("rm", "artifacts"),
    _command("gc", "artifacts"),
)

def _flags_without_type() -> None:
    """Help pages: a flag (``--force``, ``--batch-norm/--no-batch-norm``) takes no value, so its
    type column stays empty instead of saying ``<bool>``. Typer versions without the hook keep
    their own rendering."""
    try:
        from typer.core import TyperOption
    except ImportError:  # pragma: no cover - other typer layouts
        return
    shown = getattr(TyperOption, "display_type_rich", None)
    if shown is None or getattr(shown, "_optembed", False):
        return

    def display_type_rich(self: TyperOption, ctx: object) -> str | None:
        if getattr(self, "is_flag", False) and self.metavar is None:
            return None
        return shown(self, ctx)  # type: ignore[arg-type]

    display_type_rich._optembed = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_flags_without_type()

class OptembedGroup(lazy_group(*COMMANDS)):  # type: ignore[misc]
    """The ``optembed`` group: a usage error is one line on stderr (exit code 2), also when the
    group is run by a test runner rather than :func:`main`."""

    def main(  # type: ignore[override]
        self,
        args: list[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: object,
    ) -> object:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name or "optembed", complete_var, standalone_mode=False, **extra)
        except click_exc.NoArgsIsHelpError:
            sys.exit(0)  # the help text was already shown
        except click_exc.BadParameter as exc:
            line = choice_error(exc)
            raise SystemExit(_usage_line(exc) if line is None else _one_line(line, 2)) from None
        except click_exc.UsageError as exc:
            raise SystemExit(_usage_line(exc)) from None
        except typer.Abort:
            raise SystemExit(_one_line("error: aborted", 130)) from None
        except typer.Exit as exc:
            sys.exit(exc.exit_code)
        except click_exc.ClickException as exc:
            raise SystemExit(_one_line(f"error: {exc.format_message()}", exc.exit_code)) from None
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    name="optembed",
    cls=OptembedGroup,
    help="Learn compact, hardware-friendly embedding tables for CTR models (OptEmbed).",
    no_args_is_help=True,
    add_completion=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        from optembed import __version__

        ui.out.print(f"optembed {__version__}", markup=False, highlight=False)
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only results, warnings and errors: no progress or status lines."),
    verbose: bool = typer.Option(
        False, "--verbose", "-v", help="More detail: the resolved configuration, progress lines every 10 s in logs."
    ),
) -> None:
    """Learn compact, hardware-friendly embedding tables for CTR models (OptEmbed).

    New here? 'optembed demo' runs every stage on generated data in a few minutes.
    """
    if quiet and verbose:
        raise typer.BadParameter("--quiet and --verbose exclude each other")
    ui.settings.quiet, ui.settings.verbose = quiet, verbose


def stop_on_sigterm() -> None:
    """In a data-parallel worker (``--nproc``, torchrun), SIGTERM - how the launcher stops the
    surviving ranks when one fails - raises ``SystemExit(143)``, so a stage's half-built folder
    is removed as on any error instead of being left behind by an abrupt end."""

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; usage errors are reported on one stderr line with exit code 2."""
    args = list(argv) if argv is not None else sys.argv[1:]
    if os.environ.get("TORCHELASTIC_RUN_ID") is not None:  # set by the launcher in every worker
        stop_on_sigterm()
    ui.settings.argv = args
    typer.main.get_command(app).main(args=args, prog_name="optembed")


def _usage_line(exc: click_exc.UsageError) -> int:
    hint = f" (see 'optembed {exc.ctx.info_name} --help')" if exc.ctx and exc.ctx.info_name != "optembed" else ""
    return _one_line(f"error: {exc.format_message()}{hint}", 2)


def _one_line(message: str, code: int) -> int:
    ui.err.print(" ".join(message.split()), soft_wrap=True, markup=False)
    return code


if __name__ == "__main__":
    main()
