"""Request bodies read as JSON, strictly: every way a body can be malformed is a 400 in the error
shape, never a 500 (the DRF views' parser and the async views' ``parse_json`` both read here).

Too deep for Python's parser, not UTF-8, or holding a lone surrogate (valid JSON, ``"\\ud83d"``,
but no text: the tokenizer and PostgreSQL both refuse it) are the client's errors. A body over
``DATA_UPLOAD_MAX_MEMORY_SIZE`` is a 413 (``errors.error_answer``).
"""

import json

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from rest_framework.parsers import BaseParser

from .errors import InvalidRequestError


def json_loads(raw: bytes) -> object:
    try:
        data = json.loads(raw or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InvalidRequestError(
            "We could not parse the JSON body of your request.", code="invalid_json"
        ) from None
    except RecursionError:
        raise InvalidRequestError(
            "The JSON body of your request is nested too deeply.", code="invalid_json"
        ) from None
    except ValueError:  # an integer of more digits than Python converts (sys.int_info)
        raise InvalidRequestError(
            "The JSON body of your request has a number too long to read.", code="invalid_json"
        ) from None
    try:
        # One pass over every string: a lone surrogate cannot be encoded.
        json.dumps(data, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise InvalidRequestError(
            "The request holds a string that is not valid Unicode (a lone surrogate such as "
            "\\ud83d); send whole characters."
        ) from None
    return data


class StrictJSONParser(BaseParser):
    """DRF's JSON parser, through :func:`json_loads`."""

    media_type = "application/json"

    def parse(self, stream, media_type=None, parser_context=None):
        if stream is None:
            return json_loads(b"")
        # DRF may hand over the request's own stream, which Django's size check never sees.
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        raw = stream.read() if limit is None else stream.read(limit + 1)
        if limit is not None and len(raw) > limit:
            raise RequestDataTooBig("Request body exceeded settings.DATA_UPLOAD_MAX_MEMORY_SIZE.")
        return json_loads(raw)
