import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings.base")
django_application = get_asgi_application()

# The live progress stream is served in front of Django's request path (onboarding/live_asgi.py).
from onboarding.live_asgi import with_live_stream  # noqa: E402

application = with_live_stream(django_application)
