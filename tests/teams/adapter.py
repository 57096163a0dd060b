"""The team adapter of docs/ownership.md: a team's members share its connections."""

from django.contrib.contenttypes.models import ContentType

from qb_oauth.adapter import DefaultAdapter
from qb_oauth.models import QuickBooksConnection

from .models import Membership, Team


class TeamAdapter(DefaultAdapter):
    def get_owner(self, request):
        # The user's first team (a real site would keep the current team in the session).
        membership = Membership.objects.filter(user=request.user).order_by("pk").first()
        return membership.team if membership else None

    def connections_for(self, request):
        return QuickBooksConnection.objects.owned_by(
            Team.objects.filter(memberships__user=request.user)
        )

    def can_manage(self, request, connection):
        # Admins of the owning team may disconnect or reconnect; viewers only look.
        team_type = ContentType.objects.get_for_model(Team)
        return connection.owner_content_type_id == team_type.pk and (
            Membership.objects.filter(
                user=request.user, team_id=connection.owner_object_id, role=Membership.ADMIN
            ).exists()
        )
