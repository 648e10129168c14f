"""Two views: one async (calling sync database code), one sync."""

from django.urls import path

from . import views

urlpatterns = [
    path("users/<int:user_id>/", views.user_profile, name="user-profile"),
    path("health/", views.health, name="health"),
]
