"""CSV import and export of contacts (django-import-export).

Columns: email (required), first_name, last_name; every other column becomes a custom field
(attribute) named like a template field ("Favourite Colour" → favourite_colour). Rows are
matched by normalized email, so importing a contact twice updates it. A bad row is reported
with its line number and the whole file is refused until it is fixed (nothing half-written).
"""

from django.core.exceptions import ValidationError
from import_export import resources

from campaigns.models import Contact, ContactList
from campaigns.services import contact_attribute_name, contact_list_add, contact_normalize_email

KNOWN_COLUMNS = {"id", "email", "first_name", "last_name", "status", "attributes"}


class ContactResource(resources.ModelResource):
    def __init__(self, contact_list: ContactList | None = None, **kwargs):
        super().__init__(**kwargs)
        self.contact_list = contact_list
        self.imported_ids: list[int] = []

    class Meta:
        model = Contact
        import_id_fields = ("email",)
        # status is exported but never imported: an import must not resubscribe anybody.
        fields = ("email", "first_name", "last_name", "status", "attributes")
        import_order = ("email", "first_name", "last_name")
        clean_model_instances = True

    def get_import_fields(self):
        return [self.fields[name] for name in ("email", "first_name", "last_name")]

    def before_import(self, dataset, **kwargs):
        headers = [h.strip().lower() for h in dataset.headers or []]
        if "email" not in headers:
            raise ValueError(
                "The file has no “email” column. The first line must name the columns, "
                "for example: email,first_name,last_name"
            )
        dataset.headers = headers

    def before_import_row(self, row, **kwargs):
        try:
            row["email"] = contact_normalize_email(row.get("email") or "")
        except ValidationError:
            raise ValidationError({"email": "This is not a valid email address."}) from None

    def import_instance(self, instance, row, **kwargs):
        super().import_instance(instance, row, **kwargs)
        extra = {}
        for column, value in row.items():
            name = contact_attribute_name(column or "")
            if column not in KNOWN_COLUMNS and name and value not in (None, ""):
                extra[name] = str(value).strip()
        if extra:
            instance.attributes = {**(instance.attributes or {}), **extra}

    def after_save_instance(self, instance, row, **kwargs):
        self.imported_ids.append(instance.pk)

    def after_import(self, dataset, result, **kwargs):
        if self.contact_list is not None and not result.has_errors():
            contact_list_add(contact_list=self.contact_list, contact_ids=self.imported_ids)
