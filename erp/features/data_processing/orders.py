"""Grouping a sales-order CSV's rows into orders (pure logic, the last step of reading it).

Consecutive rows with the same `order_number` are one order, imported whole or not at all: one
bad row rejects the rows of its order, and the rows must agree on date, customer and currency.
Outcomes come out in batches that cover whole lines, so an import committed batch by batch
resumes after the last one without losing or repeating a row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from itertools import islice

from erp.features.data_processing.parsing import (
    Record,
    RowProblem,
    SalesRow,
    column_picker,
    decimal_text,
    order_number_of,
    parse_row,
)

# An order with more lines than this is refused (it would be held in memory whole).
MAX_ORDER_LINES = 1000
# sales_orders.amount is NUMERIC(14, 2).
MAX_ORDER_AMOUNT = Decimal("999999999999.99")
MAX_ORDER_AMOUNT_CENTS = 99_999_999_999_999


@dataclass(slots=True)
class OrderLine:
    position: int
    product: str
    quantity: int
    unit_price: str  # as in SalesRow


@dataclass(slots=True)
class Order:
    order_number: str
    order_date: str  # as in SalesRow
    customer: str
    currency: str
    amount: str  # the sum of its lines, exact, with two decimals ("7.60")
    # Its rows in file order, line `i` of the order being rows[i - 1]: the rows themselves, not
    # a line object made per row, since an import makes one order per one to three rows.
    rows: list[SalesRow]

    @property
    def lines(self) -> list[OrderLine]:
        return [OrderLine(i, row.product, row.quantity, row.unit_price) for i, row in enumerate(self.rows, start=1)]

    @property
    def row_lines(self) -> list[int]:
        """The file line of each of its rows."""
        return [row.line for row in self.rows]


@dataclass(slots=True)
class RowFailure:
    line: int
    reason: str


@dataclass(slots=True)
class _PendingOrder:
    order_number: str
    rows: list[SalesRow] = field(default_factory=list)
    problems: list[RowFailure] = field(default_factory=list)
    # Failed rows belonging to no order, read while this order was open: reported after it.
    held: list[RowFailure] = field(default_factory=list)


@dataclass(slots=True)
class Batch:
    """Outcomes of every record up to `through_line` (and of none after it)."""

    orders: list[Order] = field(default_factory=list)
    failures: list[RowFailure] = field(default_factory=list)
    through_line: int = 0
    rows: int = 0  # data rows these outcomes account for


def _difference(first: SalesRow, row: SalesRow) -> str | None:
    """The first of the columns an order's rows must agree on in which `row` differs from `first`."""
    if row.order_date != first.order_date:
        return "order_date"
    if row.customer != first.customer:
        return "customer"
    if row.currency != first.currency:
        return "currency"
    return None


def _close(pending: _PendingOrder) -> tuple[Order | None, list[RowFailure]]:
    """An order from its rows, or the failures of all of them (an order is imported whole)."""
    rows = pending.rows
    problems = pending.problems  # the order is closed: its list of problems is this call's to extend
    amount_cents = 0
    if not problems:
        first = rows[0]
        amount_cents = first.quantity * first.unit_price_cents
        for row in islice(rows, 1, None):
            if (name := _difference(first, row)) is not None:
                problems.append(
                    RowFailure(
                        row.line, f"{name} differs from line {first.line} of the same order {first.order_number!r}"
                    )
                )
            amount_cents += row.quantity * row.unit_price_cents
        if len(rows) > MAX_ORDER_LINES:
            problems.append(RowFailure(rows[MAX_ORDER_LINES].line, f"the order has more than {MAX_ORDER_LINES} lines"))
    if not problems and amount_cents > MAX_ORDER_AMOUNT_CENTS:
        problems.append(
            RowFailure(rows[0].line, f"the order's total {decimal_text(amount_cents)} exceeds {MAX_ORDER_AMOUNT}")
        )
    if not problems:
        first = rows[0]
        order = Order(
            first.order_number, first.order_date, first.customer, first.currency, decimal_text(amount_cents), rows
        )
        held = pending.held
        return order, sorted(held, key=_by_line) if len(held) > 1 else held
    failed_lines = {problem.line for problem in problems}
    first_bad = min(failed_lines)
    failures = problems + [
        RowFailure(row.line, f"order {pending.order_number!r} not imported: its row at line {first_bad} is invalid")
        for row in rows
        if row.line not in failed_lines
    ]
    return None, sorted(failures + pending.held, key=_by_line)


def _by_line(failure: RowFailure) -> int:
    return failure.line


class OrderAssembler:
    """Groups records into orders; outcomes come out in batches covering whole lines.

    `add(record)` returns a Batch when an order closed (the record opened the next one) or a
    stray bad row was read while no order was open; `finish()` returns the rest. A batch
    covers every line up to `through_line`, so work committed batch by batch can resume
    after the last committed batch's `through_line` without losing or repeating a row.
    """

    def __init__(self, columns: tuple[int, ...]) -> None:
        self._columns = columns
        self._pick = column_picker(columns)
        self._pending: _PendingOrder | None = None
        self._last_line = 0

    def add(self, record: Record) -> Batch | None:
        batch: Batch | None = None
        row: SalesRow | None = None
        problem = record.problem
        if record.fields is not None and problem is None:
            try:
                row = parse_row(record.fields, self._pick, record.first_line)
            except RowProblem as error:
                problem = str(error)
            else:
                # A good row (nearly every row): what the general case below does with it, in
                # fewer steps, as it runs once per row.
                pending = self._pending
                if pending is not None and pending.order_number == row.order_number:
                    pending.rows.append(row)
                else:
                    batch = self._close_pending()
                    self._pending = _PendingOrder(row.order_number, [row])
                    if batch is not None:
                        batch.through_line = self._last_line
                self._last_line = record.last_line
                return batch
        number = row.order_number if row is not None else order_number_of(record.fields, self._columns)
        pending = self._pending
        if number is not None and (pending is None or pending.order_number != number):
            batch = self._close_pending()
            pending = self._pending = _PendingOrder(number)
        if pending is None:
            # A bad row that names no order, read while no order is open.
            batch = Batch(failures=[RowFailure(record.first_line, problem or "unreadable row")])
            batch.rows = 1
        elif row is not None and number is not None:
            pending.rows.append(row)
        elif number is not None:
            pending.problems.append(RowFailure(record.first_line, problem or "unreadable row"))
        else:
            pending.held.append(RowFailure(record.first_line, problem or "unreadable row"))
        if batch is not None:
            batch.through_line = self._last_line if pending is not None else record.last_line
        self._last_line = record.last_line
        return batch

    def finish(self) -> Batch:
        batch = self._close_pending() or Batch()
        batch.through_line = self._last_line
        return batch

    def _close_pending(self) -> Batch | None:
        pending, self._pending = self._pending, None
        if pending is None:
            return None
        order, failures = _close(pending)
        rows = len(pending.rows) + len(pending.problems) + len(pending.held)
        return Batch([order] if order else [], failures, 0, rows)
