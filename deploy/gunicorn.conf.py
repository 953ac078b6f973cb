"""Production gunicorn settings: `gunicorn -c deploy/gunicorn.conf.py careid.wsgi`.

Threaded workers: a long download (a million-row audit export streams for about a minute) keeps its
worker alive, since the worker's heartbeat runs beside the request instead of behind it.
"""

import multiprocessing
import os

bind = os.environ.get("CAREID_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("CAREID_WORKERS", multiprocessing.cpu_count() * 2))
worker_class = "gthread"
threads = int(os.environ.get("CAREID_THREADS", 4))
timeout = 60
graceful_timeout = 30
keepalive = 5
# The TLS proxy's address, whose X-Forwarded-Proto gunicorn may trust (CAREID_TRUSTED_PROXY_COUNT for the client IP).
forwarded_allow_ips = os.environ.get("CAREID_PROXY_IPS", "127.0.0.1")
accesslog = "-"
