# One image for the three services (compose.yaml picks the service with the command).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md LICENSE ./
COPY shared ./shared
COPY services ./services
# With psycopg: the services keep their state in PostgreSQL when EB_DATABASE_URL names one.
RUN pip install --no-cache-dir ".[postgres]"
ENV EB_DATA_DIR=/data
VOLUME /data
ENTRYPOINT ["broker"]
