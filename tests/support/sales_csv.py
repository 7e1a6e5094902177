"""Sales-order CSV files for tests and benchmarks: deterministic rows, bad rows where asked,
and the figures a correct import must produce, computed here in plain Python."""

from __future__ import annotations

import csv
import io
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

HEADER = ["order_number", "order_date", "customer", "currency", "product", "quantity", "unit_price"]
CURRENCIES = ("EUR", "USD", "GBP")


def good_rows(count: int, *, seed: int = 7, prefix: str = "SO") -> Iterator[list[str]]:
    """`count` valid rows: orders of 1 to 3 lines, dates in 2026, three currencies."""
    rng = random.Random(seed)
    written = 0
    order = 0
    while written < count:
        order += 1
        lines = min(rng.randint(1, 3), count - written)
        day = date(2026, 1, 1) + timedelta(days=rng.randrange(365))
        customer = f"Customer {rng.randrange(50):02d}"
        currency = rng.choice(CURRENCIES)
        for _ in range(lines):
            yield [
                f"{prefix}-{order:07d}",
                day.isoformat(),
                customer,
                currency,
                f"Product {rng.randrange(200)}",
                str(rng.randint(1, 20)),
                f"{rng.randint(100, 100_000) / 100:.2f}",
            ]
            written += 1


def insert_between_orders(rows: list[list[str]], bad: list[list[str]], near: list[int]) -> list[int]:
    """Insert each bad row at the first order boundary at or after the matching position in
    `near`; returns their line numbers in the file (line 1 is the header)."""
    lines = []
    for row, position in sorted(zip(bad, near, strict=True), key=lambda pair: pair[1]):
        while 0 < position < len(rows) and rows[position - 1][0] == rows[position][0]:
            position += 1
        rows.insert(position, row)
        lines.append(position + 2)
    return lines


def csv_bytes(rows: Iterable[list[str]], *, bom: bool = False) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(HEADER)
    writer.writerows(rows)
    return (b"\xef\xbb\xbf" if bom else b"") + buffer.getvalue().encode()


@dataclass(frozen=True)
class Expected:
    orders: int
    lines: int
    amount_by_currency: dict[str, Decimal]


def expected(rows: Iterable[list[str]]) -> Expected:
    orders = set()
    lines = 0
    amounts: dict[str, Decimal] = {}
    for number, _, _, currency, _, quantity, price in rows:
        orders.add(number)
        lines += 1
        amounts[currency] = amounts.get(currency, Decimal(0)) + int(quantity) * Decimal(price)
    return Expected(len(orders), lines, amounts)
