"""Audiences in the admin: declared custom fields, a contact's lists and status (read-only; a
resubscribe is its own page that asks why), and adding to or removing from a list from the
contact list. The contact page's admin class takes these in through ContactAudiencesMixin."""

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Exists, OuterRef
from django.http import HttpRequest, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from campaigns import audiences
from campaigns.models import Contact, ContactList, CustomField, Membership

S = Contact.Status
FIELD_PREFIX = "custom__"


# -- declared custom fields -------------------------------------------------------------------


class CustomFieldForm(forms.ModelForm):
    class Meta:
        model = CustomField
        fields = ("name", "label", "type")

    def clean_name(self) -> str:
        return audiences.custom_field_name_check(self.cleaned_data["name"])


@admin.register(CustomField)
class CustomFieldAdmin(admin.ModelAdmin):
    form = CustomFieldForm
    list_display = ("label", "name", "type")
    search_fields = ("name", "label")

    def get_readonly_fields(self, request, obj=None):
        # Contacts' values are stored under the name and checked against the type: changing
        # either would strand or invalidate them. Declare a new field instead.
        return ("name", "type") if obj is not None else ()


class TypedAttributesForm(forms.ModelForm):
    """One typed form field per declared custom field; the "attributes" JSON keeps only the
    undeclared ones (still editable, nothing lost). Stored back together in Contact.attributes,
    each declared value in its canonical form (audiences.custom_field_value)."""

    declared: list[CustomField] = []  # set by typed_contact_form

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        stored = dict(self.instance.attributes or {}) if self.instance.pk else {}
        for field in self.declared:
            self.initial[FIELD_PREFIX + field.name] = _form_initial(field, stored.get(field.name))
        if "attributes" in self.fields:
            names = {f.name for f in self.declared}
            self.initial["attributes"] = {k: v for k, v in stored.items() if k not in names}
            others = self.fields["attributes"]
            others.label = "Other custom fields"
            others.help_text = 'Fields not declared under Custom fields, as {"name": "value"}.'

    def clean(self):
        cleaned = super().clean()
        others = cleaned.get("attributes")
        if others is None:
            return cleaned
        values = {}
        for field in self.declared:
            key = FIELD_PREFIX + field.name
            if key in self.errors:
                continue
            value = cleaned.get(key)
            if value is not None:
                values[field.name] = value
        names = {f.name for f in self.declared}
        cleaned["attributes"] = {
            **{k: v for k, v in others.items() if k not in names},
            **values,
        }
        return cleaned


class _TypedField(forms.CharField):
    """A form field whose value is checked by the one rule (audiences.custom_field_value)."""

    def __init__(self, declared: CustomField, **kwargs):
        self.declared = declared
        super().__init__(required=False, strip=False, **kwargs)

    def clean(self, value):
        try:
            return audiences.custom_field_value(self.declared, value)
        except ValidationError as err:
            raise ValidationError(err.messages) from None


def typed_contact_form(base: type[TypedAttributesForm]) -> type[TypedAttributesForm]:
    """`base` with one form field per custom field declared now (declarations change while
    the site runs, so the class is made per request)."""
    declared = audiences.custom_fields()
    attrs = {FIELD_PREFIX + field.name: _form_field(field) for field in declared}
    return type(base.__name__, (base,), {**attrs, "declared": declared})


def _form_field(field: CustomField) -> forms.Field:
    T = CustomField.Type
    widget = {
        T.NUMBER: forms.TextInput(attrs={"inputmode": "decimal"}),
        T.DATE: forms.DateInput(attrs={"type": "date"}),
        T.YES_NO: forms.Select(choices=[("", "—"), ("yes", "Yes"), ("no", "No")]),
    }.get(field.type, forms.TextInput(attrs={"class": "vTextField"}))
    return _TypedField(
        field,
        label=field.label or field.name,
        widget=widget,
        # The admin prints help text unescaped: the name is escaped here.
        help_text=format_html(
            "{}; in templates: {}", field.get_type_display(), f"{{{{ {field.name} }}}}"
        ),
    )


def _form_initial(field: CustomField, value: object) -> object:
    if field.type == CustomField.Type.YES_NO and isinstance(value, bool):
        return "yes" if value else "no"
    return value


# -- the contact page and changelist ----------------------------------------------------------


class UnsubscribedFromListFilter(admin.SimpleListFilter):
    title = "unsubscribed from a list"
    parameter_name = "list_unsubscribed"

    def lookups(self, request, model_admin):
        return [("yes", "Yes, from at least one list"), ("no", "No")]

    def queryset(self, request, queryset):
        left = Exists(
            Membership.objects.filter(contact=OuterRef("pk"), unsubscribed_at__isnull=False)
        )
        if self.value() == "yes":
            return queryset.filter(left)
        if self.value() == "no":
            return queryset.exclude(left)
        return queryset


class ListChoiceForm(forms.Form):
    contact_list = forms.ModelChoiceField(queryset=ContactList.objects.all(), label="List")


class ResubscribeForm(forms.Form):
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        max_length=audiences.REASON_MAX,
        help_text="Who asked, when and how, e.g. “asked by email on 3 March”. Kept on the "
        "contact's page.",
    )
    confirm_suppressed = forms.BooleanField(
        required=False,
        label="I know this address is deliverable and its owner wants our mail again.",
    )


