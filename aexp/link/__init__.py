"""The instrument link: the ZeroMQ message codec (:mod:`.wire`) and the server that exposes any
instrument over it (:mod:`.serve`). Clients live in ``drivers/``."""
