from django.apps import AppConfig


class PipelineConfig(AppConfig):
    name = "pipeline"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from pipeline import nightly, receivers

        receivers.connect()
        nightly.connect()
