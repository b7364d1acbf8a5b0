"""Administration: administrators manage clinics and accounts here. Patient data is not
edited through the admin; it goes through the services that audit and grant access."""

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin

from portal import permissions
from portal.models import Clinic, User


@admin.register(Clinic)
class ClinicAdmin(admin.ModelAdmin):
    list_display = ("name", "city")
    search_fields = ("name", "city")


@admin.register(User)
class PortalUserAdmin(UserAdmin):
    list_display = ("username", "role", "clinic", "is_active", "last_login")
    list_filter = ("role", "clinic", "is_active")
    fieldsets = (*UserAdmin.fieldsets, ("Dermatrack", {"fields": ("role", "clinic")}))
    add_fieldsets = (*UserAdmin.add_fieldsets, ("Dermatrack", {"fields": ("role", "clinic")}))

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        # A new dermatologist or staff member sees their clinic's patients at once.
        permissions.clinic_member_add(obj)
