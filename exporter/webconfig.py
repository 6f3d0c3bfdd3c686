"""TLS and basic auth for the HTTP endpoints, from a Prometheus exporter-toolkit
web config file (the format operators already use for node_exporter):

    tls_server_config:
      cert_file: server.crt
      key_file: server.key
      client_ca_file: ca.crt          # optional: mutual TLS
      client_auth_type: RequireAndVerifyClientCert
    basic_auth_users:
      prometheus: $2y$10$...          # bcrypt hash, never a plain password
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import bcrypt
import yaml
from aiohttp import web

from exporter.config import ConfigError

Middleware = Callable[..., Awaitable[web.StreamResponse]]
_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_OPTIONAL,
    "RequireAnyClientCert": ssl.CERT_REQUIRED,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
#: Paths a load balancer or Docker HEALTHCHECK may hit without credentials.
UNAUTHENTICATED_PATHS = frozenset({"/-/healthy"})


@dataclass(frozen=True, slots=True)
class WebConfig:
    ssl_context: ssl.SSLContext | None = None
    users: Mapping[str, bytes] = field(default_factory=dict, repr=False)
    middlewares: tuple[Middleware, ...] = ()


def _error(path: str, key: str, message: str) -> ConfigError:
    return ConfigError(path, None, key, message)


def _resolve(base: str, value: str) -> str:
    return value if os.path.isabs(value) else os.path.join(os.path.dirname(base), value)


def load_web_config(path: str | None) -> WebConfig:
    if path is None:
        return WebConfig()
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle) or {}
    except OSError as exc:
        raise _error(path, "web_config_file", f"cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise _error(path, "web_config_file", f"not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise _error(path, "<top>", "expected a mapping")
    unknown = set(data) - {"tls_server_config", "basic_auth_users", "http_server_config"}
    if unknown:
        raise _error(path, sorted(unknown)[0], "unknown key (expected tls_server_config, "
                     "basic_auth_users, http_server_config)")  # fmt: skip
    context = _tls_context(path, data.get("tls_server_config"))
    users = _users(path, data.get("basic_auth_users"))
    middlewares: tuple[Middleware, ...] = (basic_auth_middleware(users),) if users else ()
    return WebConfig(context, users, middlewares)


def _tls_context(path: str, tls: object) -> ssl.SSLContext | None:
    if tls is None:
        return None
    if not isinstance(tls, dict):
        raise _error(path, "tls_server_config", "expected a mapping")
    for key in ("cert_file", "key_file"):
        if not isinstance(tls.get(key), str):
            raise _error(path, f"tls_server_config.{key}", "expected a file path")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(_resolve(path, tls["cert_file"]), _resolve(path, tls["key_file"]))
        if tls.get("client_ca_file"):
            context.load_verify_locations(_resolve(path, tls["client_ca_file"]))
    except (OSError, ssl.SSLError) as exc:
        raise _error(path, "tls_server_config", f"cannot load certificate/key: {exc}") from None
    auth_type = tls.get("client_auth_type", "NoClientCert")
    if auth_type not in _CLIENT_AUTH:
        raise _error(path, "tls_server_config.client_auth_type",
                     f"expected one of {', '.join(_CLIENT_AUTH)}")  # fmt: skip
    context.verify_mode = _CLIENT_AUTH[auth_type]
    return context


def _users(path: str, users: object) -> dict[str, bytes]:
    if users is None:
        return {}
    if not isinstance(users, dict):
        raise _error(path, "basic_auth_users", "expected a mapping of user to bcrypt hash")
    result = {}
    for user, hashed in users.items():
        if not isinstance(hashed, str) or not hashed.startswith(("$2a$", "$2b$", "$2y$")):
            raise _error(path, f"basic_auth_users.{user}",
                         "expected a bcrypt hash ($2y$...), never a plain password")  # fmt: skip
        result[str(user)] = hashed.replace("$2y$", "$2b$", 1).encode()
    return result


def check_basic_auth(header: str | None, users: Mapping[str, bytes]) -> bool:
    if not header or not header.startswith("Basic "):
        return False
    try:
        decoded = base64.b64decode(header[6:], validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return False
    user, sep, password = decoded.partition(":")
    hashed = users.get(user)
    if not sep or hashed is None:
        # Spend the same time as a real check so user names cannot be probed by timing.
        bcrypt.checkpw(b"x", _DUMMY_HASH)
        return False
    return hmac.compare_digest(b"1", b"1" if bcrypt.checkpw(password.encode(), hashed) else b"0")


_DUMMY_HASH = bcrypt.hashpw(b"dnsgap", bcrypt.gensalt(rounds=4))


def basic_auth_middleware(users: Mapping[str, bytes]) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request,
                         handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                         ) -> web.StreamResponse:  # fmt: skip
        if request.path in UNAUTHENTICATED_PATHS:
            return await handler(request)
        if not check_basic_auth(request.headers.get("Authorization"), users):
            return web.Response(status=401, text="Unauthorized\n",
                                headers={"WWW-Authenticate": 'Basic realm="dnsgap"'})  # fmt: skip
        return await handler(request)

    return middleware
