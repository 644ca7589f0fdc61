"""Limits that two layers enforce, each with its own constant because neither imports the other:
the web answers 400 for exactly what the engine would refuse."""

from chat import sampling
from engine import request


def test_it_refuses_the_same_stop_count_at_the_door_and_in_the_engine():
    assert sampling.MAX_STOP_SEQUENCES == request.MAX_STOP_SEQUENCES


def test_it_refuses_the_same_logit_bias_and_logprobs_sizes_at_the_door_and_in_the_engine():
    assert sampling.MAX_LOGIT_BIAS == request.MAX_LOGIT_BIAS
    assert sampling.MAX_TOP_LOGPROBS == request.MAX_TOP_LOGPROBS
