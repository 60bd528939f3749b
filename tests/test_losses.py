"""Known-answer and gradient tests for every registered loss."""

from __future__ import annotations

import math

import pytest
import torch

from emseg_search.losses import COMBINATIONS, LOSS_NAMES, LOSSES, WeightedSum, build_loss


def _square() -> torch.Tensor:
    """A (1, 1, 4, 4) target with a 2x2 foreground square."""
    target = torch.zeros(1, 1, 4, 4)
    target[..., 1:3, 1:3] = 1.0
    return target


def test_names() -> None:
    assert set(LOSSES) >= {"bce", "dice", "focal", "jaccard", "lovasz", "tversky"}
    assert len(set(LOSS_NAMES)) == len(LOSS_NAMES)
    for combo in COMBINATIONS:
        a, b = combo.split("+")
        assert a in LOSSES and b in LOSSES and a != b
        assert combo in LOSS_NAMES


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_perfect_logits_give_zero(name: str) -> None:
    target = _square()
    logits = torch.where(target > 0, 20.0, -20.0)
    assert build_loss(name)(logits, target).item() == pytest.approx(0.0, abs=1e-3)


@pytest.mark.parametrize(
    ("name", "low"),
    [
        ("bce", 19.0),
        ("dice", 0.99),
        ("jaccard", 0.99),
        ("tversky", 0.99),
        ("focal", 19.0),
        ("lovasz", 19.0),
        ("mcc", 1.99),
    ],
)
def test_all_wrong_logits_give_high_loss(name: str, low: float) -> None:
    target = _square()
    logits = torch.where(target > 0, -20.0, 20.0)
    assert build_loss(name)(logits, target).item() > low


def test_bce_matches_hand_computation() -> None:
    logits = torch.tensor([[0.0, 2.0], [-1.0, 3.0]]).reshape(1, 1, 2, 2)
    target = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).reshape(1, 1, 2, 2)
    # -log(sigmoid(x)) for y=1, -log(1 - sigmoid(x)) = log(1 + e^x) for y=0
    hand = (
        math.log(2.0)
        + math.log(1 + math.e**2)
        + math.log(1 + math.e**-1)
        + math.log(1 + math.e**-3)
    ) / 4
    assert build_loss("bce")(logits, target).item() == pytest.approx(hand, rel=1e-6)


@pytest.mark.parametrize(
    ("name", "expected"),
    # logits 0 -> p = 0.5 everywhere; 2 of 4 pixels are foreground: tp = fp = fn = 1
    [("dice", 1 - 2 * 1 / (2 + 2)), ("jaccard", 1 - 1 / 3), ("tversky", 1 - 1 / (1 + 0.3 + 0.7))],
)
def test_overlap_losses_known_values(name: str, expected: float) -> None:
    logits = torch.zeros(1, 1, 2, 2)
    target = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).reshape(1, 1, 2, 2)
    assert build_loss(name)(logits, target).item() == pytest.approx(expected, abs=1e-5)


def test_focal_known_value() -> None:
    # focal = -(1 - p_t)^gamma log p_t with gamma 2; logits 0 -> p_t = 0.5 -> 0.25 * log 2
    loss = build_loss("focal")(torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2))
    assert loss.item() == pytest.approx(0.25 * math.log(2.0), rel=1e-5)


@pytest.mark.parametrize(("gamma", "factor"), [(0.0, 1.0), (1.0, 0.5), (3.0, 0.125)])
def test_focal_gamma_is_the_focusing_exponent(gamma: float, factor: float) -> None:
    # logits 0 -> p_t = 0.5: focal = 0.5^gamma * log 2
    loss = build_loss("focal", focal_gamma=gamma)(torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2))
    assert loss.item() == pytest.approx(factor * math.log(2.0), rel=1e-5)


@pytest.mark.parametrize(("alpha", "beta"), [(0.3, 0.7), (0.7, 0.3), (0.5, 0.5), (1.0, 0.0)])
def test_tversky_alpha_weighs_false_positives_and_beta_false_negatives(
    alpha: float, beta: float
) -> None:
    # one foreground pixel of four, p = 0.5 everywhere: tp = 0.5, fp = 1.5, fn = 0.5
    target = torch.tensor([[1.0, 0.0], [0.0, 0.0]]).reshape(1, 1, 2, 2)
    loss = build_loss("tversky", tversky_alpha=alpha, tversky_beta=beta)
    expected = 1 - 0.5 / (0.5 + alpha * 1.5 + beta * 0.5)
    assert loss(torch.zeros(1, 1, 2, 2), target).item() == pytest.approx(expected, abs=1e-5)


def test_options_reach_both_terms_of_a_pair() -> None:
    torch.manual_seed(2)
    logits = torch.randn(2, 1, 8, 8)
    target = (torch.rand(2, 1, 8, 8) > 0.6).float()
    options = {"focal_gamma": 0.5, "tversky_alpha": 0.8, "tversky_beta": 0.2}
    pair = build_loss("focal+tversky", 0.4, **options)(logits, target)
    focal = build_loss("focal", focal_gamma=0.5)(logits, target)
    tversky = build_loss("tversky", tversky_alpha=0.8, tversky_beta=0.2)(logits, target)
    assert pair.item() == pytest.approx((0.4 * focal + 0.6 * tversky).item(), rel=1e-6)
    assert pair.item() != pytest.approx(build_loss("focal+tversky", 0.4)(logits, target).item())


