# One image for web, worker, beat and the one-shot migrate step.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

RUN useradd --create-home --uid 1000 kseg

COPY pyproject.toml README.md ./
COPY shared ./shared
COPY web ./web
COPY worker ./worker
COPY migrations ./migrations
RUN pip install . && mkdir -p /app/instance && chown kseg:kseg /app/instance

USER kseg
ENV KSEG_INSTANCE_DIR=/app/instance \
    KSEG_HOST=0.0.0.0 \
    KSEG_PORT=8000

EXPOSE 8000
CMD ["kseg", "web"]
