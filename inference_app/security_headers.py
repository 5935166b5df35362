"""Headers every response carries: a strict CSP, no framing, no content sniffing.

The dashboard loads its scripts and styles from /static only (no inline code, no eval), so
`script-src 'self'` costs nothing. A route that sets its own policy keeps it: the infer route
sends a sandboxing CSP for the model's answer (inference_app/api/models_routes.py).
"""

from __future__ import annotations

from flask import Flask, Response

PAGE_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
HEADERS = {
    "Content-Security-Policy": PAGE_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def init_app(app: Flask) -> None:
    @app.after_request
    def secure_headers(response: Response) -> Response:
        # one pass over the headers, not one (case-insensitive) scan per header to add
        present = {name.lower() for name in response.headers.keys()}
        for name, value in HEADERS.items():
            if name.lower() not in present:
                response.headers.add(name, value)
        return response
