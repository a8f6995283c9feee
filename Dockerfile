# The lipdub app image: the `lipdub` command (worker, beat, run, sandbox) and Flower.
#   docker build -t lipdub .        (docker-compose.yml builds it as lipdub:latest)
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# PyAV and NumPy ship manylinux wheels with their own FFmpeg: no system packages needed.
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
COPY workers ./workers
COPY configs ./configs
RUN pip install -c configs/constraints.txt ".[ops]" \
    && useradd --create-home --uid 10001 lipdub \
    && mkdir -p /catalog /home/lipdub/.cache/lipdub \
    && chown -R lipdub /app /catalog /home/lipdub/.cache/lipdub

USER lipdub
ENTRYPOINT ["lipdub"]
CMD ["--help"]
