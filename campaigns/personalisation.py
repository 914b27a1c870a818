"""What an API request's personalisation may hold: the template data of one message (a
transactional message's, or a bulk job row's), a flat object of short values. The one rule,
for POST /api/v1/messages (campaigns.api.serializers) and every row of POST /api/v1/jobs
(campaigns.jobs)."""

import orjson

PERSONALISATION_MAX_KEYS = 100
PERSONALISATION_MAX_BYTES = 64 * 1024


class PersonalisationInvalid(ValueError):
    """Why a personalisation is refused: `code` for clients to branch on, the message for
    people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def personalisation_check(value: object) -> dict:
    """`value` if it is a flat object of text, numbers, true/false or null within the limits;
    PersonalisationInvalid otherwise."""
    if not isinstance(value, dict):
        raise PersonalisationInvalid("invalid", "Personalisation is an object of fields.")
    if len(value) > PERSONALISATION_MAX_KEYS:
        raise PersonalisationInvalid(
            "too_many_fields", f"At most {PERSONALISATION_MAX_KEYS} fields."
        )
    for name, item in value.items():
        if isinstance(item, dict | list):
            raise PersonalisationInvalid(
                "invalid_value", f"{name}: values are text, numbers, true/false or null."
            )
    if len(orjson.dumps(value)) > PERSONALISATION_MAX_BYTES:
        raise PersonalisationInvalid(
            "too_large", f"At most {PERSONALISATION_MAX_BYTES // 1024} kB."
        )
    return value
