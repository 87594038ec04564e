FROM python:3.11-slim
WORKDIR /app
# The CPU wheel first, so nothing pulls the CUDA build.
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
COPY arena arena
COPY evaluators evaluators
COPY service service
RUN pip install --no-cache-dir .
ENV ARENA_DATA_DIR=/data OMP_NUM_THREADS=1
EXPOSE 8000
CMD ["arena", "serve", "--host", "0.0.0.0"]
