"""A stand-in for ``websocat URL`` (not installed here) for the README's shell blocks: prints each
text frame on a line; exits 0 when the server closes with 1000, else 1 (the close code on stderr)."""

from __future__ import annotations

import asyncio
import sys

import aiohttp


async def main(url: str) -> int:
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        async for message in ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                print(message.data, flush=True)
        print(f"closed {ws.close_code}", file=sys.stderr)
        return 0 if ws.close_code == 1000 else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1])))
