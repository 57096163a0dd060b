"""Every member of an organization sees, connects, reconnects and disconnects its companies."""

from qb_oauth.adapter import DefaultAdapter
from qb_oauth.models import QuickBooksConnection


class OrganizationAdapter(DefaultAdapter):
    def get_owner(self, request):
        return request.user.organizations.order_by("pk").first()

    def connections_for(self, request):
        return QuickBooksConnection.objects.owned_by(request.user.organizations.all())

    # can_manage: the default (whoever sees a connection may manage it).
