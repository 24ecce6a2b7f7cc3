"""Parsers on real files generated here: PDF (fpdf2), DOCX (python-docx), CSV, HTML."""

from __future__ import annotations

import io

import docx
import pytest
from fpdf import FPDF

from serve_app.ingest.parsers import DocumentError, chunks_of, read_all


def pdf_bytes(pages: list[str]) -> bytes:
    pdf = FPDF()
    pdf.set_font("helvetica", size=11)
    for text in pages:
        pdf.add_page()
        if text:
            pdf.multi_cell(0, 6, text)
    return bytes(pdf.output())


def docx_bytes(paragraphs: list[str]) -> bytes:
    document = docx.Document()
    for p in paragraphs:
        document.add_paragraph(p)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def test_pdf_chunks_keep_their_page() -> None:
    chunks = read_all(pdf_bytes(["The warranty lasts two years.", "Returns are accepted within 30 days."]),
                      "policy.pdf")
    assert [(c.page, "warranty" in c.text, "Returns" in c.text) for c in chunks] == [(1, True, False), (2, False, True)]
    assert [c.index for c in chunks] == [0, 1]


def test_pdf_without_text_layer_and_corrupt_pdf_are_refused() -> None:
    with pytest.raises(DocumentError, match="no text layer"):
        read_all(pdf_bytes(["", ""]), "scan.pdf")
    with pytest.raises(DocumentError, match="PDF"):
        read_all(b"%PDF-1.4 this is not really a pdf", "broken.pdf")


def test_docx_paragraphs() -> None:
    chunks = read_all(docx_bytes(["Quarterly report.", "Revenue grew by 12 percent in Q3."]), "report.docx")
    assert len(chunks) == 1 and "Revenue grew by 12 percent" in chunks[0].text
    with pytest.raises(DocumentError, match="DOCX"):
        read_all(b"not a zip", "bad.docx")


def test_csv_is_streamed_in_row_groups_with_ranges() -> None:
    rows = "\n".join(f"SKU-{i},Widget {i},{i * 1.5}" for i in range(1, 46))
    data = ("sku,name,price\n" + rows + "\n").encode()
    chunks = list(chunks_of(io.BytesIO(data), "items.csv", size=2000, overlap=0))
    assert [c.rows for c in chunks] == [(1, 20), (21, 40), (41, 45)]
    assert "sku: SKU-21; name: Widget 21; price: 31.5" in chunks[1].text


def test_text_markdown_and_html() -> None:
    assert read_all(b"# Title\n\nSome *markdown* text.", "notes.md")[0].text.startswith("# Title")
    html = (b"<html><head><style>p{}</style><script>alert(1)</script></head>"
            b"<body><h1>Hi</h1><p>Body text.</p></body></html>")
    text = read_all(html, "page.html")[0].text
    assert "Hi" in text and "Body text." in text and "alert" not in text and "p{}" not in text


@pytest.mark.parametrize("data, name, message", [
    (b"", "empty.txt", "no text"),
    (b"   \n  ", "blank.md", "no text"),
    (b"\xff\xfe\x00bad", "latin.txt", "UTF-8"),
    (b"data", "archive.zip", "unsupported"),
    (b"data", "noextension", "unsupported"),
])
def test_bad_files_get_clear_reasons(data: bytes, name: str, message: str) -> None:
    with pytest.raises(DocumentError, match=message):
        read_all(data, name)
