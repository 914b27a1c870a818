"""The rules a campaign's fields must pass, wherever it is edited: the admin's campaign form
and the API (POST/PATCH /api/v1/campaigns) both validate through CampaignForm."""

from django import forms

from campaigns.addresses import sender_header
from campaigns.models import Campaign


class CampaignForm(forms.ModelForm):
    class Meta:
        model = Campaign
        # No scheduled_at: the Schedule control on the campaign page (and the API's schedule
        # action) is the one way to set it (a form field would save a time that nothing acts
        # on: the status stays draft).
        fields = ("name", "template", "contact_list", "from_email", "send_path")

    def clean_from_email(self) -> str:
        value = self.cleaned_data["from_email"]
        if value:
            sender_header(value)  # the sender's own rule; refused with the reason
        return value
