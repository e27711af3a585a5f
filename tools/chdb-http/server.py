#!/usr/bin/env python3
"""A ClickHouse HTTP interface over the chDB engine, for local runs and tests.

chDB embeds ClickHouse but has no server. This endpoint speaks the subset of
ClickHouse's HTTP protocol that the Rust `clickhouse` crate and curl use, so
the pipeline talks to it exactly as it talks to clickhouse-server in
production (docker-compose). Nothing in the Rust code knows it is chDB.

Supported request shapes (ClickHouse semantics):
  * query in the URL (`?query=`) and/or in the body; for `INSERT ... FORMAT X`
    the body is the data (staged in a file and inserted with INSERT ... SELECT
    FROM file(), so the engine's errors reach the client);
  * `database`, `default_format`, `param_<name>` (bound query parameters),
    `compress=1` (LZ4-compressed response blocks), `decompress=1`
    (LZ4-compressed request body), chunked request bodies, and any other URL
    parameter as a query setting (e.g. `readonly=1`, `max_result_rows=10`,
    `insert_deduplication_token=...`);
  * errors as HTTP 500 with `X-ClickHouse-Exception-Code` and the engine's text;
  * several statements in one request are rejected (code 62), as the real
    server does.

Each request runs on a connection whose session has exactly its database and
settings (kept idle per shape between requests; a statement that changes its
session, such as SET or USE, closes it), so nothing leaks between requests.

Run: python3 server.py --path DATA_DIR --port 8123
"""

import argparse
import json
import os
import re
import struct
import sys
import threading
import uuid
from collections import OrderedDict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

import chdb
import lz4.block
from clickhouse_cityhash.cityhash import CityHash128

# URL parameters that are part of the HTTP protocol, not query settings.
PROTOCOL_PARAMS = {
    "query", "database", "default_format", "compress", "decompress", "user",
    "password", "query_id", "session_id", "session_timeout", "session_check",
    "enable_http_compression", "role", "buffer_size", "wait_end_of_query",
    "http_wait_end_of_query", "send_progress_in_http_headers", "quota_key",
}

LZ4_METHOD = 0x82
NONE_METHOD = 0x02
BLOCK_SIZE = 1 << 20

INSERT_FORMAT_RE = re.compile(
    rb"^\s*(INSERT\s+INTO\s.*?)\s+FORMAT\s+([A-Za-z0-9_]+)[ \t]*\r?\n?", re.I | re.S
)
IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
CODE_RE = re.compile(r"Code: (\d+)\.")
# INSERT INTO [TABLE] target [(columns)] [SETTINGS ...] (the part before FORMAT).
INSERT_TARGET_RE = re.compile(
    r"^\s*INSERT\s+INTO\s+(?:TABLE\s+)?((?:`[^`]+`|[A-Za-z0-9_]+)(?:\.(?:`[^`]+`|[A-Za-z0-9_]+))?)"
    r"\s*(?:\((.*)\))?\s*((?:SETTINGS\s.*)?)$",
    re.I | re.S,
)
DEBUG = bool(os.environ.get("OBS_CHDB_DEBUG"))
# Statements that leave a session as they found it and change no table's columns: their
# connection goes back to the pool, and cached table descriptions stay valid. Anything
# else (SET, USE, CREATE TEMPORARY TABLE, DDL, ...) closes its connection and empties the
# description cache.
SESSION_FREE_RE = re.compile(r"^\s*(?:SELECT|WITH|INSERT|SHOW|DESCRIBE|DESC|EXISTS|EXPLAIN)\b", re.I)
# Idle connections kept per session shape, and session shapes kept.
POOL_PER_KEY = 4
POOL_KEYS = 16


