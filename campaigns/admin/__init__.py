"""The marketer's side of campaigns: contacts (with CSV import), lists, campaigns with their
controls and reports, and the ledger. Importing the package registers every page."""

from campaigns.admin import api_sends, apikeys, campaigns, contacts, dashboard, lists, notifications

__all__ = ["api_sends", "apikeys", "campaigns", "contacts", "dashboard", "lists", "notifications"]
