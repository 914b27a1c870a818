"""Contact lists in the admin."""

from django.contrib import admin
from django.db.models import Count

from campaigns.models import ContactList


@admin.register(ContactList)
class ContactListAdmin(admin.ModelAdmin):
    list_display = ("name", "member_count", "created_at")
    search_fields = ("name",)

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(member_count=Count("membership"))

    @admin.display(ordering="member_count", description="Members")
    def member_count(self, obj) -> int:
        return obj.member_count
