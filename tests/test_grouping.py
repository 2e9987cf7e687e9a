"""grouping: numba kernels == numpy twin == a plain-Python reference, on hand-made and random packs."""
import numpy as np
import pytest

from ibpo_fast import grouping

MARKER = [5, 6]  # "[TRIAL]" split into two token ids


def pack(sequences):
    """sequences: list of (prompt ids, response ids) -> input_ids, cu_seqlens, loss_mask."""
    ids = [np.asarray(list(a) + list(b), np.int64) for a, b in sequences]
    masks = [np.r_[np.zeros(len(a), bool), np.ones(len(b), bool)] for a, b in sequences]
    cu = np.r_[0, np.cumsum([len(x) for x in ids])].astype(np.int32)
    return np.concatenate(ids or [np.zeros(0, np.int64)]), cu, np.concatenate(masks or [np.zeros(0, bool)])


def reference_counts(input_ids, cu, mask, marker):
    counts = []
    for i in range(len(cu) - 1):
        ids, m = input_ids[cu[i]:cu[i + 1]], mask[cu[i]:cu[i + 1]]
        counts.append(sum(list(ids[t:t + len(marker)]) == list(marker) and m[t:t + len(marker)].all()
                          for t in range(len(ids) - len(marker) + 1)))
    return np.array(counts)


@pytest.mark.parametrize("backend", grouping.BACKENDS)
def test_marker_counting_rules(backend):
    batch = pack([
        ([5, 6, 1], [2, 5, 6, 3, 5, 6]),  # marker in the prompt does not count: 2 trials -> extended
        ([1], [5, 6, 3]),  # one trial -> regular
        ([1, 5], [6, 5, 6, 5]),  # straddles prompt/response (no), one full, one cut by the end
        ([], [5]),  # first half of a marker, its second half opens the next sequence
        ([], [6, 5, 6, 5, 6, 5, 6]),  # three trials
        ([7], []),  # empty response
    ])
    groups = grouping.assign(*batch, trial_marker=MARKER, backend=backend)
    assert groups.tolist() == [1, 0, 0, 0, 1, 0]
    three = grouping.assign(*batch, trial_marker=MARKER, trial_thresholds=(1, 3), backend=backend)
    assert three.tolist() == [1, 1, 1, 0, 2, 0]
    by_length = grouping.assign(*batch, length_thresholds=(3, 6), backend=backend)
    assert by_length.tolist() == [2, 1, 1, 0, 2, 0]


def random_pack(rng, num_seqs):
    lengths = rng.integers(0, 40, num_seqs)
    cu = np.r_[0, np.cumsum(lengths)].astype(np.int32)
    input_ids = rng.integers(0, 8, cu[-1]).astype(np.int64)  # small vocabulary: many marker hits
    prompt_lengths = rng.integers(0, 10, num_seqs)
    loss_mask = np.arange(cu[-1]) >= np.repeat(cu[:-1] + prompt_lengths, lengths)
    return input_ids, cu, loss_mask


@pytest.mark.parametrize("marker", [[5], [5, 6], [5, 5], [1, 2, 3]])
def test_backends_agree_with_reference(marker):
    rng = np.random.default_rng(len(marker))
    batch = random_pack(rng, 300)
    counts = reference_counts(*batch, marker)
    expected = np.searchsorted([1, 3], counts, side="right")
    for backend in grouping.BACKENDS:
        got = grouping.assign(*batch, trial_marker=marker, trial_thresholds=(1, 3), backend=backend)
        assert got.dtype == np.int64 and got.tolist() == expected.tolist()
    lengths = [batch[2][a:b].sum() for a, b in zip(batch[1][:-1], batch[1][1:])]
    for backend in grouping.BACKENDS:
        got = grouping.assign(*batch, length_thresholds=[5, 20], backend=backend)
        assert got.tolist() == np.searchsorted([5, 20], lengths, side="right").tolist()


def test_statistics_backends_agree_with_reference():
    rng = np.random.default_rng(0)
    n, num_prompts, num_groups = 500, 70, 3  # prompts 68, 69 have no sample: empty rows
    groups = rng.integers(0, num_groups, n)
    rewards = rng.random(n)
    prompts = rng.integers(0, num_prompts - 2, n)
    for backend in grouping.BACKENDS:
        stats = grouping.statistics(groups, rewards, prompts, num_groups, num_prompts=num_prompts, backend=backend)
        rows = [np.flatnonzero(prompts == p) for p in range(num_prompts)]
        rows += [np.flatnonzero(groups == k) for k in range(1, num_groups)]
        assert stats.row_indptr.tolist() == np.r_[0, np.cumsum([len(r) for r in rows])].tolist()
        assert stats.row_indices.tolist() == np.concatenate(rows).tolist()
        for p in range(num_prompts):
            for k in range(num_groups):
                here = (prompts == p) & (groups == k)
                assert stats.counts[p, k] == here.sum()
                if here.any():
                    assert stats.reward_mean[p, k] == pytest.approx(rewards[here].mean(), rel=1e-12)
                else:
                    assert np.isnan(stats.reward_mean[p, k])


@pytest.mark.parametrize("backend", grouping.BACKENDS)
def test_empty_batch(backend):
    batch = pack([])
    assert grouping.assign(*batch, trial_marker=MARKER, backend=backend).shape == (0,)
    stats = grouping.statistics(np.zeros(0, int), np.zeros(0), np.zeros(0, int), 2, backend=backend)
    assert stats.counts.shape == (0, 2) and stats.row_indptr.tolist() == [0, 0]


def test_bad_input_raises():
    ids, cu, mask = pack([([1], [5, 6])])
    with pytest.raises(ValueError, match="exactly one"):
        grouping.assign(ids, cu, mask)
    with pytest.raises(ValueError, match="exactly one"):
        grouping.assign(ids, cu, mask, trial_marker=MARKER, length_thresholds=(3,))
    with pytest.raises(ValueError, match="cu_seqlens"):
        grouping.assign(ids, np.array([0, 2]), mask, trial_marker=MARKER)
    with pytest.raises(ValueError, match="loss_mask"):
        grouping.assign(ids, cu, mask.astype(int), trial_marker=MARKER)
    with pytest.raises(ValueError, match="trial_thresholds"):
        grouping.assign(ids, cu, mask, trial_marker=MARKER, trial_thresholds=(3, 2))
    with pytest.raises(ValueError, match="trial_marker"):
        grouping.assign(ids, cu, mask, trial_marker=[])
    with pytest.raises(ValueError, match="backend"):
        grouping.assign(ids, cu, mask, trial_marker=MARKER, backend="cuda")
    with pytest.raises(ValueError, match="rewards"):
        grouping.statistics([0, 1], [np.nan, 0.0], [0, 0], 2)
    with pytest.raises(ValueError, match="groups"):
        grouping.statistics([0, 2], [1.0, 0.0], [0, 0], 2)
    with pytest.raises(ValueError, match="length"):
        grouping.statistics([0, 1], [1.0], [0, 0], 2)


def test_accepts_packed_batch_tensors():
    torch = pytest.importorskip("torch")
    ids, cu, mask = pack([([1], [5, 6, 5, 6]), ([2], [5, 6])])
    groups = grouping.assign(torch.from_numpy(ids), torch.from_numpy(cu), torch.from_numpy(mask), trial_marker=MARKER)
    assert groups.tolist() == [1, 0]
