"""What a caller may do: a key needs the view's scope for the method; a staff user's session
needs the model permission the scope stands for (the browsable API)."""

from rest_framework import exceptions, permissions

from campaigns.models import ApiKey

# Scope → the Django permission a staff user's session needs instead.
SCOPE_PERMISSIONS = {
    "messages:send": "campaigns.add_notification",
    "messages:read": "campaigns.view_notification",
    "jobs:send": "campaigns.add_campaign",
    "jobs:read": "campaigns.view_campaign",
    "contacts:read": "campaigns.view_contact",
    "contacts:write": "campaigns.change_contact",
    "templates:read": "templates_app.view_template",
    "templates:write": "templates_app.change_template",
    "campaigns:read": "campaigns.view_campaign",
    "campaigns:write": "campaigns.change_campaign",
    "webhooks:read": "tracking.view_callbackendpoint",
    "webhooks:write": "tracking.change_callbackendpoint",
}


class HasScope(permissions.BasePermission):
    """The view's `scopes` ({method: scope}) decide; a method it does not name is refused."""

    def has_permission(self, request, view) -> bool:
        scopes = getattr(view, "scopes", {})
        scope = scopes.get(request.method)
        if request.method in ("HEAD", "OPTIONS"):
            scope = scope or scopes.get("GET")
        if request.method == "OPTIONS" and scope is None and scopes:
            # A view without GET (an action: POST …/cancel) is described to whoever may call
            # it, not refused to every key.
            scope = next(iter(scopes.values()))
        if scope is None:
            # A method the view does not answer goes on to its 405; one it answers without
            # naming a scope is refused (a view must say what each method needs).
            return not hasattr(view, request.method.lower())
        if isinstance(request.auth, ApiKey):
            if scope not in request.auth.scopes:
                raise exceptions.PermissionDenied(
                    f"This key does not have the scope {scope}.", code="missing_scope"
                )
            return True
        user = request.user
        if not (user and user.is_authenticated):
            raise exceptions.NotAuthenticated(
                "Send an API key: Authorization: Bearer <key>.", code="not_authenticated"
            )
        perm = SCOPE_PERMISSIONS.get(scope)
        if not (user.is_staff and perm and user.has_perm(perm)):
            # A session is a person, whose account says what they may do (not a key's scope).
            raise exceptions.PermissionDenied(
                f"Your account may not do this: it needs the permission {perm or scope}.",
                code="permission_denied",
            )
        return True
