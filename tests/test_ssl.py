"""The PointINS method pieces against plain references: Sinkhorn, losses, EMA, ODR, SCR, frames, matching."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from pointins.data import synthetic
from pointins.data import transforms as T
from pointins.data.collate import collate
from pointins.data.views import ViewConfig, ViewDataset, make_views, prepare_scene
from pointins.models import build_backbone
from pointins.ssl import (
    EmpiricalPrior,
    LogNormalPrior,
    PointINS,
    SSLConfig,
    WeibullPrior,
    ema_update,
    get_prior,
    match_views,
    odr,
    offset_loss,
    param_groups,
    points_to_original,
    rank_within,
    scr,
    semantic_loss,
    sinkhorn_knopp,
    vectors_to_original,
    vectors_to_view,
    zipf_marginal,
)
from pointins.ssl.semantic import semantic_terms, softmap_loss
from pointins.ssl.teacher import block_index

# --- semantic branch -------------------------------------------------------------------------------------------


def _sinkhorn_reference(scores, temp, iters, marginal=None):
    """DINOv2-style Sinkhorn-Knopp written with plain loops (K x B layout)."""
    q = torch.exp(scores.double() / temp).t()
    k, b = q.shape
    q /= q.sum()
    for _ in range(iters):
        r = q.sum(1, keepdim=True)
        q /= r
        if marginal is None:
            q /= k
        else:
            order = torch.argsort(r.flatten(), descending=True, stable=True)
            w = torch.empty(k, dtype=torch.float64)
            w[order] = marginal
            q *= w[:, None]
        q /= q.sum(0, keepdim=True)
        q /= b
    return (q * b).t()


@pytest.mark.parametrize("zipf", [0.0, 1.3])
def test_sinkhorn_matches_reference_and_balances(zipf):
    g = torch.Generator().manual_seed(0)
    s = torch.randn(300, 16, generator=g) * 0.3
    q = sinkhorn_knopp(s, 0.05, iters=3, zipf_alpha=zipf)
    ref = _sinkhorn_reference(s, 0.05, 3, zipf_marginal(16, zipf) if zipf else None)
    torch.testing.assert_close(q.double(), ref, rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(q.sum(1), torch.ones(300), rtol=1e-5, atol=1e-5)
    many = sinkhorn_knopp(s, 0.05, iters=200, zipf_alpha=zipf).double()
    col = many.sum(0) / 300
    want = zipf_marginal(16, zipf) if zipf else torch.full((16,), 1 / 16, dtype=torch.float64)
    torch.testing.assert_close(torch.sort(col, descending=True).values, torch.sort(want, descending=True).values,
                               rtol=1e-3, atol=1e-4)  # fmt: skip


def test_sinkhorn_errors_and_empty():
    with pytest.raises(ValueError, match="temperature"):
        sinkhorn_knopp(torch.randn(4, 3), 0.0)
    with pytest.raises(ValueError, match=r"\(N, K\)"):
        sinkhorn_knopp(torch.randn(4), 0.1)
    assert sinkhorn_knopp(torch.zeros(0, 5), 0.1).shape == (0, 5)


def test_semantic_loss_is_per_scene_mean_of_cross_entropy():
    g = torch.Generator().manual_seed(1)
    s = torch.randn(10, 6, generator=g)
    q = torch.softmax(torch.randn(10, 6, generator=g), 1)
    sample = torch.tensor([0, 0, 0, 1, 1, 1, 1, 1, 1, 1])
    ce = -(q * torch.log_softmax(s / 0.1, 1)).sum(1)
    want = (ce[:3].mean() + ce[3:].mean()) / 2
    torch.testing.assert_close(semantic_loss(s, q, sample, 0.1, 3), want)


def _softmap_reference(s, plan, group, temp):
    """DOS's softmap KL written with loops: per group and prototype, teacher column / its sum vs the student's
    softmax over the group's rows; KL summed over rows, mean over prototypes, mean over groups."""
    out = []
    for b in sorted(set(group.tolist())):
        rows = [i for i in range(len(group)) if group[i] == b]
        kls = []
        for k in range(s.shape[1]):
            t = [float(plan[i, k]) for i in rows]
            tot = sum(t)
            z = [math.exp(float(s[i, k]) / temp) for i in rows]
            zs = sum(z)
            kls.append(sum(ti / tot * (math.log(ti / tot) - math.log(zi / zs)) for ti, zi in zip(t, z, strict=True)
                           if ti > 0))  # fmt: skip
        out.append(sum(kls) / len(kls))
    return sum(out) / len(out)


def test_softmap_loss_matches_loop_reference():
    g = torch.Generator().manual_seed(3)
    s = torch.randn(40, 7, generator=g)
    plan = sinkhorn_knopp(torch.randn(40, 7, generator=g), 0.1, iters=3, zipf_alpha=1.3, rows="plan")
    group = torch.randint(0, 3, (40,), generator=g)
    got = softmap_loss(s, plan, group, 0.1, 3)
    assert float(got) == pytest.approx(_softmap_reference(s, plan, group, 0.1), rel=1e-4)
    # equal softmaps: zero loss; gradient flows to the student scores
    same = softmap_loss(torch.log(plan.double()).float() * 0.1, plan, torch.zeros(40, dtype=torch.long), 0.1)
    assert abs(float(same)) < 1e-4
    x = s.clone().requires_grad_(True)
    softmap_loss(x, plan, group, 0.1).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_softmap_loss_gradient_matches_finite_differences_with_an_empty_group():
    """The grouped-slices implementation: its gradient (float64) against central differences of the loop
    reference, with unsorted group ids and a group id that has no rows (num_groups larger than the ids used)."""
    g = torch.Generator().manual_seed(5)
    s = torch.randn(12, 4, generator=g, dtype=torch.float64)
    plan = sinkhorn_knopp(torch.randn(12, 4, generator=g), 0.1, iters=3, rows="plan").double()
    group = torch.tensor([2, 0, 2, 2, 0, 3, 3, 0, 2, 3, 0, 3])  # group 1 empty
    x = s.clone().requires_grad_(True)
    loss = softmap_loss(x, plan, group, 0.1, 4)
    assert float(loss) == pytest.approx(_softmap_reference(s, plan, group, 0.1), rel=1e-9)
    loss.backward()
    eps = 1e-6
    for i, k in [(0, 0), (3, 2), (5, 1), (11, 3), (7, 0)]:
        up, dn = s.clone(), s.clone()
        up[i, k] += eps
        dn[i, k] -= eps
        fd = (_softmap_reference(up, plan, group, 0.1) - _softmap_reference(dn, plan, group, 0.1)) / (2 * eps)
        assert float(x.grad[i, k]) == pytest.approx(fd, rel=1e-5, abs=1e-9)


