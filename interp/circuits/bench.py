"""``python -m interp.circuits.bench``: time, peak RSS and backward passes of one attribution graph
on the offline SmolLM2 with a transcoder at every layer, for 16- and 64-token prompts.

No trained transcoders are loaded: each layer gets a random-initialised TopK transcoder of the
width given (decoder rows and encoder columns random unit vectors), so the numbers measure cost,
not interpretability. Peak RSS is the process's high-water mark (``ru_maxrss``) after each graph.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import resource
import time

import torch

TEXT = (
    "The capital of France is Paris, and the capital of Germany is Berlin. When Mary and John "
    "went to the store, John gave a drink to Mary. The quick brown fox jumps over the lazy dog "
    "while the cat sleeps in the warm afternoon sun near the old stone wall by the river bank."
)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[16, 64])
    ap.add_argument("--d-sae", type=int, default=8192)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--max-feature-nodes", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args(argv)
    from interp.circuits import attribute
    from interp.models import load_model
    from saes.config import SAEConfig
    from saes.transcoder import Transcoder

    torch.set_grad_enabled(False)
    model = load_model("smollm2-135m", backend="hooked")
    model.eval()
    d = model.cfg.d_model
    cfg = SAEConfig(d_in=d, d_sae=args.d_sae, k=args.k, d_out=d)
    tcs = {i: Transcoder(cfg, seed=i) for i in range(model.cfg.n_layers)}
    ids = model.to_tokens(TEXT)[0]
    rows = []
    for n in args.lengths:
        t0 = time.perf_counter()
        g = attribute(
            model,
            ids[:n],
            tcs,
            batch_size=args.batch_size,
            max_feature_nodes=args.max_feature_nodes,
        )
        rows.append(
            {
                "tokens": n,
                "seconds": round(time.perf_counter() - t0, 2),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                "backward_passes": g.backward_passes,
                "active_features": len(g.active_features),
                "feature_nodes": g.n_features,
                "logit_nodes": g.n_logits,
                "adjacency": list(g.adjacency.shape),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    print(
        json.dumps(
            {
                "date": _dt.date.today().isoformat(),
                "model": "smollm2-135m (hooked)",
                "transcoders": f"random TopK, every layer, d_sae {args.d_sae}, k {args.k}",
                "max_feature_nodes": args.max_feature_nodes,
                "batch_size": args.batch_size,
                "threads": torch.get_num_threads(),
            }
        )
    )


if __name__ == "__main__":
    main()
