"""What the supervisor runs for operators: the runtime-dir locator files, the Prometheus endpoint
(when `prometheus_listen` is set) and the SIGUSR1 summary in the log.  Failures are logged, never fatal.
"""
from __future__ import annotations

import logging
import os
from typing import Optional

from ..config.tree import CoreConfig
from . import locate
from .stats_model import load_model
from .summary import summary_lines

PROMETHEUS_ADDR_FILE = "prometheus.addr"


class OpsServices:
    def __init__(self, core: CoreConfig, runtime_dir: str, log: logging.Logger) -> None:
        self.core = core
        self.runtime_dir = runtime_dir
        self.log = log
        self.prometheus = None

    def model(self) -> dict:
        return load_model(self.runtime_dir)

    def start(self) -> "OpsServices":
        try:
            locate.publish(self.runtime_dir, self.core.pidfile)
        except OSError as e:
            self.log.error("cannot write the files `pmengine stats` finds the engine by: %s", e)
        listen = self.core.prometheus_listen
        if listen is not None:
            from .prometheus import PrometheusServer
            try:
                self.prometheus = PrometheusServer(listen.host, listen.port, self.model, self.log).start()
            except OSError as e:
                self.log.error("prometheus endpoint on %s not started: %s", listen, e)
                return self
            with open(os.path.join(self.runtime_dir, PROMETHEUS_ADDR_FILE), "w") as f:
                f.write(self.prometheus.url + "\n")
            self.log.info("prometheus endpoint: %s", self.prometheus.url)
        return self

    def log_summary(self, log: Optional[logging.Logger] = None) -> None:
        """SIGUSR1: the merged counters, one key=value line per total, shard, ring, plugin, exporter."""
        log = log or self.log
        try:
            for line in summary_lines(self.model()):
                log.info("%s", line)
        except Exception as e:               # diagnostics must never take the supervisor down
            log.error("stats summary failed: %s", e)

    def stop(self) -> None:
        if self.prometheus is not None:
            try:
                self.prometheus.stop()
            except Exception as e:
                self.log.error("prometheus endpoint stop: %s", e)
            self.prometheus = None
        locate.unpublish(self.runtime_dir, self.core.pidfile)
