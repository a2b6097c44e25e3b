"""Every method's numbers on TransformerLens 3.9 and 4.3, compared: one tiny random Llama (GQA,
rotary, RMSNorm, gated MLP), the same weights and inputs, run as a TransformerBridge under each
version (and as a HookedTransformer under TL 3, which TL 4 removed).

    python tests/crossversion.py write OUT.safetensors [--weights W.safetensors]
    python tests/crossversion.py compare A.safetensors B.safetensors [...]

``write`` saves the weights it used to ``--weights`` if that file is missing, and loads them if
it exists, so the second environment runs the first one's model. ``compare`` prints the largest
difference per method between the first file and each other one, and fails above 1e-5.
``make test-crossversion`` runs the whole check (after ``make env`` and ``make env-tl4``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from twins import tiny_llama, twins

TOL = 1e-5


def metric(logits: torch.Tensor) -> torch.Tensor:
    return logits[:, -1, 5] - logits[:, -1, 7]


def _methods() -> dict[str, Callable[[Any, torch.Tensor, torch.Tensor], torch.Tensor]]:
    from interp.cache import cache_activations
    from interp.patching import (
        attribution_patch,
        edge_attribution,
        edge_patch,
        patch_sweep,
        path_patch,
    )
    from interp.scrubbing import Hypothesis, claim, compare
    from interp.scrubbing.metrics import next_token_loss
    from interp.steering.apply import ablate, add, clamp, steer

    def steered(m: Any, c: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
        v = torch.randn(32, generator=torch.Generator().manual_seed(3))
        edits = [add(v, 2.0, layer=1), ablate(v, layer=0, site="attn_out"),
                 clamp(v, 1.5, layer=1, site="resid_post", positions=[-1])]  # fmt: skip
        with steer(m, edits):
            return m(c)

    def scrubbed(m: Any, *_: torch.Tensor) -> torch.Tensor:
        data = torch.randint(2, 62, (24, 9), generator=torch.Generator().manual_seed(5))
        heads = [claim(f"L1H{h}", None, claim("embed")) for h in range(4)]
        hyp = Hypothesis("L1 heads on embed", claim("logits", None, *heads))
        r = compare(m, data, [hyp], next_token_loss(range(4, 8)), n_samples=16, seed=0)[hyp.name]
        return torch.stack(
            [torch.as_tensor(getattr(r, p)) for p in ("clean", "scrubbed", "random")]
        )

    def cached(m: Any, c: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
        names = ["hook_embed", "blocks.0.attn.hook_z", "blocks.1.hook_resid_mid"]
        cache = cache_activations(m, c, names)
        return torch.cat([cache[n].flatten() for n in names])

    out: dict[str, Callable[[Any, torch.Tensor, torch.Tensor], torch.Tensor]] = {
        "logits": lambda m, c, _: m(c),
        "cache": cached,
        "steering": steered,
        "scrubbing": scrubbed,
    }
    for site, over in [("resid_pre", ("layer", "pos")), ("attn_out", ("layer", "pos")),
                       ("z", ("layer", "pos", "head")), ("v", ("layer", "pos", "head")),
                       ("pattern", ("layer", "head"))]:  # fmt: skip
        out[f"patch_sweep.{site}"] = lambda m, c, x, s=site, o=over: (
            patch_sweep(m, c, x, metric, site=s, over=o).values
        )
    out["atp.z"] = lambda m, c, x: (
        attribution_patch(m, c, x, metric, site="z", over=("layer", "pos", "head")).values
    )
    out["atp_ig.attn_out"] = lambda m, c, x: (
        attribution_patch(m, c, x, metric, site="attn_out", method="ig", steps=3).values
    )
    out["eap"] = lambda m, c, x: edge_attribution(m, c, x, metric).values
    out["eap_ig"] = lambda m, c, x: (
        edge_attribution(m, c, x, metric, method="eap-ig", steps=3).values
    )
    out["path_patch"] = lambda m, c, x: (
        path_patch(
            m, c, x, metric, senders=["L0H1", "MLP0"], receivers=["L1H2.q", "L1G1.k", "MLP1.in"]
        ).values
    )
    out["edge_patch"] = lambda m, c, x: edge_patch(m, c, x, metric).values
    return out


def write(out: Path, weights: Path) -> None:
    from importlib.metadata import version

    if not weights.exists():  # the first environment's seeded weights, for the others to load
        save_file({k: v.contiguous() for k, v in tiny_llama().state_dict().items()}, weights)
    with tempfile.TemporaryDirectory() as folder:
        bridge, hooked = twins(Path(folder), state=load_file(weights))
    gen = torch.Generator().manual_seed(1)
    clean = torch.randint(2, 62, (4, 9), generator=gen)
    corrupt = torch.randint(2, 62, (4, 9), generator=gen)
    tl = version("transformer-lens")
    tensors = {}
    for name, fn in _methods().items():
        for backend, model in (("bridge", bridge), ("hooked", hooked)):
            if model is not None:
                tensors[f"{backend}/{name}"] = torch.as_tensor(fn(model, clean, corrupt)).detach()
    save_file({k: v.float().contiguous() for k, v in tensors.items()}, out, {"tl": str(tl)})
    print(f"{out}: {len(tensors)} results, TransformerLens {tl}")


def compare(files: list[Path]) -> int:
    from safetensors import safe_open

    def read(p: Path) -> tuple[str, dict[str, torch.Tensor]]:
        with safe_open(p, "pt") as f:
            return (f.metadata() or {}).get("tl", "?"), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118

    ref_tl, ref = read(files[0])
    reference = {k.split("/", 1)[1]: v for k, v in ref.items() if k.startswith("hooked/")} or {
        k.split("/", 1)[1]: v for k, v in ref.items() if k.startswith("bridge/")
    }
    worst = 0.0
    print(
        f"reference: {files[0]} (TL {ref_tl}, {'HookedTransformer' if 'hooked/logits' in ref else 'bridge'})"
    )
    for path in files:
        tl, got = read(path)
        for key, value in sorted(got.items()):
            name = key.split("/", 1)[1]
            diff = (
                float((value - reference[name]).abs().max())
                if value.shape == reference[name].shape
                else float("inf")
            )
            worst = max(worst, diff)
            print(f"  TL {tl:8s} {key:28s} max |diff| {diff:.2e}")
    ok = worst <= TOL
    print(f"largest difference {worst:.2e}: {'within' if ok else 'ABOVE'} {TOL:g}")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write")
    w.add_argument("out", type=Path)
    w.add_argument("--weights", type=Path, required=True)
    c = sub.add_parser("compare")
    c.add_argument("files", type=Path, nargs="+")
    args = parser.parse_args(argv)
    if args.cmd == "write":
        torch.set_grad_enabled(True)
        write(args.out, args.weights)
        return 0
    return compare(args.files)


if __name__ == "__main__":
    sys.exit(main())
