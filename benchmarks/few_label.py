"""The few-label benchmark as a script: the same options and code as `salign bench few-label`.

python benchmarks/few_label.py ../shared/data/hippocampus --quick
"""

from __future__ import annotations

import sys

from salign_cli.cli.app import app

if __name__ == "__main__":
    app(["bench", "few-label", *sys.argv[1:]], prog_name="few_label.py")
