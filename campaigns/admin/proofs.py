"""Test sends in the admin: the "Send a test" form on the campaign's and the template's page
(campaigns.proofs does the sending). Mixed into both admins, which it gives a URL, the form's
context and the view."""

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse

from campaigns.admin.contacts import can_view_contacts
from campaigns.models import Campaign
from campaigns.preferences import user_preferences, user_preferences_update
from campaigns.proofs import (
    PROOF_MAX_ADDRESSES,
    PROOF_SUBJECT_PREFIX,
    ProofError,
    proof_addresses_check,
    proof_contact,
    proof_send,
)


class ProofAdminMixin:
    """For a ModelAdmin of Campaign or Template: POST <pk>/test-send/ sends a test, and the
    change page gets `proof` for the include admin/campaigns/_proof.html. Sending needs the
    change permission on the campaign or template; naming a contact, the view permission on
    contacts (as the template preview)."""

    def _proof_url_name(self) -> str:
        opts = self.model._meta
        return f"{opts.app_label}_{opts.model_name}_proof"

    def get_urls(self):
        view = self.admin_site.admin_view(self.proof_view)
        return [path("<int:pk>/test-send/", view, name=self._proof_url_name()), *super().get_urls()]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        obj = self.get_object(request, object_id)
        if obj is not None and self.has_change_permission(request, obj):
            is_campaign = isinstance(obj, Campaign)
            extra_context = {
                **(extra_context or {}),
                "proof": {
                    "url": reverse(f"admin:{self._proof_url_name()}", args=[obj.pk]),
                    "addresses": ", ".join(user_preferences(user=request.user).proof_addresses),
                    "max_addresses": PROOF_MAX_ADDRESSES,
                    "subject_prefix": PROOF_SUBJECT_PREFIX,
                    "may_read_contacts": can_view_contacts(request),
                    "for_campaign": is_campaign,
                    "default_contact": "the list's first member"
                    if is_campaign
                    else "the first contact",
                },
            }
        return super().change_view(request, object_id, form_url, extra_context)

    def proof_view(self, request: HttpRequest, pk: int):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        obj = get_object_or_404(self.model, pk=pk)
        if not self.has_change_permission(request, obj):
            raise PermissionDenied
        wanted = request.POST.get("contact", "")
        may_read_contacts = can_view_contacts(request)
        if wanted.strip() and not may_read_contacts:
            raise PermissionDenied
        opts = self.model._meta
        back = HttpResponseRedirect(
            reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[pk]) + "#test-send"
        )
        campaign = obj if isinstance(obj, Campaign) else None
        try:
            to = proof_addresses_check(request.POST.get("addresses", ""))
            user_preferences_update(user=request.user, proof_addresses=to)
            contact = proof_contact(wanted=wanted, campaign=campaign) if may_read_contacts else None
            result = proof_send(
                to=to,
                contact=contact,
                campaign=campaign,
                template=None if campaign else obj,
            )
        except ProofError as err:
            messages.error(request, f"The test was not sent. {err}")
            return back
        if result.accepted == result.addresses:
            messages.success(request, result.summary)
        else:
            messages.error(request, result.summary)
        self.log_change(request, obj, f"Sent a test ({result.accepted} of {result.addresses}).")
        return back
