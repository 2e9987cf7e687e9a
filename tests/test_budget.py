"""budget.solve against brute-force enumeration, exact against HiGHS, and the degenerate batches."""
import numpy as np
import pytest

from ibpo_fast import budget


def brute_force(u, g, p, q, m):
    """Best objective over all 2^n weight vectors (n ≤ 16), straight from DESIGN §1."""
    n = len(u)
    q = np.atleast_1d(q)
    prompts = np.unique(p, return_inverse=True)[1].ravel()
    capacity = n if m is None else m * (prompts.max() + 1)
    budgets = np.floor(q * capacity + 1e-9)
    masks = ((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1).astype(np.float64)  # [2^n, n]
    ok = np.all(masks @ np.eye(len(q) + 1)[g][:, 1:] <= budgets, axis=1)
    if m is not None:
        ok &= np.all(masks @ np.eye(prompts.max() + 1)[prompts] <= m, axis=1)
    return (masks @ u)[ok].max()


def check_selection(sel, u, g, p, q, m):
    """Feasibility, the no-non-positive rule and the in-prompt tie rule; returns the weights as bool."""
    w = sel.weights.astype(bool)
    assert set(np.unique(sel.weights)) <= {0.0, 1.0}
    assert not np.any(w & (u <= 0)), "a non-positive utility was selected"
    assert np.all(np.bincount(g[w], minlength=len(sel.budgets) + 1)[1:] <= sel.budgets)
    if m is not None:
        assert np.bincount(np.unique(p, return_inverse=True)[1].ravel()[w]).max(initial=0) <= m
        for prompt in np.unique(p):  # a selected costly sample never beats an unselected regular tie
            here = p == prompt
            costly, spare = u[here & w & (g > 0)], u[here & ~w & (g == 0) & (u > 0)]
            if len(costly) and len(spare):
                assert spare.max() < costly.min()
    assert sel.objective == pytest.approx(u[w].sum(), abs=1e-12)
    assert sel.upper_bound >= sel.objective - 1e-9
    return w


def random_instance(rng):
    n = int(rng.integers(1, 13)) if rng.random() < 0.8 else int(rng.integers(13, 17))
    num_costly = 1 if rng.random() < 0.6 else 2
    g = rng.integers(0, num_costly + 1, n)
    p = rng.integers(0, max(1, n // int(rng.integers(1, 5))), n) * 7  # sparse, non-dense ids
    kind = rng.integers(5)
    if kind == 0:  # binary rewards: many ties
        u = rng.integers(0, 2, n).astype(float)
    elif kind == 1:  # margins of binary rewards
        u = budget.utilities(rng.integers(0, 2, n).astype(float), g, p, kind="margin")
    elif kind == 4:  # group values of binary rewards: ties within a group, zeros for the wrong ones
        u = budget.utilities(rng.integers(0, 2, n).astype(float), g, p, kind="value")
    elif kind == 2:
        u = rng.normal(size=n)
    else:  # small integers: ties and non-positives
        u = rng.integers(-1, 3, n).astype(float)
    q = [float(rng.choice([0.0, 0.25, 0.5, 1.0, rng.random()])) for _ in range(num_costly)]
    m = [None, 1, 2, 3][rng.integers(4)]
    return u, g, p, (q[0] if num_costly == 1 else q), m


@pytest.mark.parametrize("seed", range(4))
def test_every_method_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    for _ in range(100):
        u, g, p, q, m = random_instance(rng)
        best = brute_force(u, g, p, q, m)
        for method in ("auto", "highs", "exact"):
            try:
                sel = budget.solve(u, g, p, q, max_per_prompt=m, method=method)
            except ValueError:
                assert method == "exact" and m is not None and np.ndim(q) == 1
                continue
            check_selection(sel, u, g, p, q, m)
            assert sel.status == "optimal"
            assert sel.objective == pytest.approx(best, abs=1e-9), (method, u, g, p, q, m)
            assert sel.upper_bound == pytest.approx(best, abs=1e-6)


@pytest.mark.parametrize("m,q", [(1, 0.5), (2, 0.25), (4, 0.75), (None, 0.3), (None, [0.2, 0.1]), (1, [0.3, 0.2])])
def test_exact_equals_highs_on_larger_instances(m, q):
    rng = np.random.default_rng(123)
    for n in (100, 1000, 5000):
        num_prompts = n // 8
        p = rng.integers(0, num_prompts, n)
        g = rng.integers(0, np.size(q) + 1, n)
        difficulty = rng.random(num_prompts)[p]
        rewards = (rng.random(n) < difficulty + 0.3 * g).astype(float)
        u = budget.utilities(rewards, g, p, kind="margin")
        auto = budget.solve(u, g, p, q, max_per_prompt=m)
        highs = budget.solve(u, g, p, q, max_per_prompt=m, method="highs")
        for sel in (auto, highs):
            check_selection(sel, u, g, p, q, m)
            assert sel.status == "optimal"
        assert auto.objective == pytest.approx(highs.objective, rel=1e-9, abs=1e-9)
        assert auto.upper_bound == pytest.approx(auto.objective, rel=1e-9, abs=1e-9)


def test_value_utility_is_reward_times_group_success_rate():
    # prompt 7: regular 1/2 right, extended 2/2; prompt 9: regular 2/2, extended 1/2; prompt 4: one group only
    r = np.array([1, 0, 1, 1, 1, 1, 0, 1, 0.0])
    g = np.array([0, 0, 1, 1, 0, 0, 1, 1, 1])
    p = np.array([7, 7, 7, 7, 9, 9, 9, 9, 4])
    u = budget.utilities(r, g, p, kind="value")
    np.testing.assert_allclose(u, [0.5, 0, 1, 1, 1, 1, 0, 0.5, 0])
    assert budget.utilities(r, g, p).tolist() == u.tolist()  # the default kind
    # m = 1, budget for one extended target (q = 1/3 of 3 prompts): prompt 7 votes, prompt 9 answers once
    sel = budget.solve(u, g, p, 1 / 3, max_per_prompt=1)
    assert np.flatnonzero(sel.weights).tolist() == [2, 4]


def test_value_utility_ties_go_to_the_cheaper_group_and_the_budget_to_the_largest_gain():
    # four prompts, 4 samples each (2 regular, 2 extended); extended − regular success rate: 0, 0.5, 1, 0.5
    rates = [(1.0, 1.0), (0.5, 1.0), (0.0, 1.0), (0.5, 1.0)]
    r, g, p = [], [], []
    for prompt, (regular, extended) in enumerate(rates):
        r += [1.0, float(regular == 1.0), 1.0, 1.0] if regular > 0 else [0.0, 0.0, 1.0, 1.0]
        g += [0, 0, 1, 1]
        p += [prompt] * 4
    r, g, p = np.array(r), np.array(g), np.array(p)
    u = budget.utilities(r, g, p, kind="value")
    for q, voting in ((0.0, set()), (0.25, {2}), (0.5, {1, 2}), (1.0, {1, 2, 3})):
        sel = budget.solve(u, g, p, q, max_per_prompt=1)
        chosen = np.flatnonzero(sel.weights)
        assert len(chosen) == 4 or (q == 0.0 and len(chosen) == 3)  # prompt 2 has no correct regular answer
        assert {int(p[i]) for i in chosen if g[i] == 1} == voting, q  # equal gains: the lower prompt id first


def test_exact_prefers_regular_and_hard_prompts():
    # prompt 0: regular right; prompt 1: only extended right; prompt 2: both right
    u = np.array([1, 0, 0, 1, 1, 1.0])
    g = np.array([0, 1, 0, 1, 0, 1])
    p = np.array([0, 0, 1, 1, 2, 2])
    sel = budget.solve(u, g, p, 1 / 3, max_per_prompt=1)
    assert sel.weights.tolist() == [1, 0, 0, 1, 1, 0]
    assert sel.group_share.tolist() == pytest.approx([2 / 3, 1 / 3])
    assert sel.group_density_selected.tolist() == pytest.approx([2 / 3, 1 / 3])
    assert budget.solve(u, g, p, 1 / 3, max_per_prompt=1, method="highs").weights.tolist() == sel.weights.tolist()


def test_degenerate_batches():
    g = np.array([0, 1, 0, 1])
    p = np.array([0, 0, 1, 1])
    for method in ("exact", "highs"):
        def run(u, groups=g, q=0.5, m=1):
            return budget.solve(np.asarray(u, float), groups, p[: len(groups)], q, max_per_prompt=m, method=method)

        none_right = run([0, 0, 0, 0])
        assert none_right.weights.sum() == 0 and none_right.objective == 0 and none_right.status == "optimal"
        assert run([1, 1, 1, 1], groups=np.zeros(4, int)).weights.tolist() == [1, 0, 1, 0]  # no extended
        all_ext = run([1, 1, 1, 0.5], groups=np.ones(4, int))  # B = 1: the best extended one
        assert all_ext.weights.tolist() == [1, 0, 0, 0] and all_ext.budgets.tolist() == [1]
        assert run([0, 1, 0, 1], q=0.0).weights.sum() == 0  # q = 0: no costly sample
        assert run([0, 1, 0, 1], q=1.0).weights.tolist() == [0, 1, 0, 1]
        assert run([0.3], groups=np.array([1]), q=1.0).weights.tolist() == [1]  # single sample
        assert run([0.3], groups=np.array([1]), q=0.9).weights.tolist() == [0]  # floor(0.9) = 0
        empty = budget.solve(np.zeros(0), np.zeros(0, int), np.zeros(0, int), 0.5, method=method)
        assert empty.weights.shape == (0,) and empty.objective == 0 and empty.status == "optimal"


@pytest.mark.parametrize("kwargs,match", [
    (dict(utilities=[np.nan, 1.0]), "utilities"),
    (dict(utilities=[np.inf, 1.0]), "utilities"),
    (dict(q=1.5), "q"),
    (dict(q=-0.1), "q"),
    (dict(q=float("nan")), "q"),
    (dict(groups=[0, 2]), "groups"),
    (dict(groups=[0]), "groups"),
    (dict(prompt_index=[0.5, 1.0]), "prompt_index"),
    (dict(max_per_prompt=0), "max_per_prompt"),
    (dict(method="greedy"), "method"),
    (dict(time_limit=0), "time_limit"),
])
def test_bad_input_raises(kwargs, match):
    args = dict(utilities=[1.0, 0.0], groups=[0, 1], prompt_index=[0, 1], q=0.5)
    args.update({k: v for k, v in kwargs.items() if k in args})
    options = {k: v for k, v in kwargs.items() if k not in args}
    with pytest.raises(ValueError, match=match):
        budget.solve(args["utilities"], args["groups"], args["prompt_index"], args["q"], **options)


def test_exact_refuses_what_it_cannot_certify():
    rng = np.random.default_rng(5)
    g, p = rng.integers(0, 3, 64), np.repeat(np.arange(16), 4)
    u = rng.random(64) + 0.5 * (g > 0)  # costly responses better everywhere: both budget rows bind
    with pytest.raises(ValueError, match="method"):
        budget.solve(u, g, p, [0.1, 0.1], max_per_prompt=2, method="exact")
    assert budget.solve(u, g, p, [0.1, 0.1], max_per_prompt=2).method == "highs"
    assert budget.solve(u, g, p, [1.0, 1.0], max_per_prompt=2, method="exact").status == "optimal"


def test_highs_time_limit_is_reported():
    rng = np.random.default_rng(0)
    n = 20000
    g, p = rng.integers(0, 3, n), rng.integers(0, n // 8, n)
    u = rng.random(n)
    # a microsecond stops HiGHS before its first solution: the status says so, and what comes back (nothing
    # selected) is still feasible; with time to spare the same ILP solves to optimality
    sel = budget.solve(u, g, p, [0.2, 0.1], max_per_prompt=2, method="highs", time_limit=1e-6)
    assert sel.status == "time_limit"
    assert np.all(np.bincount(g[sel.weights > 0], minlength=3)[1:] <= sel.budgets)
    assert sel.objective <= sel.upper_bound
    assert budget.solve(u, g, p, [0.2, 0.1], max_per_prompt=2, method="highs", time_limit=60).status == "optimal"


def test_margin_utility():
    r = np.array([1, 0, 1, 1, 0.0])
    g = np.array([0, 1, 1, 0, 0])
    p = np.array([0, 0, 0, 1, 1])
    # prompt 0: regular mean 1, extended mean 0.5; prompt 1: no extended sample -> margin = reward
    assert budget.utilities(r, g, p, kind="margin").tolist() == [0.5, -1.0, 0.0, 1.0, 0.0]
    assert budget.utilities(r, g, p, kind="reward").tolist() == r.tolist()
    with pytest.raises(ValueError, match="kind"):
        budget.utilities(r, g, p, kind="advantage")


def test_shares_without_cap_count_samples():
    u = np.array([1.0, 0.9, 0.8, 0.7, 0.1, 0.0])
    g = np.array([1, 1, 1, 0, 0, 0])
    sel = budget.solve(u, g, np.zeros(6, int), 0.34)  # B = floor(0.34 * 6) = 2 of the 6 samples
    assert sel.weights.tolist() == [1, 1, 0, 1, 1, 0] and sel.budgets.tolist() == [2]
    assert sel.group_share.tolist() == pytest.approx([2 / 6, 2 / 6])
    assert sel.group_density_selected.tolist() == pytest.approx([0.5, 0.5])
