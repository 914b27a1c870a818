"""Reports: a campaign's report, its recount, and each message's journey."""
