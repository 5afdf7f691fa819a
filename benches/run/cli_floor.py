#!/usr/bin/env python3
"""The docker CLI's own floor for `docker run --rm --network none IMG true`.

A stand-in Engine API server on a unix socket that answers, at once, exactly the requests
that command sends (ping, create, attach, wait, start) as if a container ran `true` in zero
time and was removed. Timing the real docker CLI against it gives what the CLI alone costs
per `docker run`: a daemon cannot make the command faster than this. It is a measuring
instrument for benches/run/run.sh, not a daemon: anything else gets a 501.

Usage: cli_floor.py SOCKET   (serves until killed; CLI_FLOOR_LOG=1 prints each request)
"""
import asyncio
import json
import os
import sys

API = "1.45"
HEADERS = "Api-Version: %s\r\nServer: cli-floor\r\n" % API


def response(status, body=b"", ctype="application/json", extra=""):
    head = "HTTP/1.1 %s\r\n%s%sContent-Type: %s\r\nContent-Length: %d\r\n\r\n" % (
        status, HEADERS, extra, ctype, len(body))
    return head.encode() + body


class Container:
    def __init__(self):
        self.started = asyncio.Event()


CONTAINERS = {}
LOG = os.environ.get("CLI_FLOOR_LOG") == "1"


async def read_request(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    body = b""
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            body += chunk[:-2]
    path = target.split("?", 1)[0]
    if path.startswith("/v1."):
        path = "/" + path.split("/", 2)[2]
    return method, path, body


async def handle(reader, writer):
    try:
        while True:
            try:
                method, path, _body = await read_request(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            if LOG:
                print(method, path, file=sys.stderr, flush=True)
            parts = path.strip("/").split("/")
            if parts[0] == "_ping":
                writer.write(response("200 OK", b"" if method == "HEAD" else b"OK", "text/plain",
                                      "Ostype: linux\r\nCache-Control: no-cache\r\n"))
            elif path == "/containers/create":
                cid = os.urandom(32).hex()
                CONTAINERS[cid] = Container()
                writer.write(response("201 Created", json.dumps({"Id": cid, "Warnings": []}).encode()))
            elif len(parts) == 3 and parts[0] == "containers" and parts[1] in CONTAINERS:
                c = CONTAINERS[parts[1]]
                if parts[2] == "attach":
                    writer.write(("HTTP/1.1 101 UPGRADED\r\nContent-Type: application/vnd.docker.raw-stream\r\n"
                                  "Connection: Upgrade\r\nUpgrade: tcp\r\n%s\r\n" % HEADERS).encode())
                    await writer.drain()
                    await c.started.wait()
                    writer.close()
                    return
                if parts[2] == "wait":
                    head = ("HTTP/1.1 200 OK\r\n%sContent-Type: application/json\r\n"
                            "Transfer-Encoding: chunked\r\n\r\n" % HEADERS).encode()
                    writer.write(head)
                    await writer.drain()
                    await c.started.wait()
                    body = json.dumps({"StatusCode": 0}).encode() + b"\n"
                    writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
                    CONTAINERS.pop(parts[1], None)
                elif parts[2] == "start":
                    writer.write(("HTTP/1.1 204 No Content\r\n%s\r\n" % HEADERS).encode())
                    c.started.set()
                else:
                    writer.write(response("501 Not Implemented", b'{"message":"not in the stub"}'))
            else:
                writer.write(response("501 Not Implemented", b'{"message":"not in the stub"}'))
            await writer.drain()
    finally:
        writer.close()


async def main(sock):
    if os.path.exists(sock):
        os.unlink(sock)
    server = await asyncio.start_unix_server(handle, path=sock)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: cli_floor.py SOCKET")
    asyncio.run(main(sys.argv[1]))
