"""What every domain's actions share. An action is what a person does, the same for the API and the console
(``cloud/<domain>/actions.py``): it checks the user's rights (:mod:`cloud.auth.scope`), does the work through
the services, writes the audit log and publishes what happened on the node's event stream. Errors are typed
here so each face answers in its own way (an HTTP status, a message on a page).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from cloud.auth.scope import can
from cloud.auth.service import User


class ActionError(Exception):
    status = 422


class Forbidden(ActionError):
    status = 403


class NotFound(ActionError):
    status = 404


class Conflict(ActionError):
    status = 409


class Unavailable(ActionError):
    status = 503


@contextlib.contextmanager
def translated(invalid: tuple[type[Exception], ...] = (), conflict: tuple[type[Exception], ...] = ()) -> Iterator[None]:
    """The services' errors as actions' own: a missing thing → NotFound, the broker away → Unavailable,
    ``conflict`` → Conflict, ``invalid`` → ActionError (422)."""
    try:
        yield
    except ActionError:
        raise
    except LookupError as exc:
        raise NotFound(f"no {str(exc).strip(chr(39))}") from None
    except conflict as exc:
        raise Conflict(str(exc)) from None
    except invalid as exc:
        raise ActionError(str(exc)) from None
    except ConnectionError as exc:
        raise Unavailable(f"{exc}; try again shortly") from None


def need(user: User, perm: str) -> None:
    if not can(user, perm):
        raise Forbidden(f"your role ({user.role}) may not do this ({perm})")
