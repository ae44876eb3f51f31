"""The download page's HTML (tiled_archive.serve.page): whatever the catalog and the request
hold, the page is the page's own markup with their text in it, escaped; it asks for nothing
from anywhere."""

from __future__ import annotations

from html.parser import HTMLParser

from hypothesis import given
from hypothesis import strategies as st

from tiled_archive.rules.problems import clip
from tiled_archive.serve.page import DownloadPage, PageLink, render, wants_page

#: The page's own elements and the attributes it sets: nothing else may appear.
ELEMENTS = {
    "html", "head", "meta", "title", "style", "body", "nav", "a", "h1", "h2", "table", "tr",
    "th", "td", "code", "p", "br",
}  # fmt: skip
ATTRIBUTES = {"lang", "charset", "name", "content", "href", "class", "download"}


class Parsed(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.elements: set[str] = set()
        self.attributes: set[str] = set()
        self.hrefs: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.elements.add(tag)
        self.attributes |= {name for name, _ in attrs}
        self.hrefs += [value for name, value in attrs if name == "href"]

    def handle_data(self, data):
        self.text.append(data)


def page(**changes) -> DownloadPage:
    fields = {
        "segments": ["scans", "run 1"],
        "breadcrumbs": [PageLink("(root)", "/api/v1/archive/")],
        "metadata": {"sample": "Si"},
        "filters": [],
        "ui_url": "/ui/browse/scans",
        "download_url": "/api/v1/archive/scans?format=zip",
        "file_name": "scans.zip",
        "nodes": 3,
        "files": 2,
        "size": 12_345,
    }
    return DownloadPage(**{**fields, **changes})


hostile = st.text(min_size=1, max_size=40)


@given(
    segments=st.lists(hostile, min_size=1, max_size=3),
    metadata=st.dictionaries(hostile, st.one_of(hostile, st.integers(), st.lists(hostile))),
    filter_value=hostile,
    link=hostile,
    error=st.none() | hostile,
)
def test_catalog_text_is_text_and_only_the_pages_markup_is_markup(
    segments, metadata, filter_value, link, error
):
    html = render(
        page(
            segments=segments,
            breadcrumbs=[PageLink(segment, link) for segment in segments],
            metadata=metadata,
            filters=[("eq", "value", filter_value)],
            file_name=f"{segments[-1]}.zip",
            download_url=link,
            error=error,
        )
    )
    parsed = Parsed()
    parsed.feed(html)
    assert parsed.elements <= ELEMENTS
    assert parsed.attributes <= ATTRIBUTES
    shown = "".join(parsed.text)
    assert clip("/".join(segments)) in shown  # control and bidi characters as escapes
    assert clip(filter_value) in shown
    # Every link is one the caller built, as it was given (escaped in the markup only).
    assert set(parsed.hrefs) <= {link, "/ui/browse/scans"}


def test_the_page_names_the_exact_size_and_the_download():
    parsed = Parsed()
    parsed.feed(render(page()))
    shown = "".join(parsed.text)
    assert "12,345 bytes, exact" in shown and "12.3 kB" in shown
    assert "Download" in shown and "/api/v1/archive/scans?format=zip" in parsed.hrefs


def test_a_node_that_cannot_be_archived_says_why_and_offers_no_button():
    parsed = Parsed()
    parsed.feed(render(page(error="TA-E503 data/x: not archived raw", nodes=None, size=None)))
    shown = "".join(parsed.text)
    assert "TA-E503 data/x: not archived raw" in shown and "Download" not in shown


def test_a_browser_gets_the_page_and_format_zip_the_archive():
    browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    assert wants_page(browser, {})
    assert not wants_page(browser, {"format": "zip"})
    assert not wants_page("*/*", {}) and not wants_page(None, {})
    assert wants_page("*/*", {"format": "html"})


def test_a_name_reads_as_what_it_is_and_nothing_is_unbounded():
    """A right-to-left override in a key cannot make it display as another name; a metadata
    key of any length is cut as values are."""
    html = render(page(segments=["scan\u202egpj.exe"], metadata={"k" * 5000: "v"}))
    parsed = Parsed()
    parsed.feed(html)
    shown = "".join(parsed.text)
    assert "\u202e" not in shown and "scan\\u202egpj.exe" in shown
    assert "k" * 200 not in html and len(html) < 5000
