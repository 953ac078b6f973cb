"""What a browser would post from a page's form: its fields' names and values as the page rendered them."""

from __future__ import annotations

from html.parser import HTMLParser


class _FormFields(HTMLParser):
    def __init__(self, form_id: str) -> None:
        super().__init__(convert_charrefs=True)
        self.form_id, self.inside, self.fields = form_id, False, []
        self._textarea: str | None = None
        self._select: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        if tag == "form":
            self.inside = attributes.get("id") == self.form_id
        if not self.inside or "disabled" in attributes:
            return
        name = attributes.get("name")
        if tag == "input" and name and attributes.get("type") not in {"submit", "button", "image", "file"}:
            if attributes.get("type") not in {"checkbox", "radio"} or "checked" in attributes:
                self.fields.append((name, attributes.get("value", "on" if attributes.get("type") == "checkbox" else "")))
        elif tag == "textarea" and name:
            self._textarea = name
            self.fields.append((name, ""))
        elif tag == "select" and name:
            self._select = name
        elif tag == "option" and self._select and "selected" in attributes:
            self.fields.append((self._select, attributes.get("value", "")))

    def handle_data(self, data: str) -> None:
        if self._textarea is not None:
            name, value = self.fields.pop()
            self.fields.append((name, value + data))

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self.inside = False
        elif tag == "textarea":
            self._textarea = None
        elif tag == "select":
            self._select = None


def form_fields(page: str, form_id: str) -> dict[str, str | list[str]]:
    """The fields of the form with id `form_id` as a browser would submit them unchanged (a name given more than
    once, as checkboxes are, maps to the list of its values)."""
    parser = _FormFields(form_id)
    parser.feed(page)
    posted: dict[str, str | list[str]] = {}
    for name, value in parser.fields:
        if name in posted:
            earlier = posted[name]
            posted[name] = [*earlier, value] if isinstance(earlier, list) else [earlier, value]
        else:
            posted[name] = value
    return posted