class ClickHouseError(Exception):
    """An error carrying a ClickHouse exception code."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


def quote_string(value):
    """Quote a value as a ClickHouse string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def quote_ident(name):
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def parse_insert(sql):
    """(target, [columns] or None, settings clause) of `INSERT INTO t (a, b) SETTINGS ...`."""
    m = INSERT_TARGET_RE.match(sql)
    if not m:
        raise ClickHouseError(62, f"Code: 62. DB::Exception: Cannot parse INSERT target in {sql[:200]!r}. (SYNTAX_ERROR)")
    target, cols, tail = m.group(1), m.group(2), m.group(3) or ""
    columns = None
    if cols is not None:
        columns = [c.strip().strip("`") for c in cols.split(",") if c.strip()]
    return target, columns, tail


def check_single_statement(sql):
    """Reject text holding more than one statement, ignoring quoted text and comments."""
    i, n = 0, len(sql)
    seen_semicolon = False
    while i < n:
        ch = sql[i]
        if ch in "'\"`":
            if seen_semicolon:
                break
            j = i + 1
            while j < n:
                if sql[j] == "\\":
                    j += 2
                    continue
                if sql[j] == ch:
                    if j + 1 < n and sql[j + 1] == ch:
                        j += 2
                        continue
                    break
                j += 1
            i = j + 1
            continue
        if sql.startswith("--", i) or ch == "#":
            j = sql.find("\n", i)
            i = n if j < 0 else j + 1
            continue
        if sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            i = n if j < 0 else j + 2
            continue
        if ch == ";":
            seen_semicolon = True
        elif not ch.isspace() and seen_semicolon:
            break
        i += 1
    else:
        return
    raise ClickHouseError(
        62, "Code: 62. DB::Exception: Syntax error (Multi-statements are not allowed). (SYNTAX_ERROR)"
    )


def parse_multipart(content_type, body):
    """Fields of a multipart/form-data body (query, param_*, settings) as a dict."""
    m = re.search(r'boundary="?([^";]+)"?', content_type)
    if not m:
        raise ClickHouseError(27, "Code: 27. DB::Exception: multipart body without a boundary. (CANNOT_PARSE_INPUT_ASSERTION_FAILED)")
    delimiter = b"--" + m.group(1).encode()
    fields = {}
    for part in body.split(delimiter)[1:]:
        if part.startswith(b"--"):
            break
        head, _, value = part.partition(b"\r\n\r\n")
        name = re.search(rb'name="([^"]*)"', head)
        if name:
            fields[name.group(1).decode()] = value[:-2].decode("utf-8") if value.endswith(b"\r\n") else value.decode("utf-8")
    return fields


LOW_CARDINALITY = "LowCardinality("


def plain_type(name):
    """A ClickHouse type name with every LowCardinality(T) written as T."""
    while (start := name.find(LOW_CARDINALITY)) >= 0:
        depth, i = 1, start + len(LOW_CARDINALITY)
        while depth:
            depth += {"(": 1, ")": -1}.get(name[i], 0)
            i += 1
        name = name[:start] + name[start + len(LOW_CARDINALITY):i - 1] + name[i:]
    return name


def read_varint(data, pos):
    """(value, next position) of the LEB128 number at pos, or None past the end."""
    value = shift = 0
    while pos < len(data):
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
    return None


def read_names_and_types(data):
    """(names, types, end of header) of a RowBinaryWithNamesAndTypes body, or None when
    the header is cut short or not UTF-8 (the engine then reports it)."""
    got = read_varint(data, 0)
    if got is None:
        return None
    count, pos = got
    strings = []
    for _ in range(2 * count):
        got = read_varint(data, pos)
        if got is None or got[1] + got[0] > len(data):
            return None
        size, pos = got
        try:
            strings.append(bytes(data[pos:pos + size]).decode("utf-8"))
        except UnicodeDecodeError:
            return None
        pos += size
    return strings[:count], strings[count:], pos


def names_and_types(names, types):
    """The RowBinaryWithNamesAndTypes header for names and types."""
    out = bytearray()

    def put(value):
        while True:
            byte = value & 0x7F
            value >>= 7
            out.append(byte | (0x80 if value else 0))
            if not value:
                return

    put(len(names))
    for text in list(names) + list(types):
        raw = text.encode("utf-8")
        put(len(raw))
        out += raw
    return bytes(out)


