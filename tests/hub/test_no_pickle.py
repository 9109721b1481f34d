"""No code path in salign can unpickle: a grep over the package, kept strict on purpose."""

from __future__ import annotations

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "salign_cli"
FORBIDDEN = {
    "pickle-based module import": re.compile(r"^\s*(import|from)\s+(c?pickle|dill|joblib)\b", re.M),
    "torch.save (writes a pickle)": re.compile(r"\btorch\.save\("),
    "numpy allow_pickle=True": re.compile(r"allow_pickle\s*=\s*True"),
}
TORCH_LOAD = re.compile(r"\btorch\.load\((?P<args>[^)]*)\)", re.S)


def test_no_pickle_anywhere_in_the_package() -> None:
    offences = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        for what, pattern in FORBIDDEN.items():
            offences += [f"{path}: {what}" for _ in pattern.finditer(text)]
        for call in TORCH_LOAD.finditer(text):
            if "weights_only=True" not in call.group("args"):
                offences.append(f"{path}: torch.load without weights_only=True")
    assert offences == []
