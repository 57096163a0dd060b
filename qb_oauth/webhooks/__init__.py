"""Intuit's webhooks: verified, parsed, stored once, then signalled on the cluster.

The parts, bottom to top (each in its own layer of the import contract):

- :mod:`.record`: the :class:`WebhookEvent` model (re-exported by ``qb_oauth.models``).
- :mod:`.verify`: the ``intuit-signature`` check over the raw body.
- :mod:`.parse`: both payload formats, CloudEvents and the legacy ``eventNotifications``.
- :mod:`.store`: one short transaction storing the events, deduplicated.
- :mod:`.process`: the work of ``qb_oauth.tasks.process_webhook_events``: claim, signal, mark.

The endpoint is ``qb_oauth.views.webhooks``; docs/webhooks.md tells the whole story.
"""
