"""AlignDet's box-level InfoNCE (Li et al., ICCV 2023, Sec. 3.3)."""

import torch
import torch.nn.functional as F

__all__ = ["box_infonce"]


def _same_id_pairs(ids: torch.Tensor, column_ids: torch.Tensor):
    """Every (row, column) with ``ids[row] == column_ids[column]``, without a [rows, columns]
    mask: the columns are sorted by id and each row takes its id's run."""
    order = torch.argsort(column_ids, stable=True)
    sorted_ids = column_ids[order]
    start = torch.searchsorted(sorted_ids, ids)
    count = torch.searchsorted(sorted_ids, ids, right=True) - start
    rows = torch.repeat_interleave(torch.arange(len(ids), device=ids.device), count)
    first = torch.cumsum(count, 0) - count  # index of each row's first pair
    within = torch.arange(len(rows), device=ids.device) - first[rows]
    return rows, order[start[rows] + within], count


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

    Cost: one [n_fg, Nq + Nk] product, one exp and one row sum (and their backward); the
    negatives' sum is the sum over all samples minus the sum over the query's own id, whose
    similarities are gathered from that product. Cosines lie in [-1, 1], so
    exp((cos - 1) / tau) cannot overflow; rows where the own id carries more than half of the sum
    (cancellation) are recomputed with an exact masked log-sum-exp.
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
    inv_t = 1.0 / temperature
    q = F.normalize(queries, dim=1)
    k = F.normalize(keys.detach(), dim=1)
    everything = torch.cat([q.detach(), k])  # columns: online samples, then momentum samples
    everything_ids = torch.cat([query_ids, key_ids])
    nq, n_all = q.shape[0], everything.shape[0]
    q_fg, ids = q[fg], query_ids[fg]  # rows: the queries (background samples are only negatives)

    # sum over all columns of exp(sim - 1/tau), sim = q.e / tau
    shifted = torch.addmm(q_fg.new_tensor(-inv_t), q_fg, everything.T, alpha=inv_t)
    # the same-id columns: sum_same, and the (key, query) pairs among them, read from the same
    # product (a gather, not a dot product per pair: few ids give many same-id pairs)
    rows, cols, n_same = _same_id_pairs(ids, everything_ids)
    sim_same = shifted[rows, cols] + inv_t
    sum_all = shifted.exp().sum(dim=1)
    sum_same = torch.zeros_like(sum_all).index_add(0, rows, torch.exp(sim_same - inv_t))
    sum_neg = sum_all - sum_same
    stable = sum_neg >= 0.5 * sum_all
    lse_neg = torch.where(stable, torch.log(torch.where(stable, sum_neg, 1.0)) + inv_t, -torch.inf)
    exact = (~stable & (n_same < n_all)).nonzero().squeeze(1)  # rows with few negatives
    if len(exact):
        sim = q_fg[exact] @ everything.T * inv_t
        same = everything_ids[None, :] == ids[exact, None]
        exact_lse = torch.logsumexp(sim.masked_fill(same, -torch.inf), dim=1)
        lse_neg = lse_neg.index_copy(0, exact, exact_lse)
    # rows without any negative keep -inf: their pairs' loss is log 1 = 0

    # keys of each query: the momentum samples of its id, or its id's queries when there are none
    is_key = cols >= nq
    has_keys = torch.bincount(rows[is_key], minlength=len(ids)) > 0
    pair = torch.where(has_keys[rows], is_key, ~is_key)
    rows, sim_pos = rows[pair], sim_same[pair]
    # -log(e^p / (e^p + e^L)) = softplus(L - p)
    pair_loss = F.softplus(lse_neg[rows] - sim_pos)
    num_keys = torch.bincount(rows, minlength=len(ids))
    row_mean = torch.zeros_like(sum_all).index_add(0, rows, pair_loss) / num_keys
    # mean over an id's (key, query) pairs = mean over its queries of row_mean; then over ids.
    _, inverse, counts = torch.unique(ids, return_inverse=True, return_counts=True)
    return (row_mean / counts[inverse]).sum() / len(counts)
