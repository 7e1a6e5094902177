# One image for every process; the command picks the process (default: web, as in the Procfile).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PORT=8000

WORKDIR /app
RUN useradd --create-home --uid 10001 --user-group erp

# Dependencies first, in their own layer: a code change does not reinstall them.
COPY requirements/ requirements/
RUN pip install -r requirements/base.txt

# The code stays owned by root: the app can read it but not change it.
COPY . .
USER erp

EXPOSE 8000
# curl is not in the slim image; python's urllib fails on anything but a 2xx answer.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health/live' % os.environ.get('PORT', '8000'), timeout=4)"
CMD ["honcho", "start", "web"]
