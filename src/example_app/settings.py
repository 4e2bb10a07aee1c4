"""The example app's own reading of the settings, for the few places where no composed Offload
reaches: request validation (the recipient allow-list, the upload size limit) and the API's
body-size middleware. Read once, on first use; the library itself never calls this.
"""

from functools import cache

from offload.settings import Settings


@cache
def get_settings() -> Settings:
    return Settings()
