"""The feature seam's batch description: which item and which guidance half each model row is."""

from __future__ import annotations

import pytest

from lumina import LuminaInputError
from lumina.model.hooks import BatchRows, batch_rows, single_rows


def test_batch_rows_lay_out_halves_of_items():
    rows = batch_rows(3, (True, False))
    assert rows.items == (0, 1, 2, 0, 1, 2) and rows.conditional == (True,) * 3 + (False,) * 3
    assert rows.size == 6 and rows.item_count == 3 and rows.conditional_rows() == (0, 1, 2)
    comfy_order = batch_rows(2, (False, True))  # ComfyUI may run the unconditional chunk first
    assert comfy_order.conditional_rows() == (2, 3)
    assert single_rows(4) == batch_rows(4) == BatchRows((0, 1, 2, 3), (True,) * 4)


def test_row_of_stays_in_the_same_half():
    rows = batch_rows(3, (True, False))
    assert [rows.row_of(0, r) for r in range(6)] == [0, 0, 0, 3, 3, 3]
    assert rows.row_of(2, 3) == 5
    uneven = BatchRows((0, 1, 0), (True, True, False))
    with pytest.raises(LuminaInputError, match="has no item 1"):
        uneven.row_of(1, 2)


def test_bad_layouts_are_refused():
    with pytest.raises(ValueError, match="one item index and one conditional flag per row"):
        BatchRows((0, 1), (True,))
    with pytest.raises(ValueError, match="at least one item and one half"):
        batch_rows(0)
