"""Reading a /v1/score request: its multipart body, within limits, into files and fields.

`read_form()` streams the body through python-multipart and keeps each part in memory, so the
limits hold while the bytes arrive, not after: a body larger than every file allowed together
is refused from its Content-Length before it is read (curl, which asks `Expect: 100-continue`
for big uploads, then sends nothing); a file part over `max_upload_bytes` is counted but not
kept, the rest of the body is read (it is bounded) and the request is answered 413 naming the
file; more than `max_upload_files` file parts, an empty part, no `file` part, or a body that
is not multipart/form-data are refused too. Every refusal is an `UploadError`: an HTTP status,
a short problem code for programs and a message for people.

`FRAME_PROBLEMS` maps the decoder's problem kinds (`pixels.FrameDecodeError.kind`) to the
HTTP status they are answered with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import AsyncIterator

from python_multipart.multipart import MultipartParser, parse_options_header

FILE_FIELD = "file"
TIME_FIELD = "taken_at"
FIELD_MAX_BYTES = 1024  # a text field (taken_at) is a few dozen bytes
BODY_OVERHEAD_BYTES = 2**20  # part headers, boundaries and text fields, per request

# HTTP status of each problem kind of a file that is not a usable frame.
FRAME_PROBLEMS = {
    "empty": 400,
    "too_big": 413,
    "too_many_pixels": 413,
    "not_an_image": 415,
    "unsupported_format": 415,
    "truncated": 422,
    "corrupt": 422,
}


class UploadError(Exception):
    """A request /v1/score refuses: `status`, `problem` (a code), the message, the file."""

    def __init__(self, status: int, problem: str, message: str, filename: str | None = None):
        super().__init__(message)
        self.status = status
        self.problem = problem
        self.filename = filename


@dataclass
class FilePart:
    """One `file` part: its name as sent, its bytes (empty when it was too big) and size."""

    filename: str
    data: bytes
    size: int


@dataclass
class Form:
    files: list[FilePart] = field(default_factory=list)
    times: list[str] = field(default_factory=list)  # the `taken_at` fields, in order


@dataclass
class _Part:
    name: str = ""
    filename: str | None = None
    data: bytearray = field(default_factory=bytearray)
    size: int = 0
    dropped: bool = False  # over its limit: counted, not kept


class _Collector:
    """python-multipart callbacks that collect parts and enforce the per-part limits."""

    def __init__(self, max_bytes: int, max_files: int):
        self.max_bytes, self.max_files = max_bytes, max_files
        self.parts: list[_Part] = []
        self.part = _Part()
        self.header_name = bytearray()
        self.header_value = bytearray()
        self.disposition = b""
        self.n_files = 0

    def on_part_begin(self) -> None:
        self.part = _Part()
        self.disposition = b""

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        if bytes(self.header_name).lower() == b"content-disposition":
            self.disposition = bytes(self.header_value)
        self.header_name.clear()
        self.header_value.clear()

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self.disposition)
        self.part.name = _text(options.get(b"name", b""))
        if b"filename" in options:
            self.part.filename = _text(options[b"filename"])
        if self.part.name == FILE_FIELD:
            self.n_files += 1
            self.part.dropped = self.n_files > self.max_files

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self.part
        part.size += end - start
        limit = self.max_bytes if part.name == FILE_FIELD else FIELD_MAX_BYTES
        if part.size > limit:
            part.dropped = True
            part.data = bytearray()
        if not part.dropped:
            part.data += data[start:end]

    def on_part_end(self) -> None:
        self.parts.append(self.part)

    def callbacks(self) -> dict:
        return {
            name: getattr(self, name)
            for name in (
                "on_part_begin",
                "on_header_field",
                "on_header_value",
                "on_header_end",
                "on_headers_finished",
                "on_part_data",
                "on_part_end",
            )
        }


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


async def read_form(headers, stream: AsyncIterator[bytes], max_bytes: int, max_files: int) -> Form:
    """The `file` parts and `taken_at` fields of a multipart/form-data body, or UploadError."""
    kind, params = parse_options_header(headers.get("content-type", ""))
    if kind != b"multipart/form-data" or b"boundary" not in params:
        raise UploadError(
            415,
            "not_multipart",
            "send multipart/form-data with one or more parts named `file` "
            "(e.g. curl -F file=@frame.jpg)",
        )
    cap = max_files * max_bytes + BODY_OVERHEAD_BYTES
    length = headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > cap:
        raise UploadError(
            413,
            "request_too_big",
            f"the request is {int(length) / 2**20:.0f} MiB, over what "
            f"{max_files} files of at most {_mib(max_bytes)} each can take "
            "(settings max_upload_files and max_upload_bytes)",
        )
    collector = _Collector(max_bytes, max_files)
    parser = MultipartParser(params[b"boundary"], collector.callbacks())
    received = 0
    try:
        async for chunk in stream:
            received += len(chunk)
            if received > cap:
                raise UploadError(
                    413,
                    "request_too_big",
                    f"the request is over {cap / 2**20:.0f} MiB, what "
                    f"{max_files} files of at most {_mib(max_bytes)} each can take",
                )
            parser.write(chunk)
        parser.finalize()
    except UploadError:
        raise
    except Exception as exc:  # python-multipart raises its own errors for a malformed body
        raise UploadError(
            400, "bad_multipart", f"the multipart body cannot be read: {exc}"
        ) from None
    return _check(collector, max_bytes, max_files)


def _check(collector: _Collector, max_bytes: int, max_files: int) -> Form:
    parts = collector.parts
    files = [p for p in parts if p.name == FILE_FIELD]
    if not files:
        sent = ", ".join(sorted({repr(p.name) for p in parts})) or "none"
        raise UploadError(
            400,
            "no_file",
            f"no part named `file` (parts sent: {sent}); send each image as a "
            "multipart part named file, e.g. curl -F file=@frame.jpg",
        )
    if len(files) > max_files:
        raise UploadError(
            413,
            "too_many_files",
            f"{len(files)} files in one request; at most {max_files} "
            "(setting max_upload_files): send them in several requests",
        )
    other = sorted({p.name for p in parts if p.name not in (FILE_FIELD, TIME_FIELD)})
    if other:
        raise UploadError(
            400,
            "unknown_field",
            f"unknown form field(s) {', '.join(map(repr, other))}: /v1/score "
            "takes `file` parts and optional `taken_at` fields",
        )
    form = Form()
    for number, part in enumerate(files, 1):
        name = part.filename or f"file {number}"
        if part.size > max_bytes:
            raise UploadError(
                413,
                "too_big",
                f"{name}: file too big: {part.size / 2**20:.1f} MiB, over the "
                f"limit of {_mib(max_bytes)} (setting max_upload_bytes)",
                name,
            )
        if part.size == 0:
            raise UploadError(400, "empty", f"{name}: empty file (0 bytes)", name)
        form.files.append(FilePart(name, bytes(part.data), part.size))
    for part in parts:
        if part.name == TIME_FIELD:
            if part.dropped:
                raise UploadError(
                    400,
                    "bad_taken_at",
                    f"a taken_at field of {part.size} bytes: give an ISO 8601 time",
                )
            form.times.append(_text(bytes(part.data)))
    if form.times and len(form.times) != len(form.files):
        raise UploadError(
            400,
            "bad_taken_at",
            f"{len(form.times)} taken_at fields for {len(form.files)} files: "
            "give one per file, in the same order, or none",
        )
    return form


def _mib(n_bytes: int) -> str:
    return f"{n_bytes / 2**20:g} MiB"
