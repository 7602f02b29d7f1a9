"""Bad input gets a clear error naming the operation and the offending shapes, dtypes or values."""
import numpy as np
import pytest

import tinyfw as fw
import tinyfw.nn as nn
import tinyfw.nn.functional as F


def test_broadcast_mismatch_names_op_and_shapes():
    with pytest.raises(ValueError, match=r"add: shapes \(2, 3\) and \(4,\)"):
        fw.zeros(2, 3) + fw.zeros(4)
    with pytest.raises(ValueError, match=r"mul: shapes"):
        fw.zeros(2, 3) * fw.zeros(3, 2)


def test_matmul_mismatch():
    with pytest.raises(ValueError, match=r"matmul: shapes \(2, 3\) and \(4, 5\)"):
        fw.zeros(2, 3) @ fw.zeros(4, 5)
    with pytest.raises(ValueError, match="matmul: batch dims"):
        fw.zeros(2, 3, 4) @ fw.zeros(3, 4, 5)


def test_linear_mismatch():
    with pytest.raises(ValueError, match=r"linear: input of shape \(2, 3\)"):
        nn.Linear(4, 5)(fw.zeros(2, 3))


def test_reshape_bad_shape():
    with pytest.raises(ValueError, match=r"reshape: cannot reshape a tensor of shape \(2, 3\)"):
        fw.zeros(2, 3).reshape(4, 2)


def test_dim_out_of_range():
    with pytest.raises(ValueError, match="sum: dim 3 is out of range"):
        fw.zeros(2, 3).sum(dim=3)
    with pytest.raises(ValueError, match="softmax: dim"):
        F.softmax(fw.zeros(2, 3), dim=2)


def test_permute_not_a_permutation():
    with pytest.raises(ValueError, match="permute"):
        fw.zeros(2, 3, 4).permute(0, 0, 1)


def test_cat_mismatch():
    with pytest.raises(ValueError, match="cat: shapes"):
        fw.cat([fw.zeros(2, 3), fw.zeros(3, 3)], dim=1)


def test_index_out_of_bounds():
    with pytest.raises(IndexError, match=r"index: .*shape \(2, 3\)"):
        fw.zeros(2, 3)[5]
    with pytest.raises(TypeError, match="index"):
        fw.zeros(2, 3)[fw.tensor([0.0, 1.0])]


def test_embedding_float_ids_and_out_of_range():
    emb = nn.Embedding(5, 3)
    with pytest.raises(TypeError, match="embedding: ids must be an integer tensor"):
        emb(fw.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match=r"embedding: id 5 is out of range for 5 embeddings"):
        emb(fw.tensor([0, 5]))
    with pytest.raises(ValueError, match=r"embedding: id -1"):
        emb(fw.tensor([-1]))


def test_cross_entropy_bad_targets():
    logits = fw.zeros(3, 4)
    with pytest.raises(ValueError, match=r"cross_entropy: target value 4 is out of range for 4"):
        F.cross_entropy(logits, fw.tensor([0, 1, 4]))
    with pytest.raises(TypeError, match="cross_entropy: target must be an integer"):
        F.cross_entropy(logits, fw.tensor([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match=r"cross_entropy: logits of shape \(3, 4\)"):
        F.cross_entropy(logits, fw.tensor([0, 1]))
    with pytest.raises(ValueError, match="reduction"):
        F.cross_entropy(logits, fw.tensor([0, 1, 2]), reduction="avg")


def test_cross_entropy_all_ignored_is_nan_like_torch():
    loss = F.cross_entropy(fw.zeros(2, 3), fw.tensor([-100, -100]))
    assert np.isnan(loss.item())


def test_gelu_and_dropout_arguments():
    with pytest.raises(ValueError, match="gelu: approximate"):
        F.gelu(fw.zeros(2), approximate="fast")
    with pytest.raises(ValueError, match="dropout: probability"):
        F.dropout(fw.zeros(2), p=1.5)


def test_where_needs_bool_condition():
    with pytest.raises(TypeError, match="where: condition must be a bool tensor"):
        fw.where(fw.ones(2), fw.ones(2), fw.zeros(2))


def test_item_on_many_elements():
    with pytest.raises(ValueError, match=r"item: .*shape \(2,\)"):
        fw.zeros(2).item()


def test_unknown_device():
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        fw.zeros(2, device="tpu")


def test_ragged_data():
    with pytest.raises(TypeError, match=r"tensor: cannot make a tensor from list data \(ragged "
                                        "lists"):
        fw.tensor([[1.0, 2.0], [3.0]])
