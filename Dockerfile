# The inference service: one image for both roles (`web`: gunicorn, the default; `worker`: the
# background role). See README "Deployment".
#
# Two ways to build it, one Dockerfile:
#  - With a registry and PyPI (a normal machine, `docker compose build`): BASE_IMAGE is the official
#    slim image and the deps stage pip-installs requirements.txt.
#  - Without them (the project's test machines): scripts/build-service-image.sh pip-installs the
#    wheels on the host into a cached folder, puts it in the build context as prepared/site-packages
#    and builds FROM the locally made inference-base/python:3.11-bookworm (no pip inside).
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS deps
# `prepare[d]` matches nothing in a plain checkout: then only requirements.txt is copied
COPY requirements.txt prepare[d] /opt/deps/
RUN set -eu; \
    if [ ! -d /opt/deps/site-packages ]; then \
        python3 -m pip install --no-cache-dir --disable-pip-version-check --no-compile \
            --target /opt/deps/site-packages -r /opt/deps/requirements.txt; \
    fi; \
    rm -rf /opt/deps/site-packages/bin; \
    python3 -m compileall -q -j 0 --invalidation-mode unchecked-hash /opt/deps/site-packages >/dev/null

FROM ${BASE_IMAGE}
ENV PYTHONPATH=/opt/site-packages \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    FLASK_APP=wsgi \
    BIND_HOST=0.0.0.0 \
    PORT=8002
# uid/gid 10001 without useradd (the minimal base has no passwd tools); the instance folder is
# the only place the service writes (a random SECRET_KEY when none is given, the SQLite file).
RUN set -eu; \
    echo 'inference:x:10001:10001:inference service:/app:/usr/sbin/nologin' >>/etc/passwd; \
    echo 'inference:x:10001:' >>/etc/group; \
    printf '#!/bin/sh\nexec python3 -m gunicorn "$@"\n' >/usr/local/bin/gunicorn; \
    printf '#!/bin/sh\nexec python3 -m flask "$@"\n' >/usr/local/bin/flask; \
    chmod 755 /usr/local/bin/gunicorn /usr/local/bin/flask; \
    mkdir -p /app/instance; \
    chown 10001:10001 /app/instance
COPY --from=deps /opt/deps/site-packages/ /opt/site-packages/
WORKDIR /app
COPY wsgi.py gunicorn.conf.py /app/
COPY migrations/ /app/migrations/
COPY templates/ /app/templates/
COPY static/ /app/static/
COPY inference_app/ /app/inference_app/
COPY docker/entrypoint.sh docker/healthcheck.py /app/docker/
RUN python3 -m compileall -q --invalidation-mode unchecked-hash /app >/dev/null
USER 10001:10001
EXPOSE 8002
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 CMD ["python3", "/app/docker/healthcheck.py"]
ENTRYPOINT ["/app/docker/entrypoint.sh"]
CMD ["web"]
