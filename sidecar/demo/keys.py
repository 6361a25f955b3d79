"""The demo folder's secrets: created once with random values, kept for every later run.

``secrets.json`` (mode 0600, in a 0700 folder) holds the sidecar's ``secret_key``, the emulated
OAuth client's id and secret, and the WordPress ``logged_in`` key and salt. Keeping them means a
second run accepts the first run's signed links and cookies and finds its own tokens readable.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import asdict, dataclass, fields
from pathlib import Path

FILE_NAME = "secrets.json"


@dataclass(frozen=True, repr=False)
class DemoSecrets:
    secret_key: str
    client_id: str
    client_secret: str
    logged_in_key: str
    logged_in_salt: str

    def __repr__(self) -> str:  # never print the values
        return "DemoSecrets(***)"


def _new() -> DemoSecrets:
    return DemoSecrets(
        secret_key=secrets.token_urlsafe(32),
        client_id=f"demo-{secrets.token_hex(6)}.apps.googleusercontent.com",
        client_secret=secrets.token_urlsafe(24),
        logged_in_key=secrets.token_urlsafe(48),
        logged_in_salt=secrets.token_urlsafe(48),
    )


def load_or_create(directory: Path) -> DemoSecrets:
    """The folder's secrets, creating the folder (0700) and the file (0600) on first use."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / FILE_NAME
    if path.exists():
        data = json.loads(path.read_text(encoding="utf-8"))
        wanted = {f.name for f in fields(DemoSecrets)}
        if not isinstance(data, dict) or set(data) != wanted or not all(
                isinstance(v, str) and v for v in data.values()):
            raise ValueError(f"{path} is not a demo secrets file; remove it to start afresh")
        os.chmod(path, 0o600)
        return DemoSecrets(**data)
    created = _new()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(asdict(created), fh, indent=2)
    return created
