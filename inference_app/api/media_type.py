"""Which bodies an API write accepts: JSON, so a web page on another site cannot forge one.

A page can send a cross-site POST without asking first (no CORS preflight) only with the
"simple" content types (text/plain, application/x-www-form-urlencoded, multipart/form-data) or
none. Every such request from a browser carries an Origin header. So a write needs
`Content-Type: application/json`, except:
- a request without a Content-Type and without an Origin header (curl -X POST .../stop, scripts:
  not a browser) is taken as it is;
- infer forwards bodies of any type to the model: any non-simple type is accepted, and a
  simple one only with an `X-Requested-With` header (which a page cannot add without a preflight).
The API answers no preflight, so a page on another origin can never get past this check.
"""

from __future__ import annotations

from flask import request
from werkzeug.exceptions import UnsupportedMediaType

WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
SIMPLE_TYPES = {"text/plain", "application/x-www-form-urlencoded", "multipart/form-data"}
FORWARDING_ENDPOINTS = {"api.infer"}
CUSTOM_HEADER = "X-Requested-With"


def is_json(mimetype: str) -> bool:
    return mimetype == "application/json" or (mimetype.startswith("application/") and mimetype.endswith("+json"))


def require_json_writes() -> None:
    """before_request of the API: 415 for a write whose body type a cross-site page could send."""
    if request.method not in WRITE_METHODS:
        return
    mimetype = request.mimetype  # lower-cased, without parameters
    if is_json(mimetype):
        return
    if not mimetype and "Origin" not in request.headers:
        return  # not from a browser: browsers send Origin with every write
    if request.endpoint in FORWARDING_ENDPOINTS:
        if mimetype and mimetype not in SIMPLE_TYPES:
            return
        if CUSTOM_HEADER in request.headers:
            return
        raise UnsupportedMediaType(
            f"infer does not accept Content-Type {mimetype or '(none)'!r} from a web page: send the model's own "
            f"content type (e.g. application/json), or add an {CUSTOM_HEADER} header for text/plain or form bodies"
        )
    got = (request.content_type or "(none)")[:100]
    raise UnsupportedMediaType(f"API writes need 'Content-Type: application/json', got {got!r}")
