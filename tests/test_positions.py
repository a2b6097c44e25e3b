"""Positions mean absolute columns everywhere; helpers name the other meanings."""

import pytest
import torch

from interp.core.positions import (
    column_index,
    column_mask,
    generated,
    last_real,
    positions_from_json,
    positions_to_json,
    prompt,
    real,
)
from interp.steering._batch import position_from_json

# Row 0 left-padded by 2, row 1 right-padded by 1, row 2 full.
MASK = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])


def _real_columns(row: int) -> list[int]:
    return MASK[row].nonzero()[:, 0].tolist()


@pytest.mark.parametrize("spec", [0, -1, [1, 3], slice(1, None), slice(-2, None), slice(0, -1)])
def test_columns_are_python_indexing_of_the_columns_in_every_row(spec):
    want = torch.zeros(5, dtype=torch.bool)
    want[torch.arange(5)[spec]] = True
    assert torch.equal(column_mask(spec, MASK)[0], want)


@pytest.mark.parametrize("index", [0, -1, [0, -2], slice(1, None), slice(0, -1)])
def test_real_indexes_each_rows_real_tokens(index):
    got = column_mask(real(index), MASK)
    for row in range(3):
        cols = _real_columns(row)
        picked = cols[index] if isinstance(index, slice) else [cols[i] for i in (
            [index] if isinstance(index, int) else index)]  # fmt: skip
        want = torch.zeros(5, dtype=torch.bool)
        want[picked] = True
        assert torch.equal(got[row], want), (row, index)


def test_last_real_is_real_minus_one_and_column_index_gathers_it():
    assert last_real() == real(-1)
    assert column_index(last_real(), MASK)[:, 0].tolist() == [4, 3, 4]
    assert column_index([0, -1], MASK).tolist() == [[0, 4]] * 3


def test_prompt_and_generated_split_at_the_prompt_length():
    cols = torch.arange(7)
    assert column_mask(prompt(), MASK, cols=cols, prompt_len=5)[0].tolist() == [1] * 5 + [0] * 2
    assert column_mask(generated(), MASK, cols=cols, prompt_len=5)[0].tolist() == [0] * 5 + [1] * 2
    assert column_mask("all", MASK) is None


def test_json_round_trip_and_vectors_saved_when_ints_counted_real_tokens():
    for spec in (3, [0, -1], slice(1, None), real(2), real([0, 1]), real(slice(1, -1)), prompt()):
        assert positions_from_json(positions_to_json(spec)) == spec
    # A steering vector's metadata from before: an int or ["slice", a, b] counted real tokens.
    assert position_from_json(2) == real(2)
    assert position_from_json(["slice", 1, None]) == real(slice(1, None))
    assert position_from_json("last") == "last"


def test_bad_positions_say_what_was_expected():
    with pytest.raises(ValueError, match="did you mean 'generated'"):
        column_mask("genrated", MASK)
    with pytest.raises(ValueError, match="step 1"):
        real(slice(0, None, 2))
    with pytest.raises(IndexError, match=r"\[5\] are out of range for 5 columns.*real\(\.\.\.\)"):
        column_mask(5, MASK)
    with pytest.raises(IndexError, match=r"out of range for a 3-token prompt"):
        column_mask(real(3), MASK)
    with pytest.raises(ValueError, match="non-empty list of ints"):
        real([])


def test_cache_reads_each_rows_last_real_token(tiny_model):
    from interp.cache import cache_activations

    hook = "blocks.0.hook_resid_post"
    tokens = torch.randint(1, 50, (3, 5))
    got = cache_activations(tiny_model, tokens, hook, positions=last_real(), attention_mask=MASK)
    full = cache_activations(tiny_model, tokens, hook, attention_mask=MASK)[hook]
    torch.testing.assert_close(got[hook][:, 0], full[torch.arange(3), torch.tensor([4, 3, 4])])
