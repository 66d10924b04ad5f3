"""One odd value never reaches past its own run in the metrics: out-of-range usage numbers are kept out of
counters and histograms (and counted as a skip), every other run of the same batch is counted; label
values are bounded in length as well as in number."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from runtap.analytics.ingest.bounds import MAX_LABEL_CHARS, MAX_TOKENS, cap_label
from runtap.analytics.ingest.merge import RunFinished, UsageKnown
from runtap.analytics.ingest.response_merge import ResponseFinished, ResponseUsageKnown
from runtap.proxy.addons.metrics import Metrics
from runtap.proxy.addons.run_metrics import LabelValues

# What the spec allows for a token count (a plain integer) and what a broken upstream sends.
out_of_range = st.one_of(
    st.integers(max_value=-1),
    st.integers(min_value=MAX_TOKENS + 1),
    st.floats(allow_nan=True, allow_infinity=True).filter(lambda f: not (math.isfinite(f) and 0 <= f <= MAX_TOKENS
                                                                         and f.is_integer())),
    st.text(max_size=5), st.booleans(), st.lists(st.integers(), max_size=2),
)


def _row(run_id: str, model: str, prompt: Any, completion: Any, cap: Any = None) -> dict[str, Any]:
    return {"id": run_id, "status": "completed", "model": model, "assistant_id": "asst_1",
            "created_at": 1.0, "started_at": 2.0, "ended_at": 5.0, "prompt_tokens": prompt,
            "completion_tokens": completion, "total_tokens": 1, "max_prompt_tokens": cap,
            "max_completion_tokens": cap}


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prompt=out_of_range | st.integers(0, 10**6), completion=out_of_range, cap=st.none() | out_of_range,
       via_usage=st.booleans())
def test_an_out_of_range_usage_value_costs_no_other_run_its_metrics(prompt: Any, completion: Any, cap: Any,
                                                                    via_usage: bool) -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    bad: Any = (UsageKnown("run_bad", "gpt-bad", "asst_1", prompt, completion, 1, cap, cap) if via_usage
                else RunFinished(_row("run_bad", "gpt-bad", prompt, completion, cap)))
    metrics.on_effects([bad, RunFinished(_row("run_good", "gpt-good", 120, 30, 1000))])
    # the run after the bad one is counted, exactly
    assert _value(registry, "runtap_runs_finished_total", status="completed", model="gpt-good") == 1
    assert _value(registry, "runtap_tokens_total", model="gpt-good", type="prompt") == 120
    assert _value(registry, "runtap_tokens_total", model="gpt-good", type="completion") == 30
    # the bad value is in no counter or histogram, and is counted as skipped
    assert _value(registry, "runtap_tokens_total", model="gpt-bad", type="completion") == 0
    assert _value(registry, "gen_ai_client_token_usage_count", gen_ai_operation_name="invoke_agent",
                  gen_ai_provider_name="openai", gen_ai_request_model="gpt-bad", gen_ai_token_type="output") == 0  # noqa: S106
    assert _value(registry, "runtap_capture_skipped_total", reason="tokens_out_of_range") >= 1
    text = generate_latest(registry).decode()
    assert "NaN" not in text.replace('le="+Inf"', "") and "-Inf" not in text


def test_a_negative_usage_in_the_issues_example_does_not_stop_the_next_run() -> None:
    registry = CollectorRegistry()
    Metrics(registry).on_effects([RunFinished(_row("run_a", "m", -73514450, -1)),
                                  RunFinished(_row("run_b", "m", 10, 5))])
    assert _value(registry, "runtap_runs_finished_total", status="completed", model="m") == 2
    assert _value(registry, "runtap_tokens_total", model="m", type="prompt") == 10


def test_an_effect_that_raises_is_skipped_and_counted_and_the_rest_are_applied() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)

    class Odd(dict[str, Any]):
        def get(self, key: str, default: Any = None) -> Any:
            raise RuntimeError("odd row")

    metrics.on_effects([RunFinished(Odd()), RunFinished(_row("run_b", "m", 1, 1))])
    assert _value(registry, "runtap_runs_finished_total", status="completed", model="m") == 1
    assert _value(registry, "runtap_capture_skipped_total", reason="metrics_effect_error") == 1


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(min_size=0, max_size=600), min_size=1, max_size=30))
def test_label_values_are_bounded_in_length_and_distinct_long_values_stay_apart(values: list[str]) -> None:
    labels = LabelValues(1000)
    out = [labels(v) for v in values]
    assert all(len(o) <= MAX_LABEL_CHARS for o in out)
    for v, o in zip(values, out, strict=True):
        assert o == (v if 0 < len(v) <= MAX_LABEL_CHARS else cap_label(v) if v else "unknown")
        assert o.startswith(v[:MAX_LABEL_CHARS - 9])
    long = {v for v in values if len(v) > MAX_LABEL_CHARS}
    assert len({cap_label(v) for v in long}) == len(long)


def _label_reference(seen: set[str], limit: int, value: Any) -> str:
    """LabelValues without its fast path: the rule it must keep."""
    if value is None or value == "":
        return "unknown"
    text = cap_label(value if type(value) is str else str(value))
    if text in seen:
        return text
    if len(seen) >= limit:
        return "other"
    seen.add(text)
    return text


_label_inputs = st.one_of(st.none(), st.just(""), st.text(max_size=3), st.text(min_size=120, max_size=140),
                          st.integers(-2, 2), st.floats(allow_nan=False), st.booleans())


@settings(max_examples=300, deadline=None)
@given(st.lists(_label_inputs, min_size=1, max_size=40), st.integers(1, 6), st.data())
def test_label_values_give_a_repeated_value_the_answer_it_got_first(values: list[Any], limit: int,
                                                                      data: st.DataObject) -> None:
    values += data.draw(st.lists(st.sampled_from(values), max_size=40))  # repeats, including long ones and ""
    labels, seen = LabelValues(limit), set[str]()
    assert [labels(v) for v in values] == [_label_reference(seen, limit, v) for v in values]


def test_a_one_megabyte_model_name_keeps_metrics_small() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    models = [f"{i}" + "m" * (1 << 20) for i in range(101)]
    metrics.on_effects([RunFinished(_row(f"run_{i}", m, 1, 1)) for i, m in enumerate(models)])
    text = generate_latest(registry)
    assert len(text) < 4 << 20, len(text)  # was ~1 MB per series that carries the model: 104 MB
    assert _value(registry, "runtap_runs_finished_total", status="completed", model=cap_label(models[0])) == 1


def _response_row(resp_id: str, model: str, output: Any, cap: Any = None) -> dict[str, Any]:
    return {"id": resp_id, "status": "completed", "model": model, "created_at": 1.0, "ended_at": 5.0,
            "input_tokens": 40, "cached_input_tokens": 0, "output_tokens": output, "reasoning_tokens": 0,
            "total_tokens": 1, "max_output_tokens": cap}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(output=out_of_range, cap=st.none() | out_of_range, via_usage=st.booleans())
def test_an_out_of_range_response_usage_costs_no_other_response_its_metrics(output: Any, cap: Any,
                                                                            via_usage: bool) -> None:
    """The same rule for the Responses API's usage: one response's odd number stays its own."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    bad: Any = (ResponseUsageKnown("resp_bad", "gpt-bad", 40, 0, output, 0, 1, cap) if via_usage
                else ResponseFinished(_response_row("resp_bad", "gpt-bad", output, cap)))
    metrics.on_effects([bad, ResponseFinished(_response_row("resp_good", "gpt-good", 30, 100))])
    assert _value(registry, "runtap_responses_finished_total", status="completed", model="gpt-good") == 1
    assert _value(registry, "runtap_response_tokens_total", model="gpt-good", type="output") == 30
    assert _value(registry, "runtap_response_tokens_total", model="gpt-bad", type="output") == 0
    assert _value(registry, "runtap_capture_skipped_total", reason="tokens_out_of_range") >= 1
    text = generate_latest(registry).decode()
    assert "NaN" not in text.replace('le="+Inf"', "") and "-Inf" not in text


