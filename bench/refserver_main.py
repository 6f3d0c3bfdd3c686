"""Fallback bench server: dnsgap's reference server alone in its own process."""

from __future__ import annotations

import asyncio
import sys

from exporter.refserver import ServerBehaviour, start


async def _serve(port: int, zone: str) -> None:
    server = await start(ServerBehaviour(zone=zone), port=port)
    try:
        await asyncio.Event().wait()
    finally:
        await server.close()


if __name__ == "__main__":
    asyncio.run(_serve(int(sys.argv[1]), sys.argv[2]))
