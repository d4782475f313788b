"""Settings for itsm-sync: environment variables ``ITSM_SYNC_<SECTION>__<KEY>`` or a config file."""

from config.settings import (
    JiraSettings,
    ServiceNowSettings,
    Settings,
    StatuspageSettings,
    get_settings,
    load_settings,
)

__all__ = [
    "JiraSettings",
    "ServiceNowSettings",
    "Settings",
    "StatuspageSettings",
    "get_settings",
    "load_settings",
]
