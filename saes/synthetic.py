"""Ground truth from ``sae_lens.synthetic``: SAEs trained on its generated activations (whose true
features are known) and scored on how well they recover those features.

The data come from SAELens unchanged (``SyntheticModel``: a ``FeatureDictionary`` of true directions
fᵢ, an ``ActivationGenerator`` with firing probabilities, magnitudes, correlation and a hierarchy).
mechscope adds the checks before any work, the replay that feeds two trainers the same batches, and
its own scoring. With decoder rows dᵢ (latents) and true directions f_j, c_ij = |cos(dᵢ, f_j)|::

    matching  one-to-one latent ↔ feature pairs maximising Σ c_ij (Hungarian, scipy
              linear_sum_assignment); min(d_sae, n_features) pairs
    MCC       mean of c_ij over the matched pairs (1: every matched decoder row is its feature)
    detection per matched pair, over the evaluated rows: a latent fires when its activation ≠ 0, a
              feature when its ground-truth activation > 0; TP = both fire, FP = latent only,
              FN = feature only; precision TP/(TP+FP), recall TP/(TP+FN), F1 their harmonic
              mean (0 where undefined); reported as means over the matched pairs
    absorption for each parent → child edge (p, c) of the hierarchy, over rows where p and c both
              fire (at least ``min_rows`` of them): absorbed when p's matched latent fires on
              fewer than half of those rows while c's matched latent fires on at least half
              (the child's latent took over the parent's; Chanin et al. 2024)
    splitting a true feature is split when two or more latents point at it (c_ij ≥ ``split_cos``)

How this differs from SAELens's ``eval_sae_on_synthetic_data`` (checked in tests/test_synthetic.py):
its MCC is the same number. Its precision/recall/F1 differ by design: it pairs every latent with
the feature of largest c_ij (not one-to-one, so several latents may share a feature) and averages
over all latents, dead ones included (F1 0); mechscope averages over the one-to-one pairs, i.e.
over true features when d_sae ≥ n_features. ``SyntheticEval.saelens_f1`` is SAELens's definition,
computed here on the same rows; it equals SAELens's number. L0 and explained variance have the
formulas of ``saes.evals``, which match SAELens's calculators.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from jaxtyping import Float
from torch import Tensor

if TYPE_CHECKING:
    from sae_lens.synthetic import HierarchyNode, SyntheticModel, SyntheticModelConfig

__all__ = [
    "Matching",
    "Replay",
    "SyntheticConfigError",
    "SyntheticEval",
    "build_synthetic_model",
    "check_hierarchy",
    "detection",
    "evaluate_synthetic",
    "match_features",
    "mcc",
    "synthetic_config",
]

_PROFILE_RATIO = 16  # linear firing profile: the commonest feature fires 16x as often as the rarest


class SyntheticConfigError(ValueError):
    """A synthetic-data setting that cannot be satisfied, or an SAE that does not fit the data."""


def synthetic_config(
    *,
    num_features: int,
    hidden_dim: int,
    l0: float,
    hierarchy_roots: int = 0,
    branching: int = 4,
    correlation_rank: int = 0,
    magnitude_std: float = 0.1,
    seed: int = 0,
) -> SyntheticModelConfig:
    """A SynthSAEBench-shaped ``SyntheticModelConfig`` with expected L0 ``l0`` before the hierarchy.

    Firing probabilities fall linearly from p_max to p_max/16 over the features, scaled so they sum
    to ``l0``; ``hierarchy_roots`` trees of depth 1 with ``branching`` mutually exclusive children
    (not compensated: children fire only with their parent, so the true L0 is lower); a low-rank correlation of rank ``correlation_rank``.

    >>> cfg = synthetic_config(num_features=64, hidden_dim=16, l0=4)
    >>> round(float(cfg.firing_probability.generate(64).sum()), 3)
    4.0
    """
    from sae_lens.synthetic import HierarchyConfig, LinearFiringProbabilityConfig
    from sae_lens.synthetic.synthetic_model import LowRankCorrelationConfig, SyntheticModelConfig

    if num_features < 1 or hidden_dim < 1:
        raise SyntheticConfigError(
            f"num_features and hidden_dim must be positive, got {num_features} and {hidden_dim}"
        )
    if not 0 < l0 <= num_features:
        raise SyntheticConfigError(
            f"l0={l0} cannot be reached with {num_features} features: the expected number of "
            f"active features per row must be in (0, num_features={num_features}]"
        )
    p_max = 2 * l0 / num_features * _PROFILE_RATIO / (_PROFILE_RATIO + 1)
    if p_max > 1:
        reachable = num_features * (_PROFILE_RATIO + 1) / (2 * _PROFILE_RATIO)
        raise SyntheticConfigError(
            f"l0={l0} needs a firing probability {p_max:.2f} > 1 for the commonest of "
            f"{num_features} features (linear profile, ratio {_PROFILE_RATIO}); this profile "
            f"reaches at most l0={reachable:.1f}: lower l0 or add features"
        )
    hierarchy = None
    if hierarchy_roots:
        if hierarchy_roots * (1 + branching) > num_features:
            raise SyntheticConfigError(
                f"{hierarchy_roots} trees of 1 + {branching} features need "
                f"{hierarchy_roots * (1 + branching)} features; there are {num_features}"
            )
        hierarchy = HierarchyConfig(
            total_root_nodes=hierarchy_roots,
            branching_factor=branching,
            max_depth=1,
            mutually_exclusive_portion=1.0,
            compensate_probabilities=False,
        )
    correlation = (
        LowRankCorrelationConfig(rank=correlation_rank, correlation_scale=0.1, seed=seed)
        if correlation_rank
        else None
    )
    return SyntheticModelConfig(
        num_features=num_features,
        hidden_dim=hidden_dim,
        firing_probability=LinearFiringProbabilityConfig(
            max_prob=p_max, min_prob=p_max / _PROFILE_RATIO
        ),
        hierarchy=hierarchy,
        correlation=correlation,
        std_firing_magnitudes=magnitude_std,
        seed=seed,
    )


def check_hierarchy(roots: Sequence[HierarchyNode], num_features: int) -> None:
    """Refuse a hierarchy with a cycle, a feature under two parents, or an index out of range.

    SAELens's own check (``validate_hierarchy``) compares node objects, so it misses a cycle
    through two nodes that name the same feature; this one compares feature indices.
    """
    from sae_lens.synthetic.hierarchy.validation import validate_hierarchy

    validate_hierarchy(list(roots))  # loops of node objects
    parent_of: dict[int, int | None] = {}

    def walk(node: HierarchyNode, path: tuple[int, ...], parent: int | None) -> None:
        i = node.feature_index
        if i is not None:
            if not 0 <= i < num_features:
                raise SyntheticConfigError(
                    f"hierarchy feature index {i} is outside 0..{num_features - 1} "
                    f"(num_features={num_features})"
                )
            if i in path:
                cycle = " -> ".join(map(str, (*path[path.index(i) :], i)))
                raise SyntheticConfigError(
                    f"hierarchy has a cycle: feature {i} is its own ancestor ({cycle})"
                )
            if i in parent_of:
                raise SyntheticConfigError(
                    f"hierarchy feature {i} appears twice (under {parent_of[i]} and {parent}): "
                    "each feature needs at most one parent"
                )
            parent_of[i] = parent
            path, parent = (*path, i), i
        for child in node.children:
            walk(child, path, parent)

    for root in roots:
        walk(root, (), None)


def build_synthetic_model(
    cfg: SyntheticModelConfig, *, hierarchy: Sequence[HierarchyNode] | None = None
) -> SyntheticModel:
    """``SyntheticModel(cfg)`` (or with the given hierarchy trees), after the checks above."""
    from sae_lens.synthetic import Hierarchy, SyntheticModel, hierarchy_modifier

    if hierarchy is None:
        return SyntheticModel(cfg)
    check_hierarchy(hierarchy, cfg.num_features)
    roots = list(hierarchy)
    return SyntheticModel(cfg, hierarchy=Hierarchy(roots=roots, modifier=hierarchy_modifier(roots)))


# ---- scoring -------------------------------------------------------------------------------------
class Matching(NamedTuple):
    """One-to-one latent ↔ feature pairs; ``cos`` [d_sae, n_features] holds every |cos|."""

    latents: Tensor  # [pairs]
    features: Tensor  # [pairs]
    cos: Tensor  # [d_sae, n_features]


def _abs_cos(
    W_dec: Float[Tensor, "d_sae d_in"], features: Float[Tensor, "n_features d_in"]
) -> Tensor:
    a = W_dec.detach().double()
    b = features.detach().double().to(a.device)
    a = a / a.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    b = b / b.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return (a @ b.T).abs().cpu()


def match_features(
    W_dec: Float[Tensor, "d_sae d_in"], features: Float[Tensor, "n_features d_in"]
) -> Matching:
    """The one-to-one pairing of decoder rows and true directions with the largest Σ |cos|."""
    from scipy.optimize import linear_sum_assignment

    if W_dec.shape[-1] != features.shape[-1]:
        raise SyntheticConfigError(
            f"decoder rows have width {W_dec.shape[-1]} but the true features {features.shape[-1]}"
        )
    cos = _abs_cos(W_dec, features)
    rows, cols = linear_sum_assignment(cos.numpy(), maximize=True)
    return Matching(torch.as_tensor(rows), torch.as_tensor(cols), cos)


def mcc(W_dec: Float[Tensor, "d_sae d_in"], features: Float[Tensor, "n_features d_in"]) -> float:
    """Mean |cos| over the optimal one-to-one matching.

    >>> f = torch.eye(3)
    >>> mcc(f, f), mcc(f[[2, 0, 1]] * -2, f)
    (1.0, 1.0)
    """
    m = match_features(W_dec, features)
    return float(m.cos[m.latents, m.features].mean())


class Detection(NamedTuple):
    """Per matched pair: precision, recall and F1 of "latent fires" for "feature fires"."""

    precision: Tensor  # [pairs]
    recall: Tensor
    f1: Tensor


def _prf(tp: Tensor, fp: Tensor, fn: Tensor) -> Detection:
    precision = torch.where(tp + fp > 0, tp / (tp + fp).clamp_min(1), torch.zeros_like(tp))
    recall = torch.where(tp + fn > 0, tp / (tp + fn).clamp_min(1), torch.zeros_like(tp))
    s = precision + recall
    f1 = torch.where(s > 0, 2 * precision * recall / s.clamp_min(1e-12), torch.zeros_like(s))
    return Detection(precision, recall, f1)


def detection(
    latent_acts: Float[Tensor, "rows d_sae"],
    feature_acts: Float[Tensor, "rows n_features"],
    latents: Tensor,
    features: Tensor,
) -> Detection:
    """Detection scores of the pairs (``latents[i]``, ``features[i]``) over the given rows.

    >>> lat = torch.tensor([[1.0], [1.0], [0.0], [0.0]])
    >>> feat = torch.tensor([[1.0], [0.0], [1.0], [1.0]])
    >>> d = detection(lat, feat, torch.tensor([0]), torch.tensor([0]))
    >>> [round(float(v), 3) for v in (d.precision[0], d.recall[0], d.f1[0])]
    [0.5, 0.333, 0.4]
    """
    tp, fp, fn = _pair_counts(latent_acts, feature_acts, latents, features)
    return _prf(tp, fp, fn)


def _pair_counts(
    latent_acts: Tensor, feature_acts: Tensor, latents: Tensor, features: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    on = latent_acts[:, latents] != 0
    truth = feature_acts[:, features] > 0
    tp = (on & truth).sum(0).double()
    return tp, (on & ~truth).sum(0).double(), (~on & truth).sum(0).double()


@dataclass(frozen=True)
class SyntheticEval:
    """Feature recovery and proxy metrics of one SAE on one synthetic model (definitions above)."""

    mcc: float
    """Mean |cos| over the one-to-one matching."""
    precision: float
    recall: float
    f1: float
    """Means over matched pairs."""
    saelens_f1: float
    """F1 as SAELens defines it (argmax pairing, mean over every latent)."""
    l0: float
    true_l0: float
    """Mean active true features per row (after the hierarchy)."""
    explained_variance: float
    dead_latents: int
    """Latents that never fired on the evaluated rows."""
    absorbed: int
    """Hierarchy edges (parent, child) whose parent latent was absorbed."""
    absorption_edges: int
    """Edges with enough co-firing rows to judge."""
    split_features: int
    """True features with two or more latents at |cos| ≥ split_cos."""
    rows: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _edges(model: SyntheticModel) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []

    def walk(node: Any) -> None:
        for child in node.children:
            if node.feature_index is not None and child.feature_index is not None:
                out.append((node.feature_index, child.feature_index))
            walk(child)

    for root in model.hierarchy.roots if model.hierarchy is not None else []:
        walk(root)
    return out


class _Sums:
    """Counts accumulated over batches, so no metric is a mean of batch means."""

    def __init__(self, m: Matching, argmax: Tensor, edges: Tensor, feature_to_latent: Tensor):
        self.m, self.argmax, self.edges, self.f2l = m, argmax, edges, feature_to_latent
        z = torch.zeros
        self.pair = [z(len(m.latents), dtype=torch.float64) for _ in range(3)]
        self.lat = [z(len(argmax), dtype=torch.float64) for _ in range(3)]
        self.edge = [z(len(edges), dtype=torch.float64) for _ in range(3)]
        self.fired = z(len(argmax), dtype=torch.bool)
        self.n = self.active = self.true_active = 0.0
        self.sq_err = self.sq = 0.0
        self.sum_x: Tensor | None = None

    def add(self, x: Tensor, recon: Tensor, lat: Tensor, feat: Tensor) -> None:
        for acc, new in zip(
            self.pair, _pair_counts(lat, feat, self.m.latents, self.m.features), strict=True
        ):
            acc += new
        every = torch.arange(lat.shape[1])
        for acc, new in zip(self.lat, _pair_counts(lat, feat, every, self.argmax), strict=True):
            acc += new
        if len(self.edges):
            p, c = self.edges[:, 0], self.edges[:, 1]
            both = (feat[:, p] > 0) & (feat[:, c] > 0)
            self.edge[0] += both.sum(0)
            self.edge[1] += ((lat[:, self.f2l[p]] != 0) & both).sum(0)
            self.edge[2] += ((lat[:, self.f2l[c]] != 0) & both).sum(0)
        self.fired |= (lat != 0).any(0)
        self.n += x.shape[0]
        self.active += float((lat != 0).sum())
        self.true_active += float((feat > 0).sum())
        x64 = x.double()
        self.sq_err += float((x64 - recon.double()).pow(2).sum())
        self.sq += float(x64.pow(2).sum())
        s = x64.sum(0)
        self.sum_x = s if self.sum_x is None else self.sum_x + s


def evaluate_synthetic(
    sae: Any,
    model: SyntheticModel,
    *,
    n_samples: int = 20_000,
    batch_size: int = 4096,
    seed: int = 0,
    min_rows: int = 20,
    split_cos: float = 0.5,
) -> SyntheticEval:
    """Score ``sae`` (a mechscope or SAELens SAE: ``W_dec``, ``encode``, ``decode``) on
    ``n_samples`` fresh rows of ``model``, drawn with ``seed`` (the global RNG is left as it was)."""
    d_data, W_dec = model.cfg.hidden_dim, sae.W_dec
    if W_dec.shape[-1] != d_data:
        raise SyntheticConfigError(
            f"the SAE reads d_in={W_dec.shape[-1]} but the synthetic data have hidden_dim="
            f"{d_data}: build the SAE with d_in={d_data}"
        )
    if n_samples < 1 or batch_size < 1:
        raise SyntheticConfigError("n_samples and batch_size must be positive")
    features = model.feature_dict.feature_vectors
    m = match_features(W_dec, features)
    f2l = torch.full((features.shape[0],), -1, dtype=torch.long)
    f2l[m.features] = m.latents
    edges = torch.tensor([e for e in _edges(model) if (f2l[list(e)] >= 0).all()], dtype=torch.long)
    sums = _Sums(m, m.cos.argmax(1), edges.reshape(-1, 2), f2l)
    was_training = sae.training
    sae.eval()
    try:
        with torch.random.fork_rng(), torch.no_grad():
            torch.manual_seed(seed)
            done = 0
            while done < n_samples:
                b = min(batch_size, n_samples - done)
                x, feat = model.sample_with_features(b)
                lat = sae.encode(x)
                sums.add(x, sae.decode(lat), lat, feat)
                done += b
    finally:
        sae.train(was_training)
    return _finish(sums, m, split_cos, min_rows)


def _finish(s: _Sums, m: Matching, split_cos: float, min_rows: int) -> SyntheticEval:
    pair = _prf(*s.pair)
    assert s.sum_x is not None
    total = s.sq - float(s.sum_x.pow(2).sum()) / s.n
    judged = s.edge[0] >= min_rows
    rate_p = s.edge[1] / s.edge[0].clamp_min(1)
    rate_c = s.edge[2] / s.edge[0].clamp_min(1)
    absorbed = judged & (rate_p < 0.5) & (rate_c >= 0.5)
    return SyntheticEval(
        mcc=float(m.cos[m.latents, m.features].mean()),
        precision=float(pair.precision.mean()),
        recall=float(pair.recall.mean()),
        f1=float(pair.f1.mean()),
        saelens_f1=float(_prf(*s.lat).f1.mean()),
        l0=s.active / s.n,
        true_l0=s.true_active / s.n,
        explained_variance=1 - s.sq_err / total if total > 0 else float("nan"),
        dead_latents=int((~s.fired).sum()),
        absorbed=int(absorbed.sum()),
        absorption_edges=int(judged.sum()),
        split_features=int(((m.cos >= split_cos).sum(0) >= 2).sum()),
        rows=int(s.n),
    )


# ---- the same batches for every trainer ----------------------------------------------------------
class Replay:
    """Feature activations drawn once from a ``SyntheticModel`` and replayed in order.

    It stands in for the model's ``ActivationGenerator`` (``replay(batch_size)``), so SAELens's
    ``SyntheticActivationIterator`` and ``train_toy_sae`` feed any trainer the same batches without
    drawing them again. Stored sparse: a row holds about L0 non-zeros.
    """

    def __init__(self, model: SyntheticModel, n_batches: int, batch_size: int, *, seed: int):
        self.batch_size, self.n_features = batch_size, model.cfg.num_features
        self._batches: list[Tensor] = []
        with torch.random.fork_rng(), torch.no_grad():
            torch.manual_seed(seed)
            for _ in range(n_batches):
                acts = model.activation_generator.sample(batch_size)
                self._batches.append(acts.to_sparse())
        self.next = 0

    def rewind(self) -> Replay:
        self.next = 0
        return self

    def __len__(self) -> int:
        return len(self._batches)

    def __call__(self, batch_size: int) -> Tensor:
        if batch_size != self.batch_size:
            raise SyntheticConfigError(
                f"this replay holds batches of {self.batch_size} rows; {batch_size} were asked for"
            )
        if self.next >= len(self._batches):
            raise SyntheticConfigError(
                f"the replay's {len(self._batches)} batches are used up: draw more "
                "(training steps x batch size must not exceed what was drawn)"
            )
        self.next += 1
        return self._batches[self.next - 1].to_dense()

    sample = __call__