def city_checksum(block):
    """CityHash128 (v1.0.2) of a block as ClickHouse stores it: high 64 bits first, each LE."""
    h = CityHash128(block)
    return struct.pack("<QQ", h >> 64, h & (2**64 - 1))


def decompress_blocks(data):
    """Decode ClickHouse's compressed block stream (checksum, header, LZ4 data)."""
    out = bytearray()
    pos = 0
    while pos < len(data):
        if len(data) - pos < 25:
            raise ClickHouseError(432, "Code: 432. DB::Exception: Truncated compressed block. (UNKNOWN_CODEC)")
        checksum = data[pos:pos + 16]
        method = data[pos + 16]
        compressed_size, size = struct.unpack_from("<II", data, pos + 17)
        block = data[pos + 16:pos + 16 + compressed_size]
        if len(block) != compressed_size:
            raise ClickHouseError(432, "Code: 432. DB::Exception: Truncated compressed block. (UNKNOWN_CODEC)")
        if city_checksum(bytes(block)) != checksum:
            raise ClickHouseError(40, "Code: 40. DB::Exception: Checksum doesn't match: corrupted data. (CHECKSUM_DOESNT_MATCH)")
        payload = bytes(block[9:])
        if method == LZ4_METHOD:
            out += lz4.block.decompress(payload, uncompressed_size=size)
        elif method == NONE_METHOD:
            out += payload
        else:
            raise ClickHouseError(89, f"Code: 89. DB::Exception: Unknown codec family code: {method}. (UNKNOWN_CODEC)")
        pos += 16 + compressed_size
    return bytes(out)


def compress_blocks(data):
    """Encode bytes as ClickHouse compressed LZ4 blocks."""
    out = bytearray()
    for start in range(0, max(len(data), 1), BLOCK_SIZE):
        chunk = data[start:start + BLOCK_SIZE]
        payload = lz4.block.compress(chunk, store_size=False)
        block = struct.pack("<BII", LZ4_METHOD, len(payload) + 9, len(chunk)) + payload
        out += city_checksum(block) + block
    return bytes(out)


def summary_of(result):
    """X-ClickHouse-Summary of a chDB result: rows read and written, and the engine's own
    time for the statement (`elapsed_ns`, as clickhouse-server reports it)."""
    def get(name, scale=1):
        return str(int(getattr(result, name, lambda: 0)() * scale)) if result is not None else "0"
    return {"read_rows": get("rows_read"), "written_rows": get("rows_written"),
            "elapsed_ns": get("elapsed", 1e9)}


def error_from(exc):
    """Turn a chDB exception into a ClickHouseError with the engine's code."""
    text = str(exc)
    m = CODE_RE.search(text)
    code = int(m.group(1)) if m else 1002
    if not m:
        text = f"Code: 1002. DB::Exception: {text}. (UNKNOWN_EXCEPTION)"
    return ClickHouseError(code, text)


