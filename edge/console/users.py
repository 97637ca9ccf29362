"""Who may use the console: a users file with argon2-hashed passwords and two roles.

```toml
# edge-console hash-password   (reads the password, prints the line to paste)
[users.alice]
role = "operator"     # pauses, resumes, sets thresholds, switches recipes, reviews rejects
password = "$argon2id$v=19$m=65536,t=3,p=4$..."

[users.bob]
role = "viewer"       # sees everything, changes nothing
password = "$argon2id$..."
```
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edge.config import ConfigError, read_toml

ROLES = ("viewer", "operator")


@dataclass(frozen=True)
class User:
    name: str
    role: str

    @property
    def operator(self) -> bool:
        return self.role == "operator"


LOCAL = User("local", "operator")  # a console bound to this machine only, without a users file


def hash_password(password: str) -> str:
    """The argon2id hash of ``password``, for the users file."""
    from argon2 import PasswordHasher

    return PasswordHasher().hash(password)


class Users:
    """The users file, read once at start; :meth:`check` verifies a log-in."""

    def __init__(self, path: Path) -> None:
        from argon2 import PasswordHasher

        self._hasher = PasswordHasher()
        document = read_toml(Path(path), "the users file")
        entries = document.get("users")
        if set(document) - {"users"} or not isinstance(entries, dict) or not entries:
            raise ConfigError(f"users file {path}: give [users.NAME] tables with role and password")
        self._entries: dict[str, tuple[str, str]] = {}
        for name, entry in entries.items():
            role, hashed = (entry.get(k) if isinstance(entry, dict) else None for k in ("role", "password"))
            if role not in ROLES:
                raise ConfigError(f"users file {path}: user {name!r} needs role = one of {', '.join(ROLES)}")
            if not isinstance(hashed, str) or not hashed.startswith("$argon2"):
                raise ConfigError(
                    f"users file {path}: user {name!r} needs password = an argon2 hash (edge-console hash-password)"
                )
            self._entries[name] = (role, hashed)

    def check(self, name: str, password: str) -> User | None:
        """The user, when ``password`` is theirs; else None."""
        from argon2.exceptions import InvalidHashError, VerificationError

        entry = self._entries.get(name)
        if entry is None:
            self._hasher.hash(password)  # the same work for an unknown name: no timing tells names apart
            return None
        try:
            self._hasher.verify(entry[1], password)
        except (VerificationError, InvalidHashError):
            return None
        return User(name, entry[0])
