# The calibstream image: the worker, the dashboard and the batch commands.
FROM python:3.11-slim
# A user of its own (never root); /data, the outputs' volume, is its.
RUN useradd --create-home --uid 10001 --user-group calibstream \
    && mkdir -p /data && chown calibstream:calibstream /data
WORKDIR /app
COPY pyproject.toml README.md requirements.lock ./
COPY calibstream ./calibstream
COPY streams ./streams
COPY agents ./agents
COPY harness ./harness
COPY schemas ./schemas
# editable: the schemas/ folder stays beside the packages that read it; every dependency at
# the version of requirements.lock
RUN pip install --no-cache-dir -c requirements.lock -e .
USER calibstream
ENTRYPOINT ["calibstream"]
