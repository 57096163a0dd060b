from django.urls import path

from . import views

app_name = "qb_oauth"

urlpatterns = [
    path("", views.connections, name="connections"),
    path("connect/", views.connect, name="connect"),
    path("callback/", views.callback, name="callback"),
    path("<int:pk>/disconnect/", views.disconnect, name="disconnect"),
    path("intuit/disconnect/", views.intuit_disconnect, name="intuit_disconnect"),
    path("intuit/reconnect/", views.reconnect, name="reconnect"),
    path("webhooks/", views.webhooks, name="webhooks"),
]
