import re

import pytest
import torch

from interp.hooks import UnknownHookError, hook_layer, hook_names, hooks, resolve_hooks


def test_resolve_exact_glob_short_regex_predicate(tiny_model):
    assert resolve_hooks(tiny_model, "blocks.1.hook_resid_post") == ["blocks.1.hook_resid_post"]
    assert resolve_hooks(tiny_model, "blocks.*.hook_resid_post") == [
        "blocks.0.hook_resid_post",
        "blocks.1.hook_resid_post",
    ]
    assert resolve_hooks(tiny_model, ("z", 0)) == ["blocks.0.attn.hook_z"]
    assert set(resolve_hooks(tiny_model, re.compile(r"blocks\.0\.attn\.hook_[qk]"))) == {
        "blocks.0.attn.hook_q",
        "blocks.0.attn.hook_k",
    }
    assert resolve_hooks(tiny_model, lambda n: n.endswith("mlp_out")) == [
        "blocks.0.hook_mlp_out",
        "blocks.1.hook_mlp_out",
    ]
    # a list mixes kinds, drops duplicates and comes back in model order
    both = resolve_hooks(
        tiny_model, ["blocks.1.hook_resid_pre", ("resid_pre", 0), "blocks.1.hook_resid_pre"]
    )
    assert both == ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre"]


def test_unknown_name_suggests_close_ones(tiny_model):
    with pytest.raises(UnknownHookError, match=r"blocks\.0\.hook_resid_post"):
        resolve_hooks(tiny_model, "blocks.0.hook_resid_pots")
    with pytest.raises(UnknownHookError, match=r"Did you mean: .*hook_resid_post"):
        resolve_hooks(tiny_model, "resid_post")
    with pytest.raises(UnknownHookError, match="matches no hook"):
        resolve_hooks(tiny_model, "blocks.9.*")
    with pytest.raises(TypeError):
        resolve_hooks(tiny_model, 3)  # type: ignore[arg-type]


def test_non_tl_model_is_refused():
    with pytest.raises(TypeError, match="TransformerLens"):
        hook_names(torch.nn.Linear(2, 2))


def test_hook_layer():
    assert hook_layer("blocks.12.attn.hook_z") == 12
    assert hook_layer("hook_embed") is None


def _n_hooks(model):
    return sum(
        len(hp.fwd_hooks) + len(hp.bwd_hooks) + len(hp._forward_hooks) + len(hp._backward_hooks)
        for hp in {id(p): p for p in model.hook_dict.values()}.values()  # a bridge: once each
    )


def test_hooks_edit_and_clean_up(tiny_model):
    tokens = torch.randint(0, 50, (2, 6))
    clean = tiny_model(tokens)
    with hooks(tiny_model, fwd=[("blocks.*.hook_mlp_out", lambda x, hook: torch.zeros_like(x))]):
        ablated = tiny_model(tokens)
    assert not torch.allclose(clean, ablated)
    assert _n_hooks(tiny_model) == 0
    torch.testing.assert_close(tiny_model(tokens), clean)


def test_hooks_removed_on_exception_and_others_kept(tiny_model):
    tokens = torch.randint(0, 50, (1, 5))
    seen = []
    tiny_model.blocks[0].hook_resid_post.add_hook(lambda x, hook: seen.append(1), is_permanent=True)
    with (
        pytest.raises(RuntimeError, match="boom"),
        hooks(
            tiny_model,
            fwd=[("blocks.0.hook_resid_pre", lambda x, hook: None)],
            bwd=[("blocks.1.hook_resid_post", lambda g, hook: None)],
        ),
    ):
        raise RuntimeError("boom")
    # only the user's permanent hook is left
    assert _n_hooks(tiny_model) == 2  # its LensHandle plus the torch hook behind it
    tiny_model(tokens)
    assert seen == [1]


def test_bad_name_installs_nothing(tiny_model):
    with (
        pytest.raises(UnknownHookError),
        hooks(
            tiny_model,
            fwd=[("blocks.0.hook_resid_pre", lambda x, hook: None), ("nope", lambda x, hook: None)],
        ),
    ):
        pass
    assert _n_hooks(tiny_model) == 0


def test_backward_hook_sees_gradient(tiny_model):
    tokens = torch.randint(0, 50, (1, 4))
    grads = {}

    def keep(g, hook):
        grads[hook.name] = g.detach().clone()

    with hooks(tiny_model, bwd=[("blocks.1.hook_resid_post", keep)]):
        tiny_model(tokens).sum().backward()
    assert grads["blocks.1.hook_resid_post"].shape == (1, 4, 16)
    assert _n_hooks(tiny_model) == 0


_SITES = ["hook_resid_pre", "hook_resid_mid", "hook_resid_post", "attn.hook_pattern",
          "attn.hook_z", "hook_attn_out", "hook_mlp_out", "mlp.hook_post"]  # fmt: skip


class _ManyLayers:
    """Just the hook names of a 30-block model: suggestions are about names, not weights."""

    hook_dict = {f"blocks.{i}.{s}": None for i in range(30) for s in _SITES} | {"hook_embed": None}


def _suggestions(spec: str) -> tuple[list[str], str]:
    with pytest.raises(UnknownHookError) as info:
        resolve_hooks(_ManyLayers(), spec)
    msg = str(info.value)
    return msg.split("Did you mean: ")[1].split("?")[0].split(", "), msg


def test_suggestions_rank_the_same_site_and_layer_first():
    picks, _ = _suggestions("blocks.1.hook_resid_pree")
    assert picks[0] == "blocks.1.hook_resid_pre"
    assert picks[1:3] != ["blocks.21.hook_resid_pre", "blocks.19.hook_resid_pre"]  # old order
    assert picks[1] in ("blocks.1.hook_resid_post", "blocks.1.hook_resid_mid")
    picks, msg = _suggestions("hook_resid_pree")  # no layer given
    assert picks[0] == "blocks.0.hook_resid_pre" and "per-block site" in msg
    picks, msg = _suggestions("resid_pree")
    assert picks[0] == "blocks.0.hook_resid_pre"
    picks, msg = _suggestions("blocks.31.hook_resid_pre")
    assert "blocks 0–29" in msg and picks[0] == "blocks.29.hook_resid_pre"


def test_a_name_from_the_other_transformerlens_naming_is_translated(tiny_model):
    """A TL 4 canonical name on a model that only knows TL 3 names (or the reverse) is refused
    with the equivalent this model has."""
    from interp.core.adapter import adapt
    from interp.hooks import UnknownHookError, resolve_hooks

    if adapt(tiny_model).backend == "bridge":  # a bridge answers to both namings
        assert resolve_hooks(tiny_model, "blocks.1.hook_in") == ["blocks.1.hook_in"]
        return
    with pytest.raises(UnknownHookError, match=r"names that hook 'blocks.1.hook_resid_pre'"):
        resolve_hooks(tiny_model, "blocks.1.hook_in")
    with pytest.raises(UnknownHookError, match=r"'blocks.0.attn.hook_z'"):
        resolve_hooks(tiny_model, "blocks.0.attn.o.hook_in")


def test_an_intervention_on_a_site_the_model_lacks_lists_the_closest(tiny_model):
    from interp.core.interventions import Add, intervene
    from interp.hooks import UnknownHookError

    bad = [Add("blocks.0.hook_resid_psot", torch.ones(16))]
    with (
        pytest.raises(UnknownHookError, match=r"Did you mean: blocks.0.hook_resid_post"),
        intervene(tiny_model, bad),
    ):
        pass  # pragma: no cover - refused before anything runs
