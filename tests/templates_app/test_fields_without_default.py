"""Which fields leave a gap when a contact has no value: the pre-send review counts those."""

import pytest

from templates_app.language import parse
from templates_app.render import fields_without_default


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ city }}", {"city"}),
        ('{{ city | default: "your town" }}', set()),
        ("{% if city %}in {{ city }}{% endif %}", set()),
        ("{% if city %}{% else %}{{ city }}{% endif %}", {"city"}),
        ("{% if plan %}{{ city }}{% endif %}", {"city"}),  # guarded by another field: a gap
        ("{% unless city %}{% else %}{{ city }}{% endunless %}", set()),
        ("{% unless city %}{{ city }}{% endunless %}", {"city"}),
        ("{% if a %}{% if b %}{{ a }}{{ b }}{{ c }}{% endif %}{% endif %}", {"c"}),
    ],
)
def test_fields_without_default(source, expected):
    assert fields_without_default(parse(source, part="html")) == expected