class ContactAudiencesMixin:
    """What ContactAdmin gets from audiences: read-only status, the status column and filter,
    the lists and resubscribe history on the page, the resubscribe page, list actions."""

    actions = ["add_to_list", "remove_from_list"]

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(list_unsubscribes=audiences.list_unsubscribe_count())
        )

    @admin.display(description="Status", ordering="status")
    def status_shown(self, obj) -> str:
        words = obj.get_status_display()
        left = getattr(obj, "list_unsubscribes", None) or 0
        if obj.status == S.ACTIVE and left:
            words += f", but unsubscribed from {left} list{'s' if left > 1 else ''}"
        return words

    def get_form(self, request, obj=None, **kwargs):
        if issubclass(self.form, TypedAttributesForm):
            kwargs.setdefault("form", typed_contact_form(self.form))
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request, obj=None):
        fields = super().get_fields(request, obj)
        if obj is not None and not self.has_change_permission(request, obj):
            # Read-only, the custom fields show in "Attributes" as stored.
            fields = [name for name in fields if not name.startswith(FIELD_PREFIX)]
        return fields

    def get_urls(self):
        own = [
            path(
                "<int:pk>/resubscribe/",
                self.admin_site.admin_view(self.resubscribe_view),
                name="campaigns_contact_resubscribe",
            )
        ]
        return own + super().get_urls()

    def change_view(self, request, object_id, form_url="", extra_context=None):
        contact = self.get_object(request, object_id)
        extra_context = extra_context or {}
        if contact is not None and self.has_view_or_change_permission(request, contact):
            can_change = self.has_change_permission(request, contact)
            extra_context["audience"] = {
                "status": contact.get_status_display(),
                "suppressed": contact.status in (S.BOUNCED, S.COMPLAINED),
                "can_resubscribe": can_change and contact.status != S.ACTIVE,
                "can_resubscribe_lists": can_change and self.has_list_change_permission(request),
                "memberships": audiences.contact_memberships(contact=contact),
                "changes": list(contact.status_changes.select_related("user", "api_key")[:50]),
            }
        return super().change_view(request, object_id, form_url, extra_context)

    def has_list_change_permission(self, request) -> bool:
        return self.admin_site.get_model_admin(ContactList).has_change_permission(request)

    # -- resubscribe ------------------------------------------------------------------------

    def resubscribe_view(self, request: HttpRequest, pk: int):
        contact = get_object_or_404(Contact, pk=pk)
        if not self.has_change_permission(request, contact):
            raise PermissionDenied
        contact_list = None
        if request.GET.get("list"):
            if not self.has_list_change_permission(request):
                raise PermissionDenied
            contact_list = get_object_or_404(ContactList, pk=request.GET["list"])
        form = ResubscribeForm(request.POST or None)
        suppressed = contact_list is None and contact.status in (S.BOUNCED, S.COMPLAINED)
        if not suppressed:
            del form.fields["confirm_suppressed"]
        if request.method == "POST" and form.is_valid():
            try:
                if contact_list is None:
                    audiences.contact_resubscribe(
                        contact=contact,
                        user=request.user,
                        reason=form.cleaned_data["reason"],
                        confirm_suppressed=form.cleaned_data.get("confirm_suppressed", False),
                    )
                else:
                    audiences.membership_resubscribe(
                        contact=contact,
                        contact_list=contact_list,
                        user=request.user,
                        reason=form.cleaned_data["reason"],
                    )
            except audiences.ResubscribeError as err:
                form.add_error(None, str(err))
            else:
                where = f"the list #{contact_list.pk}" if contact_list else "all mail"
                self.log_change(request, contact, f"Resubscribed to {where}.")
                messages.success(request, "Resubscribed; the reason is kept on this page.")
                return HttpResponseRedirect(
                    reverse("admin:campaigns_contact_change", args=[contact.pk])
                )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Resubscribe",
            "contact": contact,
            "contact_list": contact_list,
            "status": contact.get_status_display(),
            "suppressed": suppressed,
            "bounced": contact.status == S.BOUNCED,
            "form": form,
        }
        return TemplateResponse(request, "admin/campaigns/contact/resubscribe.html", context)

    # -- list actions -----------------------------------------------------------------------

    @admin.action(description="Add to a list…", permissions=["list_change"])
    def add_to_list(self, request, queryset):
        return self._list_action(request, queryset, add=True)

    @admin.action(description="Remove from a list…", permissions=["list_change"])
    def remove_from_list(self, request, queryset):
        return self._list_action(request, queryset, add=False)

    def _list_action(self, request, queryset, *, add: bool):
        form = ListChoiceForm(request.POST if "apply" in request.POST else None)
        if form.is_bound and form.is_valid():
            contact_list = form.cleaned_data["contact_list"]
            ids = list(queryset.values_list("pk", flat=True))
            if add:
                done = audiences.contact_list_add_contacts(
                    contact_list=contact_list, contact_ids=ids
                )
                text = f"{done.changed} added to “{contact_list}”; {done.kept} already on it."
                if done.kept:
                    text += " Anyone who had unsubscribed from it stays unsubscribed."
            else:
                done = audiences.contact_list_remove_contacts(
                    contact_list=contact_list, contact_ids=ids
                )
                text = f"{done.changed} removed from “{contact_list}”."
                if done.kept:
                    text += (
                        f" {done.kept} had unsubscribed from it: they stay recorded as "
                        "unsubscribed, so adding them again will not resubscribe them."
                    )
            verb = "Added" if add else "Removed"
            self.log_change(request, contact_list, f"{verb} {done.changed} contacts.")
            self.message_user(request, text, messages.SUCCESS)
            return None
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Add to a list" if add else "Remove from a list",
            "add": add,
            "action": "add_to_list" if add else "remove_from_list",
            "count": queryset.count(),
            "selected": request.POST.getlist(admin.helpers.ACTION_CHECKBOX_NAME),
            "select_across": request.POST.get("select_across", "0"),
            "form": form,
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/campaigns/contact/list_action.html", context)
