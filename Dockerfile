# The calibstream image: the worker, the dashboard and the batch commands.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY calibstream ./calibstream
COPY streams ./streams
COPY agents ./agents
COPY harness ./harness
COPY schemas ./schemas
# editable: the schemas/ folder stays beside the packages that read it
RUN pip install --no-cache-dir -e .
ENTRYPOINT ["calibstream"]
