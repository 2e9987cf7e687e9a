"""grouping: numba kernels == numpy twin == str.count == the grader's parser, on hand-made and random
texts, and through the char and SmolLM2 tokenizers."""

import numpy as np
import pytest

from ibpo_fast import grouping
from ibpo_fast.models import load_tokenizer
from ibpo_fast.rollout import ArithmeticTask, TRIAL_OPEN, demonstration, parse

TRIAL, CLOSE = "[TRIAL]", "[/TRIAL]"


def groups(texts, thresholds=(2,), backend="numba"):
    return grouping.assign(grouping.count_markers(*grouping.encode_texts(texts), backend=backend), thresholds)


@pytest.mark.parametrize("backend", grouping.BACKENDS)
def test_marker_counting_rules(backend):
    texts = [
        f"{TRIAL}a{CLOSE}{TRIAL}b{CLOSE}",  # two trials back to back -> extended
        f"{TRIAL}a",  # one trial (cut short) -> regular
        "no marker at all \\boxed{3}",
        "[TRIAL",  # first half of a marker; its second half opens the next text: never counts
        "]x",
        "",  # empty response
        f"{TRIAL}{TRIAL}{TRIAL}",
        "é [TRIAL] ü [TRIAL]",  # multi-byte characters around the markers
    ]
    data, offsets = grouping.encode_texts(texts)
    counts = grouping.count_markers(data, offsets, backend=backend)
    assert counts.tolist() == [2, 1, 0, 0, 0, 0, 3, 2] == [t.count(TRIAL) for t in texts]
    assert groups(texts, backend=backend).tolist() == [1, 0, 0, 0, 0, 0, 1, 1]
    assert groups(texts, (1, 3), backend).tolist() == [1, 1, 0, 0, 0, 0, 2, 1]
    assert grouping.count_markers(data, offsets, marker=b"aa", backend=backend).tolist() == [0] * 8
    # non-overlapping occurrences, as str.count: "aaa" holds one "aa", "aaaa" two
    data, offsets = grouping.encode_texts(["aaa", "aaaa", "a", "baab"])
    assert grouping.count_markers(data, offsets, marker=b"aa", backend=backend).tolist() == [1, 2, 0, 1]


@pytest.mark.parametrize("marker", [b"[TRIAL]", b"x", b"xx", b"xyx"])
def test_backends_agree_with_str_count(marker):
    rng = np.random.default_rng(len(marker))
    alphabet = np.array(list("xy[]TRIAL/ é"))
    texts = ["".join(rng.choice(alphabet, rng.integers(0, 30))) + "[TRIAL]" * int(rng.integers(0, 4)) for _ in range(400)]
    data, offsets = grouping.encode_texts(texts)
    expected = [t.encode().count(marker) for t in texts]
    for backend in grouping.BACKENDS:
        got = grouping.count_markers(data, offsets, marker=marker, backend=backend)
        assert got.dtype == np.int64 and got.tolist() == expected, backend


def test_groups_equal_the_parsers_trial_counts():
    """One definition of extended: the grouper counts exactly the trials the grader's parser sees."""
    rng = np.random.default_rng(0)
    pieces = [TRIAL, CLOSE, "1+0=1 \\boxed{1}", "\\boxed{2}", "][", "[", "]", "TRIAL", " ", "x"]
    texts = ["".join(rng.choice(pieces, rng.integers(0, 12))) for _ in range(2000)]
    num_trials = np.array([parse(t).num_trials for t in texts])
    assert grouping.count_markers(*grouping.encode_texts(texts)).tolist() == num_trials.tolist()
    assert grouping.response_groups(texts, (2,)).tolist() == (num_trials >= 2).astype(int).tolist()
    assert grouping.TRIAL_MARKER == TRIAL_OPEN.encode()


def _demonstrations():
    task = ArithmeticTask()
    return [demonstration(p, fmt) for p in task.problems("train", 30, seed=0) for fmt in ("regular", "sv", "asv")]


@pytest.mark.parametrize("tokenizer_name", ["tiny", "smollm2"])
def test_groups_survive_the_tokenizer_round_trip(tokenizer_name):
    """Responses as the trainer sees them (token ids decoded back to text) group as the parser counts,
    with the char tokenizer and with SmolLM2's BPE, which merges "[/TRIAL][TRIAL]" into a "][" token."""
    if tokenizer_name == "smollm2":
        pytest.importorskip("gguf")
    tokenizer = load_tokenizer(tokenizer_name)
    texts = _demonstrations()
    ids = [tokenizer(t, add_special_tokens=False).input_ids for t in texts]
    decoded = [tokenizer.decode(i, skip_special_tokens=True) for i in ids]
    num_trials = np.array([parse(t).num_trials for t in decoded])
    assert num_trials.max() >= 3 and (num_trials == 0).any()
    assert grouping.response_groups(decoded).tolist() == (num_trials >= 2).astype(int).tolist()
    if tokenizer_name == "smollm2":  # the case that counting marker token ids got wrong
        merged = tokenizer.convert_tokens_to_ids("][")
        assert any(merged in i for i in ids)
        marker = tokenizer.encode(TRIAL_OPEN, add_special_tokens=False)
        by_token_ids = [sum(i[t:t + len(marker)] == marker for t in range(len(i))) for i in ids]
        assert any(a < b for a, b in zip(by_token_ids, num_trials))


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
    data, offsets = grouping.encode_texts([])
    assert grouping.count_markers(data, offsets, backend=backend).shape == (0,)
    assert grouping.assign(np.zeros(0, np.int64), (2,)).shape == (0,)
    stats = grouping.statistics(np.zeros(0, int), np.zeros(0), np.zeros(0, int), 2, backend=backend)
    assert stats.counts.shape == (0, 2) and stats.row_indptr.tolist() == [0, 0]


def test_bad_input_raises():
    data, offsets = grouping.encode_texts(["[TRIAL]a", "b"])
    with pytest.raises(ValueError, match="offsets"):
        grouping.count_markers(data, np.array([0, 2]))
    with pytest.raises(ValueError, match="text_bytes"):
        grouping.count_markers(data.astype(np.int64), offsets)
    with pytest.raises(ValueError, match="marker"):
        grouping.count_markers(data, offsets, marker=b"")
    with pytest.raises(ValueError, match="backend"):
        grouping.count_markers(data, offsets, backend="cuda")
    with pytest.raises(ValueError, match="thresholds"):
        grouping.assign([1, 2], (3, 2))
    with pytest.raises(ValueError, match="measure"):
        grouping.assign([0.5], (1,))
    with pytest.raises(ValueError, match="rewards"):
        grouping.statistics([0, 1], [np.nan, 0.0], [0, 0], 2)
    with pytest.raises(ValueError, match="groups"):
        grouping.statistics([0, 2], [1.0, 0.0], [0, 0], 2)
    with pytest.raises(ValueError, match="length"):
        grouping.statistics([0, 1], [1.0], [0, 0], 2)
