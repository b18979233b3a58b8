"""Test helpers for stores and applications that use wsgisession.

* :class:`StoreContract`: the store conformance suite (pytest). Subclass it
  and provide a ``store`` fixture.
* :class:`SessionLifecycle`: the whole session lifecycle, driven through the
  real middleware by several browsers with requests in flight, checked after
  every step against a small reference model (hypothesis stateful testing).
  Subclass it and provide :meth:`~SessionLifecycle.make_store`.
* :class:`Clock`: a clock tests move by hand; :func:`at_once`: calls in threads released together.

Both need the ``testing`` extra (``pip install 'wsgisession[testing]'``).
"""

from __future__ import annotations

from .contract import Clock as Clock
from .contract import StoreContract as StoreContract
from .contract import at_once as at_once
from .lifecycle import SessionLifecycle as SessionLifecycle

__all__ = ["Clock", "SessionLifecycle", "StoreContract", "at_once"]
