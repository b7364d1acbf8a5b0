"""Administration: administrators manage clinics and accounts here. Patient data is not
edited through the admin; it goes through the services that audit and grant access."""

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin

from portal import permissions
from portal.models import AuditEntry, Clinic, User


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


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    """Read-only: the trail is append-only; nobody adds, changes or deletes entries here."""

    list_display = ("at", "actor_username", "action", "target_type", "target_uuid", "patient_uuid", "flagged")
    list_filter = ("flagged", "action", "at")
    search_fields = ("actor_username", "patient_uuid", "target_uuid", "action")
    date_hierarchy = "at"
    readonly_fields = [f.name for f in AuditEntry._meta.fields]
    actions = None

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
