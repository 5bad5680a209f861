"""Hostile op arguments raise ValueError / TypeError naming the argument (never a raw allocator or schema
error, never a silently wrong result)."""

from __future__ import annotations

import pytest
import torch

import pointins.ops as ops


def test_connected_components_huge_group_ids_do_not_merge_samples():
    # five samples, two points each, all at the same spot. With the largest group id 2^62 - 1 the old pair key
    # sample * (gmax + 1) + group wrapped around at sample 4 (4 * 2^62 = 2^64) and merged sample 4 into sample 0.
    coord = torch.zeros(10, 3)
    offsets = torch.arange(0, 11, 2)
    group = torch.zeros(10, dtype=torch.long)
    group[3] = 2**62 - 1
    cc = ops.connected_components(coord, offsets, 0.5, group=group)
    sample = torch.arange(10) // 2
    for c in cc.labels.unique():
        assert sample[cc.labels == c].unique().numel() == 1, "a component crosses samples"
    assert cc.num_components == 6  # one per sample, plus the lone point of group 2^62 - 1
    ref = ops.connected_components(coord, offsets, 0.5, group=torch.where(group > 0, 1, 0))
    assert torch.equal(cc.labels, ref.labels)


@pytest.mark.parametrize("scale", [float("nan"), float("inf"), 0.0, -0.5])
def test_patch_attention_bad_scale(scale):
    qkv = torch.randn(4, 6)
    idx = torch.arange(4)
    with pytest.raises(ValueError, match="scale"):
        ops.patch_attention(qkv, idx, idx, idx, torch.tensor([0, 4]), 1, scale=scale)


def test_sparse_conv_checks_a_given_transpose():
    g = torch.randint(0, 6, (40, 3), dtype=torch.int32)
    g = torch.unique(g, dim=0)
    kmap = ops.kernel_map(g, kernel_size=3)
    n = g.shape[0]
    x = torch.randn(n, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(27, 4, 5, dtype=torch.float64)
    good = ops.transpose_kernel_map(kmap, n)
    ops.sparse_conv(x, kmap, w, kernel_map_t=good).sum().backward()
    wrong = good.roll(1, dims=0)
    with pytest.raises(ValueError, match="not the transpose"):
        ops.sparse_conv(x, kmap, w, kernel_map_t=wrong)
    out_of_range = good.clone()
    out_of_range[0, 0] = n + 5
    with pytest.raises(ValueError, match="kernel_map_t entries"):
        ops.sparse_conv(x, kmap, w, kernel_map_t=out_of_range)


def test_kernel_map_pairs_rejects_other_negatives():
    with pytest.raises(ValueError, match="-1"):
        ops.kernel_map_pairs(torch.tensor([[0, -7], [1, -1]]))
    with pytest.raises(ValueError, match="-1"):
        ops.transpose_kernel_map(torch.tensor([[0, -7], [1, -1]]), 2)
    _, _, k = ops.kernel_map_pairs(torch.tensor([[0, -1], [1, 0]]))
    assert k.tolist() == [0, 2, 3]


def test_huge_ids_and_seeds_name_the_argument():
    c = torch.rand(10, 3)
    batch = torch.tensor([0] * 9 + [2**40])
    for call in (lambda: ops.grid_coord(c, batch=batch, grid_size=0.1),
                 lambda: ops.kmeans(torch.rand(10, 4), batch=batch, k=2),
                 lambda: ops.connected_components(c, batch=batch, radius=0.1)):  # fmt: skip
        with pytest.raises(ValueError, match="batch"):
            call()
    with pytest.raises(ValueError, match="index"):
        ops.segment_reduce(torch.rand(3, 2), index=torch.tensor([0, 1, 2**40]))
    with pytest.raises(ValueError, match="num_segments"):
        ops.segment_reduce(torch.rand(3, 2), index=torch.tensor([0, 1, 2]), num_segments=2**40)
    with pytest.raises(ValueError, match="seed"):
        ops.voxelize(c, torch.tensor([0, 10]), 0.1, mode="train", seed=2**70)
    with pytest.raises(ValueError, match="seed"):
        ops.kmeans(torch.rand(10, 4), None, 2, seed=2**70)
    with pytest.raises(TypeError, match="seed"):
        ops.kmeans(torch.rand(10, 4), None, 2, seed=1.5)
    # in range still works
    assert ops.kmeans(torch.rand(10, 4), None, 2, seed=2**63 - 1).labels.shape == (10,)
