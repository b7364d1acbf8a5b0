"""Administration of model versions: read-only rows, one audited action to switch."""

from django.contrib import admin, messages

from lesions import model_versions
from lesions.models import ModelVersion


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    """Rows are made when a model file is loaded; only the active flag changes, through the
    action, which also opens and closes the alerts (the same as `manage.py activate_model`)."""

    list_display = ("name", "version", "short_sha", "alert_threshold", "is_active", "activated_at", "activated_by")
    readonly_fields = [f.name for f in ModelVersion._meta.fields]
    actions = ["activate"]

    @admin.display(description="sha256")
    def short_sha(self, obj):
        return obj.sha256[:12]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # predictions name their version by sha256; the registry keeps every one

    @admin.action(description="Activate the selected model version (opens and closes alerts)")
    def activate(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one model version to activate.", messages.ERROR)
            return
        version = queryset.get()
        changes = model_versions.activate(sha256=version.sha256, actor=request.user)
        self.message_user(
            request,
            f"{version.label} is active: {len(changes.to_open)} alerts opened, {len(changes.to_close)} closed"
            + (
                f"; {changes.unscored} examinations not yet scored by it (run manage.py rescore)"
                if changes.unscored
                else ""
            ),
            messages.SUCCESS,
        )
