"""Predict, then run: the learner commits to an expectation before an experiment, and the cell after it compares.

    predict("1.a")                       # before the experiment: prints the question, shows a widget
    ... the experiment ...
    reveal("1.a", measured, slope=0.98)  # after it: the measurement, the learner's prediction, the explanation

The questions live in ``course_utils/data_files/predictions/NN_slug.json`` (one file per chapter, English and
Korean side by side, so the Korean edition's identical code cells ask in Korean)::

    {"1.a": {"choices": ["Pre-LN", "Post-LN", "both", "neither"],    # or "unit": "x" for a number
             "en": {"question": "...", "why": "... {slope:.2f} ..."},
             "ko": {"question": "...", "why": "...", "choices": ["Pre-LN", ...]}}}

``predict`` prints the question (so a static reader sees it) and shows a widget; pressing *Commit* (or calling
``commit("1.a", answer)``) records the answer in the progress file under ``"predictions"``. ``reveal`` is given what
the experiment measured (never a stored answer), prints it with the learner's prediction and the explanation
(``why``, formatted with the keyword values the cell passes). A number counts as right within ``factor`` of the
measurement; once revealed, a prediction can no longer be changed.
"""
from __future__ import annotations

import datetime as _dt
import json
from functools import cache
from pathlib import Path

from course_utils.harness import progress
from course_utils.harness.phrases import language, say

QUESTIONS_DIR = Path(__file__).resolve().parent.parent / "data_files" / "predictions"

@cache
def questions() -> dict[str, dict]:
    """Every prediction question of the course, by id."""
    found: dict[str, dict] = {}
    for path in sorted(QUESTIONS_DIR.glob("*.json")):
        for qid, spec in json.loads(path.read_text(encoding="utf-8")).items():
            if qid in found:
                raise ValueError(f"prediction {qid} is defined twice ({path.name})")
            found[qid] = spec
    return found


def _question(qid: str) -> dict:
    try:
        return questions()[qid]
    except KeyError:
        raise KeyError(f"no prediction question {qid!r} (they live in {QUESTIONS_DIR})") from None


def _text(spec: dict, key: str):
    return spec.get(language(), {}).get(key) or spec["en"][key]


def _choices_shown(spec: dict) -> list[str]:
    return spec.get(language(), {}).get("choices") or spec["choices"]


def recorded(qid: str):
    """The learner's committed answer to ``qid`` (an English choice or a number), or None."""
    predictions = progress.load().get("predictions", {})
    entry = predictions.get(qid) if isinstance(predictions, dict) else None
    return entry.get("answer") if isinstance(entry, dict) else None


def _validated(qid: str, answer):
    spec = _question(qid)
    if "choices" not in spec:
        try:
            return float(answer)
        except (TypeError, ValueError):
            raise ValueError(f"prediction {qid} wants a number, got {answer!r}") from None
    shown = _choices_shown(spec)
    if answer in shown:
        return spec["choices"][shown.index(answer)]
    if answer in spec["choices"]:
        return answer
    raise ValueError(f"prediction {qid}: choose one of {shown}, got {answer!r}")


def _update(qid: str, **fields) -> dict:
    with progress.locked():
        data = progress.load()
        if not isinstance(data.get("predictions"), dict):
            data["predictions"] = {}
        entry = data["predictions"].setdefault(qid, {})
        entry.update(fields, updated=_dt.datetime.now().isoformat(timespec="seconds"))
        progress._write(data)
        return entry


def commit(qid: str, answer) -> None:
    """Record ``answer`` as the learner's prediction for ``qid``."""
    answer = _validated(qid, answer)
    predictions = progress.load().get("predictions", {})
    if isinstance(predictions, dict) and predictions.get(qid, {}).get("revealed"):
        raise ValueError(say("predict.late", id=qid))
    _update(qid, answer=answer)


def predict(qid: str):
    """Ask question ``qid`` and return the widget with which the learner commits an answer."""
    import ipywidgets as w

    spec = _question(qid)
    print(say("predict.ask", id=qid, question=_text(spec, "question")))
    if "choices" in spec:
        for letter, option in zip("abcdefghij", _choices_shown(spec)):
            print(f"  ({letter}) {option}")
    else:
        unit = spec.get("unit", "")
        print(say("predict.number", unit=say("predict.unit", unit=unit) if unit else ""))
    print(say("predict.commit"))
    before = recorded(qid)
    if "choices" in spec:
        shown = _choices_shown(spec)
        value = shown[spec["choices"].index(before)] if before in spec["choices"] else None
        field = w.RadioButtons(options=shown, value=value)
    else:
        field = w.FloatText(value=before if isinstance(before, (int, float)) else 0.0,
                            description=spec.get("unit") or "")
    button = w.Button(description=say("predict.button"), button_style="primary")
    status = w.Label(value=say("predict.recorded", answer=before) if before is not None else "")

    def on_click(_):
        try:
            commit(qid, field.value)
            status.value = say("predict.recorded", answer=field.value)
        except ValueError as exc:
            status.value = str(exc)

    button.on_click(on_click)
    return w.HBox([field, button, status])


def _shown_value(spec: dict, measured) -> str:
    if "choices" in spec:
        return _choices_shown(spec)[spec["choices"].index(measured)]
    unit = spec.get("unit", "")
    return f"{measured:.3g}{' ' + unit if unit else ''}"


def reveal(qid: str, measured, factor: float = 2.0, **values) -> None:
    """Print the measurement, the learner's prediction beside it and the question's explanation. ``measured`` is one
    of the question's (English) choices or a number, computed by the experiment the cell above ran."""
    spec = _question(qid)
    if "choices" in spec and measured not in spec["choices"]:
        raise ValueError(f"prediction {qid}: the measurement {measured!r} is not one of {spec['choices']}")
    print(say("predict.measured", id=qid, value=_shown_value(spec, measured)))
    said = recorded(qid)
    if said is None:
        print(say("predict.none"))
    else:
        if "choices" in spec:
            right = said == measured
            judged = say("predict.right" if right else "predict.wrong")
            answer = _shown_value(spec, said)
        else:
            ratio = said / measured if measured else float("inf")
            right = ratio > 0 and max(ratio, 1 / ratio) <= factor
            judged = say("predict.within" if right else "predict.outside", factor=factor)
            answer = _shown_value(spec, said)
        print(say("predict.said", answer=answer, judged=judged))
        _update(qid, revealed=True, right=bool(right))
    shown = _shown_value(spec, measured) if "choices" in spec else measured
    print(_text(spec, "why").format(measured=shown, **values))
