from django.contrib import admin

from patients.models import ReferralCentre


@admin.register(ReferralCentre)
class ReferralCentreAdmin(admin.ModelAdmin):
    """The referral directory is public information, managed here by administrators."""

    list_display = ("name", "kind", "city", "postcode", "phone", "active", "updated_at")
    list_filter = ("kind", "active", "country")
    search_fields = ("name", "city", "postcode")
    fields = (
        "name",
        "kind",
        "address",
        "postcode",
        "city",
        "country",
        "phone",
        "website",
        ("latitude", "longitude"),
        "active",
    )