def test_transitions_of_equal_but_differently_typed_models_keep_their_own_labels() -> None:
    # The transition counter's children are memoised by raw value: 1, 1.0, true and "1" hash alike but
    # are different labels, and an unhashable model is still counted.
    from runtap.analytics.ingest.merge import Transition
    from runtap.analytics.ingest.response_merge import ResponseTransition

    registry = CollectorRegistry()
    metrics = Metrics(registry)
    models: list[Any] = ["1", 1, True, 1.0, {"a": 1}, "1", None, "m" * 100_000, "m" * 100_000]
    effects: list[Any] = [Transition(f"run_{i}", m, None, None, "queued", 1.0, "stream")
                          for i, m in enumerate(models)]
    effects.insert(3, ResponseTransition("resp_1", "gpt-5", None, "in_progress", 1.0, "stream"))
    metrics.on_effects(effects)
    seen = {(labels["model"], value) for labels, value in (
        (s.labels, s.value) for f in registry.collect() if f.name == "runtap_run_transitions" for s in f.samples
        if s.name.endswith("_total"))}
    assert seen == {("1", 3.0), ("True", 1.0), ("1.0", 1.0), ("{'a': 1}", 1.0), ("unknown", 1.0),
                    (cap_label("m" * 100_000), 2.0)}
    assert not any(len(key[2] or "") > MAX_LABEL_CHARS
                   for key in metrics.runs._transition_children)  # noqa: SLF001 - the memo's bound
    assert _value(registry, "runtap_response_transitions_total", from_status="none", to_status="in_progress",
                  model="gpt-5") == 1
    assert _value(registry, "runtap_capture_skipped_total", reason="metrics_effect_error") == 0
