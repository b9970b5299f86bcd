"""A tracking store that answers, or one clear error: checked before work starts, recognised after."""

from __future__ import annotations

from store.errors import InputError


class TrackingError(InputError, RuntimeError):
    """A tracking store that cannot be used; the message says which and why."""


def check_tracking_server(uri: str, timeout_s: float = 5.0) -> None:
    """Fail in seconds, not after minutes of retries, when an http(s) tracking URI does not answer."""
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.request

    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s).read()
    except Exception as err:
        raise TrackingError(f"tracking server {uri} does not answer ({err}); start it or pass "
                            "another --tracking-uri") from None


def store_failure(err: BaseException) -> str | None:
    """The message of the store error behind `err` (MLflow's REST client gave up after its retries,
    possibly inside a Ray task), else None."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if type(err).__name__ == "MlflowException" and str(err).startswith("API request to"):
            return str(err).splitlines()[0]
        err = getattr(err, "cause", None) or err.__cause__ or err.__context__
    return None