def test_zipf_sinkhorn_plan_marginals():
    """rows="plan": every point carries 1/N; prototype columns follow w_k ~ k^-alpha by mass rank."""
    g = torch.Generator().manual_seed(4)
    sc = torch.randn(500, 12, generator=g) * 0.5
    plan = sinkhorn_knopp(sc, 0.1, iters=300, zipf_alpha=1.5, rows="plan").double()
    torch.testing.assert_close(plan.sum(1), torch.full((500,), 1 / 500, dtype=torch.float64), rtol=1e-5, atol=1e-9)
    col = torch.sort(plan.sum(0), descending=True).values
    r = torch.arange(1, 13, dtype=torch.float64)
    torch.testing.assert_close(col, r.pow(-1.5) / r.pow(-1.5).sum(), rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("mode", ["dos", "sonata", "pooled"])
def test_semantic_terms_modes(mode):
    g = torch.Generator().manual_seed(5)
    ns, nt, k = 60, 40, 9
    s = torch.randn(ns, k, generator=g, requires_grad=True)
    t = torch.randn(nt, k, generator=g)
    ps, pt = torch.randint(0, ns, (120,), generator=g), torch.randint(0, nt, (120,), generator=g)
    sample = torch.randint(0, 2, (120,), generator=g)
    sview = torch.randint(-2, 2, (120,), generator=g)  # local views negative
    tview = torch.randint(0, 2, (120,), generator=g)
    cloud = (sview + 2) + 4 * sample
    loss, stats = semantic_terms(mode, s, t, ps, pt, sample, sview, tview, cloud, teacher_temp=0.05,
                                 zipf_alpha=1.3, num_samples=2)  # fmt: skip
    loss.backward()
    loss = loss.detach()
    assert torch.isfinite(loss) and s.grad.abs().sum() > 0
    if mode == "sonata":  # 2/8 mask + 2/8 roll + 4/8 unmask, each its own Sinkhorn over its pairs
        want = 0.0
        for name, w, sel in (("mask", 0.25, (sview >= 0) & (tview == sview)),
                             ("roll", 0.25, (sview >= 0) & (tview != sview)),
                             ("unmask", 0.5, (sview < 0) & (tview == 0))):  # fmt: skip
            idx = torch.nonzero(sel).flatten()
            q = _sinkhorn_reference(t[pt[idx]], 0.05, 3)
            ce = -(q.float() * torch.log_softmax(s[ps[idx]].detach() / 0.1, 1)).sum(1)
            per = [ce[cloud[idx] == c].mean() for c in torch.unique(cloud[idx])]
            want += w * float(torch.stack(per).mean())
            assert stats[f"loss_{name}"] == pytest.approx(float(torch.stack(per).mean()), rel=1e-4)
        assert float(loss) == pytest.approx(want, rel=1e-4)
    if mode == "dos":
        assert float(loss) == pytest.approx(0.5 * stats["loss_same"] + 0.5 * stats["loss_cross"], rel=1e-5)
    with pytest.raises(ValueError, match="mode"):
        semantic_terms("naive", s, t, ps, pt, sample, sview, tview, cloud, teacher_temp=0.05)


def test_offset_loss_formula():
    p = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    t = torch.tensor([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    torch.testing.assert_close(offset_loss(p, t), torch.tensor([2.0 + 1.0, 1.0 + 0.0]))
    # above the guard length the cosine is the plain one, for any scale
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(50, 3, generator=g) + 0.5, torch.randn(50, 3, generator=g) - 0.5
    plain = (a - b).abs().sum(1) + 1 - torch.nn.functional.cosine_similarity(a, b, dim=1)
    torch.testing.assert_close(offset_loss(a, b, eps=1e-3), plain)


def test_offset_loss_cosine_gradient_is_bounded_near_zero():
    """The unguarded (1 - cos) gradient grows as 1 / |pred|; guarded, it stays below 1 / eps per unit of target
    direction and the loss stays finite (and differentiable) at an exactly zero prediction or target."""
    t = torch.tensor([[0.3, -0.4, 0.5]]) * 2
    for length in (0.0, 1e-9, 1e-5, 1e-3, 0.009):
        p = (torch.tensor([[1.0, 1.0, 0.0]]) / 2**0.5 * length).requires_grad_(True)
        loss = offset_loss(p, t, eps=0.01).sum()
        (grad,) = torch.autograd.grad(loss, p)
        assert torch.isfinite(loss) and torch.isfinite(grad).all()
        assert float(grad.norm()) <= 3**0.5 + 1 / 0.01 + 1e-4, (length, grad)  # L1 part <= sqrt(3), cosine <= 1/eps
    p = torch.tensor([[0.1, 0.2, 0.3]], requires_grad=True)
    (grad,) = torch.autograd.grad(offset_loss(p, torch.zeros(1, 3)).sum(), p)
    assert torch.isfinite(grad).all()
    # the plain cosine at a 1e-5 m prediction: a gradient thousands of times larger (what the guard prevents)
    p = (torch.tensor([[1.0, 1.0, 0.0]]) / 2**0.5 * 1e-5).requires_grad_(True)
    (g_plain,) = torch.autograd.grad((1 - torch.nn.functional.cosine_similarity(p, t, dim=1)).sum(), p)
    assert float(g_plain.norm()) > 1e4


# --- priors and ODR --------------------------------------------------------------------------------------------


def test_prior_quantile_functions_match_scipy():
    u = torch.linspace(0.001, 0.999, 101, dtype=torch.float64)
    ln = LogNormalPrior(-0.5, 0.7).ppf(u).numpy()
    np.testing.assert_allclose(ln, stats.lognorm.ppf(u.numpy(), s=0.7, scale=math.exp(-0.5)), rtol=1e-9)
    wb = WeibullPrior(0.8, 1.7).ppf(u).numpy()
    np.testing.assert_allclose(wb, stats.weibull_min.ppf(u.numpy(), 1.7, scale=0.8), rtol=1e-9)
    emp = EmpiricalPrior([0.0, 1.0, 3.0])
    torch.testing.assert_close(emp.ppf(torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0])),
                               torch.tensor([0.0, 0.5, 1.0, 2.0, 3.0]))  # fmt: skip


def test_get_prior_forms_and_errors(tmp_path):
    assert isinstance(get_prior("indoor"), LogNormalPrior)
    assert get_prior("lognormal:-1,0.5") == LogNormalPrior(-1.0, 0.5)
    assert get_prior("weibull:1,2") == WeibullPrior(1.0, 2.0)
    f = tmp_path / "p.json"
    f.write_text('{"family": "empirical", "quantiles": [0, 0.5, 2.0]}')
    assert isinstance(get_prior(str(f)), EmpiricalPrior)
    with pytest.raises(ValueError, match="neither a preset"):
        get_prior("nonsense")
    with pytest.raises(ValueError, match="two numbers"):
        get_prior("lognormal:1")
    with pytest.raises(ValueError, match="non-decreasing"):
        EmpiricalPrior([0.0, 2.0, 1.0])
    f.write_text("{broken")
    with pytest.raises(ValueError, match="not a prior file"):
        get_prior(str(f))


def test_rank_within_matches_numpy():
    g = torch.Generator().manual_seed(2)
    v = torch.randint(0, 5, (50,), generator=g).float()  # ties
    off = torch.tensor([0, 7, 7, 30, 50])
    r = rank_within(v, off)
    for a, b in zip(off[:-1].tolist(), off[1:].tolist(), strict=True):
        want = np.argsort(np.argsort(v[a:b].numpy(), kind="stable"), kind="stable")
        np.testing.assert_array_equal(r[a:b].numpy(), want)


@pytest.mark.parametrize("prior", [LogNormalPrior(-0.6, 0.5), EmpiricalPrior([0.0, 0.1, 0.4, 2.0])])
@pytest.mark.parametrize("directions", [True, False])
def test_odr_gives_exact_prior_quantiles_in_order(prior, directions):
    g = torch.Generator().manual_seed(3)
    o = torch.randn(120, 3, generator=g) * torch.rand(120, 1, generator=g) * 0.01  # collapsed offsets
    off = torch.tensor([0, 1, 40, 120])
    out = odr(o, off, prior, directions=directions, min_norm=0.0)  # every offset, however small, counts
    r_in, r_out = o.norm(dim=1), out.norm(dim=1)
    for a, b in zip(off[:-1].tolist(), off[1:].tolist(), strict=True):
        n = b - a
        want = prior.ppf((torch.arange(n, dtype=torch.float64) + 0.5) / n).float()
        torch.testing.assert_close(torch.sort(r_out[a:b]).values, want, rtol=1e-5, atol=1e-6)
        # order preserved: the i-th smallest input magnitude gets the i-th quantile
        torch.testing.assert_close(r_out[a:b][torch.argsort(r_in[a:b], stable=True)], want, rtol=1e-5, atol=1e-6)
    if not directions:  # directions untouched
        torch.testing.assert_close(out / r_out[:, None], o / r_in[:, None], rtol=1e-4, atol=1e-5)


def test_odr_directions_spread_over_the_sphere():
    g = torch.Generator().manual_seed(4)
    o = torch.randn(4000, 3, generator=g) * torch.tensor([1.0, 0.05, 0.05]) + torch.tensor([0.5, 0.0, 0.0])
    d = odr(o, torch.tensor([0, 4000]), "indoor")
    u = d / d.norm(dim=1, keepdim=True)
    assert u.mean(0).abs().max() < 0.05  # the input all pointed roughly along +x
    assert (u.abs() > 0.5).float().mean(0).min() > 0.2


def test_odr_leaves_degenerate_offsets_out():
    """Half the offsets zero (points with no instance): they stay zero, and the others get the prior's quantiles
    and component ranks among themselves, as if the zeros were not there."""
    g = torch.Generator().manual_seed(6)
    good = torch.randn(300, 3, generator=g) * 0.4
    o = torch.zeros(600, 3)
    o[::2] = good
    o[1::4] = 1e-7  # near-zero noise counts as degenerate too
    out = odr(o, torch.tensor([0, 600]), "indoor")
    assert bool((out[1::2] == 0).all())
    torch.testing.assert_close(out[::2], odr(good, torch.tensor([0, 300]), "indoor"))
    # a component that is 0 for every offset stays 0 (ties share their mean rank)
    flat = good.clone()
    flat[:, 2] = 0
    assert float(odr(flat, torch.tensor([0, 300]), "indoor")[:, 2].abs().max()) < 1e-6
    # two clouds, one all degenerate
    two = odr(torch.cat([good, torch.zeros(50, 3)]), torch.tensor([0, 300, 350]), "indoor")
    assert bool((two[300:] == 0).all()) and bool((two[:300].norm(dim=1) > 0).all())


# --- SCR -------------------------------------------------------------------------------------------------------


def test_scr_targets_are_means_of_pseudo_instances():
    g = torch.Generator().manual_seed(5)
    n = 400
    x = torch.rand(n, 3, generator=g) * 4
    feat = torch.randn(n, 8, generator=g)
    o = torch.randn(n, 3, generator=g) * 0.3
    off = torch.tensor([0, 150, 400])
    res = scr(feat, x, o, off, k=3, iters=4, radius=0.3, min_size=3, seed=1)
    lab = res.instances.numpy()
    t = res.target.numpy()
    assert res.num_instances == len(set(lab[lab >= 0]))
    for i in set(lab[lab >= 0].tolist()):
        m = lab == i
        # one segment and one cloud per pseudo-instance, target = mean of x over it minus x
        assert len(set(res.segments.numpy()[m])) == 1 and len(set((np.nonzero(m)[0] >= 150).tolist())) == 1
        np.testing.assert_allclose(t[m], x.numpy()[m].mean(0) - x.numpy()[m], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(t[lab < 0], o.numpy()[lab < 0])
    torch.testing.assert_close(res.centres, x + o)


def test_scr_recovers_two_objects_from_good_centres():
    g = torch.Generator().manual_seed(6)
    a = torch.rand(60, 3, generator=g) * 0.5
    b = torch.rand(60, 3, generator=g) * 0.5 + torch.tensor([0.7, 0.0, 0.0])  # close neighbours
    x = torch.cat([a, b])
    centre = torch.cat([a.mean(0).expand(60, 3), b.mean(0).expand(60, 3)])
    o = centre - x + torch.randn(120, 3, generator=g) * 0.01
    feat = torch.ones(120, 4)  # one semantic segment: only the offsets separate the two
    res = scr(feat, x, o, torch.tensor([0, 120]), k=1, radius=0.1, min_size=5)
    assert res.num_instances == 2
    torch.testing.assert_close(res.target + x, centre, rtol=1e-5, atol=1e-5)


# --- frames and matching ---------------------------------------------------------------------------------------


def _two_views(seed=0, jitter=0.0):
    rng = np.random.default_rng(seed)
    scene = prepare_scene(synthetic.indoor_scene(0, 0), 0.05, rng)
    cfg = ViewConfig(grid_size=0.05, max_points=6000, global_views=2, local_views=1, jitter_sigma=jitter,
                     global_ratio=(0.8, 1.0), elastic=None if not jitter else ((0.2, 0.4), (0.8, 1.6)))  # fmt: skip
    return scene, collate([{**make_views(scene, cfg, rng), "scene_points": len(scene["coord"])}])


def test_points_and_offsets_map_between_frames():
    scene, b = _two_views()
    g = b["global"]
    cloud = torch.repeat_interleave(torch.arange(2), g["offsets"].diff())
    orig = points_to_original(g["coord"], g["transform"], g["shift"], cloud)
    torch.testing.assert_close(orig, torch.from_numpy(scene["coord"][g["source"].numpy()]).float(),
                               rtol=0, atol=2e-5)  # fmt: skip
    # an offset to a scene point, expressed in each view, maps back to the same original vector
    target = torch.from_numpy(scene["coord"][0]).float()
    off_orig = target - orig
    tv = (torch.einsum("cij,j->ci", g["transform"], target.double()) + g["shift"]).float()  # target in each view
    off_view = tv[cloud] - g["coord"]
    torch.testing.assert_close(vectors_to_original(off_view, g["transform"], cloud), off_orig, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(vectors_to_view(off_orig, g["transform"], cloud), off_view, rtol=1e-4, atol=1e-4)
    # consistency between the two views: the same original vector seen from view 0 and view 1
    v = torch.randn(1, 3).expand(len(cloud), 3)
    both = vectors_to_original(vectors_to_view(v, g["transform"], cloud), g["transform"], cloud)
    torch.testing.assert_close(both, v, rtol=1e-5, atol=1e-5)


def test_match_views_equals_brute_force():
    g = torch.Generator().manual_seed(7)
    s_xyz, t_xyz = torch.rand(300, 3, generator=g) * 2, torch.rand(200, 3, generator=g) * 2
    s_sample, t_sample = torch.randint(0, 2, (300,), generator=g), torch.randint(0, 2, (200,), generator=g)
    s_view, t_view = torch.randint(-1, 2, (300,), generator=g), torch.randint(0, 2, (200,), generator=g)
    for same in (True, False):
        m = match_views(s_xyz, s_sample, s_view, t_xyz, t_sample, t_view, 0.25, same_view=same)
        cs, ct = torch.floor(s_xyz / 0.25).long(), torch.floor(t_xyz / 0.25).long()
        want = set()
        for i in range(300):
            for v in (0, 1):
                if not same and s_view[i] == v:
                    continue
                hits = [j for j in range(200) if t_sample[j] == s_sample[i] and t_view[j] == v and
                        bool((ct[j] == cs[i]).all())]  # fmt: skip
                if hits:
                    want.add((i, hits[0]))
        assert set(zip(m.student.tolist(), m.teacher.tolist(), strict=True)) == want
        torch.testing.assert_close(m.sample, s_sample[m.student])


@pytest.mark.parametrize("k", [1, 3, 8])
def test_match_views_radius_pass_equals_brute_force(k):
    """Exact-cell first, then the k nearest teacher points of the view within the radius (Sonata's nearest-neighbour
    match) for student points the first pass left without a partner in that view."""
    g = torch.Generator().manual_seed(11 + k)
    s_xyz, t_xyz = torch.rand(400, 3, generator=g) * 3 - 1, torch.rand(150, 3, generator=g) * 3 - 1
    s_sample, t_sample = torch.randint(0, 2, (400,), generator=g), torch.randint(0, 2, (150,), generator=g)
    s_view, t_view = torch.randint(-1, 2, (400,), generator=g), torch.randint(0, 2, (150,), generator=g)
    cell, radius = 0.1, 0.32
    for same in (True, False):
        m = match_views(s_xyz, s_sample, s_view, t_xyz, t_sample, t_view, cell, same_view=same, radius=radius, k=k,
                        chunk=5000)  # fmt: skip
        cs, ct = torch.floor(s_xyz / cell).long(), torch.floor(t_xyz / cell).long()
        d = torch.cdist(s_xyz.double(), t_xyz.double())
        want = set()
        for i in range(400):
            for v in (0, 1):
                if not same and s_view[i] == v:
                    continue
                ok = [j for j in range(150) if t_sample[j] == s_sample[i] and t_view[j] == v]
                hits = [j for j in ok if bool((ct[j] == cs[i]).all())]
                if hits:
                    want.add((i, hits[0]))
                    continue
                near = sorted((float(d[i, j]), j) for j in ok if float(d[i, j]) < radius)
                want.update((i, j) for _, j in near[:k])
        got = list(zip(m.student.tolist(), m.teacher.tolist(), strict=True))
        assert len(got) == len(set(got)) and set(got) == want
        torch.testing.assert_close(m.sample, s_sample[m.student])
    # far from every teacher point: nothing; radius 0 rejected
    far = match_views(s_xyz + 100, s_sample, s_view, t_xyz, t_sample, t_view, cell, radius=radius)
    assert len(far) == 0
    with pytest.raises(ValueError, match="radius"):
        match_views(s_xyz, s_sample, s_view, t_xyz, t_sample, t_view, cell, radius=-1.0)


# --- teacher, optimiser, one step ------------------------------------------------------------------------------


def test_ema_formula():
    torch.manual_seed(0)
    s, t = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    old = [p.clone() for p in t.parameters()]
    ema_update(t, s, 0.9)
    for p_t, p_o, p_s in zip(t.parameters(), old, s.parameters(), strict=True):
        torch.testing.assert_close(p_t, 0.9 * p_o + 0.1 * p_s)


def _sonata_multiplier(name: str, depths, decay: float) -> float:
    """Sonata's rule from its config, written out independently: keyword ``enc{e}.block{b}.`` gets
    ``decay ** (sum(depths) - sum(depths[:e]) - b - 1)``; a parameter no keyword matches gets the base lr."""
    for e in range(len(depths)):
        for b in range(depths[e]):
            if f"enc{e}.block{b}." in name:
                return decay ** (sum(depths) - sum(depths[:e]) - b - 1)
    return 1.0


@pytest.mark.parametrize("preset", ["tiny", "base"])
def test_param_groups_follow_sonata(preset, capsys):
    bb = build_backbone(preset, in_channels=9)
    model = PointINS(bb, SSLConfig(prototypes=8, head_hidden=16, head_dim=8)).student
    depths = bb.config.depths
    groups = param_groups(model, depths, lr=1.0, weight_decay=0.04, layer_decay=0.9)
    seen = [id(p) for g in groups for p in g["params"]]
    assert sorted(seen) == sorted(id(p) for p in model.parameters()) and len(seen) == len(set(seen))
    group_of = {id(p): g for g in groups for p in g["params"]}
    for name, p in model.named_parameters():
        g = group_of[id(p)]
        assert g["lr"] == pytest.approx(_sonata_multiplier(name, depths, 0.9)), name
        assert g["apply_wd"] and g["weight_decay"] == 0.04  # Pointcept decays every parameter
    assert block_index("enc.enc1.block0.attn.qkv.weight", depths) == depths[0]
    assert block_index("enc.enc1.down.proj.weight", depths) is None
    assert block_index("embedding.stem.linear.weight", depths) is None
    last = max(g["block"] for g in groups)
    assert last == sum(depths) - 1 and next(g for g in groups if g["block"] == last)["lr"] == 1.0
    # the table (printed for the record: pytest -s)
    with capsys.disabled():
        print(f"\n{preset} (depths {depths}): lr multipliers")
        for g in groups:
            what = "embedding, pooling, heads" if g["block"] < 0 else f"block {g['block']}"
            print(f"  {what:28s} {g['lr_scale']:.4f}  ({len(g['params'])} tensors)")


def test_ptv3_linear_init_is_pointcepts():
    bb = build_backbone("tiny", in_channels=9)
    lin = [m for m in bb.modules() if isinstance(m, torch.nn.Linear)]
    w = torch.cat([m.weight.detach().flatten() for m in lin])
    # trunc_normal_(std=0.02) truncates at +-2 (absolute, as timm's): in effect N(0, 0.02)
    assert abs(float(w.std()) - 0.02) < 0.002 and abs(float(w.mean())) < 0.002
    assert all(m.bias is None or bool((m.bias == 0).all()) for m in lin)


def _batch(n_scenes=2, seed=0):
    scenes = [synthetic.indoor_scene(0, i) for i in range(n_scenes)]
    ds = ViewDataset(scenes, ViewConfig(grid_size=0.05, max_points=5000, local_views=2), seed=seed)
    return collate([ds[i] for i in range(n_scenes)])


@pytest.fixture(scope="module")
def small_batch():
    return _batch()


def _model(**kw):
    torch.manual_seed(0)
    bb = build_backbone("tiny", in_channels=9, grid_size=0.05)
    return PointINS(bb, SSLConfig(prototypes=32, head_hidden=64, head_dim=16, **kw))


def test_step_updates_student_and_teacher_follows_ema(small_batch):
    m = _model()
    opt = torch.optim.AdamW(m.student.parameters(), lr=1e-3)
    s0 = [p.detach().clone() for p in m.student.parameters()]
    t0 = [p.detach().clone() for p in m.teacher.parameters()]
    out = m.step_losses(small_batch, 0.5, step=3, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out.loss) and out.stats["pairs"] > 100 and out.stats["loss_off"] > 0
    out.loss.backward()
    grads = [p.grad for p in m.student.parameters()]
    assert all(g is not None for g in grads)
    assert m.student.offset.mlp[2].weight.grad.abs().sum() > 0
    assert m.student.backbone.embedding.stem.linear.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in m.teacher.parameters())
    opt.step()
    s1 = [p.detach().clone() for p in m.student.parameters()]
    assert any(not torch.equal(a, b) for a, b in zip(s0, s1, strict=True))
    mom = m.schedule(0.5)["momentum"]
    assert 0.994 < mom < 1.0
    m.update_teacher(mom)
    for p_t, a, b in zip(m.teacher.parameters(), t0, s1, strict=True):
        torch.testing.assert_close(p_t, mom * a + (1 - mom) * b)


def test_offset_warmup_and_variants(small_batch):
    m = _model()
    early = m.step_losses(small_batch, 0.05, generator=torch.Generator().manual_seed(0))
    assert early.stats["loss_off"] == 0.0 and m.schedule(0.05)["offset_on"] == 0.0
    early.loss.backward()  # the offset head is in the graph (zero gradient): DDP needs every parameter used
    assert torch.count_nonzero(m.student.offset.mlp[2].weight.grad) == 0
    sem = _model(offset=False)
    assert sem.student.offset is None
    out = sem.step_losses(small_batch, 0.5, generator=torch.Generator().manual_seed(0))
    assert out.stats["loss_off"] == 0.0 and "pseudo_instances" not in out.stats
    for kw in ({"odr": False, "scr": False}, {"scr_before_odr": True}, {"odr_side": "student"}, {"odr": False}):
        o = _model(**kw).step_losses(small_batch, 0.5, generator=torch.Generator().manual_seed(0))
        assert torch.isfinite(o.loss) and o.stats["loss_off"] > 0
        o.loss.backward()


@pytest.mark.parametrize("mode", ["dos", "sonata", "pooled"])
def test_step_with_each_semantic_loss(small_batch, mode):
    m = _model(semantic_loss=mode)
    out = m.step_losses(small_batch, 0.5, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out.loss) and out.loss > 0
    out.loss.backward()
    assert m.student.semantic.prototypes.weight.grad.abs().sum() > 0
    names = {"dos": ("loss_same", "loss_cross"), "sonata": ("loss_mask", "loss_roll", "loss_unmask"), "pooled": ()}
    assert all(n in out.stats for n in names[mode])


def test_stuff_classes_leave_odr_and_scr_to_things(small_batch):
    assert "segment" in small_batch["global"]
    seg = small_batch["global"]["segment"]
    stuff = tuple(int(v) for v in torch.unique(seg)[:2])
    m = _model(stuff_classes=stuff)
    out = m.step_losses(small_batch, 0.5, generator=torch.Generator().manual_seed(0), details=True)
    assert 0 < out.stats["stuff_fraction"] < 1 and torch.isfinite(out.loss) and out.stats["loss_off"] > 0
    out.loss.backward()
    # the SCR result only covers thing points
    n_thing = int(m._thing_points(small_batch["global"], out.details["teacher"]).sum())
    assert out.details["scr"].instances.shape[0] == n_thing
    with pytest.raises(ValueError, match="stuff_classes"):
        SSLConfig(stuff_classes=("wall",))


def test_odr_keeps_scr_working_when_stuff_has_no_offset():
    """Ground-truth offsets (zero at stuff points) through ODR then SCR: with the degenerate offsets left out of
    ODR's rankings the pseudo-instances stay close to SCR on the raw offsets (before the fix, ranking the zeros
    scattered them; tools/odr_ari.py measures 0.29 -> 0.70 ARI on 6 rooms)."""
    from sklearn.metrics import adjusted_rand_score

    aris = {"raw": [], "ranked_all": [], "fixed": []}
    for i in range(2):
        sc = synthetic.indoor_scene(0, i)
        d = T.grid_sample({k: sc[k] for k in ("coord", "segment", "instance")}, 0.08, "train",
                          np.random.default_rng(i))  # fmt: skip
        x = torch.from_numpy(d["coord"].astype(np.float32))
        ins = torch.from_numpy(d["instance"].astype(np.int64))
        off = torch.zeros_like(x)
        for k in torch.unique(ins[ins >= 0]):
            sel = ins == k
            off[sel] = x[sel].mean(0) - x[sel]
        seg = torch.from_numpy(d["segment"].astype(np.int64))
        feat = torch.nn.functional.one_hot(seg, 32).float()
        o = torch.tensor([0, len(x)])
        for name, oo in (("raw", off), ("ranked_all", odr(off, o, "indoor", min_norm=-1.0)),
                         ("fixed", odr(off, o, "indoor"))):  # fmt: skip
            r = scr(feat, x, oo, o, k=20, iters=5, radius=0.16, min_size=8, seed=0)
            keep = ins >= 0
            aris[name].append(adjusted_rand_score(ins[keep].numpy(), r.instances[keep].numpy()))
    mean = {k: float(np.mean(v)) for k, v in aris.items()}
    assert mean["fixed"] > mean["ranked_all"] + 0.15 and mean["fixed"] > mean["raw"] - 0.1


def test_student_never_sees_masked_points(small_batch):
    m = _model()
    sb = m._student_batch(small_batch["global"], small_batch["local"], 0.2, 0.6, torch.Generator().manual_seed(1))
    ng = small_batch["global"]["coord"].shape[0]
    vis = sb["visible"]
    assert 0.3 < 1 - vis.float().mean() < 0.8
    torch.testing.assert_close(sb["coord"][: int(vis.sum())], small_batch["global"]["coord"][vis])
    assert sb["coord"].shape[0] == int(vis.sum()) + small_batch["local"]["coord"].shape[0]
    assert int(sb["offsets"][-1]) == sb["coord"].shape[0] and vis.numel() == ng
    assert (sb["view"][sb["offsets"].numel() - 1 - small_batch["local"]["offsets"].numel() + 1 :] < 0).all()


def test_ssl_config_validation():
    with pytest.raises(ValueError, match="odr_side"):
        SSLConfig(odr_side="both")
    with pytest.raises(ValueError, match="start, end"):
        SSLConfig(ema=(0.9,))


# --- priors CLI ------------------------------------------------------------------------------------------------


def test_priors_cli_fits_known_radii(tmp_path, capsys):
    from pointins.data import write
    from pointins.priors import fit_prior, main

    rng = np.random.default_rng(0)
    for s in range(2):  # instances = points on spheres of radius 0.3 and 0.9: offsets have exactly those lengths
        pts, inst = [], []
        for i, r in enumerate((0.3, 0.9)):
            d = rng.normal(size=(500, 3))
            d = np.concatenate([d, -d])  # symmetric: the centroid is the sphere centre
            pts.append(d / np.linalg.norm(d, axis=1, keepdims=True) * r + [5.0 * i, s, 0])
            inst.append(np.full(1000, i))
        pts.append(rng.uniform(-1, 1, (300, 3)))
        inst.append(np.full(300, -1))  # stuff: ignored
        write(tmp_path / "data" / f"scene_{s}", {"coord": np.concatenate(pts).astype(np.float32),
                                                  "instance": np.concatenate(inst)})  # fmt: skip
    out = tmp_path / "prior.json"
    assert main(["--data", str(tmp_path / "data"), "--out", str(out), "--no-progress"]) == 0
    assert "4000 instance points" in capsys.readouterr().out
    p = get_prior(str(out))
    u = torch.tensor([0.1, 0.4, 0.6, 0.9], dtype=torch.float64)
    want = torch.tensor([0.3, 0.3, 0.9, 0.9], dtype=torch.float64)
    torch.testing.assert_close(p.ppf(u), want, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="instance labels"):
        fit_prior(np.zeros(1))
    assert main(["--data", str(tmp_path / "missing"), "--no-progress"]) == 2
    # every point counted: the 600 stuff points are zero offsets (13% of 4600), then the two radii
    out2 = tmp_path / "prior_all.json"
    assert main(["--data", str(tmp_path / "data"), "--out", str(out2), "--no-progress", "--all-points"]) == 0
    assert "13.0% of the points have no instance" in capsys.readouterr().out
    p = get_prior(str(out2))
    want = torch.tensor([0.0, 0.0, 0.3, 0.9], dtype=torch.float64)
    got = p.ppf(torch.tensor([0.05, 0.12, 0.4, 0.9], dtype=torch.float64))
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_mixture_prior_and_odr_zero_the_smallest_share():
    from pointins.ssl.offsets import MixturePrior, prior_from_dict

    p = get_prior("indoor-all")
    assert isinstance(p, MixturePrior) and p.zero == pytest.approx(0.76)
    u = torch.tensor([0.1, 0.75, 0.77, 0.5 * (1 + 0.76), 0.999], dtype=torch.float64)
    got = p.ppf(u)
    assert got[0] == 0 and got[1] == 0 and got[2] > 0
    assert float(got[3]) == pytest.approx(math.exp(-0.62), rel=1e-6)  # the base's median at the middle of the rest
    assert prior_from_dict(p.to_dict()) == p
    g = torch.Generator().manual_seed(0)
    o = torch.randn(1000, 3, generator=g)
    out = odr(o, torch.tensor([0, 1000]), p)
    r = o.norm(dim=1)
    zero = out.norm(dim=1) == 0
    assert int(zero.sum()) == 760 and bool(r[zero].max() <= r[~zero].min())  # the smallest magnitudes
    with pytest.raises(ValueError, match="mixture"):
        prior_from_dict({"family": "mixture", "zero": 1.5, "base": {"family": "lognormal", "mu": 0, "sigma": 1}})


def _pooled_origin(levels, origin0: torch.Tensor, stage: int) -> torch.Tensor:
    """The original positions pooled as Sonata pools origin_coord: each level's point is the mean of its children's
    (an independent statement of the encoder's pooling, through the levels' parent maps)."""
    o = origin0.double()
    for s in range(1, stage + 1):
        parent = levels[s].parent
        m = int(parent.max()) + 1
        tot = torch.zeros(m, 3, dtype=torch.float64).index_add_(0, parent, o)
        o = tot / torch.bincount(parent, minlength=m).double()[:, None]
    return o


def test_original_positions_are_carried_not_inverted_with_elastic_distortion():
    """#32 frame fix. Views carry each point's pre-augmentation position (``origin``) through every transform,
    the encoder pools it like coord, and the step matches and targets on it: with elastic distortion on, the
    up-cast points' original positions equal the pooled true scene coordinates to float precision (inverting the
    linear map alone is off by the distortion), and matched pairs are as close as with elastic distortion off."""
    rng = np.random.default_rng(3)
    room = synthetic.indoor_scene(0, 1)
    dists = {}
    for elastic in (((0.2, 0.4), (0.8, 1.6)), None):
        scene = prepare_scene(room, 0.05, np.random.default_rng(3))
        cfg = ViewConfig(grid_size=0.05, max_points=6000, local_views=2, elastic=elastic, elastic_p=1.0)
        views = make_views(scene, cfg, rng)
        for v in views["global"] + views["local"]:  # exactly the scene rows the view points came from
            np.testing.assert_array_equal(v["origin"], scene["coord"][v["index"]].astype(np.float32))
        batch = collate([{**views, "scene_points": len(scene["coord"])}])
        m = _model()
        out = m.step_losses(batch, 0.5, step=1, generator=torch.Generator().manual_seed(0), details=True)
        det = out.details
        t_out, g = det["teacher"], batch["global"]
        true = _pooled_origin(t_out.levels, torch.from_numpy(scene["coord"][g["source"].numpy()]), 2)
        torch.testing.assert_close(det["t_xyz"].double(), true, rtol=0, atol=1e-5)
        if elastic is not None:  # what the recorded linear map alone recovers: off by the distortion
            cloud = torch.repeat_interleave(torch.arange(len(g["offsets"]) - 1), t_out.offsets.diff())
            inverted = points_to_original(t_out.coord.float(), g["transform"], g["shift"], cloud).double()
            assert float((inverted - true).norm(dim=1).mean()) > 0.05
        mt, ms = det["matches"].teacher, det["matches"].student
        dists[elastic is not None] = float((det["t_xyz"][mt] - det["s_xyz"][ms]).norm(dim=1).mean())
    assert dists[True] < 1.3 * dists[False] + 0.01, dists


def test_upcast_instances_take_the_majority_and_its_centre():
    from pointins.ssl.diagnostics import upcast_instances

    inst = torch.tensor([3, 3, -1, 5, 5, -1, -1, 2, 4])
    centre = torch.tensor([[1.0, 0, 0], [1, 0, 0], [9, 9, 9], [5, 5, 5], [5, 5, 5], [9, 9, 9], [9, 9, 9],
                           [2, 2, 2], [4, 4, 4]])  # fmt: skip
    to_up = torch.tensor([0, 0, 0, 1, 1, 1, 2, 3, 3])  # point 3 ties 2 vs 4 -> the lower id
    lab, cen = upcast_instances(inst, centre, to_up, 5)
    assert lab.tolist() == [3, 5, -1, 2, -1]
    torch.testing.assert_close(cen[:2], torch.tensor([[1.0, 0, 0], [5, 5, 5]]))
    assert torch.isnan(cen[2]).all() and torch.equal(cen[3], torch.tensor([2.0, 2, 2])) and torch.isnan(cen[4]).all()


def test_agreement_and_scr_recall_by_hand():
    from pointins.ssl.diagnostics import agreement, scr_recall

    true = torch.tensor([[1.0, 0, 0], [0, 2, 0], [float("nan")] * 3])
    a = agreement(torch.tensor([[2.0, 0, 0], [0, -2, 0], [5, 5, 5]]), true)
    assert a["n"] == 2 and a["cos"] == pytest.approx(0.0) and a["l1"] == pytest.approx((1 + 4) / 3)
    assert agreement(true.nan_to_num(), true)["l1"] == pytest.approx(0.0)
    inst = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, -1, 2, 2, 2])
    cloud = torch.tensor([0] * 9 + [1] * 3)
    pseudo = torch.tensor([7, 7, 7, -1, 8, 8, 9, 9, -1, 4, 4, 4])  # inst 0: IoU 3/4; inst 1 split 2+2; inst 2 exact
    r = scr_recall(pseudo, inst, cloud, min_size=3)
    assert r["recall"] == pytest.approx(2 / 3) and r["kept"] == pytest.approx(10 / 12)
    assert r["pseudo_per_view"] == pytest.approx(4 / 2) and r["true_per_view"] == pytest.approx(3 / 2)


