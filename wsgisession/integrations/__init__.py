"""Thin adapters that hand wsgisession's session to web frameworks.

One module per framework: :mod:`wsgisession.integrations.bottle`,
:mod:`wsgisession.integrations.pyramid` and :mod:`wsgisession.integrations.flask`.
Only those modules import their framework, so this package (and the core)
imports none; install the matching extra (``wsgisession[flask]``...) to use one.
In every case the WSGI application is wrapped in
:class:`~wsgisession.SessionMiddleware`, which loads and saves the session; the
adapters only present it the way the framework expects.
"""