class Engine:
    """The one chDB engine of this process, running each request on a connection of its
    own session shape (pooled, see `run`)."""

    def __init__(self, path, config_file=None):
        self.staging = os.path.join(os.path.abspath(path), "_insert_staging")
        os.makedirs(self.staging, exist_ok=True)
        # A server configuration (clusters, macros) goes in the connection string.
        self.path = f"file:{path}?config-file={config_file}" if config_file else path
        # Holding one connection open keeps the engine alive between requests.
        self.anchor = chdb.connect(self.path)
        # Idle connections by session shape (database, settings): a new connection with
        # its SET and USE statements costs ~0.4 ms per request.
        self.pool = OrderedDict()
        # (database, table) -> {column: (type, default kind)}, for inserts (~0.7 ms a DESCRIBE).
        self.described = {}
        # Bumped when the cache is emptied: a DESCRIBE begun before is not cached.
        self.generation = 0
        self.lock = threading.Lock()

    def run(self, params, body):
        """Execute one HTTP request; returns (bytes, format, summary).

        A request runs on a connection whose session has exactly the request's database
        and settings (as a fresh connection per request would): taken from the pool, or
        new. It goes back only after a statement that leaves the session unchanged."""
        if DEBUG:
            print(f"chdb-http: params={params!r} body={body[:300]!r}", file=sys.stderr, flush=True)
        settings = []
        for name, value in params.items():
            if name in PROTOCOL_PARAMS or name.startswith("param_") or name == "readonly":
                continue
            if not IDENT_RE.match(name):
                raise ClickHouseError(115, f"Code: 115. DB::Exception: Unknown setting '{name}'. (UNKNOWN_SETTING)")
            settings.append((name, value))
        database = params.get("database") or ""
        if database and not IDENT_RE.match(database):
            raise ClickHouseError(81, f"Code: 81. DB::Exception: Database {database} does not exist. (UNKNOWN_DATABASE)")
        bound = {k[len("param_"):]: v for k, v in params.items() if k.startswith("param_")}

        url_query = params.get("query")
        insert = sql = None
        if url_query is not None:
            head = url_query.encode()
            m = INSERT_FORMAT_RE.match(head + b"\n")
            if m and m.end() >= len(head):
                insert = (m, body)
            else:
                sql = url_query + ("\n" + body.decode("utf-8") if body else "")
        else:
            m = INSERT_FORMAT_RE.match(body)
            if m:
                insert = (m, body[m.end():])
            else:
                sql = body.decode("utf-8")
        if insert is None:
            if not sql.strip():
                raise ClickHouseError(62, "Code: 62. DB::Exception: Empty query. (SYNTAX_ERROR)")
            check_single_statement(sql)
        # An insert's settings go in its own SETTINGS clause (a deduplication token differs
        # per request and would make every session shape new); a query's are its session's.
        session = () if insert is not None else tuple(sorted(settings))
        key = (database, session, params.get("readonly"))
        session_free = insert is not None or bool(SESSION_FREE_RE.match(sql))
        conn = self._checkout(key)
        ok = False
        try:
            if insert is not None:
                out = self._insert(conn, database, settings, *insert)
            else:
                out = self._query(conn, sql, params.get("default_format") or "TabSeparated", bound)
            ok = True
            return out
        finally:
            if not session_free:
                with self.lock:
                    self.described.clear()
                    self.generation += 1
            self._checkin(key, conn, ok and session_free)

    def _checkout(self, key):
        """A connection whose session has `key`'s database, settings and readonly."""
        with self.lock:
            idle = self.pool.get(key)
            if idle:
                self.pool.move_to_end(key)
                return idle.pop()
        conn = chdb.connect(self.path)
        try:
            database, settings, readonly = key
            for name, value in settings:
                self._exec(conn, f"SET {name} = {quote_string(value)}")
            if database:
                self._exec(conn, f"USE {database}")
            if readonly is not None:
                self._exec(conn, f"SET readonly = {quote_string(readonly)}")
        except BaseException:
            conn.close()
            raise
        return conn

    def _checkin(self, key, conn, reusable):
        """Keeps `conn` for the next request of the same shape, or closes it."""
        evicted = []
        if reusable:
            with self.lock:
                idle = self.pool.setdefault(key, [])
                self.pool.move_to_end(key)
                if len(idle) < POOL_PER_KEY:
                    idle.append(conn)
                    conn = None
                while len(self.pool) > POOL_KEYS:
                    evicted += self.pool.popitem(last=False)[1]
        for c in evicted + ([conn] if conn is not None else []):
            c.close()

    def _query(self, conn, sql, fmt, bound):
        """Any statement but an insert with a body; its result in `fmt`."""
        try:
            result = conn.query(sql, fmt, params=bound)
        except Exception as exc:  # chDB raises ChdbError/RuntimeError with the engine's text
            raise error_from(exc) from None
        data = result.bytes() if hasattr(result, "bytes") else bytes(result)
        return data, fmt, summary_of(result)

    def _insert(self, conn, database, settings, match, data):
        """INSERT ... FORMAT X with the request body as the data.

        The data is staged in a file and inserted with INSERT ... SELECT FROM
        file(): chDB 4.4's streaming insert API (send_insert) reports success
        when the insert pipeline throws after parsing (a violated CONSTRAINT, a
        DEFAULT that calls throwIf) and drops the block silently, while the
        query path raises the engine's error as clickhouse-server does.
        Deduplication tokens apply to INSERT ... SELECT alike (checked).
        """
        sql = match.group(1).decode("utf-8")
        fmt = match.group(2).decode("ascii")
        check_single_statement(sql)
        if not IDENT_RE.match(fmt):
            raise ClickHouseError(73, f"Code: 73. DB::Exception: Unknown format {fmt}. (UNKNOWN_FORMAT)")
        target, columns, tail = parse_insert(sql)
        if settings:
            # The request's settings first: a name the statement sets itself wins, as the
            # statement's own SETTINGS override the session's on the real server.
            given = ", ".join(f"{n} = {quote_string(v)}" for n, v in settings)
            tail = f"SETTINGS {given}" + (", " + tail[len("SETTINGS"):].strip() if tail else "")
        described = self._describe(conn, database, target)
        if columns is None:
            columns = [n for n, (_, kind) in described.items() if kind in ("", "DEFAULT")]
        for name in columns:
            if name not in described:
                raise ClickHouseError(16, f"Code: 16. DB::Exception: No such column {name} in table {target}. (NO_SUCH_COLUMN_IN_TABLE)")
        # LowCardinality(T) is T in the RowBinary formats; parsed as T and cast by the
        # INSERT it costs a fraction (otel_logs: 3-4 CPU us per row less), same rows stored.
        # A header whose types are not the table's is left as sent: the engine refuses it.
        head, type_of = b"", (lambda t: t)
        if fmt == "RowBinary":
            type_of = plain_type
        elif fmt == "RowBinaryWithNamesAndTypes":
            header = read_names_and_types(data)
            if header is not None and all(
                    described.get(n, (None,))[0] == t for n, t in zip(*header[:2])):
                names, types, end = header
                head, data = names_and_types(names, [plain_type(t) for t in types]), memoryview(data)[end:]
                type_of = plain_type
        structure = [f"{quote_ident(n)} {type_of(described[n][0])}" for n in columns]
        staging = os.path.join(self.staging, f"{uuid.uuid4().hex}.{fmt}")
        with open(staging, "wb") as f:
            f.write(head)
            f.write(data)
        cols = ", ".join(quote_ident(c) for c in columns)
        query = (
            f"INSERT INTO {target} ({cols}) {tail} SELECT * FROM file("
            f"{quote_string(staging)}, {quote_string(fmt)}, {quote_string(', '.join(structure))})"
        )
        try:
            if data:
                res = conn.query(query, "TabSeparated")
            else:
                res = None
        except Exception as exc:
            raise error_from(exc) from None
        finally:
            os.unlink(staging)
        summary = summary_of(res)
        summary["read_rows"] = "0"
        return b"", fmt, summary

    def _describe(self, conn, database, target):
        """Column name -> (type, default kind) of a table, in table order; cached until a
        statement that may change a table runs."""
        with self.lock:
            cached = self.described.get((database, target))
            generation = self.generation
        if cached is not None:
            return cached
        try:
            res = conn.query(f"DESCRIBE TABLE {target}", "JSONCompact")
        except Exception as exc:
            raise error_from(exc) from None
        rows = json.loads(res.bytes() if hasattr(res, "bytes") else bytes(res))["data"]
        described = {r[0]: (r[1], r[2]) for r in rows}
        with self.lock:
            if generation == self.generation:
                self.described[(database, target)] = described
        return described

    @staticmethod
    def _exec(conn, sql):
        try:
            conn.query(sql, "TabSeparated")
        except Exception as exc:
            raise error_from(exc) from None


