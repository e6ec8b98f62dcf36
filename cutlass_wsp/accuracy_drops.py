"""Measured accuracy drops a user gives per (layer, pattern, ratio, balance): they override the proxies.

A CSV file with a header row:

    layer,pattern,ratio,balance,drop
    conv4_2,wsp-r,0.7,balanced,0.42
    conv4_2,wsp-r,0.7,unbalanced,0.18

layer    the layer's name, full ('vgg16.conv4_2') or short ('conv4_2')
pattern  wsp-r or wsp-c (wsp-c-fused is WSP-C's pruning: it is read as wsp-c); other patterns are accepted
         and not used by abwsp
ratio    0.7 or 70%
balance  balanced or unbalanced (required for wsp-r and wsp-c; empty for patterns without one)
drop     top-1 accuracy drop in percentage points against the unpruned model (0.42 = 0.42 points lower;
         negative: the pruned model scored higher)
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

from cutlass_wsp.errors import InputError
from cutlass_wsp.layers import Layer

COLUMNS = ("layer", "pattern", "ratio", "balance", "drop")
SAME_PRUNING = {"wsp-c-fused": "wsp-c"}
WITH_BALANCE = ("wsp-r", "wsp-c")


def _rid(r: float) -> float:
    return round(float(r), 9)


class AccuracyDrops:
    """drop[(layer name, pattern, ratio, balance)] from a CSV file, checked against the network's layers."""

    def __init__(self, path: str | Path, layers: Sequence[Layer]):
        from cutlass_wsp.commands.values import parse_ratio

        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"accuracy file {str(self.path)!r} not found", f"pass a CSV file with columns {', '.join(COLUMNS)}")
        try:
            text = self.path.read_bytes().decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise InputError(f"{self.path}: not a text file (byte {e.start} is not UTF-8)",
                             "save the accuracy drops as UTF-8 CSV") from None
        reader = csv.DictReader(text.splitlines())
        fields = [f.strip() for f in (reader.fieldnames or [])]
        absent = [c for c in COLUMNS if c not in fields]
        if absent:
            raise InputError(f"{self.path}: no column {absent[0]!r} in the header ({', '.join(fields) or 'empty'})",
                             f"write a header row: {','.join(COLUMNS)}")
        by_name = {}
        for x in layers:
            by_name[x.name] = x.name
            by_name.setdefault(x.name.removeprefix(f"{x.net}."), x.name)
        self.drops: dict[tuple, float] = {}
        for raw in reader:
            row = {(k or "").strip(): (v or "").strip() for k, v in raw.items() if k is not None}
            where = f"{self.path}: row {reader.line_num - 1}"
            name = by_name.get(row["layer"])
            if name is None:
                short = [x.name.removeprefix(f"{x.net}.") for x in layers]
                raise InputError(f"{where}: no layer {row['layer']!r} in this network",
                                 f"use one of {', '.join(short[:5])}{', ...' if len(short) > 5 else ''}")
            pattern = SAME_PRUNING.get(row["pattern"].lower(), row["pattern"].lower())
            if not pattern:
                raise InputError(f"{where}: the pattern is empty", "write wsp-r or wsp-c")
            ratio = parse_ratio(row["ratio"], f"{where}: ratio")
            balance = row["balance"].lower() or None
            if pattern in WITH_BALANCE and balance not in ("balanced", "unbalanced"):
                raise InputError(f"{where}: balance {row['balance']!r} for {pattern}", "write balanced or unbalanced")
            try:
                drop = float(row["drop"])
            except ValueError:
                drop = math.nan
            if not math.isfinite(drop):
                raise InputError(f"{where}: drop {row['drop']!r} is not a number",
                                 "write the top-1 drop in percentage points, e.g. 0.42")
            key = (name, pattern, _rid(ratio), balance)
            if key in self.drops:
                raise InputError(f"{where}: a second drop for {name} {pattern} {ratio:g} {balance or ''}".rstrip(),
                                 "keep one row per layer, pattern, ratio and balance")
            self.drops[key] = drop

    def get(self, layer: Layer, pattern: str, ratio: float, balance: str | None) -> float | None:
        return self.drops.get((layer.name, SAME_PRUNING.get(pattern, pattern), _rid(ratio), balance))
