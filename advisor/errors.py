"""How the CLI fails: one line on stderr and a documented exit status, never a traceback."""

from __future__ import annotations

import contextlib
import functools
import os

import click

from pipelines.quantize.formats import FormatError


class SweepFailed(click.ClickException):
    """Some variants failed (exit 1); everything else was logged."""

    exit_code = 1


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


def friendly_errors(command):
    """Turn the pipelines' input errors into one-line AdvisorErrors (no traceback); keep --json stdout JSON."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from pipelines.sources.corpus import CorpusError
        from pipelines.sources.model_source import ModelLoadError

        try:
            with _quiet_run_links(kwargs.get("as_json")):
                return command(*args, **kwargs)
        except (FormatError, CorpusError, ModelLoadError) as err:
            raise AdvisorError(str(err)) from None
        except (ValueError, FloatingPointError) as err:
            raise AdvisorError(str(err).splitlines()[0] if str(err) else type(err).__name__) from None
        except LookupError as err:  # the registry's "not found" errors; a KeyError is a bug
            if isinstance(err, (KeyError, IndexError)):
                raise
            raise AdvisorError(str(err)) from None

    return wrapper
