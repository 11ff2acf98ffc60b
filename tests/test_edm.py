"""EDM preconditioning, loss, schedule and samplers: properties that can fail."""

import math

import pytest
import torch
from torch import nn

from engine.diffusion.edm import (
    EDMLoss,
    EDMPrecond,
    append_dims,
    iter_euler,
    iter_heun,
    karras_sigmas,
    sample,
    sigmas_from_strength,
)
from engine.models.unet import UNet1d, arch_config


class ZeroNet(nn.Module):
    def forward(self, x, c_noise, **cond):
        return torch.zeros_like(x)


def test_append_dims_broadcasts_any_rank():
    t = torch.tensor([1.0, 2.0])
    assert append_dims(t, 3).shape == (2, 1, 1)
    assert append_dims(t, 5).shape == (2, 1, 1, 1, 1)
    with pytest.raises(ValueError):
        append_dims(torch.zeros(2, 2, 2), 2)


@pytest.mark.parametrize("sigma_data", [0.5, 1.0])
def test_preconditioning_identities(sigma_data):
    p = EDMPrecond(ZeroNet(), sigma_data=sigma_data)
    sigma = torch.tensor([0.002, 0.1, 1.0, 10.0, 80.0])
    c_skip, c_out, c_in, c_noise = p.scalings(sigma)
    sd = sigma_data
    # the network input has unit variance for data of std sd: c_in^2 (sigma^2 + sd^2) = 1
    torch.testing.assert_close(c_in**2 * (sigma**2 + sd**2), torch.ones(5))
    # c_skip and c_out make the effective training target unit-variance
    torch.testing.assert_close(c_skip**2 * sigma**2 + (1 - c_skip) ** 2 * sd**2, c_out**2)
    torch.testing.assert_close(c_noise, sigma.log() / 4)
    # with a network that outputs zero, D(x) = c_skip x, which tends to x as sigma -> 0
    x = torch.randn(5, 4, 7)
    d = p(x, sigma)
    torch.testing.assert_close(d, append_dims(c_skip, 3) * x)
    assert torch.allclose(p(x[:1], torch.tensor([1e-5])), x[:1], atol=1e-6)


def test_loss_weight_cancels_c_out():
    loss = EDMLoss(sigma_data=0.7)
    p = EDMPrecond(ZeroNet(), sigma_data=0.7)
    sigma = torch.tensor([0.01, 0.5, 3.0, 50.0])
    _, c_out, _, _ = p.scalings(sigma)
    torch.testing.assert_close(loss.weight(sigma) * c_out**2, torch.ones(4))


def test_loss_sigma_distribution_and_mask():
    loss = EDMLoss(p_mean=-1.2, p_std=1.2)
    s = loss.sample_sigma(20000, torch.Generator().manual_seed(0))
    assert abs(s.log().mean().item() + 1.2) < 0.05
    assert abs(s.log().std().item() - 1.2) < 0.05
    net = UNet1d(arch_config("tiny", clap_dim=8))
    p = EDMPrecond(net)
    y = torch.randn(2, 64, 12)
    mask = torch.ones(2, 12)
    mask[:, 6:] = 0
    g = torch.Generator().manual_seed(1)
    a = loss(p, y, frame_mask=mask, generator=g)
    assert torch.isfinite(a) and a.item() > 0
    a.backward()
    assert all(q.grad is not None for q in net.parameters() if q.requires_grad)


def test_karras_schedule():
    s = karras_sigmas(30)
    assert len(s) == 31 and s[-1] == 0
    assert math.isclose(s[0].item(), 80.0, rel_tol=1e-5)
    assert math.isclose(s[-2].item(), 0.002, rel_tol=1e-4)
    assert bool((s[:-1] > s[1:]).all())
    assert len(karras_sigmas(1)) == 2


def test_strength_picks_the_tail_of_the_schedule():
    s = karras_sigmas(30)
    assert torch.equal(sigmas_from_strength(s, 1.0), s)
    assert len(sigmas_from_strength(s, 0.0)) == 1
    tail = sigmas_from_strength(s, 0.4)
    assert len(tail) == 13 and torch.equal(tail, s[-13:])


