"""Turn an uploaded file into text sections that keep where they came from (PDF page,
CSV row range), ready for chunking. Every format is read from a binary file object; CSV
is streamed row by row, so a large file never sits whole in memory."""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import PurePath
from typing import BinaryIO

from serve_app.core.chunking import chunk_text

KINDS = {".pdf": "pdf", ".docx": "docx", ".csv": "csv", ".txt": "txt", ".md": "md", ".markdown": "md",
         ".html": "html", ".htm": "html"}


class DocumentError(ValueError):
    """The file cannot be ingested; the message says why (shown to the caller)."""


@dataclass(frozen=True)
class Section:
    text: str
    page: int | None = None  # 1-based PDF page
    rows: tuple[int, int] | None = None  # 1-based CSV data rows, inclusive


@dataclass(frozen=True)
class ChunkOut:
    text: str
    index: int
    page: int | None
    rows: tuple[int, int] | None


# What an upload may be, by its part's Content-Type, for a name without one of KINDS' extensions.
MEDIA_TYPES = {"application/pdf": ".pdf",
               "application/vnd.openxmlformats-officedocument.wordprocessingml.document": ".docx",
               "text/csv": ".csv", "text/plain": ".txt", "text/markdown": ".md", "text/html": ".html"}


MAX_FILENAME_CHARS = 255


def upload_name(filename: str, content_type: str | None) -> str:
    """The name an upload is ingested under: `filename` if its extension names a kind,
    else `filename` plus the extension its Content-Type names (`curl -F 'file=@notes;type=text/plain'`);
    neither: a DocumentError (400). The name is only ever data (the upload is spooled under
    a name of its own), but one with control characters or over MAX_FILENAME_CHARS is refused."""
    if len(filename) > MAX_FILENAME_CHARS or any(ord(c) < 32 or c == "\x7f" for c in filename):
        raise DocumentError(f"file names may have at most {MAX_FILENAME_CHARS} characters and no control characters")
    if PurePath(filename).suffix.lower() in KINDS:
        return filename
    extension = MEDIA_TYPES.get((content_type or "").partition(";")[0].strip().lower())
    if extension is None:
        raise DocumentError(f"unsupported file type {PurePath(filename).suffix or '(none)'}; name the file with one "
                            f"of {', '.join(sorted(KINDS))} or send its part with a Content-Type of "
                            f"{', '.join(MEDIA_TYPES)}")
    return f"{filename}{extension}"


def detect_kind(filename: str) -> str:
    kind = KINDS.get(PurePath(filename).suffix.lower())
    if kind is None:
        supported = ", ".join(sorted(KINDS))
        raise DocumentError(f"unsupported file type {PurePath(filename).suffix or '(none)'}; supported: {supported}")
    return kind


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DocumentError("the file is not valid UTF-8 text") from None


def parse_pdf(stream: BinaryIO) -> Iterator[Section]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(stream)
        pages = list(reader.pages)
    except (PdfReadError, ValueError, KeyError, OSError) as exc:
        raise DocumentError(f"not a readable PDF: {exc}") from None
    found = False
    for number, page in enumerate(pages, start=1):
        text = (page.extract_text() or "").strip()
        if text:
            found = True
            yield Section(text, page=number)
    if not found:
        raise DocumentError("the PDF has no text layer (scanned images need OCR first)")


def parse_docx(stream: BinaryIO) -> Iterator[Section]:
    import zipfile

    import docx

    try:
        document = docx.Document(stream)
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise DocumentError(f"not a readable DOCX file: {exc}") from None
    paragraphs = [p.text.strip() for p in document.paragraphs if p.text.strip()]
    for table in document.tables:
        for row in table.rows:
            paragraphs.append(" | ".join(cell.text.strip() for cell in row.cells))
    if paragraphs:
        yield Section("\n\n".join(paragraphs))


def parse_csv(stream: BinaryIO, rows_per_section: int = 20) -> Iterator[Section]:
    """Each row as "column: value; ..." lines, grouped with the row range they cover."""
    text = codecs.getreader("utf-8-sig")(stream, "strict")  # errors="strict", positional-only in the stub
    try:
        reader = csv.reader(text)
        header = next(reader, None)
        if not header:
            return
        lines: list[str] = []
        first = 1
        for number, row in enumerate(reader, start=1):
            # strict=False: rows may be ragged; cells past the header are dropped, missing ones skipped.
            lines.append("; ".join(f"{h.strip()}: {v.strip()}" for h, v in zip(header, row, strict=False) if v.strip()))
            if len(lines) == rows_per_section:
                yield Section("\n".join(lines), rows=(first, number))
                lines, first = [], number + 1
        if lines:
            yield Section("\n".join(lines), rows=(first, first + len(lines) - 1))
    except UnicodeDecodeError:
        raise DocumentError("the CSV file is not valid UTF-8") from None
    except csv.Error as exc:
        raise DocumentError(f"malformed CSV: {exc}") from None


class _TextOfHTML(HTMLParser):
    SKIP = frozenset({"script", "style", "noscript", "template"})
    BLOCK = frozenset({"p", "div", "br", "li", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "section", "article"})

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIP:
            self._skipping += 1
        elif tag in self.BLOCK:
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP and self._skipping:
            self._skipping -= 1

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def parse_html(stream: BinaryIO) -> Iterator[Section]:
    parser = _TextOfHTML()
    parser.feed(_decode(stream.read()))
    text = re.sub(r"[ \t]+", " ", "".join(parser.parts))
    text = re.sub(r"\n\s*\n+", "\n\n", text).strip()
    if text:
        yield Section(text)


def parse_text(stream: BinaryIO) -> Iterator[Section]:
    text = _decode(stream.read()).strip()
    if text:
        yield Section(text)


PARSERS = {"pdf": parse_pdf, "docx": parse_docx, "csv": parse_csv, "txt": parse_text, "md": parse_text,
           "html": parse_html}


def chunks_of(stream: BinaryIO, filename: str, size: int = 500, overlap: int = 50) -> Iterator[ChunkOut]:
    """Parse and chunk; raises DocumentError for unsupported, corrupt or empty files."""
    index = 0
    for section in PARSERS[detect_kind(filename)](stream):
        for chunk in chunk_text(section.text, size, overlap):
            yield ChunkOut(chunk.text, index, section.page, section.rows)
            index += 1
    if index == 0:
        raise DocumentError("the document contains no text")


def read_all(data: bytes, filename: str, size: int = 500, overlap: int = 50) -> list[ChunkOut]:
    return list(chunks_of(io.BytesIO(data), filename, size, overlap))
