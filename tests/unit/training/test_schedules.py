"""The cosine anneal of the learning rate (``train.lr_schedule=cosine``): its shape, a horizon moved
mid-run without a jump, its state through the scheduler's ``state_dict``, and hostile states refused."""

from __future__ import annotations

import math

import pytest
import torch

from flowvae.training.schedules import CosineAnneal, lr_multiplier


def test_warm_up_then_half_a_cosine_down_to_zero_at_the_end():
    f = CosineAnneal(warmup=10, end=110)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == 1.0
    assert f(60) == pytest.approx(0.5)  # halfway through the anneal
    assert f(35) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert f(110) == pytest.approx(0.0, abs=1e-12) and f(500) == pytest.approx(0.0, abs=1e-12)
    assert all(f(s) >= f(s + 1) for s in range(10, 120))


def test_an_end_inside_the_warm_up_is_raised_past_it():
    f = CosineAnneal(warmup=10, end=3)
    assert f.end == 11 and f(10) == 1.0 and f(11) == pytest.approx(0.0, abs=1e-12)


def test_retarget_keeps_the_rate_and_ends_at_the_new_step():
    f = CosineAnneal(warmup=5, end=1000)
    before = f(200)
    f.retarget(200, 400)
    assert f(200) == pytest.approx(before)  # no jump where the horizon moved
    assert f(300) == pytest.approx(0.5 * (1 + math.cos(math.pi * (f.progress(200) + (1 - f.progress(200)) / 2))))
    assert f(400) == pytest.approx(0.0, abs=1e-12)
    f.retarget(400, 300)  # an end already passed: the anneal is over, it never comes back up
    assert f(401) == pytest.approx(0.0, abs=1e-12)


def test_a_retarget_during_the_warm_up_moves_only_the_end():
    f = CosineAnneal(warmup=10, end=1000)
    f.retarget(4, 110)
    assert f(4) == pytest.approx(0.5) and f(60) == pytest.approx(0.5) and f(110) == pytest.approx(0.0, abs=1e-12)


def test_the_state_travels_in_the_schedulers_state_dict():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, CosineAnneal(2, 100))
    for _ in range(30):
        opt.step()
        sched.step()
    sched.lr_lambdas[0].retarget(30, 50)
    state = sched.state_dict()
    assert CosineAnneal.invalid(state["lr_lambdas"][0]) is None
    opt2 = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched2 = torch.optim.lr_scheduler.LambdaLR(opt2, CosineAnneal(2, 100))
    sched2.load_state_dict(state)
    assert [sched2.lr_lambdas[0](s) for s in range(30, 60)] == [sched.lr_lambdas[0](s) for s in range(30, 60)]


@pytest.mark.parametrize("state,why", [
    (None, "not a cosine anneal's"),
    ({"warmup": 1, "start": 1, "end": 5}, "not a cosine anneal's"),
    ({"warmup": 1, "start": 1, "start_progress": 0.0, "end": 5, "extra": 1}, "not a cosine anneal's"),
    ({"warmup": -1, "start": 1, "start_progress": 0.0, "end": 5}, "not non-negative integers"),
    ({"warmup": 1, "start": 1.5, "start_progress": 0.0, "end": 5}, "not non-negative integers"),
    ({"warmup": 1, "start": True, "start_progress": 0.0, "end": 5}, "not non-negative integers"),
    ({"warmup": 1, "start": 1, "start_progress": float("nan"), "end": 5}, "not a number in"),
    ({"warmup": 1, "start": 1, "start_progress": 2.0, "end": 5}, "not a number in"),
    ({"warmup": 1, "start": 1, "start_progress": "0", "end": 5}, "not a number in"),
    ({"warmup": 1, "start": 5, "start_progress": 0.5, "end": 5}, "not before its end"),
])
def test_a_state_that_is_not_an_anneals_is_named(state, why):
    assert why in CosineAnneal.invalid(state)


def test_lr_multiplier_picks_the_schedule():
    assert isinstance(lr_multiplier("cosine", 3, 0.5, 10), CosineAnneal)
    assert lr_multiplier("exponential", 2, 0.5, 10)(4) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="exponential or cosine"):
        lr_multiplier("linear", 2, 0.5, 10)
