"""Config errors: every one names the file, line and key, and what was expected."""

from __future__ import annotations

from collections.abc import Sequence


class ConfigError(Exception):
    """A config problem, located: ``file:line: key: message``."""

    def __init__(self, path: str, line: int | None, key: str, message: str) -> None:
        self.path, self.line, self.key, self.message = path, line, key, message
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {key or '(top level)'}: {message}")


class ConfigErrors(ConfigError):  # noqa: N818 - the plural of ConfigError
    """Several config problems; located by the first, ``str`` lists them all."""

    def __init__(self, errors: Sequence[ConfigError]) -> None:
        first = errors[0]
        super().__init__(first.path, first.line, first.key, first.message)
        self.errors: tuple[ConfigError, ...] = tuple(errors)
        self.args = ("\n".join(str(e) for e in errors),)

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)
