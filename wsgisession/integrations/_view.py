"""The mapping that the framework integrations present over a wsgisession Session."""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any

from ..session import Session


class SessionView(MutableMapping[str, Any]):
    """A framework's session object: a mapping over :attr:`wsgi_session`.

    Subclasses rename keys with :meth:`_key` (Pyramid's CSRF key) or convert
    values around :meth:`__getitem__` and :meth:`__setitem__` (Flask's flash
    tuples); everything else goes straight to the wrapped session.
    """

    __slots__ = ()

    #: The :class:`~wsgisession.Session` this object presents.
    wsgi_session: Session

    @staticmethod
    def _key(key: str) -> str:
        return key

    def __getitem__(self, key: str) -> Any:
        return self.wsgi_session[self._key(key)]

    def __setitem__(self, key: str, value: Any) -> None:
        self.wsgi_session[self._key(key)] = value

    def __delitem__(self, key: str) -> None:
        del self.wsgi_session[self._key(key)]

    def __contains__(self, key: object) -> bool:
        return (self._key(key) if type(key) is str else key) in self.wsgi_session

    def __iter__(self) -> Iterator[str]:
        return iter(self.wsgi_session)

    def __len__(self) -> int:
        return len(self.wsgi_session)

    def clear(self) -> None:
        """Remove every key (the session itself lives on)."""
        self.wsgi_session.clear()

    # -- what a login view needs of wsgisession's API -------------------------------------

    @property
    def user_id(self) -> str | None:
        """The user the session is bound to by :meth:`login`, or ``None``."""
        return self.wsgi_session.user_id

    def login(self, user_id: str | int) -> None:
        """Bind the session to *user_id* with a new session ID and CSRF token; see :meth:`Session.login`."""
        self.wsgi_session.login(user_id)

    def regenerate(self) -> None:
        """Give the session a new ID, keeping its data; see :meth:`Session.regenerate`."""
        self.wsgi_session.regenerate()
