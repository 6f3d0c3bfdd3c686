"""Secured endpoints: an exporter-toolkit web config with TLS and bcrypt basic auth,
checked with a real HTTPS client; secrets never reach /metrics, the status page or
the logs."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import bcrypt
import pytest
from aiohttp import web

from exporter.config import ConfigError, load_config
from exporter.http import build_app
from exporter.refserver import ServerBehaviour
from exporter.refserver import start as start_refserver
from exporter.runtime import Exporter
from exporter.webconfig import load_web_config
from tests.conftest import free_port
from tests.support import make_self_signed_cert

PASSWORD = "correct horse battery staple"
#: A TSIG secret that must never be shown: base64 of a recognisable string.
TSIG_SECRET = base64.b64encode(b"tsig-secret-never-shown-0123456789").decode()
DOT_KEY_NAME = "dot-client-private.key"

def make_certificate(directory: Path) -> tuple[Path, Path]:
    return make_self_signed_cert(directory, "localhost", "127.0.0.1")


def write_configs(directory: Path, dns_port: int) -> tuple[Path, Path, Path]:
    cert, key = make_certificate(directory)
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    web_config = directory / "web.yml"
    # Relative paths: resolved against the web config file's directory.
    web_config.write_text(
        f"tls_server_config:\n  cert_file: {cert.name}\n  key_file: {key.name}\n"
        f"basic_auth_users:\n  prometheus: '{hashed.replace('$2b$', '$2y$', 1)}'\n"
    )
    dot_key = directory / DOT_KEY_NAME
    dot_key.write_text("not really a key\n")
    config = directory / "dnsgap.yml"
    config.write_text(f"""
http:
  web_config_file: {web_config}
tsig_keys:
  xfr-key:
    algorithm: hmac-sha256
    secret: "{TSIG_SECRET}"
scheduler: {{jitter: 0}}
targets:
  - name: ref
    server: "127.0.0.1:{dns_port}"
    zone: demo.example.
    probes:
      - {{name: axfr, kind: axfr, tsig_key: xfr-key, interval: 1s, timeout: 1s}}
      - {{name: update, kind: update, tsig_key: xfr-key, interval: 1s, timeout: 1s}}
      - {{name: soa, kind: query, qname: "@", interval: 1s, timeout: 1s}}
  - name: dot
    server: "127.0.0.1:{free_port()}"
    zone: demo.example.
    tls: {{cert_file: {cert}, key_file: {dot_key}, verify: false}}
    probes: [{{name: soa_tls, kind: query, qname: "@", transport: tls, interval: 1s,
               timeout: 1s}}]
""")
    return config, cert, key


class Secured:
    def __init__(self, base: str, cert: Path, exporter: Exporter, secrets: list[str]) -> None:
        self.base, self.exporter, self.secrets = base, exporter, secrets
        self.ssl = ssl.create_default_context(cafile=str(cert))

    async def get(self, path: str, auth: dict[str, str] | None = None,
                  method: str = "GET") -> tuple[int, str, dict[str, str]]:  # fmt: skip
        async with aiohttp.ClientSession() as session, session.request(
            method, self.base + path, headers=auth, ssl=self.ssl
        ) as response:
            return response.status, await response.text(), dict(response.headers)


@contextlib.asynccontextmanager
async def secured(tmp_path: Path) -> AsyncIterator[Secured]:
    dns = await start_refserver(ServerBehaviour())
    config_path, cert, key = write_configs(tmp_path, dns.port)
    config = load_config(str(config_path))
    exporter = Exporter(config, str(config_path))
    web_config = load_web_config(config.http.web_config_file)
    assert web_config.ssl_context is not None
    runner = web.AppRunner(build_app(exporter, web_config.middlewares), access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=web_config.ssl_context).start()
    exporter.start()
    hashed = (tmp_path / "web.yml").read_text().split("prometheus: '")[1].split("'")[0]
    secrets = [TSIG_SECRET, base64.b64decode(TSIG_SECRET).decode(), PASSWORD, hashed,
               hashed[7:], str(key), key.name, DOT_KEY_NAME,
               key.read_text().splitlines()[1]]  # fmt: skip
    try:
        yield Secured(f"https://127.0.0.1:{port}", cert, exporter, secrets)
    finally:
        await exporter.stop()
        await runner.cleanup()
        await dns.close()


def basic_auth(user: str, password: str) -> dict[str, str]:
    """The Authorization header a Prometheus scrape with basic_auth sends."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


GOOD = basic_auth("prometheus", PASSWORD)


