"""Sending through the pre-send review's confirmation, as the admin's Send now now does."""

from campaigns.selectors import audience_counts


def review_url(campaign) -> str:
    return f"/admin/campaigns/campaign/{campaign.pk}/review/"


def confirm_send_now(client, campaign, **kwargs):
    """POST the review's confirmation for Send now with the count the review shows."""
    recipients, _ = audience_counts(contact_list_id=campaign.contact_list_id)
    return client.post(
        review_url(campaign), {"send_at": "", "recipients": str(recipients)}, **kwargs
    )


def confirm_schedule(client, campaign, send_at, **kwargs):
    """POST the review's confirmation for a schedule at `send_at` (aware)."""
    recipients, _ = audience_counts(contact_list_id=campaign.contact_list_id)
    return client.post(
        review_url(campaign),
        {"send_at": send_at.isoformat(), "recipients": str(recipients)},
        **kwargs,
    )
