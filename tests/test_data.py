import torch

from interp.cache import cache_activations
from saes.data import model_source, rebatch

HOOK = "blocks.0.hook_resid_post"


def test_rebatch_cuts_exact_batches_in_order():
    blocks = [
        torch.arange(n * 2, dtype=torch.float).view(n, 2) + 100 * i
        for i, n in enumerate([3, 5, 1, 4])
    ]
    out = list(rebatch(iter(blocks), 4))
    assert [len(b) for b in out] == [4, 4, 4]  # 13 rows: the short tail is dropped
    torch.testing.assert_close(torch.cat(out), torch.cat(blocks)[:12])


def test_model_source_streams_the_hook_rows_shuffled(tiny_model):
    g = torch.Generator().manual_seed(0)
    contexts = [torch.randint(0, 50, (6,), generator=g) for _ in range(12)]
    calls = []
    tiny_model.blocks[1].hook_resid_post.add_hook(lambda x, hook: calls.append(1))
    batches = list(
        model_source(tiny_model, HOOK, iter(contexts), 10, max_tokens=24, buffer_batches=2, seed=1)
    )
    tiny_model.reset_hooks()
    assert calls == []  # stop_at_layer: block 1 never ran
    rows = torch.cat(batches)
    ref = cache_activations(tiny_model, torch.stack(contexts), HOOK, positions=slice(1, None))[HOOK]
    ref = ref.reshape(-1, 16)
    assert len(rows) == 60 and all(
        len(b) == 10 for b in batches
    )  # 12 contexts x 5 rows (BOS dropped)
    # the same rows, in a different (shuffled) order
    assert not torch.allclose(rows, ref)
    key = lambda t: sorted(map(tuple, t.round(decimals=4).tolist()))  # noqa: E731
    assert key(rows) == key(ref)
    again = torch.cat(
        list(
            model_source(
                tiny_model, HOOK, iter(contexts), 10, max_tokens=24, buffer_batches=2, seed=1
            )
        )
    )
    torch.testing.assert_close(again, rows)  # seeded
