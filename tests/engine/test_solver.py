import pytest

from d2ext.solver import warmup_cosine, warmup_multistep


def test_multistep_follows_max_iter():
    s = warmup_multistep(90, steps=(2 / 3, 8 / 9), warmup_iter=9, warmup_factor=0.001)
    assert s(0.0) == pytest.approx(0.001)
    assert s(30 / 90) == pytest.approx(1.0)
    assert s(61 / 90) == pytest.approx(0.1)
    assert s(81 / 90) == pytest.approx(0.01)


def test_cosine_and_long_warmup():
    s = warmup_cosine(100, warmup_iter=0)
    assert s(0.0) == pytest.approx(1.0) and s(0.5) == pytest.approx(0.5) and s(0.999) < 0.01
    # a warmup longer than the run covers the run
    assert warmup_multistep(5, warmup_iter=100)(0.99) < 1.0
    with pytest.raises(ValueError, match="max_iter"):
        warmup_cosine(0)


def test_step_decay_matches_fvcore_multistep():
    from fvcore.common.param_scheduler import MultiStepParamScheduler

    from d2ext.solver.lr_schedules import StepDecayScheduler

    ours = StepDecayScheduler([60, 80], 90)
    theirs = MultiStepParamScheduler([1.0, 0.1, 0.01], milestones=[60, 80], num_updates=90)
    for it in range(90):
        assert ours(it / 90) == pytest.approx(theirs(it / 90))
    assert 0 < warmup_multistep(1, warmup_iter=0)(0.0) <= 1.0  # a 1-iteration run builds
