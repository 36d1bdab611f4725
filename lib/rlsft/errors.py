"""The package's user-facing error: a profile, parameter or input problem whose message names the
problem and the fix. It lives alone so that every layer can raise it without importing another.

>>> str(ConfigError("profile 'x': unknown key 'foo'"))
"profile 'x': unknown key 'foo'"
"""
from __future__ import annotations


class ConfigError(ValueError):
    """A profile or parameter problem; the message names the problem and the fix."""
