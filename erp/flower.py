"""The `flower` Procfile process: Celery's monitoring UI, behind HTTP basic auth.

`python -m erp.flower` checks the settings and then becomes `celery -A erp.core.celery_app flower`,
so flower shows this app's task names and queues. Without `FLOWER_BASIC_AUTH` it starts only when
`ERP_ENVIRONMENT=development`; elsewhere it stops with one line naming the variable. The
credentials reach flower through its own `FLOWER_BASIC_AUTH` environment variable rather than
the command line, where any user of the machine could read them (`ps`).
"""

from __future__ import annotations

import os
import sys

from erp.core.config import Settings, get_settings


def _check_credentials(value: str) -> None:
    for entry in value.split(","):
        user, _, password = entry.partition(":")
        if not user.strip() or not password:
            raise SystemExit("erp: configuration error: FLOWER_BASIC_AUTH: expected user:password[,user2:password2]")


def flower_command(settings: Settings) -> tuple[list[str], dict[str, str]]:
    """The command and environment flower runs with, or SystemExit with one line saying why not."""
    environment = dict(os.environ)
    auth = settings.FLOWER_BASIC_AUTH
    if auth:
        _check_credentials(auth)
        environment["FLOWER_BASIC_AUTH"] = auth
    elif settings.ERP_ENVIRONMENT != "development":
        raise SystemExit(
            "erp: configuration error: FLOWER_BASIC_AUTH: is required to start flower outside development"
            " (user:password; or set ERP_ENVIRONMENT=development on your own machine)"
        )
    else:
        # An empty value from the environment must not reach flower as an empty credential.
        environment.pop("FLOWER_BASIC_AUTH", None)
    command = ["celery", "-A", "erp.core.celery_app", "flower", f"--port={settings.CELERY_FLOWER_PORT}"]
    return command, environment


def main() -> None:
    command, environment = flower_command(get_settings())
    sys.stdout.flush()
    os.execvpe(command[0], command, environment)


if __name__ == "__main__":
    main()
