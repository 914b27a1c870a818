"""The marketer's side of campaigns: contacts (with CSV import), lists, campaigns with their
controls and reports, and the ledger. Importing the package registers every page."""

from campaigns.admin import apikeys, campaigns, contacts, dashboard, lists, notifications

__all__ = ["apikeys", "campaigns", "contacts", "dashboard", "lists", "notifications"]
