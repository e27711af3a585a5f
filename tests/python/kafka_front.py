#!/usr/bin/env python3
"""A TLS and SASL/SCRAM-SHA-256 front for the test broker. tansu 0.6 cannot do either for
Kafka clients (its --cert and --key exclude each other; its SASL answers librdkafka with
NoSharedMechanism), so this stands where a secured broker's listener would: it terminates
TLS (--cert/--key), answers SaslHandshake and SaslAuthenticate itself for one user (the
server side of RFC 5802/7677, stdlib only), refuses anything else before authentication,
and then forwards the connection's bytes to the broker (--to). The broker advertises this
front's port, so every connection of a client comes through it.

Usage: kafka_front.py --listen PORT --to PORT [--cert C.pem --key K.pem]
                      [--user U --password P]
"""

import argparse
import asyncio
import base64
import hashlib
import hmac
import os
import ssl
import struct

SASL_HANDSHAKE, SASL_AUTHENTICATE, API_VERSIONS = 17, 36, 18
UNSUPPORTED_SASL_MECHANISM, SASL_AUTHENTICATION_FAILED, ILLEGAL_SASL_STATE = 33, 58, 34
MECHANISM = "SCRAM-SHA-256"


class Scram:
    """One SCRAM-SHA-256 exchange, server side, for a user whose password we know."""

    def __init__(self, user, password):
        self.user = user
        self.salt = os.urandom(16)
        self.iterations = 4096
        salted = hashlib.pbkdf2_hmac("sha256", password.encode(), self.salt, self.iterations)
        self.stored_key = hashlib.sha256(hmac.new(salted, b"Client Key", "sha256").digest()).digest()
        self.server_key = hmac.new(salted, b"Server Key", "sha256").digest()
        self.nonce = None

    def first(self, message):
        """client-first-message ("n,,n=user,r=nonce") -> server-first-message."""
        gs2, sep, bare = message.partition(",,")
        if not sep or gs2 != "n":
            raise ValueError("unsupported GS2 header")
        attrs = dict(kv.split("=", 1) for kv in bare.split(","))
        if attrs.get("n") != self.user:
            raise ValueError("unknown user")
        self.client_first_bare = bare
        self.nonce = attrs["r"] + base64.b64encode(os.urandom(18)).decode()
        salt = base64.b64encode(self.salt).decode()
        self.server_first = f"r={self.nonce},s={salt},i={self.iterations}"
        return self.server_first

    def final(self, message):
        """client-final-message ("c=biws,r=nonce,p=proof") -> server-final-message."""
        without_proof, sep, proof = message.rpartition(",p=")
        attrs = dict(kv.split("=", 1) for kv in without_proof.split(","))
        if not sep or attrs.get("r") != self.nonce:
            raise ValueError("nonce mismatch")
        auth = f"{self.client_first_bare},{self.server_first},{without_proof}".encode()
        signature = hmac.new(self.stored_key, auth, "sha256").digest()
        client_key = bytes(a ^ b for a, b in zip(base64.b64decode(proof), signature))
        if hashlib.sha256(client_key).digest() != self.stored_key:
            raise ValueError("authentication failed: wrong password")
        return "v=" + base64.b64encode(hmac.new(self.server_key, auth, "sha256").digest()).decode()


async def read_frame(reader):
    size = struct.unpack(">i", await reader.readexactly(4))[0]
    return await reader.readexactly(size)


def string(s):
    if s is None:
        return struct.pack(">h", -1)
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def parse_header(frame):
    """(api_key, api_version, correlation_id, body) of a request with header v1."""
    api_key, api_version, correlation = struct.unpack(">hhi", frame[:8])
    n = struct.unpack(">h", frame[8:10])[0]
    return api_key, api_version, correlation, frame[10 + max(n, 0):]


async def authenticate(reader, writer, up_reader, up_writer, user, password):
    """Runs the client's SASL exchange; True once it has authenticated."""
    scram = Scram(user, password)
    step = 0
    while True:
        frame = await read_frame(reader)
        api_key, version, correlation, body = parse_header(frame)
        if api_key == API_VERSIONS:
            up_writer.write(struct.pack(">i", len(frame)) + frame)
            await up_writer.drain()
            answer = await read_frame(up_reader)
            writer.write(struct.pack(">i", len(answer)) + answer)
            await writer.drain()
            continue
        if api_key == SASL_HANDSHAKE:
            n = struct.unpack(">h", body[:2])[0]
            mechanism = body[2:2 + n].decode()
            error = 0 if mechanism == MECHANISM else UNSUPPORTED_SASL_MECHANISM
            out = struct.pack(">ih", correlation, error) + struct.pack(">i", 1) + string(MECHANISM)
            writer.write(struct.pack(">i", len(out)) + out)
            await writer.drain()
            if error:
                return False
            continue
        if api_key == SASL_AUTHENTICATE and version <= 1:
            n = struct.unpack(">i", body[:4])[0]
            message = body[4:4 + n].decode()
            error, text, reply = 0, None, b""
            try:
                reply = (scram.first(message) if step == 0 else scram.final(message)).encode()
            except ValueError as e:
                error, text = SASL_AUTHENTICATION_FAILED, str(e)
            step += 1
            out = struct.pack(">ih", correlation, error) + string(text) + struct.pack(">i", len(reply)) + reply
            if version >= 1:
                out += struct.pack(">q", 0)
            writer.write(struct.pack(">i", len(out)) + out)
            await writer.drain()
            if error:
                return False
            if step == 2:
                return True
            continue
        # Anything else before authentication is refused by closing, as Kafka does.
        return False


async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--listen", type=int, required=True)
    p.add_argument("--to", type=int, required=True)
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--user")
    p.add_argument("--password")
    args = p.parse_args()
    ctx = None
    if args.cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.cert, args.key)

    async def client(reader, writer):
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", args.to)
        except OSError:
            writer.close()
            return
        if args.user:
            try:
                ok = await authenticate(reader, writer, up_reader, up_writer, args.user, args.password)
            except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, struct.error):
                ok = False
            if not ok:
                writer.close()
                up_writer.close()
                return
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = await asyncio.start_server(client, "127.0.0.1", args.listen, ssl=ctx)
    what = ("TLS " if ctx else "") + ("SASL/SCRAM-SHA-256 " if args.user else "")
    print(f"kafka front ({what.strip() or 'plain'}) 127.0.0.1:{args.listen} -> 127.0.0.1:{args.to}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
