"""The image's HEALTHCHECK: the web role answers /healthz; the worker role is healthy while it runs."""

import os
import sys
import urllib.request


def main() -> int:
    with open("/proc/1/cmdline", "rb") as handle:
        pid1 = handle.read().split(b"\0")
    if b"gunicorn" not in pid1:
        return 0  # the worker role (or a one-off command): alive is all there is to check
    url = f"http://127.0.0.1:{os.environ.get('PORT', '8002')}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=4) as response:
            return 0 if response.status == 200 else 1
    except OSError as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
