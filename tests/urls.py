from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from tests import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("quickbooks/", include("qb_oauth.urls")),
    path("e2e/company/<int:pk>/", views.e2e_company, name="e2e_company"),
    path("test/refresh/<int:pk>/", views.refresh_now, name="test_refresh_now"),
    path("test/api/<int:pk>/", views.api_call, name="test_api_call"),
]
