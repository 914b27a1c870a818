"""Unsubscribes: the page and one-click endpoint, and the service that records them."""
