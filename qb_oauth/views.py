"""Views of the web flow (being written; see issue 4)."""

from django.http import HttpResponse


def _todo(request, *args, **kwargs):  # pragma: no cover - replaced by the web flow
    return HttpResponse(status=501)


connections = connect = callback = disconnect = intuit_disconnect = reconnect = _todo