def test_endpoints_need_the_right_credentials_over_tls(tmp_path: Path) -> None:
    async def main() -> None:
        async with secured(tmp_path) as s:
            for path in ("/metrics", "/", "/probe?target=ref&probe=soa", "/-/ready"):
                status, _, headers = await s.get(path)
                assert status == 401, path
                assert headers.get("WWW-Authenticate") == 'Basic realm="dnsgap"'
                for auth in (basic_auth("prometheus", "wrong"),
                             basic_auth("nobody", PASSWORD),
                             basic_auth("prometheus", PASSWORD.upper())):  # fmt: skip
                    assert (await s.get(path, auth))[0] == 401, (path, auth)
                status, body, _ = await s.get(path, GOOD)
                assert status == 200, (path, body)
            status, _, _ = await s.get("/-/reload", method="POST")
            assert status == 401  # reload is not open either
            status, body, _ = await s.get("/-/healthy")
            assert status == 200
            assert body == "OK\n"

    asyncio.run(main())


def test_malformed_authorization_headers_get_401_not_500(tmp_path: Path) -> None:
    async def main() -> None:
        async with secured(tmp_path) as s, aiohttp.ClientSession() as session:
            for header in ("Basic", "Basic !!!", "Basic " + base64.b64encode(b"\xff\xfe").decode(),
                           "Basic " + base64.b64encode(b"no-colon").decode(), "Bearer x",
                           "Basic " + base64.b64encode(b":").decode(), "basic x"):  # fmt: skip
                async with session.get(s.base + "/metrics", ssl=s.ssl,
                                       headers={"Authorization": header}) as response:  # fmt: skip
                    assert response.status == 401, header

    asyncio.run(main())


def test_plain_http_to_the_tls_port_gets_no_metrics(tmp_path: Path) -> None:
    async def main() -> None:
        async with secured(tmp_path) as s:
            plain = s.base.replace("https://", "http://")
            async with aiohttp.ClientSession() as session:
                with pytest.raises(aiohttp.ClientError):
                    async with session.get(plain + "/metrics", headers=GOOD) as response:
                        assert "dnsgap_" not in await response.text()

    asyncio.run(main())


def test_untrusted_client_refuses_the_self_signed_certificate(tmp_path: Path) -> None:
    async def main() -> None:
        async with secured(tmp_path) as s, aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                async with session.get(s.base + "/metrics", headers=GOOD,
                                       ssl=ssl.create_default_context()):  # fmt: skip
                    pass

    asyncio.run(main())


def test_secrets_never_appear_in_metrics_status_page_probe_or_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    async def main() -> tuple[list[str], list[str]]:
        async with secured(tmp_path) as s:
            await asyncio.sleep(2.2)  # signed AXFR/UPDATE and the TLS probe run twice
            texts = [(await s.get(path, GOOD))[1]
                     for path in ("/metrics", "/", "/probe?target=ref&probe=axfr",
                                  "/probe?target=ref&probe=update",
                                  "/probe?target=dot&probe=soa_tls")]  # fmt: skip
            assert "dnsgap_probe_responses_total" in texts[0]
            # A failed reload (unknown key) and a successful one both log.
            config = Path(s.exporter.config_path or "")
            good = config.read_text()
            config.write_text(good.replace("tsig_key: xfr-key, interval",
                                           "tsig_key: nokey, interval", 1))  # fmt: skip
            assert not (await s.exporter.reload()).ok
            texts.append((await s.get("/", GOOD))[1])
            config.write_text(good)
            assert (await s.exporter.reload()).ok
            texts += [repr(s.exporter.config), str(s.exporter.config)]
            return texts, s.secrets

    outputs, secrets = asyncio.run(main())
    outputs.append(caplog.text)
    outputs.extend(repr(record.args) for record in caplog.records)
    for secret in secrets:
        for output in outputs:
            assert secret not in output, f"secret {secret[:12]}... leaked"


def test_a_rejected_tsig_secret_is_not_echoed_in_the_config_error(tmp_path: Path) -> None:
    almost = TSIG_SECRET[:-1]  # one character short: not valid base64 any more
    path = tmp_path / "bad.yml"
    path.write_text(f"""
tsig_keys:
  k: {{algorithm: hmac-sha256, secret: "{almost}"}}
targets: [{{name: a, server: 127.0.0.1, probes: [{{name: q, kind: query}}]}}]
""")
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    assert "secret" in caught.value.key
    assert almost[:20] not in str(caught.value)


def test_web_config_rejects_plain_passwords_and_unknown_keys(tmp_path: Path) -> None:
    cases = {
        "basic_auth_users:\n  prometheus: hunter2\n": "basic_auth_users.prometheus",
        "tls_server_config:\n  cert_file: a.crt\n": "tls_server_config.key_file",
        "tls_server_config:\n  cert_file: a.crt\n  key_file: a.key\n": "tls_server_config",
        "tls_server_confg: {}\n": "tls_server_confg",
        "- a\n": "<top>",
    }
    for text, key in cases.items():
        path = tmp_path / "web.yml"
        path.write_text(text)
        with pytest.raises(ConfigError) as caught:
            load_web_config(str(path))
        assert caught.value.key == key, text
        assert "hunter2" not in str(caught.value)