@pytest.mark.parametrize("weight", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("combo", COMBINATIONS)
def test_combination_is_weighted_sum(combo: str, weight: float) -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 1, 8, 8)
    target = (torch.rand(2, 1, 8, 8) > 0.6).float()
    a, b = combo.split("+")
    expected = weight * build_loss(a)(logits, target) + (1 - weight) * build_loss(b)(logits, target)
    loss = build_loss(combo, weight)
    assert isinstance(loss, WeightedSum)
    assert loss(logits, target).item() == pytest.approx(expected.item(), rel=1e-6, abs=1e-7)


def test_any_pair_of_bases_is_accepted_and_order_sets_the_weight() -> None:
    logits = torch.zeros(1, 1, 2, 2)
    target = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).reshape(1, 1, 2, 2)
    dice, bce = 0.5, math.log(2.0)
    assert build_loss("bce+dice", 0.25)(logits, target).item() == pytest.approx(
        0.25 * bce + 0.75 * dice, rel=1e-5
    )


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_backward_gives_finite_gradients(name: str) -> None:
    torch.manual_seed(1)
    logits = torch.randn(2, 1, 16, 16, requires_grad=True)
    target = (torch.rand(2, 1, 16, 16) > 0.7).float()
    loss = build_loss(name, 0.5)(logits, target)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    assert logits.grad.abs().sum() > 0


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_empty_target_is_finite(name: str) -> None:
    logits = torch.randn(2, 1, 16, 16, requires_grad=True)
    loss = build_loss(name)(logits, torch.zeros(2, 1, 16, 16))
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_lovasz_empty_target_penalises_positive_logits() -> None:
    target = torch.zeros(1, 1, 4, 4)
    confident_bg = build_loss("lovasz")(torch.full((1, 1, 4, 4), -5.0), target)
    false_alarm = build_loss("lovasz")(torch.full((1, 1, 4, 4), 5.0), target)
    assert not torch.isnan(confident_bg) and not torch.isnan(false_alarm)
    assert confident_bg.item() == pytest.approx(0.0) and false_alarm.item() > 1.0


def test_dice_on_empty_batch_is_zero_by_smp_convention() -> None:
    loss = build_loss("dice")(torch.full((1, 1, 4, 4), 5.0), torch.zeros(1, 1, 4, 4))
    assert loss.item() == 0.0


@pytest.mark.parametrize("bad", ["dise", "dice+", "dice+dice", "dice+bce+focal", "", "DICE"])
def test_unknown_names_list_valid_names(bad: str) -> None:
    with pytest.raises(ValueError, match="unknown loss") as err:
        build_loss(bad)
    msg = str(err.value)
    assert str(sorted(LOSSES)) in msg and "'a+b'" in msg


@pytest.mark.parametrize("weight", [-0.1, 1.5])
def test_weight_outside_unit_interval(weight: float) -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        build_loss("dice+bce", weight)


def test_each_build_is_a_fresh_module() -> None:
    assert build_loss("dice") is not build_loss("dice")


# --- instance-aware targets (TrialConfig.target) ----------------------------------------


def _boundary_target() -> torch.Tensor:
    """(1, 1, 6, 6) class ids: a 4x4 particle with a 2x2 interior (1) in its rim (2)."""
    target = torch.zeros(1, 1, 6, 6)
    target[..., 1:5, 1:5] = 2.0
    target[..., 2:4, 2:4] = 1.0
    return target


@pytest.mark.parametrize("name", ["bce", "dice", "focal", "jaccard", "lovasz", "tversky"])
def test_multiclass_losses_prefer_the_right_classes(name: str) -> None:
    ids = _boundary_target()[:, 0].long()
    right = torch.nn.functional.one_hot(ids, 3).permute(0, 3, 1, 2).float() * 20 - 10
    loss = build_loss(name, mode="multiclass")
    assert float(loss(right, ids)) < float(loss(right.flip(1), ids))


def test_mcc_has_no_multiclass_mode() -> None:
    with pytest.raises(ValueError, match="no multiclass mode"):
        build_loss("mcc+bce", mode="multiclass")
    with pytest.raises(ValueError, match="mcc loss is binary only"):
        from emseg_search.config import TrialConfig

        TrialConfig(target="boundary", loss="mcc")


@pytest.mark.parametrize("target", ["boundary", "distance"])
def test_target_loss_weights_its_two_terms(target: str) -> None:
    from emseg_search.config import TrialConfig
    from emseg_search.losses import TargetLoss, build_trial_loss

    if target == "boundary":
        goal = _boundary_target()
        ids = goal[:, 0].long()
        right = torch.nn.functional.one_hot(ids, 3).permute(0, 3, 1, 2).float() * 20 - 10
    else:
        goal = torch.stack([(_boundary_target()[0, 0] > 0).float(), _boundary_target()[0, 0] / 2])
        goal = goal[None]  # (1, 2, 6, 6): mask and a distance in [0, 1]
        p = goal[:, 1:].clamp(1e-4, 1 - 1e-4)
        right = torch.cat([goal[:, :1] * 20 - 10, torch.log(p / (1 - p))], dim=1)
    wrong = -right
    losses = {
        w: build_trial_loss(TrialConfig(target=target, loss="dice+bce", target_weight=w))
        for w in (0.0, 0.5, 1.0)
    }
    assert isinstance(losses[0.5], TargetLoss)
    for w, loss in losses.items():
        assert float(loss(right, goal)) < float(loss(wrong, goal)), w
    mixed = float(losses[0.5](wrong, goal))
    ends = (float(losses[0.0](wrong, goal)), float(losses[1.0](wrong, goal)))
    assert mixed == pytest.approx(sum(ends) / 2, rel=1e-5)
    logits = right.clone().requires_grad_(True)
    losses[0.5](logits, goal).backward()
    assert torch.isfinite(logits.grad).all()
