"""The algorithm on a synthetic bandit: IBPO's iterations reach the allocation the LP says is optimal.

Three prompt types with known success probabilities for a regular and an extended response; the policy
is a softmax over the two formats per type. Each iteration samples n responses per prompt, selects with
`ibpo_fast.budget.solve` (m = 1, budget q) and takes a weighted SFT step on the selected responses, the
upper level of DESIGN.md §1. The optimum over the true probabilities is the LP
    max_x Σ_t d_t (p_reg,t + x_t (p_ext,t − p_reg,t))   s.t.  Σ_t d_t x_t ≤ q,  0 ≤ x_t ≤ 1,
with x_t the extended share of type t; it is solved here with HiGHS.
"""
import highspy
import numpy as np

from ibpo_fast import budget

P_REGULAR = np.array([0.9, 0.5, 0.05])  # easy, medium, hard
P_EXTENDED = np.array([0.95, 0.9, 0.7])
DENSITY = np.full(3, 1 / 3)  # prompt types are equally likely


def lp_allocation(q):
    """Optimal extended share per type over the true probabilities."""
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    k = len(DENSITY)
    h.addVars(k, np.zeros(k), np.ones(k))
    h.changeColsCost(k, np.arange(k, dtype=np.int32), -DENSITY * (P_EXTENDED - P_REGULAR))  # HiGHS minimises
    h.addRow(-highspy.kHighsInf, q, k, np.arange(k, dtype=np.int32), DENSITY)
    h.run()
    assert h.getModelStatus() == highspy.HighsModelStatus.kOptimal
    return np.array(h.getSolution().col_value)


def run_ibpo(q, *, iterations=300, num_prompts=30, n=8, lr=0.5, seed=0, utility="value"):
    rng = np.random.default_rng(seed)
    logits = np.zeros((3, 2))  # [type, format]: 0 regular, 1 extended; starts undecided
    selected_shares = []
    for _ in range(iterations):
        types = rng.integers(0, 3, num_prompts)
        prompt = np.repeat(np.arange(num_prompts), n)
        policy = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        extended = (rng.random(len(prompt)) < policy[types[prompt], 1]).astype(np.int64)
        success = np.where(extended, P_EXTENDED[types[prompt]], P_REGULAR[types[prompt]])
        reward = (rng.random(len(prompt)) < success).astype(np.float64)
        utilities = budget.utilities(reward, extended, prompt, kind=utility)
        selection = budget.solve(utilities, extended, prompt, q, max_per_prompt=1)
        w = selection.weights
        selected_shares.append((w * extended).sum() / num_prompts)
        if w.sum() == 0:
            continue
        # weighted SFT: gradient of Σ_i w_i log π(a_i | t_i) / Σ w wrt the logits
        grad = np.zeros_like(logits)
        np.add.at(grad, (types[prompt], extended), w)
        np.add.at(grad, types[prompt], -w[:, None] * policy[types[prompt]])
        logits += lr * grad / w.sum() * 3  # ×3: each type gets about a third of the selection
    policy = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return policy[:, 1], np.array(selected_shares)


def test_lp_optimum_spends_the_budget_on_the_hard_type():
    np.testing.assert_allclose(lp_allocation(1 / 3), [0, 0, 1], atol=1e-9)
    np.testing.assert_allclose(lp_allocation(0.5), [0, 0.5, 1], atol=1e-9)


def test_ibpo_converges_to_the_lp_allocation_within_budget():
    # q = 1/3 is the hard type's density: the LP spends the whole budget there. (With the value utility
    # the steps that draw fewer hard prompts than the budget give the slack to medium prompts, while the
    # steps that draw more leave the excess hard prompts without a target, since their regular answers
    # are rarely right: the policy ends near [0, 0.25, 1], density 0.42. A budget exactly at a type's
    # density is where the per-batch cap and the policy's density part.)
    q = 1 / 3
    allocation, selected_shares = run_ibpo(q, utility="reward")
    np.testing.assert_allclose(allocation, lp_allocation(q), atol=0.12)
    assert selected_shares.max() <= q + 1e-12  # the ILP never exceeds the budget
    assert float(DENSITY @ allocation) <= q + 0.05  # the policy itself keeps to it (sampled share)


def test_zero_budget_learns_regular_everywhere():
    allocation, selected_shares = run_ibpo(0.0, iterations=150)
    assert selected_shares.max() == 0
    assert allocation.max() < 0.1


def test_slack_budget_reward_vs_margin_vs_value_utility():
    """With budget to spare (q = 0.5) the LP also gives half of the medium prompts an extended response.
    Reward utility does not get there: with n = 8 samples some regular response of a medium prompt is
    almost always right, and the ILP prefers it (cheaper among equals), so the policy learns regular on
    medium prompts ([0, 0, 1]). The group value (the default) and the paper's margin value an extended
    answer by its group's success rate on that prompt and land near the LP allocation."""
    reward_allocation, _ = run_ibpo(0.5, utility="reward")
    np.testing.assert_allclose(reward_allocation, [0, 0, 1], atol=0.05)
    for utility in ("value", "margin"):
        allocation, selected_shares = run_ibpo(0.5, utility=utility)
        np.testing.assert_allclose(allocation, lp_allocation(0.5), atol=0.12)
        assert selected_shares.max() <= 0.5 + 1e-12