def test_diagnostics_and_oracle_controls(small_batch):
    """diagnose=True logs the diag_* stats when the data has instances; the oracle-offset control's targets are the
    true offsets (cosine 1, no L1 error); an oracle without labels is refused."""
    assert "instance" in small_batch["global"] and "centre" in small_batch["global"]
    m = _model()
    torch.manual_seed(11)  # the student's random draws (curve order, drop path) come from the global generator
    out = m.step_losses(small_batch, 0.5, step=3, generator=torch.Generator().manual_seed(0), diagnose=True)
    st = out.stats
    for k in ("diag_teacher_cos", "diag_raw_cos", "diag_student_cos", "diag_teacher_l1", "diag_scr_recall",
              "diag_scr_kept", "diag_grad_sem", "diag_grad_off"):  # fmt: skip
        assert k in st and math.isfinite(st[k]), k
    assert -1 <= st["diag_teacher_cos"] <= 1 and 0 <= st["diag_scr_kept"] <= 1 and st["diag_grad_sem"] > 0
    torch.manual_seed(11)
    plain = m.step_losses(small_batch, 0.5, step=3, generator=torch.Generator().manual_seed(0))
    assert not any(k.startswith("diag_") for k in plain.stats)
    assert float(plain.loss.detach()) == float(out.loss.detach())  # diagnostics change nothing (no random draws)
    oracle = _model(oracle="offset", odr=False, scr=False)
    o = oracle.step_losses(small_batch, 0.5, step=3, generator=torch.Generator().manual_seed(0), diagnose=True)
    assert o.stats["diag_teacher_cos"] == pytest.approx(1.0, abs=1e-5) and o.stats["diag_teacher_l1"] < 1e-5
    o.loss.backward()
    oscr = _model(oracle="scr", odr=False)
    assert "diag_scr_recall" in oscr.step_losses(small_batch, 0.5, step=3, diagnose=True,
                                                 generator=torch.Generator().manual_seed(0)).stats  # fmt: skip
    unlabelled = {**small_batch, "global": {k: v for k, v in small_batch["global"].items() if k != "centre"}}
    with pytest.raises(ValueError, match="oracle-offset control needs instance labels"):
        oracle.step_losses(unlabelled, 0.5, step=3, generator=torch.Generator().manual_seed(0))


