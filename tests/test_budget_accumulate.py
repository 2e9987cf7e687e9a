"""SampleBuffer: the window policy, solving over it, and checkpoint round trips."""
import numpy as np
import pytest

from ibpo_fast import budget


def step(rng, num_prompts=4, per_prompt=4):
    n = num_prompts * per_prompt
    return rng.integers(0, 2, n).astype(float), rng.integers(0, 2, n), np.repeat(np.arange(num_prompts), per_prompt)


def test_window_keeps_last_steps_and_renumbers_prompts():
    buffer = budget.SampleBuffer(num_steps=2)
    for t in range(3):
        buffer.push(np.full(2, float(t)), np.array([0, 1]), np.array([10, 10]))  # same local id each step
    utilities, groups, prompts = buffer.window()
    assert utilities.tolist() == [1, 1, 2, 2]  # step 0 forgotten
    assert prompts.tolist() == [1, 1, 2, 2]  # every (step, prompt) is its own prompt row
    assert (buffer.steps_pushed, buffer.samples_pushed, buffer.prompts_pushed, len(buffer)) == (3, 6, 3, 4)


def test_solve_over_window_returns_newest_weights():
    rng = np.random.default_rng(0)
    buffer = budget.SampleBuffer(num_steps=3)
    for _ in range(5):
        buffer.push(*step(rng))
    newest, selection = buffer.solve(0.25, max_per_prompt=1)
    direct = budget.solve(*buffer.window(), 0.25, max_per_prompt=1)
    assert newest.tolist() == direct.weights[-16:].tolist()
    assert selection.budgets.tolist() == [3]  # floor(0.25 * 1 * 12 prompts), not floor(0.25 * 4) = 1
    assert selection.objective == direct.objective


def test_state_dict_round_trip_resumes_exactly():
    rng = np.random.default_rng(1)
    buffer = budget.SampleBuffer(num_steps=2)
    for _ in range(3):
        buffer.push(*step(rng))
    state = buffer.state_dict()
    restored = budget.SampleBuffer(num_steps=7)
    restored.load_state_dict(state)
    batch = step(rng)
    for b in (buffer, restored):
        b.push(*batch)
    assert restored.state_dict()["prompts_pushed"] == buffer.state_dict()["prompts_pushed"] == 16
    for a, b in zip(buffer.window(), restored.window()):
        assert a.tolist() == b.tolist()
    assert buffer.solve(0.5, max_per_prompt=2)[0].tolist() == restored.solve(0.5, max_per_prompt=2)[0].tolist()
    assert all(isinstance(v, (int, list)) for v in state.values())


def test_empty_buffer_and_bad_input():
    buffer = budget.SampleBuffer(num_steps=1)
    newest, selection = buffer.solve(0.5)
    assert newest.shape == (0,) and selection.status == "optimal"
    with pytest.raises(ValueError, match="num_steps"):
        budget.SampleBuffer(num_steps=0)
    with pytest.raises(ValueError, match="utilities"):
        buffer.push([np.nan], [0], [0])
    with pytest.raises(ValueError, match="state"):
        buffer.load_state_dict({"num_steps": 1})
