"""Print pip constraints that pin this environment's torch stack as installed.

``python -m beyond_imagenet.keep_torch > keep-torch.txt`` then ``pip install -c keep-torch.txt .``
installs the project into an existing environment (a site module, an NGC container) without
replacing its torch: a torchvision from PyPI pins one exact torch, so without the constraint pip
would pick the newest torchvision and swap torch for the one it pins (tests/test_install.py shows
both). Standard library only: it runs from the checkout before the project is installed.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata

# torch and what is built against one exact torch (or ships its CUDA libraries).
STACK = re.compile(r"^(torch|torchvision|torchaudio|torchtext|triton|pytorch-triton(-.*)?|nvidia-.*)$")


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def constraints() -> list[str]:
    found = {}
    for dist in metadata.distributions():
        name = _normalise(dist.metadata["Name"] or "")
        if STACK.match(name):
            found[name] = f"{name}=={dist.version}"
    return [found[name] for name in sorted(found)]


def main() -> int:
    lines = constraints()
    if not any(line.startswith("torch==") for line in lines):
        print(f"no torch is installed in this environment (python: {sys.executable}); nothing to keep",
              file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
