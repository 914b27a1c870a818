"""The integrations API (DRF, /api/v1/): keys, errors and the message and job endpoints.

Views are thin: they check the request (serializers), call a service, and answer. Every 4xx
has the one error shape of campaigns.api.errors (docs/API.md).
"""