def test_scale_rules_give_the_papers_constants_at_the_papers_scale():
    """K and the minimum pseudo-instance size follow the view's size (the paper's values at the reference size),
    the EMA start follows the run length (the paper's momentum at its run length); off, the constants as given."""
    m = _model(scale_ref_points=2800, ema_ref_steps=100_000, ema_floor=0.5)
    offsets = torch.tensor([0, 2800, 2800 + 700, 2800 + 700 + 100, 2800 + 700 + 100 + 9000])
    k, mins = m.scr_sizes(offsets)
    assert k.tolist() == [20, 5, 2, 20] and mins.tolist() == [8, 2, 2, 26]
    for steps, want in ((100_000, 0.994), (1_000_000, 0.994), (600, 0.5), (6000, 0.9)):
        m.total_steps = steps
        assert m.ema_start() == pytest.approx(want), steps
        assert m.schedule(0.0)["momentum"] == pytest.approx(want) and m.schedule(1.0)["momentum"] == 1.0
    plain = _model(scale_ref_points=0)  # the rule off: the constants as given
    plain.total_steps = 600
    assert plain.scr_sizes(offsets) == (20, 8) and plain.ema_start() == 0.994
    assert _model().cfg.scale_ref_points == 2800  # the default since the label diagnostics chose it


def test_scr_per_view_minimum_size_drops_small_components_per_cloud():
    from pointins.ssl.offsets import scr

    g = torch.Generator().manual_seed(2)
    # two clouds, each: one 6-point cluster and one 3-point cluster of predicted centres
    base = torch.tensor([[0.0, 0, 0]] * 6 + [[5.0, 0, 0]] * 3)
    x = torch.cat([base, base]) + torch.rand(18, 3, generator=g) * 0.01
    feat = torch.ones(18, 4)
    offsets = torch.tensor([0, 9, 18])
    r = scr(feat, x, torch.zeros(18, 3), offsets, k=1, radius=0.5, min_size=torch.tensor([4, 2]))
    assert (r.instances[:6] >= 0).all() and (r.instances[6:9] == -1).all()  # cloud 0 drops its 3-point cluster
    assert (r.instances[9:] >= 0).all() and r.num_instances == 3
    assert sorted(torch.unique(r.instances[r.instances >= 0]).tolist()) == [0, 1, 2]