class Handler(BaseHTTPRequestHandler):
    """One HTTP request → one engine call."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle on, the second waits for the
    # client's delayed ACK (40 ms per answer, measured in the query benchmark).
    disable_nagle_algorithm = True
    server_version = "obs-chdb-http"
    engine = None

    def log_message(self, fmt, *args):  # quiet by default; errors are logged below
        pass

    def _read_body(self):
        """The whole request body, or an error if the client went away before sending it
        all: a partial body must never be inserted (its dedup token would then hide the
        rest when the client retries)."""
        incomplete = ClickHouseError(
            33, "Code: 33. DB::Exception: Cannot read all data: the request body ended early. (CANNOT_READ_ALL_DATA)")
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                line = self.rfile.readline()
                if not line.strip():
                    raise incomplete  # EOF (or a blank line) where a chunk size belongs
                size = int(line.split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                chunk = self.rfile.read(size)
                if len(chunk) != size:
                    raise incomplete
                out += chunk
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        if not length:
            return b""
        body = self.rfile.read(length)
        if len(body) != length:
            raise incomplete
        return body

    def _send(self, status, body, headers=None):
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _handle(self):
        url = urlsplit(self.path)
        try:
            body = self._read_body() if self.command == "POST" else b""
        except ClickHouseError as exc:
            # The client went away mid-body: nothing is executed, nobody to answer.
            print(f"chdb-http: {exc.message}", file=sys.stderr)
            self.close_connection = True
            return
        if url.path in ("/ping",) or (url.path == "/" and not url.query and not body):
            self._send(200, b"Ok.\n", {"Content-Type": "text/plain; charset=UTF-8"})
            return
        if url.path not in ("/", ""):
            self._send(404, b"There is no handle " + url.path.encode() + b"\n")
            return
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        query_id = params.get("query_id") or str(uuid.uuid4())
        try:
            content_type = self.headers.get("Content-Type", "")
            if content_type.lower().startswith("multipart/form-data"):
                # The clickhouse crate sends queries with bound parameters as a form.
                params.update(parse_multipart(content_type, body))
                body = b""
            if params.get("decompress") == "1" and body:
                body = decompress_blocks(body)
            data, fmt, summary = self.engine.run(params, body)
        except ClickHouseError as exc:
            self._send(500, (exc.message + "\n").encode(), {
                "Content-Type": "text/plain; charset=UTF-8",
                "X-ClickHouse-Exception-Code": str(exc.code),
                "X-ClickHouse-Query-Id": query_id,
            })
            return
        except Exception as exc:  # a bug here must still answer, with a code
            print(f"chdb-http: internal error: {exc!r}", file=sys.stderr)
            self._send(500, f"Code: 1001. DB::Exception: {exc}. (STD_EXCEPTION)\n".encode(), {
                "X-ClickHouse-Exception-Code": "1001"})
            return
        if params.get("compress") == "1":
            data = compress_blocks(data)
        self._send(200, data, {
            "Content-Type": "text/plain; charset=UTF-8",
            "X-ClickHouse-Format": fmt,
            "X-ClickHouse-Query-Id": query_id,
            "X-ClickHouse-Summary": json.dumps(summary),
        })

    def do_GET(self):
        """GET runs read-only queries, as on the real server."""
        url = urlsplit(self.path)
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        if "query" in params and "readonly" not in params:
            self.path = self.path + "&readonly=2"
        self._handle()

    def do_POST(self):
        self._handle()


def main():
    parser = argparse.ArgumentParser(description="ClickHouse HTTP interface over chDB")
    parser.add_argument("--path", required=True, help="chDB data directory")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8123)
    parser.add_argument("--tls-cert", help="PEM certificate chain: serve HTTPS (with --tls-key)")
    parser.add_argument("--tls-key", help="PEM private key of --tls-cert")
    parser.add_argument("--config-file", help="ClickHouse server configuration XML (remote_servers, macros)")
    args = parser.parse_args()
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    Handler.engine = Engine(args.path, args.config_file)
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    scheme = "http"
    if args.tls_cert:
        import ssl
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    print(f"chdb-http listening on {scheme}://{args.host}:{args.port} data={args.path}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
