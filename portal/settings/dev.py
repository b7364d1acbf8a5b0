from portal.settings.base import *  # noqa: F403
