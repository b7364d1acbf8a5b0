"""Administration: administrators manage clinics and accounts here. Patient data is not
edited through the admin; it goes through the services that audit and grant access."""

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin

from portal import permissions, services
from portal.models import AuditEntry, Clinic, User


@admin.register(Clinic)
class ClinicAdmin(admin.ModelAdmin):
    list_display = ("name", "city")
    search_fields = ("name", "city")


@admin.register(User)
class PortalUserAdmin(UserAdmin):
    list_display = ("username", "role", "clinic", "is_active", "last_login")
    list_filter = ("role", "clinic", "is_active")
    fieldsets = (*(UserAdmin.fieldsets or ()), ("Dermatrack", {"fields": ("role", "clinic")}))
    add_fieldsets = (*(UserAdmin.add_fieldsets or ()), ("Dermatrack", {"fields": ("role", "clinic")}))

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        # A new dermatologist or staff member sees their clinic's patients at once.
        permissions.clinic_member_add(obj)

    # "Delete" deactivates a user the audit trail names (portal.services.user_remove): the
    # trail's actor is PROTECTed, so the confirmation page must not present the entries as
    # an obstacle, nor list them as going away.
    def get_deleted_objects(self, objs, request):
        objs = list(objs)
        if any(AuditEntry.objects.filter(actor=o).exists() for o in objs):
            return [f"{o.username} (deactivated, not deleted: the audit trail names them)" for o in objs], {}, set(), []
        return super().get_deleted_objects(objs, request)

    def delete_model(self, request, obj):
        outcome = services.user_remove(actor=request.user, user=obj)
        self.message_user(request, f"{obj.username} was {outcome}.")

    def delete_queryset(self, request, queryset):
        for user in queryset:
            services.user_remove(actor=request.user, user=user)


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
