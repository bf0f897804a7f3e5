# The calibstream image: the worker, the dashboard and the batch commands.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY calibstream ./calibstream
COPY streams ./streams
COPY agents ./agents
COPY schemas ./schemas
RUN pip install --no-cache-dir .
ENTRYPOINT ["calibstream"]
