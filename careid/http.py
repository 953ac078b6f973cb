from django.http import HttpRequest, QueryDict


def posted(request: HttpRequest) -> QueryDict | None:
    """The form data of a POST, even an empty one (`request.POST or None` loses those)."""
    return request.POST if request.method == "POST" else None
