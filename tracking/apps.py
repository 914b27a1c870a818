from django.apps import AppConfig


class TrackingConfig(AppConfig):
    name = "tracking"
    verbose_name = "Tracking"

    def ready(self) -> None:
        # anymail announces SES events with a signal (a library edge): connect its receiver.
        from tracking import checks, receivers  # noqa: F401
