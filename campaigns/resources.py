"""CSV export of contacts (django-import-export); the import is campaigns.imports."""

import csv
import io

from import_export import resources
from import_export.formats.base_formats import CSV

from campaigns.csv_cells import csv_cell_escape
from campaigns.models import Contact


class ContactCSV(CSV):
    """CSV written with the formula-safe cell rule (campaigns.csv_cells). Export only: the
    import is campaigns.imports."""

    def export_data(self, dataset, **kwargs) -> str:
        out = io.StringIO()
        writer = csv.writer(out)
        for row in (dataset.headers or [], *dataset):
            writer.writerow(["" if cell is None else csv_cell_escape(str(cell)) for cell in row])
        return out.getvalue()


class ContactResource(resources.ModelResource):
    class Meta:
        model = Contact
        fields = ("email", "first_name", "last_name", "status", "attributes")
