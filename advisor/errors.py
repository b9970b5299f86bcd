"""How the CLI fails: one line on stderr and a documented exit status, never a traceback.

Exit 2: the user's input (an InputError from any layer, or a check here); exit 1: a gate that
fails, variants that failed, or an unexpected error (traceback with --debug).
"""

from __future__ import annotations

import contextlib
import functools
import os

import click

from store.errors import InputError


class SweepFailed(click.ClickException):
    """Some variants failed (exit 1); everything else was logged."""

    exit_code = 1


class InternalError(click.ClickException):
    """Not the user's mistake (a bug, a store that stopped answering): one line, exit status 1."""

    exit_code = 1

    def show(self, file=None) -> None:
        click.echo(f"Error: {self.format_message()}", err=True)


class AdvisorError(click.ClickException):
    """Bad input or an unusable resource: one line on stderr, exit status 2."""

    exit_code = 2

    def show(self, file=None) -> None:
        click.echo(f"Error: {self.format_message()}", err=True)


@contextlib.contextmanager
def _quiet_run_links(as_json):
    """With --json, stop MLflow printing "View run … at: URL" on stdout when a run on a server ends."""
    if not as_json:
        yield
        return
    name = "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"
    previous = os.environ.get(name)
    os.environ[name] = "true"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


def debug_enabled() -> bool:
    """`advisor --debug` or PTQ_ADVISOR_DEBUG=1: show the traceback of an unexpected error."""
    return os.environ.get("PTQ_ADVISOR_DEBUG", "").lower() in ("1", "true", "on", "yes")


def friendly_errors(command):
    """One line, never a traceback: any InputError (the user's input or a resource they named) is
    exit status 2; anything else is a bug or an outage, exit status 1, with the traceback kept for
    --debug. Under --json, stdout stays JSON."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            with _quiet_run_links(kwargs.get("as_json")):
                return command(*args, **kwargs)
        except InputError as err:
            raise AdvisorError(str(err).splitlines()[0] if str(err) else type(err).__name__) from None
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort, KeyboardInterrupt, SystemExit):
            raise
        except Exception as err:
            if debug_enabled():
                raise
            first = str(err).splitlines()[0][:500] if str(err) else ""
            raise InternalError(f"{type(err).__name__}: {first} (an unexpected error; run with `advisor --debug` "
                                "or PTQ_ADVISOR_DEBUG=1 for the traceback)") from None

    return wrapper
