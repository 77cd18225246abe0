"""Bicep syntax check: parse every `.bicep` file under the given folders with pycep (the parser checkov uses).

checkov reports a file it cannot parse as a "parsing error" and still exits 0, so a typo would silently skip the
security checks of that file; this check fails instead, naming the file and the position. Run in the checkov
virtual environment (`make iac`), where pycep is installed.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pycep import BicepParser


def main(folders: list[str]) -> int:
    files = sorted(path for folder in folders for path in Path(folder).rglob("*.bicep"))
    if not files:
        print(f"no .bicep files under {', '.join(folders)}", file=sys.stderr)
        return 1
    failed = 0
    for path in files:
        try:
            parsed = BicepParser().parse(file_path=path)
        except Exception as exc:  # pycep raises lark's exceptions, each naming the line and column
            failed += 1
            print(f"{path}: {type(exc).__name__}: {exc}", file=sys.stderr)
            continue
        print(f"{path}: {len(parsed.get('resources', {}))} resources, {len(parsed.get('modules', {}))} modules")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:] or ["infra"]))
