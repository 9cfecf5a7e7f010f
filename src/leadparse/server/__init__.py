"""Reference SMTP receiver for leadparse (the ``server`` extra).

Accepts mail for configured domains, stores each message durably before the
250 reply, and parses it into a lead in worker processes. The core library
never imports this package. Start it with ``leadparse serve``.
"""
