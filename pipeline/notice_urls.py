"""Whether apprise can send a notice to a URL: checked when settings, a schedule or
`lipdub run --notify` name one, so a typo is refused before a batch starts rather than
found when it finishes. The reason never repeats the URL (it is a secret)."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, SecretStr

UNKNOWN = (
    "not a URL apprise knows: for a generic JSON webhook write json://… (jsons:// for https); "
    "Slack: https://hooks.slack.com/services/…; Mattermost: mmost://host/token"
)


def unusable(url: str) -> str | None:
    """Why apprise cannot send to `url`, or None when it can (apprise is imported only when
    a URL is checked: most commands name none).

    >>> unusable("json://127.0.0.1:8080/hook") is None
    True
    >>> unusable("https://example.com/hook") == UNKNOWN
    True
    """
    import apprise

    return None if apprise.Apprise().add(url) else UNKNOWN


def _apprise_knows(url: SecretStr) -> SecretStr:
    if why := unusable(url.get_secret_value()):
        raise ValueError(why)
    return url


NoticeUrl = Annotated[SecretStr, AfterValidator(_apprise_knows)]
"""A notice URL setting: a secret that apprise must know."""
