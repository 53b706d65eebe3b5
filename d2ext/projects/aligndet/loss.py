"""AlignDet's box-level InfoNCE (Li et al., ICCV 2023, Sec. 3.3)."""

import torch
import torch.nn.functional as F

__all__ = ["box_infonce"]


def box_infonce(
    queries: torch.Tensor,
    query_ids: torch.Tensor,
    keys: torch.Tensor,
    key_ids: torch.Tensor,
    temperature: float = 0.5,
) -> torch.Tensor:
    """The box-level contrastive loss between an online and a momentum detector's samples.

    Args:
        queries: [Nq, D] embeddings of the online detector's samples (with gradient).
        query_ids: [Nq] instance id of the pseudo box each sample is assigned to, -1 for
            background samples.
        keys: [Nk, D] embeddings of the momentum detector's samples (no gradient needed).
        key_ids: [Nk] their instance ids, -1 for background.
        temperature: tau (AlignDet: 0.5).

    All embeddings are L2-normalised. For every id u >= 0 among ``query_ids``: the queries are
    the online samples of u; the keys are the momentum samples of u, or the queries themselves
    (detached) when the momentum view has none; the negatives are every sample of both detectors
    not assigned to u, background included, detached. Each (key, query) pair contributes
    -log(exp(q.k / tau) / (exp(q.k / tau) + sum_n exp(q.n / tau))); an id's loss is the mean
    over its pairs and the result the mean over ids. With no id among the queries the result is
    a zero that keeps the graph.
    """
    if queries.dim() != 2 or keys.dim() != 2 or queries.shape[1] != keys.shape[1]:
        raise ValueError(f"embeddings must be [N, D] of one width: {queries.shape}, {keys.shape}")
    if query_ids.shape != queries.shape[:1] or key_ids.shape != keys.shape[:1]:
        raise ValueError("one id per embedding is needed")
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    fg = query_ids >= 0
    if not fg.any():
        return queries.sum() * 0.0
    q = F.normalize(queries, dim=1)
    k = F.normalize(keys.detach(), dim=1)
    everything = torch.cat([q.detach(), k])  # columns: online samples, then momentum samples
    everything_ids = torch.cat([query_ids, key_ids])
    ids = query_ids[fg]  # rows: the queries (background samples are only negatives)
    sim = q[fg] @ everything.T / temperature  # [n_fg, Nq + Nk]
    same = everything_ids[None, :] == ids[:, None]
    # log-sum-exp over each query's negatives: every sample of both detectors of another id.
    lse_neg = torch.logsumexp(sim.masked_fill(same, float("-inf")), dim=1)

    # Keys of each query: the momentum samples of its id, or its id's queries when there are none.
    nq = q.shape[0]
    key_same = same[:, nq:]
    has_keys = key_same.any(dim=1)
    pairs = torch.cat([same[:, :nq] & ~has_keys[:, None], key_same], dim=1)
    rows, cols = pairs.nonzero(as_tuple=True)
    # -log(e^p / (e^p + e^L)) = softplus(L - p); L = -inf (no negatives) gives 0.
    pair_loss = F.softplus(lse_neg[rows] - sim[rows, cols])
    num_keys = pairs.sum(dim=1)
    row_mean = torch.zeros_like(lse_neg).index_add(0, rows, pair_loss) / num_keys
    # mean over an id's (key, query) pairs = mean over its queries of row_mean; then over ids.
    _, inverse, counts = torch.unique(ids, return_inverse=True, return_counts=True)
    return (row_mean / counts[inverse]).sum() / len(counts)
