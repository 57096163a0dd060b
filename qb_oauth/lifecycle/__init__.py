"""The machinery under :mod:`qb_oauth.tokens`, one piece per module.

* :mod:`.own_connection`: write outside the caller's transaction (a rollback
  must not lose a rotated refresh token);
* :mod:`.lease`: the row lease that makes a refresh single-flight across
  processes and machines, timed by the database's clock;
* :mod:`.flight`: the threads of one process that ask at once follow one
  leader in memory;
* :mod:`.store`: what a token answer writes, and the retries that keep it
  when the database refuses it;
* :mod:`.refresh`: the refresh a lease holder makes: the call to Intuit,
  ``invalid_grant`` checked against newer tokens, the store;
* :mod:`.unreadable`: rows whose tokens no key of ``FERNET_KEYS`` opens;
* :mod:`.ending`: tokens dropped (revoked, or disconnected at Intuit) only over
  the version the caller saw;
* :mod:`.usage`: the ``last_used_at`` hint, written without ever waiting.

``tokens.py`` tells the story (connect, use, refresh, revoke, Intuit's
Disconnect URL) and calls these; nothing else does. docs/architecture.md has
the layers.
"""
