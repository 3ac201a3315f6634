"""Benchmark suites: figures as ratios against a baseline measured in the same run.

Each suite returns rows of (measure, value, unit, note); `jobs/benchmark.py` prints them as a
Markdown table with the machine's description. One module per suite; `common` holds what they share.
"""

from medeid.benchmark.archive import suite_anonymize
from medeid.benchmark.common import machine, markdown, report
from medeid.benchmark.deid import suite_deid
from medeid.benchmark.index import suite_index
from medeid.benchmark.mema import suite_mema, suite_multinode
from medeid.benchmark.realfaces import suite_realfaces
from medeid.benchmark.serve import suite_serve

SUITES = {"index": suite_index, "mema": suite_mema, "deid": suite_deid, "anonymize": suite_anonymize,
          "serve": suite_serve, "multinode": suite_multinode, "realfaces": suite_realfaces}

__all__ = ["SUITES", "machine", "markdown", "report"]
