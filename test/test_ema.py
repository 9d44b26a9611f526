"""The shared EMA teacher (icefall.ssl.ema): schedules against their closed forms, the update
against ``beta t + (1 - beta) s`` with copied parameters and buffers, the teacher frozen and in
eval mode, and SpidR/DinoSR unchanged by the move: a toy checkpoint written by the code before
it (main at 385f21c) loads with the same keys, and the same three training steps rebuild it."""
import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from icefall.ssl.ema import (
    EmaTeacherModel,
    copied_names,
    cosine_decay,
    ema_update,
    exponential_decay,
    frozen_copy,
    linear_decay,
)

FIXTURE = Path(__file__).parent / "fixtures" / "ssl" / "spidr_toy_385f21c.pt"


def test_schedules_equal_closed_forms():
    for t in (0, 1, 500, 10000, 50000):
        assert exponential_decay(t, 0.99, 300.0) == pytest.approx(1 - 0.01 * math.exp(-t / 300), abs=1e-15)
    # data2vec: 0.999 -> 0.9999 over 30k updates, constant after; no freeze
    for t, v in {0: 0.999, 7500: 0.999225, 15000: 0.99945, 30000: 0.9999, 10**6: 0.9999}.items():
        assert linear_decay(t, 0.999, 0.9999, 30000, None) == pytest.approx(v, abs=1e-12), t
    assert linear_decay(10, 0.9, 0.99, 100, freeze_step=10) == 1.0
    # BYOL: 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2
    for t in (0, 10, 25, 50, 99):
        assert cosine_decay(t, 0.996, 1.0, 100) == pytest.approx(1 - 0.004 * (math.cos(math.pi * t / 100) + 1) / 2)
    assert cosine_decay(0, 0.996, 1.0, 100) == pytest.approx(0.996)
    assert cosine_decay(50, 0.996, 1.0, 100) == pytest.approx(0.998)
    assert cosine_decay(100, 0.996, 1.0, 100) == cosine_decay(10**6, 0.996, 1.0, 100) == 1.0


class Student(nn.Module):
    def __init__(self):
        super().__init__()
        self.pos_conv = nn.Linear(3, 3)
        self.body = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5), nn.BatchNorm1d(4))


class Toy(EmaTeacherModel):
    def __init__(self):
        super().__init__()
        self.encoder = Student()
        self.init_teacher(("pos_conv",))

    def teacher_decay(self, step):
        return linear_decay(step, 0.9, 0.99, 10, freeze_step=20)


def test_ema_update_copies_prefixed_params_and_buffers():
    torch.manual_seed(0)
    model = Toy()
    assert model.copied_params == ["pos_conv.weight", "pos_conv.bias"]
    assert copied_names(model.teacher, ("body.0",)) == ["body.0.weight", "body.0.bias"]
    assert not any(p.requires_grad for p in model.teacher.parameters())
    assert all(p.requires_grad for p in model.encoder.parameters())
    model.train()
    assert model.encoder.training and not model.teacher.training and not any(
        m.training for m in model.teacher.modules())

    with torch.no_grad():
        for p in model.encoder.parameters():
            p.add_(torch.randn_like(p))
        model.encoder.body[2].running_mean.fill_(3.0)
    t0 = {n: p.clone() for n, p in model.teacher.named_parameters()}
    s0 = {n: p.clone() for n, p in model.encoder.named_parameters()}
    beta = model.update_teacher(5)
    assert beta == pytest.approx(0.945) and int(model.num_updates) == 5
    for n, p in model.teacher.named_parameters():
        expected = s0[n] if n.startswith("pos_conv") else beta * t0[n] + (1 - beta) * s0[n]
        torch.testing.assert_close(p, expected, rtol=0, atol=1e-7)
    assert model.teacher.body[2].running_mean.tolist() == [3.0] * 4
    for n, p in model.encoder.named_parameters():
        assert torch.equal(p, s0[n])  # the student is untouched

    t1 = {n: p.clone() for n, p in model.teacher.named_parameters()}
    assert model.update_teacher(20) == 1.0  # frozen: nothing moves
    assert all(torch.equal(p, t1[n]) for n, p in model.teacher.named_parameters())


def test_ema_update_by_hand():
    a, b = nn.Linear(2, 1, bias=False), nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        a.weight.copy_(torch.tensor([[1.0, 2.0]]))
        b.weight.copy_(torch.tensor([[3.0, -2.0]]))
    teacher = frozen_copy(a)
    ema_update(teacher, b, 0.75)
    assert teacher.weight.tolist() == [[1.5, 1.0]]  # .75 * (1, 2) + .25 * (3, -2)


@pytest.mark.parametrize("variant", ["spidr", "dinosr"])
def test_spidr_checkpoint_from_before_the_move_loads_and_is_rebuilt(variant):
    """The fixture was written by main's code at 385f21c, doing what the second half of this test
    does (toy_model(variant, ema_timescale=50), SGD steps 1..3), and storing the state dict and,
    in eval mode, the loss on toy_input(seed=9)."""
    from test_spidr import toy_input, toy_model

    old = torch.load(FIXTURE, weights_only=True)[variant]
    # loads into the new model: same keys, same order
    model = toy_model(variant, ema_timescale=50.0)
    assert list(model.state_dict()) == list(old["state"])
    model.load_state_dict(old["state"], strict=True)
    model.eval()
    x, lens, mask = toy_input(seed=9)
    torch.testing.assert_close(model(x, lens, mask)[0].detach(), old["loss"], rtol=1e-6, atol=0)

    # the same training with the new code ends where the old code did
    model = toy_model(variant, ema_timescale=50.0)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for step in range(1, 4):
        x, lens, mask = toy_input(seed=step)
        torch.manual_seed(step)
        loss, _ = model(x, lens, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.update_teacher(step)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, old["state"][k], rtol=1e-5, atol=1e-6, msg=k)