def gaussian_denoiser(data_std):
    """The exact denoiser for data ~ N(0, data_std^2)."""
    calls = []

    def d(x, sigma):
        calls.append(1)
        s2 = append_dims(sigma, x.ndim) ** 2
        return x * data_std**2 / (data_std**2 + s2)

    d.calls = calls
    return d


def test_heun_solves_the_probability_flow_ode_exactly_enough():
    data_std = 0.5
    d = gaussian_denoiser(data_std)
    sig = karras_sigmas(30)
    x0 = torch.randn(4000, 1, 8, generator=torch.Generator().manual_seed(0))
    out = sample(d, x0 * sig[0], sig)
    # the flow maps N(0, sigma_max^2 + s^2) ~ sigma_max N(0,1) to N(0, s^2)
    assert abs(out.std().item() - data_std) < 0.02
    # Heun: 2 evaluations per step, no correction at the last step
    assert len(d.calls) == 2 * 30 - 1


def test_euler_uses_one_call_per_step_and_converges_to_heun():
    d = gaussian_denoiser(1.0)
    x = torch.randn(1, 1, 16, generator=torch.Generator().manual_seed(3)) * 80
    steps = list(iter_euler(d, x, karras_sigmas(200)))
    assert len(d.calls) == 200
    heun = list(iter_heun(gaussian_denoiser(1.0), x, karras_sigmas(200)))
    # exact flow for unit-variance Gaussian data: x_0 = x_T / sqrt(1 + sigma_max^2)
    exact = x / math.sqrt(1 + 80.0**2)
    assert torch.allclose(heun[-1].x, exact, rtol=2e-3, atol=1e-4)
    assert torch.allclose(steps[-1].x, exact, rtol=3e-2, atol=1e-3)
    assert (steps[-1].x - exact).abs().max() > (heun[-1].x - exact).abs().max()


def test_step_callback_and_hook_see_every_step():
    d = gaussian_denoiser(1.0)
    seen, hooked = [], []

    def hook(i, x, sigma):
        hooked.append((i, sigma))
        return x

    sample(d, torch.randn(1, 2, 3), karras_sigmas(5), callback=lambda s: seen.append(s.i),
           step_hook=hook)
    assert seen == [0, 1, 2, 3, 4]
    assert [h[0] for h in hooked] == [0, 1, 2, 3, 4]


def test_churn_is_seeded():
    d = gaussian_denoiser(1.0)
    x = torch.randn(1, 2, 8)
    a = sample(d, x, karras_sigmas(10), s_churn=20, generator=torch.Generator().manual_seed(1))
    b = sample(d, x, karras_sigmas(10), s_churn=20, generator=torch.Generator().manual_seed(1))
    c = sample(d, x, karras_sigmas(10), s_churn=20, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("frames", [1, 5, 64, 117, 130])
def test_unet_runs_any_length_and_respects_absent_flags(frames):
    torch.manual_seed(0)
    net = UNet1d(arch_config("tiny", clap_dim=16)).eval()
    for prm in net.parameters():  # zero-initialised outputs would hide wiring bugs
        prm.data.normal_(0, 0.05)
    x = torch.randn(2, 64, frames)
    ctx = torch.randn(2, 64, frames)
    clap = torch.randn(2, 16)
    with torch.no_grad():
        out = net(x, torch.zeros(2), context=ctx, clap=clap)
        assert out.shape == x.shape
        # a row flagged absent is the same as passing no condition at all
        masked = net(x, torch.zeros(2), context=ctx, clap=clap,
                     context_mask=torch.tensor([False, True]),
                     clap_mask=torch.tensor([False, True]))
        none = net(x, torch.zeros(2))
        full = net(x, torch.zeros(2), context=ctx, clap=clap)
    assert torch.allclose(masked[0], none[0], atol=1e-5)
    assert torch.allclose(masked[1], full[1], atol=1e-5)
    assert not torch.allclose(none[1], full[1], atol=1e-3)
