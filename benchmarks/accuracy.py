"""Accuracy at real vocabularies against the float64 formula: max absolute error of the token log-probs and of
the gradient elements, per backend, on the cases tests/test_ops_real_vocab.py checks (2x of the torch backend).

    python -m benchmarks accuracy --out bench_out             # plain f32, torch, native at V = 32000, 49152, 128256
    python -m benchmarks accuracy --triton --out bench_out    # + the Triton row ops, interpreted, V = 32000, 16 rows
    python -m benchmarks accuracy --smollm2 --out bench_out   # + SmolLM2-135M's own hidden states and LM head

The cases, the ops and the oracle are the tests' own (tests/ops_cases.py, imported from the checkout), so the
table shows what the tests assert. Columns: `token_logp` (token_logprobs), `seq_d_hidden` / `seq_d_weight`
(sequence_logprobs' gradients: forward, then the recomputing backward), `loss_d_hidden` / `loss_d_weight`
(weighted_sequence_loss: the fused forward_backward). "plain f32" = autograd through
``log_softmax(h @ W.T)`` in f32 with the [T, V] logits materialised.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

from benchmarks.common import package_note, write_results

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
SMOLLM2_TEXT = ("Question: A farmer has 17 sheep and all but 9 run away. How many are left? Let's think step by "
                "step. All but 9 run away means 9 remain, so the answer is 9. The Treaty of Westphalia, signed in "
                "1648, ended the Thirty Years' War and set out the principle of state sovereignty.")
COLUMNS = ["case", "backend", "token_logp", "seq_d_hidden", "seq_d_weight", "loss_d_hidden", "loss_d_weight"]


def max_error(got, want) -> float:
    return float((got.detach().double() - want.detach().double()).abs().max())


def backend_rows(label: str, case) -> list[dict]:
    from ibpo_fast import ops
    from ibpo_fast.ops import TorchBackend
    from ops_cases import PlainF32Backend, oracle, run_op

    backends = {"plain f32": PlainF32Backend(), "torch": TorchBackend()}
    if ops.native_available():
        from ibpo_fast.ops.native import NativeBackend

        backends["native"] = NativeBackend()
    want = {op: oracle(case, op) for op in ("token", "sequence", "loss-tokens")}
    rows = []
    for name, backend in backends.items():
        token, seq, loss = (run_op(op, case, backend) for op in want)
        rows.append({"case": label, "backend": name, "token_logp": max_error(token[0], want["token"][0]),
                     "seq_d_hidden": max_error(seq[1], want["sequence"][1]),
                     "seq_d_weight": max_error(seq[2], want["sequence"][2]),
                     "loss_d_hidden": max_error(loss[1], want["loss-tokens"][1]),
                     "loss_d_weight": max_error(loss[2], want["loss-tokens"][2])})
        print(rows[-1], flush=True)
    return rows


def triton_rows() -> list[dict]:
    """The row ops at V = 32000 on 16 rows (test_triton_rows_within_2x): forward's log-probs, then the one
    forward_backward that also serves backward; reported in the token and loss columns."""
    from ibpo_fast.ops import TorchBackend
    from ibpo_fast.ops.triton_backend import TritonBackend
    from ops_cases import row_case
    from test_ops_real_vocab import SHAPES

    vocab, hidden_size = SHAPES[0]
    case = row_case(vocab, hidden_size)
    logp64, d_hidden64, d_weight64 = case.want
    rows = []
    for name, backend in (("torch rows", TorchBackend()), ("triton rows (interpreted)", TritonBackend())):
        logp, _ = backend.forward(case.hidden, case.weight, case.targets, case.inv_temperature)
        _, d_hidden, d_weight = backend.forward_backward(case.hidden, case.weight, case.targets, case.coef,
                                                         case.inv_temperature)
        rows.append({"case": f"V{vocab}xH{hidden_size}, 16 rows", "backend": name,
                     "token_logp": max_error(logp, logp64), "loss_d_hidden": max_error(d_hidden, d_hidden64),
                     "loss_d_weight": max_error(d_weight, d_weight64)})
    return rows


def smollm2_case():
    from ibpo_fast.models import load_model
    from ops_cases import Case

    model, tokenizer = load_model("smollm2")
    ids = tokenizer(SMOLLM2_TEXT, return_tensors="pt").input_ids[0]
    with torch.no_grad():
        hidden = model.model(input_ids=ids[None], use_cache=False).last_hidden_state[0, :-1].contiguous()
    T = hidden.shape[0]
    return Case(hidden=hidden, weight=model.lm_head.weight.detach().contiguous(), targets=ids[1:].clone(),
                cu_seqlens=torch.tensor([0, T], dtype=torch.int32), loss_mask=torch.ones(T, dtype=torch.bool),
                seq_weights=torch.ones(1), temperature=1.0)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="bench_out")
    parser.add_argument("--triton", action="store_true", help="add the Triton rows (TRITON_INTERPRET=1, ~1 min)")
    parser.add_argument("--smollm2", action="store_true", help="add SmolLM2-135M's hidden states (loads the model)")
    parser.add_argument("--quick", action="store_true", help="V = 32000 only")
    parser.add_argument("--device", default="cpu", choices=("cpu",))
    args = parser.parse_args(argv)
    if args.triton:
        if "ibpo_fast.ops.triton_kernels" in sys.modules and not os.environ.get("TRITON_INTERPRET"):
            raise SystemExit("accuracy --triton: the Triton kernels were imported before TRITON_INTERPRET=1 was set")
        os.environ["TRITON_INTERPRET"] = "1"
    print(package_note(), flush=True)
    from ops_cases import packed_case
    from test_ops_real_vocab import LENGTHS, SHAPES

    rows = []
    for vocab, hidden_size in SHAPES[:1] if args.quick else SHAPES:
        case = packed_case(vocab + hidden_size, LENGTHS, hidden_size, vocab, temperature=0.9, lm_logits=True)
        rows += backend_rows(f"V{vocab}xH{hidden_size}", case)
    if args.smollm2:
        case = smollm2_case()
        rows += backend_rows(f"SmolLM2-135M, {case.hidden.shape[0]} tokens", case)
    if args.triton:
        rows += triton_rows()
    return write_results(args.out, "accuracy", rows, columns=COLUMNS)


if __name__ == "__main__":
    main()
