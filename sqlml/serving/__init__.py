"""`sqlml serve`: an online server speaking TensorFlow Serving's REST API (docs/serving.md).

One concern per module: `rest` (TF Serving's JSON request/response formats and errors),
`models` (the model pool: load once, routing, hot swap), `config` (the traffic config file and
the server limits), `requestlog` (sampled request logging into sqlml.prediction_log) and
`server` (the HTTP server and `run_server`).
"""

from __future__ import annotations

from sqlml.serving.config import Limits
from sqlml.serving.server import Server, run_server

__all__ = ["Limits", "Server", "run_server"]
