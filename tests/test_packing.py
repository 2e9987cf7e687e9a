import pytest
import torch

from ibpo_fast.packing import IGNORE_INDEX, PackedBatch, pack


def test_pack_builds_every_field():
    batch = pack([([1, 2, 3], [4, 5]), ([6], []), ([], [7, 8])], prompt_index=[0, 0, 1], reward=[1.0, 0.0, 1.0])
    assert batch.cu_seqlens.tolist() == [0, 5, 6, 8]
    assert batch.input_ids.tolist() == [1, 2, 3, 4, 5, 6, 7, 8]
    assert batch.position_ids.tolist() == [0, 1, 2, 3, 4, 0, 0, 1]
    # targets stay inside each sequence; the last position of each has none
    assert batch.targets.tolist() == [2, 3, 4, 5, IGNORE_INDEX, IGNORE_INDEX, 8, IGNORE_INDEX]
    # the mask sits on positions that predict a response token
    assert batch.loss_mask.tolist() == [False, False, True, True, False, False, True, False]
    assert batch.prompt_index.tolist() == [0, 0, 1] and batch.weight.tolist() == [1.0, 1.0, 1.0]
    assert batch.num_sequences == 3 and batch.num_tokens == 8


def test_empty_batch():
    batch = pack([])
    assert batch.num_sequences == 0 and batch.num_tokens == 0 and batch.cu_seqlens.tolist() == [0]


def test_validation_names_the_field():
    batch = pack([([1], [2, 3])])
    with pytest.raises(ValueError, match="^cu_seqlens:"):
        batch.with_(cu_seqlens=torch.tensor([0, 2], dtype=torch.int32))
    with pytest.raises(ValueError, match="^weight:"):
        batch.with_(weight=torch.ones(2))
    with pytest.raises(ValueError, match="^loss_mask:"):
        PackedBatch(**{**batch.__dict__, "loss_mask": batch.loss_mask.long()})

