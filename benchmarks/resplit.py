"""A 7-Scenes dataset with other train/test sequences, made of symbolic links (nothing is copied).

Validating on more than one split: redkitchen's dev split trains on seq-01 + seq-03 and tests on
seq-02 (the middle of the recording); the second split trains on seq-01 + seq-02 and tests on
seq-03 (its end, the views furthest from the mapping ones).

Usage:
    python benchmarks/resplit.py ../shared/data/7scenes-redkitchen SPLIT2 --train 1 2 --test 3
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from sceneloc.data.dataset import INTRINSICS_FILES


def resplit(root: Path, out: Path, train: list[int], test: list[int]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    for n in sorted(set(train) | set(test)):
        src = (root / f"seq-{n:02d}").resolve()
        if not src.is_dir():
            raise SystemExit(f"{src}: no such sequence folder")
        link = out / src.name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(src)
    for name, seqs in (("TrainSplit.txt", train), ("TestSplit.txt", test)):
        (out / name).write_text("".join(f"sequence{n}\n" for n in seqs))
    for name in INTRINSICS_FILES:   # the depth and the colour camera
        if (root / name).exists():
            shutil.copyfile(root / name, out / name)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root")
    ap.add_argument("out")
    ap.add_argument("--train", type=int, nargs="+", required=True)
    ap.add_argument("--test", type=int, nargs="+", required=True)
    a = ap.parse_args()
    print(resplit(Path(a.root), Path(a.out), a.train, a.test))


if __name__ == "__main__":
    main()
