"""The captioner's defaults, in one place: CaptionerSettings (factory.py) takes its defaults from here,
and so do the engines factory builds (llama_server, http_backend), which cannot import factory
(it imports them). The CLI and the QGIS settings read them through DEFAULT_CAPTIONER."""

ENGINE = "llama-cpp-python"   # in process; "server": a llama-server TileScribe starts (factory.ENGINES)
SLOTS = 4                     # llama-server sequences decoded together
PARALLEL_REQUESTS = 4         # server requests in flight, per server
TIMEOUT_S = 120.0             # how long a server may answer nothing before a retry
