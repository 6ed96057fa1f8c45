"""The library default's row in a protocol results file, composed from the rows it is made of.

Since `hidden_loss="auto"` the default runs `sage_hidden_x12`'s settings on a classification task and `sage`'s on a
regression one (STS-B): the same computations, so its cells are those rows' cells, relabelled, and no cell is run
twice. Prints its 5-task average and paired differences (t over seeds; paired bootstrap over dev examples):

    python benchmarks/default_row.py benchmarks/results/protocol-2026-12-07.json --against kd textbrewer_hidden
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import protocol  # noqa: E402

DEFAULT_ROWS = {"sst2": "sage_hidden_x12", "cola": "sage_hidden_x12", "mrpc": "sage_hidden_x12",
                "rte": "sage_hidden_x12", "stsb": "sage"}
NAME = "default"


def with_default_row(report: dict, rows: dict[str, str] = DEFAULT_ROWS) -> dict:
    """A copy of `report` with the cells of `rows[task]` added again under the system name "default"."""
    out = copy.deepcopy(report)
    out["cells"] += [{**copy.deepcopy(c), "system": NAME} for c in report["cells"]
                     if rows.get(c["task"]) == c["system"]]
    return out


def describe(report: dict, against: str) -> str:
    row = protocol.summarise(with_default_row(report), baseline=against)["systems"][NAME]
    avg = row["average"]

    def interval(v):
        return "n/a" if v is None or v[0] is None else f"{100 * v[0]:+.2f} [{100 * v[1]:+.2f}, {100 * v[2]:+.2f}]"

    tasks = ", ".join(f"{task} {interval(entry['t'])}" for task, entry in row["tasks"].items())
    mean = "n/a" if avg["mean"] is None else f"{100 * avg['mean']:.2f}"
    return (f"default minus {against}: 5-task average {mean} over {avg['seeds']} seeds, difference t "
            f"{interval(avg['t'])}, bootstrap {interval(avg['boot'])}; per task (t): {tasks}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", help="a protocol results JSON file")
    p.add_argument("--against", nargs="+", default=[protocol.BASELINE], help="systems to pair the default with")
    args = p.parse_args(argv)
    report = json.loads(Path(args.results).read_text())
    for against in args.against:
        print(describe(report, against))


if __name__ == "__main__":
    main()
